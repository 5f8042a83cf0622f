"""Where QEMU processes come from and how they go away."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import kvm_usable
from fmi_helpers import Instance, qemu_children

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
        qemu.close()
    finally:
        os.close(leak_r)
        os.close(leak_w)
    assert not targets & ours, "QEMU inherited a descriptor it should not have"
    assert sum(t.startswith("socket:") for t in targets) == 1
    assert argv[argv.index(b"-nic") + 1] == b"none"
    assert b"/bin/sh" not in argv[0]


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
        from fmi_helpers import Instance, qemu_children
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
    time catches up, so QEMU is never behind and never a step further ahead."""
    qemu = Instance(fmu, unzipped, accelerator="kvm", machine="pc",
                    qemu_system="x86_64",
                    guest_image=str(guests / "x86-idle.elf"))
    qemu.start()
    t = 0.0
    try:
        for k in range(500):
            h = (1e-3, 3e-4, 2e-3)[k % 3]
            ahead_before = qemu.get("qemu_time") - t
            steps_before = qemu.get("sync_steps")
            qemu.slave.doStep(t, h)
            t += h
            ahead = qemu.get("qemu_time") - t
            assert ahead >= -1e-6, f"step {k}: QEMU behind by {-ahead} s"
            if ahead_before >= h:
                assert qemu.get("sync_steps") == steps_before, f"step {k}"
            else:
                assert qemu.get("sync_steps") == steps_before + 1
    finally:
        qemu.close()
