"""Driving qemu.fmu through fmpy's low-level FMI 2.0 API, with its log kept."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import weakref
from ctypes import byref
from pathlib import Path

from fmpy import calloc, free, read_model_description
from fmpy.fmi2 import (
    FMU2Slave,
    fmi2CallbackAllocateMemoryTYPE,
    fmi2CallbackFreeMemoryTYPE,
    fmi2CallbackFunctions,
    fmi2CallbackLoggerTYPE,
)
from fmpy.logging import addLoggerProxy

# fmpy's logger proxy (it formats the variadic message in C) keeps ONE
# process-wide slot for the Python callback, the last one registered.  A
# callback owned by an instance that was garbage-collected then dangles, and
# the next message of any other instance calls freed memory.  So there is
# one callback for the whole process, never freed, and it routes each
# message by the componentEnvironment the instance was given.
_instances: dict[int, weakref.ref] = {}
_keys = itertools.count(1)


def _route(env, instance, status, category, message) -> None:
    owner = _instances.get(env or 0)
    owner = owner() if owner else None
    if owner is not None:
        owner.messages.append((status, message.decode(errors="replace")))
        owner.categories.append(category.decode(errors="replace"))


_LOGGER = fmi2CallbackLoggerTYPE(_route)


class Instance:
    """One instance of the FMU, its variables by name, and its log."""

    def __init__(self, fmu: Path, unzipdir: Path, name: str = "qemu",
                 logging_on: bool = True, **params: object) -> None:
        md = read_model_description(str(fmu))
        self.vars = {v.name: v for v in md.modelVariables}
        self.messages: list[tuple[int, str]] = []
        self.categories: list[str] = []     # of each message, in order
        self.slave = FMU2Slave(guid=md.guid, unzipDirectory=str(unzipdir),
                               modelIdentifier=md.coSimulation.modelIdentifier,
                               instanceName=name)
        self._key = next(_keys)
        _instances[self._key] = weakref.ref(self)
        self._callbacks = fmi2CallbackFunctions()
        self._callbacks.logger = _LOGGER
        self._callbacks.allocateMemory = fmi2CallbackAllocateMemoryTYPE(calloc)
        self._callbacks.freeMemory = fmi2CallbackFreeMemoryTYPE(free)
        self._callbacks.componentEnvironment = self._key
        addLoggerProxy(byref(self._callbacks))
        self.slave.instantiate(callbacks=self._callbacks, loggingOn=logging_on)
        self.params = params

    def log_text(self, since: int = 0) -> str:
        """The log, from message number ``since`` on."""
        return "\n".join(m for _, m in self.messages[since:])

    def start(self, start_time: float = 0.0) -> None:
        self.slave.setupExperiment(startTime=start_time)
        self.slave.enterInitializationMode()
        for name, value in self.params.items():
            self.set(name, value)
        self.slave.exitInitializationMode()

    def set(self, name: str, value: object) -> None:
        vr = [self.vars[name].valueReference]
        kind = self.vars[name].type
        if kind == "String":
            self.slave.setString(vr, [str(value)])
        elif kind == "Real":
            self.slave.setReal(vr, [float(value)])
        elif kind == "Integer":
            self.slave.setInteger(vr, [int(value)])
        else:
            self.slave.setBoolean(vr, [bool(value)])

    def get(self, name: str):
        vr = [self.vars[name].valueReference]
        kind = self.vars[name].type
        getter = {"String": self.slave.getString, "Real": self.slave.getReal,
                  "Integer": self.slave.getInteger,
                  "Boolean": self.slave.getBoolean}[kind]
        value = getter(vr)[0]
        return value.decode() if isinstance(value, bytes) else value

    def close(self) -> None:
        self.slave.terminate()
        self.slave.freeInstance()


def children(parent: int | None = None) -> dict[int, str]:
    """{pid: command name} of the children of ``parent`` (default: this
    process), zombies included: an unreaped child is a leak too."""
    parent = os.getpid() if parent is None else parent
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == parent:
            found[int(entry)] = comm
    return found


def qemu_children() -> list[int]:
    """PIDs of QEMU processes whose parent is this process."""
    return [pid for pid, comm in children().items()
            if comm.startswith("qemu-system")]


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


# PR_SET_CHILD_SUBREAPER makes the wrapper inherit whatever the command
# leaves behind; after the command exits, the wrapper's children are exactly
# those orphans (alive or not yet reaped).  It kills and reaps them, and
# says who they were in the file named by its first argument.
_REAPER = """
import ctypes, json, os, subprocess, sys
sys.path.insert(0, {tests!r})
from fmi_helpers import children
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
code = subprocess.run(sys.argv[2:]).returncode
left = children()
for pid in left:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
with open(sys.argv[1], "w") as out:
    json.dump(left, out)
sys.exit(code)
"""


def run_reaping(argv: list[str], timeout: float, **kwargs
                ) -> tuple[subprocess.CompletedProcess, dict[int, str]]:
    """Run ``argv`` (output captured as text) under a child subreaper;
    return its result and {pid: command name} of the processes it left
    behind.  A child of a child is not a test's child: this sees it."""
    with tempfile.TemporaryDirectory(prefix="reaper-") as tmp:
        report = Path(tmp) / "left.json"
        code = _REAPER.format(tests=str(Path(__file__).resolve().parent))
        done = subprocess.run([sys.executable, "-c", code, str(report), *argv],
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, **kwargs)
        assert report.exists(), done.stderr
        left = {int(pid): comm for pid, comm in json.loads(report.read_text()).items()}
    return done, left
