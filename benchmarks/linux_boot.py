"""What booting the example Linux guest costs, in simulation and wall time.

Run from the repository root, after `make closed-loop`:

    .venv/bin/python benchmarks/linux_boot.py            # full run
    .venv/bin/python benchmarks/linux_boot.py --quick    # one variant

For each kernel command line and step size, one fresh instance of
dist/PiSpeedLinux.fmu under fmpy, stepped until pi_speed's first signal
arrives: the simulation time at which /init printed its first line and
at which the first signal came back, and the wall time from instantiation
to that first signal exchange (and to the end of initialization, when
QEMU has started).  "wall/sim" is that wall time over the
simulation time: the slowdown against real time, the figure to compare
between rows of the same run.  Progress goes to stderr, one Markdown
table to stdout.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FMU = REPO / "dist" / "PiSpeedLinux.fmu"
INIT_MARK = "init: uptime"
LIMIT_S = 30.0  # simulation time to give up at


@dataclass
class Boot:
    cmdline: str
    step: float
    init_s: float
    first_signal_s: float
    wall_start_s: float
    wall_s: float


def boot(unzipdir: str, cmdline: str, step: float) -> Boot:
    from fmpy import read_model_description
    from fmpy.fmi2 import FMU2Slave

    md = read_model_description(str(FMU))
    refs = {v.name: v.valueReference for v in md.modelVariables}
    start = time.monotonic()
    slave = FMU2Slave(guid=md.guid, unzipDirectory=unzipdir,
                      modelIdentifier=md.coSimulation.modelIdentifier,
                      instanceName="linux")
    slave.instantiate()
    slave.setupExperiment(startTime=0.0)
    slave.enterInitializationMode()
    if cmdline:
        slave.setString([refs["kernel_cmdline"]], [cmdline])
    slave.exitInitializationMode()
    started = time.monotonic() - start
    init_s = first = float("nan")
    try:
        k = 0
        while k * step < LIMIT_S:
            slave.doStep(k * step, step)
            k += 1
            if init_s != init_s and INIT_MARK in \
                    slave.getString([refs["console"]])[0].decode(errors="replace"):
                init_s = k * step
            if slave.getReal([refs["uptime"]])[0] > 0:
                first = k * step
                break
        wall = time.monotonic() - start
    finally:
        slave.terminate()
        slave.freeInstance()
    if first != first:
        raise RuntimeError(f"no signal within {LIMIT_S} s of simulation time")
    return Boot(cmdline or "(FMU default)", step, init_s, first, started, wall)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="only the default command line at 10 ms steps")
    args = parser.parse_args()
    if not FMU.exists():
        print(f"linux_boot.py: {FMU} missing; run `make closed-loop`", file=sys.stderr)
        return 1
    from fmpy import extract

    variants = [("", 10e-3)]
    if not args.quick:
        # Baselines: the stock command line, and the default without the
        # option that skips the local APIC timer's busy-wait calibration.
        variants += [("", 1e-3), ("console=ttyS0", 10e-3),
                     ("console=ttyS0 cryptomgr.notests tsc=reliable", 10e-3)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        unzipdir = extract(str(FMU), tmp)
        for cmdline, step in variants:
            print(f"booting: cmdline {cmdline or '(default)'!r}, {step * 1e3:g} ms "
                  "steps", file=sys.stderr)
            rows.append(boot(unzipdir, cmdline, step))
    print(f"FMU: {FMU.name}, {FMU.stat().st_size / 1e6:.1f} MB\n")
    print("| kernel command line | step | /init at (sim) | first signal at (sim) "
          "| wall to QEMU started | wall to first signal | wall/sim |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r.cmdline}` | {r.step * 1e3:g} ms | {r.init_s:.3f} s "
              f"| {r.first_signal_s:.3f} s | {r.wall_start_s:.2f} s "
              f"| {r.wall_s:.1f} s | {r.wall_s / r.first_signal_s:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
