"""The stale-build checks (tests/stale.py) fed stale artifacts.

Every fixture that hands a test a built FMU or SSP first asks tests/stale.py
whether it is older than its sources; a check that never says "stale" would
let the whole suite test old builds.  Each case here copies a current
artifact from dist/, makes it stale in one way (one file in it changed, or
its time stamp older than the code that packs it), and expects exactly that
reason.  No QEMU runs: these take a second or two.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import warnings
import zipfile
from pathlib import Path

import pytest

import stale
from conftest import checked

ARTIFACTS = list(stale.MAKE)


def rewrite(data: bytes, member: str, change) -> bytes:
    """The zip archive ``data`` with ``member`` (``outer!inner`` reaches into
    an FMU inside an SSP) replaced by ``change(old bytes)``, or removed if
    that is None.  A replacement is appended (a reader takes the last entry
    of a name), which spares inflating and deflating the rest."""
    outer, _, inner = member.partition("!")
    src = zipfile.ZipFile(io.BytesIO(data))
    old = src.read(outer) if outer in src.namelist() else b""
    body = rewrite(old, inner, change) if inner else change(old)
    if body is None:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as dst:
            for info in src.infolist():
                if info.filename != outer:
                    dst.writestr(info, src.read(info))
        return out.getvalue()
    out = io.BytesIO(data)
    with warnings.catch_warnings(), zipfile.ZipFile(out, "a") as dst:
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name"
        dst.writestr(outer, body)
    return out.getvalue()


def tampered(guests, tmp_path: Path, name: str, member: str, change) -> Path:
    """A copy of dist/``name`` (checked current first) with one member
    changed, time stamps kept, so that only that change makes it stale."""
    original = checked(guests, name)
    copy = tmp_path / name
    copy.write_bytes(rewrite(original.read_bytes(), member, change))
    shutil.copystat(original, copy)
    return copy


def appended(data: bytes) -> bytes:
    return data + b"\n# changed\n"


@pytest.mark.parametrize("name", ARTIFACTS)
def test_an_unchanged_copy_is_current(guests, tmp_path, name):
    """The baseline of the cases below: a copy with its time stamps kept
    passes, so every reason they see comes from their one change."""
    copy = tmp_path / name
    shutil.copy2(checked(guests, name), copy)
    assert stale.artifacts(guests)[name](copy) == []


@pytest.mark.parametrize("name,member,change,reason", [
    ("qemu.fmu", "resources/qemufmu/slave.py", appended,
     "qemu.fmu: resources/qemufmu/slave.py differs from fmu_src/qemufmu/slave.py"),
    ("Network.fmu", "resources/qemufmu/network/__init__.py", lambda _: None,
     "resources/qemufmu/network/__init__.py differs"),
    ("qemu.fmu", "resources/qemufmu/gone.py", appended,
     "resources/qemufmu/gone.py differs from fmu_src/qemufmu/gone.py"),
    ("qemu.fmu", "resources/qemu_slave.py", appended,
     "resources/qemu_slave.py differs from fmu_src/qemu_slave.py"),
    ("qemu.fmu", "resources/guest/default.elf", appended,
     "qemu.fmu: its guest differs from firmware/build/arm-default.elf"),
    ("PiSpeedController.fmu", "resources/signals.json",
     lambda d: d.replace(b'"voltage"', b'"volts"'),
     "PiSpeedController.fmu: signals differ from pi_speed.toml"),
    ("PiSpeedController.fmu", "resources/guest/default.elf", appended,
     "its guest differs from firmware/build/arm-pi.elf"),
    ("PiSpeedLinux.fmu", "resources/guest/initrd", appended,
     "resources/guest/initrd differs from firmware/build/linux/initrd.cpio"),
    ("DcMotor.fmu", "resources/dc_motor.py", appended,
     "DcMotor.fmu: resources/dc_motor.py differs from "
     "examples/closed_loop/dc_motor.py"),
    ("Network.fmu", "resources/network_slave.py", appended,
     "resources/network_slave.py differs from fmu_src/network_slave.py"),
    ("Network.fmu", "resources/qemufmu/network/link.py", appended,
     "resources/qemufmu/network/link.py differs"),
    ("Network.fmu", "resources/dpkt/ethernet.py", appended,
     "resources/dpkt/ethernet.py differs"),
    ("closed_loop.ssp", "SystemStructure.ssd", appended,
     "closed_loop.ssp: SystemStructure.ssd differs from "
     "examples/closed_loop/SystemStructure.ssd"),
    ("closed_loop.ssp", "resources/DcMotor.fmu!resources/dc_motor.py", appended,
     "closed_loop.ssp: resources/DcMotor.fmu: resources/dc_motor.py differs"),
    ("closed_loop.ssp", "resources/PiSpeedController.fmu!resources/qemufmu/cosim.py",
     appended, "closed_loop.ssp: resources/PiSpeedController.fmu: "
               "resources/qemufmu/cosim.py differs"),
    ("UdpNode.fmu", "resources/guest/default.elf", appended,
     "UdpNode.fmu: its guest differs from firmware/build/arm-udp_node.elf"),
    ("net_udp_pair.ssp", "resources/UdpPair.fmu!resources/signals.json",
     lambda d: d + b" ", "resources/UdpPair.fmu: signals differ from udp_pair.toml"),
    ("net_udp_pair.ssp", "resources/Network.fmu!resources/network_slave.py", appended,
     "resources/Network.fmu: resources/network_slave.py differs"),
    ("closed_loop_linux.ssp", "resources/PiSpeedLinux.fmu!resources/signals.json",
     lambda d: d.replace(b'"voltage"', b'"volts"'),
     "resources/PiSpeedLinux.fmu: signals differ from pi_speed_linux.toml"),
])
def test_a_changed_file_makes_an_artifact_stale(guests, tmp_path, name, member,
                                                change, reason):
    copy = tampered(guests, tmp_path, name, member, change)
    problems = stale.artifacts(guests)[name](copy)
    assert len(problems) == 1 and reason in problems[0], problems


@pytest.mark.parametrize("name,newer", [
    ("qemu.fmu", "build_fmu.py"),
    ("qemu.fmu", "buildlib/native.py"),
    ("qemu.fmu", "fmu_src/loader/loader.c"),
    ("qemu.fmu", "build/qemu/bin/qemu-system-arm"),
    ("PiSpeedController.fmu", "examples/closed_loop/pi_speed.toml"),
    ("DcMotor.fmu", "examples/closed_loop/build.py"),
    ("Network.fmu", "build_fmu.py"),
    ("closed_loop.ssp", "examples/closed_loop/build.py"),
    ("net_udp_pair.ssp", "examples/network/build.py"),
    ("net_udp_pair.ssp", "fmu_src/qemufmu/sspwrite.py"),
    ("UdpPair.fmu", "examples/network/udp_pair.toml"),
])
def test_an_artifact_older_than_its_packing_code_is_stale(guests, tmp_path, name,
                                                          newer):
    """What the build does not copy in (the loader, QEMU, the packing code)
    is judged by time: an FMU written before it last changed is stale."""
    copy = tmp_path / name
    shutil.copy2(checked(guests, name), copy)
    source = stale.REPO / newer
    assert source.is_file(), newer
    then = source.stat().st_mtime - 60
    os.utime(copy, (then, then))
    problems = stale.artifacts(guests)[name](copy)
    assert any(re.search(rf"{re.escape(newer)} is newer than the FMU", p)
               for p in problems), problems


def test_qemu_built_from_other_sources_is_stale(tmp_path):
    """build/qemu/SOURCES records what build.sh built; one file's digest
    differing, or the stamp missing, makes every QEMU test fail."""
    current = stale.QEMU_STAMP.read_text()
    assert stale.stale_qemu() is None
    hooks = re.search(r"^([0-9a-f]{64})\s+hooks\.patch$", current, re.M)
    assert hooks, current
    stamp = tmp_path / "SOURCES"
    stamp.write_text(current.replace(hooks[1], "0" * 64))
    assert stale.stale_qemu(stamp) == ("build/qemu was built from other "
                                       "sources than qemu/hooks.patch")
    stamp.write_text(current + "0" * 64 + "  qqq/extra.c\n")
    assert stale.stale_qemu(stamp) == ("build/qemu was built from other "
                                       "sources than qemu/qqq/extra.c")
    stamp.unlink()
    assert stale.stale_qemu(stamp) == (f"{stamp} missing (built by an older "
                                       "build.sh)")
