"""The slave's guest I/O channels, one file per kind (base.py: their shape).

``for_fmu`` lists the channels an FMU has, from what its resources say;
a new kind is a new file here and a line in ``for_fmu``.
"""

from __future__ import annotations

from pathlib import Path

from ..signals import SignalSet
from .base import Channel, Launch, Step, Var
from .console import WIRE as CONSOLE_WIRE
from .console import ConsoleChannel
from .ethernet import EthernetPort, load_specs
from .signals import SignalChannel

__all__ = ["Channel", "Launch", "Step", "Var", "for_fmu", "fixed_names"]


def for_fmu(resources: Path) -> list[Channel]:
    """The channels of the FMU whose resources are ``resources``, in wire
    order (the console first: it is the guest's first UART)."""
    signals = SignalSet.load(resources)
    # A configuration without signals (a network node, say) has a console
    # only: no line of it is taken for a signal.
    if signals is not None and not (signals.inputs or signals.outputs):
        signals = None
    channel = SignalChannel(signals, CONSOLE_WIRE) if signals else None
    shared = channel is not None and signals.channel == CONSOLE_WIRE
    found: list[Channel] = [ConsoleChannel(channel.claims if shared else None)]
    if channel is not None:
        found.append(channel)
    found += [EthernetPort(spec, index)
              for index, spec in enumerate(load_specs(resources))]
    return found


def fixed_names() -> set[str]:
    """Variable names every FMU has, which a configuration cannot reuse."""
    return {v.name for v in ConsoleChannel().variables}
