"""What a step costs where firmware lives: a Cortex-M guest that wakes every
1 ms (SysTick), one that also prints a line each time, and one that never
wakes, over protocol versions 1, 2 and 3 and through qemu.fmu under fmpy,
each as a ratio to the raw round trip (benchmarks/echo.c over a socket pair)
measured in the same run, pinned to one CPU and unpinned.  QEMU runs the
board at its own instruction rate (the FMU's default, docs/boards.md).

Run from the repository root (needs `make fmu`, which builds QEMU and the
firmware, and gcc):

    .venv/bin/python benchmarks/step_paths.py           # 20000 steps per row
    .venv/bin/python benchmarks/step_paths.py --quick   # 2000

One Markdown table on stdout, progress on stderr.  Every reply's elapsed
time must equal its advance (exact under icount), else the run stops.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "fmu_src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from sync_cost import build_echo, cpu_pinning, measure_echo  # noqa: E402

from qemufmu.boards import board_shift  # noqa: E402
from qemufmu.protocol import FramedChannel, SyncChannel  # noqa: E402

QEMU = REPO / "build" / "qemu" / "bin" / "qemu-system-arm"
FIRMWARE = REPO / "firmware" / "build"
MACHINE = "mps2-an385"
GUESTS = {
    # SysTick every 1 ms, its handler counts; a line every 100 ms
    "wakes every 1 ms": "arm-default.elf",
    # the same, and the main loop prints "ticks=N" (10 bytes) every tick
    "wakes every 1 ms, prints a line": "arm-ticks.elf",
    "idle": "arm-idle.elf",
}
WARMUP = 200


def argv(image: str) -> list[str]:
    return [str(QEMU), "-M", MACHINE, "-nodefaults", "-display", "none",
            "-nic", "none", "-serial", "null", "-kernel", str(FIRMWARE / image),
            "-icount", f"shift={board_shift(MACHINE)},sleep=off", "-rtc", "clock=vm"]


def protocol_us(image: str, version: int, step_ns: int, steps: int) -> float:
    """Microseconds per step over the protocol itself."""
    ours, theirs = socket.socketpair()
    option = f"sock={theirs.fileno()}" + (f",version={version}" if version > 1 else "")
    qemu = subprocess.Popen([*argv(image), "-qqq", option], pass_fds=(theirs.fileno(),),
                            stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    theirs.close()
    try:
        if version == 1:
            ch = SyncChannel(ours)
            step = step_ns // 1000

            def advance() -> int:
                return ch.advance(step, timeout=60)
            want = step
        else:
            ch = FramedChannel(ours)
            ch.version = version
            ch.hello(timeout=60)

            def advance() -> int:
                return ch.advance(step_ns, timeout=60).elapsed_ns
            want = step_ns
        for _ in range(WARMUP):
            advance()
        start = time.perf_counter()
        for k in range(steps):
            if advance() != want:
                raise SystemExit(f"step_paths.py: step {k}: not exact")
        return (time.perf_counter() - start) / steps * 1e6
    finally:
        ours.close()
        qemu.wait(timeout=30)


def fmu_us(image: str, step_ns: int, steps: int) -> float:
    """Microseconds per fmi2DoStep of qemu.fmu (this guest) under fmpy."""
    from fmpy import extract, read_model_description
    from fmpy.fmi2 import FMU2Slave

    fmu = REPO / "dist" / "qemu.fmu"
    md = read_model_description(str(fmu))
    vrs = {v.name: v.valueReference for v in md.modelVariables}
    tmp = tempfile.mkdtemp()
    try:
        slave = FMU2Slave(guid=md.guid, unzipDirectory=extract(str(fmu), tmp),
                          modelIdentifier=md.coSimulation.modelIdentifier,
                          instanceName="bench")
        slave.instantiate()
        slave.setupExperiment(startTime=0.0)
        slave.setString([vrs["guest_image"]], [str(FIRMWARE / image)])
        slave.enterInitializationMode()
        slave.exitInitializationMode()
        h = step_ns * 1e-9
        for k in range(WARMUP):
            slave.doStep(k * h, h)
        start = time.perf_counter()
        for k in range(WARMUP, WARMUP + steps):
            slave.doStep(k * h, h)
        per = (time.perf_counter() - start) / steps * 1e6
        slave.terminate()
        slave.freeInstance()
        return per
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


PATHS = (("protocol v1", 1), ("protocol v2", 2), ("protocol v3", 3),
         ("qemu.fmu under fmpy", 0))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5000, help="steps per figure")
    p.add_argument("--reps", type=int, default=3,
                   help="repetitions of every figure, interleaved; the median is shown")
    p.add_argument("--quick", action="store_true", help="2000 steps, 1 repetition")
    args = p.parse_args()
    steps, reps = (2000, 1) if args.quick else (args.steps, args.reps)
    for path in (QEMU, REPO / "dist" / "qemu.fmu",
                 *(FIRMWARE / g for g in GUESTS.values())):
        if not path.exists():
            print(f"step_paths.py: {path} missing; run `make fmu`", file=sys.stderr)
            return 1
    figures: dict[tuple, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        echo = build_echo(Path(tmp))
        for rep in range(reps):    # interleaved: a slow spell hits every row
            for pinned in (True, False):
                with cpu_pinning(pinned) as cpus:
                    raw = measure_echo(echo, steps, 300) / steps * 1e6
                    figures.setdefault((cpus, "raw round trip (C echo)", "-"),
                                       []).append(raw)
                    for guest, image in GUESTS.items():
                        for step_ns in (100_000, 1_000_000):
                            for name, version in PATHS:
                                print(f"rep {rep + 1}/{reps}, {cpus}: {guest}, "
                                      f"{step_ns // 1000} us, {name}", file=sys.stderr)
                                us = (protocol_us(image, version, step_ns, steps)
                                      if version else fmu_us(image, step_ns, steps))
                                figures.setdefault((cpus, f"{guest}: {name}",
                                                    f"{step_ns // 1000} us"),
                                                   []).append(us)
    print("| CPUs | path | step | us per step | x raw |")
    print("|---|---|---|---|---|")
    raw = {}
    for (cpus, path, step), values in figures.items():
        us = statistics.median(values)
        raw.setdefault(cpus, us)    # the first figure of each pinning
        print(f"| {cpus} | {path} | {step} | {us:.1f} | {us / raw[cpus]:.2f} |")
    print(f"\nMedian of {reps} repetitions of {steps} steps each; x raw: "
          "against the raw round trip at the same pinning.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
