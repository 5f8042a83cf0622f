"""Ethernet ports of qemu.fmu (docs/network.md): a guest's NIC as FMU
variables, with real QEMU, real guests and fmpy's FMU2Slave.

The guests are the UDP node of firmware/arm/udp_node.c on the LAN9118 of
mps2-an385: arm-udp_node (10.0.0.2, ARP, ping, UDP echo on port 7) and
arm-udp_client (10.0.0.3, which also sends "seq=<n> t=<ms>" to
10.0.0.1:7 every 10 ms and prints the replies).  The test plays 10.0.0.1
through the port variables: frames built here from the RFCs go into
eth0_in with delivery times; the guest's answers come out of eth0_out
with their send times, in simulation time.
"""

from __future__ import annotations

import base64
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from fmpy import extract, read_model_description
from fmpy.fmi1 import FMICallException

from conftest import REPO, built
from fmi_helpers import Instance, qemu_children

sys.path.insert(0, str(REPO / "fmu_src"))
from qemufmu.ethernet import Frame, decode, default_mac, encode  # noqa: E402

STEP = 1e-3
MS = 1_000_000
PEER_MAC = bytes.fromhex("020000000001")
PEER_IP = bytes([10, 0, 0, 1])
NODE_IP = bytes([10, 0, 0, 2])
CLIENT_IP = bytes([10, 0, 0, 3])
BROADCAST = b"\xff" * 6
COUNTERS = ("frames_out", "bytes_out", "frames_in", "bytes_in", "late", "dropped")


# -- frames, from the RFCs ----------------------------------------------------

def _checksum(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def arp(op: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes,
        dst: bytes = BROADCAST) -> bytes:
    """An ARP packet (RFC 826) for IPv4 over Ethernet, op 1 request, 2 reply."""
    return (dst + sha + b"\x08\x06"
            + struct.pack(">HHBBH", 1, 0x0800, 6, 4, op) + sha + spa + tha + tpa)


def udp(dst_mac: bytes, src_ip: bytes, dst_ip: bytes, sport: int, dport: int,
        payload: bytes, ident: int = 1) -> bytes:
    """An IPv4/UDP frame (RFC 791, 768) from the peer, checksums set."""
    length = 8 + len(payload)
    pseudo = src_ip + dst_ip + struct.pack(">BBH", 0, 17, length)
    header = struct.pack(">HHHH", sport, dport, length, 0)
    csum = _checksum(pseudo + header + payload) or 0xFFFF
    datagram = struct.pack(">HHHH", sport, dport, length, csum) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + length, ident, 0x4000,
                     64, 17, 0, src_ip, dst_ip)
    ip = ip[:10] + struct.pack(">H", _checksum(ip)) + ip[12:]
    return dst_mac + PEER_MAC + b"\x08\x00" + ip + datagram


def parse(frame: bytes) -> dict:
    """What the tests look at in a guest's frame."""
    kind = frame[12:14]
    if kind == b"\x08\x06":
        op, = struct.unpack(">H", frame[20:22])
        return {"type": "arp", "op": op, "sha": frame[22:28],
                "spa": frame[28:32], "tpa": frame[38:42]}
    assert kind == b"\x08\x00", frame.hex()
    ihl = (frame[14] & 15) * 4
    ip = frame[14:14 + ihl]
    assert _checksum(ip) == 0, "bad IPv4 header checksum"
    sport, dport, length, _ = struct.unpack(">HHHH", frame[14 + ihl:22 + ihl])
    return {"type": "udp", "dst": frame[0:6], "src": ip[12:16], "to": ip[16:20],
            "sport": sport, "dport": dport,
            "payload": frame[22 + ihl:14 + ihl + length]}


# -- driving an instance ------------------------------------------------------

#: instances a test opened and has not closed: closed after it, so a failed
#: test leaves no QEMU behind for the next one to count
_open: list[Instance] = []


def instance(fmu: Path, unzipped: Path, **params: object) -> Instance:
    inst = Instance(fmu, unzipped, **params)
    _open.append(inst)
    return inst


def close(inst: Instance) -> None:
    _open.remove(inst)
    inst.close()


@pytest.fixture(autouse=True)
def _close_leftovers():
    yield
    while _open:
        inst = _open.pop()
        try:
            inst.slave.terminate()
        except Exception:   # a failed instance refuses; free it all the same
            pass
        inst.slave.freeInstance()

@pytest.fixture(scope="module")
def node(guests) -> Path:
    return built(guests / "arm-udp_node.elf", "make firmware")


@pytest.fixture(scope="module")
def client(guests) -> Path:
    return built(guests / "arm-udp_client.elf", "make firmware")


def steps(inst: Instance, first: int, count: int,
          inputs: dict[int, list[Frame]] | None = None,
          t0: float = 0.0) -> list[tuple]:
    """Run ``count`` 1 ms steps from step ``first`` (from start time
    ``t0``); before step k, set eth0_in to ``inputs[k]`` (or leave it).
    Every port output and the console after each step."""
    rows = []
    for k in range(first, first + count):
        if inputs and k in inputs:
            inst.set("eth0_in", encode(inputs[k]))
        inst.slave.doStep(t0 + k * STEP, STEP)
        rows.append((k, inst.get("eth0_out"), inst.get("console"),
                     inst.get("next_event_time"),
                     *(inst.get(f"eth0_{c}") for c in COUNTERS)))
    return rows


def sent(rows: list[tuple]) -> list[Frame]:
    return [f for row in rows for f in decode(row[1])]


def exchange(inst: Instance) -> tuple[list[tuple], dict[int, list[Frame]]]:
    """The peer asks the node for its address, then sends two datagrams to
    its echo port: one within the step it is set before, one two steps on
    (held by the port meanwhile)."""
    ask = arp(1, PEER_MAC, PEER_IP, b"\0" * 6, NODE_IP)
    inputs = {5: [Frame(5 * MS + 300_000, ask)]}
    rows = steps(inst, 0, 7, inputs)
    reply = next(f for f in sent(rows) if parse(f.data)["type"] == "arp")
    node_mac = parse(reply.data)["sha"]
    inputs[7] = [Frame(7 * MS + 250_000, udp(node_mac, PEER_IP, NODE_IP, 5001, 7,
                                             b"hello 1")),
                 Frame(9 * MS + 500_000, udp(node_mac, PEER_IP, NODE_IP, 5001, 7,
                                             b"hello 2", ident=2))]
    rows += steps(inst, 7, 5, inputs)
    return rows, inputs


def test_a_guest_answers_frames_at_their_times(fmu, unzipped, node):
    inst = instance(fmu, unzipped, guest_image=node, eth0_nic="lan9118")
    inst.start()
    rows, inputs = exchange(inst)
    close(inst)
    mac = default_mac("qemu", 0)
    assert f"mac {mac}" in "".join(r[2] for r in rows), "the NIC got another MAC"
    frames = sent(rows)
    assert [parse(f.data)["type"] for f in frames] == ["arp", "udp", "udp"]
    arp_reply, echo1, echo2 = frames
    # Each answer leaves after its request reached the NIC, in the step
    # that contains the request's delivery time, and soon after it.
    for answer, request, step in ((arp_reply, inputs[5][0], 5),
                                  (echo1, inputs[7][0], 7),
                                  (echo2, inputs[7][1], 9)):
        assert request.time_ns < answer.time_ns < request.time_ns + 100_000
        assert answer in decode(rows[step][1])
    assert parse(arp_reply.data) == {"type": "arp", "op": 2,
                                     "sha": bytes.fromhex(mac.replace(":", "")),
                                     "spa": NODE_IP, "tpa": PEER_IP}
    for echo, text in ((echo1, b"hello 1"), (echo2, b"hello 2")):
        got = parse(echo.data)
        assert (got["dst"], got["src"], got["to"], got["sport"], got["dport"],
                got["payload"]) == (PEER_MAC, NODE_IP, PEER_IP, 7, 5001, text)
    # The second datagram waits in the port for step 9: it reaches the NIC
    # in step 9, not before (frames_in counts what went to QEMU).
    for k in (7, 8):
        assert rows[k][4 + COUNTERS.index("frames_in")] == 2
    assert rows[9][4 + COUNTERS.index("frames_in")] == 3
    last = dict(zip(COUNTERS, rows[-1][4:], strict=True))
    assert last == {"frames_out": 3, "bytes_out": sum(len(f.data) for f in frames),
                    "frames_in": 3,
                    "bytes_in": sum(len(f.data) for k in (5, 7) for f in inputs[k]),
                    "late": 0, "dropped": 0}


def test_a_held_frame_is_the_next_event(fmu, unzipped, guests):
    """A guest with no timer pending: next_event_time is -1, unless the port
    holds a frame for it; then it is that frame's time."""
    inst = instance(fmu, unzipped, guest_image=guests / "arm-idle.elf",
                    eth0_nic="lan9118")
    inst.start()
    frame = arp(1, PEER_MAC, PEER_IP, b"\0" * 6, NODE_IP)
    rows = steps(inst, 0, 8, {2: [Frame(5 * MS + 500, frame)]})
    close(inst)
    assert [r[3] for r in rows] == [-1.0, -1.0] + [pytest.approx(0.0050005,
                                                                abs=1e-12)] * 3 \
        + [-1.0] * 3
    assert [r[4 + COUNTERS.index("frames_in")] for r in rows] == [0] * 5 + [1] * 3


def test_runs_repeat_byte_for_byte(fmu, unzipped, node):
    runs = []
    for _ in range(2):
        inst = instance(fmu, unzipped, name="same", guest_image=node,
                        eth0_nic="lan9118")
        inst.start()
        runs.append(exchange(inst)[0])
        close(inst)
    assert runs[0] == runs[1]
    assert sent(runs[0])


def test_the_client_talks_to_the_peer_both_ways(fmu, unzipped, client):
    """The client guest starts the conversation: it resolves 10.0.0.1 and
    sends its datagrams; the peer answers each in the next step, and the
    guest prints the replies it got."""
    inst = instance(fmu, unzipped, guest_image=client, eth0_nic="lan9118",
                    eth0_mac="02:00:00:00:00:03")
    inst.start()
    rows, echoed = [], 0
    for k in range(45):
        answers = []
        for f in sent(rows[-1:]):
            got = parse(f.data)
            if got["type"] == "arp" and got["tpa"] == PEER_IP:
                answers.append(arp(2, PEER_MAC, PEER_IP, got["sha"], got["spa"],
                                   dst=got["sha"]))
            elif got["type"] == "udp" and got["dport"] == 7:
                answers.append(udp(bytes.fromhex("020000000003"), PEER_IP,
                                   CLIENT_IP, 7, got["sport"], got["payload"],
                                   ident=100 + echoed))
                echoed += 1
        at = k * MS + 123_000
        rows += steps(inst, k, 1, {k: [Frame(at, a) for a in answers]})
    close(inst)
    console = "".join(r[2] for r in rows)
    assert "mac 02:00:00:00:00:03" in console
    replies = [line for line in console.splitlines() if " reply 10.0.0.1:7 " in line]
    assert echoed >= 3 and len(replies) == echoed, console
    assert [r.split(" reply 10.0.0.1:7 ")[1].split()[0] for r in replies] == \
        [f"seq={n}" for n in range(1, echoed + 1)]


def test_frames_held_in_the_port_are_part_of_the_fmu_state(fmu, unzipped, node):
    inst = instance(fmu, unzipped, guest_image=node, eth0_nic="lan9118")
    inst.start()
    rows, inputs = exchange(inst)
    close(inst)

    inst = instance(fmu, unzipped, name="qemu", guest_image=node, eth0_nic="lan9118")
    inst.start()
    steps(inst, 0, 7, inputs)
    inst.set("eth0_in", encode(inputs[7]))
    inst.slave.doStep(7 * STEP, STEP)
    # hello 2 (due in step 9) waits in the port now.
    state = inst.slave.getFMUstate()
    blob = inst.slave.serializeFMUstate(state)
    rest = steps(inst, 8, 4)
    assert rest == rows[8:12]
    for _ in range(2):
        inst.slave.setFMUstate(state)
        assert steps(inst, 8, 4) == rest
    inst.slave.freeFMUstate(state)
    close(inst)

    other = instance(fmu, unzipped, name="qemu", guest_image=node, eth0_nic="lan9118")
    other.start()
    other.slave.setFMUstate(other.slave.deSerializeFMUstate(blob))
    assert steps(other, 8, 4) == rest
    close(other)
    assert qemu_children() == []


def test_port_times_are_simulation_time(fmu, unzipped, node):
    """From start time 1000 s: the port's times count from time 0 of the
    simulation, QEMU's from its start; the answer comes as from time 0."""
    t0, t0_ns = 1000.0, 1000 * 10**9
    ask = arp(1, PEER_MAC, PEER_IP, b"\0" * 6, NODE_IP)
    got = []
    for start, base in ((0.0, 0), (t0, t0_ns)):
        inst = instance(fmu, unzipped, guest_image=node, eth0_nic="lan9118")
        inst.start(start_time=start)
        rows = steps(inst, 0, 6, {5: [Frame(base + 5 * MS + 300_000, ask)]}, t0=start)
        close(inst)
        reply, = sent(rows)
        assert rows[5][4 + COUNTERS.index("late")] == 0
        got.append((reply.time_ns - base, reply.data))
    assert got[0] == got[1]
    assert 5 * MS + 300_000 < got[0][0] < 5 * MS + 400_000


def test_late_frames_are_delivered_at_once_and_counted(fmu, unzipped, node):
    inst = instance(fmu, unzipped, guest_image=node, eth0_nic="lan9118")
    inst.start()
    ask = arp(1, PEER_MAC, PEER_IP, b"\0" * 6, NODE_IP)
    rows = steps(inst, 0, 6, {5: [Frame(3 * MS, ask)]})     # due 2 ms ago
    close(inst)
    reply, = sent(rows)
    assert rows[5][4 + COUNTERS.index("late")] == 1
    assert 5 * MS < reply.time_ns < 5 * MS + 100_000
    assert parse(reply.data)["op"] == 2


def test_bad_input_is_refused_naming_the_port(fmu, unzipped, node):
    inst = instance(fmu, unzipped, guest_image=node, eth0_nic="lan9118")
    inst.start()
    steps(inst, 0, 2)
    zeros = base64.b64encode(b"\0" * 60).decode()
    for bad in ("12 not-base64!\n",                        # not base64
                "x AAAA\n",                                # no time
                f"5 {base64.b64encode(b'short').decode()}\n",  # under 14 bytes
                f"7000000 {zeros}\n1 {zeros}\n"):         # out of time order
        before = len(inst.messages)
        with pytest.raises(FMICallException):
            inst.set("eth0_in", bad)
        errors = [m for _, m in inst.messages[before:]]
        assert any("port eth0" in m and "eth0_in" in m for m in errors), errors
    # Nothing was taken: the instance goes on and the guest got nothing.
    rows = steps(inst, 2, 2)
    assert rows[-1][4:] == (0, 0, 0, 0, 0, 0)
    # A frame over the MTU is dropped with a warning; the one after it goes.
    ask = arp(1, PEER_MAC, PEER_IP, b"\0" * 6, NODE_IP)
    big = BROADCAST + PEER_MAC + b"\x88\xb5" + b"\0" * 1501     # 1515 bytes
    before = len(inst.messages)
    rows = steps(inst, 4, 2, {4: [Frame(4 * MS + 10, big), Frame(4 * MS + 20, ask)]})
    warned = [m for _, m in inst.messages[before:] if "port eth0" in m]
    assert len(warned) == 1 and "1515 bytes" in warned[0], warned
    assert rows[-1][4 + COUNTERS.index("dropped")] == 1
    assert rows[-1][4 + COUNTERS.index("frames_in")] == 1
    assert [parse(f.data)["op"] for f in sent(rows)] == [2]
    close(inst)


@pytest.mark.parametrize("params,error", [
    ({"eth0_nic": "ne2000"}, "eth0_nic 'ne2000' is not one of lan9118"),
    ({"eth0_nic": "lan9118", "eth0_mac": "01:00:00:00:00:01"},
     "multicast address; a NIC needs unicast (parameter eth0_mac)"),
    ({"eth1_nic": "lan9118", "eth1_mac": "nope"},
     "not a MAC address (aa:bb:cc:dd:ee:ff) (parameter eth1_mac)"),
])
def test_bad_port_parameters_fail_initialization(fmu, unzipped, params, error):
    inst = instance(fmu, unzipped, **params)
    with pytest.raises(FMICallException):
        inst.start()
    assert error in inst.log_text()
    assert qemu_children() == []
    _open.remove(inst)
    inst.slave.freeInstance()


def _argv(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def test_an_x86_pc_gets_pci_nics_and_no_nic_none(fmu, unzipped, guests):
    inst = instance(fmu, unzipped, machine="pc", qemu_system="x86_64",
                    guest_image=guests / "x86-idle.elf", eth0_nic="e1000",
                    eth1_nic="virtio-net-pci", eth1_mac="02:00:00:00:01:01")
    inst.start()
    pid, = qemu_children()
    argv = _argv(pid)
    for k in range(5):
        inst.slave.doStep(k * STEP, STEP)
    assert inst.get("qemu_time") == pytest.approx(5 * STEP, abs=1e-9)
    close(inst)
    assert "-nic" not in argv
    assert f"e1000,netdev=eth0,mac={default_mac('qemu', 0)},romfile=" in argv
    assert ("virtio-net-pci,netdev=eth1,mac=02:00:00:00:01:01,ioeventfd=off,"
            "tx=timer,romfile=") in argv
    assert argv.count("-netdev") == 2


# -- two qemu.fmu instances on one cable -----------------------------------------

CABLE_NS = 1_250_000    # more than a step: frames arrive on time, some held


@pytest.fixture(scope="module")
def client_of_node(tmp_path_factory) -> Path:
    """The client firmware at 10.0.0.4, asking the node (10.0.0.2) every
    5 ms (firmware/Makefile's UDP_CLIENT_FLAGS)."""
    tmp = tmp_path_factory.mktemp("fw")
    subprocess.run(["make", "-s", "-C", str(REPO / "firmware"), f"OUT={tmp}",
                    f"{tmp}/arm-udp_client.elf",
                    "UDP_CLIENT_FLAGS=-DNODE_IP='IP4(10,0,0,4)' -DPERIOD_MS=5 "
                    "-DPEER_IP='IP4(10,0,0,2)'"],
                   check=True, timeout=300, capture_output=True)
    return tmp / "arm-udp_client.elf"


class Cable:
    """The master's part: each ECU's eth0_out, delayed by CABLE_NS, is the
    other's eth0_in at the next step."""

    def __init__(self, ecus: list[Instance]) -> None:
        self.ecus = ecus
        self.wire: list[list[Frame]] = [[], []]

    def run(self, first: int, count: int) -> list[tuple]:
        rows = []
        for k in range(first, first + count):
            for ecu, frames in zip(self.ecus, self.wire, strict=True):
                ecu.set("eth0_in", encode(frames))
            for ecu in self.ecus:
                ecu.slave.doStep(k * STEP, STEP)
            outs = [decode(ecu.get("eth0_out")) for ecu in self.ecus]
            self.wire = [[Frame(f.time_ns + CABLE_NS, f.data) for f in out]
                         for out in reversed(outs)]
            rows.append(tuple((ecu.get("eth0_out"), ecu.get("console"),
                               ecu.get("next_event_time"),
                               *(ecu.get(f"eth0_{c}") for c in COUNTERS))
                              for ecu in self.ecus))
        return rows


def two_ecus(fmu: Path, unzipped: Path, node: Path, client: Path) -> Cable:
    ecus = [instance(fmu, unzipped, name="node", guest_image=node, eth0_nic="lan9118"),
            instance(fmu, unzipped, name="client", guest_image=client,
                     eth0_nic="lan9118")]
    for ecu in ecus:
        ecu.start()
    return Cable(ecus)


def test_two_instances_talk_through_their_ports(fmu, unzipped, node, client_of_node):
    runs = []
    for _ in range(2):
        cable = two_ecus(fmu, unzipped, node, client_of_node)
        runs.append(cable.run(0, 24))
        for ecu in cable.ecus:
            close(ecu)
    assert runs[0] == runs[1], "the two runs differ"
    rows = runs[0]
    node_sent, client_sent = ([f for row in rows for f in decode(row[k][0])]
                              for k in range(2))
    # ARP, then a request every 5 ms: 5, 10, 15, 20 ms.
    assert len(client_sent) == len(node_sent) == 5
    for ask, answer in zip(client_sent, node_sent, strict=True):
        arrival = ask.time_ns + CABLE_NS
        assert arrival < answer.time_ns < arrival + 100_000
        assert answer.data[:6] == ask.data[6:12]
    client_console = "".join(row[1][1] for row in rows)
    replies = [line.split(" reply 10.0.0.2:7 ")[1] for line in
               client_console.splitlines() if " reply 10.0.0.2:7 " in line]
    assert [r.split()[0] for r in replies] == ["seq=1", "seq=2", "seq=3", "seq=4"]
    for k in range(2):
        last = dict(zip(COUNTERS, rows[-1][k][3:], strict=True))
        assert last["late"] == last["dropped"] == 0
        assert last["frames_in"] == 5 and last["frames_out"] == 5
    # With 1.25 ms of cable, a frame sent late in a step is due beyond the
    # next one: the receiving port held it a step.
    assert any(f.time_ns % MS > MS - CABLE_NS % MS for f in client_sent + node_sent)


def test_two_instances_restore_with_frames_on_the_cable(fmu, unzipped, node,
                                                        client_of_node):
    cable = two_ecus(fmu, unzipped, node, client_of_node)
    cable.run(0, 10)
    states = [ecu.slave.getFMUstate() for ecu in cable.ecus]
    wire = cable.wire
    first = cable.run(10, 12)
    for _ in range(2):
        for ecu, state in zip(cable.ecus, states, strict=True):
            ecu.slave.setFMUstate(state)
        cable.wire = wire
        assert cable.run(10, 12) == first
    for ecu, state in zip(cable.ecus, states, strict=True):
        ecu.slave.freeFMUstate(state)
        close(ecu)
    assert any(decode(row[k][0]) for row in first for k in range(2))


# -- ports declared by a --config FMU -----------------------------------------

@pytest.fixture(scope="module")
def lan_fmu(tmp_path_factory, node) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("lan")
    config = tmp / "lan.toml"
    config.write_text(f"""
[fmu]
model_name = "UdpNode"
guest_image = "{node}"

[[ethernet]]
name = "lan"
nic = "lan9118"
mac = "02:00:00:00:00:02"
""")
    out = tmp / "UdpNode.fmu"
    subprocess.run([sys.executable, str(REPO / "build_fmu.py"), "--config",
                    str(config), "--output", str(out)], check=True,
                   capture_output=True, timeout=600)
    return out, Path(extract(str(out), str(tmp / "unzipped")))


def test_config_ports_are_declared_and_work(lan_fmu):
    path, unzipped = lan_fmu
    md = read_model_description(str(path))
    variables = {v.name: v for v in md.modelVariables}
    assert variables["lan_nic"].start == "lan9118"
    assert variables["lan_mac"].start == "02:00:00:00:00:02"
    assert variables["lan_in"].causality == "input"
    assert variables["lan_out"].causality == "output"
    assert not any(name.startswith("eth0") for name in variables)
    inst = instance(path, unzipped)
    inst.start()
    ask = arp(1, PEER_MAC, PEER_IP, b"\0" * 6, NODE_IP)
    for k in range(4):
        if k == 3:
            inst.set("lan_in", encode([Frame(3 * MS + 1000, ask)]))
        inst.slave.doStep(k * STEP, STEP)
    reply, = decode(inst.get("lan_out"))
    close(inst)
    assert parse(reply.data)["sha"] == bytes.fromhex("020000000002")
    assert zipfile.ZipFile(path).read("resources/ethernet.json")


@pytest.mark.parametrize("table,error", [
    ('name = "lan"\nnic = "ne2000"', "nic 'ne2000' is not one of"),
    ('name = "lan"\nmac = "ff:ff:ff:ff:ff:ff"', "multicast"),
    ('name = "9lan"', "name '9lan' must match"),
    ('name = "console"', "already used"),
    ('name = "lan"\nspeed = 10', "unknown keys ['speed']"),
])
def test_bad_ethernet_tables_are_refused(tmp_path, node, table, error):
    config = tmp_path / "bad.toml"
    config.write_text(f'[fmu]\nmodel_name = "Bad"\nguest_image = "{node}"\n\n'
                      f"[[ethernet]]\n{table}\n")
    done = subprocess.run([sys.executable, str(REPO / "build_fmu.py"), "--config",
                           str(config), "--output", str(tmp_path / "Bad.fmu")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    assert error in done.stderr, done.stderr
    assert not (tmp_path / "Bad.fmu").exists()
