"""Each documented FMU parameter does what README.md says, seen from outside:
QEMU's command line, its executable, the guest's behaviour, the FMU log."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import QEMU_BIN, REPO
from fmi_helpers import Instance, qemu_children

STEP = 1e-3


def _argv(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def _run(qemu: Instance, steps: int, h: float = STEP) -> None:
    for k in range(steps):
        qemu.slave.doStep(k * h, h)


def test_host_network_gives_the_guest_user_networking(fmu, unzipped):
    seen = {}
    for network in (False, True):
        qemu = Instance(fmu, unzipped, host_network=network)
        qemu.start()
        try:
            pid, = qemu_children()
            argv = _argv(pid)
            seen[network] = argv[argv.index("-nic") + 1]
            _run(qemu, 10)
            assert qemu.get("qemu_time") == pytest.approx(10 * STEP, abs=1e-9)
        finally:
            qemu.close()
    assert seen == {False: "none", True: "user"}


@pytest.mark.parametrize("shift", [3, 10])
def test_icount_shift_sets_the_instruction_time(fmu, unzipped, shift):
    """Coarser instructions, same clock: the guest's 100 ms reports still
    come in the step that covers them, and time agrees to the ns."""
    qemu = Instance(fmu, unzipped, icount_shift=shift)
    qemu.start()
    reports = []
    try:
        pid, = qemu_children()
        argv = _argv(pid)
        assert argv[argv.index("-icount") + 1] == f"shift={shift},sleep=off"
        for k in range(350):
            qemu.slave.doStep(k * STEP, STEP)
            if "ticks=" in qemu.get("console"):
                reports.append((k, qemu.get("console")))
        assert qemu.get("qemu_time") == pytest.approx(0.35, abs=1e-9)
    finally:
        qemu.close()
    assert reports == [(100, "ticks=100\n"), (200, "ticks=200\n"),
                       (300, "ticks=300\n")]


@pytest.mark.parametrize("params,shift", [
    ({}, 5),                                        # mps2-an385: 25 MHz
    ({"machine": "pc", "qemu_system": "x86_64",
      "guest_image": "x86-idle.elf"}, 0),           # not a board: as before
    ({"icount_shift": 0}, 0),                       # set: what was set
])
def test_icount_shift_defaults_to_the_boards_own_clock(fmu, unzipped, guests,
                                                       params, shift):
    if "guest_image" in params:
        params = {**params, "guest_image": str(guests / params["guest_image"])}
    qemu = Instance(fmu, unzipped, **params)
    qemu.start()
    try:
        pid, = qemu_children()
        argv = _argv(pid)
        assert argv[argv.index("-icount") + 1] == f"shift={shift},sleep=off"
        assert qemu.get("icount_shift") == params.get("icount_shift", -1)
    finally:
        qemu.close()


def test_board_table_in_the_docs_matches_the_code():
    """docs/boards.md's table shows boards.py's clocks and shifts."""
    sys.path.insert(0, str(REPO / "fmu_src"))
    from qemufmu.boards import BOARD_CLOCK_HZ, board_shift

    rows = re.findall(r"^\| `([^|]+)` .*?\| ([\d.]+) MHz \| [\d.]+ \| (\d+) \|",
                      (REPO / "docs" / "boards.md").read_text(), re.M)
    documented = {name: (float(mhz) * 1e6, int(shift))
                  for names, mhz, shift in rows
                  for name in re.findall(r"[a-z0-9][\w-]*", names)}
    assert documented == {m: (hz, board_shift(m)) for m, hz in BOARD_CLOCK_HZ.items()}


def test_extra_args_are_split_like_a_shell_but_never_run_by_one(fmu, unzipped):
    """Quotes group words; `$HOME`, `;` and backquotes stay as they are."""
    name = "guest one; $HOME `id` $(id)"
    qemu = Instance(fmu, unzipped,
                    extra_args=f"-name '{name}' -uuid "
                               "12345678-1234-1234-1234-123456789abc")
    qemu.start()
    try:
        pid, = qemu_children()
        argv = _argv(pid)
        _run(qemu, 3)
    finally:
        qemu.close()
    assert argv[argv.index("-name") + 1] == name
    assert argv[argv.index("-uuid") + 1] == "12345678-1234-1234-1234-123456789abc"


def test_qemu_binary_overrides_the_shipped_one(fmu, unzipped, tmp_path):
    own = tmp_path / "my-qemu" / "qemu-system-arm"
    own.parent.mkdir()
    shutil.copy2(QEMU_BIN / "qemu-system-arm", own)
    qemu = Instance(fmu, unzipped, qemu_binary=str(own))
    qemu.start()
    try:
        pid, = qemu_children()
        exe = os.readlink(f"/proc/{pid}/exe")
        _run(qemu, 150)
        assert qemu.get("console_bytes") == len("boot\nticks=100\n")
    finally:
        qemu.close()
    assert exe == str(own)


def _guest_time(fmu, unzipped, guests, **params) -> tuple[int, float, float]:
    """(the guest's SYS_TIME at start, host time before, after the start)
    from firmware/arm/semitime.c, which prints it on its first line."""
    before = time.time()
    qemu = Instance(fmu, unzipped, guest_image=str(guests / "arm-semitime.elf"),
                    extra_args="-semihosting", **params)
    qemu.start()
    after = time.time()
    try:
        qemu.slave.doStep(0.0, 0.001)
        first = re.match(r"time=(\d+) clock=0 ", qemu.get("console"))
    finally:
        qemu.close()
    assert first, qemu.get("console")
    return int(first[1]), before, after


def test_rtc_base_sets_the_guest_wall_clock_and_host_follows_the_host(
        fmu, unzipped, guests):
    """README: the guest's wall clock starts at rtc_base (2024-01-01 by
    default) on simulation time; `host` starts it from the host's clock."""
    assert _guest_time(fmu, unzipped, guests)[0] == 1704067200
    assert _guest_time(fmu, unzipped, guests,
                       rtc_base="2030-06-15T12:30:00")[0] == 1907757000
    at, before, after = _guest_time(fmu, unzipped, guests, rtc_base="host")
    assert int(before) <= at <= after + 1


def test_logging_off_keeps_the_log_quiet(fmu, unzipped):
    """With loggingOn=false the guest console is not logged; with it on,
    it is (the same run, so the difference is the flag alone)."""
    logs, categories = {}, {}
    for on in (True, False):
        qemu = Instance(fmu, unzipped, logging_on=on)
        qemu.start()
        try:
            _run(qemu, 101)
            assert qemu.get("console_bytes") == len("boot\nticks=100\n")
        finally:
            qemu.close()
        logs[on] = qemu.log_text()
        categories[on] = dict(zip((m for _, m in qemu.messages), qemu.categories,
                                  strict=True))
    assert "[0.001000] boot" in logs[True] and "ticks=100" in logs[True]
    assert logs[False] == ""
    # README: console lines are logged in category logGuestConsole.
    assert categories[True]["[0.001000] boot"] == "logGuestConsole"
    assert categories[True]["[0.101000] ticks=100"] == "logGuestConsole"


MASTER = """
import os, sys
from fmpy import simulate_fmu
from pathlib import Path
fmu, image = sys.argv[1:3]
common = dict(stop_time=0.2, output_interval=1e-3,
              output=["qemu_time", "console_bytes"])
arm = simulate_fmu(fmu, **common)
x86 = simulate_fmu(fmu, start_values={"machine": "pc", "qemu_system": "x86_64",
                                      "guest_image": image}, **common)
print(arm["qemu_time"][-1], arm["console_bytes"][-1],
      x86["qemu_time"][-1], x86["console_bytes"][-1])
"""

HIDE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for path in sys.argv[1:-1]:
    if os.path.isdir(path) and libc.mount(b"none", path.encode(), b"tmpfs", 0, None):
        sys.exit(f"cannot hide {path}: {os.strerror(ctypes.get_errno())}")
os.execv(sys.executable, [sys.executable, "-c", sys.argv[-1]])
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="hiding build/ needs root and unshare(1) for a "
                           "private mount namespace")
def test_fmu_runs_with_no_build_directory_in_reach(fmu, guests, tmp_path):
    """QEMU, its firmware files (SeaBIOS for x86) and the default guest all
    come from the FMU: with build/, firmware/build/ and the QEMU cache
    hidden, both shipped systems run."""
    local = tmp_path / "qemu.fmu"
    shutil.copy(fmu, local)
    image = tmp_path / "x86-busy.elf"
    shutil.copy(guests / "x86-busy.elf", image)
    cache = Path(os.environ.get("QEMU_FMU_CACHE",
                                Path.home() / ".cache" / "qemu-fmu"))
    hidden = [REPO / "build", REPO / "firmware" / "build", cache]
    master = f"import sys; sys.argv[1:] = [{str(local)!r}, {str(image)!r}]\n"
    master += textwrap.dedent(MASTER)
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable,
         "-c", HIDE, *map(str, hidden), master],
        cwd=tmp_path, capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stderr
    arm_time, arm_bytes, x86_time, x86_bytes = proc.stdout.split()
    assert float(arm_time) == pytest.approx(0.2, abs=1e-9)
    assert float(arm_bytes) == len("boot\nticks=100\n")
    assert float(x86_time) == pytest.approx(0.2, abs=1e-9)
    assert float(x86_bytes) == len("busy\n")
