"""The shape every guest I/O channel of the slave has.

A channel kind (the console, the signals, an Ethernet port, ...) owns
everything about one kind of guest I/O, so the slave only loops over
channels:

- its FMU variables (``variables``; their values live in ``values``),
- the qqq data channel it travels on (``wire``) and that channel's QEMU
  arguments (``qemu_args``),
- what it sends with each advance (``send``) and what it makes of the
  bytes of each reply (``receive``),
- its part of an FMU state beyond its variables (``save``/``load``),
- the files it keeps open while QEMU runs (``open``/``close``).

Several channels may share one wire (the signals on the console UART): the
slave concatenates their input in channel order and gives each the whole
output of the wire; the first channel of a wire gives its QEMU arguments.

A channel never holds the slave: whatever it needs from it comes with the
call (``Launch``, ``Step``), so dropping the slave frees its channels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from ..clock import StepClock

#: the slave's log: (message, status, category); status and category are
#: pythonfmu's Fmi2Status and a log category name
Log = Callable[..., None]


class Var(NamedTuple):
    """One FMU variable a channel declares."""

    type: str           # Real, Integer, Boolean or String
    name: str
    description: str
    causality: str      # parameter, input or output
    start: object


@dataclass(frozen=True)
class Launch:
    """What a channel may know when QEMU starts."""

    #: every parameter's value, by name (the slave's and the channels')
    params: Mapping[str, object]
    #: the FMU instance's name
    instance: str
    #: where the restored state was taken (master time, s); None: a fresh start
    restored_at: float | None = None


class Step(NamedTuple):
    """One communication step, as a channel sees it (a tuple: one is made
    every step, and a frozen dataclass costs a microsecond to build)."""

    #: master time where the step starts and where it ends (s)
    start: float
    end: float
    #: QEMU's virtual time at the start and at the end of the step (ns since
    #: QEMU started; the end as asked for)
    start_ns: int
    end_ns: int
    #: QEMU time <-> master time
    clock: StepClock
    log: Log
    #: whether the master takes OK-status messages of a category (errors
    #: and warnings always go): build a message only if it does
    logs: Callable[[str], bool]


class Channel:
    """One kind of guest I/O: override what the kind needs."""

    #: the wire's kind in protocol version 3's HELLO: serial or net
    kind: ClassVar[str] = "serial"

    def __init__(self, name: str, variables: list[Var]) -> None:
        #: unique among the FMU's channels; names its part of an FMU state
        self.name = name
        self.variables = variables
        self.values: dict[str, object] = {v.name: v.start for v in variables}

    def wire(self, params: Mapping[str, object]) -> str | None:
        """The qqq data channel this one travels on, or None when unused."""
        return None

    def qemu_args(self, launch: Launch) -> list[str]:
        """QEMU arguments that create the wire and attach it to the guest."""
        return []

    def refuse(self, name: str, value: object) -> str | None:
        """Why ``value`` cannot be set into variable ``name``; None if it can."""
        return None

    def open(self, launch: Launch, saved: dict | None = None) -> None:
        """QEMU started: a fresh run, or (``saved``) a restored state's."""
        if saved is not None:
            self.load(saved)

    def send(self, step: Step) -> bytes:
        """Bytes for the guest at the start of ``step``."""
        return b""

    def receive(self, data: bytes, step: Step) -> None:
        """The bytes the guest sent on the wire during ``step``."""

    def next_event_ns(self, step: Step) -> int | None:
        """QEMU time (ns) of the next thing this channel holds for the guest
        after ``step``; None if it holds nothing."""
        return None

    def save(self) -> dict:
        """Its part of an FMU state beyond its variables (JSON-compatible)."""
        return {}

    def load(self, saved: dict) -> None:
        """Take back what ``save`` returned."""

    def close(self) -> None:
        """QEMU is gone or replaced: flush and close what ``open`` opened."""
