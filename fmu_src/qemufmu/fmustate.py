"""FMU states: what fmi2GetFMUstate captures, and its serialized form.

A state is the whole co-simulation at a communication point: QEMU's
machine as QEMU's own migration stream (RAM, CPU, devices, virtual clock
and icount, pending timers, and the qqq module's section: time reported,
channel input the guest has not taken), plus the slave's part (parameters,
every variable, the step clock, and each I/O channel's part: line
buffers, the input values last sent, ...).  It lives in memory: no file, no
process, so freeing it is dropping the object.  docs/fmu-state.md describes
it.

The serialized form is self-checking, so a truncated or altered blob is
refused before anything is restored:

    MAGIC | sha256(body) | body
    body = u32 header length | header (JSON) | zlib(machine stream)
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import dataclass, field

MAGIC = b"QEMU-FMU state\n"
FORMAT = 1
_LEN = struct.Struct(">I")


class StateError(ValueError):
    """A state that cannot be restored here; the message says why."""


@dataclass
class FmuState:
    """One captured co-simulation state."""

    #: which FMU took it: its model name and GUID
    fmu: str
    #: the slave's part, JSON-compatible
    slave: dict
    #: QEMU's migration stream; None if taken before initialization ended
    machine: bytes | None
    _serialized: bytes | None = field(default=None, repr=False, compare=False)

    def to_bytes(self) -> bytes:
        """The serialized form (computed once: FMI asks for the size first)."""
        if self._serialized is None:
            header = json.dumps({"format": FORMAT, "fmu": self.fmu,
                                 "slave": self.slave,
                                 "machine": self.machine is not None},
                                separators=(",", ":")).encode()
            body = (_LEN.pack(len(header)) + header
                    + zlib.compress(self.machine or b"", 1))
            self._serialized = MAGIC + hashlib.sha256(body).digest() + body
        return self._serialized

    @classmethod
    def from_bytes(cls, data: bytes) -> FmuState:
        """Parse a serialized state; StateError if it is not an intact one."""
        if not data.startswith(MAGIC):
            raise StateError("it is not a qemu-fmu state (wrong magic bytes)")
        digest, body = data[len(MAGIC):len(MAGIC) + 32], data[len(MAGIC) + 32:]
        if len(digest) < 32 or hashlib.sha256(body).digest() != digest:
            raise StateError(f"its checksum does not match: {len(data)} bytes, "
                             "truncated or altered")
        try:
            (size,) = _LEN.unpack_from(body)
            header = json.loads(body[_LEN.size:_LEN.size + size])
            machine = zlib.decompress(body[_LEN.size + size:])
        except (struct.error, ValueError, zlib.error) as e:
            raise StateError(f"it cannot be decoded: {e}") from None
        if header.get("format") != FORMAT:
            raise StateError(f"its format {header.get('format')!r} is not "
                             f"this FMU's ({FORMAT})")
        return cls(fmu=header["fmu"], slave=header["slave"],
                   machine=machine if header["machine"] else None,
                   _serialized=bytes(data))


@dataclass
class BadState:
    """What a failed fmi2GetFMUstate or fmi2DeSerializeFMUstate hands out.

    pythonfmu calls the (de)serializer on the class, where nothing can be
    logged for the instance; the reason is kept and reported by the
    fmi2SetFMUstate that tries to use it.
    """

    reason: str

    def to_bytes(self) -> bytes:
        return b""
