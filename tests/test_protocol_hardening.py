"""How QEMU's end of the qqq socket holds up against signals, limits and
hostile or careless simulators, and that nothing the guest sent is lost
when the machine stops (docs/sync-protocol.md "End", docs/protocol-v2.md
"Limits" and "END").

Real QEMU and guests; the simulator's side is played over a raw socket
pair where the test needs bytes the client library would never send.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import arm_argv, built, kvm_usable, x86_argv
from helpers import (
    POLLOUT,
    RawQemu,
    advance_frame,
    blocked_on,
    errors,
    frame,
    qqq_fd,
    running,
    taken,
)
from qemufmu.process import QemuProcess
from qemufmu.protocol import (
    ADVANCE,
    DATA,
    HELLO,
    MAX_PAYLOAD,
    MAX_TIME_NS,
    REPLY,
    FramedChannel,
    ProtocolError,
    QemuGone,
    StepTimeout,
)

MS = 1_000_000  # ns
WAIT = 10.0     # s: bound on every wait for QEMU


def with_console(argv: list[str]) -> list[str]:
    """``argv`` with serial port 0 on a qqq data channel named console."""
    argv = list(argv)
    argv[argv.index("-serial") + 1] = "chardev:console"
    return [*argv, "-chardev", "qqq,id=console"]


class Raw(RawQemu):
    """QEMU on a raw socket pair (version 1: `sock=FD` alone), with the
    simulator's side of the exchanges these tests make."""

    def __init__(self, argv: list[str], version: int) -> None:
        super().__init__(argv, version if version > 1 else None, wait=WAIT)

    def hello(self, payload: bytes = struct.pack(">I", 2)) -> None:
        kind, _ = self.frame()
        assert kind == HELLO
        self.sock.sendall(frame(HELLO, payload))

    def advance_bytes(self, ns: int) -> bytes:
        if self.version == 1:
            return struct.pack(">I", ns // 1000)
        return advance_frame(ns)

    def advance(self, ns: int) -> int:
        self.sock.sendall(self.advance_bytes(ns))
        if self.version == 1:
            return struct.unpack(">I", self.recv_exact(4))[0] * 1000
        kind, payload = self.frame()
        assert kind == REPLY
        return struct.unpack_from(">Q", payload)[0]


@pytest.fixture
def raw():
    started: list[Raw] = []

    def start(argv: list[str], version: int) -> Raw:
        started.append(Raw(argv, version))
        return started[-1]

    yield start
    for r in started:
        r.close()


# -- signals --------------------------------------------------------------

STATES = ["before-first-advance", "between-steps", "mid-step"]


def _signal_case(guests, raw, state: str, version: int, kvm: bool,
                 signum: int) -> None:
    guest = "x86-busy" if state == "mid-step" else "x86-idle"
    argv = x86_argv(guests / f"{guest}.elf", "/dev/null",
                    shift=None if kvm else 0,
                    extra=("-accel", "kvm") if kvm else ())
    qemu = raw(argv, version)
    if version == 2:
        qemu.hello()
    # Under icount a reply is exactly its request; KVM adds the host's latency.
    exact = (lambda ns: ns >= MS) if kvm else (lambda ns: ns == MS)
    if state == "between-steps":
        for _ in range(5):
            assert exact(qemu.advance(MS))
    elif state == "mid-step":
        assert exact(qemu.advance(MS))
        # About 70 minutes of a guest that never idles: hours of host time.
        qemu.sock.sendall(qemu.advance_bytes(4_000_000_000_000))
    # QEMU must be waiting (or running) when the signal comes.
    if state == "mid-step":
        taken(qemu.sock)
    else:
        blocked_on(qemu.proc.pid, qemu.fd)
    # adevs's teardown: a child it forked still holds the simulator's end,
    # so closing ours ends nothing; the signal must.
    holder = subprocess.Popen(["sleep", "60"], pass_fds=(qemu.sock.fileno(),))
    try:
        qemu.sock.close()
        assert qemu.proc.poll() is None
        os.kill(qemu.proc.pid, signum)
        code, lines = qemu.wait()
    finally:
        holder.kill()
        holder.wait()
    assert code == 0
    assert len(lines) == 1 and f"terminating on signal {signum}" in lines[0], lines


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("state", STATES)
def test_sigterm_ends_qemu_in_every_state(guests, raw, state, version):
    _signal_case(guests, raw, state, version, kvm=False, signum=signal.SIGTERM)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP])
@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("state", STATES)
def test_sigint_and_sighup_end_qemu_in_every_state(guests, raw, signum, version,
                                                   state):
    _signal_case(guests, raw, state, version, kvm=False, signum=signum)


@pytest.mark.skipif(kvm_usable() is not None, reason=str(kvm_usable()))
@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("state", STATES)
def test_sigterm_ends_qemu_under_kvm(guests, raw, state, version):
    _signal_case(guests, raw, state, version, kvm=True, signum=signal.SIGTERM)


def test_sigterm_while_qemu_cannot_send_its_reply(guests, raw):
    """A simulator that stops reading fills the socket: QEMU blocked on
    sending a big reply still ends on SIGTERM."""
    qemu = raw(with_console(x86_argv(built(guests / "x86-flood.elf", "make firmware"),
                                     "/dev/null")), 2)
    qemu.hello()
    qemu.sock.sendall(qemu.advance_bytes(1000 * MS))
    blocked_on(qemu.proc.pid, qemu.fd, POLLOUT)  # the flood waits for us
    os.kill(qemu.proc.pid, signal.SIGTERM)
    code, lines = qemu.wait()
    assert code == 0 and "terminating on signal 15" in lines[-1], lines


def test_a_simulator_reading_after_the_signal_gets_everything_and_the_end(guests):
    """docs/protocol-v2.md: after SIGTERM QEMU waits (up to 2 s) for the
    socket to take what it was sending and the END: a simulator that reads
    then gets all of the output so far, whole, and the cause.  (The signal
    may find the step over, its REPLY being sent: then the END follows it.)"""
    image = built(guests / "x86-flood.elf", "make firmware")
    with QemuProcess(with_console(x86_argv(image, "/dev/null")), version=2) as qemu:
        qemu.channel.hello(timeout=WAIT)
        qemu.channel.send_advance(1000 * MS)
        blocked_on(qemu.pid, qqq_fd(qemu.popen.args), POLLOUT)  # we do not read
        os.kill(qemu.pid, signal.SIGTERM)
        out = b""
        with pytest.raises(QemuGone) as end:
            for _ in range(2):
                out += qemu.channel.recv_reply(timeout=WAIT).outputs.get(0, b"")
        assert qemu.popen.wait(timeout=WAIT) == 0
        lines = errors(qemu.stderr_text())
    assert end.value.cause == "QEMU was told to quit"
    out += end.value.outputs.get(0, b"")
    assert len(out) >= MAX_PAYLOAD and FLOOD.startswith(out), len(out)
    assert len(lines) == 1 and "terminating on signal 15" in lines[0], lines


@pytest.mark.parametrize("mid_step", [False, True])
def test_sigterm_sends_end_with_the_running_steps_output(guests, mid_step):
    """The simulator is still reading: it learns why the stream ends, and
    gets what the guest printed in the step that was running."""
    argv = with_console(arm_argv(guests / "arm-ticks.elf", "/dev/null"))
    with QemuProcess(argv, version=2) as qemu:
        qemu.channel.hello(timeout=WAIT)
        assert qemu.channel.advance(5 * MS, timeout=WAIT).outputs[0].startswith(b"boot")
        if mid_step:
            qemu.channel.send_advance(10**13)  # hours of host time
            with pytest.raises(StepTimeout):  # nothing comes before the signal
                qemu.channel.recv_reply(timeout=0.5)
        os.kill(qemu.pid, signal.SIGTERM)
        with pytest.raises(QemuGone) as end:
            qemu.channel.recv_reply(timeout=WAIT)
        assert qemu.popen.wait(timeout=WAIT) == 0
    assert end.value.cause == "QEMU was told to quit"
    out = end.value.outputs.get(0, b"")
    if mid_step:
        # Consecutive tick lines from 5 on; the signal may stop the guest in
        # the middle of a line, so the last one may be a prefix.
        *lines, last = out.split(b"\n")
        assert lines[:2] == [b"ticks=5", b"ticks=6"]
        assert lines == [b"ticks=%d" % n for n in range(5, 5 + len(lines))]
        assert (b"ticks=%d" % (5 + len(lines))).startswith(last)
    else:
        assert out == b""


# -- limits ---------------------------------------------------------------

def _arm_idle_v2(guests) -> list[str]:
    return with_console(arm_argv(guests / "arm-idle.elf", "/dev/null"))


def test_virtual_time_reaches_its_limit_exactly_and_no_further(guests):
    with QemuProcess(_arm_idle_v2(guests), version=2) as qemu:
        qemu.channel.hello(timeout=WAIT)
        assert qemu.channel.advance(1000, timeout=WAIT).elapsed_ns == 1000
        rest = MAX_TIME_NS - 1000
        assert qemu.channel.advance(rest, timeout=WAIT).elapsed_ns == rest
        assert qemu.channel.advance(0, timeout=WAIT).elapsed_ns == 0
        qemu.channel.send_advance(1)
        with pytest.raises(QemuGone):
            qemu.channel.recv_reply(timeout=WAIT)
        assert qemu.popen.wait(timeout=WAIT) == 1
        lines = errors(qemu.stderr_text())
    assert len(lines) == 1 and "qqq: an advance of 1 ns" in lines[0], lines
    assert "would pass the limit of 2^62 ns" in lines[0]


def test_version_1_reaches_the_limit_and_no_further(guests, raw):
    """The same 2^62 ns cap under the base protocol: about 1.07 million of
    its largest advances (2^32 - 1 us), sent at once, to the last whole
    microsecond before the cap; one more microsecond is refused.  arm-idle
    arms no timer, so each advance is one warp of the clock."""
    qemu = raw(arm_argv(guests / "arm-idle.elf", "/dev/null"), 1)
    biggest = (1 << 32) - 1
    full, rest = divmod(MAX_TIME_NS // 1000, biggest)
    steps = [biggest] * full + [rest]
    sender = threading.Thread(target=qemu.sock.sendall,
                              args=(struct.pack(f">{len(steps)}I", *steps),),
                              daemon=True)
    sender.start()
    replies = struct.unpack(f">{len(steps)}I", qemu.recv_exact(4 * len(steps)))
    sender.join(timeout=WAIT)
    assert list(replies) == steps
    qemu.sock.sendall(struct.pack(">I", 1))
    code, lines = qemu.wait()
    assert code == 1
    end = MAX_TIME_NS // 1000 * 1000
    assert len(lines) == 1 and (f"qqq: an advance of 1000 ns at virtual time "
                                f"{end} ns would pass the limit of 2^62 ns"
                                in lines[0]), lines


@pytest.mark.parametrize("advance", [MAX_TIME_NS + 1, 1 << 63, (1 << 64) - 1])
def test_advances_past_the_limit_are_refused_before_the_guest_sees_them(
        guests, raw, advance):
    """The issue's lock-up: 2^63 with data, twice, then more; now the first
    one is refused, and its data never reaches the guest."""
    qemu = raw(with_console(arm_argv(guests / "arm-lineecho.elf", "/dev/null")), 2)
    qemu.hello()
    assert qemu.advance(MS) == MS
    block = struct.pack(">II", 0, 1) + b"x"
    qemu.sock.sendall(frame(ADVANCE, struct.pack(">QI", advance, 1) + block))
    code, lines = qemu.wait()
    assert code == 1
    assert len(lines) == 1 and f"advance of {advance} ns" in lines[0], lines


# -- the end of the stream behind queued frames -----------------------------

@pytest.mark.parametrize("version", [1, 2])
def test_close_is_noticed_with_frames_queued_behind_a_running_step(
        guests, raw, version):
    qemu = raw(x86_argv(guests / "x86-busy.elf", "/dev/null"), version)
    if version == 2:
        qemu.hello()
    assert qemu.advance(MS) == MS
    long_step = 4_000_000_000_000 if version == 1 else 10**14
    qemu.sock.sendall(qemu.advance_bytes(long_step) + qemu.advance_bytes(0))
    running(qemu.proc.pid)  # the long step runs, the next frame waits
    qemu.sock.close()
    code, lines = qemu.wait()
    assert (code, lines) == (0, [])


# -- HELLO ----------------------------------------------------------------

@pytest.mark.parametrize("extra", [b"\0", b"more bytes"])
def test_hello_with_bytes_after_the_version_is_malformed(guests, raw, extra):
    qemu = raw(_arm_idle_v2(guests), 2)
    qemu.hello(struct.pack(">I", 2) + extra)
    code, lines = qemu.wait()
    assert code == 1
    assert len(lines) == 1, lines
    assert "qqq: malformed frame from the simulator: HELLO payload of " \
           f"{4 + len(extra)} bytes" in lines[0]


# -- a step's output beyond one frame -----------------------------------------

FLOOD = b"".join(b"%08x\n" % k for k in range(2_000_000)) + b"done\n"


def _flood_frames(guests, raw) -> list[tuple[int, bytes]]:
    image = built(guests / "x86-flood.elf", "make firmware")
    qemu = raw(with_console(x86_argv(image, "/dev/null")), 2)
    qemu.hello()
    qemu.sock.sendall(qemu.advance_bytes(1000 * MS))
    frames = [qemu.frame()]
    while frames[-1][0] == DATA:
        frames.append(qemu.frame())
    qemu.sock.sendall(qemu.advance_bytes(MS))
    frames.append(qemu.frame())
    return frames


def _blocks(payload: bytes, pos: int) -> bytes:
    (count,), pos = struct.unpack_from(">I", payload, pos), pos + 4
    data = b""
    for _ in range(count):
        channel, size = struct.unpack_from(">II", payload, pos)
        assert channel == 0
        data += payload[pos + 8:pos + 8 + size]
        pos += 8 + size
    assert pos == len(payload)
    return data


def test_a_step_writing_more_than_a_frame_holds_is_split_losslessly(guests, raw):
    """18 MB in one step: DATA frames of at most 16 MiB, then the REPLY;
    together exactly what the guest wrote, in order, all in that step's
    answer; the same bytes on the wire in a second run."""
    first = _flood_frames(guests, raw)
    kinds = [kind for kind, _ in first]
    assert kinds == [DATA, REPLY, REPLY], kinds
    data, (_, reply) = first[0], first[1]
    assert len(data[1]) == MAX_PAYLOAD
    assert struct.unpack_from(">Q", reply)[0] == 1000 * MS
    assert _blocks(data[1], 0) + _blocks(reply, 16) == FLOOD
    assert struct.unpack_from(">QQI", first[2][1])[::2] == (MS, 0)  # quiet next
    assert _flood_frames(guests, raw) == first


def test_the_client_reassembles_a_split_step(guests):
    image = built(guests / "x86-flood.elf", "make firmware")
    with QemuProcess(with_console(x86_argv(image, "/dev/null")), version=2) as qemu:
        qemu.channel.hello(timeout=WAIT)
        reply = qemu.channel.advance(1000 * MS, timeout=60)
        assert reply.elapsed_ns == 1000 * MS
        assert reply.outputs == {0: FLOOD}


def test_the_client_refuses_frames_over_the_limit():
    """The Python reader checks the frame limit before reading a payload."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        channel = FramedChannel(ours)
        theirs.sendall(struct.pack(">II", REPLY, MAX_PAYLOAD + 1))
        with pytest.raises(ProtocolError, match="over the limit"):
            channel.recv_reply(timeout=WAIT)
        with pytest.raises(ValueError, match="limit"):
            channel.send_advance(MS, {0: bytes(MAX_PAYLOAD)})


# -- nothing lost when the guest powers off ----------------------------------

@pytest.mark.parametrize("shift,step_ns", [
    (0, 7_000), (0, MS), (0, 100 * MS), (3, 7_000), (3, MS), (3, 10_000 * MS),
    (7, MS), (7, 100 * MS), (7, 10_000 * MS)])
def test_output_of_the_power_off_step_reaches_the_simulator(guests, shift, step_ns):
    argv = with_console(x86_argv(guests / "x86-poweroff.elf", "/dev/null",
                                 shift=shift))
    got, steps = b"", 0
    with QemuProcess(argv, version=2) as qemu:
        qemu.channel.hello(timeout=WAIT)
        with pytest.raises(QemuGone) as end:
            while steps < 1_000_000:
                got += qemu.channel.advance(step_ns, timeout=WAIT).outputs.get(0, b"")
                steps += 1
        assert qemu.popen.wait(timeout=WAIT) == 0
    assert end.value.cause == "the guest powered off"
    # The last line came with the END, and nothing is missing.
    assert b"powering off\n" not in got
    assert got + end.value.outputs.get(0, b"") == b"bye\npowering off\n"
    # Power-off happens at the same virtual instant whatever the steps.
    assert steps * step_ns < {0: 10, 3: 60, 7: 800}[shift] * MS


@pytest.mark.skipif(kvm_usable() is not None, reason=str(kvm_usable()))
@pytest.mark.parametrize("step_ns", [100_000, 100 * MS])
def test_output_of_the_power_off_step_under_kvm(guests, step_ns):
    argv = with_console(x86_argv(guests / "x86-poweroff.elf", "/dev/null",
                                 shift=None, extra=("-accel", "kvm")))
    got = b""
    with QemuProcess(argv, version=2) as qemu:
        qemu.channel.hello(timeout=WAIT)
        with pytest.raises(QemuGone) as end:
            for _ in range(100_000):
                got += qemu.channel.advance(step_ns, timeout=WAIT).outputs.get(0, b"")
        assert qemu.popen.wait(timeout=WAIT) == 0
    assert end.value.cause == "the guest powered off"
    assert got + end.value.outputs.get(0, b"") == b"bye\npowering off\n"


def test_power_off_under_no_shutdown_sends_end_then_quits(guests):
    argv = with_console(x86_argv(guests / "x86-poweroff.elf", "/dev/null",
                                 extra=("-no-shutdown",)))
    with QemuProcess(argv, version=2) as qemu:
        qemu.channel.hello(timeout=WAIT)
        with pytest.raises(QemuGone) as end:
            for _ in range(1000):
                qemu.channel.advance(10 * MS, timeout=WAIT)
        assert end.value.cause == "the guest powered off"
        assert qemu.popen.wait(timeout=WAIT) == 0  # it noticed the stream end
    assert b"powering off\n" in end.value.outputs.get(0, b"")


def test_power_off_in_the_base_protocol_is_end_of_file(guests, tmp_path):
    """Version 1 has no channels: the step gets no reply, and a file
    backend has everything the guest printed."""
    serial = tmp_path / "serial"
    with QemuProcess(x86_argv(guests / "x86-poweroff.elf", serial)) as qemu:
        with pytest.raises(QemuGone):
            for _ in range(1000):
                qemu.channel.advance(10_000, timeout=WAIT)
        assert qemu.popen.wait(timeout=WAIT) == 0
    assert Path(serial).read_text() == "bye\npowering off\n"


@pytest.mark.parametrize("action,status", [((), 0), (("-action", "panic=pause"), 0),
                                           (("-action", "panic=exit-failure"), 1)])
def test_output_of_the_panic_step_reaches_the_simulator(guests, action, status):
    """pvpanic: QEMU exits (shutdown, exit-failure) or stays paused (pause);
    either way the step's output and the cause come first."""
    image = built(guests / "x86-panic.elf", "make firmware")
    argv = with_console(x86_argv(image, "/dev/null",
                                 extra=("-device", "pvpanic", *action)))
    got = b""
    with QemuProcess(argv, version=2) as qemu:
        qemu.channel.hello(timeout=WAIT)
        with pytest.raises(QemuGone) as end:
            for _ in range(1000):
                got += qemu.channel.advance(MS, timeout=WAIT).outputs.get(0, b"")
        assert qemu.popen.wait(timeout=WAIT) == status
    assert end.value.cause == "the guest panicked"
    assert got + end.value.outputs.get(0, b"") == b"oops\n"
    assert end.value.outputs.get(0, b"").endswith(b"\n")
