"""Signals: named Real/Integer/Boolean variables as `name=value` lines.

The line protocol and the configuration are in docs/signals.md
(qemufmu/signals.py validates and formats); this channel sends the inputs
that changed at the start of each step and applies the output lines of
each reply.  It travels on the console UART or on a UART of its own.
"""

from __future__ import annotations

from pythonfmu.enums import Fmi2Status

from ..signals import LINE_MAX, RESEND_REQUEST, SIGNAL_LINE, SignalSet
from .base import Launch, Step, Var
from .serial import SerialChannel

#: log category of guest lines on the signal channel that could not be used
SIGNALS_CATEGORY = "logGuestSignals"


class SignalChannel(SerialChannel):
    """The signals of a --config FMU."""

    def __init__(self, signals: SignalSet, console_wire: str) -> None:
        super().__init__("signals", signals.channel, [
            Var(s.type, s.name, s.description, s.causality, s.start)
            for s in signals.inputs + signals.outputs])
        self.signals = signals
        #: on the console's UART the console logs the text lines; on a UART
        #: of its own, this channel does
        self._logs_text = signals.channel != console_wire
        self._sent: dict[str, object] = {}

    @staticmethod
    def claims(text: str) -> bool:
        """Whether a guest line is for the signals, not console text."""
        return text == RESEND_REQUEST or SIGNAL_LINE.fullmatch(text) is not None

    def open(self, launch: Launch, saved: dict | None = None) -> None:
        self._sent = {}
        super().open(launch, saved)

    def send(self, step: Step) -> bytes:
        # An input goes out when its value differs from the value last sent.
        lines = []
        for signal in self.signals.inputs:
            value = self.values[signal.name]
            if self._sent.get(signal.name) != value:
                lines.append(signal.format(value))
                self._sent[signal.name] = value
        return "".join(lines).encode()

    def line(self, text: str, step: Step) -> None:
        if text == RESEND_REQUEST:
            self._sent = {}  # every input goes out with the next step
            return
        match = SIGNAL_LINE.fullmatch(text)
        if not match:
            if self._logs_text:
                super().line(text, step)
            return
        name, value = match.groups()
        signal = self.signals.output(name)
        problem = None
        if len(text.encode()) + 1 > LINE_MAX:
            problem = f"is longer than {LINE_MAX} bytes"
        elif signal is None:
            problem = f"names no output signal ('{name}')"
        else:
            try:
                self.values[name] = signal.parse(value)
            except ValueError as e:
                problem = f"has a bad value for {signal.type} {name}: {e}"
        if problem:
            step.log(f"t={step.end:.6f} s: guest line {text[:LINE_MAX]!r} "
                     f"{problem}; ignored", Fmi2Status.warning,
                     category=SIGNALS_CATEGORY)

    def save(self) -> dict:
        return {**super().save(), "sent": self._sent}

    def load(self, saved: dict) -> None:
        super().load(saved)
        self._sent = dict(saved["sent"])
