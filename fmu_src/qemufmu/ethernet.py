"""Ethernet frames in FMI 2.0 String variables: the port encoding.

A port's value is zero or more lines, one frame each, in time order:

    <time_ns> <base64 of the frame>\\n

`time_ns` is simulation time in integer nanoseconds (the master's time
times 10^9, rounded): when the frame was sent, in an output; when it is to
be delivered, in an input.  The frame is the Ethernet frame from the
destination MAC address on, without preamble or FCS, in standard base64
with padding.  An empty string carries no frame.

Base64 and decimal digits are ASCII, so every value is valid UTF-8 without
NUL and passes through every FMI 2.0 master (fmpy, libcosim, FMI Library,
SSP string connections) unchanged.  See docs/network.md.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import NamedTuple

#: Largest frame a port carries: an Ethernet II frame without FCS at the
#: standard 1500-byte MTU is 1514 bytes; QEMU's NICs send at most 64 KiB.
MAX_FRAME = 65535
#: Shortest frame: destination, source and EtherType.
MIN_FRAME = 14


class FrameError(ValueError):
    """A port value that does not decode; the message names the line."""


class Frame(NamedTuple):
    """One Ethernet frame and its time (send or delivery, ns of simulation)."""

    time_ns: int
    data: bytes


def encode(frames: Iterable[Frame]) -> str:
    """The port value that carries frames, in the order given."""
    return "".join(
        f"{f.time_ns} {base64.b64encode(f.data).decode('ascii')}\n" for f in frames
    )


def decode(text: str) -> list[Frame]:
    """The frames a port value carries; FrameError says which line is bad.

    Lines must be in time order (equal times keep their order).  A missing
    final newline is accepted; empty lines are not frames and are skipped.
    """
    frames: list[Frame] = []
    last = None
    for number, line in enumerate(text.split("\n"), 1):
        if not line:
            continue
        time_text, sep, payload = line.partition(" ")
        if not sep or not time_text.isdigit() or not time_text.isascii():
            raise FrameError(f"line {number}: expected '<time_ns> <base64>', "
                             f"got {line[:40]!r}")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as e:
            raise FrameError(f"line {number}: the frame is not base64 ({e})") from e
        time_ns = int(time_text)
        if not MIN_FRAME <= len(data) <= MAX_FRAME:
            raise FrameError(f"line {number}: a frame of {len(data)} bytes; "
                             f"frames are {MIN_FRAME} to {MAX_FRAME} bytes")
        if last is not None and time_ns < last:
            raise FrameError(f"line {number}: time {time_ns} ns is before the "
                             f"previous line's {last} ns; lines are in time order")
        last = time_ns
        frames.append(Frame(time_ns, data))
    return frames


def default_mac(instance: str, port: int) -> str:
    """A locally administered unicast MAC address, the same every run.

    Derived from the instance name and the port index, so two ECUs of one
    system get different addresses without anyone setting them.
    """
    import hashlib

    digest = hashlib.sha256(f"{instance}\0{port}".encode()).digest()
    octets = bytes([0x02]) + digest[:5]     # 0x02: local, unicast
    return ":".join(f"{b:02x}" for b in octets)


def parse_mac(text: str) -> bytes:
    """Six octets from 'aa:bb:cc:dd:ee:ff'; ValueError if it is not one."""
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"{text!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    try:
        octets = bytes(int(p, 16) for p in parts)
    except ValueError as e:
        raise ValueError(f"{text!r} is not a MAC address (aa:bb:cc:dd:ee:ff)") from e
    if octets[0] & 1:
        raise ValueError(f"{text!r} is a multicast address; a NIC needs unicast")
    return octets
