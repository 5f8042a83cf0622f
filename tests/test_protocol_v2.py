"""Protocol version 2: handshake, nanoseconds, lookahead, data channels, bad frames.

Driven over a real socket pair against the built QEMU and guests from
firmware/, like the base-protocol tests.
"""

from __future__ import annotations

import random
import re
import socket
import struct

import pytest

from conftest import arm_argv, built, x86_argv
from helpers import RawQemu, advance_frame, frame, recv_frame, refusal
from qemufmu.process import QemuProcess
from qemufmu.protocol import ADVANCE, HELLO, REPLY

MS = 1_000_000  # ns
T = 60.0  # s, wall-clock limit on every wait for QEMU


def channel_args(*names: str, serial: str | None = None) -> tuple[str, ...]:
    """-chardev qqq for each name; the first one becomes serial port 0."""
    args: list[str] = []
    for name in names:
        args += ["-chardev", f"qqq,id={name}"]
    if names:
        args += ["-serial", f"chardev:{serial or names[0]}"]
    return tuple(args)


def arm_v2(guests, image: str, *names: str) -> list[str]:
    argv = arm_argv(guests / image, "/dev/null", extra=channel_args(*names))
    i = argv.index("-serial")  # the chardev replaces the file console
    del argv[i:i + 2]
    return argv


def start(argv: list[str]) -> QemuProcess:
    qemu = QemuProcess(argv, version=2)
    qemu.channel.hello(timeout=T)
    return qemu


def test_hello_names_the_channels_in_order(guests):
    argv = arm_v2(guests, "arm-ticks.elf", "uart0", "aux", "third")
    with start(argv) as qemu:
        assert qemu.channel.channels == ["uart0", "aux", "third"]
        assert qemu.channel.advance(MS, timeout=T).elapsed_ns == MS


def test_nanosecond_advances_are_exact_and_uncapped(guests, tmp_path):
    rng = random.Random(64)
    steps = [1, 7, 999, 1001, *(rng.randrange(1, 50 * MS) for _ in range(2000)),
             5000 * 1000 * MS]  # 5000 s: past the base protocol's 71 minutes
    with QemuProcess(x86_argv(guests / "x86-idle.elf", tmp_path / "s"),
                     version=2) as qemu:
        assert qemu.channel.hello(timeout=T) == []
        for ns in steps:
            assert qemu.channel.advance(ns, timeout=T).elapsed_ns == ns


@pytest.mark.parametrize("guest", ["x86-idle", "x86-busy"])
def test_tiny_steps_at_a_coarse_shift(guests, tmp_path, guest):
    """At shift=10 an instruction lasts 1024 ns: steps shorter than one
    still end exactly where they should, idle or busy."""
    rng = random.Random(10)
    with QemuProcess(x86_argv(guests / f"{guest}.elf", tmp_path / "s", shift=10),
                     version=2) as qemu:
        qemu.channel.hello(timeout=T)
        assert qemu.channel.advance(50 * MS, timeout=T).elapsed_ns == 50 * MS
        for _ in range(3000):
            ns = rng.choice([1, 7, 500, 1023, 1024, 1025, rng.randrange(1, 5000)])
            assert qemu.channel.advance(ns, timeout=T).elapsed_ns == ns


def test_lookahead_is_the_guests_next_timer(guests):
    """The 1 kHz SysTick guest next needs time at its next tick."""
    rng = random.Random(3)
    with start(arm_v2(guests, "arm-ticks.elf", "console")) as qemu:
        now = 3 * MS + 250_000
        first = qemu.channel.advance(now, timeout=T).lookahead_ns
        assert 0 < first <= MS
        phase = (now + first) % MS  # when in each millisecond SysTick fires
        for _ in range(300):
            step = rng.randrange(1, 3 * MS)
            reply = qemu.channel.advance(step, timeout=T)
            now += step
            # At a tick instant the next one is a whole period away, not 0.
            assert reply.lookahead_ns == ((phase - now) % MS or MS), now
        # Nanosecond steps across ticks: the lookahead counts down to 1, then
        # is a whole period (never 0, never more than a period).  A constant
        # error would shift the phase above too, but not this range.
        for _ in range(3):
            gap = (phase - now) % MS or MS
            qemu.channel.advance(gap - 3, timeout=T)
            now += gap - 3
            seen = []
            for _ in range(6):
                seen.append(qemu.channel.advance(1, timeout=T).lookahead_ns)
                now += 1
            assert seen == [2, 1, MS, MS - 1, MS - 2, MS - 3], seen
        reply = qemu.channel.advance(MS // 3, timeout=T)
        # Jumping straight to the deadline finds the guest's next tick there.
        before = qemu.channel.advance(reply.lookahead_ns - 1, timeout=T)
        at = qemu.channel.advance(1 + 20_000, timeout=T)
        assert b"ticks=" not in before.outputs.get(0, b"")
        assert b"ticks=" in at.outputs[0]


def test_console_bytes_arrive_with_the_step_that_sent_them(guests):
    """ticks=N is printed just after N ms: in the reply of the step covering it."""
    with start(arm_v2(guests, "arm-ticks.elf", "console")) as qemu:
        boot = qemu.channel.advance(MS, timeout=T).outputs
        assert boot == {0: b"boot\n"}
        for k in range(2, 200):
            out = qemu.channel.advance(MS, timeout=T).outputs
            assert out == {0: f"ticks={k - 1}\n".encode()}, f"step {k}"
        # Steps of 0.25 ms: the line comes in the first quarter after the tick.
        for q in range(4 * 50):
            out = qemu.channel.advance(MS // 4, timeout=T).outputs
            expect = {0: f"ticks={199 + q // 4}\n".encode()} if q % 4 == 0 else {}
            assert out == expect, f"quarter {q}"


def echo_lines(data: bytes) -> list[tuple[int, int]]:
    """(byte, guest time in us) for each `rx XX T` line of the echo guest."""
    return [(int(b, 16), int(t)) for b, t in
            re.findall(rb"^rx ([0-9a-f]{2}) (\d+)$", data, re.M)]


@pytest.fixture
def echo(guests):
    built(guests / "arm-echo.elf", "make firmware")
    qemu = start(arm_v2(guests, "arm-echo.elf", "uart"))
    assert qemu.channel.advance(MS, timeout=T).outputs == {0: b"echo\n"}
    yield qemu
    qemu.close()


def test_input_reaches_the_guest_at_the_start_of_its_step(echo):
    """A byte sent with advance k is taken when step k begins, never before
    and never later: its guest time stamp minus the step's start is the same
    for every byte (the guest's own clock starts a few us after reset)."""
    t_us, received, offsets = 1000, [], set()
    for k in range(50):
        step_us = 100 + 37 * k
        data = bytes([k]) if k % 3 == 0 else b""
        reply = echo.channel.advance(step_us * 1000, {0: data} if data else None,
                                     timeout=T)
        lines = echo_lines(reply.outputs.get(0, b""))
        if data:
            (byte, seen_us), = lines  # echoed within the step that carried it
            assert byte == k
            received.append(byte)
            offsets.add(seen_us - t_us)
        else:
            assert lines == []
        t_us += step_us
    assert received == list(range(0, 50, 3))
    assert max(offsets) - min(offsets) <= 1, offsets
    assert -20 <= min(offsets) <= 0


def test_a_burst_beyond_the_uart_buffer_arrives_complete_and_in_order(echo):
    rng = random.Random(5)
    burst = bytes(rng.randrange(256) for _ in range(3000))
    reply = echo.channel.advance(MS, {0: burst}, timeout=T)
    got = echo_lines(reply.outputs.get(0, b""))
    for _ in range(200):
        if len(got) == len(burst):
            break
        got += echo_lines(echo.channel.advance(MS, timeout=T).outputs.get(0, b""))
    assert bytes(b for b, _ in got) == burst
    times = [t for _, t in got]
    assert times == sorted(times)


def test_zero_advance_delivers_input_without_running_the_guest(echo):
    reply = echo.channel.advance(0, {0: b"Z"}, timeout=T)
    assert reply.elapsed_ns == 0 and reply.outputs == {}
    (byte, _), = echo_lines(echo.channel.advance(MS, timeout=T).outputs[0])
    assert byte == ord("Z")


def test_same_inputs_give_byte_identical_outputs(guests):
    def run() -> list[tuple]:
        rng = random.Random(99)
        with start(arm_v2(guests, "arm-echo.elf", "uart")) as qemu:
            replies = []
            for _ in range(300):
                data = bytes(rng.randrange(256) for _ in range(rng.randrange(4)))
                reply = qemu.channel.advance(rng.randrange(1, 2 * MS),
                                             {0: data}, timeout=T)
                replies.append(tuple(reply))
            return replies

    assert run() == run()


# -- refusals and malformed frames ------------------------------------------

def errors(stderr: str) -> str:
    """QEMU's stderr without its unrelated warnings (mps2's unconnected NIC)."""
    return "\n".join(line for line in stderr.strip().splitlines()
                     if ": warning: " not in line)


def _hello_ok(sock: socket.socket) -> None:
    assert recv_frame(sock)[0] == HELLO
    sock.sendall(frame(HELLO, struct.pack(">I", 2)))


GOOD = advance_frame(MS)
CASES = {
    "hello-version-3": (None, frame(HELLO, struct.pack(">I", 3)),
                        "simulator speaks protocol version 3"),
    "advance-before-hello": (None, GOOD, "expected a HELLO frame"),
    "wrong-type": (GOOD, frame(REPLY, bytes(20)), "expected a ADVANCE frame"),
    "unknown-type": (GOOD, frame(77, b""), "got type 77"),
    "oversized": (GOOD, struct.pack(">II", ADVANCE, 0xFFFF_FFFF),
                  "exceeds the limit"),
    "short-advance": (GOOD, frame(ADVANCE, bytes(4)), "shorter than 12"),
    "unknown-channel": (GOOD, advance_frame(MS, (5, b"x")), "names channel 5"),
    "block-past-end": (GOOD, frame(ADVANCE, struct.pack(">QIII", MS, 1, 0, 99)
                                    + b"abc"), "claims 99 bytes"),
    "missing-block": (GOOD, frame(ADVANCE, struct.pack(">QI", MS, 2)
                                   + struct.pack(">II", 0, 1) + b"a"),
                      "runs past the payload"),
    "stray-bytes": (GOOD, frame(ADVANCE, struct.pack(">QI", MS, 0) + b"xy"),
                    "2 stray bytes"),
    "truncated-header": (GOOD, struct.pack(">I", ADVANCE)[:3], "truncated"),
    "truncated-payload": (GOOD, advance_frame(MS)[:14], "truncated"),
}


@pytest.mark.parametrize("case", CASES)
def test_malformed_frames_end_qemu_with_one_line(guests, case):
    before, bad, expect = CASES[case]
    qemu = RawQemu(arm_v2(guests, "arm-ticks.elf", "console"), 2, wait=30)
    proc, sock = qemu.proc, qemu.sock
    try:
        if case.startswith("hello") or case == "advance-before-hello":
            recv_frame(sock)  # QEMU's HELLO
            sock.sendall(bad)
        else:
            _hello_ok(sock)
            sock.sendall(before)
            recv_frame(sock)
            sock.sendall(bad)
            if case.startswith("truncated"):
                sock.shutdown(socket.SHUT_WR)
        code = proc.wait(timeout=10)
        err = errors(proc.stderr.read())
    finally:
        qemu.close()
    assert code == 1
    assert err.startswith("qemu-system-arm: qqq: malformed frame from the "
                          "simulator: ") or case.startswith("hello"), err
    assert expect in err
    assert "\n" not in err


@pytest.mark.parametrize("qqq_option,expect", [
    ("sock={fd}", "data channels need -qqq sock=FD,version=2"),
    ("sock={fd},version=1", "data channels need -qqq sock=FD,version=2"),
    ("sock={fd},version=4", "version=4 is not 1"),
    (None, "data channels need -qqq sock=FD,version=2"),
])
def test_channel_and_version_refusals(guests, qqq_option, expect):
    assert expect in refusal(arm_v2(guests, "arm-ticks.elf", "console"), qqq_option)


# -- documented behaviour: ending, lookahead, channels, devices ---------------

@pytest.mark.parametrize("after", ["hello", "advances"])
def test_closing_a_version_2_stream_ends_qemu_with_status_0(guests, after):
    qemu = start(arm_v2(guests, "arm-ticks.elf", "console"))
    try:
        if after == "advances":
            for _ in range(5):
                qemu.channel.advance(MS, timeout=T)
        qemu.channel.close()
        assert qemu.popen.wait(timeout=10) == 0, qemu.stderr_text()
    finally:
        qemu.kill()


def test_lookahead_is_none_when_no_timer_is_pending(guests):
    """arm-idle enables no interrupt source: no deadline, 2^64-1 on the wire."""
    with start(arm_v2(guests, "arm-idle.elf", "console")) as qemu:
        assert qemu.channel.advance(MS, timeout=T) == (MS, None, {0: b"idle\n"})
        for ns in (1, 5 * MS, 1000 * 1000 * MS):
            assert qemu.channel.advance(ns, timeout=T) == (ns, None, {})


def test_data_on_a_channel_other_than_0_both_ways(guests):
    """Channel 0 on no device, channel 1 on UART0 (the echo guest)."""
    argv = arm_v2(guests, "arm-echo.elf", "spare", "uart")
    argv[argv.index("chardev:spare")] = "chardev:uart"
    with start(argv) as qemu:
        assert qemu.channel.channels == ["spare", "uart"]
        assert qemu.channel.advance(MS, timeout=T).outputs == {1: b"echo\n"}
        reply = qemu.channel.advance(MS, {1: b"Q"}, timeout=T)
        assert set(reply.outputs) == {1}
        assert [b for b, _ in echo_lines(reply.outputs[1])] == [ord("Q")]


def test_channel_behind_a_device_option(guests, tmp_path):
    """`-device isa-serial,chardev=NAME` (docs/protocol-v2.md), not -serial."""
    argv = x86_argv(guests / "x86-busy.elf", tmp_path / "s",
                    extra=("-chardev", "qqq,id=com", "-device",
                           "isa-serial,chardev=com"))
    i = argv.index("-serial")
    del argv[i:i + 2]
    with start(argv) as qemu:
        assert qemu.channel.channels == ["com"]
        assert qemu.channel.advance(10 * MS, timeout=T).outputs == {0: b"busy\n"}
    assert not (tmp_path / "s").exists()


def test_a_qemu_that_stops_reading_is_a_step_timeout_on_send(guests):
    """The client's wall-clock limit holds for sending too: input larger
    than the socket buffer, to a QEMU that reads nothing (stopped), is a
    StepTimeout, not a hang."""
    import os
    import signal
    import time

    from qemufmu.protocol import StepTimeout

    qemu = start(arm_v2(guests, "arm-echo.elf", "uart"))
    try:
        qemu.channel.advance(MS, timeout=T)
        os.kill(qemu.pid, signal.SIGSTOP)
        began = time.monotonic()
        with pytest.raises(StepTimeout, match="did not read within 0.5 s"):
            qemu.channel.advance(MS, {0: b"x" * 8_000_000}, timeout=0.5)
        assert time.monotonic() - began < T
    finally:
        os.kill(qemu.pid, signal.SIGCONT)
        qemu.close()
