"""The loader's bridge to the Python slave (fmu_src/loader/bridge.c):
what it does differently from pythonfmu's export library, which it
replaces, and what it must do the same.

Everything runs the real FMUs through fmpy's raw FMI 2.0 API.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from fmpy.fmi1 import FMICallException
from fmpy.fmi2 import fmi2Error, fmi2LastSuccessfulTime, fmi2Terminated

from fmi_helpers import Instance, qemu_children

HERE = Path(__file__).resolve().parent
STEP = 1e-3


def dc_motor(fmus, **params) -> Instance:
    u = fmus["DcMotor.fmu"]
    return Instance(u.fmu, u.root, name="motor", **params)


def test_a_python_exception_is_an_error_with_its_message_and_the_instance_goes_on(
        fmus):
    """pythonfmu made any exception fmi2Fatal, lost its message and freed
    the slave; the bridge logs it and the slave lives on."""
    motor = dc_motor(fmus, time_constant=0.0, voltage=1.0)   # divides by zero
    motor.start()
    with pytest.raises(FMICallException) as failure:
        motor.slave.doStep(0.0, STEP)
    assert failure.value.status == fmi2Error
    assert ("do_step raised ZeroDivisionError: float division by zero "
            "(at dc_motor.py:") in motor.log_text(), motor.log_text()
    with pytest.raises(FMICallException) as failure:
        motor.slave.getReal([999])
    assert failure.value.status == fmi2Error
    assert "get_real raised KeyError: 999 (at fmi2slave.py:" in motor.log_text()
    # the same object, still usable: repaired, it steps on
    motor.set("time_constant", 0.05)
    motor.slave.doStep(0.0, STEP)
    assert 0.0 < motor.get("speed") < 10.0
    assert motor.slave.getRealStatus(fmi2LastSuccessfulTime) == STEP
    assert not motor.slave.getBooleanStatus(fmi2Terminated)
    motor.close()


def test_reset_makes_a_new_slave_of_the_same_class(fmus):
    motor = dc_motor(fmus, voltage=2.0)
    motor.start()
    for k in range(10):
        motor.slave.doStep(k * STEP, STEP)
    assert motor.get("speed") > 0.0
    motor.slave.reset()
    assert motor.get("speed") == 0.0 and motor.get("voltage") == 0.0
    motor.start()
    motor.slave.doStep(0.0, STEP)
    motor.close()


def test_instances_step_in_parallel_threads(fmu, unzipped):
    """Each call takes the GIL for itself, from whatever thread calls: two
    instances driven by two threads at once run as they would alone."""
    results: dict[str, tuple] = {}

    def run(name: str) -> None:
        qemu = Instance(fmu, unzipped, name=name)
        qemu.start()
        for k in range(200):
            qemu.slave.doStep(k * STEP, STEP)
        results[name] = (qemu.get("qemu_time"), qemu.get("sync_steps"),
                         qemu.get("console_bytes"))
        qemu.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert results["a"] == results["b"]
    assert results["a"][:2] == (pytest.approx(0.2, abs=1e-9), 200)
    assert not qemu_children()


def test_ctrl_c_during_a_step_reaches_the_python_master(fmu, unzipped, guests):
    """A KeyboardInterrupt raised inside the slave (the master's main
    thread runs the slave) fails the step with fmi2Error and is handed
    back to the master, which stops as Ctrl-C should make it.

    The SIGINT goes to the main thread (pthread_kill), where Python handles
    signals: sent to the process, the kernel may pick another thread and
    the main thread sleeps on in its wait for QEMU."""
    master = textwrap.dedent(f"""
        import signal, sys, threading, time
        sys.path.insert(0, {str(HERE)!r})
        from pathlib import Path
        from fmi_helpers import Instance
        qemu = Instance(Path({str(fmu)!r}), Path({str(unzipped)!r}),
                        guest_image={str(guests / "x86-busy.elf")!r},
                        machine="pc", qemu_system="x86_64", step_timeout=100.0)
        qemu.start()
        main = threading.main_thread().ident
        threading.Timer(1.0, signal.pthread_kill, (main, signal.SIGINT)).start()
        try:
            try:
                qemu.slave.doStep(0.0, 1000.0)
                print("step returned", flush=True)
            except Exception as e:
                print("step failed:", type(e).__name__, flush=True)
                time.sleep(5)
                print("no interrupt", flush=True)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        print("log:", qemu.log_text(), flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", master], capture_output=True,
                          text=True, timeout=60)
    assert "interrupted" in done.stdout, done.stdout + done.stderr
    assert "step returned" not in done.stdout
    assert "no interrupt" not in done.stdout
    assert "do_step raised KeyboardInterrupt" in done.stdout, done.stdout
