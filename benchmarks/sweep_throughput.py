"""Sweep throughput: cases per minute on a 2-worker Dask cluster against the
same cases one after another in this process, measured in the same run.

Run from the repository root (needs dist/closed_loop.ssp: make closed-loop):

    .venv/bin/python benchmarks/sweep_throughput.py            # 16 cases of 1 s
    .venv/bin/python benchmarks/sweep_throughput.py --quick    # 4 cases of 0.2 s

Reports, as one Markdown table on stdout (progress on stderr):

* cases per minute in-process (sequential) and on a LocalCluster of
  ``--workers`` single-threaded worker processes (cluster start-up excluded,
  and shown on its own row), and their ratio;
* the per-case overhead: a Dask task round trip (dispatch), a case's
  instantiate-to-initialized time (FMU load and QEMU start), and the whole
  wall time of a one-step case in-process.

Every case is checked: a case that does not finish ``ok`` stops the run;
columns whose values differ between the two ways of running are named.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "fmu_src"))

from qemufmu import sweep  # noqa: E402


def cases_frame(n: int):
    import pandas as pd
    return pd.DataFrame({"case": [f"c{i:03d}" for i in range(n)],
                         "plant.step_value": [50.0 + i for i in range(n)]})


def checked(results, what: str) -> list:
    bad = [r for r in results if r.status != sweep.STATUS_OK]
    if bad:
        raise SystemExit(f"sweep_throughput.py: {what}: case {bad[0].case} "
                         f"{bad[0].status}: {bad[0].message}")
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ssp", type=Path, default=REPO / "dist" / "closed_loop.ssp")
    p.add_argument("--cases", type=int, default=16)
    p.add_argument("--stop-time", type=float, default=1.0)
    p.add_argument("--step", type=float, default=1e-3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--dispatch-tasks", type=int, default=50)
    p.add_argument("--quick", action="store_true",
                   help="4 cases of 0.2 s (a smoke run)")
    args = p.parse_args()
    if args.quick:
        args.cases, args.stop_time = 4, 0.2
    if not args.ssp.exists():
        print(f"sweep_throughput.py: {args.ssp} missing; run make closed-loop",
              file=sys.stderr)
        return 1
    from distributed import Client, LocalCluster

    plan = sweep.prepare(args.ssp, cases_frame(args.cases),
                         stop_time=args.stop_time, step=args.step)
    one_step = sweep.prepare(args.ssp, cases_frame(5), stop_time=args.step,
                             step=args.step)
    print("warming the FMU cache ...", file=sys.stderr)
    checked(sweep.execute(one_step, in_process=True), "warm-up")
    tiny = checked(sweep.execute(one_step, in_process=True), "one-step cases")

    print(f"{args.cases} cases in-process ...", file=sys.stderr)
    t0 = time.perf_counter()
    sequential = checked(sweep.execute(plan, in_process=True), "in-process")
    seq_wall = time.perf_counter() - t0

    print(f"starting a LocalCluster of {args.workers} workers ...", file=sys.stderr)
    t0 = time.perf_counter()
    with LocalCluster(n_workers=args.workers, threads_per_worker=1,
                      processes=True, dashboard_address=":0",
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        client.wait_for_workers(args.workers, timeout=120)
        startup = time.perf_counter() - t0
        # As in-process above: each worker receives and unpacks the FMUs and
        # imports the master once, before the timed sweep.
        t0 = time.perf_counter()
        checked(sweep.execute(one_step, client=client), "cluster warm-up")
        warmup = time.perf_counter() - t0
        rtts = []
        for i in range(args.dispatch_tasks):
            t = time.perf_counter()
            client.submit(abs, -i, pure=False).result()
            rtts.append(time.perf_counter() - t)
        print(f"{args.cases} cases on the cluster ...", file=sys.stderr)
        t0 = time.perf_counter()
        parallel = checked(sweep.execute(plan, client=client), "cluster")
        par_wall = time.perf_counter() - t0

    differing: dict[str, int] = {}
    for a, b in zip(sequential, parallel, strict=True):
        for column in ["time", *a.values]:
            x = a.time if column == "time" else a.values[column]
            y = b.time if column == "time" else b.values[column]
            if x != y:
                k = next((k for k, (u, v) in enumerate(zip(x, y, strict=False))
                          if u != v), min(len(x), len(y)))
                print(f"case {a.case} {column} differs first at row {k} of "
                      f"{len(x)}/{len(y)}: {x[k:k + 1]} vs {y[k:k + 1]}",
                      file=sys.stderr)
                differing[column] = differing.get(column, 0) + 1
    per_min = 60 * args.cases
    rows = [
        ("cases", f"{args.cases} x {args.stop_time:g} s at {args.step:g} s steps "
                  f"({args.ssp.name})"),
        ("in-process, one after another", f"{seq_wall:.2f} s, "
                                          f"{per_min / seq_wall:.1f} cases/min"),
        (f"LocalCluster, {args.workers} workers",
         f"{par_wall:.2f} s, {per_min / par_wall:.1f} cases/min"),
        ("speed-up (cluster / in-process)", f"{seq_wall / par_wall:.2f}x"),
        ("cluster start-up (not in the above)", f"{startup:.2f} s"),
        ("cluster warm-up: FMUs shipped, unpacked, master imported "
         "(not in the above)", f"{warmup:.2f} s"),
        ("speed-up including start-up and warm-up",
         f"{seq_wall / (par_wall + startup + warmup):.2f}x"),
        ("per case: Dask dispatch (task round trip, median)",
         f"{statistics.median(rtts) * 1e3:.1f} ms"),
        ("per case: FMU load + QEMU start (instantiate..initialized, median)",
         f"{statistics.median(r.init_s for r in sequential) * 1e3:.0f} ms"),
        ("per case: whole one-step case in-process (median)",
         f"{statistics.median(r.wall_s for r in tiny) * 1e3:.0f} ms"),
        ("per case: wall in-process (median)",
         f"{statistics.median(r.wall_s for r in sequential):.2f} s"),
        ("per case: wall on the cluster (median)",
         f"{statistics.median(r.wall_s for r in parallel):.2f} s"),
        ("results identical in both", "yes" if not differing else "no: " + ", ".join(
            f"{c} in {n} case(s)" for c, n in differing.items())),
    ]
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
