"""Start, watch and reap one QEMU child paced over qqq.

QEMU inherits exactly one descriptor, its end of the synchronization
socket, and never runs through a shell.  It leaves with us however we go:
closing our end makes it exit, it gets SIGKILL if the thread that started it
dies (``-qqq ...,parent=PID`` sets the parent-death signal inside QEMU), it
lives in a session and process group of its own that ``kill`` ends as a
whole, and a finalizer reaps it if the owner forgets.

No code of ours runs between fork and exec: the masters that load the FMU
run threads, and Python documents ``preexec_fn`` as unsafe there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import weakref
from collections.abc import Sequence

from .protocol import FramedChannel, SyncChannel


def _reap(popen: subprocess.Popen, grace: float) -> None:
    """Wait ``grace`` seconds for a clean exit, then kill the group."""
    if popen.poll() is not None:
        return
    try:
        popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        popen.wait()


class QemuProcess:
    """A running QEMU and the channel that paces it."""

    channel: SyncChannel | FramedChannel

    def __init__(self, argv: Sequence[str], *, version: int = 1,
                 env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        """Start ``argv`` (a QEMU command line without ``-qqq``).

        ``version`` picks the protocol: 1, the base protocol, 2, the
        framed extension, or 3, framed with channel kinds, which network
        channels need (call ``channel.hello()`` first).  QEMU's stderr
        goes to a private temporary file, read back by :meth:`stderr_text`
        to explain a failure.
        """
        kind = {1: SyncChannel, 2: FramedChannel, 3: FramedChannel}[version]
        self.channel, theirs = kind.pair()
        if version > 1:
            self.channel.version = version
        self._stderr = tempfile.TemporaryFile()
        try:
            fd = theirs.fileno()
            qqq = f"sock={fd},parent={os.getpid()}"
            if version > 1:
                qqq += f",version={version}"
            self.popen = subprocess.Popen(
                [*argv, "-qqq", qqq],
                pass_fds=(fd,), close_fds=True, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=self._stderr,
                start_new_session=True, env=env, cwd=cwd)
        except BaseException:
            self.channel.close()
            self._stderr.close()
            raise
        finally:
            theirs.close()
        self._finalizer = weakref.finalize(
            self, QemuProcess._cleanup, self.channel, self.popen, self._stderr)

    @staticmethod
    def _cleanup(channel: SyncChannel, popen: subprocess.Popen, stderr) -> None:
        channel.close()
        _reap(popen, grace=1.0)
        stderr.close()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def stderr_text(self) -> str:
        """What QEMU wrote on stderr so far, stripped."""
        if self._stderr.closed:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()

    def explain_exit(self, grace: float = 1.0) -> str:
        """Wait briefly for QEMU to exit and describe how it ended."""
        try:
            code = self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            return "QEMU stopped answering but is still running"
        # Keep QEMU's error, not its unrelated warnings (an unconnected NIC).
        err = "; ".join(line for line in self.stderr_text().splitlines()
                        if ": warning: " not in line)
        how = (f"killed by signal {-code}" if code < 0
               else f"exited with status {code}")
        return f"QEMU {how}" + (f": {err}" if err else "")

    def close(self, grace: float = 1.0) -> int:
        """Close the socket, wait up to ``grace`` s, kill if needed; return status."""
        self.channel.close()
        _reap(self.popen, grace)
        self._finalizer()
        return self.popen.returncode

    def kill(self) -> None:
        """Kill QEMU's whole process group at once."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.close(grace=5.0)

    def __enter__(self) -> QemuProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
