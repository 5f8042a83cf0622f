"""`make demo`'s two scripts run, print their summary and write their plots."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO

PNG = b"\x89PNG\r\n\x1a\n"


def _run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(REPO / "examples" / script), *args],
                          capture_output=True, text=True, timeout=100,
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
    figures = {}
    for master in ("fmpy", "libcosim"):
        line = re.search(rf"^{master} +0.3 s simulated in [0-9.]+ s: settling time "
                         r"\(2%\) ([0-9.]+) ms, overshoot (-?[0-9.]+) %, "
                         r"final error (\S+) rad/s$", out, re.M)
        assert line, out
        figures[master] = line.groups()
        # README's targets for the demo's step response
        assert float(line[1]) < 150 and float(line[2]) < 5, line[0]
    assert out.count("settling time (2%)") == 2
    # Both masters compute the same loop (test_closed_loop.py).
    assert figures["fmpy"][:2] == figures["libcosim"][:2], figures
    assert (tmp_path / "closed_loop.png").read_bytes().startswith(PNG)
