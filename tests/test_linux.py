"""The example Linux guest: a Debian kernel, busybox and pi_speed in an FMU.

dist/PiSpeedLinux.fmu (examples/closed_loop/pi_speed_linux.toml) boots
Linux on `-M pc` under tcg-icount; its /init runs firmware/linux/pi_speed.c,
the PI controller, on the signal channel (ttyS1).  A boot costs 3-6 s of
wall time, so one run under each master (fmpy, libcosimpy, our C master)
serves every check: the runs (same inputs, same steps) must agree to the
byte.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fmpy.fmi1 import FMICallException

from conftest import FIRMWARE, REPO, built, fail_if_stale, stale_fmu
from fmi_helpers import Instance, qemu_children
from qemufmu.config import ConfigError, QemuConfig, qemu_argv, validate

sys.path.insert(0, str(REPO / "examples" / "closed_loop"))
from run import metrics, simulate_fmpy  # noqa: E402

STEP = 1e-3
CHANGE = 2.0  # s: speed := setpoint, the error drops to zero
STOP = 3.0
SETPOINT, SPEED = 5.0, 1.0
RTC_EPOCH = 1704067200  # 2024-01-01T00:00:00Z, the default rtc_base
SERIES = ("voltage", "uptime", "wall_clock")


@pytest.fixture(scope="module")
def linux_fmu(guests) -> Path:
    """dist/PiSpeedLinux.fmu, checked to match its sources."""
    path = built(REPO / "dist" / "PiSpeedLinux.fmu", "make closed-loop")
    linux = guests / "linux"
    problems = stale_fmu(path, linux / "vmlinux", "dist/PiSpeedLinux.fmu")
    with zipfile.ZipFile(path) as z:
        if z.read("resources/guest/initrd") != (linux / "initrd.cpio").read_bytes():
            problems.append("dist/PiSpeedLinux.fmu: its initrd differs from "
                            "firmware/build/linux/initrd.cpio")
    fail_if_stale(problems, "make closed-loop")
    return path


def run_fmpy(fmu: Path, tmp: Path) -> dict:
    from fmpy import extract

    console = tmp / "fmpy-console.txt"
    qemu = Instance(fmu, Path(extract(str(fmu), str(tmp / "fmu"))),
                    console_file=str(console), setpoint=SETPOINT, speed=SPEED)
    qemu.start()
    rows = []
    try:
        for k in range(round(STOP / STEP)):
            if k == round(CHANGE / STEP):
                qemu.set("speed", SETPOINT)
            qemu.slave.doStep(k * STEP, STEP)
            rows.append([qemu.get(name) for name in SERIES])
        assert qemu.get("qemu_time") == pytest.approx(STOP, abs=1e-9)
    finally:
        qemu.close()
    return _result(rows, console)


def run_libcosim(fmu: Path, tmp: Path) -> dict:
    from libcosimpy.CosimEnums import CosimVariableType
    from libcosimpy.CosimExecution import CosimExecution
    from libcosimpy.CosimManipulator import CosimManipulator
    from libcosimpy.CosimObserver import CosimObserver
    from libcosimpy.CosimSlave import CosimLocalSlave

    console = tmp / "libcosim-console.txt"
    step_ns, steps = round(STEP * 1e9), round(STOP / STEP)
    execution = CosimExecution.from_step_size(step_size=step_ns)
    index = execution.add_local_slave(
        CosimLocalSlave(fmu_path=str(fmu), instance_name="linux"))
    refs = {v.name.decode(): v.reference for v in execution.slave_variables(index)}
    execution.string_initial_value(index, refs["console_file"], str(console))
    execution.real_initial_value(index, refs["setpoint"], SETPOINT)
    execution.real_initial_value(index, refs["speed"], SPEED)
    override = CosimManipulator.create_override()
    execution.add_manipulator(override)
    observer = CosimObserver.create_time_series(buffer_size=steps + 10)
    execution.add_observer(observer)
    for name in SERIES:
        observer.start_time_series(index, refs[name], CosimVariableType.REAL)
    assert execution.simulate_until(round(CHANGE / STEP) * step_ns)
    override.slave_real_values(index, [refs["speed"]], [SETPOINT])
    assert execution.simulate_until(steps * step_ns)
    columns = [observer.time_series_real_samples(index, refs[name], 1, steps)[2]
               for name in SERIES]
    del execution
    return _result(list(zip(*columns, strict=True)), console)


def run_c_host(fmu: Path, tmp: Path, host: Path) -> dict:
    """Our C master (tests/c_hosts/fmi2_host.c): no Python until the FMU's
    loader shim brings one."""
    from c_host import run_host, start, unpack, values

    console = tmp / "c-console.txt"
    u = unpack(fmu, tmp / "c-fmu")
    script = start(u, "L", setpoint=("r", repr(SETPOINT)), speed=("r", repr(SPEED)),
                   console_file=("s", str(console)))
    for k in range(round(STOP / STEP)):
        if k == round(CHANGE / STEP):
            script += f"set L r {u.vrs['speed']} {SETPOINT!r}\n"
        script += f"step L {k * STEP!r} {STEP!r}\n"
        script += "".join(f"get L r {u.vrs[name]}\n" for name in SERIES)
    out = run_host(host, script + "term L\nfree L\n", tmp, timeout=100).stdout
    statuses = re.findall(r"^step L -> (-?\d+)$", out, re.M)
    assert statuses == ["0"] * round(STOP / STEP), sorted(set(statuses))
    columns = [[float(v) for v in values(out, "L", u.vrs[name])] for name in SERIES]
    return _result(list(zip(*columns, strict=True)), console)


def _result(rows: list, console: Path) -> dict:
    values = np.array(rows, dtype=float)
    out = {name: values[:, i] for i, name in enumerate(SERIES)}
    out["time"] = np.arange(1, len(rows) + 1) * STEP
    out["console"] = console.read_bytes()
    return out


@pytest.fixture(scope="module")
def runs(linux_fmu, fmi2_host, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("linux")
    try:
        return {"fmpy": run_fmpy(linux_fmu, tmp),
                "libcosim": run_libcosim(linux_fmu, tmp),
                "C": run_c_host(linux_fmu, tmp, fmi2_host)}
    finally:
        assert not qemu_children()


def _samples(run: dict) -> np.ndarray:
    """Steps whose reply carried a sample of the running controller."""
    return run["uptime"] > 0


def test_boots_to_init_on_its_console(runs):
    console = runs["fmpy"]["console"].decode()
    assert "Run /init as init process" in console
    assert "init: uptime" in console and "date 2024-01-01T00:00:0" in console
    assert "pi_speed: running on /dev/ttyS1" in console
    assert _samples(runs["fmpy"]).any()


def _first_difference(a: dict, b: dict) -> str:
    """Where two runs part, for the failure message: a rare divergence
    must be diagnosable from the test report alone."""
    lines_a, lines_b = a["console"].splitlines(), b["console"].splitlines()
    where = []
    for i, (x, y) in enumerate(zip(lines_a, lines_b, strict=False)):
        if x != y:
            where.append(f"console line {i}: {x!r} != {y!r}")
            break
    else:
        if len(lines_a) != len(lines_b):
            where.append(f"console: {len(lines_a)} != {len(lines_b)} lines")
    for name in SERIES:
        differ = np.nonzero(a[name] != b[name])[0]
        if len(differ):
            k = differ[0]
            where.append(f"{name} at step {k} (t={a['time'][k]:.3f} s): "
                         f"{a[name][k]!r} != {b[name][k]!r}, {len(differ)} steps")
    return "; ".join(where)


@pytest.mark.parametrize("master", ["libcosim", "C"])
def test_three_masters_three_boots_byte_identical(runs, master):
    a, b = runs["fmpy"], runs[master]
    assert a["console"] == b["console"] and all(
        a[name].tobytes() == b[name].tobytes() for name in SERIES), \
        _first_difference(a, b)


def _pi_outputs() -> list[float]:
    """firmware/linux/pi_speed.c's samples, computed with the same doubles:
    the error SETPOINT - SPEED until saturation, then zero."""
    kp, ki, v_max, ts = 0.5, 20.0, 12.0, 1000000 * 1e-9
    integral, out = 0.0, []

    def sample(e: float) -> float:
        nonlocal integral
        u = kp * e + integral + ki * ts * e
        if not ((u > v_max and e > 0) or (u < -v_max and e < 0)):
            integral += ki * ts * e
        return v_max if u > v_max else -v_max if u < -v_max else u

    while not out or out[-1] < v_max:
        out.append(sample(SETPOINT - SPEED))
    out.append(sample(0.0))
    return out


@pytest.mark.parametrize("master", ["fmpy", "libcosim", "C"])
def test_signals_round_trip_through_user_space(runs, master):
    """Inputs sent once at t=0, while Linux boots, and one change later:
    the voltages are exactly the PI law's, so every double crossed intact."""
    run = runs[master]
    voltage = run["voltage"][_samples(run)]
    distinct = [float(v) for i, v in enumerate(voltage)
                if i == 0 or v != voltage[i - 1]]
    expected = _pi_outputs()
    # The first samples may predate the resent inputs (setpoint = speed = 0).
    if distinct[0] == 0.0:
        distinct = distinct[1:]
    # The 1 ms timer's phase drifts against the steps: now and then a step
    # carries two samples and only the later one is seen.  What is seen
    # must be the law's outputs, in order, exactly.
    remaining = iter(expected)
    assert all(value in remaining for value in distinct), distinct
    assert distinct[0] == expected[0] and distinct[-1] == expected[-1]
    assert len(distinct) >= 0.9 * len(expected)
    change = np.searchsorted(run["time"], CHANGE)
    assert run["voltage"][change - 1] == 12.0
    assert run["voltage"][-1] == expected[-1] < 12.0


def test_guest_clocks_follow_simulation_time(runs):
    run = runs["fmpy"]
    # Steps that carried a new sample (the others hold the last one).
    new = _samples(run) & (np.diff(run["uptime"], prepend=-1.0) != 0)
    t, uptime, wall = run["time"][new], run["uptime"][new], run["wall_clock"][new]
    assert t[-1] - t[0] > 2.0  # seconds of samples
    assert len(t) > 0.9 * (t[-1] - t[0]) / STEP
    # A sample is taken within the step that carries it: sim time minus the
    # guest's CLOCK_MONOTONIC stays constant to within one step.
    lag = t - uptime
    assert np.ptp(lag) < STEP
    # CLOCK_REALTIME runs off the same clock source from rtc_base on.
    offset = wall - uptime
    assert np.ptp(offset) < 5e-5
    # `date` shows rtc_base plus the simulation time, to within the second
    # the kernel reads from the RTC at boot.
    assert np.all(np.abs(wall - RTC_EPOCH - t) < 1.0)


def test_the_build_is_reproducible(tmp_path):
    """Rebuilt from the same downloaded packages: the same bytes."""
    linux = built(FIRMWARE / "build" / "linux" / "initrd.cpio", "make firmware").parent
    subprocess.run(["make", "-s", "-C", str(FIRMWARE), f"OUT={tmp_path}",
                    f"LINUX_DEBS={linux / 'debs'}", "linux"],
                   check=True, timeout=300)
    for name in ("vmlinux", "initrd.cpio"):
        assert (tmp_path / "linux" / name).read_bytes() == (linux / name).read_bytes()


def test_rtc_base_sets_the_guests_clock(tmp_path):
    argv = qemu_argv(QemuConfig(), Path("q"), Path("k"), [])
    assert argv[argv.index("-rtc") + 1] == "base=2024-01-01T00:00:00,clock=vm"
    for value, option in (("2030-06-15T12:30:00", "base=2030-06-15T12:30:00"),
                          ("2030-06-15", "base=2030-06-15"),
                          ("host", "base=utc")):
        argv = qemu_argv(QemuConfig(rtc_base=value), Path("q"), Path("k"), [])
        assert argv[argv.index("-rtc") + 1] == option + ",clock=vm"
    argv = qemu_argv(QemuConfig(kernel_cmdline="console=ttyS0 quiet"), Path("q"),
                     Path("k"), [], initrd=Path("i"))
    assert argv[argv.index("-initrd") + 1] == "i"
    assert argv[argv.index("-append") + 1] == "console=ttyS0 quiet"


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01", "2024-01-01 00:00",
                                   "1969-12-31T23:59:59", "", "HOST"])
def test_bad_rtc_base_is_refused(value):
    with pytest.raises(ConfigError, match=f"rtc_base '{value}' is not a date"):
        validate(QemuConfig(rtc_base=value))


@pytest.mark.parametrize("params,message", [
    ({"rtc_base": "2024-02-30"}, r"rtc_base '2024-02-30' is not a date"),
    ({"initrd": "/nonexistent/initrd"}, r"initrd /nonexistent/initrd does not "
                                        r"exist \(parameter initrd\)"),
])
def test_bad_linux_parameters_fail_initialization(fmu, unzipped, params, message):
    qemu = Instance(fmu, unzipped, **params)
    with pytest.raises(FMICallException):
        qemu.start()
    assert re.search(message, qemu.log_text()), qemu.log_text()
    assert not qemu_children()


def test_linux_closed_loop_settles_like_the_cortex_m_one(linux_fmu):
    """dist/closed_loop_linux.ssp: pi_speed against the DC motor, the
    set-point stepping at 1 s (after the boot); the same bounds as
    test_closed_loop's firmware loop."""
    ssp = built(REPO / "dist" / "closed_loop_linux.ssp", "make closed-loop")
    here = REPO / "examples" / "closed_loop"
    with zipfile.ZipFile(ssp) as z:
        fail_if_stale(
            [f"closed_loop_linux.ssp: {name} differs from {src.name}"
             for name, src in (("resources/PiSpeedLinux.fmu", linux_fmu),
                               ("resources/DcMotor.fmu", REPO / "dist" / "DcMotor.fmu"),
                               ("SystemStructure.ssd",
                                here / "SystemStructure_linux.ssd"))
             if z.read(name) != src.read_bytes()], "make closed-loop")
    m = metrics(simulate_fmpy(ssp, STEP, 1.5))
    assert m["step_time"] == pytest.approx(1.0, abs=1e-3)
    assert m["settling_time"] < 0.15
    assert m["overshoot_percent"] < 5
    assert abs(m["final_error"]) < 0.1
    assert not qemu_children()
