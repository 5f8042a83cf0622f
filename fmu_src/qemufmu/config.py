"""The FMU's parameters: defaults, validation, and the QEMU command line.

Validation happens once, when initialization ends, and every problem is
reported in one message that names the parameter and the fix.
"""

from __future__ import annotations

import math
import os
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path

ACCELERATORS = ("tcg-icount", "kvm")
MAX_ICOUNT_SHIFT = 10


class ConfigError(ValueError):
    """A parameter value QEMU cannot be started with."""


@dataclass
class QemuConfig:
    """What the FMU's parameters say about the QEMU to start."""

    guest_image: str = ""
    machine: str = "mps2-an385"
    qemu_system: str = "arm"
    accelerator: str = "tcg-icount"
    icount_shift: int = 0
    extra_args: str = ""
    qemu_binary: str = ""
    step_timeout: float = 10.0
    network: bool = False
    console_file: str = ""


def _readable_file(path: Path, what: str, param: str) -> Path:
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory, not a file "
                          f"(parameter {param})")
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist (parameter {param})")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{what} {path} is not readable (parameter {param})")
    return path


def resolve_binary(cfg: QemuConfig, resources: Path) -> Path:
    """The QEMU executable: the override, or the one shipped in the FMU.

    Zip extraction drops the executable bit, so a shipped binary gets it back.
    """
    if cfg.qemu_binary:
        path = _readable_file(Path(cfg.qemu_binary), "QEMU binary",
                              "qemu_binary")
        if not os.access(path, os.X_OK):
            raise ConfigError(f"QEMU binary {path} is not executable "
                              "(parameter qemu_binary)")
        return path
    path = resources / "qemu" / "bin" / f"qemu-system-{cfg.qemu_system}"
    if not path.is_file():
        shipped = sorted(p.name.removeprefix("qemu-system-")
                         for p in (resources / "qemu" / "bin").glob("qemu-system-*"))
        raise ConfigError(f"this FMU ships no qemu-system-{cfg.qemu_system} "
                          f"(parameter qemu_system; shipped: "
                          f"{', '.join(shipped) or 'none'})")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def resolve_image(cfg: QemuConfig, resources: Path) -> Path:
    """The guest image: the parameter, or the embedded default firmware."""
    if cfg.guest_image:
        return _readable_file(Path(cfg.guest_image), "guest image",
                              "guest_image")
    return _readable_file(resources / "guest" / "default.elf",
                          "embedded default guest", "guest_image")


def validate(cfg: QemuConfig) -> None:
    """Check the values that need no file system."""
    if cfg.accelerator not in ACCELERATORS:
        raise ConfigError(f"accelerator '{cfg.accelerator}' is not one of "
                          f"{', '.join(ACCELERATORS)}")
    if not 0 <= cfg.icount_shift <= MAX_ICOUNT_SHIFT:
        raise ConfigError(f"icount_shift {cfg.icount_shift} is outside "
                          f"0..{MAX_ICOUNT_SHIFT}")
    if not (math.isfinite(cfg.step_timeout) and cfg.step_timeout > 0):
        raise ConfigError(f"step_timeout {cfg.step_timeout} s must be a "
                          "positive number of seconds")
    if not cfg.machine:
        raise ConfigError("machine is empty (e.g. mps2-an385, pc)")
    if cfg.accelerator == "kvm":
        try:
            with open("/dev/kvm", "r+b"):
                pass
        except OSError as e:
            raise ConfigError(f"accelerator kvm needs /dev/kvm: {e.strerror}") from e
    try:
        shlex.split(cfg.extra_args)
    except ValueError as e:
        raise ConfigError(f"extra_args cannot be split into arguments: {e}") from e


def qemu_argv(cfg: QemuConfig, binary: Path, image: Path,
              channels: list[str]) -> list[str]:
    """The QEMU command line, without the -qqq option QemuProcess adds.

    Each channel is a qqq chardev on the next serial port: the first one,
    the console, on the guest's first UART.
    """
    if cfg.accelerator == "kvm":
        timing = ["-accel", "kvm"]
    else:
        timing = ["-icount", f"shift={cfg.icount_shift},sleep=off"]
    serial: list[str] = []
    for name in channels:
        serial += ["-chardev", f"qqq,id={name}", "-serial", f"chardev:{name}"]
    return [
        str(binary), "-M", cfg.machine, "-nodefaults", "-display", "none",
        *serial, "-kernel", str(image), *timing, "-rtc", "clock=vm",
        "-nic", "user" if cfg.network else "none",
        *shlex.split(cfg.extra_args),
    ]
