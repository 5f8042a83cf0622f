"""The Python sources stay ruff-clean."""

import subprocess
import sys
from pathlib import Path

from helpers import REPO


def test_ruff_clean():
    ruff = Path(sys.executable).parent / "ruff"
    proc = subprocess.run([str(ruff), "check", "--quiet", str(REPO)],
                          capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stdout + proc.stderr
