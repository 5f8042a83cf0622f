"""Where QEMU processes come from and how they go away."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from fmpy.fmi1 import FMICallException
from fmpy.fmi2 import fmi2Discard

from conftest import kvm_usable
from fmi_helpers import Instance, children, qemu_children

STEP = 1e-3


def _wait_gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat[stat.rindex(")") + 2] == "Z":
            return True
        time.sleep(0.02)
    return False


def test_qemu_inherits_only_its_socket_and_has_no_network(fmu, unzipped):
    leak_r, leak_w = os.pipe()
    os.set_inheritable(leak_r, True)
    os.set_inheritable(leak_w, True)
    try:
        qemu = Instance(fmu, unzipped)
        qemu.start()
        pid, = qemu_children()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        targets = {os.readlink(f"/proc/{pid}/fd/{fd}")
                   for fd in os.listdir(f"/proc/{pid}/fd")}
        ours = {os.readlink(f"/proc/self/fd/{fd}") for fd in (leak_r, leak_w)}
        kids = children()
        exe = os.readlink(f"/proc/{pid}/exe")
        pgrp, session = os.getpgid(pid), os.getsid(pid)
        qemu.close()
    finally:
        os.close(leak_r)
        os.close(leak_w)
    assert not targets & ours, "QEMU inherited a descriptor it should not have"
    assert sum(t.startswith("socket:") for t in targets) == 1
    assert argv[argv.index(b"-nic") + 1] == b"none"
    # Started directly, never through a shell or any other intermediary:
    # the master's only child is the shipped QEMU itself.
    assert kids == {pid: "qemu-system-arm"}
    shipped = (unzipped / "resources" / "qemu" / "bin" / "qemu-system-arm").resolve()
    assert exe == str(shipped) and argv[0] == bytes(shipped)
    assert pgrp == pid, "QEMU is not in a process group of its own"
    assert session == pid, "QEMU is not in a session of its own"


def test_free_without_terminate_stops_qemu(fmu, unzipped):
    qemu = Instance(fmu, unzipped)
    qemu.start()
    qemu.slave.doStep(0.0, STEP)
    assert len(qemu_children()) == 1
    qemu.slave.freeInstance()
    assert not qemu_children()


def test_reset_gives_a_fresh_qemu(fmu, unzipped):
    qemu = Instance(fmu, unzipped)
    qemu.start()
    first, = qemu_children()
    for k in range(10):
        qemu.slave.doStep(k * STEP, STEP)
    qemu.slave.reset()
    assert not qemu_children()
    qemu.start()
    second, = qemu_children()
    assert second != first
    assert qemu.get("qemu_time") == 0.0
    qemu.slave.doStep(0.0, STEP)
    assert qemu.get("qemu_time") == pytest.approx(STEP, abs=1e-6)
    assert qemu.get("sync_steps") == 1
    qemu.close()


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_master_death_takes_qemu_along(fmu, unzipped, tmp_path, how):
    """A master that dies mid-run, however it dies, leaves no QEMU."""
    master = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from fmi_helpers import Instance, children, qemu_children
        from pathlib import Path
        qemu = Instance(Path({str(fmu)!r}), Path({str(unzipped)!r}))
        qemu.start()
        qemu.slave.doStep(0.0, 0.001)
        print(qemu_children()[0], flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", master],
                            stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "the master did not start QEMU within 60 s"
        qemu_pid = int(proc.stdout.readline())
        proc.send_signal(how)
        proc.wait(timeout=10)
        assert _wait_gone(qemu_pid, within=2.0)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(kvm_usable() is not None, reason=str(kvm_usable()))
def test_kvm_overshoot_is_absorbed_by_later_steps(fmu, unzipped, guests):
    """KVM answers late by host latency; the FMU sits steps out until master
    time catches up, so QEMU is never behind and never a step ahead: when
    it is advanced, it ends at most the step's own host time ahead; when it
    is a step or more ahead, it is left alone."""
    qemu = Instance(fmu, unzipped, accelerator="kvm", machine="pc",
                    qemu_system="x86_64",
                    guest_image=str(guests / "x86-idle.elf"))
    qemu.start()
    t = 0.0
    sat_out = advanced = 0
    try:
        # 10 us steps are shorter than a round trip: QEMU ends up ahead.
        for k in range(600):
            h = (1e-3, 1e-5, 3e-4, 1e-5, 2e-3)[k % 5]
            ahead_before = qemu.get("qemu_time") - t
            steps_before = qemu.get("sync_steps")
            wall = time.monotonic()
            qemu.slave.doStep(t, h)
            wall = time.monotonic() - wall
            t += h
            ahead = qemu.get("qemu_time") - t
            assert ahead >= -1e-9, f"step {k}: QEMU behind by {-ahead} s"
            if ahead_before >= h - 1e-9:
                sat_out += 1
                assert qemu.get("sync_steps") == steps_before, f"step {k}"
                assert ahead == pytest.approx(ahead_before - h, abs=1e-9)
            else:
                advanced += 1
                assert qemu.get("sync_steps") == steps_before + 1
                assert ahead <= wall, f"step {k}: {ahead} s ahead"
    finally:
        qemu.close()
    assert sat_out and advanced, (sat_out, advanced)


def test_terminate_lets_qemu_exit_and_kills_it_after_1_s(fmu, unzipped):
    """fmi2Terminate closes the socket: QEMU exits by itself (status 0, no
    warning) at once, or is killed after 1 s if it does not (here: it is
    stopped with SIGSTOP, so it cannot)."""
    durations, logs = [], []
    for stop_it in (False, True):
        qemu = Instance(fmu, unzipped)
        qemu.start()
        qemu.slave.doStep(0.0, STEP)
        pid, = qemu_children()
        if stop_it:
            os.kill(pid, signal.SIGSTOP)
        start = time.monotonic()
        qemu.slave.terminate()
        durations.append(time.monotonic() - start)
        logs.append(qemu.log_text())
        assert not qemu_children()
        qemu.slave.freeInstance()
    assert durations[0] < 0.5
    assert "QEMU exited with status" not in logs[0]
    assert 1.0 <= durations[1] < 3.0
    assert "QEMU exited with status -9" in logs[1]


def test_master_death_alone_stops_qemu(fmu, unzipped):
    """The master process dies while a process it forked keeps a copy of
    its end of the socket open, so QEMU sees no end-of-file: the
    parent-death mechanism alone must end QEMU."""
    master = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from fmi_helpers import Instance, qemu_children
        from pathlib import Path
        qemu = Instance(Path({str(fmu)!r}), Path({str(unzipped)!r}))
        qemu.start()
        qemu.slave.doStep(0.0, 0.001)
        holder = os.fork()  # inherits every descriptor, the socket too
        if holder == 0:
            time.sleep(60)
            os._exit(0)
        print(qemu_children()[0], holder, flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", master],
                            stdout=subprocess.PIPE, text=True)
    holder = None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "the master did not start QEMU within 60 s"
        qemu_pid, holder = map(int, proc.stdout.readline().split())
        proc.kill()
        proc.wait(timeout=10)
        assert _wait_gone(qemu_pid, within=2.0), "QEMU outlived its master"
        assert Path(f"/proc/{holder}").exists(), "the socket's holder died too"
    finally:
        proc.kill()
        proc.wait()
        if holder:
            os.kill(holder, signal.SIGKILL)


def _exit_status(pid: int) -> int | None:
    stat = Path(f"/proc/{pid}/stat").read_text()
    status = int(stat[stat.rindex(")") + 2:].split()[49])
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else None


def _socket_fds() -> set[int]:
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                found.add(int(fd))
        except OSError:  # the descriptor listdir itself used
            pass
    return found


def test_socket_close_alone_stops_qemu(fmu, unzipped):
    """The master's end of the socket goes away (as when the master dies)
    while the thread that started QEMU lives on: QEMU exits by itself with
    status 0, and the next step reports it."""
    before = _socket_fds()
    qemu = Instance(fmu, unzipped)
    qemu.start()
    qemu.slave.doStep(0.0, STEP)
    pid, = qemu_children()
    ours, = _socket_fds() - before
    # Replace, not close: the FMU still owns the number and closes it later;
    # what it finds there now is a socket whose other end is gone.
    stand_in, gone = socket.socketpair()
    with stand_in, gone:
        os.dup2(stand_in.fileno(), ours)
    assert _wait_gone(pid, within=2.0), "QEMU outlived its socket"
    assert _exit_status(pid) == 0
    with pytest.raises(FMICallException) as failure:
        qemu.slave.doStep(STEP, STEP)
    assert failure.value.status == fmi2Discard
    assert re.search(r"QEMU ended during the step .* exited with status 0",
                     qemu.log_text()), qemu.log_text()
    assert not qemu_children()


def test_qemu_outlives_the_master_thread_that_started_it(fmu, unzipped):
    """QEMU watches the master's process, not the thread that started it:
    libcosim's workers start QEMU and end while the simulation goes on."""
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
        # A thread-bound death signal is sent when the thread is gone.
        thread = Path(f"/proc/self/task/{starter.native_id}")
        deadline = time.monotonic() + 10
        while thread.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not thread.exists(), "the starting thread did not end"
        t = 0.0
        for _ in range(100):
            qemu.slave.doStep(t, 0.001)
            t += 0.001
        assert abs(qemu.get("qemu_time") - 0.1) < 1e-9
    finally:
        qemu.close()
