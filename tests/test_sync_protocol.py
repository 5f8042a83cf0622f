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
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import arm_argv, kvm_usable, x86_argv
from helpers import RawQemu, blocked_on, qqq_fd, taken
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
    with QemuProcess(x86_argv(guests / f"{guest}.elf", tmp_path / "serial",
                              shift=shift)) as qemu:
        for k, advance in enumerate(steps):
            elapsed = qemu.channel.advance(advance, timeout=STEP_TIMEOUT)
            assert elapsed == advance, f"step {k}"
    assert qemu.popen.returncode == 0


def test_busy_guest_at_full_rate(guests, tmp_path):
    """shift=0: one instruction per ns, the guest never idles."""
    steps = log_uniform_steps(seed=7, count=2_000, hi_us=4_000)
    with QemuProcess(x86_argv(guests / "x86-busy.elf", tmp_path / "serial",
                              shift=0)) as qemu:
        for advance in steps:
            assert qemu.channel.advance(advance, timeout=STEP_TIMEOUT) == advance
    assert "busy" in (tmp_path / "serial").read_text()


@pytest.mark.parametrize("version", [1, 2])
def test_nothing_runs_before_the_first_advance(guests, tmp_path, version):
    """However long the simulator waits, the guest does not start before
    the first advance (version 2: even after the HELLO exchange)."""
    serial = tmp_path / "serial"
    with QemuProcess(arm_argv(guests / "arm-ticks.elf", serial),
                     version=version) as qemu:
        if version == 2:
            qemu.channel.hello(timeout=STEP_TIMEOUT)
        # Not /proc/PID/cmdline: a vfork'ed child may not have it set up yet.
        blocked_on(qemu.pid, qqq_fd(qemu.popen.args))
        time.sleep(0.3)     # time the guest would use to print, were it running
        assert qemu.poll() is None
        assert serial.read_text() == "", "guest ran before the first advance"
        if version == 1:
            assert qemu.channel.advance(0, timeout=STEP_TIMEOUT) == 0
            assert serial.read_text() == "", "advance 0 ran the guest"
            assert qemu.channel.advance(500, timeout=STEP_TIMEOUT) == 500
        else:
            assert qemu.channel.advance(0, timeout=STEP_TIMEOUT).elapsed_ns == 0
            assert serial.read_text() == "", "advance 0 ran the guest"
            assert qemu.channel.advance(500_000,
                                        timeout=STEP_TIMEOUT).elapsed_ns == 500_000
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
                assert qemu.channel.advance(advance, timeout=STEP_TIMEOUT) == advance
        # The tick due at the last instant is handled just after it.
        settle = (total_ms + 1) * 1000 - total_us - 1
        qemu.channel.advance(min(settle, 20), timeout=STEP_TIMEOUT)
    assert ticks_seen(serial) == total_ms


def test_zero_and_maximum_advances(guests, tmp_path):
    with QemuProcess(x86_argv(guests / "x86-idle.elf", tmp_path / "s")) as qemu:
        assert qemu.channel.advance(0, timeout=STEP_TIMEOUT) == 0
        assert qemu.channel.advance(1000, timeout=STEP_TIMEOUT) == 1000
        assert qemu.channel.advance(0, timeout=STEP_TIMEOUT) == 0
        assert qemu.channel.advance(MAX_ADVANCE_US,
                                    timeout=STEP_TIMEOUT) == MAX_ADVANCE_US
        assert qemu.channel.advance(1, timeout=STEP_TIMEOUT) == 1
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
            blocked_on(qemu.pid, qqq_fd(qemu.popen.args))
        elif when == "mid-step":
            # 1000 s of a guest that never idles: hours of host time.
            qemu.channel.advance(10_000, timeout=STEP_TIMEOUT)
            qemu.channel.send_advance(1_000_000_000)
            taken(qemu.channel)
        else:
            for _ in range(20):
                qemu.channel.advance(10_000, timeout=STEP_TIMEOUT)
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
    ("sleep-on", "with sleep on, an idle guest waits"),
    ("shift-auto", "needs a fixed icount shift"),
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
        argv[argv.index("-icount") + 1] = "shift=auto,sleep=off"
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
    ("sock=x", "Parameter 'sock' expects a number"),
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
    """Under KVM the clock follows the host: a reply covers at least its
    request and at most the host time the step took (the host's latency is
    guest time, nothing more); a zero advance is answered with zero."""
    argv = x86_argv(guests / f"{guest}.elf", tmp_path / "s", shift=None,
                    extra=("-accel", "kvm"))
    steps = log_uniform_steps(seed=11, count=500, lo_us=100, hi_us=10_000)
    target = qemu_time = 0
    with QemuProcess(argv) as qemu:
        for k, h in enumerate(steps):
            target += h
            # What the FMU does: ask for what brings QEMU to master time.
            advance = max(0, target - qemu_time)
            start = time.monotonic_ns()
            elapsed = qemu.channel.advance(advance, timeout=STEP_TIMEOUT)
            wall_us = (time.monotonic_ns() - start) // 1000
            if advance == 0:
                assert elapsed == 0, f"step {k}"
            else:
                assert advance <= elapsed <= max(advance, wall_us + 1), f"step {k}"
            qemu_time += elapsed


@pytest.mark.skipif(kvm_usable() is not None, reason=str(kvm_usable()))
def test_enable_kvm_spelling_is_paced_as_kvm(guests, tmp_path):
    """docs/sync-protocol.md: KVM is `-accel kvm` or `-enable-kvm`."""
    argv = x86_argv(guests / "x86-idle.elf", tmp_path / "s", shift=None,
                    extra=("-enable-kvm",))
    with QemuProcess(argv) as qemu:
        assert qemu.channel.advance(0, timeout=STEP_TIMEOUT) == 0
        for _ in range(20):
            assert qemu.channel.advance(1000, timeout=STEP_TIMEOUT) >= 1000
    assert qemu.popen.returncode == 0, qemu.stderr_text()


def test_explicit_version_1_is_the_base_protocol(guests, tmp_path):
    """`-qqq sock=FD,version=1`: 32-bit microseconds, no HELLO, no frames."""
    qemu = RawQemu(x86_argv(guests / "x86-idle.elf", tmp_path / "s"), version=1,
                   wait=STEP_TIMEOUT)
    try:
        for us in (0, 1, 999, 1_000_000, 1):
            qemu.sock.sendall(struct.pack(">I", us))
            assert struct.unpack(">I", qemu.recv_exact(4))[0] == us
        qemu.sock.close()
        assert qemu.wait() == (0, [])
    finally:
        qemu.close()


def test_socket_is_close_on_exec_in_qemu(guests, tmp_path):
    """Whatever QEMU starts (a helper, a script) does not inherit it."""
    with QemuProcess(x86_argv(guests / "x86-idle.elf", tmp_path / "s")) as qemu:
        qemu.channel.advance(1000, timeout=STEP_TIMEOUT)  # QEMU is set up
        argv = Path(f"/proc/{qemu.pid}/cmdline").read_bytes().split(b"\0")
        fd = int(argv[argv.index(b"-qqq") + 1].split(b",")[0].split(b"=")[1])
        assert os.readlink(f"/proc/{qemu.pid}/fd/{fd}").startswith("socket:")
        flags = re.search(r"^flags:\s+(\d+)$",
                          Path(f"/proc/{qemu.pid}/fdinfo/{fd}").read_text(), re.M)
        assert int(flags[1], 8) & os.O_CLOEXEC


@pytest.mark.parametrize("action", ["pause", "shutdown"])
def test_guest_panic_ends_the_stream(guests, tmp_path, action):
    """A guest that reports a panic (pvpanic) never reaches the next
    synchronization point; QEMU shuts the socket rather than leave the
    simulator waiting, whether it stops (panic=pause) or exits."""
    serial = tmp_path / "s"
    argv = x86_argv(guests / "x86-crash.elf", serial,
                    extra=("-device", "pvpanic", "-action", f"panic={action}"))
    with QemuProcess(argv) as qemu:
        with pytest.raises(QemuGone):
            for _ in range(1000):
                qemu.channel.advance(10_000, timeout=STEP_TIMEOUT)
        # Stopped (pause) or leaving (shutdown), QEMU ends cleanly: this is
        # the guest's panic, not QEMU crashing on the guest's next jump.
        assert qemu.popen.wait(timeout=10) == 0, qemu.stderr_text()
    assert serial.read_text() == "crash\n"


@pytest.mark.skipif(kvm_usable() is not None, reason=str(kvm_usable()))
def test_internal_error_ends_the_stream(guests, tmp_path):
    """Under KVM, code run from where there is no memory stops the machine
    with an internal error: the socket is shut all the same."""
    serial = tmp_path / "s"
    argv = x86_argv(guests / "x86-crash.elf", serial, shift=None,
                    extra=("-accel", "kvm"))
    with QemuProcess(argv) as qemu:
        with pytest.raises(QemuGone):
            for _ in range(1000):
                qemu.channel.advance(10_000, timeout=STEP_TIMEOUT)
        qemu.popen.wait(timeout=10)  # it leaves once the stream is over
        assert "internal error" in qemu.stderr_text().lower()
    assert serial.read_text() == "crash\n"
