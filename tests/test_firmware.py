"""The guest sources: the signal library's host tests, and reproducible images."""

from __future__ import annotations

import hashlib
import math
import random
import struct
import subprocess

from conftest import FIRMWARE


def test_signal_library_host_tests(tmp_path):
    proc = subprocess.run(["make", "-s", "-C", str(FIRMWARE), "check",
                           f"OUT={tmp_path}"], capture_output=True, text=True,
                          timeout=100)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test_qqq_signals: ok (0 failures)" in proc.stdout


def _doubles(count: int) -> list[float]:
    """Edge cases, any finite double, and controller-sized values."""
    rng = random.Random(2026)
    values = [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308,
              1.7976931348623157e308, 1e16, 1e-4, 9.999999999999999e-5,
              9999999999999998.0, 1e22, 1e23, 0.1, 0.30000000000000004,
              math.inf, -math.inf, math.nan]
    while len(values) < count:
        x = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        if math.isfinite(x):
            values.append(x)
        values.append(math.ldexp(rng.getrandbits(53), -rng.randrange(80))
                      * rng.choice((1, -1)))
        values.append(round(rng.uniform(-1000, 1000), rng.randrange(8)))
    return values


def test_firmware_formats_reals_exactly_as_python_repr(tmp_path):
    """docs/signals.md: qqq_signals.c formats outputs as Python's repr does."""
    subprocess.run(["make", "-s", "-C", str(FIRMWARE), f"OUT={tmp_path}",
                    f"{tmp_path}/test_qqq_signals"], check=True, timeout=100,
                   capture_output=True)
    values = _doubles(60_000)
    stdin = "".join(f"{struct.unpack('<Q', struct.pack('<d', x))[0]:016x}\n"
                    for x in values)
    proc = subprocess.run([str(tmp_path / "test_qqq_signals"), "--format"],
                          input=stdin, capture_output=True, text=True, timeout=100)
    got = proc.stdout.splitlines()
    assert len(got) == len(values)
    wrong = [(repr(x), c) for x, c in zip(values, got, strict=True) if repr(x) != c]
    assert not wrong, wrong[:10]


def test_images_are_reproducible(tmp_path):
    digests = []
    for out in (tmp_path / "a", tmp_path / "b"):
        subprocess.run(["make", "-s", "-C", str(FIRMWARE), f"OUT={out}"],
                       check=True, capture_output=True, timeout=100)
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                        for p in sorted(out.glob("*.elf"))})
    assert digests[0] == digests[1]
    assert len(digests[0]) >= 10
