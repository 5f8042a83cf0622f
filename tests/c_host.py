"""Running FMUs in our C master (tests/c_hosts/fmi2_host.c) from tests.

The C programs are compiled with gcc by the tests and run under
`env -i PATH=/usr/bin:/bin`: no PYTHONPATH, no Python in the process until
the FMU's loader shim brings one.  Each run is a process of its own, so a
crash of the host is a failed test, not a lost test run.
"""

from __future__ import annotations

import re
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

HOSTS = Path(__file__).resolve().parent / "c_hosts"
CLEAN_ENV = {"PATH": "/usr/bin:/bin"}
FMUS = ("qemu.fmu", "PiSpeedController.fmu", "DcMotor.fmu")


@dataclass
class Unpacked:
    """An FMU unpacked as a C master would, and what its XML says."""

    fmu: Path
    root: Path
    model: str
    guid: str
    vrs: dict[str, int]

    def load(self, slot: str) -> str:
        return f"load {slot} {self.root} {self.model} {self.guid}\n"


def unpack(fmu: Path, into: Path) -> Unpacked:
    from fmpy import read_model_description

    with zipfile.ZipFile(fmu) as z:
        z.extractall(into)
    for info in zipfile.ZipFile(fmu).infolist():   # zipfile drops modes
        mode = info.external_attr >> 16
        if mode:
            (into / info.filename).chmod(mode & 0o777)
    md = read_model_description(str(fmu))
    return Unpacked(fmu, into, md.coSimulation.modelIdentifier, md.guid,
                    {v.name: v.valueReference for v in md.modelVariables})


def compile_host(source: str, out: Path, *extra: str) -> Path:
    subprocess.run(["gcc", "-std=gnu11", "-O1", "-Wall", "-Wextra", "-Werror",
                    "-o", str(out), str(HOSTS / source), *extra],
                   check=True, timeout=60)
    return out


def run_host(host: Path, script: str, tmp_path: Path, env: dict | None = None,
             timeout: float = 60, encoding: str = "utf-8"
             ) -> subprocess.CompletedProcess:
    """Run a fmi2_host script; a hang or a crash fails the test."""
    path = tmp_path / "script.txt"
    path.write_text(script, encoding=encoding)
    done = subprocess.run([str(host), str(path)], env={**CLEAN_ENV, **(env or {})},
                          capture_output=True, text=True, timeout=timeout,
                          cwd=tmp_path, encoding=encoding, errors="replace")
    assert done.returncode == 0, (
        f"host exited with {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def values(out: str, slot: str, vr: int) -> list[str]:
    return re.findall(rf"^get {slot} {vr} -> 0 (.*)$", out, re.M)


def start(u: Unpacked, slot: str, logging: int = 0, **params: str) -> str:
    script = u.load(slot) + f"inst {slot} {logging}\nsetup {slot} 0\nenter {slot}\n"
    for name, (kind, value) in params.items():
        script += f"set {slot} {kind} {u.vrs[name]} {value}\n"
    return script + f"exit {slot}\n"


