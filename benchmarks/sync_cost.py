"""What one qqq synchronization step costs, against a raw socket round trip.

Run from the repository root:

    .venv/bin/python benchmarks/sync_cost.py            # full run
    .venv/bin/python benchmarks/sync_cost.py --quick    # smoke run

Measures, unpinned and pinned to one CPU:

* an idle x86 guest paced in 10, 100 and 1000 us steps: steps per second
  and wall-clock cost per step;
* the raw round trip the same Python loop gets over a socket pair from a
  C program that echoes every 4-byte message (benchmarks/echo.c), and the
  ratio of the two: the part of a step's cost that is QEMU's;
* a busy x86 guest stepped in 1 ms steps against the same guest running
  the same virtual time in one single advance ("free run").

Every figure is the median of several repetitions, each in fresh processes.
Progress goes to stderr, one Markdown table to stdout.  See README.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "fmu_src"))

from qemufmu.process import QemuProcess  # noqa: E402
from qemufmu.protocol import SyncChannel, SyncError  # noqa: E402

DEFAULT_QEMU = REPO / "build" / "qemu" / "bin" / "qemu-system-x86_64"
DEFAULT_FIRMWARE = REPO / "firmware" / "build"
ECHO_SOURCE = Path(__file__).resolve().parent / "echo.c"

WARMUP_STEP_US = 10_000     # warm-up pace: 10 ms of virtual time per step
WARMUP_LIMIT_US = 60_000_000  # give up if the guest has not booted by then
ECHO_WARMUP_STEPS = 500     # untimed round trips before timing the echo peer


class BenchError(Exception):
    """The benchmark cannot go on; the message is one line for the user."""


@dataclass(frozen=True)
class Config:
    """Everything a run depends on, from the command line."""

    qemu: Path
    firmware: Path
    steps: int
    step_sizes: tuple[int, ...]
    reps: int
    warmup_s: float
    busy_warmup_s: float
    busy_s: float
    busy_step_us: int
    pin_modes: tuple[bool, ...]
    hang_s: float


@dataclass
class Samples:
    """Wall-clock seconds per repetition for one pinning mode."""

    idle: dict[int, list[float]] = field(default_factory=dict)  # step us -> s
    echo: list[float] = field(default_factory=list)
    busy_stepped: list[float] = field(default_factory=list)
    busy_free: list[float] = field(default_factory=list)
    busy_us: int = 0   # virtual microseconds each busy figure covers


# --------------------------------------------------------------------------
# Progress and plumbing


def progress(message: str) -> None:
    """One line of progress on stderr."""
    print(f"sync_cost: {message}", file=sys.stderr, flush=True)


@contextmanager
def watchdog(seconds: float, kill: Callable[[], None], what: str) -> Iterator[None]:
    """Call ``kill`` if the block takes longer than ``seconds`` of wall time.

    Killing the peer makes our blocked read return end-of-file, so a hang
    turns into an error naming it instead of blocking forever.  The timer
    thread sleeps meanwhile and costs the timed loop nothing.
    """
    fired = threading.Event()

    def expire() -> None:
        fired.set()
        kill()

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    except (SyncError, BenchError) as e:
        if fired.is_set():
            raise BenchError(
                f"{what}: no reply within {seconds:g} s of wall-clock time "
                f"(hang; peer killed)") from e
        raise
    finally:
        timer.cancel()


def time_steps(channel: SyncChannel, step_us: int, count: int,
               what: str) -> float:
    """Send ``count`` advances of ``step_us``; return the wall seconds taken.

    Every reply must equal its request (exact under icount, and an echo
    returns what it got); the first one that does not is an error.
    """
    advance = channel.advance
    start = time.perf_counter()
    for k in range(count):
        elapsed = advance(step_us)
        if elapsed != step_us:
            raise BenchError(
                f"{what}: step {k + 1} of {count}: advanced {step_us} us, "
                f"peer replied {elapsed} us")
    return time.perf_counter() - start


@contextmanager
def cpu_pinning(pinned: bool) -> Iterator[str]:
    """Pin this process (and so every child it starts) to one CPU, or not.

    Yields a label for the table; the previous affinity is restored after.
    """
    before = os.sched_getaffinity(0)
    if not pinned:
        yield f"all {len(before)}"
        return
    cpu = 0 if 0 in before else min(before)
    os.sched_setaffinity(0, {cpu})
    try:
        yield f"CPU {cpu} only"
    finally:
        os.sched_setaffinity(0, before)


# --------------------------------------------------------------------------
# The peers: the C echo and QEMU


def build_echo(tmp: Path) -> Path:
    """Compile echo.c with ``gcc -O2`` into ``tmp``; return the binary."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise BenchError("gcc not found: it is needed to build benchmarks/echo.c")
    binary = tmp / "echo"
    result = subprocess.run([gcc, "-O2", "-o", str(binary), str(ECHO_SOURCE)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or ["(no output)"])[0]
        raise BenchError(f"compiling {ECHO_SOURCE.name} failed: {first}")
    return binary


def measure_echo(echo: Path, steps: int, hang_s: float) -> float:
    """Wall seconds for ``steps`` round trips to a fresh echo child."""
    channel, theirs = SyncChannel.pair()
    try:
        fd = theirs.fileno()
        child = subprocess.Popen([str(echo), str(fd)], pass_fds=(fd,),
                                 stdin=subprocess.DEVNULL)
    except BaseException:
        channel.close()
        raise
    finally:
        theirs.close()
    try:
        with watchdog(hang_s, child.kill, "echo peer"):
            time_steps(channel, 1, ECHO_WARMUP_STEPS, "echo peer")
            return time_steps(channel, 1, steps, "echo peer")
    finally:
        channel.close()            # end-of-file: the echo exits by itself
        try:
            child.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def x86_argv(qemu: Path, kernel: Path, serial: Path) -> list[str]:
    """A multiboot guest on ``-M pc`` at one instruction per virtual ns.

    The same command line as ``x86_argv`` in tests/conftest.py (shift=0).
    """
    return [str(qemu), "-M", "pc", "-nodefaults", "-display", "none",
            "-net", "none", "-serial", f"file:{serial}", "-kernel", str(kernel),
            "-icount", "shift=0,sleep=off", "-rtc", "clock=vm"]


@contextmanager
def x86_guest(cfg: Config, guest: str, tmp: Path,
              warmup_s: float) -> Iterator[QemuProcess]:
    """Start QEMU on firmware ``guest`` and warm it up past the BIOS.

    Runs at least ``warmup_s`` of virtual time in 10 ms steps, and on
    until the guest has printed its banner (its own name, e.g. ``idle``)
    on the serial port.  QEMU is closed and reaped on the way out and
    must then exit with status 0; a failure of the synchronization is
    reported with QEMU's exit status.
    """
    serial = tmp / f"{guest}.serial"
    serial.unlink(missing_ok=True)
    banner = guest.split("-")[-1]
    argv = x86_argv(cfg.qemu, cfg.firmware / f"{guest}.elf", serial)
    with QemuProcess(argv) as qemu:
        def kill() -> None:
            try:
                os.killpg(qemu.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        try:
            with watchdog(cfg.hang_s, kill, f"{guest} warm-up"):
                warm_up(qemu.channel, serial, banner,
                        round(warmup_s * 1e6), guest)
            with watchdog(cfg.hang_s, kill, guest):
                yield qemu
        except SyncError as e:
            raise BenchError(f"{guest}: {e}; {qemu.explain_exit()}") from e
    status = qemu.popen.returncode   # the protocol: exit 0, promptly, on EOF
    if status != 0:
        raise BenchError(f"{guest}: QEMU did not exit with status 0 within 1 s "
                         f"of our closing the socket (status {status})")


def read_serial(serial: Path) -> str:
    """What the guest wrote on its serial port so far ("" before QEMU made it)."""
    try:
        return serial.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def warm_up(channel: SyncChannel, serial: Path, banner: str, min_us: int,
            guest: str) -> None:
    """Advance in 10 ms steps until ``min_us`` passed and ``banner`` appeared."""
    elapsed = 0
    while elapsed < min_us or banner not in read_serial(serial):
        if elapsed >= WARMUP_LIMIT_US:
            raise BenchError(
                f"{guest}: no '{banner}' on the serial port after "
                f"{elapsed / 1e6:g} s of virtual time")
        time_steps(channel, WARMUP_STEP_US, 1, f"{guest} warm-up")
        elapsed += WARMUP_STEP_US


def measure_idle(cfg: Config, tmp: Path) -> dict[int, float]:
    """Wall seconds for ``cfg.steps`` steps of each size, on one idle guest."""
    with x86_guest(cfg, "x86-idle", tmp, cfg.warmup_s) as qemu:
        return {step: time_steps(qemu.channel, step, cfg.steps,
                                 f"x86-idle at {step} us steps")
                for step in cfg.step_sizes}


def measure_busy(cfg: Config, tmp: Path) -> tuple[float, float, int]:
    """Busy guest: (stepped seconds, free-run seconds, virtual us each).

    Both run the same virtual time on the same warmed-up QEMU: first in
    ``cfg.busy_step_us`` steps, then in a single advance.  The warm-up is
    short: the guest prints its banner a few ms in, and every virtual
    second of a busy guest costs many wall seconds at ``shift=0``.
    """
    count = max(1, round(cfg.busy_s * 1e6) // cfg.busy_step_us)
    total_us = count * cfg.busy_step_us
    with x86_guest(cfg, "x86-busy", tmp, cfg.busy_warmup_s) as qemu:
        stepped = time_steps(qemu.channel, cfg.busy_step_us, count,
                             f"x86-busy at {cfg.busy_step_us} us steps")
        free = time_steps(qemu.channel, total_us, 1, "x86-busy free run")
    return stepped, free, total_us


# --------------------------------------------------------------------------
# The run and the table


def run(cfg: Config, echo: Path, tmp: Path) -> dict[str, Samples]:
    """All repetitions of all measurements; pinning label -> samples.

    Repetitions are interleaved (idle, echo, busy, idle, ...) so slow
    drifts of the host hit every measurement alike.
    """
    results: dict[str, Samples] = {}
    total = len(cfg.pin_modes) * cfg.reps * 3
    done = 0
    for pinned in cfg.pin_modes:
        with cpu_pinning(pinned) as label:
            s = results.setdefault(label, Samples())
            for rep in range(1, cfg.reps + 1):
                where = (f"{'pinned' if pinned else 'unpinned'}, "
                         f"rep {rep}/{cfg.reps}")
                sizes = ", ".join(map(str, cfg.step_sizes))
                progress(f"[{done + 1}/{total}] {where}: idle guest, "
                         f"{cfg.steps} steps each of {sizes} us")
                for step, secs in measure_idle(cfg, tmp).items():
                    s.idle.setdefault(step, []).append(secs)
                progress(f"[{done + 2}/{total}] {where}: raw round trip, "
                         f"{cfg.steps} steps")
                s.echo.append(measure_echo(echo, cfg.steps, cfg.hang_s))
                progress(f"[{done + 3}/{total}] {where}: busy guest, "
                         f"{cfg.busy_s:g} s virtual, stepped then free")
                stepped, free, virtual_us = measure_busy(cfg, tmp)
                s.busy_stepped.append(stepped)
                s.busy_free.append(free)
                s.busy_us = virtual_us
                done += 3
    return results


def markdown(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    """A Markdown table padded to line up; columns in ``right`` right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if i in right else "-")
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *map(line, rows)])


def spread(samples: list[float]) -> str:
    """(max - min) / median of the repetitions, in percent: the noise."""
    if len(samples) < 2:
        return "-"
    return f"{(max(samples) - min(samples)) / statistics.median(samples):.0%}"


def table(cfg: Config, results: dict[str, Samples]) -> str:
    """The Markdown table of medians, with a one-paragraph key under it."""
    rows: list[list[str]] = []
    for label, s in results.items():
        raw = statistics.median(s.echo) / cfg.steps
        rows.append(["raw round trip (C echo)", label, "-",
                     f"{1 / raw:,.0f} steps/s", f"{raw * 1e6:.2f} us",
                     "1.00x raw", spread(s.echo)])
        for step, secs in s.idle.items():
            cost = statistics.median(secs) / cfg.steps
            rows.append(["idle x86 guest", label, f"{step} us",
                         f"{1 / cost:,.0f} steps/s", f"{cost * 1e6:.2f} us",
                         f"{cost / raw:.2f}x raw", spread(secs)])
        count = s.busy_us // cfg.busy_step_us
        virtual = s.busy_us / 1e6
        stepped = statistics.median(s.busy_stepped)
        free = statistics.median(s.busy_free)
        rows.append(["busy x86 guest, stepped", label, f"{cfg.busy_step_us} us",
                     f"{virtual / stepped:.3f} virt s/s",
                     f"{(stepped - free) / count * 1e6:+.2f} us vs free",
                     f"{free / stepped:.3f}x free", spread(s.busy_stepped)])
        rows.append(["busy x86 guest, free run", label, f"{virtual:g} s, 1 sync",
                     f"{virtual / free:.3f} virt s/s", "-", "1.000x free",
                     spread(s.busy_free)])
    header = ["Measurement", "CPUs", "Step", "Rate", "Wall cost per step",
              "Ratio", "Spread"]
    key = (f"Median of {cfg.reps} runs. Idle and raw: {cfg.steps} timed steps "
           f"each, after warm-up; ratio = cost per step / raw round trip at "
           f"the same pinning. Busy: {cfg.busy_s:g} s of virtual time each; "
           f"ratio = stepped speed / free-run speed. Spread = (max - min) / "
           f"median of the {cfg.reps} wall times.")
    return markdown(header, rows, right={2, 3, 4, 5, 6}) + "\n\n" + key


# --------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> Config:
    """Read the command line into a :class:`Config`."""
    p = argparse.ArgumentParser(
        description="Measure the wall-clock cost of one qqq synchronization "
                    "step against a raw socket-pair round trip.",
        epilog="Prints one Markdown table on stdout, progress on stderr.")
    p.add_argument("--steps", type=int, metavar="N",
                   help="timed steps per idle and raw figure (default 5000; "
                        "--quick: 500)")
    p.add_argument("--step-sizes", default="10,100,1000", metavar="US,US,...",
                   help="idle-guest step sizes in us (default %(default)s)")
    p.add_argument("--reps", type=int, metavar="R",
                   help="repetitions; the median is shown (default 3; "
                        "--quick: 1)")
    p.add_argument("--warmup", type=float, metavar="S",
                   help="virtual seconds the idle guest runs in 10 ms steps "
                        "before timing (default 2; --quick: 0.5)")
    p.add_argument("--busy-warmup", type=float, metavar="S",
                   help="virtual seconds of busy-guest warm-up (default 0.1; "
                        "--quick: 0.05)")
    p.add_argument("--busy-seconds", type=float, metavar="S",
                   help="virtual seconds per busy-guest figure (default 2; "
                        "--quick: 0.2)")
    p.add_argument("--busy-step", type=int, default=1000, metavar="US",
                   help="busy-guest step size in us (default %(default)s)")
    p.add_argument("--pinning", choices=("both", "unpinned", "pinned"),
                   default="both", help="CPU pinning modes (default %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="a short smoke run; explicit options still win")
    p.add_argument("--hang-timeout", type=float, default=300.0, metavar="S",
                   help="wall seconds after which a silent peer is a hang "
                        "(default %(default)g)")
    p.add_argument("--qemu", type=Path, default=DEFAULT_QEMU,
                   help="qemu-system-x86_64 with -qqq (default: the build)")
    p.add_argument("--firmware", type=Path, default=DEFAULT_FIRMWARE,
                   help="directory with x86-idle.elf and x86-busy.elf")
    a = p.parse_args(argv)

    def pick(value: float | None, full: float, quick: float) -> float:
        return value if value is not None else (quick if a.quick else full)

    try:
        sizes = tuple(int(s) for s in a.step_sizes.split(","))
    except ValueError:
        p.error(f"--step-sizes: not a list of integers: {a.step_sizes!r}")
    cfg = Config(
        qemu=a.qemu, firmware=a.firmware,
        steps=int(pick(a.steps, 5000, 500)), step_sizes=sizes,
        reps=int(pick(a.reps, 3, 1)), warmup_s=pick(a.warmup, 2.0, 0.5),
        busy_warmup_s=pick(a.busy_warmup, 0.1, 0.05),
        busy_s=pick(a.busy_seconds, 2.0, 0.2), busy_step_us=a.busy_step,
        pin_modes={"both": (False, True), "unpinned": (False,),
                   "pinned": (True,)}[a.pinning],
        hang_s=a.hang_timeout)
    if (cfg.steps < 1 or cfg.reps < 1 or min(cfg.warmup_s, cfg.busy_warmup_s) < 0
            or cfg.busy_s <= 0
            or not 1 <= cfg.busy_step_us <= 0xFFFF_FFFF
            or any(not 1 <= s <= 0xFFFF_FFFF for s in sizes)
            or cfg.busy_s * 1e6 > 0xFFFF_FFFF):
        p.error("counts, sizes and durations must be positive (and fit the "
                "protocol's 32-bit microseconds)")
    return cfg


def check_inputs(cfg: Config) -> None:
    """Fail early, with one line, if QEMU or a guest image is missing."""
    if not os.access(cfg.qemu, os.X_OK):
        raise BenchError(f"QEMU not found at {cfg.qemu}: run `make qemu` first")
    for guest in ("x86-idle", "x86-busy"):
        image = cfg.firmware / f"{guest}.elf"
        if not image.is_file():
            raise BenchError(f"guest image {image} missing: run `make firmware`")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table; return the exit status."""
    cfg = parse_args(argv)
    start = time.perf_counter()
    try:
        check_inputs(cfg)
        with tempfile.TemporaryDirectory(prefix="sync_cost-") as tmp:
            echo = build_echo(Path(tmp))
            results = run(cfg, echo, Path(tmp))
    except BenchError as e:
        message = " | ".join(str(e).split("\n"))  # one line, even with QEMU's
        print(f"sync_cost: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sync_cost: interrupted", file=sys.stderr)
        return 130
    print(table(cfg, results))
    progress(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
