#!/usr/bin/env python3
"""Firmware in the loop: the PI controller firmware against a DC motor.

Runs dist/closed_loop.ssp (build it with examples/closed_loop/build.py)
or, with --ssp dist/closed_loop_linux.ssp --stop-time 1.5, the same loop
with the controller as a Linux program, with fmpy and with libcosimpy,
prints the step-response figures of each and writes a plot of set-point,
motor speed and controller voltage.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

from run import metrics, simulate_fmpy, simulate_libcosim  # noqa: E402

MASTERS = {"fmpy": simulate_fmpy, "libcosim": simulate_libcosim}


def plot(runs: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 6))
    for name, run in runs.items():
        style = "-" if name == "fmpy" else "--"
        top.plot(run["time"], run["speed"], style, label=f"motor speed ({name})")
        bottom.plot(run["time"], run["voltage"], style,
                    label=f"controller voltage ({name})")
    first = next(iter(runs.values()))
    top.plot(first["time"], first["setpoint"], ":", color="black", label="set-point")
    top.set_ylabel("speed (rad/s)")
    bottom.set_ylabel("voltage (V)")
    bottom.set_xlabel("simulation time (s)")
    top.legend(loc="lower right")
    bottom.legend(loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ssp", type=Path, default=REPO / "dist" / "closed_loop.ssp")
    p.add_argument("--step", type=float, default=1e-3, help="communication step (s)")
    p.add_argument("--stop-time", type=float, default=0.5)
    p.add_argument("--master", choices=[*MASTERS, "both"], default="both")
    p.add_argument("--out", type=Path, default=REPO / "build" / "demo")
    args = p.parse_args()
    if not args.ssp.exists():
        print(f"demo.py: {args.ssp} missing; run examples/closed_loop/build.py",
              file=sys.stderr)
        return 1
    masters = list(MASTERS) if args.master == "both" else [args.master]
    runs = {}
    for name in masters:
        print(f"running the closed loop with {name} ...", file=sys.stderr)
        wall = time.perf_counter()
        runs[name] = MASTERS[name](args.ssp, args.step, args.stop_time)
        wall = time.perf_counter() - wall
        m = metrics(runs[name])
        print(f"{name:9s} {args.stop_time:g} s simulated in {wall:.2f} s: "
              f"settling time (2%) {m['settling_time'] * 1e3:.1f} ms, "
              f"overshoot {m['overshoot_percent']:.2f} %, "
              f"final error {m['final_error']:.2e} rad/s")
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / f"{args.ssp.stem}.png"
    guest = ("as a Linux program (QEMU, x86 pc)" if "linux" in args.ssp.stem
             else "firmware (QEMU, mps2-an385)")
    plot(runs, png, f"PI controller {guest} driving a DC motor")
    print(f"plot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
