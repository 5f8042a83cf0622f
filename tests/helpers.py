"""What protocol tests share: QEMU on a raw socket pair, the frame format,
and waits on QEMU's state (not on the clock).

A test that must act while QEMU waits for an advance, runs a step or is
stuck sending looks that state up in /proc and fails if it does not come
within its bound; a sleep would only hope for it.
"""

from __future__ import annotations

import fcntl
import select
import socket
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from qemufmu.protocol import ADVANCE, MAX_PAYLOAD

REPO = Path(__file__).resolve().parent.parent
WAIT = 10.0  # s: bound on every wait for QEMU in these helpers


# -- the wire ---------------------------------------------------------------

def frame(kind: int, payload: bytes) -> bytes:
    """A version 2/3 frame: type and payload size (big-endian), payload."""
    return struct.pack(">II", kind, len(payload)) + payload


def advance_frame(ns: int, *blocks: tuple[int, bytes]) -> bytes:
    """An ADVANCE of ``ns`` carrying (channel, data) blocks."""
    body = b"".join(struct.pack(">II", ch, len(d)) + d for ch, d in blocks)
    return frame(ADVANCE, struct.pack(">QI", ns, len(blocks)) + body)


def recv_exact(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes, or fewer if the stream ends first (a reset counts as
    an end); the socket's timeout bounds each wait."""
    buf = bytearray()
    while len(buf) < size:
        try:
            chunk = sock.recv(min(size - len(buf), 1 << 20))
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket) -> tuple[int, bytes]:
    """One whole frame from QEMU; EOFError if the stream ends first."""
    header = recv_exact(sock, 8)
    if len(header) < 8:
        raise EOFError(f"stream ended after {header!r}")
    kind, size = struct.unpack(">II", header)
    assert size <= MAX_PAYLOAD, f"frame of {size} bytes"
    payload = recv_exact(sock, size)
    if len(payload) < size:
        raise EOFError(f"stream ended inside a frame of type {kind}")
    return kind, payload


class RawQemu:
    """QEMU on a raw socket pair: every byte on the wire is the test's.

    ``version`` None gives `-qqq sock=FD` (the base protocol by default);
    stderr is kept as text for :meth:`wait`."""

    def __init__(self, argv: list[str], version: int | None = None,
                 wait: float = WAIT, new_session: bool = False) -> None:
        ours, theirs = socket.socketpair()
        self.fd = theirs.fileno()   # the socket's number in QEMU
        option = f"sock={self.fd}" + (f",version={version}" if version else "")
        self.proc = subprocess.Popen(
            [*argv, "-qqq", option], pass_fds=(self.fd,),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, errors="replace",
            start_new_session=new_session)
        theirs.close()
        self.sock = ours
        self.sock.settimeout(wait)
        self.version = version or 1
        self.limit = wait

    def recv_exact(self, size: int) -> bytes:
        data = recv_exact(self.sock, size)
        if len(data) < size:
            raise EOFError
        return data

    def frame(self) -> tuple[int, bytes]:
        return recv_frame(self.sock)

    def wait(self) -> tuple[int, list[str]]:
        """QEMU's exit status and its stderr lines but unrelated warnings."""
        try:
            code = self.proc.wait(timeout=self.limit)
        except subprocess.TimeoutExpired:
            pytest.fail(f"QEMU still running {self.limit:g} s after it should "
                        "have ended")
        return code, errors(self.proc.stderr.read())

    def close(self) -> None:
        self.sock.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stderr.close()


def errors(stderr: str) -> list[str]:
    """QEMU's stderr lines without its unrelated warnings (an unconnected NIC)."""
    return [line for line in stderr.strip().splitlines()
            if ": warning: " not in line]


def refusal(argv: list[str], qqq_option: str | None) -> str:
    """QEMU started with ``-qqq qqq_option`` (``{fd}`` for the socket; None:
    no -qqq) must refuse to start: its one line of stderr."""
    ours, theirs = socket.socketpair()
    if qqq_option:
        argv = [*argv, "-qqq", qqq_option.format(fd=theirs.fileno())]
    with ours, theirs:
        proc = subprocess.run(argv, pass_fds=(theirs.fileno(),), timeout=30,
                              capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
    lines = errors(proc.stderr)
    assert proc.returncode == 1 and len(lines) == 1, (proc.returncode, lines)
    return lines[0]


# -- QEMU's state, from /proc ---------------------------------------------------

POLLIN, POLLOUT = select.POLLIN, select.POLLOUT
_READ, _RECVFROM, _POLL, _PPOLL = 0, 45, 7, 271   # x86-64 system call numbers


def _waits_on(pid: int, tid: int) -> dict[int, int]:
    """{descriptor: poll events} a thread blocked in read, recvfrom, poll
    or ppoll waits on (read counts as POLLIN)."""
    try:
        fields = Path(f"/proc/{pid}/task/{tid}/syscall").read_text().split()
    except OSError:
        return {}
    if not fields or not fields[0].isdigit():
        return {}
    call = int(fields[0])
    if call in (_READ, _RECVFROM):
        return {int(fields[1], 16): POLLIN}
    if call in (_POLL, _PPOLL):       # (struct pollfd *, nfds, ...)
        nfds = min(int(fields[2], 16), 64)
        try:
            with open(f"/proc/{pid}/mem", "rb") as mem:
                mem.seek(int(fields[1], 16))
                raw = mem.read(8 * nfds)
        except OSError:
            return {}
        return {fd: events for fd, events, _ in
                (struct.unpack_from("<ihh", raw, i) for i in range(0, len(raw), 8))}
    return {}


def blocked_on(pid: int, fd: int, events: int = POLLIN,
               within: float = 30.0) -> None:
    """Wait until a thread of QEMU sleeps waiting for ``events`` on
    descriptor ``fd``: POLLIN, waiting for the simulator (an advance);
    POLLOUT, waiting to send (the simulator does not read).  Fails the test
    if that does not happen within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for tid in Path(f"/proc/{pid}/task").iterdir():
            if _waits_on(pid, int(tid.name)).get(fd, 0) & events:
                return
        time.sleep(0.01)
    pytest.fail(f"QEMU did not wait for {events:#x} on fd {fd} within {within} s")


def qqq_fd(argv: list[str]) -> int:
    """The descriptor number QEMU's `-qqq sock=FD,...` names."""
    return int(argv[argv.index("-qqq") + 1].split(",")[0].split("=")[1])


def taken(sock: socket.socket, within: float = 30.0) -> None:
    """Wait until the peer has read everything we sent on ``sock`` (an
    AF_UNIX socket's unread bytes count as ours until then): QEMU has taken
    the advance and is running its step."""
    deadline = time.monotonic() + within
    unread = struct.pack("i", 0)
    while time.monotonic() < deadline:
        if struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ,
                                          unread))[0] == 0:
            return
        time.sleep(0.01)
    pytest.fail(f"QEMU did not read what was sent within {within} s")


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return sum(int(x) for x in stat[stat.rindex(")") + 2:].split()[11:13])


def running(pid: int, ticks: int = 5, within: float = 30.0) -> None:
    """Wait until the process has used ``ticks`` more CPU ticks: a QEMU
    waiting for an advance uses none, one running a busy guest's step
    uses them all."""
    start = cpu_ticks(pid)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cpu_ticks(pid) - start >= ticks:
            return
        time.sleep(0.01)
    pytest.fail(f"QEMU (pid {pid}) did not run within {within} s")
