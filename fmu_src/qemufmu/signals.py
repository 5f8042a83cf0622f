"""Declarative signals: FMU variables carried as `name=value` lines on a channel.

The line protocol is documented in docs/signals.md; the guest side is
firmware/lib/qqq_signals.c.  This module validates a signal configuration
(TOML at build time, JSON inside the FMU) and turns values into lines and
lines back into values.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

LINE_MAX = 120  # bytes, including the newline
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SIGNAL_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)")
#: A guest line asking for every input again (a guest that starts listening
#: late, e.g. a Linux program, missed what was sent while it booted).
RESEND_REQUEST = "?"
TYPES = ("Real", "Integer", "Boolean")
INT32 = range(-2**31, 2**31)


class SignalConfigError(ValueError):
    """A signal configuration that cannot be built."""


@dataclass
class Signal:
    """One input (master to guest) or output (guest to master)."""

    name: str
    type: str
    causality: str
    start: float | int | bool = 0
    unit: str = ""
    description: str = ""

    def parse(self, text: str) -> float | int | bool:
        """The value a guest line carries; ValueError if it does not parse."""
        text = text.strip()
        if self.type == "Real":
            value = float(text)
            if not math.isfinite(value):
                raise ValueError(f"{text!r} is not a finite number")
            return value
        if self.type == "Integer":
            value = int(text, 10)
            if value not in INT32:
                raise ValueError(f"{text} does not fit a 32-bit Integer")
            return value
        if text not in ("0", "1"):
            raise ValueError(f"{text!r} is not 0 or 1")
        return text == "1"

    def format(self, value: float | int | bool) -> str:
        """The line that sends ``value`` (repr: parses back to the same double)."""
        if self.type == "Real":
            return f"{self.name}={float(value)!r}\n"
        if self.type == "Integer":
            return f"{self.name}={int(value)}\n"
        return f"{self.name}={1 if value else 0}\n"


@dataclass
class SignalSet:
    """The signals of one FMU and the channel that carries them."""

    channel: str = "console"
    inputs: list[Signal] = field(default_factory=list)
    outputs: list[Signal] = field(default_factory=list)

    def output(self, name: str) -> Signal | None:
        return next((s for s in self.outputs if s.name == name), None)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> SignalSet:
        data = json.loads(text)
        return cls(channel=data["channel"],
                   inputs=[Signal(**s) for s in data["inputs"]],
                   outputs=[Signal(**s) for s in data["outputs"]])

    @classmethod
    def load(cls, resources: Path) -> SignalSet | None:
        """The set shipped in an FMU's resources, if it has one."""
        path = resources / "signals.json"
        return cls.from_json(path.read_text()) if path.exists() else None


def signals_from_config(config: dict, reserved: set[str]) -> SignalSet:
    """Validate the [[input]] and [[output]] tables of a TOML configuration."""
    channel = config.get("fmu", {}).get("channel", "console")
    if not NAME.fullmatch(channel):
        raise SignalConfigError(f"channel {channel!r} is not a valid chardev id")
    result = SignalSet(channel=channel)
    seen: set[str] = set()
    for causality, target in (("input", result.inputs),
                              ("output", result.outputs)):
        for i, entry in enumerate(config.get(causality, [])):
            where = f"[[{causality}]] #{i + 1}"
            unknown = set(entry) - {"name", "type", "unit", "start", "description"}
            if unknown:
                raise SignalConfigError(f"{where}: unknown keys {sorted(unknown)}")
            name = entry.get("name", "")
            if not NAME.fullmatch(name):
                raise SignalConfigError(f"{where}: name {name!r} must match "
                                        f"{NAME.pattern}")
            if name in seen or name in reserved:
                raise SignalConfigError(f"{where}: name {name!r} is already used")
            seen.add(name)
            kind = entry.get("type", "Real")
            if kind not in TYPES:
                raise SignalConfigError(f"{where}: type {kind!r} is not one of "
                                        f"{', '.join(TYPES)}")
            if entry.get("unit") and kind != "Real":
                raise SignalConfigError(f"{where}: only Real signals have units")
            signal = Signal(name=name, type=kind, causality=causality,
                            unit=entry.get("unit", ""),
                            description=entry.get("description", ""))
            try:
                signal.start = signal.parse(str(entry.get("start", 0)).lower()
                                            .replace("true", "1")
                                            .replace("false", "0"))
            except ValueError as e:
                raise SignalConfigError(f"{where}: start: {e}") from None
            target.append(signal)
    return result
