"""The network FMU's capture: pcapng in simulation time, written by dpkt.

One interface per port (``port0``, ``port1``, ...; nanosecond timestamps,
``if_tsresol`` 9), so a reader sees where each frame was.  Each frame is
recorded where it touches the network: on its ingress port at its send
time (direction inbound) and on each port that delivers it at its delivery
time (direction outbound, ``epb_flags``).  A lost frame therefore appears
once, inbound; a frame dropped by a full queue lacks that port's outbound
record.

Records are written in time order: delivery times lie in the future of the
step that computes them, so records wait in ``pending`` until no later
input can precede them (``write_until``), and are part of the FMU state.

Blocks are built with dpkt's pcapng classes and written as bytes, not
through ``dpkt.pcapng.Writer.writepkt``, which stamps a packet whose
timestamp is 0 with the host's clock and rounds to microseconds.  The
little-endian classes are used on every host, so the file's bytes do not
depend on the machine that wrote them.
"""

from __future__ import annotations

import base64
import heapq
import struct
from pathlib import Path
from typing import BinaryIO

from dpkt import pcapng

INBOUND = 1     # epb_flags direction: frame from the node into the network
OUTBOUND = 2    # frame from the network to the node
EPB_FLAGS = 2   # option code of epb_flags
SNAPLEN = 65535


def _options(*opts: tuple[int, bytes]) -> list[pcapng.PcapngOptionLE]:
    out = [pcapng.PcapngOptionLE(code=code, data=data) for code, data in opts]
    return out + [pcapng.PcapngOptionLE(code=pcapng.PCAPNG_OPT_ENDOFOPT)]


def header(ports: int, bit_rate: float) -> bytes:
    """Section header and one interface description per port."""
    shb = pcapng.SectionHeaderBlockLE(opts=_options(
        (pcapng.PCAPNG_OPT_SHB_USERAPPL, b"qemu-fmu network FMU")))
    blocks = [bytes(shb)]
    for port in range(ports):
        opts = [(pcapng.PCAPNG_OPT_IF_NAME, f"port{port}".encode()),
                (pcapng.PCAPNG_OPT_IF_TSRESOL, bytes([9]))]     # 10^-9 s
        if bit_rate > 0:
            opts.append((pcapng.PCAPNG_OPT_IF_SPEED, struct.pack("<Q", int(bit_rate))))
        idb = pcapng.InterfaceDescriptionBlockLE(
            linktype=pcapng.DLT_EN10MB, snaplen=SNAPLEN, opts=_options(*opts))
        blocks.append(bytes(idb))
    return b"".join(blocks)


def packet(port: int, time_ns: int, data: bytes, direction: int) -> bytes:
    """One enhanced packet block."""
    epb = pcapng.EnhancedPacketBlockLE(
        iface_id=port, ts_high=time_ns >> 32, ts_low=time_ns & 0xFFFFFFFF,
        pkt_data=data, opts=_options((EPB_FLAGS, struct.pack("<I", direction))))
    return bytes(epb)


class Capture:
    """A pcapng file being written; ``offset`` is how much of it is final."""

    def __init__(self, path: Path, file: BinaryIO, head: bytes) -> None:
        self.path = path
        self._file = file
        self._header = head
        self.offset = file.tell()
        #: records not yet written: (time_ns, seq, port, direction, data)
        self.pending: list[tuple[int, int, int, int, bytes]] = []
        self._seq = 0

    @classmethod
    def create(cls, path: Path, ports: int, bit_rate: float) -> Capture:
        """A new capture at ``path`` (replacing any file there)."""
        head = header(ports, bit_rate)
        file = open(path, "wb")  # noqa: SIM115 (closed by close())
        file.write(head)
        file.flush()
        return cls(path, file, head)

    @classmethod
    def resume(cls, path: Path, ports: int, bit_rate: float,
               offset: int) -> tuple[Capture, str | None]:
        """The capture at ``path`` cut back to its first ``offset`` bytes,
        written on from there; or, if the file does not hold those bytes
        (removed, shorter, another header), a new one and a warning."""
        head = header(ports, bit_rate)
        try:
            file = open(path, "r+b")  # noqa: SIM115 (closed by close())
        except FileNotFoundError:
            file = None
        if file is not None:
            size = file.seek(0, 2)
            file.seek(0)
            if size >= offset and file.read(len(head)) == head:
                file.truncate(offset)
                file.seek(offset)
                return cls(path, file, head), None
            file.close()
        why = (f"capture_file {path} does not hold the {offset} bytes written "
               "before the state was taken; it starts anew, without the frames "
               "before the state")
        return cls.create(path, ports, bit_rate), why

    def add(self, time_ns: int, port: int, data: bytes, direction: int) -> None:
        heapq.heappush(self.pending, (time_ns, self._seq, port, direction, data))
        self._seq += 1

    def write_until(self, horizon_ns: int | None) -> None:
        """Write the records before ``horizon_ns`` (all if None); flush, so
        the file is readable (and its offset final) between steps."""
        blocks = []
        while self.pending and (horizon_ns is None
                                or self.pending[0][0] < horizon_ns):
            time_ns, _, port, direction, data = heapq.heappop(self.pending)
            blocks.append(packet(port, time_ns, data, direction))
        if blocks:
            self._file.write(b"".join(blocks))
        self._file.flush()
        self.offset = self._file.tell()

    def close(self) -> None:
        """Write what is pending and close the file."""
        if not self._file.closed:
            self.write_until(None)
            self._file.close()

    # -- FMU state: JSON-compatible ----------------------------------------

    def state(self) -> dict:
        return {"offset": self.offset, "seq": self._seq,
                "pending": [[t, s, p, d, base64.b64encode(b).decode("ascii")]
                            for t, s, p, d, b in sorted(self.pending)]}

    def restore_pending(self, state: dict) -> None:
        self._seq = state["seq"]
        self.pending = [(t, s, p, d, base64.b64decode(b))
                        for t, s, p, d, b in state["pending"]]
        heapq.heapify(self.pending)
