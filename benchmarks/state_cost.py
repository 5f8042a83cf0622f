"""What FMU states cost: get, set, serialize and size, against a QEMU start.

Run from the repository root, after the FMU is built (build_fmu.py):

    .venv/bin/python benchmarks/state_cost.py            # full run
    .venv/bin/python benchmarks/state_cost.py --quick    # smoke run

For each guest (the default Cortex-M firmware on mps2-an385, and an idle
x86 multiboot kernel on pc, booted through SeaBIOS), through fmpy's raw FMI
2.0 API on dist/qemu.fmu:

* QEMU start: fmi2ExitInitializationMode, which starts QEMU and waits for
  its HELLO (the baseline, measured in the same run);
* fmi2GetFMUstate; fmi2SetFMUstate into the running QEMU (rollback,
  branching) and into an instance that has no QEMU yet (it starts one);
  fmi2SerializeFMUstate (with its size query) and fmi2DeSerializeFMUstate;
  the size of the serialized state.

Every figure is the median of the repetitions.  Progress goes to stderr,
one Markdown table to stdout.  See README.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from fmi_helpers import Instance, qemu_children  # noqa: E402

GUESTS = {
    "mps2-an385 (default firmware)": {},
    "x86 pc (SeaBIOS + idle kernel)": {
        "machine": "pc", "qemu_system": "x86_64",
        "guest_image": str(REPO / "firmware" / "build" / "x86-idle.elf")},
}


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def measure(fmu: Path, unzipped: Path, params: dict, warmup: float,
            reps: int) -> dict[str, float]:
    rows: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        rows.setdefault(name, []).append(value)

    for _ in range(reps):
        inst = Instance(fmu, unzipped, **params)
        inst.slave.setupExperiment(startTime=0.0)
        inst.slave.enterInitializationMode()
        for name, value in params.items():
            inst.set(name, value)
        took, _ = timed(inst.slave.exitInitializationMode)
        add("QEMU start (fmi2ExitInitializationMode)", took)
        steps = max(1, round(warmup / 0.01))
        for k in range(steps):
            inst.slave.doStep(k * 0.01, 0.01)
        t = steps * 0.01
        got, state = timed(inst.slave.getFMUstate)
        add("fmi2GetFMUstate", got)
        inst.slave.doStep(t, 0.01)
        took, _ = timed(inst.slave.setFMUstate, state)
        add("fmi2SetFMUstate (into the running QEMU)", took)
        add("get + set", got + took)
        took, blob = timed(inst.slave.serializeFMUstate, state)
        add("fmi2SerializeFMUstate", took)
        took, again = timed(inst.slave.deSerializeFMUstate, blob)
        add("fmi2DeSerializeFMUstate", took)
        add("serialized state (bytes)", len(blob))
        inst.slave.doStep(t, 0.01)   # the restored instance goes on
        # an instance whose initialization has not ended has no QEMU yet
        fresh = Instance(fmu, unzipped, name="fresh")
        fresh.slave.setupExperiment(startTime=0.0)
        fresh.slave.enterInitializationMode()
        took, _ = timed(fresh.slave.setFMUstate, again)
        add("fmi2SetFMUstate (starts a new QEMU)", took)
        fresh.slave.exitInitializationMode()
        fresh.slave.doStep(t, 0.01)
        fresh.close()
        inst.slave.freeFMUstate(again)
        inst.slave.freeFMUstate(state)
        inst.close()
    return {name: statistics.median(values) for name, values in rows.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fmu", type=Path, default=REPO / "dist" / "qemu.fmu")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="virtual seconds run before the state is taken")
    parser.add_argument("--quick", action="store_true",
                        help="1 repetition, 0.2 s warm-up")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.warmup = 1, 0.2
    if not args.fmu.is_file():
        print(f"state_cost.py: {args.fmu} missing; run build_fmu.py first",
              file=sys.stderr)
        return 1
    from fmpy import extract
    with tempfile.TemporaryDirectory(prefix="qemu-fmu-bench-") as tmp:
        unzipped = Path(extract(str(args.fmu), tmp))
        results = {}
        for guest, params in GUESTS.items():
            print(f"state_cost.py: {guest} ...", file=sys.stderr)
            results[guest] = measure(args.fmu, unzipped, params, args.warmup,
                                     args.reps)
    if qemu_children():
        print("state_cost.py: a QEMU was left running", file=sys.stderr)
        return 1
    names = list(next(iter(results.values())))
    print(f"| ({args.reps} reps, medians, state taken after {args.warmup:g} s) | "
          + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for name in names:
        cells = []
        for guest in results:
            value = results[guest][name]
            if "bytes" in name:
                cells.append(f"{value / 1024:.0f} KiB")
            else:
                start = results[guest]["QEMU start (fmi2ExitInitializationMode)"]
                cells.append(f"{value * 1e3:.1f} ms ({value / start:.2f} x start)")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
