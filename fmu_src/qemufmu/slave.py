"""The FMI 2.0 co-simulation slave behind qemu.fmu and every signal FMU.

Each fmi2DoStep becomes one qqq (version 3) time advance; initialization
starts QEMU, termination closes its socket.  Guest I/O travels on qqq data
channels; each kind of I/O (the console, the signals of docs/signals.md,
...) is a channel of qemufmu/channels, which owns its variables, its QEMU
arguments, its input and output of each step and its part of an FMU state.
The slave owns time, QEMU's life and the FMI calls, and loops over channels.

No hook raises on purpose: a failure is logged with the status the call
must return (Error for a misuse, Discard when the simulation ended), and
the FMU's loader (fmu_src/loader) returns the worst status logged during
the call; an exception that escapes anyway (a bug) reaches the master as
fmi2Error with its message (docs/fmu-loader.md).
"""

from __future__ import annotations

import json
import math
import weakref
from collections.abc import Callable
from pathlib import Path

from pythonfmu import (
    Fmi2Causality,
    Fmi2Slave,
    Fmi2Variability,
)
from pythonfmu.enums import Fmi2Status

from . import channels
from .channels import Channel, Launch, Step
from .clock import StepClock
from .config import (
    ConfigError,
    QemuConfig,
    qemu_argv,
    resolve_binary,
    resolve_image,
    resolve_initrd,
    validate,
)
from .fmustate import BadState, FmuState, StateError
from .process import QemuProcess
from .protocol import (
    MAX_TIME_NS,
    FramedChannel,
    QemuGone,
    StateRefused,
    StepTimeout,
    SyncError,
)
from .slavebase import KINDS, CheckedSlave

PARAMETERS = {
    # name: (type, description)
    "guest_image": ("String", "Guest image for -kernel; empty: the embedded one"),
    "machine": ("String", "QEMU machine (-M)"),
    "qemu_system": ("String", "Which shipped qemu-system-* to run (arm, x86_64)"),
    "accelerator": ("String", "tcg-icount (deterministic) or kvm"),
    "icount_shift": ("Integer", "Under tcg-icount, one instruction is 2^shift "
                                "ns; -1: the board's own clock (docs/boards.md)"),
    "extra_args": ("String", "More QEMU arguments, split like a shell would "
                             "(never run through one)"),
    "qemu_binary": ("String", "A QEMU with -qqq to run instead of the shipped one"),
    "step_timeout": ("Real", "Wall-clock limit for one step (s)"),
    "host_network": ("Boolean", "Give the guest user-mode networking to the "
                                "host (-nic user)"),
    "initrd": ("String", "Initial RAM disk for -initrd; empty: the embedded "
                         "one, if any"),
    "kernel_cmdline": ("String", "Kernel command line (-append)"),
    "rtc_base": ("String", "Guest wall clock at simulation start, UTC "
                           "(YYYY-MM-DDTHH:MM:SS), or 'host' for the host's "
                           "clock"),
}
OUTPUTS = {
    "qemu_time": ("Real", "QEMU's virtual clock in master time (s)"),
    "sync_steps": ("Integer", "Number of time advances QEMU has answered"),
    "next_event_time": ("Real", "Master time of the guest's next pending "
                                "timer (s); -1 if none"),
}
#: names a configuration cannot give its own variables
RESERVED = set(PARAMETERS) | set(OUTPUTS) | channels.fixed_names()
#: the qqq data channels of a running QEMU, in QEMU's order: each wire's
#: name and the channels that travel on it
Wires = list[tuple[str, list[Channel]]]


class QemuSlave(CheckedSlave, Fmi2Slave):
    """An emulated machine running in lock-step with the master."""

    author = "qemu-fmu"
    description = "QEMU paced by the master over the qqq protocol"
    #: parameter start values that differ from QemuConfig's (signal FMUs)
    parameter_defaults: dict[str, object] = {}
    log_categories = {**Fmi2Slave.log_categories,
                      "logGuestConsole": "Lines the guest writes on its console.",
                      "logGuestSignals": "Guest lines that could not be used."}

    def __init__(self, **kwargs) -> None:
        # pythonfmu instantiates this class at build time: nothing heavy here.
        super().__init__(**kwargs)
        defaults = QemuConfig(**self.parameter_defaults)
        me = weakref.ref(self)
        for name, (kind, text) in PARAMETERS.items():
            setattr(self, name, getattr(defaults, name))
            self._register(kind, name, text, "parameter", *_attribute(me, name))
        for name, (kind, text) in OUTPUTS.items():
            setattr(self, name, -1.0 if name == "next_event_time"
                    else {"Real": 0.0, "Integer": 0}[kind])
            self._register(kind, name, text, "output", *_attribute(me, name))
        #: guest I/O, one channel per kind (qemufmu/channels)
        self._io = channels.for_fmu(Path(self.resources or "."))
        self._owner: dict[str, Channel] = {}
        for channel in self._io:
            for var in channel.variables:
                self._owner[var.name] = channel
                self._register(var.type, var.name, var.description,
                               var.causality, *_item(channel.values, var.name))
        self._start_time = 0.0
        self._clock: StepClock | None = None
        self._qemu: QemuProcess | None = None
        self._wires: Wires = []
        self._time = 0.0        # where the next step must start
        self._initialized = False
        self._failed = False

    def _register(self, kind: str, name: str, description: str,
                  causality: str, getter: Callable[[], object],
                  setter: Callable[[object], None]) -> None:
        """Register a variable whose accessors never hold the slave.

        pythonfmu's default accessors close over ``self``; that cycle would
        keep a freed or reset instance, and its QEMU, alive until the next
        garbage collection.
        """
        if causality == "parameter":
            variability = Fmi2Variability.fixed
        elif kind == "Real":
            variability = Fmi2Variability.continuous
        else:
            variability = Fmi2Variability.discrete
        self.register_variable(KINDS[kind](
            name, causality=Fmi2Causality[causality], variability=variability,
            description=description or None, getter=getter, setter=setter))

    # -- life cycle -------------------------------------------------------

    def setup_experiment(self, start_time: float, stop_time, tolerance) -> None:
        self._start_time = start_time

    def exit_initialization_mode(self) -> None:
        if self._initialized:   # fmi2SetFMUstate in initialization mode did it
            return
        try:
            self._start()
        except (ConfigError, SyncError, OSError) as e:
            self._fail(f"cannot start QEMU: {e}")
        except Exception as e:  # a bug: still never leave QEMU behind
            self._fail(f"cannot start QEMU: internal error {e!r}")
        else:
            self._initialized = True

    def _params(self) -> dict[str, object]:
        """Every parameter's value, the slave's and the channels'."""
        return {v.name: v.getter() for v in self.vars.values()
                if v.causality == Fmi2Causality.parameter}

    def _launch(self, launch: Launch) -> tuple[QemuProcess, Wires]:
        """Start QEMU with ``launch``'s parameters and exchange HELLO; never
        leaves it behind."""
        cfg = QemuConfig(**{name: launch.params[name] for name in PARAMETERS})
        validate(cfg)
        resources = Path(self.resources)
        binary = resolve_binary(cfg, resources)
        image = resolve_image(cfg, resources)
        initrd = resolve_initrd(cfg, resources)
        wires: dict[str, list[Channel]] = {}
        for channel in self._io:
            if (wire := channel.wire(launch.params)) is not None:
                wires.setdefault(wire, []).append(channel)
        io_args = [arg for riders in wires.values()
                   for arg in riders[0].qemu_args(launch)]
        kinds = [riders[0].kind for riders in wires.values()]
        qemu = QemuProcess(qemu_argv(cfg, binary, image, io_args, initrd,
                                     nics="net" in kinds), version=3)
        # QEMU says HELLO only once the machine exists and -qqq accepted the
        # configuration: a refusal surfaces here, not in the first step.
        try:
            names = qemu.channel.hello(timeout=cfg.step_timeout)
        except QemuGone:
            why = qemu.explain_exit()
            qemu.kill()
            raise SyncError(why) from None
        except BaseException:
            qemu.kill()
            raise
        if names != list(wires) or qemu.channel.kinds != kinds:
            offered = list(zip(names, qemu.channel.kinds, strict=True))
            qemu.kill()
            raise SyncError(f"QEMU offers channels {offered}, expected "
                            f"{list(zip(wires, kinds, strict=True))}; do "
                            "extra_args add -chardev qqq or -netdev qqq?")
        return qemu, list(wires.items())

    def _start(self) -> None:
        launch = Launch(self._params(), self.instance_name)
        self._qemu, self._wires = self._launch(launch)
        self._step_timeout = launch.params["step_timeout"]
        for channel in self._io:
            channel.open(launch)
        self._clock = StepClock(self._start_time)
        self.qemu_time = self._start_time
        self._time = self._start_time
        self.log(f"QEMU {self._qemu.pid} started: {' '.join(self._qemu.popen.args)}")

    @property
    def _sync(self) -> FramedChannel:
        return self._qemu.channel

    def do_step(self, current_time: float, step_size: float) -> bool:
        if not self._initialized:
            self.log("fmi2DoStep before initialization ended"
                     + (" (it failed)" if self._failed else ""), Fmi2Status.error)
            return False
        if self._failed or self._qemu is None or self._clock is None:
            self.log("fmi2DoStep after a failure ended the simulation (see "
                     "the error before)", Fmi2Status.error)
            return False
        # Only fmi2SetFMUstate may move the FMU's time; 1 ns is QEMU's grain.
        if abs(current_time - self._time) > 1e-9 + 1e-12 * abs(current_time):
            self.log(f"fmi2DoStep at t={current_time!r} s, but the FMU is at "
                     f"t={self._time!r} s; steps must follow each other",
                     Fmi2Status.error)
            return False
        try:
            ok = self._step(current_time, step_size)
        except Exception as e:  # never leave QEMU behind on a surprise
            self._fail(f"step at t={current_time:g} s failed: {e!r}",
                       Fmi2Status.discard)
            return False
        if ok:
            self._time = current_time + step_size
        return ok

    def _step(self, t: float, h: float) -> bool:
        ended = Fmi2Status.discard
        if not (math.isfinite(h) and h > 0):
            self._fail(f"step size {h!r} at t={t:g} s: must be finite and > 0",
                       ended)
            return False
        advance = self._clock.advance_for(t + h)
        if self._clock.qemu_ns + advance > MAX_TIME_NS:
            self._fail(f"step of {h:g} s at t={t:g} s exceeds the protocol's limit: "
                       f"QEMU's clock may reach {MAX_TIME_NS * 1e-9:g} s", ended)
            return False
        step = Step(t, t + h, self._clock.qemu_ns, self._clock.qemu_ns + advance,
                    self._clock, self.log, self.logs)
        inputs = self._inputs(step)
        if not (advance or inputs):     # QEMU is ahead (kvm): it sits this out
            self._outputs({}, step)
            self.qemu_time = self._clock.qemu_time
            return True
        try:
            reply = self._sync.advance(advance, inputs, self._step_timeout)
        except StepTimeout as e:
            self._fail(f"step at t={t:g} s: {e}; QEMU killed", ended)
            return False
        except QemuGone as e:
            self._outputs(e.outputs, step)  # what the guest sent till the end
            how = self._qemu.explain_exit()
            if e.cause:
                how += f" ({e.cause})"
            elif self._qemu.poll() == 0:
                how += " (the guest powered off)"
            self._fail(f"QEMU ended during the step at t={t:g} s: {how}", ended)
            return False
        self._clock.record(reply.elapsed_ns)
        self.sync_steps += advance > 0
        self._outputs(reply.outputs, step)
        self.next_event_time = self._next_event(reply.lookahead_ns, step)
        self.qemu_time = self._clock.qemu_time
        return True

    # -- guest I/O: each wire's channels, in order ------------------------

    def _inputs(self, step: Step) -> dict[int, bytes]:
        """The bytes each wire carries to the guest at the start of ``step``."""
        data = {}
        for index, (_, riders) in enumerate(self._wires):
            payload = b"".join([channel.send(step) for channel in riders])
            if payload:
                data[index] = payload
        return data

    def _outputs(self, outputs: dict[int, bytes], step: Step) -> None:
        for index, (_, riders) in enumerate(self._wires):
            data = outputs.get(index, b"")
            for channel in riders:
                channel.receive(data, step)

    def _next_event(self, lookahead_ns: int | None, step: Step) -> float:
        """Master time of the guest's next timer or of the next input a
        channel holds for it (a frame due later); -1 if there is none."""
        first = None if lookahead_ns is None else self._clock.qemu_ns + lookahead_ns
        for _, riders in self._wires:
            for channel in riders:
                t = channel.next_event_ns(step)
                if t is not None and (first is None or t < first):
                    first = t
        return -1.0 if first is None else self._clock.to_master(first)

    # -- variable access --------------------------------------------------
    # pythonfmu's accessors raise on a bad value reference (fmi2Fatal); these
    # log an Error and leave the instance usable.

    def _refuse(self, var, value: object) -> str | None:
        owner = self._owner.get(var.name)
        return owner.refuse(var.name, value) if owner else None

    # -- FMU states (docs/fmu-state.md) -----------------------------------
    # pythonfmu hands our state object to the master as the fmi2FMUstate;
    # fmi2FreeFMUstate drops its reference, which frees everything it holds.

    def _get_fmu_state(self) -> FmuState | BadState:
        try:
            return self._capture()
        except StateError as e:
            self.log(f"fmi2GetFMUstate: {e}", Fmi2Status.error)
            return BadState(str(e))
        except Exception as e:  # a bug: report it, never raise into pythonfmu
            self.log(f"fmi2GetFMUstate: internal error {e!r}", Fmi2Status.error)
            return BadState(repr(e))

    def _capture(self) -> FmuState:
        if self._failed:
            raise StateError("the simulation ended with an error (see above); "
                             "there is no state to take")
        machine = None
        if self._initialized and self._qemu is None:
            raise StateError("the instance is terminated: there is no "
                             "machine to take a state of")
        if self._initialized:
            try:
                machine = self._sync.save_state(self._step_timeout)
            except StateRefused as e:
                raise StateError(str(e)) from None
            except SyncError as e:
                self._fail(f"fmi2GetFMUstate: QEMU failed while saving: {e}",
                           Fmi2Status.discard)
                raise StateError(f"QEMU failed while saving: {e}") from None
        slave = {
            "variables": {v.name: v.getter() for v in self.vars.values()},
            "start_time": self._start_time,
            "time": self._time,
            "qemu_ns": self._clock.qemu_ns if self._clock else 0,
            "channels": {channel.name: channel.save() for channel in self._io},
        }
        return FmuState(self._identity(), json.loads(json.dumps(slave)), machine)

    def _set_fmu_state(self, state: object) -> None:
        try:
            self._restore(state)
        except StateError as e:
            self.log(f"fmi2SetFMUstate: {e}", Fmi2Status.error)
        except Exception as e:  # a bug: report it, never raise into pythonfmu
            self.log(f"fmi2SetFMUstate: internal error {e!r}", Fmi2Status.error)

    def _restore(self, state: object) -> None:
        """Make ``state`` this instance's state.

        A running QEMU with the state's parameters loads the machine in
        place (milliseconds); otherwise (before initialization, after a
        failure, a state of other parameters) a new QEMU loads it and
        replaces the old one only once loaded.  A refused state changes
        nothing; a load that fails part-way ends that QEMU (QEMU exits
        rather than run a half-restored machine) and the instance is failed
        until a state is set that loads.
        """
        if isinstance(state, BadState):
            raise StateError(f"cannot restore: {state.reason}")
        if not isinstance(state, FmuState):
            raise StateError("cannot restore: that is not an FMU state of "
                             "this FMU")
        if state.fmu != self._identity():
            raise StateError(f"cannot restore a state of FMU '{state.fmu}' "
                             f"into '{self._identity()}'")
        slave = state.slave
        launch = Launch({name: slave["variables"][name] for name in self._params()},
                        self.instance_name, restored_at=slave["time"])
        qemu, wires = None, []
        if state.machine is not None and self._restore_in_place(state, launch):
            qemu, wires = self._qemu, self._wires
        elif state.machine is not None:
            try:
                qemu, wires = self._launch(launch)
                qemu.channel.load_state(state.machine, launch.params["step_timeout"])
            except (ConfigError, SyncError, OSError) as e:
                why = str(e)
                if qemu is not None:
                    if qemu.poll() is not None or isinstance(e, StateRefused):
                        why += f"; {qemu.explain_exit(grace=0.5)}"
                    qemu.kill()
                raise StateError(f"QEMU could not restore the state: {why}") from None
        if qemu is not self._qemu:
            self._shutdown(kill=True)
        else:
            for channel in self._io:
                channel.close()
        for var in self.vars.values():
            var.setter(slave["variables"][var.name])
        self._start_time = slave["start_time"]
        self._time = slave["time"]
        self._failed = False
        self._initialized = qemu is not None
        if qemu is None:
            return
        self._qemu, self._wires = qemu, wires
        self._step_timeout = launch.params["step_timeout"]
        for channel in self._io:
            channel.open(launch, slave["channels"][channel.name])
        self._clock = StepClock(self._start_time)
        self._clock.qemu_ns = slave["qemu_ns"]

    def _restore_in_place(self, state: FmuState, launch: Launch) -> bool:
        """Load into the running QEMU; False if there is none to load into."""
        if (self._qemu is None or not self._initialized or self._failed
                or launch.params != self._params()):
            return False
        try:
            self._sync.load_state(state.machine, self._step_timeout)
        except SyncError as e:
            why = str(e)
            if self._qemu.poll() is not None or isinstance(e, StateRefused):
                why += f"; {self._qemu.explain_exit(grace=0.5)}"
            self._fail(f"fmi2SetFMUstate: QEMU could not load the state: {why}")
            raise StateError("the instance has no machine now; set a state "
                             "that loads, or reset it") from None
        return True

    # -- ending -----------------------------------------------------------

    def terminate(self) -> None:
        self._shutdown()

    def _fail(self, message: str, status: Fmi2Status = Fmi2Status.error) -> None:
        self.log(message, status)
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
        for channel in self._io:
            channel.close()
        self._wires = []
        self._clock = None

    def __del__(self) -> None:
        # fmi2FreeInstance and fmi2Reset drop the instance without terminate.
        self._shutdown()


def _attribute(me: weakref.ref, name: str) -> tuple[Callable, Callable]:
    """Accessors of a variable kept as an attribute of the slave ``me``."""
    return (lambda: getattr(me(), name),
            lambda value: setattr(me(), name, value))


def _item(values: dict[str, object], name: str) -> tuple[Callable, Callable]:
    """Accessors of a variable a channel keeps in its ``values``."""
    return (lambda: values[name],
            lambda value: values.__setitem__(name, value))
