"""Two firmware ECUs talking through the network FMU, in an SSP, under real
masters: our Jacobi master (qemufmu.cosim, what `qemu-fmu sweep` runs) and
libcosimpy.  The system is examples/network's net_udp_pair.ssp: the UDP
node firmware as 10.0.0.3 asking 10.0.0.2 every 10 ms, each on its
mps2-an385's LAN9118, through a 5 ms, 100 Mbit/s link.

What it shows (docs/network.md, "Exactness"): with the delay covering the
master's latency (two communication steps under Jacobi), each frame the
guest sent at t reaches the other guest at exactly t + delay +
serialization time; with a shorter delay frames arrive late, at the start
of the step the master hands them over in, and are counted; runs and
masters give byte-identical consoles and captures.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import REPO, checked
from qemufmu import cosim
from qemufmu.cases import Case
from qemufmu.network.link import serialization_ns
from qemufmu.system import read_system

SSP = REPO / "dist" / "net_udp_pair.ssp"
STEP = 1e-3
DELAY_NS, BIT_RATE = 5_000_000, 100e6     # examples/network/build.py's LINK
COUNTERS = tuple(f"{ecu}.eth0_{c}" for ecu in ("client", "node")
                 for c in ("frames_out", "frames_in", "late", "dropped"))


@pytest.fixture(scope="module")
def ssp(fmus, guests) -> Path:
    """dist/net_udp_pair.ssp, checked to match its sources."""
    checked(guests, "UdpNode.fmu")      # run alone below
    return checked(guests, SSP.name)


def starts(tmp: Path, **extra) -> tuple:
    tmp.mkdir(parents=True, exist_ok=True)
    values = {"net.capture_file": str(tmp / "net.pcapng"),
              "client.console_file": str(tmp / "client.txt"),
              "node.console_file": str(tmp / "node.txt"), **extra}
    return tuple(values.items())


def run_cosim(ssp: Path, tmp: Path, stop: float = 0.1, **extra) -> cosim.CaseResult:
    system = read_system(ssp)
    result = cosim.run_case(system, ssp, cosim.digest_of(ssp),
                            Case("c", starts(tmp, **extra)),
                            cosim.Settings(stop, STEP, COUNTERS))
    assert result.status == cosim.STATUS_OK, result.message
    return result


def capture(path: Path) -> list[tuple[int, int, int]]:
    """(time in ns, interface, frame length) of every record, via tshark."""
    out = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch",
         "-e", "frame.interface_id", "-e", "frame.len"],
        capture_output=True, text=True, timeout=60, check=True).stdout
    rows = []
    for line in out.splitlines():
        t, iface, length = line.split("\t")
        seconds, _, frac = t.partition(".")
        rows.append((int(seconds) * 10**9 + int(frac.ljust(9, "0")[:9]),
                     int(iface), int(length)))
    return rows


def test_every_frame_arrives_exactly_delay_plus_serialization_later(ssp, tmp_path):
    result = run_cosim(ssp, tmp_path)
    last = {k: v[-1] for k, v in result.values.items()}
    # 10 requests and 10 answers (ARP included), none late, none lost.
    assert last["client.eth0_frames_out"] == last["node.eth0_frames_in"] == 10
    assert last["node.eth0_frames_out"] == 10
    assert last["client.eth0_late"] == last["node.eth0_late"] == 0
    # Each frame appears twice: arriving on its sender's port at its send
    # time, and leaving on the other port at its delivery time.
    records = capture(tmp_path / "net.pcapng")
    by_port = {p: [r for r in records if r[1] == p] for p in (0, 1)}
    assert len(records) == 40
    for port in (0, 1):
        sends = [r for r in by_port[port] if not _is_delivery(r, by_port[1 - port])]
        assert len(sends) == 10, (port, sends)
        for t_in, _, length in sends:
            t_out = t_in + DELAY_NS + serialization_ns(length, BIT_RATE)
            assert (t_out, 1 - port, length) in by_port[1 - port], (t_in, length)
    # The guest really got each frame then: the node answers a request a
    # fixed 1.3 us or so of its own work after the frame reached its NIC
    # (the capture alone would not tell when the ECU handed it over).
    deliveries = sorted(r[0] for r in by_port[1] if _is_delivery(r, by_port[0]))
    answers = sorted(r[0] for r in by_port[1] if not _is_delivery(r, by_port[0]))
    latencies = [a - d for d, a in zip(deliveries, answers, strict=True)]
    assert all(0 < lat < 100_000 for lat in latencies), latencies
    # two ARP answers, then the UDP echoes, each as prompt as the last
    assert len(latencies) == 10 and len(set(latencies[2:])) == 1, latencies
    # The client's console: an answer to each request after the first
    # (which waited for ARP), each 10 ms after it was asked.
    console = (tmp_path / "client.txt").read_text()
    assert "t=30 reply 10.0.0.2:7 seq=2 t=20" in console


def _is_delivery(record: tuple[int, int, int], other: list) -> bool:
    """Whether a record on one port is the delivery of a frame the other
    port received delay + serialization earlier."""
    t, _, length = record
    return (t - DELAY_NS - serialization_ns(length, BIT_RATE), 1 - record[1],
            length) in other


def test_a_delay_shorter_than_the_masters_latency_makes_frames_late(ssp, tmp_path):
    """0.5 ms against Jacobi's two 1 ms steps: frames reach the receiving
    FMU after their time; it delivers them at its next step's start and
    counts them; the conversation goes on."""
    result = run_cosim(ssp, tmp_path, **{"net.delay": 0.0005})
    last = {k: v[-1] for k, v in result.values.items()}
    assert last["client.eth0_late"] > 0 and last["node.eth0_late"] > 0
    assert last["client.eth0_late"] == last["client.eth0_frames_in"]
    assert "reply 10.0.0.2:7 seq=" in (tmp_path / "client.txt").read_text()


def run_libcosim(ssp: Path, tmp: Path, stop: float = 0.1) -> None:
    from libcosimpy.CosimExecution import CosimExecution
    from libcosimpy.CosimLogging import CosimLogLevel, log_output_level

    log_output_level(CosimLogLevel.ERROR)
    execution = CosimExecution.from_ssp_file(str(ssp), step_size=round(STEP * 1e9))
    index = {i.name.decode(): i.index for i in execution.slave_infos()}
    refs = {name: {v.name.decode(): v.reference
                   for v in execution.slave_variables(i)}
            for name, i in index.items()}
    for column, value in starts(tmp):
        slave, var = column.split(".")
        execution.string_initial_value(index[slave], refs[slave][var], value)
    assert execution.simulate_until(round(stop * 1e9))
    del execution


def test_runs_and_masters_give_byte_identical_consoles_and_captures(ssp, tmp_path):
    run_cosim(ssp, tmp_path / "a")
    run_cosim(ssp, tmp_path / "b")
    run_libcosim(ssp, tmp_path / "c")
    files = ("net.pcapng", "client.txt", "node.txt")
    first = {f: (tmp_path / "a" / f).read_bytes() for f in files}
    assert all(first.values())
    for other in ("b", "c"):
        assert {f: (tmp_path / other / f).read_bytes() for f in files} == first, other


def test_a_node_without_signals_takes_no_console_line_for_one(ssp, guests,
                                                              tmp_path):
    """UdpNode declares no signals: console lines such as 't=25 echo ...'
    are console, not malformed signal lines to warn about.  (The line
    echo firmware prints back the line it is given.)"""
    from fmpy import simulate_fmu

    said: list[str] = []
    simulate_fmu(REPO / "dist" / "UdpNode.fmu", stop_time=0.02, output_interval=1e-3,
                 start_values={"guest_image": str(guests / "arm-lineecho.elf"),
                               "console_in": "t=25 echo 10.0.0.3:5001\n"},
                 logger=lambda *args: said.append(args[-1].decode()),
                 debug_logging=True)
    assert [m for m in said if "t=25 echo 10.0.0.3:5001" in m], said
    assert not [m for m in said if "signal" in m], said


def test_a_sweep_over_delay_and_loss(ssp):
    """`qemu-fmu sweep`'s engine runs network cases (in-process here; the
    Dask path is test_sweep.py's): the delay moves the answers, loss with a
    seed drops the same frames every time."""
    import pandas as pd

    from qemufmu import sweep

    cases = pd.DataFrame({"case": ["d2ms", "d5ms", "lossy", "lossy-again"],
                          "net.delay": [0.002, 0.005, 0.005, 0.005],
                          "net.loss": [0.0, 0.0, 0.3, 0.3],
                          "net.seed": [1, 1, 7, 7]})
    table = sweep.run(ssp, cases, stop_time=0.1, step=STEP, in_process=True,
                      progress=False,
                      record=["client.eth0_frames_in", "client.eth0_late",
                              "net.lost", "client.console"])
    last = table.groupby("case").last()
    assert {r["status"] for r in table.attrs["summary"]} == {"ok"}
    assert last.loc["d2ms", "client.eth0_frames_in"] == 10   # 2 ms = 2 steps
    assert last.loc["d2ms", "client.eth0_late"] == 0
    assert last.loc["d5ms", "client.eth0_frames_in"] == 9    # one still in flight
    assert last.loc["lossy", "net.lost"] > 0
    def rows(case: str):
        return table[table.case == case].drop(columns="case").reset_index(drop=True)

    assert rows("lossy").equals(rows("lossy-again"))


def test_a_c_master_runs_the_system_to_the_same_bytes(ssp, tmp_path):
    """Our C master (tests/c_hosts/fmi2_host.c, loading like FMI Library,
    no Python of its own) steps the three FMUs in Jacobi order and copies
    the port strings: the same consoles and capture as our Python master."""
    import zipfile

    from c_host import compile_host, run_host, start, unpack

    host = compile_host("fmi2_host.c", tmp_path / "fmi2_host", "-ldl")
    units = {}
    with zipfile.ZipFile(ssp) as z:
        for comp, name in (("client", "UdpPair"), ("node", "UdpNode"),
                           ("net", "Network")):
            path = tmp_path / f"{name}.fmu"
            path.write_bytes(z.read(f"resources/{name}.fmu"))
            units[comp] = unpack(path, tmp_path / comp)
    out = tmp_path / "c"
    files = dict(starts(out))
    script = start(units["net"], "net", 0, delay=("r", "0.005"),
                   bit_rate=("r", "100e6"),
                   capture_file=("s", files["net.capture_file"]))
    for comp in ("client", "node"):
        script += start(units[comp], comp, 0,
                        console_file=("s", files[f"{comp}.console_file"]))
    for a, va, b, vb in (("client", "eth0_out", "net", "port0_in"),
                         ("net", "port0_out", "client", "eth0_in"),
                         ("node", "eth0_out", "net", "port1_in"),
                         ("net", "port1_out", "node", "eth0_in")):
        script += f"wire {a} {units[a].vrs[va]} {b} {units[b].vrs[vb]}\n"
    script += "cosim - 0 0.001 100\n"
    script += "".join(f"term {c}\nfree {c}\n" for c in ("client", "node", "net"))
    done = run_host(host, script, tmp_path, timeout=120)
    assert "cosim steps=100 -> 0\n" in done.stdout, done.stdout + done.stderr
    run_cosim(ssp, tmp_path / "py")
    for name in ("net.pcapng", "client.txt", "node.txt"):
        assert (out / name).read_bytes() == (tmp_path / "py" / name).read_bytes(), name
