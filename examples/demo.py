#!/usr/bin/env python3
"""The default co-simulation: qemu.fmu under fmpy, 1 s at 1 ms steps.

Runs the FMU with its embedded Cortex-M firmware, prints a short summary
and writes a plot of what the guest reported over simulated time.

Usage: demo.py [--fmu dist/qemu.fmu] [--stop-time 1] [--step 0.001] [--out build/demo]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fmu", type=Path, default=REPO / "dist" / "qemu.fmu")
    p.add_argument("--stop-time", type=float, default=1.0)
    p.add_argument("--step", type=float, default=1e-3)
    p.add_argument("--out", type=Path, default=REPO / "build" / "demo")
    return p.parse_args()


def progress(time_: float, recorder) -> bool:
    """fmpy step callback: a one-line progress bar on a terminal's stderr."""
    stop = progress.stop_time
    done = int(30 * time_ / stop)
    if done != progress.shown and sys.stderr.isatty():
        progress.shown = done
        print(f"\r  [{'#' * done}{'.' * (30 - done)}] {time_:6.3f} / {stop:g} s",
              end="", file=sys.stderr, flush=True)
    return True


def plot(result, reports: list[tuple[float, int]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 6))
    top.plot(result["time"], result["qemu_time"], label="QEMU virtual time")
    top.set_ylabel("QEMU time (s)")
    top.legend(loc="upper left")
    if reports:
        t, ticks = zip(*reports, strict=True)
        bottom.step(t, ticks, where="post", marker="o",
                    label="guest tick count (its SysTick, reported on UART)")
    bottom.plot(result["time"], result["time"] * 1000, ":", color="gray",
                label="master time in ms")
    bottom.set_xlabel("simulation time (s)")
    bottom.set_ylabel("guest ticks")
    bottom.legend(loc="upper left")
    fig.suptitle("qemu.fmu: Cortex-M firmware on mps2-an385, paced by fmpy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    args = parse_args()
    if not args.fmu.exists():
        print(f"demo.py: {args.fmu} missing; run `make fmu`", file=sys.stderr)
        return 1
    from fmpy import simulate_fmu

    args.out.mkdir(parents=True, exist_ok=True)
    console = args.out / "console.txt"
    progress.stop_time, progress.shown = args.stop_time, -1
    wall = time.perf_counter()
    result = simulate_fmu(str(args.fmu), stop_time=args.stop_time,
                          output_interval=args.step, step_finished=progress,
                          start_values={"console_file": str(console)},
                          output=["qemu_time", "sync_steps", "console_bytes"])
    wall = time.perf_counter() - wall
    if sys.stderr.isatty():
        print(file=sys.stderr)
    reports = [(float(t), int(n)) for t, n in re.findall(
        r"^\[\s*([\d.]+)\] ticks=(\d+)$", console.read_text(), re.M)]
    png = args.out / "demo.png"
    plot(result, reports, png)
    last = result[-1]
    print(f"simulated {last['time']:g} s in {wall:.2f} s of wall time "
          f"({last['time'] / wall:.2f}x real time)")
    print(f"QEMU virtual time at the end: {last['qemu_time']:.6f} s after "
          f"{last['sync_steps']} synchronization steps")
    if reports:
        t, n = reports[-1]
        print(f"the guest counted {n} ticks of its own 1 kHz timer by t={t:.3f} s "
              f"({len(reports)} reports, {last['console_bytes']} console bytes)")
    print(f"console transcript: {console}")
    print(f"plot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
