"""The ``qemu-fmu`` command: build FMUs, run sweeps.

Exit status: 0 success; 1 a build failed, a case did not finish ``ok``, or
the cluster could not be used; 2 bad arguments or input (nothing ran); 130
interrupted.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PROG = "qemu-fmu"
BUILD_HELP = """\
Build an FMU the way build_fmu.py does (it runs that script's build()).
It needs a qemu-fmu project tree that has been built: build/qemu (make qemu)
and firmware/build (make firmware).  The tree is --repo, else the checkout
this package was installed from in editable mode (pip install -e .), else
the current directory."""
SWEEP_HELP = """\
Run every case of CASES on SYSTEM on Dask workers and write the results.

SYSTEM is an .ssp file or a single .fmu.  CASES is a CSV file: column
'case' names each row, every other column is a start value, named
COMPONENT.VARIABLE for an SSP and VARIABLE for an FMU, typed by the model
description (Real, Integer, Boolean: true/false/1/0, String); an empty cell
keeps the model's start value.  Each case runs in fmpy, stepping every FMU
at --step up to --stop-time.

Results: --out (Parquet), one row per case and time point (including the
start), columns case, time and one per recorded variable; a summary (case,
status, message, wall_s, worker) is printed and written beside it as
RESULTS.summary.csv.  Status: ok; failed (the FMU failed: QEMU timed out or
ended, the guest powered off, a bad parameter; the message is the FMU's
own); lost (the workers running it died, see docs/sweeps.md).

By default the cases run on a local Dask cluster with one single-threaded
worker process per core; --scheduler uses a running cluster, whose workers
need qemu-fmu installed (the client ships them SYSTEM's bytes)."""


def _repo(explicit: Path | None) -> Path | None:
    """The project tree holding build_fmu.py."""
    candidates = [explicit] if explicit else [
        Path(__file__).resolve().parents[2], Path.cwd()]
    for repo in candidates:
        if (repo / "build_fmu.py").is_file():
            return repo
    return None


def _load_build_fmu(repo: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_fmu", repo / "build_fmu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_fmu"] = module
    spec.loader.exec_module(module)
    return module


def cmd_build(args: argparse.Namespace) -> int:
    repo = _repo(args.repo)
    if repo is None:
        where = args.repo or "the current directory"
        print(f"{PROG} build: no build_fmu.py in {where}; run it in a built "
              "qemu-fmu project tree or pass --repo DIR", file=sys.stderr)
        return 2
    build_fmu = _load_build_fmu(repo)
    try:
        out = build_fmu.build(args.output, args.config)
    except build_fmu.BuildError as e:
        print(f"{PROG} build: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from . import sweep

    if args.scheduler and args.workers:
        print(f"{PROG} sweep: --workers sizes the local cluster; it cannot be "
              "combined with --scheduler", file=sys.stderr)
        return 2
    if args.in_process and (args.scheduler or args.workers):
        print(f"{PROG} sweep: --in-process runs no cluster; drop --scheduler "
              "and --workers", file=sys.stderr)
        return 2
    record = ([v.strip() for v in args.record.split(",") if v.strip()]
              if args.record else None)
    try:
        plan = sweep.prepare(args.system, args.cases, stop_time=args.stop_time,
                             step=args.step, record=record)
    except sweep.InputError as e:
        print(f"{PROG} sweep: {e}", file=sys.stderr)
        return 2
    try:
        results = sweep.execute(plan, scheduler=args.scheduler,
                                workers=args.workers, in_process=args.in_process,
                                progress=None if args.progress else False)
    except (OSError, TimeoutError, RuntimeError, ValueError) as e:
        # ValueError: Dask's word for an address it cannot use.
        print(f"{PROG} sweep: {e}", file=sys.stderr)
        return 1
    table, summary = sweep.frames(plan, results)
    summary_file = sweep.write(table, summary, args.out)
    print(_table(summary))
    bad = int((summary["status"] != sweep.STATUS_OK).sum())
    print(f"{len(summary)} cases, {len(summary) - bad} ok, {bad} not ok; "
          f"{len(table)} rows in {args.out}; summary in {summary_file}")
    return 1 if bad else 0


def _table(summary, message_width: int = 100) -> str:
    """The summary for a terminal: left-aligned, the message last and cut
    (the CSV beside the results has it whole)."""
    columns = ["case", "status", "wall_s", "worker", "message"]
    rows = [[f"{v:.3f}" if c == "wall_s" else str(v) for c, v in zip(
        columns, values, strict=True)]
        for values in summary[columns].itertuples(index=False)]
    for row in rows:
        if len(row[-1]) > message_width:
            row[-1] = row[-1][:message_width - 3] + "..."
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = [columns, *rows]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(
        line, widths, strict=True)).rstrip() for line in lines)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="QEMU as an FMI 2.0 co-simulation FMU: build "
        "FMUs and run sweeps of co-simulations on Dask.",
        epilog="Exit status: 0 success, 1 a build or case failed, 2 bad "
        "arguments or input.  See docs/sweeps.md.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    b = sub.add_parser("build", help="build an FMU (what build_fmu.py does)",
                       description=BUILD_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--config", type=Path,
                   help="TOML file declaring a signal FMU (docs/signals.md)")
    b.add_argument("-o", "--output", type=Path,
                   help="where to write the FMU (default: dist/qemu.fmu, or "
                        "dist/MODEL_NAME.fmu with --config)")
    b.add_argument("--repo", type=Path, help="the built qemu-fmu project tree")
    b.set_defaults(func=cmd_build)

    s = sub.add_parser("sweep", help="run many cases of an SSP or FMU on Dask",
                       description=SWEEP_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("system", type=Path, metavar="SYSTEM", help=".ssp or .fmu file")
    s.add_argument("cases", type=Path, metavar="CASES", help="CSV file of cases")
    s.add_argument("--stop-time", type=float, required=True, metavar="T",
                   help="simulation end (s); a whole number of steps")
    s.add_argument("--step", type=float, required=True, metavar="H",
                   help="communication step (s)")
    s.add_argument("--out", type=Path, required=True, metavar="RESULTS.parquet",
                   help="results file (Parquet)")
    s.add_argument("--record", metavar="VAR,...",
                   help="variables to record (default: every output)")
    s.add_argument("--scheduler", metavar="ADDRESS",
                   help="a running Dask scheduler, e.g. tcp://HOST:8786")
    s.add_argument("--workers", type=_positive_int, metavar="N",
                   help="local cluster size (default: one worker per core)")
    s.add_argument("--in-process", action="store_true",
                   help="run the cases one after another in this process, "
                        "without Dask")
    s.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar (there is none unless stderr is a "
                        "terminal)")
    s.set_defaults(func=cmd_sweep)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:  # the cluster and its cases stop with us
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
