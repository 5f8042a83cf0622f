"""Timing, loss and queues of the network FMU: frames in -> frames out.

One call of ``Network.step`` takes the frames that came in on every port
during one communication step (each with its send time) and returns, for
every port, the frames it is to deliver (each with its delivery time), in
time order.  Each frame is handled once, when it comes in; what remains
between steps (output queues, the learned table, the PRNG) is the model's
state and part of the FMU state.

Timing (docs/network.md, "Timing"): a frame sent at t on port i enters the
output queue of each destination port j at t; port j serializes one frame
at a time, so it starts at max(t, when port j finishes the frame before)
and takes ``serialization_ns``; the frame reaches the node on port j a
propagation ``delay`` after its last bit has left:

    delivery = max(t, busy_j) + serialization + delay

Frames are taken in the order (send time, port, position in the port's
value), so equal send times on two ports are ordered by port index.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from ..ethernet import Frame
from .forwarding import Forwarding

#: Bytes on the wire around a frame as ports carry it (no preamble, no FCS):
#: preamble and start delimiter (8), FCS (4), inter-frame gap (12).
WIRE_OVERHEAD = 24
#: Ethernet pads a frame to 60 bytes before its FCS (64 with it).
MIN_WIRE_FRAME = 60


class ParameterError(ValueError):
    """A parameter value the network cannot run with; the message says which."""


@dataclass(frozen=True)
class LinkParams:
    """The network's parameters, checked."""

    ports: int
    delay: float = 0.0          # s
    bit_rate: float = 0.0       # bit/s; 0: no serialization time
    loss: float = 0.0           # probability
    seed: int = 0
    queue_limit: int = 0        # frames waiting per output port; 0: no limit
    learning: bool = False

    def __post_init__(self) -> None:
        if self.ports < 2:
            raise ParameterError(f"ports is {self.ports}: a network needs 2 or more")
        if not (math.isfinite(self.delay) and self.delay >= 0):
            raise ParameterError(f"delay is {self.delay!r} s: it must be finite "
                                 "and >= 0")
        if not (math.isfinite(self.bit_rate) and self.bit_rate >= 0):
            raise ParameterError(f"bit_rate is {self.bit_rate!r} bit/s: it must be "
                                 "finite and >= 0 (0: no serialization time)")
        if not (0.0 <= self.loss <= 1.0):
            raise ParameterError(f"loss is {self.loss!r}: a probability is in [0, 1]")
        if self.queue_limit < 0:
            raise ParameterError(f"queue_limit is {self.queue_limit}: it must be "
                                 ">= 0 (0: no limit)")

    @property
    def delay_ns(self) -> int:
        return round(self.delay * 1e9)


def wire_bits(frame_len: int) -> int:
    """Bits a frame of ``frame_len`` bytes (no FCS) occupies on the wire."""
    return (max(frame_len, MIN_WIRE_FRAME) + WIRE_OVERHEAD) * 8


def serialization_ns(frame_len: int, bit_rate: float) -> int:
    """Time to send a frame at ``bit_rate``, in ns rounded to nearest (exact
    rational arithmetic, so it does not depend on float rounding)."""
    if bit_rate == 0:
        return 0
    return round(Fraction(wire_bits(frame_len) * 10**9) / Fraction(bit_rate))


class Network:
    """A hub/link or learning switch with per-port output queues."""

    def __init__(self, params: LinkParams) -> None:
        self.params = params
        n = params.ports
        self.forwarding = Forwarding(n, params.learning)
        self._rng = random.Random(params.seed)
        #: when each output port finishes the last frame scheduled on it (ns)
        self._busy_until = [0] * n
        #: end of serialization of each frame not yet fully sent, per port
        self._waiting: list[deque[int]] = [deque() for _ in range(n)]
        self.dropped = [0] * n      # frames refused by a full output queue
        self.frames = 0             # frames scheduled on an output port
        self.lost = 0               # frames lost to the loss draw

    def step(self, inputs: Sequence[Sequence[Frame]]) -> list[list[Frame]]:
        """The frames each port delivers, for the frames that came in."""
        p = self.params
        order = sorted((f.time_ns, i, k) for i, port in enumerate(inputs)
                       for k, f in enumerate(port))
        out: list[list[Frame]] = [[] for _ in range(p.ports)]
        for t, i, k in order:
            frame = inputs[i][k]
            # One draw per frame, whatever `loss` is: the same seed gives
            # the same draws, and a higher loss loses a superset of frames.
            if self._rng.random() < p.loss:
                self.lost += 1
                continue
            for j in self.forwarding.destinations(i, frame.data):
                delivered = self._schedule(j, t, len(frame.data))
                if delivered is not None:
                    out[j].append(Frame(delivered, frame.data))
        # Each port's frames are in order already (its queue is FIFO); a sort
        # keeps that true whatever the order of the inputs.
        return [sorted(frames, key=lambda f: f.time_ns) for frames in out]

    def _schedule(self, port: int, t: int, size: int) -> int | None:
        """Queue a frame on ``port`` at ``t``; its delivery time, or None if
        the queue is full (counted)."""
        waiting = self._waiting[port]
        while waiting and waiting[0] <= t:
            waiting.popleft()               # fully sent by t
        if self.params.queue_limit and len(waiting) >= self.params.queue_limit:
            self.dropped[port] += 1
            return None
        start = max(t, self._busy_until[port])
        end = start + serialization_ns(size, self.params.bit_rate)
        self._busy_until[port] = end
        if end > t:
            waiting.append(end)
        self.frames += 1
        return end + self.params.delay_ns

    # -- FMU state: JSON-compatible ----------------------------------------

    def state(self) -> dict:
        version, internal, gauss = self._rng.getstate()
        return {"rng": [version, list(internal), gauss],
                "busy_until": list(self._busy_until),
                "waiting": [list(w) for w in self._waiting],
                "table": self.forwarding.state(),
                "dropped": list(self.dropped), "frames": self.frames,
                "lost": self.lost}

    def restore(self, state: dict) -> None:
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))
        self._busy_until = list(state["busy_until"])
        self._waiting = [deque(w) for w in state["waiting"]]
        self.forwarding.restore(state["table"])
        self.dropped = list(state["dropped"])
        self.frames = state["frames"]
        self.lost = state["lost"]
