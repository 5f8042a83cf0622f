"""A seeded, bounded fuzzer of QEMU's end of the qqq protocol.

Each conversation starts a real QEMU, plays a few valid steps and then ends
in one of the ways a hostile or careless simulator might: closing early,
half-closing, a truncated frame, random bytes, a corrupted frame, an
advance past the time limit, frames sent ahead of their replies; under
version 3 also network channels, with Ethernet frames due early, late or
beyond their step. A small reference parser of the documented rules
(docs/protocol-v2.md) predicts the outcome, and every outcome is
classified:

- ``reply``: a reply whose elapsed time is exactly the advance;
- ``exit0``: end of stream, QEMU exits with status 0 and says nothing;
- ``exit1``: QEMU exits with status 1 and exactly one line naming ``qqq:``.

Anything else (a hang past the timeout, death by a signal, another status,
other output, a wrong elapsed time) fails. Every wait is bounded. A failing
conversation names its seed; ``FUZZ_SEED`` replays another base seed.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import subprocess
from collections import Counter
from dataclasses import dataclass, field

import pytest

from conftest import arm_argv, x86_argv
from qemufmu.protocol import (
    ADVANCE,
    HELLO,
    MAX_PAYLOAD,
    MAX_TIME_NS,
    REPLY,
    pack_net,
)

BASE_SEED = int(os.environ.get("FUZZ_SEED", "20261130"))
CONVERSATIONS = 300  # per protocol version
WAIT = 10.0          # s: bound on every read and on QEMU's exit
MS = 1_000_000


class Outcome(Exception):
    """The conversation went differently from the reference's prediction."""


@dataclass
class Setup:
    """One QEMU configuration the fuzzer talks to."""

    name: str
    version: int
    channels: int
    argv: list[str] = field(default_factory=list)
    #: indices of the network channels (version 3); the others are serial
    nets: tuple[int, ...] = ()


def setups(guests) -> dict[int, list[Setup]]:
    def arm(image: str, names: tuple[str, ...]) -> list[str]:
        argv = arm_argv(guests / image, "/dev/null")
        i = argv.index("-serial")
        del argv[i:i + 2]
        for name in names:
            argv += ["-chardev", f"qqq,id={name}", "-serial", f"chardev:{name}"]
        return argv

    def arm_net(image: str, names: tuple[str, ...]) -> list[str]:
        argv = arm(image, names)
        del argv[argv.index("-nic"):argv.index("-nic") + 2]
        return argv + ["-netdev", "qqq,id=eth0",
                       "-net", "nic,netdev=eth0,model=lan9118"]

    x86 = x86_argv(guests / "x86-idle.elf", "/dev/null")
    x86_net = x86[:x86.index("-net")] + x86[x86.index("-net") + 2:] + [
        "-netdev", "qqq,id=lan0", "-device", "e1000,netdev=lan0,romfile=",
        "-netdev", "qqq,id=lan1", "-device", "virtio-net-pci,netdev=lan1,romfile="]
    return {
        1: [Setup("arm-idle", 1, 0, arm("arm-idle.elf", ())),
            Setup("x86-idle", 1, 0, x86)],
        2: [Setup("arm-idle", 2, 0, arm("arm-idle.elf", ())),
            Setup("x86-idle", 2, 0, x86),
            Setup("arm-echo/1 channel", 2, 1, arm("arm-echo.elf", ("uart",))),
            Setup("arm-lineecho/2 channels", 2, 2,
                  arm("arm-lineecho.elf", ("uart0", "uart1")))],
        3: [Setup("arm-echo/uart+lan9118", 3, 2,
                  arm_net("arm-echo.elf", ("uart",)), nets=(1,)),
            Setup("x86-idle/e1000+virtio-net", 3, 2, x86_net, nets=(0, 1)),
            Setup("arm-idle", 3, 0, arm("arm-idle.elf", ()))],
    }


# -- the reference: what QEMU must do with a byte stream ----------------------

def frame(kind: int, payload: bytes) -> bytes:
    return struct.pack(">II", kind, len(payload)) + payload


def advance_frame(ns: int, blocks: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(struct.pack(">II", ch, len(d)) + d for ch, d in blocks)
    return frame(ADVANCE, struct.pack(">QI", ns, len(blocks)) + body)


def net_block_ok(data: bytes, start: int, end: int) -> bool:
    """Whole records, frames of 14 to 65535 bytes, each due before the
    step's end or already due at its start."""
    pos = 0
    while pos < len(data):
        if len(data) - pos < 12:
            return False
        time_ns, size = struct.unpack_from(">QI", data, pos)
        if not 14 <= size <= 65535 or size > len(data) - pos - 12:
            return False
        if time_ns >= 1 << 63 or (time_ns > start and time_ns >= end):
            return False
        pos += 12 + size
    return True


def judge(stream: bytes, channels: int, now: int,
          nets: tuple[int, ...] = ()) -> tuple[list[int], str]:
    """Split a version 2 or 3 byte stream sent at a synchronization point.

    Returns the advances of the whole valid frames it starts with and how
    QEMU ends once the stream is closed after it: ``exit0`` (it ended
    between frames) or ``exit1`` (malformed, truncated or past the limit).
    """
    advances, pos = [], 0
    while pos < len(stream):
        if len(stream) - pos < 8:
            return advances, "exit1"  # truncated header
        kind, size = struct.unpack_from(">II", stream, pos)
        if kind != ADVANCE or size > MAX_PAYLOAD or size < 12:
            return advances, "exit1"
        if len(stream) - pos - 8 < size:
            return advances, "exit1"  # truncated payload
        payload = stream[pos + 8:pos + 8 + size]
        ns, count = struct.unpack_from(">QI", payload)
        at, left = 12, size - 12
        for _ in range(count):
            if left < 8:
                return advances, "exit1"
            ch, length = struct.unpack_from(">II", payload, at)
            if ch >= channels or length > left - 8:
                return advances, "exit1"
            if ch in nets and not net_block_ok(
                    payload[at + 8:at + 8 + length], now,
                    min(now + ns, MAX_TIME_NS)):
                return advances, "exit1"
            at, left = at + 8 + length, left - 8 - length
        if left or ns > MAX_TIME_NS - now:
            return advances, "exit1"
        advances.append(ns)
        now += ns
        pos += 8 + size
    return advances, "exit0"


# -- one conversation -------------------------------------------------------

class Conversation:
    def __init__(self, setup: Setup, rng: random.Random) -> None:
        self.setup, self.rng = setup, rng
        ours, theirs = socket.socketpair()
        option = f"sock={theirs.fileno()}"
        if setup.version > 1:
            option += f",version={setup.version}"
        self.proc = subprocess.Popen(
            [*setup.argv, "-qqq", option], pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True)
        theirs.close()
        self.sock = ours
        self.sock.settimeout(WAIT)
        self.now = 0
        self.outcomes: list[str] = []

    # wire -----------------------------------------------------------------
    def recv_exact(self, size: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < size:
            try:
                chunk = self.sock.recv(size - len(buf))
            except TimeoutError:
                raise Outcome(f"no answer within {WAIT:g} s") from None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                if buf:
                    raise Outcome(f"QEMU's stream ended inside a message: {buf!r}")
                return None
            buf += chunk
        return bytes(buf)

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # QEMU already left; its exit status tells why

    def hello(self) -> None:
        header = self.recv_exact(8)
        if header is None:
            raise Outcome("no HELLO from QEMU")
        kind, size = struct.unpack(">II", header)
        payload = self.recv_exact(size) if size else b""
        if kind != HELLO or payload is None or \
                struct.unpack_from(">II", payload) != (self.setup.version,
                                                       self.setup.channels):
            raise Outcome(f"bad HELLO from QEMU: {kind} {payload!r}")

    def expect_reply(self, ns: int) -> None:
        """Read the reply to an advance of ``ns``: exact, well formed."""
        if self.setup.version == 1:
            data = self.recv_exact(4)
            if data is None:
                raise Outcome("end of stream instead of a reply")
            elapsed = struct.unpack(">I", data)[0] * 1000
        else:
            header = self.recv_exact(8)
            if header is None:
                raise Outcome("end of stream instead of a reply")
            kind, size = struct.unpack(">II", header)
            if kind != REPLY or size > MAX_PAYLOAD:
                raise Outcome(f"frame type {kind} of {size} bytes instead of a REPLY")
            payload = self.recv_exact(size)
            if payload is None:
                raise Outcome("REPLY cut short")
            elapsed, _, count = struct.unpack_from(">QQI", payload)
            pos = 20
            for _ in range(count):
                ch, length = struct.unpack_from(">II", payload, pos)
                if ch >= self.setup.channels:
                    raise Outcome(f"REPLY block for channel {ch}")
                pos += 8 + length
            if pos != size:
                raise Outcome("REPLY blocks do not add up to its length")
        if elapsed != ns:
            raise Outcome(f"elapsed {elapsed} ns for an advance of {ns} ns")
        self.outcomes.append("reply")

    # what the simulator sends -------------------------------------------
    def random_advance(self) -> int:
        """A valid advance, small enough to keep the run short."""
        rng, room = self.rng, MAX_TIME_NS - self.now
        if self.setup.version == 1:
            return rng.choice([0, 1, 999, rng.randrange(1, 3000)]) * 1000
        if self.setup.name == "arm-idle" and rng.random() < 0.2:
            # Nothing runs in this guest: any size is one clock jump.
            return rng.choice([room, rng.randrange(room + 1)])
        return min(room, rng.choice([0, 1, 7, rng.randrange(1, 3 * MS)]))

    def random_blocks(self, ns: int) -> list[tuple[int, bytes]]:
        """Valid blocks for a step of ``ns`` from ``now``."""
        rng, n = self.rng, self.setup.channels
        if not n:
            return []
        blocks = []
        for _ in range(rng.choice([0, 0, 1, 2])):
            ch = rng.randrange(n)
            if ch in self.setup.nets:
                blocks.append((ch, pack_net(self.random_frames(ns))))
            else:
                blocks.append((ch, rng.randbytes(rng.randrange(0, 40))))
        return blocks

    def random_frames(self, ns: int) -> list[tuple[int, bytes]]:
        """Frames due late (before now), now, or inside the step."""
        rng, end = self.rng, self.now + ns
        times = [rng.choice([0, rng.randrange(self.now + 1), self.now,
                             rng.randrange(self.now, max(end, self.now + 1))])
                 for _ in range(rng.randrange(4))]
        return [(t, rng.randbytes(rng.choice([14, 60, rng.randrange(14, 1515)])))
                for t in times]

    def valid(self) -> tuple[int, bytes]:
        """A valid advance and its bytes; ``now`` moves on when it is made,
        so that advances sent ahead of their replies stay in the limit."""
        ns = self.random_advance()
        if self.setup.version == 1:
            self.now += ns
            return ns, struct.pack(">I", ns // 1000)
        data = advance_frame(ns, self.random_blocks(ns))
        self.now += ns
        return ns, data

    def step(self) -> None:
        ns, data = self.valid()
        self.send(data)
        self.expect_reply(ns)

    # endings --------------------------------------------------------------
    def run(self) -> str:
        """Play the conversation; return how QEMU ended."""
        rng, v2 = self.rng, self.setup.version >= 2
        ending = rng.choice(["close", "half-close", "truncate", "garbage",
                             "send-ahead"]
                            + (["corrupt", "corrupt", "limit", "oversized",
                                "bad-hello"] if v2 else [])
                            + (["corrupt-net"] * 3 if self.setup.nets else []))
        if v2 and ending == "bad-hello":
            return self.bad_hello()
        if v2:
            self.hello()
            self.send(frame(HELLO, struct.pack(">I", self.setup.version)))
        for _ in range(rng.randrange(5)):
            self.step()
        return getattr(self, "end_" + ending.replace("-", "_"))()

    def end_close(self) -> str:
        return "exit0"

    def end_half_close(self) -> str:
        self.sock.shutdown(socket.SHUT_WR)
        return "exit0"

    def end_truncate(self) -> str:
        _, data = self.valid()
        self.send(data[:self.rng.randrange(1, len(data))])
        # Version 1 has no frames: a partial message is just the end.
        return "exit1" if self.setup.version >= 2 else "exit0"

    def end_send_ahead(self) -> str:
        steps = [self.valid() for _ in range(self.rng.randrange(2, 6))]
        self.send(b"".join(data for _, data in steps))
        self.sock.shutdown(socket.SHUT_WR)
        for ns, _ in steps:  # replies may stop at any point, exact if any
            try:
                self.expect_reply(ns)
            except Outcome as e:
                if "end of stream" not in str(e):
                    raise
                break
        return "exit0"

    def end_garbage(self) -> str:
        rng = self.rng
        if self.setup.version == 1:
            data = rng.randbytes(rng.randrange(1, 24))
            if self.setup.name != "arm-idle":  # hours of PIT ticks: too slow
                data = data[:rng.randrange(1, 4)]
            for i in range(0, len(data) - 3, 4):  # every 4 bytes: an advance
                self.send(data[i:i + 4])
                self.expect_reply(struct.unpack_from(">I", data, i)[0] * 1000)
            self.send(data[len(data) // 4 * 4:])
            return "exit0"
        data = rng.randbytes(rng.randrange(1, 40))
        if rng.random() < 0.5:  # a plausible header, random rest
            data = struct.pack(">II", ADVANCE, rng.randrange(64)) + data
        return self.send_judged(data)

    def end_corrupt(self) -> str:
        rng = self.rng
        ns = self.random_advance()
        blocks = self.random_blocks(ns)
        data = bytearray(advance_frame(ns, blocks))
        how = rng.choice(["type", "length", "count", "channel", "block-length",
                          "stray", "cut-block"])
        if how == "type":
            struct.pack_into(">I", data, 0, rng.choice([0, 1, 3, 4, 5, 77,
                                                        0xFFFF_FFFF]))
        elif how == "length":
            struct.pack_into(">I", data, 4, rng.randrange(0, len(data) + 8))
        elif how == "count":
            struct.pack_into(">I", data, 16, len(blocks) + rng.randrange(1, 5))
        elif how == "stray":
            data += rng.randbytes(rng.randrange(1, 9))
            struct.pack_into(">I", data, 4, len(data) - 8)
        elif blocks and how == "channel":
            struct.pack_into(">I", data, 20, self.setup.channels + rng.randrange(9))
        elif blocks and how == "block-length":
            struct.pack_into(">I", data, 24, len(blocks[0][1]) + rng.randrange(1, 99))
        elif blocks:  # cut-block: the payload ends inside the first block
            del data[20 + rng.randrange(8):]
            struct.pack_into(">I", data, 4, len(data) - 8)
        return self.send_judged(bytes(data))

    def end_corrupt_net(self) -> str:
        """A network block whose records break one rule (or, by chance,
        none: the reference judges)."""
        rng, end = self.rng, None
        ns = self.random_advance()
        end = self.now + ns
        frames = self.random_frames(ns)
        how = rng.choice(["due-later", "runt", "giant", "cut", "garbage"])
        if how == "due-later":
            frames.append((end + rng.choice([0, 1, rng.randrange(1 << 40)]),
                           bytes(60)))
            data = pack_net(sorted(frames))
        elif how == "runt":
            data = pack_net(frames + [(self.now, bytes(rng.randrange(14)))])
        elif how == "giant":
            data = pack_net(frames) + struct.pack(">QI", self.now, 65536 +
                                                  rng.randrange(9)) + bytes(8)
        elif how == "cut":
            data = pack_net(frames + [(self.now, bytes(60))])
            data = data[:rng.randrange(len(data))]
        else:
            data = rng.randbytes(rng.randrange(1, 40))
        ch = rng.choice(self.setup.nets)
        return self.send_judged(advance_frame(ns, [(ch, data)]))

    def end_limit(self) -> str:
        past = MAX_TIME_NS - self.now + 1
        ns = self.rng.choice([past, past + self.rng.randrange(1 << 40), 1 << 63,
                              (1 << 64) - 1])
        return self.send_judged(advance_frame(ns, self.random_blocks(0)))

    def end_oversized(self) -> str:
        size = self.rng.randrange(MAX_PAYLOAD + 1, 1 << 32)
        self.send(struct.pack(">II", ADVANCE, size) + self.rng.randbytes(12))
        return "exit1"

    def send_judged(self, data: bytes) -> str:
        """Send data frame by frame as the reference splits it, waiting
        for the reply to each valid one; return the predicted end."""
        advances, end = judge(data, self.setup.channels, self.now,
                              self.setup.nets)
        pos = 0
        for ns in advances:
            self.now += ns
            size = 8 + struct.unpack_from(">I", data, pos + 4)[0]
            self.send(data[pos:pos + size])
            self.expect_reply(ns)
            pos += size
        self.send(data[pos:])
        return end

    def bad_hello(self) -> str:
        rng = self.rng
        self.hello()
        version = self.setup.version
        wrong = rng.choice([v for v in (0, 1, 2, 3, 4, 0xFFFF_FFFF) if v != version])
        payload = rng.choice([struct.pack(">I", wrong),
                              struct.pack(">I", version)
                              + rng.randbytes(rng.randrange(1, 9)),
                              struct.pack(">H", 2)])
        kind = rng.choice([HELLO, HELLO, ADVANCE, REPLY])
        data = frame(kind, payload)
        if rng.random() < 0.3:
            data = data[:rng.randrange(1, len(data))]  # truncated
        self.send(data)
        return "exit1"

    # the end --------------------------------------------------------------
    def finish(self, expected: str) -> str:
        self.sock.close()
        try:
            code = self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            raise Outcome(f"QEMU still running {WAIT:g} s after the end") from None
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        err = self.proc.stderr.read().decode(errors="replace")
        self.proc.stderr.close()
        lines = [ln for ln in err.splitlines() if ": warning: " not in ln]
        if code == 0 and not lines:
            got = "exit0"
        elif code == 1 and len(lines) == 1 and "qqq: " in lines[0]:
            got = "exit1"
        else:
            raise Outcome(f"QEMU ended with status {code} and said {lines!r}")
        if got != expected:
            raise Outcome(f"expected {expected}, QEMU did {got}: {lines!r}")
        self.outcomes.append(got)
        return got


def converse(setup: Setup, seed: int) -> list[str]:
    rng = random.Random(seed)
    c = Conversation(setup, rng)
    try:
        expected = c.run()
        c.finish(expected)
    except Outcome as e:
        pytest.fail(f"{setup.name} v{setup.version}, seed {seed}: {e}")
    finally:
        c.sock.close()
        if c.proc.poll() is None:
            os.killpg(c.proc.pid, 9)
            c.proc.wait()
    return c.outcomes


@pytest.mark.parametrize("version", [1, 2, 3])
def test_fuzzed_conversations_end_as_documented(guests, version):
    counts: Counter[str] = Counter()
    kinds = setups(guests)[version]
    for i in range(CONVERSATIONS):
        seed = BASE_SEED * 1000 + version * 100_000 + i
        counts.update(converse(kinds[i % len(kinds)], seed))
    # The fuzzer really reached every outcome it classifies.
    assert counts["reply"] > CONVERSATIONS
    assert counts["exit0"] > CONVERSATIONS // 10
    if version >= 2:
        assert counts["exit1"] > CONVERSATIONS // 3
