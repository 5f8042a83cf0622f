"""Collect what the guest writes on its console, step by step.

QEMU writes the guest's UART into a file synchronously as the guest
transmits, so after a step's reply the file holds exactly what the guest
sent up to that point: reading it between steps is deterministic.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, TextIO


class Console:
    """Tail of QEMU's console file, cut into lines stamped with step times."""

    def __init__(self, path: Path, transcript: Path | None = None) -> None:
        self.path = path
        path.touch()
        self._file: BinaryIO = path.open("rb")
        self._partial = b""
        self._transcript: TextIO | None = (
            transcript.open("w", encoding="utf-8") if transcript else None)
        self.total_bytes = 0

    def read_step(self, time: float) -> tuple[bytes, list[str]]:
        """Bytes sent since the last call, and the lines they completed.

        Each complete line is also written to the transcript, stamped with
        ``time``, the end of the step in which the guest finished it.
        """
        data = self._file.read()
        if not data:
            return b"", []
        self.total_bytes += len(data)
        *complete, self._partial = (self._partial + data).split(b"\n")
        lines = [c.decode("utf-8", "replace").rstrip("\r") for c in complete]
        if self._transcript:
            for line in lines:
                self._transcript.write(f"[{time:12.6f}] {line}\n")
            self._transcript.flush()
        return data, lines

    def close(self) -> None:
        self._file.close()
        if self._transcript:
            if self._partial:
                text = self._partial.decode("utf-8", "replace")
                self._transcript.write(f"[{'':12}] {text}\n")
            self._transcript.close()
            self._transcript = None
