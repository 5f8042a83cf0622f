"""The simulator's end of the qqq synchronization socket (base protocol).

Every message is an unsigned 32-bit big-endian count of microseconds of
QEMU's virtual clock: we write an advance, QEMU runs that far and writes the
virtual time that actually elapsed.  See docs/sync-protocol.md.
"""

from __future__ import annotations

import socket
import struct

MAX_ADVANCE_US = 0xFFFF_FFFF
_U32 = struct.Struct(">I")


class SyncError(RuntimeError):
    """The synchronization with QEMU failed."""


class QemuGone(SyncError):
    """QEMU closed its end: it exited, or the guest powered off."""


class StepTimeout(SyncError):
    """QEMU did not answer an advance within the wall-clock limit."""


class SyncChannel:
    """Our end of the socket pair QEMU is paced through."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._timeout: float | None = None

    @classmethod
    def pair(cls) -> tuple[SyncChannel, socket.socket]:
        """Return our channel and the socket end to hand to QEMU."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.set_inheritable(False)
        return cls(ours), theirs

    def fileno(self) -> int:
        return self._sock.fileno()

    def send_advance(self, us: int) -> None:
        """Ask QEMU to run ``us`` microseconds of virtual time."""
        if not 0 <= us <= MAX_ADVANCE_US:
            raise ValueError(
                f"advance of {us} us is outside the protocol's range "
                f"0..{MAX_ADVANCE_US} us")
        try:
            self._sock.sendall(_U32.pack(us))
        except (BrokenPipeError, ConnectionResetError) as e:
            raise QemuGone("QEMU closed the synchronization socket") from e

    def recv_elapsed(self, timeout: float | None = None) -> int:
        """Wait for QEMU's reply: the virtual microseconds that elapsed."""
        if timeout != self._timeout:  # a syscall: keep it off the hot path
            self._sock.settimeout(timeout)
            self._timeout = timeout
        buf = b""
        try:
            while len(buf) < _U32.size:
                chunk = self._sock.recv(_U32.size - len(buf))
                if not chunk:
                    raise QemuGone("QEMU closed the synchronization socket")
                buf += chunk
        except TimeoutError as e:
            raise StepTimeout(
                f"QEMU did not answer within {timeout:g} s of wall-clock time"
            ) from e
        except ConnectionResetError as e:
            raise QemuGone("QEMU reset the synchronization socket") from e
        return _U32.unpack(buf)[0]

    def advance(self, us: int, timeout: float | None = None) -> int:
        """One synchronization step: send ``us``, return the elapsed time."""
        self.send_advance(us)
        return self.recv_elapsed(timeout)

    def close(self) -> None:
        """Close our end; QEMU sees end-of-file and exits with status 0."""
        self._sock.close()
