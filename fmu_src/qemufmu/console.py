"""Cut the bytes of a guest channel into lines stamped with step times.

QEMU delivers what the guest transmitted during a step with that step's
reply, so the lines and their time stamps are deterministic.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO


class Console:
    """Line assembly for one channel, with an optional transcript file."""

    def __init__(self, transcript: Path | None = None, append: bool = False) -> None:
        self.partial = b""
        self._transcript: TextIO | None = (
            transcript.open("a" if append else "w", encoding="utf-8")
            if transcript else None)
        self.total_bytes = 0

    def feed(self, data: bytes, time: float) -> list[str]:
        """Take a step's bytes; return the lines they completed.

        Each complete line also goes to the transcript, stamped with
        ``time``, the end of the step in which the guest finished it.
        """
        if not data:
            return []
        self.total_bytes += len(data)
        *complete, self.partial = (self.partial + data).split(b"\n")
        lines = [c.decode("utf-8", "replace").rstrip("\r") for c in complete]
        if self._transcript:
            for line in lines:
                self._transcript.write(f"[{time:12.6f}] {line}\n")
            self._transcript.flush()
        return lines

    def note(self, text: str) -> None:
        """A line of our own in the transcript (not guest output)."""
        if self._transcript:
            self._transcript.write(f"[{'':12}] -- {text}\n")
            self._transcript.flush()

    def close(self) -> None:
        if self._transcript:
            if self.partial:
                text = self.partial.decode("utf-8", "replace")
                self._transcript.write(f"[{'':12}] {text}\n")
            self._transcript.close()
            self._transcript = None
