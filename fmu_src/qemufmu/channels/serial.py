"""A guest UART as a qqq data channel, read as lines.

QEMU delivers what the guest transmitted during a step with that step's
reply, so the lines and the steps they complete in are deterministic.  A
line is decoded only once complete, so a UTF-8 character split across two
steps stays whole.
"""

from __future__ import annotations

from collections.abc import Mapping

from .base import Channel, Step, Var

#: log category of guest lines that are console text
CONSOLE_CATEGORY = "logGuestConsole"


class Lines:
    """Line assembly across steps for one wire."""

    def __init__(self) -> None:
        self.partial = b""
        self.total_bytes = 0

    def feed(self, data: bytes) -> list[str]:
        """Take a step's bytes; return the lines they completed."""
        if not data:
            return []
        self.total_bytes += len(data)
        *complete, self.partial = (self.partial + data).split(b"\n")
        return [c.decode("utf-8", "replace").rstrip("\r") for c in complete]

    def save(self) -> list:
        return [self.partial.decode("latin-1"), self.total_bytes]

    def load(self, saved: list) -> None:
        partial, self.total_bytes = saved
        self.partial = partial.encode("latin-1")


class SerialChannel(Channel):
    """A qqq chardev on the guest's next UART, its output cut into lines.

    Subclasses say what a line is (``line``); the default logs it as
    console text.
    """

    kind = "serial"

    def __init__(self, name: str, wire: str, variables: list[Var]) -> None:
        super().__init__(name, variables)
        self._wire = wire
        self.lines = Lines()

    def wire(self, params: Mapping[str, object]) -> str:
        return self._wire

    def qemu_args(self, launch) -> list[str]:
        # -serial attaches the machine's next UART: wires go in channel order.
        return ["-chardev", f"qqq,id={self._wire}",
                "-serial", f"chardev:{self._wire}"]

    def open(self, launch, saved: dict | None = None) -> None:
        self.lines = Lines()
        super().open(launch, saved)

    def receive(self, data: bytes, step: Step) -> None:
        if data:
            for text in self.lines.feed(data):
                self.line(text, step)

    def line(self, text: str, step: Step) -> None:
        log_text(text, step)

    def save(self) -> dict:
        return {"lines": self.lines.save()}

    def load(self, saved: dict) -> None:
        self.lines.load(saved["lines"])


def log_text(text: str, step: Step) -> None:
    """A guest line that is console text, to the FMU log (if wanted)."""
    if step.logs(CONSOLE_CATEGORY):
        step.log(f"[{step.end:.6f}] {text}", category=CONSOLE_CATEGORY)
