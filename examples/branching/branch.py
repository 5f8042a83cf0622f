#!/usr/bin/env python3
"""Boot once, branch many: what-if runs of the closed loop from one state.

The PI speed controller firmware (PiSpeedController.fmu, firmware/arm/pi.c
on an emulated Cortex-M3) drives the DC motor (DcMotor.fmu) in a 1 ms
loop.  The loop is run once up to the branch point and its whole state
saved: both FMUs' fmi2GetFMUstate (for the controller, the emulated
machine itself).  Then each what-if (a new speed set-point) restores that
state with fmi2SetFMUstate and runs on from there.  Each what-if is checked
against a run from scratch with the same inputs: the speed must be equal
at every step, bit for bit.  The time the branches save is printed.

Needs `examples/closed_loop/build.py` first (writes dist/*.fmu).

    .venv/bin/python examples/branching/branch.py
    .venv/bin/python examples/branching/branch.py --warmup 0.5 --what-if 0.2 \
        --setpoints 50,150
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from fmpy import extract, read_model_description
from fmpy.fmi2 import FMU2Slave

REPO = Path(__file__).resolve().parent.parent.parent
DIST = REPO / "dist"
STEP = 1e-3


class Fmu:
    """One instance through fmpy's raw FMI 2.0 API, variables by name."""

    def __init__(self, path: Path, unzipped: Path, name: str) -> None:
        md = read_model_description(str(path))
        self.refs = {v.name: v.valueReference for v in md.modelVariables}
        self.slave = FMU2Slave(guid=md.guid, unzipDirectory=str(unzipped),
                               modelIdentifier=md.coSimulation.modelIdentifier,
                               instanceName=name)
        self.slave.instantiate()
        self.slave.setupExperiment(startTime=0.0)
        self.slave.enterInitializationMode()
        self.slave.exitInitializationMode()

    def get(self, name: str) -> float:
        return self.slave.getReal([self.refs[name]])[0]

    def set(self, name: str, value: float) -> None:
        self.slave.setReal([self.refs[name]], [value])

    def close(self) -> None:
        self.slave.terminate()
        self.slave.freeInstance()


class Loop:
    """The controller and the motor, coupled every millisecond."""

    def __init__(self, unzipped: dict[str, Path], ecu: Path) -> None:
        self.ecu = Fmu(ecu, unzipped["ecu"], "ecu")
        self.motor = Fmu(DIST / "DcMotor.fmu", unzipped["motor"], "motor")
        self.steps = 0

    def run(self, setpoint: float, seconds: float) -> list[float]:
        """Run with ``setpoint``; the motor speed after every step."""
        speeds = []
        for _ in range(round(seconds / STEP)):
            t = self.steps * STEP
            self.ecu.set("setpoint", setpoint)
            self.ecu.set("speed", self.motor.get("speed"))
            self.motor.set("voltage", self.ecu.get("voltage"))
            self.ecu.slave.doStep(t, STEP)
            self.motor.slave.doStep(t, STEP)
            self.steps += 1
            speeds.append(self.motor.get("speed"))
        return speeds

    def save(self) -> tuple:
        return (self.ecu.slave.getFMUstate(), self.motor.slave.getFMUstate(),
                self.steps)

    def restore(self, state: tuple) -> None:
        self.ecu.slave.setFMUstate(state[0])
        self.motor.slave.setFMUstate(state[1])
        self.steps = state[2]

    def free(self, state: tuple) -> None:
        self.ecu.slave.freeFMUstate(state[0])
        self.motor.slave.freeFMUstate(state[1])

    def close(self) -> None:
        self.ecu.close()
        self.motor.close()


def branch(warmup: float, what_if: float, setpoints: list[float],
           unzipped: dict[str, Path], ecu: Path) -> dict:
    """Warm up once, then every what-if from the saved state."""
    start = time.perf_counter()
    loop = Loop(unzipped, ecu)
    loop.run(100.0, warmup)
    state = loop.save()
    runs = {}
    for sp in setpoints:
        loop.restore(state)
        runs[sp] = loop.run(sp, what_if)
    loop.free(state)
    loop.close()
    return {"runs": runs, "seconds": time.perf_counter() - start}


def from_scratch(warmup: float, what_if: float, setpoints: list[float],
                 unzipped: dict[str, Path], ecu: Path) -> dict:
    """The same what-ifs, each booting and warming up on its own."""
    start = time.perf_counter()
    runs = {}
    for sp in setpoints:
        loop = Loop(unzipped, ecu)
        loop.run(100.0, warmup)
        runs[sp] = loop.run(sp, what_if)
        loop.close()
    return {"runs": runs, "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds of the loop before the branch point")
    parser.add_argument("--what-if", type=float, default=0.3,
                        help="seconds each what-if runs")
    parser.add_argument("--setpoints", default="30,60,90,110",
                        help="comma-separated set-points (rad/s), one per what-if")
    parser.add_argument("--ecu", type=Path, default=DIST / "PiSpeedController.fmu",
                        help="the controller FMU (default: the Cortex-M one; "
                             "dist/PiSpeedLinux.fmu boots Linux once)")
    args = parser.parse_args(argv)
    setpoints = [float(s) for s in args.setpoints.split(",")]
    for fmu in (args.ecu, DIST / "DcMotor.fmu"):
        if not fmu.is_file():
            print(f"branch.py: {fmu} missing; run "
                  "examples/closed_loop/build.py first", file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory(prefix="qemu-fmu-branching-") as tmp:
        unzipped = {
            "ecu": Path(extract(str(args.ecu), f"{tmp}/ecu")),
            "motor": Path(extract(str(DIST / "DcMotor.fmu"), f"{tmp}/motor")),
        }
        branched = branch(args.warmup, args.what_if, setpoints, unzipped, args.ecu)
        scratch = from_scratch(args.warmup, args.what_if, setpoints, unzipped,
                               args.ecu)
    same = True
    print(f"branch point t={args.warmup:g} s; each what-if runs "
          f"{args.what_if:g} s in {STEP * 1e3:g} ms steps")
    for sp in setpoints:
        equal = branched["runs"][sp] == scratch["runs"][sp]
        same &= equal
        print(f"  set-point {sp:6.1f} rad/s: speed at the end "
              f"{branched['runs'][sp][-1]:8.3f} rad/s; "
              f"{'equals' if equal else 'DIFFERS FROM'} the run from scratch")
    print(f"branching: {branched['seconds']:.2f} s, from scratch: "
          f"{scratch['seconds']:.2f} s, saved "
          f"{scratch['seconds'] - branched['seconds']:.2f} s")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
