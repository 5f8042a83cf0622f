"""The simulator's end of the qqq synchronization socket.

Two protocol versions share one socket discipline (``Endpoint``):

- ``SyncChannel``, the base protocol (docs/sync-protocol.md): every message
  is an unsigned 32-bit big-endian count of microseconds; we write an
  advance, QEMU runs that far and writes the time that actually elapsed.
- ``FramedChannel``, version 2 (docs/protocol-v2.md): framed messages with
  a HELLO exchange, 64-bit nanoseconds, the next pending virtual-timer
  deadline, and the bytes of QEMU's ``qqq`` data channels; version 3 adds
  each channel's kind to HELLO and network channels (``-netdev qqq``),
  whose bytes are time-stamped frames (``pack_net``, ``unpack_net``).

QEMU's virtual clock never passes ``MAX_TIME_NS`` (2^62 ns, about 146
years, since start): it refuses an advance that would take it further.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

MAX_ADVANCE_US = 0xFFFF_FFFF
#: virtual time QEMU's clock may reach since start; no advance may pass it
MAX_TIME_NS = 1 << 62
#: the largest single advance (from time 0); later ones: MAX_TIME_NS - now
MAX_ADVANCE_NS = MAX_TIME_NS
#: largest frame payload in either direction
MAX_PAYLOAD = 16 * 1024 * 1024
NO_DEADLINE = 0xFFFF_FFFF_FFFF_FFFF
VERSION = 2
#: version 2 plus channel kinds in HELLO and network channels
KINDS_VERSION = 3
#: channel kinds as HELLO (version 3) names them
KINDS = {1: "serial", 2: "net"}

HELLO, ADVANCE, REPLY, DATA, END = 1, 2, 3, 4, 5
#: why the machine stopped, as an END frame says
END_CAUSES = {
    1: "the guest powered off",
    2: "the guest panicked",
    3: "QEMU hit an internal error",
    4: "QEMU was told to quit",
}
#: machine states between steps (docs/protocol-v2.md, "Machine states")
SAVE, STATE, LOAD, RESULT = 16, 17, 18, 19
_U32 = struct.Struct(">I")
_HEADER = struct.Struct(">II")
_ADVANCE = struct.Struct(">QI")
_REPLY = struct.Struct(">QQI")
_END = struct.Struct(">II")
_BLOCK = struct.Struct(">II")
_NET_RECORD = struct.Struct(">QI")
#: a frame header and an ADVANCE payload without blocks: most steps
_PLAIN_ADVANCE = struct.Struct(">IIQI")
#: struct timeval, for the socket's wall-clock limits
_TIMEVAL = struct.Struct("@ll")


def pack_net(frames) -> bytes:
    """A network channel's bytes for ``(time_ns, frame)`` pairs, in order.

    Times are QEMU virtual nanoseconds since QEMU started: when to deliver,
    in an advance (within the step, or already past: delivered at once).
    """
    return b"".join(_NET_RECORD.pack(t, len(f)) + f for t, f in frames)


def unpack_net(data: bytes) -> list[tuple[int, bytes]]:
    """The ``(time_ns, frame)`` pairs a network channel's bytes carry.

    In a reply: the frames the guest's NIC sent during the step and the
    virtual time it sent each.
    """
    frames, pos = [], 0
    while pos < len(data):
        if pos + _NET_RECORD.size > len(data):
            raise ProtocolError("network record header cut short in QEMU's output")
        time_ns, size = _NET_RECORD.unpack_from(data, pos)
        pos += _NET_RECORD.size
        if pos + size > len(data):
            raise ProtocolError("network frame cut short in QEMU's output")
        frames.append((time_ns, data[pos:pos + size]))
        pos += size
    return frames


class SyncError(RuntimeError):
    """The synchronization with QEMU failed."""


class QemuGone(SyncError):
    """QEMU closed its end: it exited, or the guest powered off.

    ``outputs`` holds what the guest sent in the step that did not finish
    (version 2: QEMU's END frame, or DATA frames before the end of stream);
    ``cause`` says why the machine stopped when QEMU said so.
    """

    def __init__(self, message: str, outputs: dict[int, bytes] | None = None,
                 cause: str | None = None) -> None:
        super().__init__(message)
        self.outputs = outputs or {}
        self.cause = cause


class StepTimeout(SyncError):
    """QEMU did not answer within the wall-clock limit."""


class ProtocolError(SyncError):
    """QEMU sent something the protocol does not allow."""


class StateRefused(SyncError):
    """QEMU could not save or load a machine state (its message says why)."""


class Endpoint:
    """Our end of the socket pair QEMU is paced through."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        # The wall-clock limit is the kernel's (SO_RCVTIMEO, SO_SNDTIMEO) on
        # a blocking socket: with a Python timeout every send and every recv
        # would be a poll first, two more system calls per step.
        sock.settimeout(None)
        self._timeout: float | None = None
        # Bytes read ahead: a frame's header and payload (and, for a step
        # with DATA frames, the next frames) come in one recv, not one each:
        # with a timeout set every recv is a poll and a read.
        self._ahead = bytearray()

    @classmethod
    def pair(cls) -> tuple[Endpoint, socket.socket]:
        """Return our endpoint and the socket end to hand to QEMU."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.set_inheritable(False)
        return cls(ours), theirs

    def fileno(self) -> int:
        return self._sock.fileno()

    def _limit(self, timeout: float | None) -> None:
        """Let each send and recv wait at most ``timeout`` s (None: no limit)."""
        if timeout == self._timeout:    # two system calls: off the hot path
            return
        # 0 would mean "no limit" to the kernel: the shortest limit it has
        usec = 0 if timeout is None else max(1, round(timeout * 1e6))
        tv = _TIMEVAL.pack(usec // 1_000_000, usec % 1_000_000)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        self._timeout = timeout

    def _send(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise QemuGone("QEMU closed the synchronization socket") from e
        except BlockingIOError as e:    # the send limit ran out
            raise StepTimeout(f"QEMU did not read within {self._timeout:g} s "
                              "of wall-clock time") from e

    def _recv(self, size: int, timeout: float | None) -> bytes:
        buf = self._fill(size, timeout)
        data = bytes(buf[:size])
        del buf[:size]
        return data

    def _fill(self, size: int, timeout: float | None) -> bytearray:
        """The read-ahead buffer, holding at least ``size`` bytes."""
        self._limit(timeout)
        buf = self._ahead  # amortized appends: frames go up to 16 MiB
        try:
            while len(buf) < size:
                chunk = self._sock.recv(min(max(size - len(buf), 1 << 16), 1 << 20))
                if not chunk:
                    raise QemuGone("QEMU closed the synchronization socket")
                buf += chunk
        except BlockingIOError as e:    # the receive limit ran out
            raise StepTimeout(
                f"QEMU did not answer within {timeout:g} s of wall-clock time"
            ) from e
        except ConnectionResetError as e:
            raise QemuGone("QEMU reset the synchronization socket") from e
        return buf

    def close(self) -> None:
        """Close our end; QEMU sees end-of-file and exits with status 0."""
        self._sock.close()


class SyncChannel(Endpoint):
    """The base protocol: 32-bit microsecond advances and replies."""

    version = 1

    def send_advance(self, us: int) -> None:
        """Ask QEMU to run ``us`` microseconds of virtual time."""
        if not 0 <= us <= MAX_ADVANCE_US:
            raise ValueError(
                f"advance of {us} us is outside the protocol's range "
                f"0..{MAX_ADVANCE_US} us")
        self._send(_U32.pack(us))

    def recv_elapsed(self, timeout: float | None = None) -> int:
        """Wait for QEMU's reply: the virtual microseconds that elapsed."""
        return _U32.unpack(self._recv(_U32.size, timeout))[0]

    def advance(self, us: int, timeout: float | None = None) -> int:
        """One synchronization step: send ``us``, return the elapsed time."""
        self._limit(timeout)    # the send's limit too: QEMU may not read
        self.send_advance(us)
        return self.recv_elapsed(timeout)


class Reply(NamedTuple):
    """QEMU's answer to one version 2 advance."""

    elapsed_ns: int
    #: virtual ns from the end of this step to the next pending timer
    #: deadline, or None when no timer is pending
    lookahead_ns: int | None
    #: bytes each data channel's guest device sent during the step
    outputs: dict[int, bytes]


class FramedChannel(Endpoint):
    """Versions 2 and 3: frames, nanoseconds, lookahead and data channels."""

    version = VERSION
    channels: list[str]
    #: each channel's kind, "serial" or "net" (version 2 has serial only)
    kinds: list[str]

    def hello(self, timeout: float | None = None) -> list[str]:
        """Exchange HELLO frames; return QEMU's data channel names, in order."""
        payload = self._recv_frame(HELLO, timeout)
        if len(payload) < 8:
            raise ProtocolError("HELLO from QEMU is too short")
        version, count = struct.unpack_from(">II", payload)
        if version != self.version:
            raise ProtocolError(f"QEMU speaks protocol version {version}, "
                                f"we speak {self.version}")
        names, kinds, pos = [], [], 8
        try:
            for _ in range(count):
                kind = "serial"
                if version >= KINDS_VERSION:
                    (code,) = struct.unpack_from(">H", payload, pos)
                    kind = KINDS.get(code, f"unknown kind {code}")
                    pos += 2
                (size,) = struct.unpack_from(">H", payload, pos)
                names.append(payload[pos + 2:pos + 2 + size].decode())
                kinds.append(kind)
                pos += 2 + size
        except struct.error:
            raise ProtocolError("HELLO from QEMU is cut short") from None
        self._send(_HEADER.pack(HELLO, 4) + _U32.pack(self.version))
        self.channels = names
        self.kinds = kinds
        return names

    def send_advance(self, ns: int, inputs: dict[int, bytes] | None = None) -> None:
        """Ask QEMU to run ``ns`` nanoseconds; ``inputs`` reach the guest first.

        QEMU refuses (exit 1) an advance that takes its clock past
        ``MAX_TIME_NS``; the caller knows the time, so checks the sum.
        """
        if not 0 <= ns <= MAX_ADVANCE_NS:
            raise ValueError(f"advance of {ns} ns is outside 0..2^62")
        if not inputs:
            self._send(_PLAIN_ADVANCE.pack(ADVANCE, _ADVANCE.size, ns, 0))
            return
        blocks = [_BLOCK.pack(ch, len(data)) + data
                  for ch, data in (inputs or {}).items() if data]
        payload = _ADVANCE.pack(ns, len(blocks)) + b"".join(blocks)
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"ADVANCE payload of {len(payload)} bytes exceeds "
                             f"the protocol's limit of {MAX_PAYLOAD}")
        self._send(_HEADER.pack(ADVANCE, len(payload)) + payload)

    def recv_reply(self, timeout: float | None = None) -> Reply:
        """QEMU's answer to the last advance.

        A step's output comes in the REPLY and, when it is too big for one
        frame, in DATA frames ahead of it. If the machine stopped during
        the step, an END frame (or the end of the stream) comes instead of
        the REPLY: raises ``QemuGone`` carrying the step's output.
        """
        outputs: dict[int, bytes] = {}
        while True:
            try:
                kind, payload = self._recv_any_frame(timeout)
            except QemuGone as e:
                raise QemuGone(str(e), outputs) from None
            if kind == DATA:
                self._blocks(payload, 0, outputs)
            elif kind == REPLY:
                if len(payload) == _REPLY.size and not outputs:
                    elapsed, lookahead, count = _REPLY.unpack(payload)
                    if not count:   # most steps: no output at all
                        return Reply(elapsed, None if lookahead == NO_DEADLINE
                                     else lookahead, outputs)
                elapsed, lookahead, _ = self._fixed(_REPLY, payload, "REPLY")
                self._blocks(payload, _REPLY.size - 4, outputs)
                return Reply(elapsed,
                             None if lookahead == NO_DEADLINE else lookahead,
                             outputs)
            elif kind == END:
                code, _ = self._fixed(_END, payload, "END")
                self._blocks(payload, _END.size - 4, outputs)
                cause = END_CAUSES.get(code, f"QEMU stopped (cause {code})")
                raise QemuGone(f"QEMU ended the step: {cause}", outputs, cause)
            else:
                raise ProtocolError(f"expected a REPLY frame from QEMU, got "
                                    f"type {kind}")

    @staticmethod
    def _fixed(layout: struct.Struct, payload: bytes, name: str) -> tuple:
        if len(payload) < layout.size:
            raise ProtocolError(f"{name} from QEMU is too short")
        return layout.unpack_from(payload)

    @staticmethod
    def _blocks(payload: bytes, pos: int, outputs: dict[int, bytes]) -> None:
        """Append the blocks (count at ``pos``) to each channel's output."""
        if len(payload) < pos + 4:
            raise ProtocolError("frame from QEMU is too short for its blocks")
        (count,), pos = _U32.unpack_from(payload, pos), pos + 4
        for _ in range(count):
            if pos + _BLOCK.size > len(payload):
                raise ProtocolError("block runs past the end of QEMU's frame")
            channel, size = _BLOCK.unpack_from(payload, pos)
            pos += _BLOCK.size
            if pos + size > len(payload):
                raise ProtocolError("block runs past the end of QEMU's frame")
            outputs[channel] = outputs.get(channel, b"") + payload[pos:pos + size]
            pos += size
        if pos != len(payload):
            raise ProtocolError(f"{len(payload) - pos} stray bytes after the "
                                "last block of QEMU's frame")

    def advance(self, ns: int, inputs: dict[int, bytes] | None = None,
                timeout: float | None = None) -> Reply:
        """One synchronization step."""
        self._limit(timeout)    # the send's limit too: QEMU may not read
        self.send_advance(ns, inputs)
        return self.recv_reply(timeout)

    def save_state(self, timeout: float | None = None) -> bytes:
        """The whole machine, as QEMU's migration stream, between two steps."""
        self._limit(timeout)
        self._send(_HEADER.pack(SAVE, 0))
        chunks = []
        while True:
            kind, payload = self._recv_any_frame(timeout)
            if kind == STATE:
                chunks.append(payload)
            elif kind == RESULT:
                self._check_result(payload)
                return b"".join(chunks)
            else:
                raise ProtocolError(f"expected a STATE or RESULT frame from "
                                    f"QEMU, got type {kind}")

    def load_state(self, state: bytes, timeout: float | None = None) -> None:
        """Load a saved machine (from save_state) in place of the running one."""
        self._limit(timeout)
        view = memoryview(state)
        for start in range(0, len(view), MAX_PAYLOAD):
            chunk = view[start:start + MAX_PAYLOAD]
            self._send(_HEADER.pack(LOAD, len(chunk)) + bytes(chunk))
        self._send(_HEADER.pack(LOAD, 0))
        kind, payload = self._recv_any_frame(timeout)
        if kind != RESULT:
            raise ProtocolError(f"expected a RESULT frame from QEMU, got type {kind}")
        self._check_result(payload)

    @staticmethod
    def _check_result(payload: bytes) -> None:
        if len(payload) < 4:
            raise ProtocolError("RESULT from QEMU is too short")
        if _U32.unpack_from(payload)[0] != 0:
            raise StateRefused(payload[4:].decode("utf-8", "replace"))

    def _recv_frame(self, want: int, timeout: float | None) -> bytes:
        kind, payload = self._recv_any_frame(timeout)
        if kind != want:
            raise ProtocolError(f"expected frame type {want} from QEMU, got {kind}")
        return payload

    def _recv_any_frame(self, timeout: float | None) -> tuple[int, bytes]:
        buf = self._ahead
        if len(buf) < _HEADER.size:
            self._fill(_HEADER.size, timeout)
        kind, size = _HEADER.unpack_from(buf)
        if size > MAX_PAYLOAD:
            raise ProtocolError(f"frame of type {kind} from QEMU has a payload "
                                f"of {size} bytes, over the limit of {MAX_PAYLOAD}")
        end = _HEADER.size + size
        if len(buf) < end:
            self._fill(end, timeout)
        payload = bytes(buf[_HEADER.size:end])
        del buf[:end]
        return kind, payload
