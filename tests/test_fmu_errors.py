"""Every way an FMU call can fail: a clear status, a message, no QEMU left.

None of these tests calls terminate or free after the failure, as fmpy
does after an error: the FMU itself must have cleaned up.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fmpy.fmi1 import FMICallException
from fmpy.fmi2 import fmi2Discard, fmi2Error, fmi2Terminated

from fmi_helpers import Instance, qemu_children
from helpers import running

STEP = 1e-3


def x86(guests, image: str, **more) -> dict:
    return {"guest_image": str(guests / image), "machine": "pc",
            "qemu_system": "x86_64", **more}


def _assert_step_fails(qemu: Instance, t: float, h: float, message: str,
                       within: float = 5.0) -> None:
    start = time.monotonic()
    with pytest.raises(FMICallException) as failure:
        qemu.slave.doStep(t, h)
    # README: fmi2Discard, with the terminated flag: the master must stop.
    assert failure.value.status == fmi2Discard
    assert qemu.slave.getBooleanStatus(fmi2Terminated)
    assert time.monotonic() - start < within
    assert re.search(message, qemu.log_text()), qemu.log_text()
    assert not qemu_children()


@pytest.mark.parametrize("h", [0.0, -1e-3, math.nan, math.inf])
def test_bad_step_size(fmu, unzipped, h):
    qemu = Instance(fmu, unzipped)
    qemu.start()
    qemu.slave.doStep(0.0, STEP)
    _assert_step_fails(qemu, STEP, h, r"step size .* must be finite and > 0")


def test_step_beyond_protocol_range(fmu, unzipped):
    qemu = Instance(fmu, unzipped)
    qemu.start()
    _assert_step_fails(qemu, 0.0, 1e12, r"exceeds the protocol.s limit")


@pytest.mark.parametrize("params,message", [
    ({"guest_image": "/nonexistent/fw.elf"}, r"guest image .* does not exist"),
    ({"qemu_binary": "/nonexistent/qemu"}, r"QEMU binary .* does not exist"),
    ({"qemu_system": "mips"}, r"ships no qemu-system-mips"),
    ({"accelerator": "hvf"}, r"accelerator 'hvf' is not one of"),
    ({"icount_shift": 11}, r"icount_shift 11 is outside"),
    ({"icount_shift": -2}, r"icount_shift -2 is outside 0..10 \(or -1"),
    ({"step_timeout": 0.0}, r"step_timeout .* must be a positive"),
    ({"extra_args": "-no-such-option"}, r"invalid option"),
    ({"machine": "no-such-board"}, r"unsupported machine type"),
])
def test_bad_parameters_fail_initialization(fmu, unzipped, params, message):
    qemu = Instance(fmu, unzipped, **params)
    with pytest.raises(FMICallException) as failure:
        qemu.start()
    assert failure.value.status == fmi2Error
    assert re.search(message, qemu.log_text()), qemu.log_text()
    assert not qemu_children()


def test_qemu_binary_that_is_not_executable(fmu, unzipped, tmp_path):
    binary = tmp_path / "qemu-system-arm"
    binary.write_bytes(b"\x7fELF")
    binary.chmod(0o644)
    qemu = Instance(fmu, unzipped, qemu_binary=str(binary))
    with pytest.raises(FMICallException) as failure:
        qemu.start()
    assert failure.value.status == fmi2Error
    assert re.search(r"QEMU binary .* is not executable", qemu.log_text())
    assert not qemu_children()


@pytest.mark.parametrize("kind,problem", [
    ("directory", "is a directory, not a file"), ("missing", "does not exist")])
def test_guest_image_that_is_no_file(fmu, unzipped, tmp_path, kind, problem):
    image = tmp_path if kind == "directory" else tmp_path / "nothing.elf"
    qemu = Instance(fmu, unzipped, guest_image=str(image))
    with pytest.raises(FMICallException) as failure:
        qemu.start()
    assert failure.value.status == fmi2Error
    assert f"guest image {image} {problem} (parameter guest_image)" in qemu.log_text()
    assert not qemu_children()


# The instance lives in a child process that cannot read the image: root
# reads anything, so as root the child runs without the capabilities that
# let it (setpriv, util-linux); os.access then answers as for anyone else.
_UNREADABLE = """
import sys
sys.path.insert(0, {tests!r})
from fmpy.fmi1 import FMICallException
from fmi_helpers import Instance, qemu_children
fmu, unzipped, image = sys.argv[1:]
qemu = Instance(fmu, unzipped, guest_image=image)
try:
    qemu.start()
    sys.exit("initialization ended")
except FMICallException as e:
    print(e.status, qemu_children())
    print(qemu.log_text())
"""
NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
          "--inh-caps", "-dac_override,-dac_read_search"]


def test_unreadable_guest_image(fmu, unzipped, tmp_path):
    image = tmp_path / "fw.elf"
    image.write_bytes(b"x")
    image.chmod(0)
    done = subprocess.run(
        [*(NO_DAC if os.geteuid() == 0 else []), sys.executable, "-c",
         _UNREADABLE.format(tests=str(Path(__file__).parent)), str(fmu),
         str(unzipped), str(image)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    status, log = done.stdout.split("\n", 1)
    assert status == f"{fmi2Error} []"
    assert f"guest image {image} is not readable (parameter guest_image)" in log


def test_qemu_killed_mid_step(fmu, unzipped, guests):
    qemu = Instance(fmu, unzipped, **x86(guests, "x86-busy.elf"))
    qemu.start()
    qemu.slave.doStep(0.0, STEP)
    victim, = qemu_children()

    def kill_mid_step() -> None:
        running(victim)         # QEMU took the 1000 s advance and runs it
        os.kill(victim, signal.SIGKILL)

    threading.Thread(target=kill_mid_step, daemon=True).start()
    _assert_step_fails(qemu, STEP, 1000.0, r"killed by signal 9")


def test_guest_power_off(fmu, unzipped, guests):
    qemu = Instance(fmu, unzipped, **x86(guests, "x86-poweroff.elf"))
    qemu.start()
    t = 0.0
    with pytest.raises(FMICallException) as failure:
        for _ in range(10_000):
            qemu.slave.doStep(t, 0.01)
            t += 0.01
    assert failure.value.status == fmi2Discard
    assert qemu.slave.getBooleanStatus(fmi2Terminated)
    assert re.search(r"guest powered off", qemu.log_text()), qemu.log_text()
    assert not qemu_children()


def test_guest_panic(fmu, unzipped, guests, tmp_path):
    """README: a guest panic (pvpanic) is fmi2Discard, terminated; what the
    guest printed in that step still arrives: console, log, console_file."""
    transcript = tmp_path / "console.txt"
    qemu = Instance(fmu, unzipped, **x86(guests, "x86-panic.elf",
                                         extra_args="-device pvpanic",
                                         console_file=str(transcript)))
    qemu.start()
    t = 0.0
    with pytest.raises(FMICallException) as failure:
        for _ in range(1000):
            qemu.slave.doStep(t, STEP)
            t += STEP
    assert failure.value.status == fmi2Discard
    assert qemu.slave.getBooleanStatus(fmi2Terminated)
    assert "the guest panicked" in qemu.log_text(), qemu.log_text()
    # The panic step printed the line: it is that step's output.
    assert qemu.get("console") == "oops\n"
    assert qemu.get("console_bytes") == len("oops\n")
    assert re.search(r"\] oops$", qemu.log_text(), re.M), qemu.log_text()
    assert transcript.read_text().endswith("] oops\n")
    assert not qemu_children()


def test_step_exceeding_wall_clock_timeout(fmu, unzipped, guests):
    qemu = Instance(fmu, unzipped, **x86(guests, "x86-busy.elf",
                                         step_timeout=0.5))
    qemu.start()
    _assert_step_fails(qemu, 0.0, 1000.0, r"did not answer within 0.5 s")


def test_steps_after_a_failure_are_errors(fmu, unzipped):
    """The master was told to stop (Discard, terminated); stepping on is a
    misuse: fmi2Error, and the instance can still be freed."""
    qemu = Instance(fmu, unzipped)
    qemu.start()
    _assert_step_fails(qemu, 0.0, -1.0, r"must be finite")
    with pytest.raises(FMICallException) as failure:
        qemu.slave.doStep(0.0, STEP)
    assert failure.value.status == fmi2Error
    assert re.search(r"after a failure", qemu.log_text()), qemu.log_text()
