#!/usr/bin/env python3
"""Stress: many short two-FMU co-simulations, each in a fresh master process.

Each run is a Python master (fmpy's FMU2Slave, no SSP layer) coupling
dist/PiSpeedController.fmu and dist/DcMotor.fmu Jacobi-style for STEPS
steps of 1 ms, then freeing both.  A run passes when its process exits 0;
a crash (e.g. glibc's "corrupted double-linked list" abort) or a hang is
reported with its output.  Run with other load on the machine to shake
out races:  scripts/stress_two_fmus.py --runs 40 --load 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

MASTER = r'''
import sys
from pathlib import Path
from fmpy import extract, read_model_description
from fmpy.fmi2 import FMU2Slave

def load(path, name):
    md = read_model_description(str(path))
    s = FMU2Slave(guid=md.guid, unzipDirectory=extract(str(path)),
                  modelIdentifier=md.coSimulation.modelIdentifier,
                  instanceName=name)
    s.instantiate()
    s.setupExperiment(startTime=0.0)
    s.enterInitializationMode()
    s.exitInitializationMode()
    return s, {v.name: v.valueReference for v in md.modelVariables}

dist = Path(sys.argv[1])
ecu, e = load(dist / "PiSpeedController.fmu", "ecu")
plant, p = load(dist / "DcMotor.fmu", "plant")
h = 0.001
for k in range(int(sys.argv[2])):
    t = k * h
    u = ecu.getReal([e["voltage"]])[0]
    w, sp = plant.getReal([p["speed"], p["setpoint"]])
    ecu.setReal([e["speed"], e["setpoint"]], [w, sp])
    plant.setReal([p["voltage"]], [u])
    ecu.doStep(t, h)
    plant.doStep(t, h)
print("speed", plant.getReal([p["speed"]])[0])
for s in (ecu, plant):
    s.terminate()
    s.freeInstance()
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--load", type=int, default=0,
                        help="busy-loop processes to run alongside")
    args = parser.parse_args()
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
               for _ in range(args.load)]
    failures = 0
    try:
        for run in range(args.runs):
            start = time.monotonic()
            try:
                done = subprocess.run(
                    [sys.executable, "-c", MASTER, str(REPO / "dist"),
                     str(args.steps)], capture_output=True, text=True, timeout=300)
                code, out = done.returncode, done.stdout + done.stderr
            except subprocess.TimeoutExpired as e:
                code, out = "hang", str(e)
            ok = code == 0
            failures += not ok
            print(f"run {run}: exit {code} in {time.monotonic() - start:.1f} s"
                  + ("" if ok else f"\n{out[-2000:]}"), flush=True)
    finally:
        for b in burners:
            b.kill()
            b.wait()
    print(f"{failures} of {args.runs} runs failed")
    return 1 if failures else 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
