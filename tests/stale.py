"""Is a built artifact older than what it is built from?

A test run against an FMU or a QEMU older than its sources proves nothing
about those sources, so every artifact a test uses is checked here first:
by content where the build copies files in, and otherwise by the digest or
the time stamps the build leaves.  Each function returns the reasons (one
line each), an empty list when the artifact is current.
``tests/test_stale_builds.py`` feeds each check a stale artifact.
"""

from __future__ import annotations

import hashlib
import io
import tomllib
import zipfile
from collections.abc import Callable
from pathlib import Path

from helpers import REPO

QEMU_STAMP = REPO / "build" / "qemu" / "SOURCES"
CLOSED_LOOP = REPO / "examples" / "closed_loop"
NETWORK = REPO / "examples" / "network"

# A check of one FMU: (its path, its bytes or None to read the path, the
# name it goes by in messages) -> reasons.
Check = Callable[[Path, "bytes | None", str], list[str]]


def qemu_sources() -> dict[str, str]:
    """sha256 of each file qemu/build.sh builds into QEMU, by path in qemu/."""
    qemu = REPO / "qemu"
    return {str(p.relative_to(qemu)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in [qemu / "hooks.patch", *(qemu / "qqq").iterdir()]
            if p.is_file()}


def stale_qemu(stamp: Path = QEMU_STAMP) -> str | None:
    """Why build/qemu does not match qemu/, or None.  build.sh records the
    `sha256sum` of the sources it built in build/qemu/SOURCES."""
    if not stamp.exists():
        where = stamp.relative_to(REPO) if stamp.is_relative_to(REPO) else stamp
        return f"{where} missing (built by an older build.sh)"
    recorded = dict(reversed(line.split(None, 1)) for line in
                    stamp.read_text().splitlines() if line.strip())
    changed = sorted(set(recorded.items()) ^ set(qemu_sources().items()))
    if changed:
        names = sorted({name for name, _ in changed})
        return ("build/qemu was built from other sources than "
                + ", ".join(f"qemu/{name}" for name in names))
    return None


def packaging() -> list[Path]:
    """The code that packs every FMU: `make` always repacks, so a fresh
    build is newer than all of it."""
    return [REPO / "build_fmu.py", *(REPO / "buildlib").rglob("*.py"),
            *(REPO / "fmu_src" / "loader").rglob("*")]


def qemu_files() -> list[Path]:
    """QEMU as build.sh installs it (it rewrites only files whose content
    changed, so their time stamps say when they last changed)."""
    root = REPO / "build" / "qemu"
    return [*root.glob("bin/qemu-system-*"), *root.rglob("share/**/*")]


def newer_inputs(path: Path, what: str, inputs: list[Path]) -> list[str]:
    """Inputs changed after ``path`` was written, judged by time stamps."""
    packed = path.stat().st_mtime
    return [f"{what}: {p.relative_to(REPO)} is newer than the FMU"
            for p in inputs if p.is_file() and p.stat().st_mtime > packed]


def _zip(path: Path, data: bytes | None) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(data) if data is not None else path)


def _same_files(z: zipfile.ZipFile, what: str, prefix: str, base: Path,
                pattern: str = "*.py") -> list[str]:
    """Differences between the files under ``prefix`` in the archive and the
    files matching ``pattern`` under ``base``, by relative path (qemufmu has
    subpackages whose file names repeat the top level's: __init__.py)."""
    src = {p.relative_to(base).as_posix(): p.read_bytes()
           for p in base.rglob(pattern) if "__pycache__" not in p.parts}
    shipped = {n.removeprefix(prefix): z.read(n) for n in z.namelist()
               if n.startswith(prefix) and Path(n).match(pattern)}
    rel = base.relative_to(REPO)
    return [f"{what}: {prefix}{f} differs from {rel}/{f}"
            for f in sorted(set(src) | set(shipped))
            if src.get(f) != shipped.get(f)]


def _same_member(z: zipfile.ZipFile, what: str, member: str, src: Path) -> list[str]:
    if member in z.namelist() and z.read(member) == src.read_bytes():
        return []
    return [f"{what}: {member} differs from {src.relative_to(REPO)}"]


def stale_fmu(path: Path, guest: Path, what: str, data: bytes | None = None,
              ) -> list[str]:
    """Why a QEMU FMU (qemu.fmu, a --config FMU) at ``path`` (or its bytes
    ``data``) is older than its sources: slave library, slave script, guest
    image (built from firmware/ this session), QEMU and packaging code."""
    with _zip(path, data) as z:
        problems = _same_files(z, what, "resources/qemufmu/",
                               REPO / "fmu_src" / "qemufmu")
        if "resources/qemu_slave.py" in z.namelist():
            problems += _same_member(z, what, "resources/qemu_slave.py",
                                     REPO / "fmu_src" / "qemu_slave.py")
        if z.read("resources/guest/default.elf") != guest.read_bytes():
            problems.append(f"{what}: its guest differs from "
                            f"{guest.relative_to(REPO)} built from firmware/")
    problems += newer_inputs(path, what, [*qemu_files(), *packaging()])
    if why := stale_qemu():
        problems.append(why)
    return problems


def stale_signal_fmu(path: Path, guest: Path, config: Path, what: str,
                     data: bytes | None = None, initrd: Path | None = None,
                     ) -> list[str]:
    """stale_fmu, and the signals (and initrd) its configuration names."""
    from qemufmu.signals import signals_from_config
    from qemufmu.slave import RESERVED

    problems = stale_fmu(path, guest, what, data)
    with _zip(path, data) as z:
        signals = signals_from_config(tomllib.loads(config.read_text()), RESERVED)
        if z.read("resources/signals.json").decode() != signals.to_json():
            problems.append(f"{what}: signals differ from {config.name}")
        if initrd is not None:
            problems += _same_member(z, what, "resources/guest/initrd", initrd)
    problems += newer_inputs(path, what, [config])
    return problems


def stale_plant(path: Path, data: bytes | None, what: str) -> list[str]:
    """The DC motor FMU: dc_motor.py, packed by examples/closed_loop/build.py."""
    with _zip(path, data) as z:
        problems = _same_member(z, what, "resources/dc_motor.py",
                                CLOSED_LOOP / "dc_motor.py")
    return problems + newer_inputs(path, what, [*packaging(),
                                                CLOSED_LOOP / "build.py"])


def stale_network(path: Path, data: bytes | None = None,
                  what: str = "Network.fmu") -> list[str]:
    """The network FMU: network_slave.py, qemufmu and the dpkt it bundles."""
    import dpkt

    with _zip(path, data) as z:
        problems = _same_member(z, what, "resources/network_slave.py",
                                REPO / "fmu_src" / "network_slave.py")
        problems += _same_files(z, what, "resources/qemufmu/",
                                REPO / "fmu_src" / "qemufmu")
        problems += _same_files(z, what, "resources/dpkt/",
                                Path(dpkt.__file__).parent)
    return problems + newer_inputs(path, what, packaging())


def stale_ssp(path: Path, ssd: Path | None, members: dict[str, Check],
              what: str, builder: Path = CLOSED_LOOP / "build.py") -> list[str]:
    """An SSP: its SSD (unless ``builder`` writes it), and each FMU in it by
    the check for that FMU."""
    with zipfile.ZipFile(path) as z:
        problems = [] if ssd is None else _same_member(z, what,
                                                       "SystemStructure.ssd", ssd)
        for member, check in members.items():
            problems += check(path, z.read(member), f"{what}: {member}")
    written_by = [builder] + ([] if ssd else [REPO / "fmu_src" / "qemufmu" /
                                               "sspwrite.py"])
    return problems + newer_inputs(path, what, written_by)


def artifacts(guests: Path) -> dict[str, Callable[[Path], list[str]]]:
    """Each artifact in dist/ by name, with the check that judges it."""
    linux = guests / "linux"

    def ecu(path: Path, data: bytes | None, what: str) -> list[str]:
        return stale_signal_fmu(path, guests / "arm-pi.elf",
                                CLOSED_LOOP / "pi_speed.toml", what, data)

    def linux_ecu(path: Path, data: bytes | None, what: str) -> list[str]:
        return stale_signal_fmu(path, linux / "vmlinux",
                                CLOSED_LOOP / "pi_speed_linux.toml", what, data,
                                initrd=linux / "initrd.cpio")

    def udp(config: str, guest: str) -> Check:
        def check(path: Path, data: bytes | None, what: str) -> list[str]:
            return (stale_signal_fmu(path, guests / guest, NETWORK / config,
                                     what, data)
                    + newer_inputs(path, what, [NETWORK / "build.py"]))
        return check

    node = udp("udp_node.toml", "arm-udp_node.elf")
    pair = udp("udp_pair.toml", "arm-udp_pair.elf")

    def linux_node(path: Path, data: bytes | None, what: str) -> list[str]:
        return (stale_signal_fmu(path, linux / "vmlinux", NETWORK / "linux_node.toml",
                                 what, data, initrd=linux / "initrd.cpio")
                + newer_inputs(path, what, [NETWORK / "build.py"]))

    return {
        "qemu.fmu": lambda p: stale_fmu(p, guests / "arm-default.elf",
                                        "qemu.fmu"),
        "UdpNode.fmu": lambda p: node(p, None, "UdpNode.fmu"),
        "UdpPair.fmu": lambda p: pair(p, None, "UdpPair.fmu"),
        "net_ping.ssp": lambda p: stale_ssp(
            p, None, {"resources/LinuxNode.fmu": linux_node,
                      "resources/Network.fmu": stale_network},
            "net_ping.ssp", NETWORK / "build.py"),
        "net_udp_pair.ssp": lambda p: stale_ssp(
            p, None, {"resources/UdpPair.fmu": pair, "resources/UdpNode.fmu": node,
                      "resources/Network.fmu": stale_network},
            "net_udp_pair.ssp", NETWORK / "build.py"),
        "PiSpeedController.fmu": lambda p: ecu(p, None, "PiSpeedController.fmu"),
        "PiSpeedLinux.fmu": lambda p: linux_ecu(p, None, "PiSpeedLinux.fmu"),
        "DcMotor.fmu": lambda p: stale_plant(p, None, "DcMotor.fmu"),
        "Network.fmu": lambda p: stale_network(p),
        "closed_loop.ssp": lambda p: stale_ssp(
            p, CLOSED_LOOP / "SystemStructure.ssd",
            {"resources/PiSpeedController.fmu": ecu,
             "resources/DcMotor.fmu": stale_plant}, "closed_loop.ssp"),
        "closed_loop_linux.ssp": lambda p: stale_ssp(
            p, CLOSED_LOOP / "SystemStructure_linux.ssd",
            {"resources/PiSpeedLinux.fmu": linux_ecu,
             "resources/DcMotor.fmu": stale_plant}, "closed_loop_linux.ssp"),
    }


# What rebuilds each artifact.
MAKE = {"qemu.fmu": "make fmu", "Network.fmu": "make fmu",
        "PiSpeedController.fmu": "make closed-loop",
        "PiSpeedLinux.fmu": "make closed-loop", "DcMotor.fmu": "make closed-loop",
        "closed_loop.ssp": "make closed-loop",
        "closed_loop_linux.ssp": "make closed-loop",
        "UdpNode.fmu": "make network", "UdpPair.fmu": "make network",
        "net_udp_pair.ssp": "make network", "net_ping.ssp": "make network"}
