"""Protocol version 3: channel kinds, network channels, semihosting clocks.

Real QEMU and guests over a real socket pair, as in test_protocol_v2.py.
End-to-end frame exchange with guests that use their NICs is in
test_firmware_net.py (Cortex-M, LAN9118) and test_linux_network.py (Linux,
e1000).
"""

from __future__ import annotations

import re
import struct

import pytest
from test_protocol_v2 import channel_args, errors

from conftest import arm_argv, x86_argv
from helpers import RawQemu, advance_frame, frame, recv_frame, refusal
from qemufmu.process import QemuProcess
from qemufmu.protocol import HELLO, pack_net

MS = 1_000_000  # ns
T = 60.0  # s, wall-clock limit on every wait for QEMU
FRAME = bytes.fromhex("ffffffffffff020000000001") + b"\x88\xb5" + bytes(46)


def arm_net(guests, image: str, *nets: str, version: int = 3) -> list[str]:
    """mps2-an385 with a qqq console and the LAN9118 on qqq netdev nets[0]."""
    argv = arm_argv(guests / image, "/dev/null", extra=channel_args("console"))
    i = argv.index("-serial")  # the chardev replaces the file console
    del argv[i:i + 2]
    argv.remove("-nic")
    argv.remove("none")
    for name in nets:
        argv += ["-netdev", f"qqq,id={name}"]
    if nets:
        argv += ["-net", f"nic,netdev={nets[0]},model=lan9118"]
    return argv


def start(argv: list[str], version: int = 3) -> QemuProcess:
    qemu = QemuProcess(argv, version=version)
    qemu.channel.hello(timeout=T)
    return qemu


def test_hello_names_kinds_serial_then_net(guests):
    with start(arm_net(guests, "arm-ticks.elf", "eth0", "eth1")) as qemu:
        assert qemu.channel.channels == ["console", "eth0", "eth1"]
        assert qemu.channel.kinds == ["serial", "net", "net"]
        assert qemu.channel.advance(MS, timeout=T).elapsed_ns == MS


@pytest.mark.parametrize("model", ["e1000", "virtio-net-pci"])
def test_x86_nics_on_a_qqq_netdev(guests, tmp_path, model):
    argv = x86_argv(guests / "x86-idle.elf", tmp_path / "s",
                    extra=("-netdev", "qqq,id=lan",
                           "-device", f"{model},netdev=lan,romfile="))
    del argv[argv.index("-net"):argv.index("-net") + 2]  # "-net none"
    with start(argv) as qemu:
        assert (qemu.channel.channels, qemu.channel.kinds) == (["lan"], ["net"])
        # A frame into a NIC whose guest never set it up is taken, not fatal.
        reply = qemu.channel.advance(5 * MS, {0: pack_net([(MS, FRAME)])},
                                     timeout=T)
        assert reply.elapsed_ns == 5 * MS


def test_version_2_hello_is_unchanged(guests):
    """Version 2 keeps its HELLO (no kinds): the serial channels only."""
    argv = arm_net(guests, "arm-ticks.elf")
    with start(argv, version=2) as qemu:
        assert qemu.channel.channels == ["console"]
        assert qemu.channel.kinds == ["serial"]


@pytest.mark.parametrize("qqq_option,expect", [
    ("sock={fd},version=2", "network channels need -qqq sock=FD,version=3"),
    ("sock={fd}", "data channels need -qqq sock=FD,version=2 or 3"),
    (None, "data channels need -qqq sock=FD,version=2 or 3"),
    ("sock={fd},version=4", "version=4 is not 1"),
])
def test_network_channel_refusals(guests, qqq_option, expect):
    assert expect in refusal(arm_net(guests, "arm-ticks.elf", "eth0"), qqq_option)


# -- malformed network blocks --------------------------------------------------

NET = 1  # the network channel's index, after the console
BAD = {
    # the network block's bytes, what QEMU says
    "due-at-the-step-end": (pack_net([(2 * MS, FRAME)]), "not in the step"),
    "due-after-the-step": (pack_net([(5 * MS, FRAME)]), "not in the step"),
    "runt": (pack_net([(MS, FRAME[:13])]), "frames are 14 to 65535 bytes"),
    "cut-header": (pack_net([(MS, FRAME)])[:7], "less than its 12-byte header"),
    "cut-frame": (pack_net([(MS, FRAME)])[:-1], "claims 60 bytes, 59 remain"),
    "second-bad": (pack_net([(MS, FRAME), (9 * MS, FRAME)]),
                   "network frame 1 is due at 9000000 ns"),
}


@pytest.mark.parametrize("case", BAD)
def test_malformed_network_blocks_end_qemu_with_one_line(guests, case):
    """The step from 1 ms to 2 ms: a frame must be due before 2 ms."""
    data, expect = BAD[case]
    qemu = RawQemu(arm_net(guests, "arm-ticks.elf", "eth0"), 3, wait=30)
    proc, ours = qemu.proc, qemu.sock
    try:
        assert recv_frame(ours)[0] == HELLO
        ours.sendall(frame(HELLO, struct.pack(">I", 3)))
        ours.sendall(advance_frame(MS))
        recv_frame(ours)
        ours.sendall(advance_frame(MS, (NET, data)))
        code = proc.wait(timeout=10)
        err = errors(proc.stderr.read())
    finally:
        qemu.close()
    assert code == 1
    assert err.startswith("qemu-system-arm: qqq: malformed frame from the "
                          "simulator: ADVANCE block 0 for channel eth0: "), err
    assert expect in err
    assert "\n" not in err


def test_late_and_on_time_frames_are_accepted(guests):
    """Due at or before the step's start (late) or inside it: both fine."""
    with start(arm_net(guests, "arm-ticks.elf", "eth0")) as qemu:
        qemu.channel.advance(3 * MS, timeout=T)
        frames = [(0, FRAME), (3 * MS, FRAME), (3 * MS + 1, FRAME),
                  (4 * MS - 1, FRAME)]
        assert qemu.channel.advance(MS, {NET: pack_net(frames)},
                                    timeout=T).elapsed_ns == MS
        # advance 0 delivers what is due now and runs nothing
        assert qemu.channel.advance(0, {NET: pack_net([(4 * MS, FRAME)])},
                                    timeout=T).elapsed_ns == 0


def test_machine_state_with_network_channels(guests):
    """A state of a QEMU with network channels loads into a like QEMU."""
    argv = arm_net(guests, "arm-ticks.elf", "eth0")
    with start(argv) as a:
        a.channel.advance(10 * MS, {NET: pack_net([(5 * MS, FRAME)])}, timeout=T)
        state = a.channel.save_state(timeout=T)
        after_a = [a.channel.advance(MS, timeout=T) for _ in range(20)]
    with start(argv) as b:
        b.channel.load_state(state, timeout=T)
        after_b = [b.channel.advance(MS, timeout=T) for _ in range(20)]
    assert after_a == after_b
    assert b"".join(r.outputs.get(0, b"") for r in after_b).count(b"ticks=") == 20


# -- semihosting clocks -------------------------------------------------------

SEMI = re.compile(rb"time=(\d+) clock=(\d+) elapsed_hi=(\d+) elapsed_lo=(\d+)\n")
RTC_BASE_2024 = 1704067200  # 2024-01-01T00:00:00Z


def semihosting_reports(guests) -> list[tuple[int, int, int]]:
    argv = arm_net(guests, "arm-semitime.elf") + ["-semihosting"]
    argv[argv.index("-rtc") + 1] = "clock=vm,base=2024-01-01T00:00:00"
    out = b""
    with start(argv) as qemu:
        for _ in range(11):
            out += qemu.channel.advance(100 * MS, timeout=T).outputs.get(0, b"")
    return [(int(t), int(c), int(hi) << 32 | int(lo))
            for t, c, hi, lo in SEMI.findall(out)]


def test_semihosting_clocks_follow_simulation_time(guests):
    """SYS_TIME = rtc base + virtual s, SYS_CLOCK = virtual cs, SYS_ELAPSED
    = virtual ns: printed at start and every 250 ms of SysTick time."""
    reports = semihosting_reports(guests)
    assert len(reports) == 5, reports
    for k, (time_s, clock_cs, elapsed_ns) in enumerate(reports):
        at = k * 250 * MS    # when the report was due
        assert at <= elapsed_ns < at + MS, (k, elapsed_ns)
        assert clock_cs == elapsed_ns // (10 * MS)
        assert time_s == RTC_BASE_2024 + elapsed_ns // (1000 * MS)
    assert semihosting_reports(guests) == reports
