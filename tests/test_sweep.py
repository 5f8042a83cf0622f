"""Sweeps on Dask: real scheduler and workers, real QEMU, the real FMUs.

The closed-loop SSP (PI controller firmware + DC motor) runs 8 cases in
this process, on a LocalCluster of 2 workers, and on a `dask scheduler`
and `dask worker` started here as separate processes; the Parquet files
must be byte-identical.  One of the 8 cases cannot meet its step_timeout
and fails alone.  Single-FMU cases fail by a guest power-off and by a bad
parameter; a worker is killed in the middle of a case.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import built
from fmi_helpers import children
from qemufmu import sweep
from qemufmu.cosim import CACHE_VARIABLE

REPO = Path(__file__).resolve().parent.parent
STOP, STEP = 0.15, 1e-3
ENV = {**os.environ, "PYTHONPATH": str(REPO / "fmu_src")}
CLI = [sys.executable, "-m", "qemufmu.cli"]
DASK = Path(sys.executable).parent / "dask"

# Every output, ecu.next_event_time (QEMU's lookahead) included: under load
# it once differed between runs, by a host-timed clock warp fixed in
# qemu/qqq/qqq.c (docs/qqq-internals.md, tests/test_host_timing.py).
RECORD = ("ecu.qemu_time", "ecu.sync_steps", "ecu.console", "ecu.console_bytes",
          "ecu.next_event_time", "ecu.voltage", "plant.speed", "plant.setpoint")

CASES = """\
case,plant.step_value,plant.gain,plant.time_constant,ecu.icount_shift,ecu.host_network,ecu.step_timeout,ecu.console_file
nominal,100,10,0.05,,,,
low,50,10,0.05,,,,
high,150,10,0.05,,,,
weak,100,6.5,0.05,,,,
slow,100,10,0.1,2,,,
fast,100,10,0.02,,false,,
logged,80,10,0.05,,0,,{console}
too_slow,100,10,0.05,,,1e-6,
"""


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Extract FMUs into a cache of this module's own, removed at its end:
    the SSPs made here differ on every run and would pile up in /tmp."""
    path = tmp_path_factory.mktemp("sweep-cache")
    before = os.environ.get(CACHE_VARIABLE)
    os.environ[CACHE_VARIABLE] = ENV[CACHE_VARIABLE] = str(path)
    yield path
    if before is None:
        del os.environ[CACHE_VARIABLE]
    else:
        os.environ[CACHE_VARIABLE] = before
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def ssp() -> Path:
    return built(REPO / "dist" / "closed_loop.ssp", "make closed-loop")


@pytest.fixture(scope="module")
def qemu_fmu() -> Path:
    return built(REPO / "dist" / "qemu.fmu", "make fmu")


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("cases")
    path = where / "cases.csv"
    path.write_text(CASES.format(console=where / "console.txt"))
    return path


def qemus_of(parents: set[int]) -> list[int]:
    """PIDs of qemu-system processes whose parent is one of ``parents``."""
    return [pid for parent in parents for pid, comm in children(parent).items()
            if comm.startswith("qemu-system")]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL it after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """`dask scheduler` and `dask worker` (2 single-threaded processes under
    one nanny each) on 127.0.0.1, as separate processes; yields
    (address, client)."""
    from distributed import Client

    where = tmp_path_factory.mktemp("dask")
    info = where / "scheduler.json"
    logs = [open(where / name, "w") for name in ("scheduler.log", "workers.log")]
    procs = [subprocess.Popen(
        [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--no-dashboard", "--scheduler-file", str(info)],
        env=ENV, stdout=logs[0], stderr=subprocess.STDOUT, start_new_session=True,
        cwd=where)]
    try:
        deadline = time.monotonic() + 60
        while not info.exists() or not info.read_text().strip():
            assert procs[0].poll() is None, (where / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        procs.append(subprocess.Popen(
            [str(DASK), "worker", address, "--nworkers", "2", "--nthreads", "1",
             "--no-dashboard", "--host", "127.0.0.1", "--local-directory",
             str(where)],
            env=ENV, stdout=logs[1], stderr=subprocess.STDOUT,
            start_new_session=True, cwd=where))
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
            yield address, client
    finally:
        for proc in reversed(procs):
            stop_group(proc)
        for log in logs:
            log.close()


@pytest.fixture(scope="module")
def reference(ssp, cases, tmp_path_factory) -> Path:
    """The 8 cases run one after another in this process."""
    out = tmp_path_factory.mktemp("inproc") / "results.parquet"
    sweep.run(ssp, cases, stop_time=STOP, step=STEP, record=RECORD,
              in_process=True, out=out)
    return out


def summary_of(results: Path) -> pd.DataFrame:
    return pd.read_csv(sweep.summary_path(results), keep_default_na=False)


def test_typed_start_values_reach_the_fmus(reference, cases):
    table = pd.read_parquet(reference)
    summary = summary_of(reference).set_index("case")
    ok = summary[summary.status == "ok"].index
    assert sorted(ok) == sorted(set(summary.index) - {"too_slow"})
    final = table.groupby("case").last()
    # Real: each case's set-point is its own step_value, exactly.
    given = pd.read_csv(cases).set_index("case")
    for case in ok:
        assert final.loc[case, "plant.setpoint"] == given.loc[case, "plant.step_value"]
    # A weaker motor (lower gain) is slower; a slower one (larger time
    # constant) too: the plant's Real parameters arrived.
    assert final.loc["weak", "plant.speed"] < final.loc["nominal", "plant.speed"]
    assert final.loc["slow", "plant.speed"] < final.loc["nominal", "plant.speed"]
    # String: the console file the 'logged' case named holds the controller's lines.
    console = Path(given.loc["logged", "ecu.console_file"]).read_text()
    assert "voltage=" in console
    # Columns are typed by the model description; one row per time point.
    assert str(table["ecu.sync_steps"].dtype) == "int32"
    assert str(table["plant.speed"].dtype) == "float64"
    assert table[table.case == "nominal"]["time"].tolist() == pytest.approx(
        [k * STEP for k in range(round(STOP / STEP) + 1)], abs=1e-12)
    assert table[table.case == "nominal"]["ecu.qemu_time"].iloc[-1] == \
        pytest.approx(STOP, abs=1e-9)


def test_a_case_that_cannot_meet_its_step_timeout_fails_alone(reference):
    summary = summary_of(reference).set_index("case")
    assert summary.loc["too_slow", "status"] == "failed"
    assert "did not answer within 1e-06 s" in summary.loc["too_slow", "message"]
    assert summary.loc["too_slow", "message"].startswith("ecu: ")
    assert (summary.drop("too_slow").status == "ok").all()


def test_local_cluster_gives_the_same_bytes(ssp, cases, reference, tmp_path):
    out = tmp_path / "local.parquet"
    results = sweep.run(ssp, cases, stop_time=STOP, step=STEP, record=RECORD,
                        workers=2, out=out)
    assert out.read_bytes() == reference.read_bytes()
    workers = {row["worker"] for row in results.attrs["summary"]}
    assert len(workers) == 2 and all(w.startswith("tcp://") for w in workers)


def test_separate_scheduler_and_workers_give_the_same_bytes(
        ssp, cases, reference, cluster, tmp_path):
    address, _ = cluster
    out = tmp_path / "remote.parquet"
    done = subprocess.run(
        [*CLI, "sweep", str(ssp), str(cases), "--stop-time", str(STOP),
         "--step", str(STEP), "--out", str(out), "--scheduler", address,
         "--record", ",".join(RECORD)],
        env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr  # one case fails on purpose
    assert out.read_bytes() == reference.read_bytes()
    summary = summary_of(out)
    assert (summary.status == summary_of(reference).status).all()
    assert "8 cases, 7 ok, 1 not ok" in done.stdout


def test_guest_power_off_and_bad_parameter_stay_in_their_case(
        qemu_fmu, guests, cluster, tmp_path):
    address, client = cluster
    frame = pd.DataFrame({
        "case": ["default_guest", "powers_off", "bad_shift"],
        "guest_image": ["", str(guests / "x86-poweroff.elf"), ""],
        "machine": ["", "pc", ""],
        "qemu_system": ["", "x86_64", ""],
        "icount_shift": [None, None, 11],
    })
    results = sweep.run(qemu_fmu, frame, stop_time=0.05, step=1e-3,
                        record=["qemu_time", "console"], scheduler=address)
    summary = pd.DataFrame(results.attrs["summary"]).set_index("case")
    assert summary.loc["default_guest", "status"] == "ok"
    assert summary.loc["powers_off", "status"] == "failed"
    assert "the guest powered off" in summary.loc["powers_off", "message"]
    assert summary.loc["bad_shift", "status"] == "failed"
    assert "icount_shift 11 is outside" in summary.loc["bad_shift", "message"]
    # The rows up to the power-off are kept; none after it.
    off = results[results.case == "powers_off"]
    assert 0 < len(off) < 51 and off["time"].max() < 0.05
    assert len(results[results.case == "default_guest"]) == 51
    workers = set(client.run(os.getpid).values())
    assert not qemus_of(workers)


def _a_running_qemu(client, runner: threading.Thread) -> tuple[int, int]:
    """(QEMU pid, its worker's pid) for the first QEMU a worker runs."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and runner.is_alive():
        workers = set(client.run(os.getpid).values())
        for pid in qemus_of(workers):
            return pid, int(Path(f"/proc/{pid}/stat").read_text()
                            .rsplit(")", 1)[1].split()[1])
        time.sleep(0.02)
    pytest.fail("never saw a worker running QEMU")


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def test_a_killed_worker_loses_nothing_and_leaves_no_qemu(ssp, cluster, tmp_path):
    """SIGKILL the worker process running a case: Dask reruns that case
    elsewhere, its results equal an undisturbed run, its QEMU is gone."""
    address, client = cluster
    frame = pd.DataFrame({"case": [f"c{i}" for i in range(4)],
                          "plant.step_value": [60.0, 70.0, 80.0, 90.0]})
    stop = 0.6
    expected = sweep.run(ssp, frame, stop_time=stop, step=STEP, record=RECORD,
                         in_process=True)
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.update(results=sweep.run(
        ssp, frame, stop_time=stop, step=STEP, record=RECORD, scheduler=address)),
        daemon=True)
    runner.start()
    qemu, victim = _a_running_qemu(client, runner)
    os.kill(victim, signal.SIGKILL)
    runner.join(timeout=180)
    assert not runner.is_alive(), "the sweep did not finish"
    assert _gone(qemu), "the killed worker's QEMU survived it"
    results = outcome["results"]
    summary = pd.DataFrame(results.attrs["summary"])
    assert (summary.status == "ok").all(), summary
    results.attrs, expected.attrs = {}, {}
    pd.testing.assert_frame_equal(results, expected, check_exact=True)
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it


def test_a_case_whose_worker_dies_too_often_is_reported_lost(ssp, tmp_path):
    """With Dask's allowed-failures at 0 the killed worker's case is not
    rerun: it is reported as lost and the others still finish."""
    import dask
    from distributed import Client, LocalCluster

    frame = pd.DataFrame({"case": [f"c{i}" for i in range(3)],
                          "plant.step_value": [60.0, 70.0, 80.0]})
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                         dashboard_address=":0") as local, Client(local) as client:
        outcome: dict = {}
        runner = threading.Thread(target=lambda: outcome.update(
            results=sweep.run(ssp, frame, stop_time=0.6, step=STEP,
                              client=client)), daemon=True)
        runner.start()
        qemu, victim = _a_running_qemu(client, runner)
        os.kill(victim, signal.SIGKILL)
        runner.join(timeout=180)
        assert not runner.is_alive(), "the sweep did not finish"
    assert _gone(qemu), "the killed worker's QEMU survived it"
    summary = pd.DataFrame(outcome["results"].attrs["summary"])
    lost = summary[summary.status == "lost"]
    assert len(lost) == 1 and "KilledWorker" in lost.message.iloc[0]
    assert (summary[summary.status != "lost"].status == "ok").all()
    assert lost.case.iloc[0] not in set(outcome["results"].case)


@pytest.mark.parametrize("cells,error", [
    ({"plant.nope": "1"}, r"column 'plant.nope' component plant has no variable"),
    ({"motor.gain": "1"}, r"column 'motor.gain' names no component"),
    ({"plant.speed": "1"}, r"column 'plant.speed' is an output"),
    ({"plant.gain": "fast"}, r"row 2 \(case 'b'\), column 'plant.gain': "
                             r"'fast' is not a Real"),
    ({"ecu.icount_shift": "1.5"}, r"row 2 \(case 'b'\), column "
                                  r"'ecu.icount_shift': '1.5' is not an Integer"),
    ({"ecu.host_network": "yes"}, r"row 2 \(case 'b'\), column 'ecu.host_network': "
                             r"'yes' is not a Boolean"),
])
def test_bad_cases_are_refused_before_anything_runs(ssp, tmp_path, cells, error):
    column, value = next(iter(cells.items()))
    bad = tmp_path / "bad.csv"
    # Row 1 is valid wherever the column exists; row 2 carries the bad value.
    good = "1" if column != "ecu.host_network" else "true"
    bad.write_text(f"case,{column}\na,{good}\nb,{value}\n")
    out = tmp_path / "r.parquet"
    done = subprocess.run(
        [*CLI, "sweep", str(ssp), str(bad), "--stop-time", "0.01", "--step",
         "0.001", "--out", str(out), "--in-process"],
        env=ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qemu-fmu sweep: ")
    assert re.search(error, lines[0]), lines[0]
    assert not out.exists()
    with pytest.raises(sweep.InputError):
        sweep.prepare(ssp, bad, stop_time=0.01, step=1e-3)


def test_bad_times_and_records_are_refused(ssp, cases):
    with pytest.raises(sweep.InputError, match="whole number of steps"):
        sweep.prepare(ssp, cases, stop_time=0.0105, step=1e-3)
    with pytest.raises(sweep.InputError, match="step must be a finite number"):
        sweep.prepare(ssp, cases, stop_time=0.01, step=0.0)
    with pytest.raises(sweep.InputError, match="record: 'ecu.nope'"):
        sweep.prepare(ssp, cases, stop_time=0.01, step=1e-3, record=["ecu.nope"])


def test_package_installs_with_its_console_script(tmp_path):
    """`pip install .` gives the qemufmu package and a `qemu-fmu` command."""
    # A copy of what the package is made of, so that the build leaves no
    # egg-info or build/lib in the work tree.
    source = tmp_path / "src"
    (source / "fmu_src").mkdir(parents=True)
    shutil.copy(REPO / "pyproject.toml", source)
    shutil.copy(REPO / "fmu_src" / "qemu_slave.py", source / "fmu_src")
    shutil.copytree(REPO / "fmu_src" / "qemufmu", source / "fmu_src" / "qemufmu",
                    ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--disable-pip-version-check",
                    "--target", str(target), str(source)],
                   check=True, timeout=300, capture_output=True)
    assert (target / "qemufmu" / "sweep.py").is_file()
    assert not (target / "qemu_slave.py").exists()
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([str(target / "bin" / "qemu-fmu"), "sweep", "--help"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--scheduler" in done.stdout
    done = subprocess.run([str(target / "bin" / "qemu-fmu")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "COMMAND" in done.stderr


def test_build_subcommand_is_build_fmu(tmp_path):
    """`qemu-fmu build` writes the same bytes as build_fmu.py."""
    via_cli = tmp_path / "cli.fmu"
    via_script = tmp_path / "script.fmu"
    subprocess.run([*CLI, "build", "-o", str(via_cli)], env=ENV, check=True,
                   timeout=300, capture_output=True)
    subprocess.run([sys.executable, str(REPO / "build_fmu.py"), "-o",
                    str(via_script)], check=True, timeout=300, capture_output=True)
    assert via_cli.read_bytes() == via_script.read_bytes()
    done = subprocess.run([*CLI, "build", "--config", str(tmp_path / "none.toml"),
                           "-o", str(tmp_path / "x.fmu")], env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "none.toml" in done.stderr


def test_ssd_parameter_bindings_apply_and_cases_override_them(ssp, tmp_path):
    """An SSD's inline and .ssv parameter bindings are start values too;
    a CASES cell wins over them."""
    import zipfile

    ssd = zipfile.ZipFile(ssp).read("SystemStructure.ssd").decode()
    binding = """
<ssd:ParameterBindings>
 <ssd:ParameterBinding>
  <ssd:ParameterValues>
   <ssv:ParameterSet version="1.0" name="p"
     xmlns:ssv="http://ssp-standard.org/SSP1/SystemStructureParameterValues">
    <ssv:Parameters>
     <ssv:Parameter name="step_value"><ssv:Real value="42"/></ssv:Parameter>
    </ssv:Parameters>
   </ssv:ParameterSet>
  </ssd:ParameterValues>
 </ssd:ParameterBinding>
 <ssd:ParameterBinding source="resources/plant.ssv"/>
</ssd:ParameterBindings>
</ssd:Component>"""
    plant = ssd.index('source="resources/DcMotor.fmu"')
    end = ssd.index("</ssd:Component>", plant)
    ssd = ssd[:end] + binding.strip() + ssd[end + len("</ssd:Component>"):]
    ssv = """<?xml version="1.0" encoding="UTF-8"?>
<ssv:ParameterSet version="1.0" name="plant"
    xmlns:ssv="http://ssp-standard.org/SSP1/SystemStructureParameterValues">
  <ssv:Parameters>
    <ssv:Parameter name="step_time"><ssv:Real value="0.02"/></ssv:Parameter>
  </ssv:Parameters>
</ssv:ParameterSet>
"""
    bound = tmp_path / "bound.ssp"
    with zipfile.ZipFile(ssp) as src, zipfile.ZipFile(bound, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, ssd.encode() if info.filename == "SystemStructure.ssd"
                         else data)
        dst.writestr("resources/plant.ssv", ssv)
    frame = pd.DataFrame({"case": ["bound", "overridden"],
                          "plant.step_value": [None, 7.5]})
    results = sweep.run(bound, frame, stop_time=0.03, step=STEP,
                        record=["plant.setpoint"], in_process=True)
    final = results.groupby("case").last()["plant.setpoint"]
    assert final["bound"] == 42.0 and final["overridden"] == 7.5
    early = results[(results.case == "bound") & (results.time < 0.0195)]
    assert (early["plant.setpoint"] == 0.0).all()  # step_time from the .ssv


def test_the_fmu_side_of_the_package_needs_no_sweep_dependencies():
    """qemufmu is packed into every FMU: importing its slave must not pull in
    Dask, pandas or pyarrow."""
    code = ("import sys, qemufmu.slave; "
            "print(sorted(m for m in ('dask', 'distributed', 'pandas', 'pyarrow', "
            "'tqdm') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], env=ENV, text=True,
                          capture_output=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
