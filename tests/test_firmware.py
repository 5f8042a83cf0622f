"""The guest sources: the signal library's host tests, and reproducible images."""

from __future__ import annotations

import hashlib
import subprocess

from conftest import FIRMWARE


def test_signal_library_host_tests(tmp_path):
    proc = subprocess.run(["make", "-s", "-C", str(FIRMWARE), "check",
                           f"OUT={tmp_path}"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_images_are_reproducible(tmp_path):
    digests = []
    for out in (tmp_path / "a", tmp_path / "b"):
        subprocess.run(["make", "-s", "-C", str(FIRMWARE), f"OUT={out}"],
                       check=True, capture_output=True, timeout=300)
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                        for p in sorted(out.glob("*.elf"))})
    assert digests[0] == digests[1]
    assert len(digests[0]) >= 10
