"""The Cortex-M UDP node (firmware/arm/udp_node.c) on the mps2-an385's LAN9118.

The real QEMU runs the node; the test is its peer on the Ethernet. Over
``-netdev stream`` (a 4-byte big-endian length, then the frame, on a unix
socket the test serves) it checks every answer byte for byte against frames
it builds itself from the RFCs; time plays no part there.
"""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import FIRMWARE, arm_argv

T = 20.0  # s, wall-clock limit on every wait for QEMU

NODE_IP = bytes([10, 0, 0, 2])
CLIENT_IP = bytes([10, 0, 0, 3])  # arm-udp_client.elf
PEER_IP = bytes([10, 0, 0, 1])  # the test
NODE_MAC = bytes.fromhex("020000000002")
PEER_MAC = bytes.fromhex("020000000001")
BROADCAST = b"\xff" * 6


# -- frames, from the RFCs ------------------------------------------------

def checksum(data: bytes) -> int:
    """RFC 1071."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def eth(dst: bytes, src: bytes, kind: int, payload: bytes) -> bytes:
    return dst + src + struct.pack(">H", kind) + payload


def padded(frame: bytes) -> bytes:
    """As a NIC puts it on the wire: at least 60 bytes (FCS not counted)."""
    return frame + b"\0" * max(0, 60 - len(frame))


def arp(op: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes) -> bytes:
    return struct.pack(">HHBBH", 1, 0x0800, 6, 4, op) + sha + spa + tha + tpa


def ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, *, ident: int = 0,
         flags: int = 0x4000, ttl: int = 64, good_checksum: bool = True,
         total: int | None = None) -> bytes:
    """A 20-byte header (flags: DF 0x4000, MF 0x2000, offset in 8 bytes)."""
    header = struct.pack(">BBHHHBBH4s4s", 0x45, 0, total or 20 + len(payload),
                         ident, flags, ttl, proto, 0, src, dst)
    sum_ = checksum(header) ^ (0 if good_checksum else 0x5555)
    return header[:10] + struct.pack(">H", sum_) + header[12:] + payload


def udp(src: bytes, dst: bytes, sport: int, dport: int, data: bytes, *,
        with_checksum: bool = True, corrupt: bool = False) -> bytes:
    header = struct.pack(">HHHH", sport, dport, 8 + len(data), 0)
    if not with_checksum:
        return header + data
    pseudo = src + dst + struct.pack(">BBH", 0, 17, 8 + len(data))
    sum_ = checksum(pseudo + header + data) or 0xFFFF
    if corrupt:
        sum_ ^= 0x0101
    return header[:6] + struct.pack(">H", sum_) + data


def icmp_echo(kind: int, ident: int, seq: int, data: bytes) -> bytes:
    body = struct.pack(">BBHHH", kind, 0, 0, ident, seq) + data
    return body[:2] + struct.pack(">H", checksum(body)) + body[4:]


def udp_frame(src_ip: bytes, dst_ip: bytes, sport: int, dport: int,
              data: bytes, *, src_mac: bytes = PEER_MAC,
              dst_mac: bytes = NODE_MAC, ident: int = 0) -> bytes:
    return eth(dst_mac, src_mac, 0x0800,
               ipv4(src_ip, dst_ip, 17, udp(src_ip, dst_ip, sport, dport, data),
                    ident=ident))


def arp_request(sha: bytes, spa: bytes, tpa: bytes) -> bytes:
    return eth(BROADCAST, sha, 0x0806, arp(1, sha, spa, b"\0" * 6, tpa))


def arp_reply(sha: bytes, spa: bytes, tha: bytes, tpa: bytes) -> bytes:
    return eth(tha, sha, 0x0806, arp(2, sha, spa, tha, tpa))


# -- the PI law of firmware/lib/pi_law.h, in Python's doubles -------------

def law_constant(name: str) -> float:
    text = (FIRMWARE / "lib" / "pi_law.h").read_text()
    return float(re.search(rf"^#define {name}\s+([-\d.e]+)", text, re.M)[1])


def pi_replies(samples: list[tuple[float, float]], ts: float = 0.001) -> list[str]:
    """The node's reply to each (setpoint, speed) request, as it prints it."""
    kp, ki, v_max = (law_constant(n) for n in ("KP", "KI", "V_MAX"))
    integral, out = 0.0, []
    for sp, meas in samples:
        e = sp - meas
        u = kp * e + integral + ki * ts * e
        if not ((u > v_max and e > 0) or (u < -v_max and e < 0)):
            integral += ki * ts * e
        out.append(f"voltage={min(v_max, max(-v_max, u))!r}\n")
    return out


# -- the node in QEMU, its NIC on our socket --------------------------------

class StreamPeer:
    """The other end of the node's Ethernet cable."""

    def __init__(self, sock: socket.socket, serial: Path) -> None:
        self.sock = sock
        self.serial = serial

    def send(self, frame: bytes) -> None:
        self.sock.sendall(struct.pack(">I", len(frame)) + frame)

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise EOFError("QEMU closed the stream")
            data += chunk
        return data

    def recv(self) -> bytes:
        """The next frame the node sent (socket timeout T)."""
        (size,) = struct.unpack(">I", self._exactly(4))
        return self._exactly(size)

    def console(self) -> str:
        # QEMU connects the netdev before it creates the serial file.
        if not self.serial.exists():
            return ""
        return self.serial.read_text(errors="replace")

    def wait_console(self, pattern: str) -> re.Match:
        """The first match of ``pattern`` in the console, waiting up to T.
        The console may end halfway through a line: match its newline."""
        deadline = time.monotonic() + T
        while not (m := re.search(pattern, self.console(), re.M)):
            if time.monotonic() > deadline:
                pytest.fail(f"no {pattern!r} on the console:\n{self.console()}")
            time.sleep(0.02)
        return m


@contextmanager
def node(guests: Path, image: str = "arm-udp_node.elf",
         mac: bytes = NODE_MAC) -> Iterator[StreamPeer]:
    # A short directory: unix socket paths are limited to 107 bytes.
    with tempfile.TemporaryDirectory(prefix="qfn") as d:
        path, serial = f"{d}/eth", Path(d) / "serial"
        mac_text = ":".join(f"{b:02x}" for b in mac)
        argv = arm_argv(guests / image, serial, extra=(
            "-netdev", f"stream,id=n0,server=off,addr.type=unix,addr.path={path}",
            "-net", f"nic,netdev=n0,model=lan9118,macaddr={mac_text}"))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(path)
            listener.listen(1)
            listener.settimeout(T)
            qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, close_fds=True,
                                    start_new_session=True)
            try:
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(T)
                    peer = StreamPeer(conn, serial)
                    peer.wait_console(r"^udp_node .*\n")  # the whole line
                    yield peer
            finally:
                qemu.kill()
                _, err = qemu.communicate(timeout=T)
        assert not err, err.decode(errors="replace")  # no warning either


def introduce(peer: StreamPeer) -> None:
    """ARP the node, as any IP peer would before its first datagram."""
    peer.send(arp_request(PEER_MAC, PEER_IP, NODE_IP))
    assert peer.recv() == padded(arp_reply(NODE_MAC, NODE_IP, PEER_MAC, PEER_IP))


# -- unpaced: content only ---------------------------------------------------

@pytest.mark.parametrize("mac", [NODE_MAC, bytes.fromhex("52540012abcd")])
def test_answers_arp_for_its_address_with_the_mac_qemu_gave_it(guests, mac):
    with node(guests, mac=mac) as peer:
        assert f"mac {mac.hex(':')} " in peer.console()
        # Someone else's address: no answer (the next answer is ours; an
        # answer to this one would go to another station).
        other_mac = bytes.fromhex("020000000005")
        peer.send(arp_request(other_mac, bytes([10, 0, 0, 5]),
                              bytes([10, 0, 0, 9])))
        peer.send(arp_request(PEER_MAC, PEER_IP, NODE_IP))
        assert peer.recv() == padded(arp_reply(mac, NODE_IP, PEER_MAC, PEER_IP))


def test_answers_ping(guests):
    data = bytes(range(56))
    with node(guests) as peer:
        introduce(peer)
        peer.send(eth(NODE_MAC, PEER_MAC, 0x0800,
                      ipv4(PEER_IP, NODE_IP, 1, icmp_echo(8, 0x1234, 7, data),
                           ident=99)))
        assert peer.recv() == eth(PEER_MAC, NODE_MAC, 0x0800, ipv4(
            NODE_IP, PEER_IP, 1, icmp_echo(0, 0x1234, 7, data), ident=1))


def test_udp_echo_on_port_7(guests):
    with node(guests) as peer:
        introduce(peer)
        for ident, data in enumerate([b"hello", b"", bytes(range(256)) * 5], 1):
            peer.send(udp_frame(PEER_IP, NODE_IP, 40000 + ident, 7, data))
            assert peer.recv() == padded(udp_frame(
                NODE_IP, PEER_IP, 7, 40000 + ident, data, src_mac=NODE_MAC,
                dst_mac=PEER_MAC, ident=ident))
        peer.wait_console(r"^t=\d+ echo 10\.0\.0\.1:40003 1280 bytes\n")


def test_pi_service_runs_the_firmware_law_one_sample_per_request(guests):
    samples = [(100.0, 0.0), (10.0, 9.5), (10.0, 9.75), (10.0, 10.25),
               (-3.0, 1e-3), (0.1, 0.30000000000000004)]
    want = pi_replies(samples)
    with node(guests) as peer:
        introduce(peer)
        for ident, ((sp, meas), reply) in enumerate(zip(samples, want, strict=True), 1):
            request = f"setpoint={sp!r}\nspeed={meas!r}\n".encode()
            peer.send(udp_frame(PEER_IP, NODE_IP, 41000, 5000, request))
            assert peer.recv() == padded(udp_frame(
                NODE_IP, PEER_IP, 5000, 41000, reply.encode(),
                src_mac=NODE_MAC, dst_mac=PEER_MAC, ident=ident))
    assert want[0] == "voltage=12.0\n"  # saturated, as the law says


def test_drops_what_it_must_not_believe(guests):
    """Each bad frame is ignored: the first answer is the good frame's.
    Each carries its own text, so an answer to it could not pass for that."""
    def ip_frame(packet: bytes) -> bytes:
        return eth(NODE_MAC, PEER_MAC, 0x0800, packet)

    def echo(text: bytes, **bad) -> bytes:
        return udp(PEER_IP, NODE_IP, 42000, 7, text, **bad)

    bad = [
        ip_frame(ipv4(PEER_IP, NODE_IP, 17, echo(b"ip sum"), good_checksum=False)),
        ip_frame(ipv4(PEER_IP, NODE_IP, 17, echo(b"udp sum", corrupt=True))),
        ip_frame(ipv4(PEER_IP, NODE_IP, 17, echo(b"more fragments"), flags=0x2000)),
        ip_frame(ipv4(PEER_IP, NODE_IP, 17, echo(b"at offset 8"), flags=0x0001)),
        ip_frame(ipv4(PEER_IP, NODE_IP, 17, echo(b"truncated"), total=200)),
        ip_frame(ipv4(PEER_IP, bytes([10, 0, 0, 7]), 17, echo(b"not our IP"))),
        eth(NODE_MAC, PEER_MAC, 0x0800, b"\x45"),  # no IP header
        udp_frame(PEER_IP, NODE_IP, 42000, 9, b"closed port"),
        udp_frame(PEER_IP, NODE_IP, 42000, 5000, b"no signal here"),
        ip_frame(ipv4(PEER_IP, NODE_IP, 1, b"\x08\0\xff\xff\0\0\0\0")),  # bad sum
        eth(bytes.fromhex("020000000009"), PEER_MAC, 0x0800,
            ipv4(PEER_IP, NODE_IP, 17, echo(b"not our MAC"))),
    ]
    with node(guests) as peer:
        introduce(peer)
        for frame in bad:
            peer.send(frame)
        peer.send(ip_frame(ipv4(PEER_IP, NODE_IP, 17, echo(b"good"))))
        assert peer.recv() == padded(udp_frame(
            NODE_IP, PEER_IP, 7, 42000, b"good", src_mac=NODE_MAC,
            dst_mac=PEER_MAC, ident=1))
        peer.wait_console(r"^t=\d+ echo 10\.0\.0\.1:42000 4 bytes\n")
        assert re.search(r"^t=\d+ pi 10\.0\.0\.1:42000 no input$",
                         peer.console(), re.M)


def test_udp_without_checksum_is_accepted(guests):
    """RFC 768: a zero checksum means the sender computed none."""
    with node(guests) as peer:
        introduce(peer)
        peer.send(eth(NODE_MAC, PEER_MAC, 0x0800, ipv4(
            PEER_IP, NODE_IP, 17,
            udp(PEER_IP, NODE_IP, 43000, 7, b"nosum", with_checksum=False))))
        assert peer.recv() == padded(udp_frame(
            NODE_IP, PEER_IP, 7, 43000, b"nosum", src_mac=NODE_MAC,
            dst_mac=PEER_MAC, ident=1))


def test_client_resolves_its_peer_then_sends_every_10_ms(guests):
    mac = bytes.fromhex("020000000003")
    with node(guests, "arm-udp_client.elf", mac) as peer:
        # Its first request finds no address: ARP for it, the datagram waits.
        assert peer.recv() == padded(arp_request(mac, CLIENT_IP, PEER_IP))
        peer.send(arp_reply(PEER_MAC, PEER_IP, mac, CLIENT_IP))
        # Unpaced, more periods may pass (and ARP again) before our reply
        # lands: the datagram that waited is the latest one.
        while (frame := peer.recv())[12:14] == b"\x08\x06":
            assert frame == padded(arp_request(mac, CLIENT_IP, PEER_IP))
        seq = int(re.search(rb"seq=(\d+) ", frame)[1])
        text = f"seq={seq} t={10 * seq}\n".encode()
        # Every datagram, sent or replaced while waiting, took an IP id.
        assert frame == padded(udp_frame(CLIENT_IP, PEER_IP, 5001, 7, text,
                                         src_mac=mac, dst_mac=PEER_MAC,
                                         ident=seq))
        # We are the echo server it asks; it prints what comes back.
        peer.send(udp_frame(PEER_IP, CLIENT_IP, 7, 5001, text, dst_mac=mac))
        peer.wait_console(rf"^t=\d+ reply 10\.0\.0\.1:7 seq={seq} t={10 * seq}\n")
        # Then the next request goes straight out.
        assert peer.recv() == padded(udp_frame(
            CLIENT_IP, PEER_IP, 5001, 7, f"seq={seq + 1} t={10 * seq + 10}\n"
            .encode(), src_mac=mac, dst_mac=PEER_MAC, ident=seq + 1))


# -- paced: frames at virtual times over the qqq network channel -------------

MS = 1_000_000  # ns
US = 1_000  # ns
STEP = 100 * US  # the test's communication step


def paced_argv(guests: Path, image: str, serial: Path, mac: bytes) -> list[str]:
    """The node with its LAN9118 on `-netdev qqq`: frames on the qqq socket."""
    return arm_argv(guests / image, serial, extra=(
        "-netdev", "qqq,id=eth0",
        "-net", f"nic,netdev=eth0,model=lan9118,macaddr={mac.hex(':')}"))


Respond = Callable[[int, bytes], list[tuple[int, bytes]]]


def run_paced(guests: Path, image: str, mac: bytes, tmp: Path,
              script: list[tuple[int, bytes]], until_ns: int,
              respond: Respond | None = None) -> tuple[list[tuple[int, bytes]], str]:
    """Run the node in steps of STEP to ``until_ns``; deliver the ``script``
    frames (virtual ns, frame) and whatever ``respond`` answers to each
    frame the node sends. Returns the node's frames with their send times,
    and its console.

    We see a frame at the end of the step it was sent in, so an answer
    can be on time only if it is due at least STEP after that frame."""
    from qemufmu.process import QemuProcess
    from qemufmu.protocol import pack_net, unpack_net

    tmp.mkdir()
    serial = tmp / "serial"
    pending, sent, now = sorted(script), [], 0
    with QemuProcess(paced_argv(guests, image, serial, mac), version=3) as qemu:
        qemu.channel.hello(timeout=T)
        assert qemu.channel.kinds == ["net"]
        while now < until_ns:
            due = [p for p in pending if p[0] < now + STEP]
            pending = pending[len(due):]
            assert all(t >= now for t, _ in due), "an answer would be late"
            reply = qemu.channel.advance(STEP, {0: pack_net(due)}, timeout=T)
            now += reply.elapsed_ns
            for t, frame in unpack_net(reply.outputs.get(0, b"")):
                sent.append((t, frame))
                if respond:
                    pending = sorted(pending + respond(t, frame))
    return sent, serial.read_text()


def node_script() -> list[tuple[int, bytes]]:
    """ARP, ping, UDP echo and a PI request, each half-way between ticks."""
    return [
        (5 * MS + 500 * US, arp_request(PEER_MAC, PEER_IP, NODE_IP)),
        (6 * MS + 500 * US, eth(NODE_MAC, PEER_MAC, 0x0800, ipv4(
            PEER_IP, NODE_IP, 1, icmp_echo(8, 1, 1, bytes(56))))),
        (7 * MS + 500 * US, udp_frame(PEER_IP, NODE_IP, 40000, 7, b"ping")),
        (8 * MS + 500 * US, udp_frame(PEER_IP, NODE_IP, 40000, 5000,
                                      b"setpoint=10.0\nspeed=9.5\n")),
    ]


def test_paced_replies_are_exact_and_prompt_and_repeat(guests, tmp_path):
    script = node_script()
    (sent, console), again = (
        run_paced(guests, "arm-udp_node.elf", NODE_MAC, tmp_path / f"run{k}",
                  script, 10 * MS) for k in range(2))
    assert again == (sent, console)  # frames, their times, the console

    want = [padded(arp_reply(NODE_MAC, NODE_IP, PEER_MAC, PEER_IP)),
            eth(PEER_MAC, NODE_MAC, 0x0800, ipv4(
                NODE_IP, PEER_IP, 1, icmp_echo(0, 1, 1, bytes(56)), ident=1)),
            padded(udp_frame(NODE_IP, PEER_IP, 7, 40000, b"ping",
                             src_mac=NODE_MAC, dst_mac=PEER_MAC, ident=2)),
            padded(udp_frame(NODE_IP, PEER_IP, 5000, 40000,
                             pi_replies([(10.0, 9.5)])[0].encode(),
                             src_mac=NODE_MAC, dst_mac=PEER_MAC, ident=3))]
    assert [frame for _, frame in sent] == want
    # The NIC interrupt wakes the node: each answer leaves well before the
    # next SysTick (0.5 ms later), which polling would have waited for.
    latencies = [t - t_in for (t_in, _), (t, _) in zip(script, sent, strict=True)]
    assert all(0 < lat < 100 * US for lat in latencies), latencies
    print("request-to-reply latency (virtual ns): ARP, ping, UDP echo, PI:",
          latencies)
    # The console's SysTick ms: the request arrived in tick 7 and tick 8.
    assert re.search(r"^t=7 echo 10\.0\.0\.1:40000 4 bytes\n", console, re.M)
    assert re.search(r"^t=8 pi 10\.0\.0\.1:40000 voltage=", console, re.M)


def test_paced_client_resolves_its_peer_then_asks_every_10_ms(guests, tmp_path):
    mac = bytes.fromhex("020000000003")

    def respond(t: int, frame: bytes) -> list[tuple[int, bytes]]:
        """The peer: answers ARP after 0.2 ms, echoes UDP after 0.3 ms."""
        if frame[12:14] == b"\x08\x06":
            return [(t + 200 * US, arp_reply(PEER_MAC, PEER_IP, mac, CLIENT_IP))]
        size = struct.unpack(">H", frame[38:40])[0] - 8
        return [(t + 300 * US, udp_frame(PEER_IP, CLIENT_IP, 7, 5001,
                                         frame[42:42 + size], dst_mac=mac))]

    (sent, console), again = (
        run_paced(guests, "arm-udp_client.elf", mac, tmp_path / f"run{k}", [],
                  36 * MS, respond) for k in range(2))
    assert again == (sent, console)

    def request(seq: int) -> bytes:
        return padded(udp_frame(CLIENT_IP, PEER_IP, 5001, 7,
                                f"seq={seq} t={10 * seq}\n".encode(),
                                src_mac=mac, dst_mac=PEER_MAC, ident=seq))

    assert [f for _, f in sent] == [padded(arp_request(mac, CLIENT_IP, PEER_IP)),
                                    request(1), request(2), request(3)]
    times = [t for t, _ in sent]
    # The ARP request on the 10th tick; the waiting datagram leaves as soon
    # as the answer is in, not a period later; then one per 10 ms.
    assert 10 * MS <= times[0] < 10 * MS + 100 * US
    assert times[0] + 200 * US < times[1] < times[0] + 300 * US
    assert 20 * MS <= times[2] < 20 * MS + 100 * US
    assert times[3] - times[2] == 10 * MS
    assert re.findall(r"^t=(\d+) reply 10\.0\.0\.1:7 (.*)$", console, re.M) == [
        ("10", "seq=1 t=10"), ("20", "seq=2 t=20"), ("30", "seq=3 t=30")]


def build_client(tmp: Path, flags: str) -> Path:
    """arm-udp_client.elf built with other -D flags (firmware/Makefile)."""
    subprocess.run(["make", "-s", "-C", str(FIRMWARE), f"OUT={tmp}",
                    f"{tmp}/arm-udp_client.elf", f"UDP_CLIENT_FLAGS={flags}"],
                   check=True, timeout=300, capture_output=True)
    return tmp / "arm-udp_client.elf"


def run_two_ecus(nodes: list[tuple[Path, bytes]], tmp: Path, delay_ns: int,
                 until_ns: int) -> list[tuple[list[tuple[int, bytes]], str]]:
    """Two firmwares on one cable, stepped together by STEP: a frame one
    sends at t reaches the other at t + delay_ns (on time: delay >= STEP).
    Returns each node's sent frames with their times, and its console."""
    from qemufmu.process import QemuProcess
    from qemufmu.protocol import pack_net, unpack_net

    assert delay_ns >= STEP
    tmp.mkdir()
    qemus = [QemuProcess(paced_argv(image.parent, image.name, tmp / f"serial{k}",
                                    mac), version=3)
             for k, (image, mac) in enumerate(nodes)]
    sent: list[list[tuple[int, bytes]]] = [[], []]
    inbox: list[list[tuple[int, bytes]]] = [[], []]
    try:
        for qemu in qemus:
            qemu.channel.hello(timeout=T)
        now = 0
        while now < until_ns:
            due = [[f for f in box if f[0] < now + STEP] for box in inbox]
            inbox = [[f for f in box if f[0] >= now + STEP] for box in inbox]
            for qemu, frames in zip(qemus, due, strict=True):
                qemu.channel.send_advance(STEP, {0: pack_net(frames)})
            for k, qemu in enumerate(qemus):
                reply = qemu.channel.recv_reply(timeout=T)
                assert reply.elapsed_ns == STEP
                for t, frame in unpack_net(reply.outputs.get(0, b"")):
                    sent[k].append((t, frame))
                    inbox[1 - k].append((t + delay_ns, frame))
            now += STEP
    finally:
        for qemu in qemus:
            qemu.close()
    return [(sent[k], (tmp / f"serial{k}").read_text()) for k in range(2)]


def test_two_ecus_talk_through_a_cable_the_same_way_every_run(guests, tmp_path):
    """arm-udp_node.elf and a client of it: ARP, then a request every 10 ms
    and its echo, both QEMUs paced together; every frame, time and console
    line the same in a second run."""
    client = build_client(tmp_path / "fw", "-DNODE_IP='IP4(10,0,0,3)' "
                          "-DPERIOD_MS=10 -DPEER_IP='IP4(10,0,0,2)'")
    client_mac = bytes.fromhex("020000000003")
    nodes = [(guests / "arm-udp_node.elf", NODE_MAC), (client, client_mac)]
    delay = 250 * US
    first, second = (run_two_ecus(nodes, tmp_path / f"run{k}", delay, 32 * MS)
                     for k in range(2))
    assert first == second
    (node_sent, node_console), (client_sent, client_console) = first

    # The node's answers leave a cable delay plus its processing after the
    # questions: ARP reply, then the three echoes.
    assert len(node_sent) == len(client_sent) == 4
    for (t_ask, ask), (t_answer, answer) in zip(client_sent, node_sent,
                                                strict=True):
        assert t_ask + delay < t_answer < t_ask + delay + 100 * US
        assert ask[6:12] == answer[:6] == client_mac
    # Each echo is printed in the SysTick ms it reached the client, the
    # first one after ARP: two more cable crossings.
    arrivals = [t + delay for t, _ in node_sent[1:]]
    assert re.findall(r"^t=(\d+) reply 10\.0\.0\.2:7 (.*)$", client_console,
                      re.M) == [(str(t // MS), f"seq={k} t={10 * k}")
                                for k, t in enumerate(arrivals, 1)]
    assert len(re.findall(r"^t=\d+ echo 10\.0\.0\.3:5001 ", node_console,
                          re.M)) == 3
    print(f"two ECUs, cable {delay} ns each way; request-to-reply round trips "
          "seen by the client (virtual ns):",
          [t_back - t_ask for t_back, (t_ask, _) in
           zip(arrivals, client_sent[1:], strict=True)])


def test_wireshark_agrees_with_every_checksum_and_answer(guests, tmp_path):
    """A second opinion on our frame builders: tshark decodes the paced
    exchange (written as a pcap with dpkt) and finds every IPv4, UDP and
    ICMP checksum good and each answer matched to its question."""
    import dpkt

    script = node_script()
    sent, _ = run_paced(guests, "arm-udp_node.elf", NODE_MAC, tmp_path / "run",
                        script, 10 * MS)
    pcap = tmp_path / "node.pcap"
    with pcap.open("wb") as f:
        writer = dpkt.pcap.Writer(f, nano=True)
        for t, frame in sorted(script + sent):
            writer.writepkt(frame, ts=t / 1e9)
    fields = ["_ws.col.Info", "ip.checksum.status", "udp.checksum.status",
              "icmp.checksum.status", "icmp.resp_to", "ip.src", "udp.srcport"]
    proc = subprocess.run(
        ["tshark", "-r", str(pcap), "-o", "ip.check_checksum:TRUE",
         "-o", "udp.check_checksum:TRUE", "-T", "fields",
         *(arg for name in fields for arg in ("-e", name))],
        capture_output=True, text=True, timeout=60, check=True)
    rows = [dict(zip(fields, line.split("\t"), strict=True))
            for line in proc.stdout.splitlines()]
    assert len(rows) == 8
    good = "1"  # tshark's checksum status: 0 bad, 1 good, 2 unverified
    for row in rows[2:]:
        assert row["ip.checksum.status"] == good, row
    for row in rows[4:]:
        assert row["udp.checksum.status"] == good, row
    assert rows[1]["_ws.col.Info"] == "10.0.0.2 is at 02:00:00:00:00:02"
    assert rows[2]["icmp.checksum.status"] == rows[3]["icmp.checksum.status"] == good
    assert rows[3]["icmp.resp_to"] == "3"  # the reply answers frame 3
    assert [(r["ip.src"], r["udp.srcport"]) for r in rows[5::2]] == [
        ("10.0.0.2", "7"), ("10.0.0.2", "5000")]
