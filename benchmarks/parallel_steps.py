"""Parallel stepping: N QEMU ECUs stepped concurrently by our master against
the same ECUs stepped in turn, measured in the same run.

Run from the repository root (needs dist/qemu.fmu: make fmu):

    .venv/bin/python benchmarks/parallel_steps.py              # 2, 4, 8 ECUs
    .venv/bin/python benchmarks/parallel_steps.py --quick      # 2, 4 ECUs

Each ECU is qemu.fmu with its default guest (a 1 kHz SysTick Cortex-M, so
the guest wakes in every 1 ms step), in an SSP of N unconnected components,
run by qemufmu.cosim (what `qemu-fmu sweep` runs per case) for
``--steps`` steps of 1 ms, once with ``parallel=False`` and once with
``parallel=True``, alternating, ``--reps`` times.  Reports, as one Markdown
table on stdout (progress on stderr), the median wall time of the stepping
loop per ECU count (instantiation and QEMU start-up excluded: the case's
``init_s`` is subtracted) and the speed-up; every run's recorded values must
be identical between the two ways, else the run stops.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "fmu_src"))

from qemufmu import cosim  # noqa: E402
from qemufmu.cases import Case  # noqa: E402
from qemufmu.sspwrite import Element, write_ssp  # noqa: E402
from qemufmu.system import read_system  # noqa: E402

MODES = {False: "in turn", True: "parallel", None: "default (trial, then the faster)"}


def measure(path: Path, n: int, steps: int, parallel: bool | None,
            busy: bool) -> tuple[float, dict]:
    system = read_system(path)
    record = tuple(f"ecu{k}.console" for k in range(n))
    settings = cosim.Settings(steps * 1e-3, 1e-3, record, parallel=parallel)
    starts: tuple = ()
    if busy:
        image = REPO / "firmware" / "build" / "x86-busy.elf"
        starts = tuple((f"ecu{k}.{var}", value) for k in range(n)
                       for var, value in (("guest_image", str(image)),
                                          ("qemu_system", "x86_64"),
                                          ("machine", "pc")))
    result = cosim.run_case(system, path, cosim.digest_of(path),
                            Case("b", starts), settings)
    if result.status != cosim.STATUS_OK:
        raise SystemExit(f"parallel_steps.py: {n} ECUs: {result.message}")
    return result.wall_s - result.init_s, result.values


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fmu", type=Path, default=REPO / "dist" / "qemu.fmu")
    p.add_argument("--ecus", default="2,4,8", help="ECU counts, comma-separated")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="2,4 ECUs, 200 steps, 1 rep")
    p.add_argument("--busy", action="store_true",
                   help="x86-busy guests (a guest that computes all the time) "
                        "instead of the default idle-most Cortex-M")
    args = p.parse_args()
    if args.quick:
        args.ecus, args.steps, args.reps = "2,4", 200, 1
    if not args.fmu.exists():
        print(f"parallel_steps.py: {args.fmu} missing; run `make fmu`",
              file=sys.stderr)
        return 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.ecus.split(",")):
            path = write_ssp(Path(tmp) / f"ecus{n}.ssp", "ecus",
                             {f"ecu{k}": Element(args.fmu) for k in range(n)}, [])
            times: dict[bool | None, list[float]] = {False: [], True: [], None: []}
            reference = None
            for rep in range(args.reps):
                for parallel in (False, True, None):
                    print(f"{n} ECUs, rep {rep + 1}, "
                          f"{MODES[parallel]}", file=sys.stderr)
                    wall, values = measure(path, n, args.steps, parallel,
                                           args.busy)
                    if reference is None:
                        reference = values
                    elif values != reference:
                        raise SystemExit(f"parallel_steps.py: {n} ECUs: results "
                                         "differ between runs")
                    times[parallel].append(wall)
            turn, par, auto = (statistics.median(times[x]) for x in (False, True, None))
            rows.append((n, turn, par, auto))
    guest = "x86-busy" if args.busy else "default Cortex-M (1 kHz SysTick)"
    print(f"| ECUs ({guest}) | in turn (s, {args.steps} steps of 1 ms) "
          "| parallel (s) | speed-up | default: the faster after a trial (s) "
          "| speed-up |")
    print("|---|---|---|---|---|---|")
    for n, turn, par, auto in rows:
        print(f"| {n} | {turn:.3f} | {par:.3f} | {turn / par:.2f}x "
              f"| {auto:.3f} | {turn / auto:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
