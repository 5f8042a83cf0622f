"""Shared fixtures: the built QEMU, guests built from source, command lines."""

from __future__ import annotations

import functools
import hashlib
import io
import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
QEMU_BIN = REPO / "build" / "qemu" / "bin"
FIRMWARE = REPO / "firmware"


@pytest.fixture(scope="session")
def guests() -> Path:
    """Build the guest images from source; return their directory."""
    subprocess.run(["make", "-s", "-C", str(FIRMWARE)], check=True, timeout=300)
    return FIRMWARE / "build"


def built(path: Path, how: str) -> Path:
    """``path`` if the build made it; otherwise fail saying how to make it."""
    if not path.exists():
        pytest.fail(f"{path} missing: run `{how}` first")
    return path


def qemu_binary(arch: str) -> Path:
    if why := stale_qemu():
        pytest.fail(f"stale build, run `make qemu` first: {why}", pytrace=False)
    return built(QEMU_BIN / f"qemu-system-{arch}", "make qemu")


def x86_argv(kernel: Path, serial: Path | str, *, shift: int | None = 0,
             extra: tuple[str, ...] = ()) -> list[str]:
    """A multiboot guest on `-M pc`, console on COM1 into ``serial``."""
    timing = (["-icount", f"shift={shift},sleep=off"] if shift is not None
              else [])
    return [str(qemu_binary("x86_64")), "-M", "pc", "-nodefaults",
            "-display", "none", "-net", "none", "-serial", f"file:{serial}",
            "-kernel", str(kernel), *timing, "-rtc", "clock=vm", *extra]


def arm_argv(kernel: Path, serial: Path | str, *, shift: int = 0,
             extra: tuple[str, ...] = ()) -> list[str]:
    """A Cortex-M firmware on mps2-an385, UART0 into ``serial``."""
    return [str(qemu_binary("arm")), "-M", "mps2-an385", "-nodefaults",
            "-display", "none", "-nic", "none", "-serial", f"file:{serial}",
            "-kernel", str(kernel), "-icount", f"shift={shift},sleep=off",
            "-rtc", "clock=vm", *extra]


def kvm_usable() -> str | None:
    """None if /dev/kvm can be opened read-write, else why not."""
    try:
        with open("/dev/kvm", "r+b"):
            return None
    except OSError as e:
        return (f"KVM test skipped: /dev/kvm not usable ({e.strerror}); "
                "it runs on an x86-64 host with KVM, read-write /dev/kvm")


# -- stale builds --------------------------------------------------------
# A test run against an FMU or a QEMU older than its sources proves nothing
# about those sources: every artifact is checked against what it is built
# from, by content where the build copies files, and otherwise by the
# digest or the time stamps the build leaves.

def qemu_sources() -> dict[str, str]:
    """sha256 of each file qemu/build.sh builds into QEMU, by path in qemu/."""
    qemu = REPO / "qemu"
    return {str(p.relative_to(qemu)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in [qemu / "hooks.patch", *(qemu / "qqq").iterdir()]
            if p.is_file()}


@functools.cache
def stale_qemu() -> str | None:
    """Why build/qemu does not match qemu/, or None.  build.sh records the
    `sha256sum` of the sources it built in build/qemu/SOURCES."""
    stamp = REPO / "build" / "qemu" / "SOURCES"
    if not stamp.exists():
        return f"{stamp.relative_to(REPO)} missing (built by an older build.sh)"
    recorded = dict(reversed(line.split(None, 1)) for line in
                    stamp.read_text().splitlines() if line.strip())
    changed = sorted(set(recorded.items()) ^ set(qemu_sources().items()))
    if changed:
        names = sorted({name for name, _ in changed})
        return ("build/qemu was built from other sources than "
                + ", ".join(f"qemu/{name}" for name in names))
    return None


def _stale_python(fmu: zipfile.ZipFile, name: str) -> list[str]:
    """Differences between the FMU's slave library and fmu_src/qemufmu."""
    # Relative paths: qemufmu has subpackages (network/) whose file names
    # repeat the top level's (__init__.py).
    base = REPO / "fmu_src" / "qemufmu"
    src = {p.relative_to(base).as_posix(): p.read_bytes()
           for p in base.rglob("*.py") if "__pycache__" not in p.parts}
    shipped = {n.removeprefix("resources/qemufmu/"): fmu.read(n)
               for n in fmu.namelist()
               if n.startswith("resources/qemufmu/") and n.endswith(".py")}
    return [f"{name}: resources/qemufmu/{f} differs from fmu_src/qemufmu/{f}"
            for f in sorted(set(src) | set(shipped))
            if src.get(f) != shipped.get(f)]


def _newer_inputs(fmu_path: Path, what: str) -> list[str]:
    """Inputs changed after the FMU was packed, judged by time stamps: QEMU
    files (build.sh rewrites only files whose content changed) and the
    packaging code itself (`make fmu` always repacks, so a fresh clone's
    FMU is newer than all of it)."""
    packed = fmu_path.stat().st_mtime
    root = REPO / "build" / "qemu"
    inputs = [*root.glob("bin/qemu-system-*"), *root.rglob("share/**/*"),
              REPO / "build_fmu.py", *(REPO / "fmu_src" / "loader").rglob("*")]
    return [f"{what}: {p.relative_to(REPO)} is newer than the FMU"
            for p in inputs if p.is_file() and p.stat().st_mtime > packed]


def stale_fmu(fmu_path: Path, guest: Path, what: str,
              data: bytes | None = None) -> list[str]:
    """Why the FMU at ``fmu_path`` (or its bytes ``data``) is older than its
    sources: slave library, guest image (built from firmware/ this session)
    and QEMU."""
    with zipfile.ZipFile(io.BytesIO(data) if data else fmu_path) as z:
        problems = _stale_python(z, what)
        if "resources/qemu_slave.py" in z.namelist() and z.read(
                "resources/qemu_slave.py") != (REPO / "fmu_src" /
                                              "qemu_slave.py").read_bytes():
            problems.append(f"{what}: resources/qemu_slave.py differs from "
                            "fmu_src/qemu_slave.py")
        if z.read("resources/guest/default.elf") != guest.read_bytes():
            problems.append(f"{what}: its guest differs from "
                            f"{guest.relative_to(REPO)} built from firmware/")
    problems += _newer_inputs(fmu_path, what)
    if why := stale_qemu():
        problems.append(why)
    return problems


def fail_if_stale(problems: list[str], how: str) -> None:
    if problems:
        pytest.fail("stale build, run `" + how + "` first:\n  "
                    + "\n  ".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def fmu(guests) -> Path:
    """The built dist/qemu.fmu (make fmu), checked to match its sources."""
    path = built(REPO / "dist" / "qemu.fmu", "make fmu")
    fail_if_stale(stale_fmu(path, guests / "arm-default.elf", "dist/qemu.fmu"),
                  "make fmu")
    return path


@pytest.fixture(scope="session")
def ssp(guests) -> Path:
    """dist/closed_loop.ssp, checked to match its sources."""
    from qemufmu.signals import signals_from_config
    from qemufmu.slave import RESERVED

    path = built(REPO / "dist" / "closed_loop.ssp", "make closed-loop")
    here = REPO / "examples" / "closed_loop"
    with zipfile.ZipFile(path) as z:
        problems = stale_fmu(path, guests / "arm-pi.elf", "PiSpeedController.fmu",
                             z.read("resources/PiSpeedController.fmu"))
        ecu = z.read("resources/PiSpeedController.fmu")
        with zipfile.ZipFile(io.BytesIO(ecu)) as e:
            config = tomllib.loads((here / "pi_speed.toml").read_text())
            if e.read("resources/signals.json").decode() != signals_from_config(
                    config, RESERVED).to_json():
                problems.append("PiSpeedController.fmu: signals differ from "
                                "pi_speed.toml")
        with zipfile.ZipFile(io.BytesIO(z.read("resources/DcMotor.fmu"))) as m:
            if m.read("resources/dc_motor.py") != (here / "dc_motor.py").read_bytes():
                problems.append("DcMotor.fmu differs from dc_motor.py")
        if z.read("SystemStructure.ssd") != (here / "SystemStructure.ssd").read_bytes():
            problems.append("SystemStructure.ssd differs")
    fail_if_stale(problems, "make closed-loop")
    return path


@pytest.fixture(scope="session")
def unzipped(fmu, tmp_path_factory) -> Path:
    """The FMU extracted once, as a master would."""
    from fmpy import extract
    return Path(extract(str(fmu), str(tmp_path_factory.mktemp("fmu"))))


# -- the C master of tests/c_host.py ---------------------------------------


@pytest.fixture(scope="session")
def fmus(tmp_path_factory) -> dict:
    """Every built FMU unpacked as a C master would (c_host.Unpacked)."""
    from c_host import FMUS, unpack

    out = {}
    for name in FMUS:
        fmu = built(REPO / "dist" / name, "make fmu closed-loop")
        out[name] = unpack(fmu, tmp_path_factory.mktemp(name.replace(".", "_")))
    return out


@pytest.fixture(scope="session")
def fmi2_host(tmp_path_factory) -> Path:
    """tests/c_hosts/fmi2_host.c, compiled."""
    from c_host import compile_host
    return compile_host("fmi2_host.c", tmp_path_factory.mktemp("host") / "fmi2_host",
                        "-ldl")
