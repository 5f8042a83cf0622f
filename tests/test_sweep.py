"""Sweeps on Dask: real scheduler and workers, real QEMU, the real FMUs.

The closed-loop SSP (PI controller firmware + DC motor) runs 8 cases in
this process, on a LocalCluster of 2 workers, and on a `dask scheduler`
and `dask worker` started here as separate processes; the Parquet files
must be byte-identical.  One of the 8 cases cannot meet its step_timeout
and fails alone.  Single-FMU cases fail by a guest power-off and by a bad
parameter; a worker is killed in the middle of a case.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import sysconfig
import termios
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from fmi_helpers import children
from helpers import REPO
from qemufmu import sweep
from qemufmu.cosim import CACHE_VARIABLE

STOP, STEP = 0.15, 1e-3
ENV = {**os.environ, "PYTHONPATH": str(REPO / "fmu_src")}
CLI = [sys.executable, "-m", "qemufmu.cli"]
DASK = Path(sys.executable).parent / "dask"

# Every output, ecu.next_event_time (QEMU's lookahead) included: under load
# it once differed between runs, by a host-timed clock warp fixed in
# qemu/qqq/qqq.c (docs/qqq-internals.md, tests/test_host_timing.py).
RECORD = ("ecu.qemu_time", "ecu.sync_steps", "ecu.console", "ecu.console_bytes",
          "ecu.next_event_time", "ecu.voltage", "plant.speed", "plant.setpoint",
          "ecu.icount_shift", "ecu.host_network")

CASES = """\
case,plant.step_value,plant.gain,plant.time_constant,ecu.icount_shift,ecu.host_network,ecu.step_timeout,ecu.console_file
nominal,100,10,0.05,,,,
low,50,10,0.05,,,,
high,150,10,0.05,,,,
weak,100,6.5,0.05,,,,
slow,100,10,0.1,2,,,
fast,100,10,0.02,,false,,
logged,80,10,0.05,,1,,{console}
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
    # Integer and Boolean: read back from the ECU, they are the cells' values
    # ("false", "1"), the defaults (-1: the board's clock, false) where the
    # cell is empty.
    assert final.loc[ok, "ecu.icount_shift"].to_dict() == {
        case: 2 if case == "slow" else -1 for case in ok}
    assert final.loc[ok, "ecu.host_network"].to_dict() == {
        case: case == "logged" for case in ok}
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
        env=ENV, capture_output=True, text=True, timeout=100)
    assert done.returncode == 1, done.stderr  # one case fails on purpose
    assert out.read_bytes() == reference.read_bytes()
    summary = summary_of(out)
    assert (summary.status == summary_of(reference).status).all()
    assert "8 cases, 7 ok, 1 not ok" in done.stdout


def test_guest_power_off_and_bad_parameter_stay_in_their_case(
        fmu, guests, cluster, tmp_path):
    address, client = cluster
    frame = pd.DataFrame({
        "case": ["default_guest", "powers_off", "bad_shift"],
        "guest_image": ["", str(guests / "x86-poweroff.elf"), ""],
        "machine": ["", "pc", ""],
        "qemu_system": ["", "x86_64", ""],
        "icount_shift": [None, None, 11],
    })
    results = sweep.run(fmu, frame, stop_time=0.05, step=1e-3,
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
    workers = set(client.run(os.getpid, callback_timeout=30).values())
    assert not qemus_of(workers)


def _a_running_qemu(client, runner: threading.Thread) -> tuple[int, int]:
    """(QEMU pid, its worker's pid) for the first QEMU a worker runs."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and runner.is_alive():
        workers = set(client.run(os.getpid, callback_timeout=30).values())
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
    runner.join(timeout=100)
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
        runner.join(timeout=100)
        assert not runner.is_alive(), "the sweep did not finish"
    assert _gone(qemu), "the killed worker's QEMU survived it"
    summary = pd.DataFrame(outcome["results"].attrs["summary"])
    lost = summary[summary.status == "lost"]
    assert len(lost) == 1 and "KilledWorker" in lost.message.iloc[0]
    assert (summary[summary.status != "lost"].status == "ok").all()
    assert lost.case.iloc[0] not in set(outcome["results"].case)


# A worker from this venv that cannot import qemufmu: without the site
# module, the venv's packages are on the path but not the .pth file of the
# editable install.
BARE_WORKER = """
import sys
sys.path.append(sys.argv[2])
try:
    import qemufmu  # noqa: F401
    sys.exit("qemufmu importable: the test would prove nothing")
except ImportError:
    pass
from distributed.cli.dask_worker import main
sys.argv = ["dask-worker", sys.argv[1], "--nthreads", "1", "--no-nanny",
            "--no-dashboard", "--host", "127.0.0.1"]
main()
"""


def test_workers_without_qemu_fmu_are_detected_before_anything_runs(ssp, tmp_path):
    """docs/sweeps.md: the sweep checks that the workers can import
    qemu-fmu before running anything."""
    from distributed import Client, LocalCluster

    frame = pd.DataFrame({"case": ["a"], "plant.step_value": [60.0]})
    with LocalCluster(n_workers=0, dashboard_address=":0",
                      host="127.0.0.1") as local:
        worker = subprocess.Popen(
            [sys.executable, "-S", "-c", BARE_WORKER, local.scheduler_address,
             sysconfig.get_paths()["purelib"]],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=tmp_path)
        try:
            with Client(local) as client:
                try:
                    client.wait_for_workers(1, timeout=30)
                except TimeoutError:
                    worker.kill()
                    pytest.fail(f"the bare worker did not start: "
                                f"{worker.communicate()[1][-2000:]}")
                with pytest.raises(RuntimeError, match=r"a Dask worker cannot "
                                   r"import qemu-fmu's sweep code \(.*No module "
                                   r"named 'qemufmu'.*\); install qemu-fmu on "
                                   r"every worker"):
                    sweep.run(ssp, frame, stop_time=0.01, step=STEP,
                              scheduler=local.scheduler_address)
        finally:
            stop_group(worker)
            worker.stderr.close()
    assert not qemus_of({worker.pid})


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


def _cli(*args: str, tty: bool = False) -> tuple[int, str, str]:
    """Run `qemu-fmu sweep ARGS`; (status, stdout, stderr).  ``tty``: stderr
    is a terminal (a pseudo-terminal of the test's), as where the
    progress bar shows."""
    if not tty:
        done = subprocess.run([*CLI, "sweep", *args], env=ENV, capture_output=True,
                              text=True, timeout=100)
        return done.returncode, done.stdout, done.stderr
    ours, theirs = os.openpty()
    # 24 x 100: a terminal of no size would get a bar of no width
    fcntl.ioctl(theirs, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        done = subprocess.run([*CLI, "sweep", *args], env=ENV, stdout=subprocess.PIPE,
                              stderr=theirs, text=True, timeout=100)
        os.close(theirs)
        theirs = -1
        err = b""
        while True:
            try:
                chunk = os.read(ours, 1 << 16)
            except OSError:     # EIO: the writer is gone and all was read
                break
            if not chunk:
                break
            err += chunk
    finally:
        os.close(ours)
        if theirs >= 0:
            os.close(theirs)
    return done.returncode, done.stdout, err.decode(errors="replace")


@pytest.mark.parametrize("options,error", [
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"],
     "--workers sizes the local cluster; it cannot be combined with --scheduler"),
    (["--in-process", "--scheduler", "tcp://127.0.0.1:1"],
     "--in-process runs no cluster; drop --scheduler and --workers"),
    (["--in-process", "--workers", "2"],
     "--in-process runs no cluster; drop --scheduler and --workers"),
])
def test_cluster_options_that_contradict_each_other_are_refused(ssp, cases, tmp_path,
                                                                options, error):
    code, out, err = _cli(str(ssp), str(cases), "--stop-time", "0.01", "--step",
                          "0.001", "--out", str(tmp_path / "r.parquet"), *options)
    assert (code, out, err) == (2, "", f"qemu-fmu sweep: {error}\n")


@pytest.mark.parametrize("rows,error", [
    ("a,1\na,2\n", "row 2, column 'case': case 'a' appears twice"),
    ("a,1\n,2\n", "row 2, column 'case': empty case name"),
])
def test_case_names_must_be_unique_and_not_empty(ssp, tmp_path, rows, error):
    bad = tmp_path / "bad.csv"
    bad.write_text("case,plant.step_value\n" + rows)
    code, out, err = _cli(str(ssp), str(bad), "--stop-time", "0.01", "--step",
                          "0.001", "--out", str(tmp_path / "r.parquet"),
                          "--in-process")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and error in err, err


def test_a_cluster_that_cannot_be_used_exits_1(ssp, cases, tmp_path):
    code, out, err = _cli(str(ssp), str(cases), "--stop-time", "0.01", "--step",
                          "0.001", "--out", str(tmp_path / "r.parquet"),
                          "--scheduler", "nosuch://127.0.0.1:1")
    assert (code, out) == (1, "")
    assert err.startswith("qemu-fmu sweep: ") and err.count("\n") == 1, err
    assert "nosuch" in err
    assert not (tmp_path / "r.parquet").exists()


def test_all_ok_exits_0_records_every_output_in_cases_order(ssp, tmp_path):
    """--workers sizes the local cluster; --no-progress keeps even a
    terminal free of the bar (which shows without it); no --record: every
    output of every component; rows in CASES order, not by name."""
    from qemufmu.system import read_system

    order = tmp_path / "order.csv"
    order.write_text("case,plant.step_value\nzeta,100\nalpha,50\n")
    out = tmp_path / "r.parquet"
    common = [str(ssp), str(order), "--stop-time", "0.01", "--step", "0.001"]
    code, stdout, err = _cli(*common, "--out", str(out), "--workers", "1",
                             "--no-progress", tty=True)
    assert code == 0, err
    assert "2 cases, 2 ok, 0 not ok" in stdout
    assert "cases:" not in err and "%|" not in err, err
    table = pd.read_parquet(out)
    assert list(table.columns) == ["case", "time",
                                   *read_system(ssp).outputs()]
    assert table.case.tolist() == ["zeta"] * 11 + ["alpha"] * 11
    workers = set(summary_of(out).worker)
    assert len(workers) == 1 and workers.pop().startswith("tcp://")
    code, _, err = _cli(*common, "--out", str(tmp_path / "p.parquet"),
                        "--in-process", tty=True)
    assert code == 0 and "cases: 100%" in err, err


def test_bad_times_and_records_are_refused(ssp, cases):
    with pytest.raises(sweep.InputError, match="whole number of steps"):
        sweep.prepare(ssp, cases, stop_time=0.0105, step=1e-3)
    with pytest.raises(sweep.InputError, match="step must be a finite number"):
        sweep.prepare(ssp, cases, stop_time=0.01, step=0.0)
    with pytest.raises(sweep.InputError, match="record: 'ecu.nope'"):
        sweep.prepare(ssp, cases, stop_time=0.01, step=1e-3, record=["ecu.nope"])


def test_package_installs_with_its_console_script(fmu, tmp_path):
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
                   check=True, timeout=100, capture_output=True)
    assert (target / "qemufmu" / "sweep.py").is_file()
    for sub in ("channels", "network"):     # subpackages too
        assert (target / "qemufmu" / sub / "__init__.py").is_file(), sub
    assert not (target / "qemu_slave.py").exists()
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([str(target / "bin" / "qemu-fmu"), "sweep", "--help"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--scheduler" in done.stdout
    done = subprocess.run([str(target / "bin" / "qemu-fmu")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "COMMAND" in done.stderr
    # Installed away from the project tree, `build` needs one: not in the
    # current directory, exit 2; --repo names it, and the FMU is the same.
    done = subprocess.run([str(target / "bin" / "qemu-fmu"), "build", "-o",
                           str(tmp_path / "x.fmu")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=100)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr == ("qemu-fmu build: no build_fmu.py in the current "
                           "directory; run it in a built qemu-fmu project tree "
                           "or pass --repo DIR\n")
    done = subprocess.run([str(target / "bin" / "qemu-fmu"), "build", "--repo",
                           str(REPO), "-o", str(tmp_path / "x.fmu")], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "x.fmu").read_bytes() == fmu.read_bytes()


def test_build_subcommand_is_build_fmu(tmp_path):
    """`qemu-fmu build` writes the same bytes as build_fmu.py."""
    via_cli = tmp_path / "cli.fmu"
    via_script = tmp_path / "script.fmu"
    subprocess.run([*CLI, "build", "-o", str(via_cli)], env=ENV, check=True,
                   timeout=100, capture_output=True)
    subprocess.run([sys.executable, str(REPO / "build_fmu.py"), "-o",
                    str(via_script)], check=True, timeout=100, capture_output=True)
    assert via_cli.read_bytes() == via_script.read_bytes()
    done = subprocess.run([*CLI, "build", "--config", str(tmp_path / "none.toml"),
                           "-o", str(tmp_path / "x.fmu")], env=ENV,
                          capture_output=True, text=True, timeout=100)
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
