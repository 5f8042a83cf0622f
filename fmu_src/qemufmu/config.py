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
from datetime import datetime
from pathlib import Path

from .boards import BOARD_SHIFT, effective_shift

ACCELERATORS = ("tcg-icount", "kvm")
MAX_ICOUNT_SHIFT = 10
#: The guest's wall clock at simulation start unless rtc_base says otherwise:
#: a fixed date, so that a guest reading its clock runs the same every time.
DEFAULT_RTC_BASE = "2024-01-01T00:00:00"
#: rtc_base's opt-in to the host's clock (UTC) at QEMU's start.
RTC_HOST = "host"
RTC_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d")


class ConfigError(ValueError):
    """A parameter value QEMU cannot be started with."""


@dataclass
class QemuConfig:
    """What the FMU's parameters say about the QEMU to start."""

    guest_image: str = ""
    machine: str = "mps2-an385"
    qemu_system: str = "arm"
    accelerator: str = "tcg-icount"
    icount_shift: int = BOARD_SHIFT     # the board's own clock (boards.py)
    extra_args: str = ""
    qemu_binary: str = ""
    step_timeout: float = 10.0
    host_network: bool = False
    initrd: str = ""
    kernel_cmdline: str = ""
    rtc_base: str = DEFAULT_RTC_BASE


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


def resolve_initrd(cfg: QemuConfig, resources: Path) -> Path | None:
    """The initial RAM disk: the parameter, the embedded one, or none."""
    if cfg.initrd:
        return _readable_file(Path(cfg.initrd), "initrd", "initrd")
    embedded = resources / "guest" / "initrd"
    return embedded if embedded.is_file() else None


def rtc_option(rtc_base: str) -> str:
    """The -rtc value: the guest's wall clock starts at rtc_base (UTC) and
    advances with QEMU's virtual clock; 'host' starts it from the host's."""
    if rtc_base == RTC_HOST:
        return "base=utc,clock=vm"
    for fmt in RTC_FORMATS:
        try:
            when = datetime.strptime(rtc_base, fmt)
        except ValueError:
            continue
        if when.year >= 1970:
            return f"base={rtc_base},clock=vm"
    raise ConfigError(f"rtc_base '{rtc_base}' is not a date like "
                      f"{DEFAULT_RTC_BASE} or 2024-01-01 (UTC, from 1970), "
                      f"nor '{RTC_HOST}' for the host's clock")


def validate(cfg: QemuConfig) -> None:
    """Check the values that need no file system."""
    if cfg.accelerator not in ACCELERATORS:
        raise ConfigError(f"accelerator '{cfg.accelerator}' is not one of "
                          f"{', '.join(ACCELERATORS)}")
    if not BOARD_SHIFT <= cfg.icount_shift <= MAX_ICOUNT_SHIFT:
        raise ConfigError(f"icount_shift {cfg.icount_shift} is outside "
                          f"0..{MAX_ICOUNT_SHIFT} (or {BOARD_SHIFT}: the "
                          "board's own clock)")
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
    rtc_option(cfg.rtc_base)


def qemu_argv(cfg: QemuConfig, binary: Path, image: Path,
              io_args: list[str], initrd: Path | None = None,
              nics: bool = False) -> list[str]:
    """The QEMU command line, without the -qqq option QemuProcess adds.

    ``io_args`` create the guest I/O channels' qqq devices (the slave's
    channels give them, in the order QEMU numbers the channels); ``nics``:
    they include network ports, so QEMU must not be told ``-nic none``.
    """
    if cfg.accelerator == "kvm":
        timing = ["-accel", "kvm"]
    else:
        shift = effective_shift(cfg.icount_shift, cfg.machine)
        timing = ["-icount", f"shift={shift},sleep=off"]
    boot = ["-kernel", str(image)]
    if initrd is not None:
        boot += ["-initrd", str(initrd)]
    if cfg.kernel_cmdline:
        boot += ["-append", cfg.kernel_cmdline]
    return [
        str(binary), "-M", cfg.machine, "-nodefaults", "-display", "none",
        *io_args, *boot, *timing, "-rtc", rtc_option(cfg.rtc_base),
        *(["-nic", "user"] if cfg.host_network else [] if nics else ["-nic", "none"]),
        *shlex.split(cfg.extra_args),
    ]
