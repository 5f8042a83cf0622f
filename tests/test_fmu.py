"""qemu.fmu under real FMI masters: fmpy (CLI, API, low level) and libcosimpy."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fmpy import simulate_fmu

from fmi_helpers import Instance, open_descriptors, qemu_children, run_reaping

STOP = 1.0
STEP = 1e-3


def test_fmpy_cli_from_another_directory(fmu, tmp_path):
    """`fmpy simulate qemu.fmu` with the FMU copied away from the repo."""
    local = tmp_path / "qemu.fmu"
    shutil.copy(fmu, local)
    out = tmp_path / "out.csv"
    fmpy = Path(sys.executable).parent / "fmpy"
    done, left = run_reaping([str(fmpy), "simulate", "qemu.fmu", "--output-interval",
                              str(STEP), "--stop-time", str(STOP), "--output-file",
                              str(out)], cwd=tmp_path, timeout=100)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(out.open()))
    assert float(rows[-1]["time"]) == pytest.approx(STOP)
    assert float(rows[-1]["qemu_time"]) == pytest.approx(STOP, abs=1e-6)
    assert int(rows[-1]["sync_steps"]) == round(STOP / STEP)
    # fmpy's QEMU is not our child: had fmpy left it behind, it would have
    # been handed to the subreaper fmpy ran under.
    assert left == {}


def test_simulate_fmu(fmu):
    result = simulate_fmu(str(fmu), stop_time=STOP, output_interval=STEP,
                          output=["qemu_time", "sync_steps", "console_bytes"])
    assert result["qemu_time"][-1] == pytest.approx(STOP, abs=1e-6)
    assert abs(result["qemu_time"] - result["time"]).max() <= 1e-6
    # The default firmware (ticks.c, REPORT_EVERY=100) prints "boot", then
    # "ticks=N" when its N-th 1 ms SysTick has fired: N = 100, 200, ... 900
    # by t = 1 s (tick 1000 is handled just after the last step ends).
    printed = "boot\n" + "".join(f"ticks={n}\n" for n in range(100, 1000, 100))
    assert result["console_bytes"][-1] == len(printed)
    grew = result["time"][np.flatnonzero(np.diff(result["console_bytes"])) + 1]
    # "boot" in the first step, then each report in the step covering its tick.
    assert np.allclose(grew, [0.001, *np.arange(0.101, 1.0, 0.1)])
    assert not qemu_children()


def test_libcosimpy(fmu):
    from libcosimpy.CosimExecution import CosimExecution
    from libcosimpy.CosimObserver import CosimObserver
    from libcosimpy.CosimSlave import CosimLocalSlave

    execution = CosimExecution.from_step_size(step_size=int(STEP * 1e9))
    index = execution.add_local_slave(
        CosimLocalSlave(fmu_path=str(fmu), instance_name="qemu"))
    observer = CosimObserver.create_last_value()
    execution.add_observer(observer)
    refs = {v.name.decode(): v.reference for v in execution.slave_variables(index)}
    assert execution.simulate_until(int(STOP * 1e9))
    qemu_time, = observer.last_real_values(index, [refs["qemu_time"]])
    steps, = observer.last_integer_values(index, [refs["sync_steps"]])
    assert qemu_time == pytest.approx(STOP, abs=1e-6)
    assert steps == round(STOP / STEP)
    del execution
    assert not qemu_children()


def test_variable_step_sizes_keep_microsecond_agreement(fmu, unzipped):
    sizes = [1e-3, 0.3e-3, 7e-3, 1e-6, 0.0137, 2.5e-4, 0.1, 3.3e-5]
    qemu = Instance(fmu, unzipped)
    qemu.start(start_time=0.25)
    t = 0.25
    try:
        for k in range(200):
            h = sizes[k % len(sizes)]
            qemu.slave.doStep(t, h)
            t += h
            assert abs(qemu.get("qemu_time") - t) <= 1e-9, f"step {k}"
    finally:
        qemu.close()


def test_two_instances_side_by_side(fmu, unzipped):
    a = Instance(fmu, unzipped, "a")
    b = Instance(fmu, unzipped, "b")
    a.start()
    b.start()
    try:
        assert len(qemu_children()) == 2
        for k in range(300):
            a.slave.doStep(k * STEP, STEP)
            if k % 3 == 0:
                b.slave.doStep(k // 3 * 3 * STEP, 3 * STEP)
        assert a.get("qemu_time") == pytest.approx(0.3, abs=1e-6)
        assert b.get("qemu_time") == pytest.approx(0.3, abs=1e-6)
        assert a.get("console_bytes") == b.get("console_bytes") > 0
    finally:
        a.close()
        b.close()
    assert not qemu_children()


def test_instantiate_terminate_cycles_leave_nothing_behind(fmu, unzipped):
    def cycle():
        qemu = Instance(fmu, unzipped)
        qemu.start()
        qemu.slave.doStep(0.0, STEP)
        qemu.close()

    cycle()  # let fmpy and the interpreter load what they keep
    before = open_descriptors()
    for _ in range(50):
        cycle()
    assert not qemu_children()
    assert open_descriptors() == before


def test_same_simulation_twice_gives_identical_outputs(fmu, tmp_path):
    runs = []
    for k in range(2):
        transcript = tmp_path / f"console{k}.txt"
        result = simulate_fmu(
            str(fmu), stop_time=0.5, output_interval=STEP,
            start_values={"console_file": str(transcript)},
            output=["qemu_time", "sync_steps", "console_bytes"])
        runs.append((result.tobytes(), transcript.read_bytes()))
    assert runs[0] == runs[1]
    assert b"ticks=400" in runs[0][1]


def test_guest_timer_agrees_with_master_time(fmu, tmp_path):
    """Each `ticks=N` (N ms of guest time) arrives in the step that covers N ms."""
    transcript = tmp_path / "console.txt"
    step = 7e-4
    simulate_fmu(str(fmu), stop_time=1.0, output_interval=step,
                 start_values={"console_file": str(transcript)})
    stamped = re.findall(r"^\[\s*([\d.]+)\] ticks=(\d+)$",
                         transcript.read_text(), re.M)
    assert [int(n) for _, n in stamped] == list(range(100, 1000, 100))
    for stamp, n in stamped:
        guest = int(n) * 1e-3
        assert guest < float(stamp) <= guest + step + 1e-9


def test_model_description_validates(fmu):
    fmpy = Path(sys.executable).parent / "fmpy"
    proc = subprocess.run([str(fmpy), "validate", str(fmu)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "No problems found" in proc.stdout, proc.stdout
    from fmpy import read_model_description
    md = read_model_description(str(fmu))
    assert md.coSimulation.canHandleVariableCommunicationStepSize
    units = {v.name: v.unit for v in md.modelVariables}
    assert units["qemu_time"] == units["step_timeout"] == "s"


def test_many_loads_in_one_process(fmu):
    """Fresh extractions, instantiated again and again in one interpreter."""
    for _ in range(5):
        result = simulate_fmu(str(fmu), stop_time=0.01, output_interval=STEP,
                              output=["qemu_time"])
        assert result["qemu_time"][-1] == pytest.approx(0.01, abs=1e-9)


def test_next_event_time_is_the_next_tick_or_minus_1(fmu, unzipped, guests):
    """next_event_time: master time of the guest's next timer; -1 for a
    guest with none pending (arm-idle enables no interrupt source)."""
    seen = {}
    for image in ("", str(guests / "arm-idle.elf")):
        qemu = Instance(fmu, unzipped, guest_image=image)
        qemu.start(start_time=2.0)
        try:
            for k in range(5):
                qemu.slave.doStep(2.0 + k * 3e-4, 3e-4)
            seen[image] = qemu.get("next_event_time")
        finally:
            qemu.close()
    # The default guest's 1 ms SysTick: after 1.5 ms, the tick at 2 ms,
    # late by the time the guest took to start it (some 80 instructions,
    # 2.5 us at the board's rate).
    assert seen[""] == pytest.approx(2.002, abs=5e-6)
    assert seen[str(guests / "arm-idle.elf")] == -1.0
