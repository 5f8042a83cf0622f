"""Shared fixtures: the built QEMU, guests built from source, command lines."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import pytest

import stale
from helpers import REPO

QEMU_BIN = REPO / "build" / "qemu" / "bin"
FIRMWARE = REPO / "firmware"


@pytest.fixture(scope="session")
def guests() -> Path:
    """Build the guest images from source; return their directory."""
    subprocess.run(["make", "-s", "-C", str(FIRMWARE)], check=True, timeout=100)
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


# -- stale builds (tests/stale.py) --------------------------------------


@functools.cache
def stale_qemu() -> str | None:
    return stale.stale_qemu()


def fail_if_stale(problems: list[str], how: str) -> None:
    if problems:
        pytest.fail("stale build, run `" + how + "` first:\n  "
                    + "\n  ".join(problems), pytrace=False)


@functools.cache
def checked(guests: Path, name: str) -> Path:
    """dist/``name``, built and checked to match its sources (once a run)."""
    path = built(REPO / "dist" / name, stale.MAKE[name])
    fail_if_stale(stale.artifacts(guests)[name](path), stale.MAKE[name])
    return path


@pytest.fixture(scope="session")
def fmu(guests) -> Path:
    """The built dist/qemu.fmu (make fmu), checked to match its sources."""
    return checked(guests, "qemu.fmu")


@pytest.fixture(scope="session")
def ssp(guests) -> Path:
    """dist/closed_loop.ssp, checked to match its sources."""
    return checked(guests, "closed_loop.ssp")


@pytest.fixture(scope="session")
def unzipped(fmu, tmp_path_factory) -> Path:
    """The FMU extracted once, as a master would."""
    from fmpy import extract
    return Path(extract(str(fmu), str(tmp_path_factory.mktemp("fmu"))))


# -- the C master of tests/c_host.py ---------------------------------------


@pytest.fixture(scope="session")
def fmus(guests, tmp_path_factory) -> dict:
    """Every built FMU unpacked as a C master would (c_host.Unpacked)."""
    from c_host import FMUS, unpack

    out = {}
    for name in FMUS:
        fmu = checked(guests, name)
        out[name] = unpack(fmu, tmp_path_factory.mktemp(name.replace(".", "_")))
    return out


@pytest.fixture(scope="session")
def fmi2_host(tmp_path_factory) -> Path:
    """tests/c_hosts/fmi2_host.c, compiled."""
    from c_host import compile_host
    return compile_host("fmi2_host.c", tmp_path_factory.mktemp("host") / "fmi2_host",
                        "-ldl")
