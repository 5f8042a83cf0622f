"""Messages reach the right instance's log in a Python master with several
FMU instances, whatever order they are freed and collected in.

fmpy's logger proxy keeps one process-wide slot for the Python callback;
a callback collected with its instance dangles, and the next message of
another instance then crashes the master (seen as segfaults and glibc's
"corrupted double-linked list").  tests/fmi_helpers.py routes every message
through one immortal callback; this test holds it to that, in a process of
its own so that a crash is a failure.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from pathlib import Path

from fmi_helpers import Instance

HERE = Path(__file__).resolve().parent


def test_an_instance_logs_after_another_was_freed_and_collected(fmu, unzipped):
    master = textwrap.dedent(f"""
        import gc, sys
        sys.path.insert(0, {str(HERE)!r})
        from pathlib import Path
        from fmi_helpers import Instance
        fmu, unzipped = Path({str(fmu)!r}), Path({str(unzipped)!r})
        a = Instance(fmu, unzipped, name="a", logging_on=False)
        b = Instance(fmu, unzipped, name="b", logging_on=False)
        b.slave.freeInstance()
        del b
        gc.collect()
        junk = [bytearray(64) for _ in range(10000)]   # reuse freed memory
        for _ in range(20):
            try:
                a.slave.getReal([999])    # an Error, logged through the proxy
            except Exception:
                pass
        assert "variable 999" in a.log_text(), a.log_text()
        a.slave.freeInstance()
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", master], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (
        f"master exited with {done.returncode}: {done.stderr[-2000:]}")


def _python_slave(name: str):
    """The slave object behind instance ``name`` (the FMU's Python runs in
    this interpreter under fmpy)."""
    found = [o for o in gc.get_objects()
             if any(c.__name__ == "QemuSlave" for c in type(o).__mro__)
             and o.instance_name == name]
    assert len(found) == 1, found
    return found[0]


def test_the_slave_builds_no_guest_line_the_master_does_not_take(fmu, unzipped,
                                                                guests):
    """The loader hands the master's logging settings (loggingOn, then
    fmi2SetDebugLogging) to the slave, so that a guest printing every step
    costs no message nobody reads; what the master asks for still comes."""
    inst = Instance(fmu, unzipped, name="quiet", logging_on=False,
                    guest_image=str(guests / "arm-ticks.elf"))  # a line per ms
    slave = _python_slave("quiet")
    built = []
    log = slave.log
    slave.log = lambda msg, *a, **kw: (built.append(kw.get("category")),
                                       log(msg, *a, **kw))[1]
    inst.start()
    try:
        for k in range(10):
            inst.slave.doStep(k * 1e-3, 1e-3)
        assert "ticks=9" in inst.get("console")
        assert "logGuestConsole" not in built           # loggingOn false
        inst.slave.setDebugLogging(True, ["logStatusError"])
        for k in range(10, 20):
            inst.slave.doStep(k * 1e-3, 1e-3)
        assert "logGuestConsole" not in built           # not that category
        inst.slave.setDebugLogging(True, ["logGuestConsole"])
        for k in range(20, 30):
            inst.slave.doStep(k * 1e-3, 1e-3)
        assert built.count("logGuestConsole") == 10
        assert "ticks=29" in inst.log_text()
        inst.slave.setDebugLogging(True, [])            # every category
        inst.slave.doStep(30e-3, 1e-3)
        assert built.count("logGuestConsole") == 11
    finally:
        inst.close()
