"""`make demo`'s two scripts run, print their summary and write their plots."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

PNG = b"\x89PNG\r\n\x1a\n"


def _run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(REPO / "examples" / script), *args],
                          capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_default_demo(fmu, tmp_path):
    out = _run("demo.py", "--fmu", str(fmu), "--stop-time", "0.35",
               "--out", str(tmp_path))
    assert "QEMU virtual time at the end: 0.350000 s after 350 " \
           "synchronization steps" in out
    assert "the guest counted 300 ticks of its own 1 kHz timer" in out
    assert (tmp_path / "demo.png").read_bytes().startswith(PNG)
    assert "ticks=300" in (tmp_path / "console.txt").read_text()


def test_closed_loop_demo(ssp, tmp_path):
    out = _run("closed_loop/demo.py", "--ssp", str(ssp), "--stop-time", "0.3",
               "--out", str(tmp_path))
    for master in ("fmpy", "libcosim"):
        assert f"{master}" in out and "settling time (2%)" in out
    assert out.count("settling time (2%)") == 2
    assert (tmp_path / "closed_loop.png").read_bytes().startswith(PNG)
