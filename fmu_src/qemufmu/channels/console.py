"""The guest console: the machine's first UART as String variables.

``console`` is what the guest wrote during the last step, decoded
incrementally: a UTF-8 character split across two steps comes whole with
the second.  ``console_in`` goes to the guest when its value changes.
Complete lines go to the FMU log and, with ``console_file``, to a
transcript stamped with the simulation time of the step that completed them.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from .base import Launch, Step, Var
from .serial import SerialChannel, log_text

WIRE = "console"
#: console_in bytes one step can carry: a frame holds 16 MiB, and the rest
#: leaves room for the frame's fields and the other channels' input.
CONSOLE_IN_MAX = 16 * 1024 * 1024 - 64 * 1024

VARIABLES = [
    Var("String", "console_file", "File to write the guest console to, lines "
        "stamped with simulation time; empty: none", "parameter", ""),
    Var("String", "console", "What the guest wrote on its console during the "
        "last step", "output", ""),
    Var("Integer", "console_bytes", "Bytes the guest has written on its "
        "console so far", "output", 0),
    Var("String", "console_in", "Bytes for the guest console at the start of "
        "the next step", "input", ""),
]


class Transcript:
    """The console_file: complete lines stamped with the step's end time."""

    def __init__(self, path: Path, append: bool) -> None:
        self._file: TextIO = path.open("a" if append else "w", encoding="utf-8")

    def line(self, text: str, time: float) -> None:
        self._file.write(f"[{time:12.6f}] {text}\n")

    def note(self, text: str) -> None:
        """A line of our own (not guest output)."""
        self._file.write(f"[{'':12}] -- {text}\n")

    def flush(self) -> None:
        self._file.flush()

    def close(self, partial: bytes) -> None:
        if partial:
            self._file.write(f"[{'':12}] {partial.decode('utf-8', 'replace')}\n")
        self._file.close()


class ConsoleChannel(SerialChannel):
    """The console on the guest's first UART."""

    def __init__(self, claimed: Callable[[str], bool] | None = None) -> None:
        """``claimed`` tells lines another channel on this UART takes (the
        signals'): they are not console text for the log."""
        super().__init__("console", WIRE, VARIABLES)
        self._claimed = claimed or (lambda text: False)
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._transcript: Transcript | None = None
        self._sent = ""

    def refuse(self, name: str, value: object) -> str | None:
        if name == "console_in" and len(value.encode()) > CONSOLE_IN_MAX:
            return (f"console_in of {len(value.encode())} bytes refused: a step "
                    f"carries at most {CONSOLE_IN_MAX}; split it over steps")
        return None

    def open(self, launch: Launch, saved: dict | None = None) -> None:
        self._decoder.reset()
        self._sent = ""
        path = self.values["console_file"]
        self._transcript = Transcript(Path(path), saved is not None) if path else None
        super().open(launch, saved)
        if self._transcript and launch.restored_at is not None:
            self._transcript.note(f"restored the state of t={launch.restored_at:.6f} s")
            self._transcript.flush()

    def send(self, step: Step) -> bytes:
        # Sent when it differs from the previous step's value, like the
        # signals: a value set once reaches the guest once.
        text = self.values["console_in"]
        if text == self._sent:
            return b""
        self._sent = text
        return text.encode()

    def receive(self, data: bytes, step: Step) -> None:
        if not data:    # most steps: the last step's text goes, nothing else
            self.values["console"] = ""
            return
        self.values["console"] = self._decoder.decode(data)
        super().receive(data, step)
        self.values["console_bytes"] = self.lines.total_bytes
        if self._transcript:
            self._transcript.flush()

    def line(self, text: str, step: Step) -> None:
        if self._transcript:
            self._transcript.line(text, step.end)
        if not self._claimed(text):
            log_text(text, step)

    def save(self) -> dict:
        pending, _ = self._decoder.getstate()
        return {**super().save(), "sent": self._sent,
                "undecoded": pending.decode("latin-1")}

    def load(self, saved: dict) -> None:
        super().load(saved)
        self._sent = saved["sent"]
        self._decoder.setstate((saved["undecoded"].encode("latin-1"), 0))

    def close(self) -> None:
        if self._transcript:
            self._transcript.close(self.lines.partial)
            self._transcript = None
