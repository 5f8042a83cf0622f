"""Two Linux guests on a modelled network, in lock step, the same every run.

Each guest is the example Linux (firmware/linux/) in its own QEMU, paced
over protocol version 3 with its NIC on a qqq netdev (`-netdev qqq`).  The
test is the network: it advances both QEMUs by the same step, takes the
frames each NIC sent during the step (stamped with their virtual send
time t) and hands each to the other QEMU for delivery at exactly t + DELAY,
in the advance of the step that contains that time.  With DELAY at least
one step, no frame is ever due before the step it can be sent with, so the
modelled delay is exact (docs/linux-guests.md, "Networking").

/init reads its part from the kernel command line (`qemufmu.ip=`,
`qemufmu.role=`): one guest answers, the other pings it or sends it a bulk
TCP transfer, then powers off.  What is checked: ping's own round trips
against the frame log (2 x DELAY plus what the guests spent, measured from
the frames' times), the TCP transfer's bytes and its duration in the
receiver's clock against the frame log, and that two runs give the same
consoles and frames, byte for byte.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_firmware_net import paced_argv, pi_replies

from conftest import built, x86_argv
from fmi_helpers import qemu_children
from qemufmu.process import QemuProcess
from qemufmu.protocol import QemuGone, pack_net, unpack_net

MS = 1_000_000  # ns
STEP = 1 * MS
DELAY = 5 * MS  # the link's one-way delay: several steps
LIMIT = 15_000 * MS  # virtual time by which every run has ended
T = 60.0  # s of wall time QEMU may take to answer one step
CMDLINE = "console=ttyS0 cryptomgr.notests tsc=reliable nolapic_timer"
RTC = "base=2024-01-01T00:00:00,clock=vm"  # the FMU's default: no host time
ANSWER_IP, ASK_IP = "10.0.0.1", "10.0.0.2"
NET = "/24"
PINGS = 3
TCP_BYTES = 1_000_000
# virtio-net must not defer work to QEMU's main loop, which runs in host
# time: its queue notifications (ioeventfd) and its transmit bottom half
# would stamp frames, and raise interrupts, at host-dependent virtual times.
NICS = {"e1000": "e1000", "virtio": "virtio-net-pci,ioeventfd=off,tx=timer"}


@dataclass
class Guest:
    ip: str
    role: str
    #: the NIC's MAC address (QEMU's default, the same in every QEMU, if None)
    mac: str | None
    #: more kernel arguments
    extra: str = ""


@dataclass
class Run:
    consoles: list[bytes]
    #: every frame sent: (virtual send time ns, sender index, frame)
    frames: list[tuple[int, int, bytes]]
    #: virtual time of the step in which each guest powered off (None: never)
    ends: list[int | None]
    wall: float


def powers_off(role: str) -> bool:
    """Whether /init powers off after qemufmu.role=``role``: unless the
    list ends in a server, idle, or pi."""
    return role.split(",")[-1].split(":")[0] not in ("echo", "udp-echo", "idle", "pi")


def linux_argv(linux: Path, console: Path, guest: Guest, nic: str) -> list[str]:
    """The example Linux on `-M pc`, its console into ``console``, its NIC
    (``nic``: a -device with its options) on qqq netdev eth0."""
    argv = x86_argv(linux / "vmlinux", console, extra=(
        "-initrd", str(linux / "initrd.cpio"),
        "-append", " ".join(filter(None, (CMDLINE, f"qemufmu.ip={guest.ip}",
                                          f"qemufmu.role={guest.role}", guest.extra))),
        "-netdev", "qqq,id=eth0",
        "-device", f"{nic},netdev=eth0,romfile="
                   + (f",mac={guest.mac}" if guest.mac else "")))
    argv[argv.index("-rtc") + 1] = RTC
    del argv[argv.index("-net"):argv.index("-net") + 2]  # "-net none"
    return argv


def run_link(linux: Path, tmp: Path, guests: list[Guest], nic: str = NICS["e1000"],
             delay: int = DELAY, until: set[int] | None = None) -> Run:
    """Boot the Linux guests on a two-port link of one-way ``delay``; step
    them in lock step until the guests ``until`` (default: those whose role
    ends) have powered off."""
    if until is None:
        until = {i for i, g in enumerate(guests) if powers_off(g.role)}
    tmp.mkdir(parents=True, exist_ok=True)
    consoles = [tmp / f"console{i}.txt" for i in range(len(guests))]
    return run_machines([linux_argv(linux, c, g, nic)
                         for g, c in zip(guests, consoles, strict=True)],
                        consoles, until, delay)


def run_machines(argvs: list[list[str]], consoles: list[Path], until: set[int],
                 delay: int = DELAY, stop: int | None = None) -> Run:
    """Two QEMUs (``argvs``, each with one qqq netdev, consoles into
    ``consoles``) on a link of one-way ``delay``, in lock step until the
    machines ``until`` have powered off, or to virtual time ``stop``."""
    qemus: list[QemuProcess] = []
    wall = time.monotonic()
    try:
        for argv in argvs:
            qemus.append(QemuProcess(argv, version=3))
        nets = []
        for qemu in qemus:
            qemu.channel.hello(timeout=T)
            nets.append(qemu.channel.kinds.index("net"))
        # Frames on their way to each guest: (delivery time, frame), in order.
        pending: list[list[tuple[int, bytes]]] = [[] for _ in argvs]
        frames: list[tuple[int, int, bytes]] = []
        ends: list[int | None] = [None for _ in argvs]
        now = 0
        while any(ends[i] is None for i in until) or (stop and now < stop):
            if now >= LIMIT:
                tails = [c.read_bytes()[-600:].decode(errors="replace")
                         for c in consoles]
                pytest.fail(f"still running at {now / 1e9} s; consoles end:\n"
                            + "\n----\n".join(tails))
            running = [i for i, end in enumerate(ends) if end is None]
            # Both QEMUs run their step at once (two cores), then both answer.
            for i in running:
                # QEMU takes only frames due before the step's end: the rest wait.
                due = [f for f in pending[i] if f[0] < now + STEP]
                pending[i] = pending[i][len(due):]
                qemus[i].channel.send_advance(
                    STEP, {nets[i]: pack_net(due)} if due else None)
            for i in running:
                try:
                    sent = qemus[i].channel.recv_reply(timeout=T).outputs
                except QemuGone as gone:  # the guest powered off in this step
                    assert gone.cause == "the guest powered off", str(gone)
                    sent, ends[i] = gone.outputs, now
                for t, frame in unpack_net(sent.get(nets[i], b"")):
                    assert now <= t <= now + STEP, (now, t)
                    frames.append((t, i, frame))
                    # A two-port link: the other guest, if it still runs.
                    pending[1 - i].append((t + delay, frame))
            now += STEP
    finally:
        for qemu in qemus:
            qemu.close()
        assert not qemu_children()
    return Run([c.read_bytes() for c in consoles], frames, ends,
               time.monotonic() - wall)


# -- reading frames -------------------------------------------------------

def ipv4(frame: bytes) -> tuple[int, bytes] | None:
    """(protocol, IP payload) of an IPv4 frame, else None."""
    if frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    size = int.from_bytes(ip[2:4], "big")
    return ip[9], ip[(ip[0] & 15) * 4:size]


def icmp_echo(frame: bytes) -> tuple[str, int, int] | None:
    """("request" | "reply", identifier, sequence number) of an ICMP echo
    frame.  Each ping process has its own identifier."""
    ip = ipv4(frame)
    if ip is None or ip[0] != 1 or ip[1][0] not in (0, 8):
        return None
    icmp = ip[1]
    return ("request" if icmp[0] == 8 else "reply",
            int.from_bytes(icmp[4:6], "big"), int.from_bytes(icmp[6:8], "big"))


def tcp(frame: bytes) -> tuple[int, int] | None:
    """(flags, payload bytes) of a TCP frame."""
    ip = ipv4(frame)
    if ip is None or ip[0] != 6:
        return None
    segment = ip[1]
    return segment[13], len(segment) - (segment[12] >> 4) * 4


SYN, FIN, ACK = 0x02, 0x01, 0x10


def lines(console: bytes) -> list[str]:
    """The console's lines that are not kernel log lines."""
    return [line for line in console.decode().splitlines() if not line.startswith("[")]


# -- ping -------------------------------------------------------------------

UDP_TEXT = r"hello:\nworld"  # on the command line; \n is a newline
UDP_COUNT = 2
# Roles in a row: wait for the peer to answer, then pings, then datagrams
# to the UDP echo server.
PING_GUESTS = [
    Guest(ANSWER_IP + NET, "echo", "52:54:00:00:00:01"),
    Guest(ASK_IP + NET, f"wait:{ANSWER_IP},ping:{ANSWER_IP}:{PINGS},"
          f"udp:{ANSWER_IP}:7:{UDP_COUNT}:50:" + UDP_TEXT, "52:54:00:00:00:02")]


@pytest.fixture(scope="module")
def linux(guests) -> Path:
    d = guests / "linux"
    built(d / "initrd.cpio", "make firmware")
    return d


@pytest.fixture(scope="module")
def ping_runs(linux, tmp_path_factory) -> list[Run]:
    """The ping system, twice."""
    return [run_link(linux, tmp_path_factory.mktemp(f"ping{k}"), PING_GUESTS)
            for k in range(2)]


def ping_times(console: bytes) -> dict[int, int]:
    """ping's reported round trips, ns by sequence number (it prints us)."""
    return {int(seq): int(ms) * MS + int(us) * 1000 for seq, ms, us in re.findall(
        rf"64 bytes from {ANSWER_IP}: seq=(\d+) ttl=64 time=(\d+)\.(\d\d\d) ms",
        console.decode())}


def test_ping_over_the_link(ping_runs):
    answer, ask = (lines(c) for c in ping_runs[0].consoles)
    up = re.compile(r"init: eth0 10\.0\.0\.\d/24 52:54:00:00:00:0\d up at [\d.]+ s")
    assert any(up.fullmatch(line) for line in answer), answer
    assert "init: echo servers on TCP and UDP port 7" in answer
    assert any(up.fullmatch(line) for line in ask), ask
    assert any(re.fullmatch(rf"init: {ANSWER_IP} answers at [\d.]+ s", line)
               for line in ask), ask
    assert f"{PINGS} packets transmitted, {PINGS} packets received, 0% packet loss" \
        in ask, ask
    assert ask[-1].startswith(f"init: {PING_GUESTS[1].role} done at ")
    assert ping_runs[0].ends[0] is None and ping_runs[0].ends[1] is not None


def test_ping_round_trip_is_twice_the_delay_plus_the_guests_time(ping_runs):
    """ping's round trip, taken in the pinging guest's clock, against the
    frame log: the request leaves at t_req, reaches the other guest at
    t_req + DELAY, whose reply leaves at t_rep and arrives at t_rep + DELAY.
    So the wire's round trip is 2 x DELAY plus the answering guest's
    turnaround (t_rep - t_req - DELAY), and ping's adds only the pinging
    guest's own send and receive paths."""
    run = ping_runs[0]
    echoes = [(t, sender, echo) for t, sender, frame in run.frames
              if (echo := icmp_echo(frame))]
    assert all(sender == (0 if kind == "reply" else 1)
               for _, sender, (kind, _, _) in echoes)
    # The wait role's ping comes first; the ping role's, one process, last.
    ident = echoes[-1][2][1]
    sent: dict[tuple[str, int], int] = {}
    for t, _, (kind, i, seq) in echoes:
        if i == ident:
            assert (kind, seq) not in sent, f"{kind} {seq} sent twice"
            sent[kind, seq] = t
    rtts = ping_times(run.consoles[1])
    assert sorted(rtts) == list(range(PINGS))
    for seq, rtt in rtts.items():
        t_req, t_rep = sent["request", seq], sent["reply", seq]
        turnaround = t_rep - (t_req + DELAY)
        # Delivered exactly at t_req + DELAY: an early delivery would let
        # the reply leave before then, a delivery at the next step's start
        # would cost most of a step.
        assert 0 < turnaround < STEP // 10, (seq, turnaround)
        wire = t_rep + DELAY - t_req
        own = rtt - wire  # the pinging guest's send and receive paths
        # (The wait role resolved the peer's address: no ARP exchange in
        # the first round trip.)
        assert 0 <= own < STEP // 10, (seq, rtt, wire)
        print(f"seq={seq}: ping {rtt} ns = wire {wire} ns "
              f"(2 x {DELAY} + turnaround {turnaround}) + pinger {own}")


def udp_times(console: bytes) -> dict[int, int]:
    """qnet udp's round trips, ns by datagram, for replies that echo
    UDP_TEXT."""
    size = len(UDP_TEXT.replace("\\n", "\n"))
    # The console shows the reply's newline as \n again: UDP_TEXT.
    return {int(n): int(ms) * MS + int(ns) for n, ms, ns in re.findall(
        rf"udp: {size} bytes from {ANSWER_IP}:7, datagram (\d+), "
        rf"time=(\d+)\.(\d{{6}}) ms: {re.escape(UDP_TEXT)}\r?\n", console.decode())}


def test_udp_round_trip_is_twice_the_delay_plus_the_guests_time(ping_runs):
    """The same account for datagrams to the UDP echo server, timed by qnet
    in the sending guest's clock to the nanosecond."""
    run = ping_runs[0]
    sent = [(t, sender) for t, sender, frame in run.frames
            if (ip := ipv4(frame)) and ip[0] == 17]
    assert [sender for _, sender in sent] == [1, 0] * UDP_COUNT
    rtts = udp_times(run.consoles[1])
    assert sorted(rtts) == list(range(UDP_COUNT)), lines(run.consoles[1])
    for n, rtt in rtts.items():
        (t_req, _), (t_rep, _) = sent[2 * n], sent[2 * n + 1]
        turnaround = t_rep - (t_req + DELAY)
        assert 0 < turnaround < STEP // 10, (n, turnaround)
        own = rtt - (t_rep + DELAY - t_req)
        assert 0 <= own < STEP // 10, (n, rtt)
        print(f"udp {n}: {rtt} ns = 2 x {DELAY} + turnaround {turnaround} "
              f"+ sender {own}")


def test_ping_runs_are_byte_identical(ping_runs):
    first, second = ping_runs
    assert first.consoles[1] == second.consoles[1]
    assert first.consoles[0] == second.consoles[0]
    assert first.frames == second.frames
    assert first.ends == second.ends
    print(f"ping system: {first.ends[1] / 1e9:.3f} s virtual, "
          f"{first.wall:.1f} s and {second.wall:.1f} s wall, "
          f"{len(first.frames)} frames")


def test_virtio_net_is_repeatable_with_its_work_in_virtual_time(linux, tmp_path):
    """virtio-net-pci with ioeventfd=off,tx=timer: the same ping, twice.
    Both NICs keep QEMU's default MAC, the same in both: the guests set
    their own (qemufmu.mac)."""
    macs = ["02:00:00:00:00:01", "02:00:00:00:00:02"]
    guests = [
        Guest(ANSWER_IP + NET, "echo", None, f"qemufmu.mac={macs[0]}"),
        Guest(ASK_IP + NET, f"ping:{ANSWER_IP}:2", None, f"qemufmu.mac={macs[1]}")]
    first, second = (run_link(linux, tmp_path / name, guests, NICS["virtio"])
                     for name in ("first", "second"))
    assert "2 packets transmitted, 2 packets received" in first.consoles[1].decode()
    assert first.consoles == second.consoles and first.frames == second.frames
    assert {(sender, frame[6:12].hex(":")) for _, sender, frame in first.frames} \
        == set(enumerate(macs))
    # The transmit timer (150 us) delays each frame: still 2 x DELAY plus
    # the guests' time, under a step.
    assert all(2 * DELAY < rtt < 2 * DELAY + STEP
               for seq, rtt in ping_times(first.consoles[1]).items() if seq)


# -- bulk TCP ---------------------------------------------------------------

TCP_GUESTS = [
    Guest(ANSWER_IP + NET, "tcp-recv", "52:54:00:00:00:01"),
    Guest(ASK_IP + NET, f"tcp-send:{ANSWER_IP}:{TCP_BYTES}", "52:54:00:00:00:02")]
TRANSFER = re.compile(
    r"(tcp-send|tcp-recv): (\d+) bytes in (\d+)\.(\d{9}) s, (\d+) kbit/s")


@pytest.fixture(scope="module")
def tcp_run(linux, tmp_path_factory) -> Run:
    return run_link(linux, tmp_path_factory.mktemp("tcp"), TCP_GUESTS)


def transfer(console: bytes) -> tuple[int, int]:
    """(bytes, ns) a tcp-send or tcp-recv guest printed."""
    found = [TRANSFER.fullmatch(line) for line in lines(console)]
    (m,) = [m for m in found if m]
    return int(m[2]), int(m[3]) * 1_000_000_000 + int(m[4])


def test_bulk_tcp_transfer_in_virtual_time(tcp_run):
    """Every byte crosses once (no loss, so no retransmission), and the
    receiver's own clock times the transfer as the frame log does: from
    the delivery of the handshake's last ACK to that of the FIN."""
    recv_bytes, recv_ns = transfer(tcp_run.consoles[0])
    send_bytes, send_ns = transfer(tcp_run.consoles[1])
    assert recv_bytes == send_bytes == TCP_BYTES
    data = [(t, tcp(f)) for t, sender, f in tcp_run.frames if sender == 1 and tcp(f)]
    assert sum(size for _, (_, size) in data) == TCP_BYTES
    handshake_ack = next(t for t, (flags, size) in data if flags == ACK and size == 0)
    fin = next(t for t, (flags, _) in data if flags & FIN)
    on_the_wire = fin - handshake_ack  # both delivered DELAY later
    # Plus the receiver's own time: it wakes from accept() soon after the
    # ACK, but drains the last segments after the FIN has come in.
    assert 0 <= recv_ns - on_the_wire < STEP, (recv_ns, on_the_wire)
    assert send_ns > recv_ns + 2 * DELAY  # plus the handshake and the answer
    print(f"TCP {TCP_BYTES} bytes, one-way delay {DELAY / 1e6:g} ms: receiver "
          f"{recv_ns} ns ({TCP_BYTES * 8e3 / recv_ns:.1f} Mbit/s), sender "
          f"{send_ns} ns, {len(tcp_run.frames)} frames, {tcp_run.wall:.1f} s wall")


# -- bad command lines --------------------------------------------------------

def test_bad_network_arguments_power_the_guest_off_with_a_message(linux, tmp_path):
    """Each guest says what is wrong on one console line and powers off."""
    guests = [Guest("10.0.0.300" + NET, "idle", None),
              Guest(ASK_IP + NET, "idle", None, "qemufmu.colour=blue")]
    run = run_link(linux, tmp_path, guests, until={0, 1})
    assert run.frames == []
    assert lines(run.consoles[0])[-1] == "init: bad qemufmu.ip=10.0.0.300/24"
    assert lines(run.consoles[1])[-1] == \
        "init: unknown kernel argument qemufmu.colour=blue"
    assert all(run.ends)


# -- with the Cortex-M UDP node ------------------------------------------------

def test_linux_and_the_cortex_m_node_talk_udp(linux, guests, tmp_path):
    """The Linux guest (e1000) and firmware/arm/udp_node.c (mps2-an385's
    LAN9118) on one link: ping, UDP echo and the PI law as a service, whose
    replies are the law's, the same in two runs."""
    request = r"setpoint=5\nspeed=1\n"
    role = (f"ping:{ASK_IP}:2,udp:{ASK_IP}:7:1:20:hi,"
            f"udp:{ASK_IP}:5000:3:10:{request}")
    linux_guest = Guest(ANSWER_IP + NET, role, "52:54:00:00:00:01")

    def run(tmp: Path) -> Run:
        tmp.mkdir()
        consoles = [tmp / "node.txt", tmp / "linux.txt"]
        return run_machines(
            [paced_argv(guests, "arm-udp_node.elf", consoles[0],
                        bytes.fromhex("020000000002")),
             linux_argv(linux, consoles[1], linux_guest, NICS["e1000"])],
            consoles, until={1})

    first, second = run(tmp_path / "first"), run(tmp_path / "second")
    assert first.consoles == second.consoles and first.frames == second.frames
    said = lines(first.consoles[1])
    assert "2 packets transmitted, 2 packets received, 0% packet loss" in said
    assert [line.split(" ms: ", 1)[1] for line in said
            if line.startswith(f"udp: 2 bytes from {ASK_IP}:7,")] == ["hi"]
    assert not [line for line in said if "no reply" in line], said
    voltages = [line.split(" ms: ", 1)[1] for line in said
                if line.startswith(f"udp: 13 bytes from {ASK_IP}:5000,")]
    assert voltages == [v.replace("\n", "\\n")
                        for v in pi_replies([(5.0, 1.0)] * 3)], said
    node = first.consoles[0].decode()
    assert len(re.findall(r"^t=\d+ pi 10\.0\.0\.1:\d+ voltage=", node, re.M)) == 3
    print("Linux -> Cortex-M:", *(line for line in said if line.startswith(
        ("64 bytes", "udp:"))), sep="\n  ")


def test_linux_echoes_the_cortex_m_clients_datagrams(linux, guests, tmp_path):
    """arm-udp_client.elf (10.0.0.3) sends to 10.0.0.1:7 every 10 ms of its
    clock; the Linux guest's udp-echo answers each one it receives once its
    network is up: one reply per request, same bytes, sent a few us after
    the request reached it, and one console line per datagram; twice, the
    same."""
    guest = Guest(ANSWER_IP + NET, "udp-echo", "52:54:00:00:00:01")

    def once(tmp: Path) -> Run:
        tmp.mkdir()
        consoles = [tmp / "linux.txt", tmp / "client.txt"]
        return run_machines(
            [linux_argv(linux, consoles[0], guest, NICS["e1000"]),
             paced_argv(guests, "arm-udp_client.elf", consoles[1],
                        bytes.fromhex("020000000003"))],
            consoles, until=set(), stop=3300 * MS)

    run, again = once(tmp_path / "first"), once(tmp_path / "second")
    assert (run.consoles, run.frames) == (again.consoles, again.frames)
    udp_sent = [(t, sender, ipv4(f)[1]) for t, sender, f in run.frames
                if (ip := ipv4(f)) and ip[0] == 17]
    requests = [(t, seg) for t, sender, seg in udp_sent if sender == 1]
    replies = [(t, seg) for t, sender, seg in udp_sent if sender == 0]
    assert len(replies) >= 10, lines(run.consoles[0])
    # The replies answer the last len(replies) requests, in order (the
    # client sends while Linux still boots; those go unanswered).
    turnarounds = []
    for (t_req, req), (t_rep, rep) in zip(requests[-len(replies):], replies,
                                          strict=True):
        assert rep[8:] == req[8:] and rep[:2] == req[2:4] and rep[2:4] == req[:2]
        turnarounds.append(t_rep - (t_req + DELAY))
    # The first answer is slower (a cold path through the guest), still
    # well inside the step; then tens of us.
    assert 0 < turnarounds[0] < STEP, turnarounds
    assert all(0 < t < STEP // 10 for t in turnarounds[1:]), turnarounds
    echoed = [line for line in lines(run.consoles[0]) if line.startswith("udp-echo:")]
    assert len(echoed) == len(replies)
    assert re.fullmatch(r"udp-echo: \d+ bytes from 10\.0\.0\.3:5001 at [\d.]+ s: "
                        r"seq=\d+ t=\d+\\n", echoed[-1]), echoed[-1]
    client = run.consoles[1].decode()
    assert len(re.findall(r"^t=\d+ reply 10\.0\.0\.1:7 ", client, re.M)) \
        >= len(replies) - 1  # the last reply may still be on its way
    print(f"Cortex-M client -> Linux udp-echo: {len(requests)} requests, "
          f"{len(replies)} replies, turnarounds (ns) {turnarounds}; {echoed[0]}")
