"""FMU states (issue 7): roll back, branch and move a running QEMU.

Everything goes through fmpy's raw FMI 2.0 API (FMU2Slave.getFMUstate,
setFMUstate, freeFMUstate, serializeFMUstate, deSerializeFMUstate) on the
real FMU, QEMU and guests.  A continuation after a restore must equal the
original continuation at every step: every output, the console bytes with
their step, the guest's next timer.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

import pytest
from fmpy.fmi1 import FMICallException
from fmpy.fmi2 import fmi2Discard, fmi2Error

from c_host import run_host, start, values
from conftest import REPO, arm_argv, checked, kvm_usable
from fmi_helpers import Instance, open_descriptors, qemu_children
from qemufmu.process import QemuProcess
from qemufmu.protocol import StateRefused

OUTPUTS = ("qemu_time", "sync_steps", "console", "console_bytes",
           "next_event_time")
STEP = 1e-3
WAIT = 30.0  # s: bound on every wait for QEMU


def record(inst: Instance, t: float, steps: int, step: float = STEP) -> list:
    """Run ``steps`` steps from ``t``; every output after every step."""
    rows = []
    for k in range(steps):
        inst.slave.doStep(currentCommunicationPoint=t + k * step,
                          communicationStepSize=step)
        rows.append(tuple(inst.get(name) for name in OUTPUTS))
    return rows


@pytest.fixture(scope="module")
def pi_fmu(tmp_path_factory) -> tuple[Path, Path]:
    """A --config FMU (the PI controller) built now, and where it is unpacked."""
    from fmpy import extract
    config = REPO / "examples" / "closed_loop" / "pi_speed.toml"
    tmp = tmp_path_factory.mktemp("pi")
    out = tmp / "PiSpeedController.fmu"
    subprocess.run([sys.executable, str(REPO / "build_fmu.py"), "--config",
                    str(config), "--output", str(out)], check=True,
                   capture_output=True, timeout=100)
    return out, Path(extract(str(out), str(tmp / "unzipped")))


def test_fmus_declare_state_support(fmu, pi_fmu):
    for path in (fmu, pi_fmu[0]):
        xml = zipfile.ZipFile(path).read("modelDescription.xml").decode()
        assert 'canGetAndSetFMUstate="true"' in xml, path
        assert 'canSerializeFMUstate="true"' in xml, path


def test_roll_back_at_random_points_continues_identically(fmu, unzipped):
    """States taken during a 1 ms-step run; each restored, the rest re-run."""
    steps = 400
    picks = sorted(random.Random(7).sample(range(1, steps - 20), 3))
    inst = Instance(fmu, unzipped)
    inst.start()
    rows, states = [], {}
    for k in range(steps):
        if k in picks:
            states[k] = inst.slave.getFMUstate()
        rows += record(inst, k * STEP, 1)
    assert any(r[2] for r in rows), "the guest printed nothing to compare"
    for k in reversed(picks):     # later states first: time really goes back
        inst.slave.setFMUstate(states[k])
        again = record(inst, k * STEP, steps - k)
        assert again == rows[k:], f"continuation from step {k} differs"
    assert len(qemu_children()) == 1
    for state in states.values():
        inst.slave.freeFMUstate(state)
    inst.close()
    assert qemu_children() == []


def test_branching_three_times_leaves_nothing_behind(fmu, unzipped, guests,
                                                     tmp_path, monkeypatch):
    """Boot once, then three what-ifs with different console input."""
    tmp = tmp_path / "tmp"      # where the FMU and QEMU would put files
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    fds = open_descriptors()
    inst = Instance(fmu, unzipped, guest_image=guests / "arm-echo.elf")
    inst.start()
    record(inst, 0.0, 20)
    state = inst.slave.getFMUstate()
    runs = {}
    for text in ("abc", "xyz", "abc"):
        inst.slave.setFMUstate(state)
        inst.set("console_in", text)
        runs.setdefault(text, []).append(record(inst, 20 * STEP, 30))
        assert len(qemu_children()) == 1
    assert runs["abc"][0] == runs["abc"][1]
    assert runs["abc"][0] != runs["xyz"][0]
    # each branch equals a run from scratch with the same inputs
    fresh = Instance(fmu, unzipped, name="fresh", guest_image=guests / "arm-echo.elf")
    fresh.start()
    record(fresh, 0.0, 20)
    fresh.set("console_in", "xyz")
    assert record(fresh, 20 * STEP, 30) == runs["xyz"][0]
    fresh.close()
    inst.slave.freeFMUstate(state)
    inst.close()
    assert qemu_children() == []
    assert list(tmp.iterdir()) == []
    assert open_descriptors() == fds


def test_state_holds_console_input_the_guest_has_not_taken(fmu, unzipped, guests):
    """The echo guest takes a byte only as fast as its UART allows."""
    inst = Instance(fmu, unzipped, guest_image=guests / "arm-echo.elf")
    inst.start()
    record(inst, 0.0, 5)
    inst.set("console_in", "".join(chr(33 + i % 90) for i in range(3000)))
    step = 50e-6       # far less than 3000 bytes take
    record(inst, 5 * STEP, 1, step)
    t = 5 * STEP + step
    state = inst.slave.getFMUstate()
    first = record(inst, t, 200)
    echoed = "".join(r[2] for r in first)
    assert echoed.count("rx ") > 1000, "the input was not still arriving"
    inst.slave.setFMUstate(state)
    assert record(inst, t, 200) == first
    inst.slave.freeFMUstate(state)
    inst.close()


MOVE = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {tests!r})
    from fmi_helpers import Instance
    from test_fmu_state import record
    from pathlib import Path
    inst = Instance(Path({fmu!r}), Path({unzipped!r}), name="moved")
    inst.start()
    state = inst.slave.deSerializeFMUstate(Path({blob!r}).read_bytes())
    inst.slave.setFMUstate(state)
    inst.slave.freeFMUstate(state)
    print(json.dumps(record(inst, {t!r}, {steps!r})))
    inst.close()
""")


def test_serialized_state_continues_in_another_process(fmu, unzipped, guests,
                                                       tmp_path):
    inst = Instance(fmu, unzipped, guest_image=guests / "arm-echo.elf")
    inst.start()
    record(inst, 0.0, 30)
    inst.set("console_in", "hello from the past")   # not sent yet: in the state
    state = inst.slave.getFMUstate()
    blob = tmp_path / "state.bin"
    blob.write_bytes(inst.slave.serializeFMUstate(state))
    inst.slave.freeFMUstate(state)
    expected = record(inst, 30 * STEP, 150)
    inst.slave.freeInstance()       # the original is gone before the move
    script = MOVE.format(tests=str(REPO / "tests"), fmu=str(fmu),
                         unzipped=str(unzipped), blob=str(blob),
                         t=30 * STEP, steps=150)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True,
                          text=True, timeout=100, cwd=REPO / "tests")
    assert done.returncode == 0, done.stderr
    moved = [tuple(r) for r in json.loads(done.stdout)]
    assert moved == expected
    assert "".join(r[2] for r in expected)


def refused(call, *args) -> None:
    """``call(*args)`` fails with fmi2Error, the status of a refused state."""
    with pytest.raises(FMICallException) as failure:
        call(*args)
    assert failure.value.status == fmi2Error


def test_corrupt_or_foreign_state_is_refused_and_instance_goes_on(fmu, unzipped,
                                                                  pi_fmu):
    # fmpy's logger proxy has one slot: the instance made last gets the log
    other = Instance(*pi_fmu, name="pi")
    other.start()
    foreign = other.slave.getFMUstate()     # same slave code, another FMU
    inst = Instance(fmu, unzipped)
    inst.start()
    record(inst, 0.0, 10)
    state = inst.slave.getFMUstate()
    blob = bytearray(inst.slave.serializeFMUstate(state))
    expected = record(inst, 10 * STEP, 50)
    inst.slave.setFMUstate(state)
    blob[len(blob) // 2] ^= 0xFF
    for bad, why in ((bytes(blob), f"its checksum does not match: {len(blob)} bytes"),
                     (bytes(blob[:1000]), "its checksum does not match: 1000 bytes"),
                     (b"not a state", "it is not a qemu-fmu state")):
        broken = inst.slave.deSerializeFMUstate(bad)
        logged = len(inst.messages)
        refused(inst.slave.setFMUstate, broken)
        assert why in "\n".join(m for _, m in inst.messages[logged:]), bad[:20]
        inst.slave.freeFMUstate(broken)
    refused(inst.slave.setFMUstate, foreign)
    assert "cannot restore a state of FMU 'PiSpeedController" in inst.log_text()
    other.slave.freeFMUstate(foreign)
    # nothing was half-restored: the run goes on from the good state
    assert record(inst, 10 * STEP, 50) == expected
    assert len(qemu_children()) == 2
    inst.slave.freeFMUstate(state)
    inst.close()
    other.close()
    assert qemu_children() == []


def test_state_restores_into_an_instance_without_qemu(fmu, unzipped, guests):
    """Before initialization ended, and after QEMU died, a new QEMU loads it."""
    inst = Instance(fmu, unzipped, guest_image=guests / "arm-echo.elf")
    inst.start()
    record(inst, 0.0, 20)
    inst.set("console_in", "again")
    state = inst.slave.getFMUstate()
    expected = record(inst, 20 * STEP, 60)
    os.kill(qemu_children()[0], 9)
    with pytest.raises(FMICallException) as failure:
        record(inst, 80 * STEP, 1)
    assert failure.value.status == fmi2Discard     # QEMU died in the step
    assert qemu_children() == []
    inst.slave.setFMUstate(state)           # the FMI way out of an error
    assert record(inst, 20 * STEP, 60) == expected
    inst.close()

    fresh = Instance(fmu, unzipped, name="fresh")   # default parameters
    fresh.slave.setupExperiment(startTime=0.0)
    fresh.slave.enterInitializationMode()
    fresh.slave.setFMUstate(state)          # parameters come with the state
    fresh.slave.exitInitializationMode()
    assert record(fresh, 20 * STEP, 60) == expected
    assert len(qemu_children()) == 1
    fresh.close()

    # a running instance with other parameters: its QEMU is replaced
    other = Instance(fmu, unzipped, name="other", icount_shift=2)
    other.start()
    record(other, 0.0, 5)
    other.slave.setFMUstate(state)
    assert record(other, 20 * STEP, 60) == expected
    assert len(qemu_children()) == 1
    other.slave.freeFMUstate(state)
    other.close()
    assert qemu_children() == []


def test_machine_stream_that_fails_to_load_ends_that_qemu(fmu, unzipped):
    """A well-formed state whose machine stream QEMU cannot load: QEMU exits
    rather than run half-restored; a good state makes the instance go on."""
    sys.path.insert(0, str(REPO / "fmu_src"))
    try:
        from qemufmu.fmustate import FmuState
    finally:
        sys.path.pop(0)
    inst = Instance(fmu, unzipped)
    inst.start()
    record(inst, 0.0, 10)
    state = inst.slave.getFMUstate()
    good = FmuState.from_bytes(inst.slave.serializeFMUstate(state))
    expected = record(inst, 10 * STEP, 30)
    cut = FmuState(good.fmu, good.slave, good.machine[:len(good.machine) // 2])
    broken = inst.slave.deSerializeFMUstate(cut.to_bytes())
    refused(inst.slave.setFMUstate, broken)
    assert "QEMU could not load the state" in inst.log_text()
    assert qemu_children() == []
    refused(record, inst, 10 * STEP, 1)     # no machine until a state loads
    inst.slave.setFMUstate(state)
    assert record(inst, 10 * STEP, 30) == expected
    for s in (state, broken):
        inst.slave.freeFMUstate(s)
    inst.close()
    assert qemu_children() == []


def test_a_load_that_fails_part_way_ends_qemu_with_status_1(guests):
    """docs/protocol-v2.md: a load that fails part-way answers RESULT with
    a non-zero status and a message, then QEMU exits with status 1 rather
    than run a half-restored machine."""
    argv = arm_argv(guests / "arm-ticks.elf", "/dev/null")
    with QemuProcess(argv, version=2) as a:
        a.channel.hello(timeout=WAIT)
        a.channel.advance(5_000_000, timeout=WAIT)
        state = a.channel.save_state(timeout=WAIT)
    with QemuProcess(argv, version=2) as b:
        b.channel.hello(timeout=WAIT)
        b.channel.advance(1_000_000, timeout=WAIT)
        with pytest.raises(StateRefused) as why:
            b.channel.load_state(state[:len(state) // 2], timeout=WAIT)
        assert str(why.value).strip()
        assert b.popen.wait(timeout=WAIT) == 1, b.stderr_text()


def test_x86_pc_guest_rolls_back_identically(fmu, unzipped, guests):
    inst = Instance(fmu, unzipped, machine="pc", qemu_system="x86_64",
                    guest_image=guests / "x86-busy.elf")
    inst.start()
    record(inst, 0.0, 50)
    state = inst.slave.getFMUstate()
    first = record(inst, 50 * STEP, 100)
    inst.slave.setFMUstate(state)
    assert record(inst, 50 * STEP, 100) == first
    inst.slave.freeFMUstate(state)
    inst.close()


@pytest.mark.skipif(kvm_usable() is not None, reason="needs /dev/kvm")
def test_kvm_refuses_states_with_a_clear_message(fmu, unzipped, guests):
    """docs/fmu-state.md: under kvm fmi2GetFMUstate fails with fmi2Error and
    the message, and the instance goes on; a state (always one of
    tcg-icount) set into it brings its parameters, accelerator included."""
    x86 = dict(machine="pc", qemu_system="x86_64", guest_image=guests / "x86-idle.elf")
    tcg = Instance(fmu, unzipped, name="tcg", **x86)
    tcg.start()
    record(tcg, 0.0, 5)
    state = tcg.slave.getFMUstate()
    expected = record(tcg, 5 * STEP, 20)
    tcg_qemu = set(qemu_children())
    inst = Instance(fmu, unzipped, accelerator="kvm", **x86)
    inst.start()
    record(inst, 0.0, 5)
    refused(inst.slave.getFMUstate)
    assert "machine states need accelerator tcg-icount" in inst.log_text()
    record(inst, 5 * STEP, 5)       # the instance goes on
    assert inst.get("qemu_time") >= 10 * STEP
    inst.slave.setFMUstate(state)
    assert record(inst, 5 * STEP, 20) == expected
    ours, = set(qemu_children()) - tcg_qemu
    argv = Path(f"/proc/{ours}/cmdline").read_bytes().split(b"\0")
    inst.close()
    assert b"-icount" in argv and b"kvm" not in argv
    tcg.slave.freeFMUstate(state)
    tcg.close()


def test_a_restore_is_marked_in_the_console_file(fmu, unzipped, tmp_path):
    """docs/fmu-state.md: the transcript is not rolled back; a restore
    appends `-- restored the state of t=... s`, then the restored run's lines."""
    transcript = tmp_path / "console.txt"
    inst = Instance(fmu, unzipped, console_file=str(transcript))
    inst.start()
    record(inst, 0.0, 150)              # boot, ticks=100
    state = inst.slave.getFMUstate()
    record(inst, 150 * STEP, 100)       # ticks=200
    inst.slave.setFMUstate(state)
    record(inst, 150 * STEP, 100)       # ticks=200 again
    inst.slave.freeFMUstate(state)
    inst.close()
    lines = transcript.read_text().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == [
        "boot", "ticks=100", "ticks=200", "-- restored the state of t=0.150000 s",
        "ticks=200"], lines
    assert lines[-1] == lines[2]        # the same line at the same time


def test_closed_loop_rolls_back_as_a_whole_system(guests):
    """examples/branching: controller and plant restored together, each
    what-if equal to a run from scratch, step by step.  In a process of its
    own: fmpy's logger proxy would call back into this one's dead loggers."""
    for name in ("PiSpeedController.fmu", "DcMotor.fmu"):  # what branch.py runs
        checked(guests, name)
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "branching" / "branch.py"),
         "--warmup", "0.3", "--what-if", "0.15", "--setpoints", "40,90"],
        capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("equals the run from scratch") == 2


def test_c_master_rolls_back_and_moves_a_state(fmus, fmi2_host, tmp_path):
    """The same through the loader shim in a C master with no Python of its
    own: roll back, and move the serialized state into a second instance."""
    q = fmus["qemu.fmu"]
    names = ("qemu_time", "sync_steps", "console_bytes", "next_event_time")
    kinds = {"qemu_time": "r", "next_event_time": "r"}

    def after(slot: str) -> str:
        return f"run {slot} 0.1 0.001 150\n" + "".join(
            f"get {slot} {kinds.get(n, 'i')} {q.vrs[n]}\n" for n in names)

    script = (start(q, "A") + "run A 0 0.001 100\nsave A\nserialize A\n"
              + after("A") + "restore A\n" + after("A") + "children -\n"
              + start(q, "B") + "deserialize B A\nrestore B\n" + after("B")
              + "freestate A\nfreestate B\nfree A\nfree B\nchildren -\n")
    out = run_host(fmi2_host, script, tmp_path).stdout
    for line in ("save A -> 0", "restore A -> 0", "deserialize B -> 0",
                 "restore B -> 0", "children 1", "children 0"):
        assert line in out, out
    assert re.search(r"serialize A \d+ bytes -> 0", out), out
    runs = [[values(out, slot, q.vrs[n]) for n in names] for slot in "AB"]
    original, again = [[series[i] for series in runs[0]] for i in (0, 1)]
    moved = [series[0] for series in runs[1]]
    assert original == again == moved
    assert float(original[0]) == pytest.approx(0.25, abs=1e-9)
    assert int(original[2]) > 0
