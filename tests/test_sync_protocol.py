"""The base qqq protocol, driven over a real socket pair against the built QEMU.

Each test starts the patched QEMU on a guest built from firmware/ and plays
the simulator's side of docs/sync-protocol.md.
"""

from __future__ import annotations

import math
import os
import random
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import arm_argv, kvm_usable, x86_argv
from qemufmu.process import QemuProcess
from qemufmu.protocol import MAX_ADVANCE_US, QemuGone

STEP_TIMEOUT = 60.0


def log_uniform_steps(seed: int, count: int, lo_us: int = 1,
                      hi_us: int = 1_000_000) -> list[int]:
    """Step sizes spread evenly over the decades from lo_us to hi_us."""
    rng = random.Random(seed)
    lo, hi = math.log(lo_us), math.log(hi_us)
    return [round(math.exp(rng.uniform(lo, hi))) for _ in range(count)]


def ticks_seen(serial: Path) -> int:
    """The last tick count the arm-ticks firmware printed."""
    counts = [int(n) for n in re.findall(r"^ticks=(\d+)$", serial.read_text(), re.M)]
    assert counts == list(range(1, len(counts) + 1)), "tick lines not consecutive"
    return counts[-1] if counts else 0


@pytest.mark.parametrize("guest,shift", [("x86-idle", 0), ("x86-busy", 10)])
def test_every_reply_equals_its_request(guests, tmp_path, guest, shift):
    steps = [1, 1_000_000, *log_uniform_steps(seed=2026, count=10_000)]
    requested = replied = 0
    with QemuProcess(x86_argv(guests / f"{guest}.elf", tmp_path / "serial",
                              shift=shift)) as qemu:
        for k, advance in enumerate(steps):
            elapsed = qemu.channel.advance(advance, timeout=STEP_TIMEOUT)
            assert elapsed == advance, f"step {k}"
            requested += advance
            replied += elapsed
    assert replied == requested
    assert qemu.popen.returncode == 0


def test_busy_guest_at_full_rate(guests, tmp_path):
    """shift=0: one instruction per ns, the guest never idles."""
    steps = log_uniform_steps(seed=7, count=2_000, hi_us=4_000)
    with QemuProcess(x86_argv(guests / "x86-busy.elf", tmp_path / "serial",
                              shift=0)) as qemu:
        for advance in steps:
            assert qemu.channel.advance(advance, timeout=STEP_TIMEOUT) == advance
    assert "busy" in (tmp_path / "serial").read_text()


def test_nothing_runs_before_the_first_advance(guests, tmp_path):
    serial = tmp_path / "serial"
    with QemuProcess(arm_argv(guests / "arm-ticks.elf", serial)) as qemu:
        time.sleep(0.5)
        assert qemu.poll() is None
        assert serial.read_text() == "", "guest ran before the first advance"
        assert qemu.channel.advance(0) == 0
        assert serial.read_text() == "", "advance 0 ran the guest"
        assert qemu.channel.advance(500) == 500
        assert serial.read_text() == "boot\n"


@pytest.mark.parametrize("pattern", ["1ms", "100us", "7us", "random"])
def test_guest_timer_follows_our_clock(guests, tmp_path, pattern):
    """After N ms of advances a 1 kHz SysTick guest has counted N ticks."""
    total_ms = 100
    if pattern == "random":
        steps = log_uniform_steps(seed=308, count=400, hi_us=5_000)
        total_us = sum(steps)
        total_ms = total_us // 1000
    else:
        size = {"1ms": 1000, "100us": 100, "7us": 7}[pattern]
        steps = [size] * (total_ms * 1000 // size)
        steps.append(total_ms * 1000 - sum(steps))
        total_us = total_ms * 1000
    serial = tmp_path / "serial"
    with QemuProcess(arm_argv(guests / "arm-ticks.elf", serial)) as qemu:
        for advance in steps:
            if advance:
                assert qemu.channel.advance(advance) == advance
        # The tick due at the last instant is handled just after it.
        settle = (total_ms + 1) * 1000 - total_us - 1
        qemu.channel.advance(min(settle, 20))
    assert ticks_seen(serial) == total_ms


def test_zero_and_maximum_advances(guests, tmp_path):
    with QemuProcess(x86_argv(guests / "x86-idle.elf", tmp_path / "s")) as qemu:
        assert qemu.channel.advance(0) == 0
        assert qemu.channel.advance(1000) == 1000
        assert qemu.channel.advance(0) == 0
        assert qemu.channel.advance(MAX_ADVANCE_US,
                                    timeout=STEP_TIMEOUT) == MAX_ADVANCE_US
        assert qemu.channel.advance(1) == 1
    with pytest.raises(ValueError):
        qemu.channel.send_advance(MAX_ADVANCE_US + 1)


def _exit_time_after_close(qemu: QemuProcess) -> tuple[int, float]:
    start = time.monotonic()
    qemu.channel.close()
    code = qemu.popen.wait(timeout=10)
    return code, time.monotonic() - start


@pytest.mark.parametrize("when", ["before-first-advance", "idle", "busy",
                                  "mid-step"])
def test_closing_the_socket_ends_qemu(guests, tmp_path, when):
    guest = "x86-idle" if when in ("idle", "before-first-advance") else "x86-busy"
    qemu = QemuProcess(x86_argv(guests / f"{guest}.elf", tmp_path / "s"))
    try:
        if when == "before-first-advance":
            time.sleep(0.3)
        elif when == "mid-step":
            # 1000 s of a guest that never idles: hours of host time.
            qemu.channel.advance(10_000)
            qemu.channel.send_advance(1_000_000_000)
            time.sleep(0.3)
        else:
            for _ in range(20):
                qemu.channel.advance(10_000)
        code, seconds = _exit_time_after_close(qemu)
    finally:
        qemu.kill()
    assert code == 0, qemu.stderr_text()
    assert seconds < 1.0


def test_guest_poweroff_gives_end_of_file(guests, tmp_path):
    serial = tmp_path / "s"
    with QemuProcess(x86_argv(guests / "x86-poweroff.elf", serial)) as qemu:
        with pytest.raises(QemuGone):
            for _ in range(1000):
                qemu.channel.advance(10_000, timeout=STEP_TIMEOUT)
        assert qemu.popen.wait(timeout=10) == 0
    assert "bye" in serial.read_text()


def test_poweroff_under_no_shutdown_still_ends_the_stream(guests, tmp_path):
    """QEMU stays up (paused) but the simulator must not wait forever."""
    argv = x86_argv(guests / "x86-poweroff.elf", tmp_path / "s",
                    extra=("-no-shutdown",))
    with QemuProcess(argv) as qemu:
        with pytest.raises(QemuGone):
            for _ in range(1000):
                qemu.channel.advance(10_000, timeout=STEP_TIMEOUT)


def _refusal(argv: list[str], **popen) -> tuple[int, str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL, **popen)
    return proc.returncode, proc.stderr.strip()


def _with_socket(argv: list[str]) -> tuple[int, str]:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        return _refusal([*argv, "-qqq", f"sock={theirs.fileno()}"],
                        pass_fds=(theirs.fileno(),))


@pytest.mark.parametrize("case,expect", [
    ("no-rtc", "needs -rtc clock=vm"),
    ("no-icount", "needs -icount shift=N,sleep=off"),
    ("sleep-on", "sleep=off"),
    ("shift-auto", "sleep=off"),
])
def test_refuses_unpaceable_configurations(guests, tmp_path, case, expect):
    argv = x86_argv(guests / "x86-idle.elf", tmp_path / "s")
    if case == "no-rtc":
        argv = argv[:argv.index("-rtc")]
    elif case == "no-icount":
        i = argv.index("-icount")
        del argv[i:i + 2]
    elif case == "sleep-on":
        argv[argv.index("-icount") + 1] = "shift=0"
    elif case == "shift-auto":
        argv[argv.index("-icount") + 1] = "shift=auto"
    code, err = _with_socket(argv)
    assert code == 1
    assert expect in err
    assert "\n" not in err


def test_refuses_descriptors_that_are_not_connected_sockets(guests, tmp_path):
    argv = x86_argv(guests / "x86-idle.elf", tmp_path / "s")
    read_end, write_end = os.pipe()
    lonely = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dgram_a, dgram_b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    cases = [(read_end, "not a socket"), (99, "not a socket"),
             (lonely.fileno(), "not connected"),
             (dgram_a.fileno(), "not a stream socket")]
    try:
        for fd, expect in cases:
            fds = () if fd == 99 else (fd,)
            code, err = _refusal([*argv, "-qqq", f"sock={fd}"], pass_fds=fds)
            assert (code, expect in err, "\n" in err) == (1, True, False), err
    finally:
        for f in (read_end, write_end):
            os.close(f)
        for s in (lonely, dgram_a, dgram_b):
            s.close()


@pytest.mark.parametrize("option,expect", [
    ("sock=3,bogus=1", "Invalid parameter 'bogus'"),
    ("bogus=1", "Invalid parameter 'bogus'"),
    ("", "needs sock=FD"),
    ("sock=x", "sock"),
])
def test_refuses_bad_suboptions(guests, tmp_path, option, expect):
    argv = x86_argv(guests / "x86-idle.elf", tmp_path / "s")
    code, err = _refusal([*argv, "-qqq", option])
    assert code == 1
    assert expect in err
    assert "\n" not in err


@pytest.mark.skipif(kvm_usable() is not None, reason=str(kvm_usable()))
@pytest.mark.parametrize("guest", ["x86-idle", "x86-busy"])
def test_kvm_replies_cover_requests_and_drift_stays_bounded(guests, tmp_path,
                                                            guest):
    """Under KVM host latency adds guest time; tracking absolute time bounds it."""
    argv = x86_argv(guests / f"{guest}.elf", tmp_path / "s", shift=None,
                    extra=("-accel", "kvm"))
    steps = log_uniform_steps(seed=11, count=500, lo_us=100, hi_us=10_000)
    target = qemu_time = worst = 0
    with QemuProcess(argv) as qemu:
        for h in steps:
            target += h
            advance = max(0, target - qemu_time)
            elapsed = qemu.channel.advance(advance, timeout=STEP_TIMEOUT)
            assert elapsed >= advance
            worst = max(worst, elapsed - advance)
            qemu_time += elapsed
            # The lead is one step's host latency at most: it never builds up.
            assert qemu_time - target <= worst
    assert abs(qemu_time - target) <= worst < 1_000_000
