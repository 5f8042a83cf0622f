"""QEMU as an FMI 2.0 co-simulation slave (pythonfmu).

Each fmi2DoStep becomes one qqq time advance; initialization starts QEMU,
termination closes its socket.  The library behind it is ``qemufmu``.
"""

from __future__ import annotations

import math
import tempfile
import weakref
from pathlib import Path

from pythonfmu import (
    Boolean,
    Fmi2Causality,
    Fmi2Slave,
    Fmi2Variability,
    Integer,
    Real,
    String,
)
from pythonfmu.enums import Fmi2Status

from qemufmu.clock import StepClock
from qemufmu.config import (
    ConfigError,
    QemuConfig,
    qemu_argv,
    resolve_binary,
    resolve_image,
    validate,
)
from qemufmu.console import Console
from qemufmu.process import QemuProcess
from qemufmu.protocol import MAX_ADVANCE_US, QemuGone, StepTimeout, SyncError

_PARAMETERS = {
    # name: (type, description)
    "guest_image": (String, "Guest image for -kernel; empty: the embedded firmware"),
    "machine": (String, "QEMU machine (-M)"),
    "qemu_system": (String, "Which shipped qemu-system-* to run (arm, x86_64)"),
    "accelerator": (String, "tcg-icount (deterministic) or kvm"),
    "icount_shift": (Integer, "Under tcg-icount, one instruction is 2^shift ns"),
    "extra_args": (String, "More QEMU arguments, split like a shell would "
                           "(never run through one)"),
    "qemu_binary": (String, "A QEMU with -qqq to run instead of the shipped one"),
    "step_timeout": (Real, "Wall-clock limit for one step (s)"),
    "network": (Boolean, "Give the guest user-mode networking"),
    "console_file": (String, "File to write the guest console to, lines stamped "
                             "with simulation time; empty: none"),
}


class Qemu(Fmi2Slave):
    """An emulated machine running in lock-step with the master."""

    author = "qemu-fmu"
    description = "QEMU paced by the master over the qqq protocol"
    log_categories = {**Fmi2Slave.log_categories,
                      "logGuestConsole": "Lines the guest writes on its console."}

    def __init__(self, **kwargs) -> None:
        # pythonfmu instantiates this class at build time: nothing heavy here.
        super().__init__(**kwargs)
        defaults = QemuConfig()
        for name, (kind, text) in _PARAMETERS.items():
            setattr(self, name, getattr(defaults, name))
            self._register(kind, name, text, Fmi2Causality.parameter,
                           Fmi2Variability.fixed)
        self.qemu_time = 0.0
        self.sync_steps = 0
        self.console = ""
        self.console_bytes = 0
        out = Fmi2Causality.output
        self._register(Real, "qemu_time", "QEMU's virtual clock in master time (s)",
                       out, Fmi2Variability.continuous)
        self._register(Integer, "sync_steps",
                       "Number of time advances QEMU has answered",
                       out, Fmi2Variability.discrete)
        self._register(String, "console",
                       "What the guest wrote on its console during the last step",
                       out, Fmi2Variability.discrete)
        self._register(Integer, "console_bytes",
                       "Bytes the guest has written on its console so far",
                       out, Fmi2Variability.discrete)
        self._start_time = 0.0
        self._clock: StepClock | None = None
        self._qemu: QemuProcess | None = None
        self._console: Console | None = None
        self._workdir: tempfile.TemporaryDirectory | None = None
        self._failed = False

    def _register(self, kind, name: str, description: str,
                  causality: Fmi2Causality, variability: Fmi2Variability) -> None:
        """Register a variable whose accessors hold only a weak reference.

        pythonfmu's default accessors close over ``self``; that cycle would
        keep a freed or reset instance, and its QEMU, alive until the next
        garbage collection.
        """
        me = weakref.ref(self)
        self.register_variable(kind(
            name, causality=causality, variability=variability,
            description=description, getter=lambda: getattr(me(), name),
            setter=lambda value: setattr(me(), name, value)))

    # -- life cycle -------------------------------------------------------

    def setup_experiment(self, start_time: float, stop_time, tolerance) -> None:
        self._start_time = start_time

    def exit_initialization_mode(self) -> None:
        try:
            self._start()
        except (ConfigError, SyncError, OSError) as e:
            self._fail(f"cannot start QEMU: {e}")
            raise RuntimeError(f"cannot start QEMU: {e}") from None

    def _start(self) -> None:
        cfg = QemuConfig(**{name: getattr(self, name) for name in _PARAMETERS})
        validate(cfg)
        resources = Path(self.resources)
        binary = resolve_binary(cfg, resources)
        image = resolve_image(cfg, resources)
        self._workdir = tempfile.TemporaryDirectory(prefix="qemu-fmu-")
        console_path = Path(self._workdir.name) / "console"
        self._console = Console(console_path,
                                Path(cfg.console_file) if cfg.console_file else None)
        self._step_timeout = cfg.step_timeout
        self._qemu = QemuProcess(qemu_argv(cfg, binary, image, console_path))
        # QEMU answers an advance of 0 only once the machine exists and -qqq
        # accepted the configuration: a refusal surfaces here, not mid-run.
        try:
            self._qemu.channel.advance(0, timeout=cfg.step_timeout)
        except QemuGone:
            raise SyncError(self._qemu.explain_exit()) from None
        self._clock = StepClock(self._start_time)
        self.qemu_time = self._start_time
        self.log(f"QEMU {self._qemu.pid} started: {' '.join(self._qemu.popen.args)}")

    def do_step(self, current_time: float, step_size: float) -> bool:
        if self._failed or self._qemu is None or self._clock is None:
            self.log("do_step after a failure or before initialization",
                     Fmi2Status.error)
            return False
        try:
            return self._step(current_time, step_size)
        except Exception as e:  # never leave QEMU behind on a surprise
            self._fail(f"step at t={current_time:g} s failed: {e!r}")
            return False

    def _step(self, t: float, h: float) -> bool:
        if not (math.isfinite(h) and h > 0):
            self._fail(f"step size {h!r} at t={t:g} s: must be finite and > 0")
            return False
        advance = self._clock.advance_for(t + h)
        if advance > MAX_ADVANCE_US:
            self._fail(f"step of {h:g} s at t={t:g} s exceeds the protocol's "
                       f"limit of {MAX_ADVANCE_US * 1e-6:g} s per step")
            return False
        if advance:
            try:
                elapsed = self._qemu.channel.advance(advance, self._step_timeout)
            except StepTimeout as e:
                self._fail(f"step at t={t:g} s: {e}; QEMU killed")
                return False
            except QemuGone:
                how = self._qemu.explain_exit()
                if self._qemu.poll() == 0:
                    how += " (the guest powered off)"
                self._fail(f"QEMU ended during the step at t={t:g} s: {how}")
                return False
            self._clock.record(elapsed)
            self.sync_steps += 1
        self.qemu_time = self._clock.qemu_time
        self._collect_console(t + h)
        return True

    def _collect_console(self, time: float) -> None:
        data, lines = self._console.read_step(time)
        self.console = data.decode("utf-8", "replace")
        self.console_bytes = self._console.total_bytes
        for line in lines:
            self.log(f"[{time:.6f}] {line}", category="logGuestConsole")

    def terminate(self) -> None:
        self._shutdown()

    def _fail(self, message: str) -> None:
        self.log(message, Fmi2Status.error)
        self._failed = True
        self._shutdown(kill=True)

    def _shutdown(self, kill: bool = False) -> None:
        if self._qemu is not None:
            if kill:
                self._qemu.kill()
            else:
                code = self._qemu.close()
                if code not in (0, None):
                    self.log(f"QEMU exited with status {code}", Fmi2Status.warning)
            self._qemu = None
        if self._console is not None:
            self._console.close()
            self._console = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
        self._clock = None

    def __del__(self) -> None:
        # fmi2FreeInstance and fmi2Reset drop the instance without terminate.
        self._shutdown()
