"""Two Linux computers ping each other through the network FMU, in an SSP
(examples/network's net_ping.ssp: e1000 NICs, a 5 ms, 100 Mbit/s link),
under two real masters: our Jacobi master (qemufmu.cosim) twice and
libcosimpy once.  Consoles and captures must be byte-identical, and the
capture, read by tshark, must show every echo request and reply arriving
exactly delay + serialization time after it was sent.

Each run boots two kernels (about 15-25 s of wall time), so each is its own
test, kept for the comparison at the end.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, checked
from qemufmu import cosim
from qemufmu.cases import Case
from qemufmu.network.link import serialization_ns
from qemufmu.system import read_system

SSP = REPO / "dist" / "net_ping.ssp"
STEP, STOP = 1e-3, 7.0
DELAY_NS, BIT_RATE = 5_000_000, 100e6
FILES = ("net.pcapng", "server.txt", "client.txt")
RUNS: dict[str, Path] = {}


@pytest.fixture(scope="module")
def ssp(fmus, guests) -> Path:
    """dist/net_ping.ssp, checked to match its sources."""
    return checked(guests, SSP.name)


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("net_ping")


def starts(tmp: Path) -> list[tuple[str, str]]:
    tmp.mkdir()
    return [("net.capture_file", str(tmp / "net.pcapng")),
            ("server.console_file", str(tmp / "server.txt")),
            ("client.console_file", str(tmp / "client.txt"))]


@pytest.mark.parametrize("run", ["cosim-1", "cosim-2"])
def test_our_master_runs_the_ping_to_the_pingers_power_off(ssp, out, run):
    tmp = out / run
    settings = cosim.Settings(STOP, STEP, ("client.eth0_late", "server.eth0_late"),
                              end_on_discard=True)
    result = cosim.run_case(read_system(ssp), ssp, cosim.digest_of(ssp),
                            Case(run, tuple(starts(tmp))), settings)
    assert result.status == cosim.STATUS_OK, result.message
    assert "client: " in result.message and "powered off" in result.message
    assert result.time[-1] < STOP
    assert result.values["client.eth0_late"][-1] == 0
    assert result.values["server.eth0_late"][-1] == 0
    console = (tmp / "client.txt").read_text()
    assert "3 packets transmitted, 3 packets received, 0% packet loss" in console
    RUNS[run] = tmp


def test_libcosim_runs_the_same_system(ssp, out):
    from libcosimpy.CosimExecution import CosimExecution
    from libcosimpy.CosimLogging import CosimLogLevel, log_output_level

    tmp = out / "libcosim"
    log_output_level(CosimLogLevel.ERROR)
    execution = CosimExecution.from_ssp_file(str(ssp), step_size=round(STEP * 1e9))
    index = {i.name.decode(): i.index for i in execution.slave_infos()}
    refs = {name: {v.name.decode(): v.reference for v in execution.slave_variables(i)}
            for name, i in index.items()}
    for column, value in starts(tmp):
        slave, var = column.split(".")
        execution.string_initial_value(index[slave], refs[slave][var], value)
    # libcosim stops (False) at the step the pinging guest powers off in.
    assert not execution.simulate_until(round(STOP * 1e9))
    del execution
    assert "0% packet loss" in (tmp / "client.txt").read_text()
    RUNS["libcosim"] = tmp


def test_runs_and_masters_are_byte_identical():
    if len(RUNS) < 3:
        pytest.fail(f"a run before this one failed; have {sorted(RUNS)}")
    first = {f: (RUNS["cosim-1"] / f).read_bytes() for f in FILES}
    for run in ("cosim-2", "libcosim"):
        assert {f: (RUNS[run] / f).read_bytes() for f in FILES} == first, run


def test_the_capture_shows_each_echo_at_its_modelled_time():
    if "cosim-1" not in RUNS:
        pytest.fail("the first run failed")
    rows = subprocess.run(
        ["tshark", "-r", str(RUNS["cosim-1"] / "net.pcapng"), "-Y", "icmp",
         "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.interface_id",
         "-e", "icmp.type", "-e", "icmp.seq", "-e", "frame.len"],
        capture_output=True, text=True, timeout=60, check=True).stdout
    records = []
    for line in rows.splitlines():
        t, iface, kind, seq, length = line.split("\t")
        whole, _, frac = t.partition(".")
        records.append((int(whole) * 10**9 + int(frac.ljust(9, "0")[:9]),
                        int(iface), int(kind), int(seq), int(length)))
    # Requests (type 8) from the client (port 1) to the server (port 0),
    # replies (type 0) back: each seen leaving its sender and reaching the
    # other side exactly delay + serialization later (the link keeps
    # order).  The client's `wait` role pings once before the three.
    for kind, sender in ((8, 1), (0, 0)):
        sent = sorted(r for r in records if r[1:3] == (sender, kind))
        arrived = sorted(r for r in records if r[1:3] == (1 - sender, kind))
        assert [r[3] for r in sent] == [0, 0, 1, 2], records
        assert [r[3] for r in arrived] == [0, 0, 1, 2], records
        for (t, _, _, _, length), (t_in, *_) in zip(sent, arrived, strict=True):
            assert t_in == t + DELAY_NS + serialization_ns(length, BIT_RATE)
    # ping's own figure: the wire's round trip plus the guests' work.
    times = re.findall(r"seq=2 ttl=64 time=([\d.]+) ms",
                       (RUNS["cosim-1"] / "client.txt").read_text())
    wire = 2 * (DELAY_NS + serialization_ns(98, BIT_RATE)) / 1e6
    assert times and wire < float(times[0]) < wire + 0.1
