"""The network FMU (dist/Network.fmu) driven with real Ethernet frames.

fmpy's FMU2Slave (through fmi_helpers.Instance) runs the FMU; the frames
are Ethernet II frames built with struct; the capture is read back by
tshark.  No QEMU is involved: the network FMU only sees the port encoding
(qemufmu.ethernet), which is what qemu.fmu's ports carry.

Expected times are worked out in the tests from the timing model of
docs/network.md: delivery = max(send, port busy until) + serialization +
delay, serialization = (max(len, 60) + 24) * 8 / bit_rate.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import zipfile
from decimal import Decimal
from pathlib import Path

import pytest
from fmpy.fmi1 import FMICallException
from fmpy.fmi2 import fmi2Error

from conftest import REPO, built, fail_if_stale
from fmi_helpers import Instance
from qemufmu.ethernet import Frame, decode, encode

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
MAC_C = bytes.fromhex("020000000003")
BROADCAST = b"\xff" * 6
H = 100e-6          # communication step: 100 us
MS = 1_000_000      # ns


def eth(dst: bytes, src: bytes, size: int, tag: int = 0) -> bytes:
    """An Ethernet II frame (local experimental EtherType) of ``size`` bytes,
    its payload starting with ``tag`` so frames can be told apart."""
    import struct

    head = struct.pack("!6s6sHI", dst, src, 0x88B5, tag)
    return head + bytes(size - len(head))


def ser_ns(size: int, bit_rate: float) -> int:
    """Serialization time by the documented rule, independently of the FMU."""
    return round((max(size, 60) + 24) * 8 * 10**9 / bit_rate)


# -- fixtures ------------------------------------------------------------


def _stale_network(fmu: Path) -> list[str]:
    import dpkt

    problems = []
    with zipfile.ZipFile(fmu) as z:
        names = set(z.namelist())
        src = REPO / "fmu_src"
        for path in [src / "network_slave.py",
                     *sorted((src / "qemufmu").rglob("*.py"))]:
            if "__pycache__" in path.parts:
                continue
            name = "resources/" + path.relative_to(src).as_posix()
            if name not in names or z.read(name) != path.read_bytes():
                problems.append(f"{name} differs from fmu_src")
        init = "resources/dpkt/__init__.py"
        if init not in names or z.read(init) != Path(dpkt.__file__).read_bytes():
            problems.append("its bundled dpkt is not the installed one")
    return problems


@pytest.fixture(scope="session")
def network_fmu() -> Path:
    """dist/Network.fmu (make fmu), checked to match its sources."""
    path = built(REPO / "dist" / "Network.fmu", "make fmu")
    fail_if_stale(_stale_network(path), "make fmu")
    return path


def _extract(fmu: Path, into: Path) -> Path:
    from fmpy import extract
    return Path(extract(str(fmu), str(into)))


@pytest.fixture(scope="session")
def network_dir(network_fmu, tmp_path_factory) -> Path:
    return _extract(network_fmu, tmp_path_factory.mktemp("network"))


@pytest.fixture(scope="session")
def switch3(tmp_path_factory) -> tuple[Path, Path]:
    """A 3-port network FMU, built with build_fmu.py --network --ports 3."""
    out = tmp_path_factory.mktemp("switch3") / "Network.fmu"
    subprocess.run([sys.executable, str(REPO / "build_fmu.py"),
                    "--network", "--ports", "3", "-o", str(out)],
                   check=True, timeout=120, capture_output=True)
    return out, _extract(out, out.parent / "unzipped")


class Net:
    """One network FMU instance stepping with frames per port."""

    def __init__(self, fmu: Path, unzipdir: Path, name: str = "net",
                 **params: object) -> None:
        self.inst = Instance(fmu, unzipdir, name=name, **params)
        self.ports = sum(1 for v in self.inst.vars if v.endswith("_in"))
        self.k = 0
        self.closed = False

    def start(self) -> Net:
        self.inst.start()
        return self

    def step(self, inputs: dict[int, list[Frame]] | None = None
             ) -> list[list[Frame]]:
        """One step of H; the frames each port delivers."""
        for port in range(self.ports):
            self.inst.set(f"port{port}_in", encode((inputs or {}).get(port, [])))
        self.inst.slave.doStep(self.k * H, H)
        self.k += 1
        return [decode(self.inst.get(f"port{p}_out")) for p in range(self.ports)]

    def raw_outputs(self) -> list[str]:
        return [self.inst.get(f"port{p}_out") for p in range(self.ports)]

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.inst.close()


@pytest.fixture
def nets():
    """Closes every Net a test opens, whatever happens to the test."""
    opened: list[Net] = []

    def make(fmu: Path, unzipdir: Path, **params: object) -> Net:
        net = Net(fmu, unzipdir, name=f"net{len(opened)}", **params)
        opened.append(net)
        return net

    yield make
    for net in opened:
        try:
            net.close()
        except FMICallException:
            pass


# -- the model description -------------------------------------------------


def test_fmpy_validate_passes(network_fmu):
    done = subprocess.run([str(Path(sys.executable).parent / "fmpy"), "validate",
                           str(network_fmu)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No problems found" in done.stdout


def test_ports_are_fixed_at_build_time(network_fmu, switch3):
    from fmpy import read_model_description

    def names(fmu):
        return {v.name for v in read_model_description(str(fmu)).modelVariables}

    two, three = names(network_fmu), names(switch3[0])
    assert {"port0_in", "port1_out", "port1_dropped"} <= two
    assert "port2_in" not in two
    assert {"port2_in", "port2_out", "port2_dropped"} <= three
    assert {"delay", "bit_rate", "loss", "seed", "queue_limit", "learning",
            "capture_file", "frames", "lost"} <= two


# -- timing ------------------------------------------------------------------


def test_delivery_is_send_time_plus_queueing_serialization_and_delay(
        network_fmu, network_dir, nets):
    rate, delay = 100e6, 1e-3
    net = nets(network_fmu, network_dir, delay=delay, bit_rate=rate,
               queue_limit=0).start()
    d = round(delay * 1e9)
    f1 = eth(MAC_B, MAC_A, 100, 1)
    f2 = eth(MAC_B, MAC_A, 1000, 2)
    f3 = eth(MAC_B, MAC_A, 42, 3)           # padded to 60 on the wire
    back = eth(MAC_A, MAC_B, 200, 4)
    out = net.step({0: [Frame(10_000, f1), Frame(10_000, f2), Frame(20_000, f3)],
                    1: [Frame(15_000, back)]})
    end1 = 10_000 + ser_ns(100, rate)
    end2 = end1 + ser_ns(1000, rate)        # waits for f1
    end3 = end2 + ser_ns(42, rate)          # waits for f2, though sent later
    assert out[1] == [Frame(end1 + d, f1), Frame(end2 + d, f2),
                      Frame(end3 + d, f3)]
    # The other direction has its own queue: no waiting behind f1..f3.
    assert out[0] == [Frame(15_000 + ser_ns(200, rate) + d, back)]
    assert (end1, end2, end3) == (19_920, 101_840, 108_560)   # the rule, worked

    # Each output carries each frame once: the next step's outputs are new.
    assert net.step() == [[], []]
    # Once port 1 has sent everything, a frame waits for nobody.
    later = eth(MAC_B, MAC_A, 64, 5)
    out = net.step({0: [Frame(250_000, later)]})
    assert out == [[], [Frame(250_000 + ser_ns(64, rate) + d, later)]]
    assert net.inst.get("frames") == 5 and net.inst.get("lost") == 0


def test_without_bit_rate_only_the_delay_counts(network_fmu, network_dir, nets):
    net = nets(network_fmu, network_dir, delay=250e-6).start()
    frames = [Frame(1_000 + i, eth(MAC_B, MAC_A, 1500, i)) for i in range(3)]
    out = net.step({0: frames})
    assert out[1] == [Frame(f.time_ns + 250_000, f.data) for f in frames]


# -- loss ----------------------------------------------------------------------


def _lossy_run(fmu, unzipdir, nets, seed: int) -> tuple[list, int, int]:
    net = nets(fmu, unzipdir, loss=0.5, seed=seed, delay=1e-3).start()
    delivered = []
    for k in range(20):
        frames = [Frame(k * 100_000 + i * 1_000, eth(MAC_B, MAC_A, 60, k * 10 + i))
                  for i in range(10)]
        delivered.append(net.step({0: frames})[1])
    return delivered, net.inst.get("lost"), net.inst.get("frames")


def test_loss_is_repeatable_with_a_seed_and_differs_with_another(
        network_fmu, network_dir, nets):
    first, lost, frames = _lossy_run(network_fmu, network_dir, nets, seed=1)
    again, lost_again, _ = _lossy_run(network_fmu, network_dir, nets, seed=1)
    other, lost_other, _ = _lossy_run(network_fmu, network_dir, nets, seed=2)
    assert first == again and lost == lost_again
    assert first != other
    assert lost + frames == 200
    assert sum(len(s) for s in first) == frames
    assert 50 < lost < 150 and 50 < lost_other < 150     # p = 0.5 of 200


# -- queue limit -----------------------------------------------------------------


def test_a_full_output_queue_drops_and_counts(network_fmu, network_dir, nets):
    rate = 1e6                                    # 1000 bytes: 8.192 ms
    net = nets(network_fmu, network_dir, bit_rate=rate, queue_limit=3).start()
    burst = [Frame(1_000, eth(MAC_B, MAC_A, 1000, i)) for i in range(10)]
    out = net.step({0: burst})
    assert [f.data for f in out[1]] == [f.data for f in burst[:3]]
    assert net.inst.get("port1_dropped") == 7 and net.inst.get("port0_dropped") == 0
    assert net.inst.get("frames") == 3
    # When the first has been sent, one place is free, not two.
    ser = ser_ns(1000, rate)
    free_at = 1_000 + ser
    out = net.step({0: [Frame(free_at, eth(MAC_B, MAC_A, 1000, 20)),
                        Frame(free_at, eth(MAC_B, MAC_A, 1000, 21))]})
    assert [f.time_ns for f in out[1]] == [1_000 + 4 * ser]
    assert net.inst.get("port1_dropped") == 8


# -- forwarding ----------------------------------------------------------------


def test_a_learning_switch_forwards_to_the_learned_port_only(switch3, nets):
    fmu, unzipdir = switch3
    net = nets(fmu, unzipdir, learning=True, delay=1e-3).start()
    a_to_b = eth(MAC_B, MAC_A, 60, 1)
    out = net.step({0: [Frame(1_000, a_to_b)]})           # B unknown: flooded
    assert [len(p) for p in out] == [0, 1, 1]
    b_to_a = eth(MAC_A, MAC_B, 60, 2)
    out = net.step({1: [Frame(101_000, b_to_a)]})         # A learned on port 0
    assert [len(p) for p in out] == [1, 0, 0] and out[0][0].data == b_to_a
    out = net.step({0: [Frame(201_000, a_to_b)]})         # B learned on port 1
    assert [len(p) for p in out] == [0, 1, 0] and out[1][0].data == a_to_b
    out = net.step({2: [Frame(301_000, eth(BROADCAST, MAC_C, 60, 3))]})
    assert [len(p) for p in out] == [1, 1, 0]             # broadcast: flooded
    out = net.step({0: [Frame(401_000, eth(MAC_C, MAC_A, 60, 4))]})
    assert [len(p) for p in out] == [0, 0, 1]             # C learned from it


def test_a_hub_sends_every_frame_to_every_other_port(switch3, nets):
    fmu, unzipdir = switch3
    net = nets(fmu, unzipdir, learning=False).start()
    net.step({1: [Frame(1_000, eth(MAC_A, MAC_B, 60, 1))]})
    out = net.step({0: [Frame(101_000, eth(MAC_B, MAC_A, 60, 2))]})
    assert [len(p) for p in out] == [0, 1, 1]


# -- capture ---------------------------------------------------------------------


def tshark(path: Path) -> list[tuple[Decimal, int, int, bytes]]:
    """(time, interface, direction, frame) of every packet, as tshark reads them."""
    done = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch",
         "-e", "frame.interface_id", "-e", "frame.packet_flags_direction",
         "-e", "data.data"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = []
    for line in done.stdout.splitlines():
        time, iface, direction, *payload = line.split("\t")
        rows.append((Decimal(time), int(iface), int(direction, 0),
                     bytes.fromhex(payload[0]) if payload and payload[0] else b""))
    return rows


def test_capture_shows_frames_at_their_simulation_times_and_ports(
        network_fmu, network_dir, nets, tmp_path):
    rate, d = 10e6, 500_000
    pcap = tmp_path / "net.pcapng"
    net = nets(network_fmu, network_dir, delay=d * 1e-9, bit_rate=rate,
               capture_file=str(pcap)).start()
    f1, f2 = eth(MAC_B, MAC_A, 100, 1), eth(MAC_A, MAC_B, 300, 2)
    net.step({0: [Frame(12_345, f1)]})
    net.step({1: [Frame(123_457, f2)]})
    for _ in range(10):
        net.step()
    net.close()
    ns = Decimal("1e-9")
    at1 = 12_345 + ser_ns(100, rate) + d
    at2 = 123_457 + ser_ns(300, rate) + d
    # Payload after the Ethernet header: what tshark shows as data.data.
    assert tshark(pcap) == [
        (12_345 * ns, 0, 1, f1[14:]),        # in on port 0 when A sent it
        (123_457 * ns, 1, 1, f2[14:]),       # in on port 1 when B sent it
        (at1 * ns, 1, 2, f1[14:]),           # out on port 1 when B gets it
        (at2 * ns, 0, 2, f2[14:]),           # out on port 0 when A gets it
    ]
    names = subprocess.run(["tshark", "-r", str(pcap), "-T", "fields",
                            "-e", "frame.interface_name"], capture_output=True,
                           text=True, timeout=60).stdout.split()
    assert names == ["port0", "port1", "port1", "port0"]


def test_capture_records_lost_frames_inbound_only(network_fmu, network_dir, nets,
                                                  tmp_path):
    pcap = tmp_path / "lossy.pcapng"
    net = nets(network_fmu, network_dir, loss=0.5, seed=7, delay=1e-3,
               capture_file=str(pcap)).start()
    frames = [Frame(1_000 + i, eth(MAC_B, MAC_A, 60, i)) for i in range(40)]
    delivered = net.step({0: frames})[1]
    lost = net.inst.get("lost")
    net.close()
    rows = tshark(pcap)
    assert sum(1 for r in rows if r[2] == 1) == 40
    assert [r[3] for r in rows if r[2] == 2] == [f.data[14:] for f in delivered]
    assert len(delivered) == 40 - lost and 0 < lost < 40


# -- FMU state -----------------------------------------------------------------

# The 3-port switch, so that the learned table shows (a 2-port switch floods
# to the one other port it would forward to).  At 10 Mbit/s port 1 gets
# ~500 us of frames every 300 us: a queue builds up, frames wait behind
# earlier ones and some are dropped, so a state holds frames in flight.
RATE = 10e6


def traffic(k: int) -> dict[int, list[Frame]]:
    """Frames for step k: bursts both ways, every third step."""
    if k % 3:
        return {}
    t = int(k * H * 1e9) + 5_000
    return {0: [Frame(t, eth(MAC_B, MAC_A, 500, k)),
                Frame(t + 1, eth(BROADCAST, MAC_A, 80, k))],
            1: [Frame(t + 2, eth(MAC_A, MAC_B, 900, k))],
            2: [Frame(t + 3, eth(MAC_A, MAC_C, 60, k))] if k % 9 == 0 else []}


def other_traffic(k: int) -> dict[int, list[Frame]]:
    t = int(k * H * 1e9) + 7_000
    return {0: [Frame(t, eth(MAC_B, MAC_C, 1400, 1000 + k))]}


def state_params(pcap: Path) -> dict:
    return {"delay": 300e-6, "bit_rate": RATE, "loss": 0.3, "seed": 11,
            "queue_limit": 4, "learning": True, "capture_file": str(pcap)}


def run(net: Net, steps: range, inputs) -> list[list[str]]:
    outs = []
    for k in steps:
        net.step(inputs(k))
        outs.append(net.raw_outputs() + [str(net.inst.get("lost")),
                                          str(net.inst.get("frames")),
                                          str(net.inst.get("port1_dropped"))])
    return outs


def test_a_state_with_frames_in_flight_restores_and_continues_identically(
        switch3, nets, tmp_path):
    fmu, unzipdir = switch3
    ref_pcap, pcap = tmp_path / "ref.pcapng", tmp_path / "rolled.pcapng"
    ref = nets(fmu, unzipdir, **state_params(ref_pcap)).start()
    ref_out = run(ref, range(40), traffic)
    ref.close()

    net = nets(fmu, unzipdir, **state_params(pcap)).start()
    assert run(net, range(20), traffic) == ref_out[:20]
    state = net.inst.slave.getFMUstate()
    size_at_state = pcap.stat().st_size
    # A different future: other frames, other losses, other queues.
    diverged = run(net, range(20, 40), other_traffic)
    assert diverged != ref_out[20:]
    assert pcap.stat().st_size > size_at_state
    net.inst.slave.setFMUstate(state)
    net.k = 20
    assert pcap.stat().st_size == size_at_state          # cut back
    assert run(net, range(20, 40), traffic) == ref_out[20:]
    net.inst.slave.freeFMUstate(state)
    net.close()
    assert pcap.read_bytes() == ref_pcap.read_bytes()
    assert any(outs[1] for outs in ref_out)               # frames did flow
    assert 0 < int(ref_out[-1][-1]) and 0 < int(ref_out[-1][-3])  # dropped, lost


def test_a_serialized_state_restores_into_a_fresh_instance(
        switch3, nets, tmp_path):
    fmu, unzipdir = switch3
    ref_pcap, pcap = tmp_path / "ref.pcapng", tmp_path / "moved.pcapng"
    ref = nets(fmu, unzipdir, **state_params(ref_pcap)).start()
    ref_out = run(ref, range(30), traffic)
    ref.close()

    first = nets(fmu, unzipdir, **state_params(pcap)).start()
    run(first, range(15), traffic)
    state = first.inst.slave.getFMUstate()
    blob = first.inst.slave.serializeFMUstate(state)
    first.inst.slave.freeFMUstate(state)
    run(first, range(15, 30), other_traffic)
    first.close()

    fresh = nets(fmu, unzipdir).start()         # no capture, defaults
    state = fresh.inst.slave.deSerializeFMUstate(blob)
    fresh.inst.slave.setFMUstate(state)
    fresh.inst.slave.freeFMUstate(state)
    fresh.k = 15
    assert run(fresh, range(15, 30), traffic) == ref_out[15:]
    fresh.close()
    assert pcap.read_bytes() == ref_pcap.read_bytes()


def test_a_state_whose_capture_file_is_gone_starts_the_capture_anew(
        network_fmu, network_dir, nets, tmp_path):
    pcap = tmp_path / "gone.pcapng"
    first = nets(network_fmu, network_dir, delay=1e-3,
                 capture_file=str(pcap)).start()
    first.step({0: [Frame(1_000, eth(MAC_B, MAC_A, 60, 1))]})
    state = first.inst.slave.getFMUstate()
    blob = first.inst.slave.serializeFMUstate(state)
    first.inst.slave.freeFMUstate(state)
    first.close()
    pcap.unlink()

    fresh = nets(network_fmu, network_dir).start()
    state = fresh.inst.slave.deSerializeFMUstate(blob)
    fresh.inst.slave.setFMUstate(state)           # a warning, not an error
    fresh.inst.slave.freeFMUstate(state)
    assert "starts anew" in fresh.inst.log_text()
    fresh.k = 1
    fresh.step({1: [Frame(101_000, eth(MAC_A, MAC_B, 60, 2))]})
    fresh.close()
    # What was in flight when the state was taken is still recorded: the
    # first frame's records had not been written yet (its send time was
    # not before that step's start).
    rows = [(r[0], r[1], r[2]) for r in tshark(pcap)]
    assert rows == [(Decimal("0.000001000"), 0, 1),
                    (Decimal("0.000101000"), 1, 1),
                    (Decimal("0.001001000"), 1, 2),
                    (Decimal("0.001101000"), 0, 2)]


# -- bad input -------------------------------------------------------------------


@pytest.mark.parametrize("value, why", [
    ("12 not-base64!\n", "not base64"),
    ("frame\n", "expected '<time_ns> <base64>'"),
    (f"5 {base64.b64encode(bytes(10)).decode()}\n", "a frame of 10 bytes"),
    (encode([Frame(9, eth(MAC_A, MAC_B, 60)), Frame(3, eth(MAC_A, MAC_B, 60))]),
     "before the previous line"),
])
def test_an_undecodable_port_value_is_an_error_naming_the_port(
        network_fmu, network_dir, nets, value, why):
    net = nets(network_fmu, network_dir).start()
    net.inst.set("port1_in", value)
    with pytest.raises(FMICallException) as failure:
        net.inst.slave.doStep(0.0, H)
    assert failure.value.status == fmi2Error
    assert "port1_in" in net.inst.log_text() and why in net.inst.log_text()
    # The step was not taken: with a good value the same step runs.
    good = eth(MAC_B, MAC_A, 60)
    net.inst.set("port1_in", encode([Frame(10, good)]))
    net.inst.slave.doStep(0.0, H)
    assert decode(net.inst.get("port0_out")) == [Frame(10, good)]


@pytest.mark.parametrize("name, value", [("loss", 1.5), ("delay", -1.0),
                                         ("bit_rate", float("inf")),
                                         ("queue_limit", -2)])
def test_a_bad_parameter_is_an_error_naming_it(network_fmu, network_dir, nets,
                                               name, value):
    net = nets(network_fmu, network_dir, **{name: value})
    with pytest.raises(FMICallException) as failure:
        net.start()
    assert failure.value.status == fmi2Error
    assert name in net.inst.log_text()


# -- outside fmpy: our C master ----------------------------------------------


def test_runs_in_the_c_master_with_its_bundled_dpkt(network_fmu, fmi2_host,
                                                    tmp_path):
    from c_host import run_host, start, unpack, values

    u = unpack(network_fmu, tmp_path / "unpacked")
    pcap = tmp_path / "c.pcapng"
    frame = eth(MAC_B, MAC_A, 100, 1)
    script = (start(u, "N", delay=("r", "0.001"), bit_rate=("r", "100000000"),
                    capture_file=("s", str(pcap)))
              + f"set N s {u.vrs['port0_in']} {encode([Frame(12_345, frame)])}"
              + f"step N 0 {H!r}\n"
              + f"get N s {u.vrs['port1_out']}\n"
              + f"get N i {u.vrs['frames']}\n"
              + f"step N {H!r} {H!r}\nget N s {u.vrs['port1_out']}\n"
              + "term N\nfree N\n")
    out = run_host(fmi2_host, script, tmp_path).stdout
    at = 12_345 + ser_ns(100, 100e6) + MS
    got = values(out, "N", u.vrs["port1_out"])
    assert got[0] == encode([Frame(at, frame)]).rstrip("\n")
    assert values(out, "N", u.vrs["frames"]) == ["1"]
    assert out.count("step N -> 0\n") == 2
    ns = Decimal("1e-9")
    assert [(r[0], r[1], r[2]) for r in tshark(pcap)] == [(12_345 * ns, 0, 1),
                                                         (at * ns, 1, 2)]
