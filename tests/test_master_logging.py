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

import subprocess
import sys
import textwrap
from pathlib import Path

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
