"""Run one sweep case: the system's FMUs under fmpy, stepped in lock-step.

The master is fmpy's FMI 2.0 binding (``fmpy.fmi2.FMU2Slave``) driven by a
fixed-step Jacobi loop, the algorithm of ``fmpy.ssp.simulate_ssp``, written
out here because that function sets no String start values, records only
the SSD's connectors, stamps rows with the step's start and leaves FMUs
and directories behind when a step fails.  Every communication point is
``start + k * step`` (never a running sum), so a case's numbers depend on
its inputs alone: the same bytes in-process and on any Dask worker.

A failure (an FMU call that does not return OK, a QEMU that times out or
whose guest powers off) ends the case, not the sweep: the result carries
status ``failed``, the FMU's own error messages, and the rows recorded up
to the last completed step.

Within a communication step the FMUs are independent (Jacobi: every input
was set before any step), so the FMUs whose work happens outside this
process (a QEMU, which the slave waits for on a socket, the GIL released)
step concurrently on threads; the others step on the calling thread.
Each instance sees the same calls in the same order either way, so the
results are identical to stepping in turn (``parallel=False``). By
default (``parallel=None``) a case times both ways over its first steps and
keeps the faster one.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor, wait
from ctypes import byref
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .cases import Case
from .system import Component, System

STATUS_OK, STATUS_FAILED, STATUS_LOST = "ok", "failed", "lost"
CACHE_VARIABLE = "QEMU_FMU_SWEEP_CACHE"
MESSAGE_MAX = 2000
# Warnings and errors of live FMU instances, by the key each instance gets
# as its FMI componentEnvironment.  fmpy's logger proxy is process-wide (it
# calls the last logger registered, whichever instance logs), so one logger
# that is never freed routes every message by that key: right even with
# several cases at a time in one process.
_SINKS: dict[int, list[str]] = {}
_KEYS = itertools.count(1)
_LOGGER = None


def _route(env, instance, status, category, message) -> None:
    sink = _SINKS.get(env or 0)
    if sink is not None and status >= 1:  # not the guest's console lines
        sink.append(" ".join(message.decode("utf-8", "replace").split()))


def _logger():
    global _LOGGER
    if _LOGGER is None:
        from fmpy.fmi2 import fmi2CallbackLoggerTYPE
        _LOGGER = fmi2CallbackLoggerTYPE(_route)
    return _LOGGER


#: steps timed in turn, then as many in parallel, when Settings.parallel is None
TRIAL_STEPS = 50


@dataclass(frozen=True)
class Settings:
    """What every case of a sweep shares."""

    stop_time: float
    step: float
    record: tuple[str, ...]        # result columns, e.g. "plant.speed"
    # Step QEMU-based FMUs concurrently (True), in turn (False), or (None)
    # whichever of the two is faster for this system, timed over its first
    # 2 x TRIAL_STEPS steps: threads pay where guests compute, and cost
    # more than they save where a step is mostly the slaves' Python.
    parallel: bool | None = None
    # A step an FMU discards (our FMU: its guest powered off or panicked)
    # ends the case as a success, with that step's outputs recorded: for
    # systems whose guests power off when their job is done.
    end_on_discard: bool = False

    @property
    def steps(self) -> int:
        return round(self.stop_time / self.step)


@dataclass
class CaseResult:
    case: str
    status: str
    message: str = ""
    wall_s: float = 0.0
    worker: str = ""
    init_s: float = 0.0            # instantiate .. exitInitializationMode
    time: list[float] = field(default_factory=list)
    values: dict[str, list] = field(default_factory=dict)


def cache_dir() -> Path:
    """Where this host keeps shipped systems and extracted FMUs."""
    return Path(os.environ.get(CACHE_VARIABLE)
                or Path(tempfile.gettempdir()) / "qemu-fmu-sweep")


def digest_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:32]


def _install(target: Path, fill) -> Path:
    """Make ``target`` (a file or directory) once per host, atomically:
    concurrent workers each build a private copy and the first rename wins."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))
    try:
        built = fill(scratch)
        try:
            os.rename(built, target)
        except OSError:
            if not target.exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def materialize(data: bytes, digest: str, suffix: str) -> Path:
    """The system file shipped as bytes, as a file in this host's cache."""
    def write(scratch: Path) -> Path:
        out = scratch / f"system{suffix}"
        out.write_bytes(data)
        return out
    return _install(cache_dir() / f"{digest}{suffix}", write)


def _unpacked(system_file: Path, digest: str, component: Component,
              kind: str) -> Path:
    """The component's FMU extracted once per host (read-only from then on)."""
    def extract(scratch: Path) -> Path:
        out = scratch / "fmu"
        if kind == "fmu":
            fmu = system_file
        else:
            with zipfile.ZipFile(system_file) as ssp:
                fmu = scratch / "component.fmu"
                fmu.write_bytes(ssp.read(str(PurePosixPath(component.source))))
        with zipfile.ZipFile(fmu) as z:
            z.extractall(out)
        # zipfile drops permission bits; QEMU binaries must stay executable.
        with zipfile.ZipFile(fmu) as z:
            for info in z.infolist():
                mode = info.external_attr >> 16
                if mode and not info.is_dir():
                    os.chmod(out / info.filename, mode & 0o7777)
        return out
    return _install(cache_dir() / f"{digest}-{component.name}", extract)


class _Ended(Exception):
    """An FMU discarded a step: its simulation is over."""


FMI2_DISCARD = 2


class _Instance:
    """One FMU instance of the case, with its error log."""

    def __init__(self, component: Component, unzipdir: Path) -> None:
        from fmpy import calloc, free
        from fmpy.fmi2 import (
            FMU2Slave,
            fmi2CallbackAllocateMemoryTYPE,
            fmi2CallbackFreeMemoryTYPE,
            fmi2CallbackFunctions,
        )
        from fmpy.logging import addLoggerProxy

        self.component = component
        # Its work runs in a QEMU of its own: worth a thread per step.
        self.out_of_process = (unzipdir / "resources" / "qemu").is_dir()
        self.live = False
        self.broken = False
        self.slave = FMU2Slave(guid=component.guid, unzipDirectory=str(unzipdir),
                               modelIdentifier=component.model_identifier,
                               instanceName=component.name)
        self.key = next(_KEYS)
        self.messages: list[str] = []
        _SINKS[self.key] = self.messages
        self._callbacks = fmi2CallbackFunctions()
        self._callbacks.logger = _logger()
        self._callbacks.componentEnvironment = self.key
        self._callbacks.allocateMemory = fmi2CallbackAllocateMemoryTYPE(calloc)
        self._callbacks.freeMemory = fmi2CallbackFreeMemoryTYPE(free)
        addLoggerProxy(byref(self._callbacks))

    def instantiate(self) -> None:
        # Logging on: our slave only reports a failure's cause when it is.
        self.call("instantiate", callbacks=self._callbacks, loggingOn=True)
        self.live = True

    def call(self, method: str, *args, **kwargs):
        """An FMI call; one that fails marks the instance as broken."""
        try:
            return getattr(self.slave, method)(*args, **kwargs)
        except Exception:
            self.broken = True
            raise

    def set(self, name: str, value: object) -> None:
        var = self.component.variables[name]
        vr = [var.reference]
        if var.type == "Real":
            self.call("setReal", vr, [float(value)])
        elif var.type == "Integer":
            self.call("setInteger", vr, [int(value)])
        elif var.type == "Boolean":
            self.call("setBoolean", vr, [bool(value)])
        else:
            self.call("setString", vr, [str(value)])

    def get(self, name: str) -> object:
        var = self.component.variables[name]
        vr = [var.reference]
        if var.type == "Real":
            return self.call("getReal", vr)[0]
        if var.type == "Integer":
            return self.call("getInteger", vr)[0]
        if var.type == "Boolean":
            return bool(self.call("getBoolean", vr)[0])
        return self.call("getString", vr)[0].decode("utf-8", "replace")

    def close(self) -> None:
        """Terminate and free, unless an FMI call failed: then, like fmpy,
        leave the instance alone (our FMU has already stopped its QEMU, and
        FMUs that run on pythonfmu's own export library, which a system may
        hold, crash the process on fmi2Terminate or fmi2FreeInstance after a
        failed fmi2DoStep)."""
        if not self.live or self.broken:
            return
        self.live = False
        for call in (self.slave.terminate, self.slave.freeInstance):
            try:
                call()
            except Exception:  # a failed instance may refuse terminate
                pass


def _cause(instances: list[_Instance], error: Exception, system: System) -> str:
    """The FMUs' own words for a failure, else the exception's."""
    said = []
    for inst in instances:
        for message in inst.messages:
            said.append(message if system.kind == "fmu"
                        else f"{inst.component.name}: {message}")
    text = "; ".join(said) if said else f"{type(error).__name__}: {error}"
    return text[:MESSAGE_MAX]


def run_case(system: System, system_file: Path, digest: str, case: Case,
             settings: Settings, worker: str = "in-process") -> CaseResult:
    """Run ``case`` to ``settings.stop_time``; never raises for the case's own
    failures (they are in the result)."""
    started = time.perf_counter()
    # pythonfmu puts each instance's resources/ first on sys.path and never
    # takes it off: undo that, or a long-lived worker's path grows by a few
    # entries per case and processes it spawns import FMUs' copies of
    # qemufmu instead of the installed one.
    saved_path = list(sys.path)
    result = CaseResult(case.name, STATUS_OK, worker=worker)
    recorded = [(column, *system.lookup(column)) for column in settings.record]
    result.values = {column: [] for column in settings.record}
    instances: dict[str, _Instance] = {}
    h, start = settings.step, 0.0

    def sample(t: float) -> None:
        row = [instances[component.name].get(var.name)
               for _, component, var in recorded]
        result.time.append(t)
        for (column, _, _), value in zip(recorded, row, strict=True):
            result.values[column].append(value)

    def propagate() -> None:
        values = [instances[a].get(va) for a, va, _, _ in system.connections]
        for (_, _, b, vb), value in zip(system.connections, values, strict=True):
            instances[b].set(vb, value)

    pool: ThreadPoolExecutor | None = None
    from fmpy.fmi1 import FMICallException  # once, not in every step

    def step_all(t: float, concurrently: bool) -> None:
        def step(inst: _Instance) -> None:
            try:
                inst.call("doStep", currentCommunicationPoint=t,
                          communicationStepSize=h)
            except FMICallException as e:
                if settings.end_on_discard and e.status == FMI2_DISCARD:
                    raise _Ended(inst.component.name) from e
                raise
        threaded = [i for i in instances.values() if i.out_of_process]
        if pool is None or not concurrently or len(threaded) < 2:
            threaded = []
        futures = [pool.submit(step, inst) for inst in threaded]
        try:
            for inst in instances.values():
                if inst not in threaded:
                    step(inst)
        finally:
            wait(futures)         # none still stepping when a failure ends it
        for future in futures:
            future.result()

    try:
        for component in system.components.values():
            unzipdir = _unpacked(system_file, digest, component, system.kind)
            instances[component.name] = _Instance(component, unzipdir)
            instances[component.name].instantiate()
        starts: dict[str, dict[str, object]] = {
            c.name: dict(c.bound) for c in system.components.values()}
        for column, value in case.starts:
            component, var = system.lookup(column)
            starts[component.name][var.name] = value
        for name, inst in instances.items():
            inst.call("setupExperiment", startTime=start)
            for var_name, value in starts[name].items():
                inst.set(var_name, value)
            inst.call("enterInitializationMode")
        for inst in instances.values():
            inst.call("exitInitializationMode")
        result.init_s = time.perf_counter() - started
        if settings.parallel is not False:
            pool = ThreadPoolExecutor(
                max_workers=max(1, sum(i.out_of_process
                                       for i in instances.values())),
                thread_name_prefix="cosim-step")
        propagate()
        sample(start)
        # None until the trial has decided: in turn first, then in parallel
        chosen, trial = settings.parallel, [0.0, 0.0]   # s in turn, in parallel
        for k in range(settings.steps):
            concurrently = chosen if chosen is not None else k >= TRIAL_STEPS
            began = time.perf_counter()
            try:
                step_all(start + k * h, concurrently)
            except _Ended as ended:
                sample(start + (k + 1) * h)
                result.message = _cause([instances[str(ended)]], ended, system)
                break
            if chosen is None:
                trial[concurrently] += time.perf_counter() - began
                if k == 2 * TRIAL_STEPS - 1:
                    chosen = trial[True] < trial[False]
            propagate()
            sample(start + (k + 1) * h)
    except Exception as e:
        result.status = STATUS_FAILED
        result.message = _cause(list(instances.values()), e, system)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
        for inst in instances.values():
            inst.close()
            _SINKS.pop(inst.key, None)
        sys.path[:] = saved_path
    result.wall_s = time.perf_counter() - started
    return result
