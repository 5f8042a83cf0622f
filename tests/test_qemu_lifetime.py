"""QEMU lives exactly as long as the master's process, not its threads.

The FMU starts QEMU with `-qqq ...,parent=PID`: QEMU watches the master's
process (a pidfd) besides its socket, so a child the master forked, which
still holds the socket, does not keep QEMU alive; and a master thread that
started QEMU and then ended does not take QEMU with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from fmi_helpers import Instance

HERE = Path(__file__).resolve().parent


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return False


def test_qemu_ends_with_its_master_while_a_forked_child_holds_the_socket(
        fmu, unzipped):
    master = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(HERE)!r})
        from pathlib import Path
        from fmi_helpers import Instance, qemu_children
        qemu = Instance(Path({str(fmu)!r}), Path({str(unzipped)!r}))
        qemu.start()
        qemu.slave.doStep(0.0, 0.001)
        child = os.fork()      # inherits the socket, and outlives us
        if child == 0:
            time.sleep(30)
            os._exit(0)
        print(qemu_children()[0], child, flush=True)
        time.sleep(30)
    """)
    proc = subprocess.Popen([sys.executable, "-c", master], stdout=subprocess.PIPE,
                            text=True)
    child = None
    try:
        line = [None]
        reader = threading.Thread(target=lambda: line.__setitem__(
            0, proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=30)
        assert line[0], "the master did not start QEMU"
        qemu_pid, child = map(int, line[0].split())
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert _alive(child), "the forked child should still hold the socket"
        assert _gone_within(qemu_pid, 2.0), "QEMU outlived its master"
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if child:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_qemu_outlives_the_master_thread_that_started_it(fmu, unzipped):
    box: dict[str, Instance] = {}

    def start() -> None:
        box["qemu"] = Instance(fmu, unzipped)
        box["qemu"].start()

    starter = threading.Thread(target=start)
    starter.start()
    starter.join(timeout=30)
    assert not starter.is_alive() and "qemu" in box
    qemu = box["qemu"]
    try:
        time.sleep(0.3)    # a thread-bound death signal would have fired
        t = 0.0
        for _ in range(100):
            qemu.slave.doStep(t, 0.001)
            t += 0.001
        assert abs(qemu.get("qemu_time") - 0.1) < 1e-9
    finally:
        qemu.close()
