"""Where a frame goes: every other port (hub, link) or a learning switch.

A learning switch remembers, for each unicast source MAC address, the port
it was last seen on; a frame to a known unicast address goes to that port
only (or nowhere, if that is the port it came from, as a switch filters
it); unknown, broadcast and multicast destinations are flooded to every
other port.  Entries never age out: a simulation is short, and a fixed
table keeps runs simple to reason about.
"""

from __future__ import annotations


def is_group(mac: bytes) -> bool:
    """Broadcast or multicast: the I/G bit of the first octet."""
    return bool(mac[0] & 1)


class Forwarding:
    """Forwarding decisions for ``ports`` ports."""

    def __init__(self, ports: int, learning: bool) -> None:
        self.ports = ports
        self.learning = learning
        #: source MAC -> port it was last seen on (learning switch only)
        self.table: dict[bytes, int] = {}

    def destinations(self, port: int, frame: bytes) -> list[int]:
        """The output ports for ``frame`` coming in on ``port``; learns its source."""
        others = [j for j in range(self.ports) if j != port]
        if not self.learning:
            return others
        dst, src = frame[0:6], frame[6:12]
        if not is_group(src):
            self.table[src] = port
        if is_group(dst) or dst not in self.table:
            return others
        out = self.table[dst]
        return [] if out == port else [out]

    # -- FMU state: JSON-compatible ----------------------------------------

    def state(self) -> dict[str, int]:
        return {mac.hex(): port for mac, port in self.table.items()}

    def restore(self, state: dict[str, int]) -> None:
        self.table = {bytes.fromhex(mac): int(port) for mac, port in state.items()}
