"""An RTOS-like guest at the board's own speed, against real time.

`arm-spin` is what most RTOS demos look like to QEMU: a 1 kHz SysTick and
an idle loop that spins between ticks (no wfi), a line on the console
every 100 ms. Run through `qemu.fmu` under fmpy in 1 ms steps, it costs
wall time in proportion to the instructions QEMU executes, so the
instruction rate decides its speed. This runs it at the default rate
(`icount_shift = -1`: the board's clock, shift 5 on mps2-an385, see
docs/boards.md) and at shift 0 (10^9 instructions per second, the default
before), beside the same guest sleeping in wfi (`arm-default`), and
reports each as a real-time factor: simulated seconds per wall second.
It also checks that every run wrote the same console lines at the same
simulation times (the transcript of console_file).

    .venv/bin/python benchmarks/spin_speed.py            # 3 s, 3 repetitions
    .venv/bin/python benchmarks/spin_speed.py --quick    # 1 s, 1 repetition

Needs `make fmu` (QEMU, the firmware, dist/qemu.fmu). One Markdown table
on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FMU = REPO / "dist" / "qemu.fmu"
FIRMWARE = REPO / "firmware" / "build"
RUNS = (
    ("spinning idle loop (arm-spin)", "arm-spin.elf", -1),
    ("spinning idle loop (arm-spin)", "arm-spin.elf", 0),
    ("wfi idle loop (arm-default)", "arm-default.elf", -1),
    ("wfi idle loop (arm-default)", "arm-default.elf", 0),
)
STEP = 1e-3


def run(image: str, shift: int, seconds: float, tmp: Path) -> tuple[float, str]:
    """Wall seconds for ``seconds`` of simulation, and the console transcript."""
    from fmpy import extract, read_model_description
    from fmpy.fmi2 import FMU2Slave

    md = read_model_description(str(FMU))
    vrs = {v.name: v.valueReference for v in md.modelVariables}
    unzipped = extract(str(FMU), str(tmp / "fmu"))
    transcript = tmp / "console.txt"
    slave = FMU2Slave(guid=md.guid, unzipDirectory=unzipped,
                      modelIdentifier=md.coSimulation.modelIdentifier,
                      instanceName="spin")
    try:
        slave.instantiate()
        slave.setupExperiment(startTime=0.0)
        slave.setString([vrs["guest_image"], vrs["console_file"]],
                        [str(FIRMWARE / image), str(transcript)])
        slave.setInteger([vrs["icount_shift"]], [shift])
        start = time.perf_counter()
        slave.enterInitializationMode()
        slave.exitInitializationMode()
        for k in range(round(seconds / STEP)):
            slave.doStep(k * STEP, STEP)
        wall = time.perf_counter() - start
        slave.terminate()
    finally:
        slave.freeInstance()
        shutil.rmtree(unzipped, ignore_errors=True)
    return wall, transcript.read_text()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=3.0,
                   help="simulated seconds per run (default 3)")
    p.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    p.add_argument("--quick", action="store_true", help="1 s, 1 repetition")
    args = p.parse_args()
    if args.quick:
        args.seconds, args.reps = 1.0, 1
    for path in (FMU, *(FIRMWARE / image for _, image, _ in RUNS)):
        if not path.exists():
            print(f"spin_speed.py: {path} missing; run `make fmu`", file=sys.stderr)
            return 1
    walls: dict[int, list[float]] = {i: [] for i in range(len(RUNS))}
    transcripts: dict[str, set[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):   # interleaved: drift hits every row alike
            for i, (_, image, shift) in enumerate(RUNS):
                print(f"rep {rep + 1}/{args.reps}: {image}, icount_shift {shift}",
                      file=sys.stderr)
                wall, text = run(image, shift, args.seconds, Path(tmp))
                walls[i].append(wall)
                transcripts.setdefault(image, set()).add(text)
    lines = {image: len(next(iter(t)).splitlines()) for image, t in transcripts.items()}
    print(f"| guest | icount_shift | wall s for {args.seconds:g} s simulated "
          f"| x real time | console |")
    print("|---|---|---|---|---|")
    for i, (what, image, shift) in enumerate(RUNS):
        wall = statistics.median(walls[i])
        same = ("same lines at the same times in every run"
                if len(transcripts[image]) == 1 else "DIFFERS between runs")
        label = "-1 (board: 5)" if shift == -1 else str(shift)
        print(f"| {what} | {label} | {wall:.2f} | {args.seconds / wall:.2f} "
              f"| {lines[image]} lines, {same} |")
    if any(len(t) != 1 for t in transcripts.values()):
        print("spin_speed.py: console output differs between runs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
