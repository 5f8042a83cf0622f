"""The FMI 2.0 co-simulation slave behind qemu.fmu and every signal FMU.

Each fmi2DoStep becomes one qqq (version 2) time advance; initialization
starts QEMU, termination closes its socket.  Guest I/O travels on qqq data
channels: the console (the guest's first UART) as String variables, and,
for FMUs built with a signal configuration, named Real/Integer/Boolean
variables as `name=value` lines (docs/signals.md).

No hook raises: pythonfmu would turn an exception into fmi2Fatal, lose its
message and go on using the slave it freed.  A failure is logged with the
status the call must return (Error for a misuse, Discard when the
simulation ended), and the FMU's loader shim (fmu_src/loader) returns the
worst status logged during the call.
"""

from __future__ import annotations

import ctypes
import json
import math
import re
import sys
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
from .console import Console
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
from .signals import LINE_MAX, RESEND_REQUEST, SIGNAL_LINE, Signal, SignalSet

CONSOLE = "console"
KINDS = {"Real": Real, "Integer": Integer, "Boolean": Boolean, "String": String}

PARAMETERS = {
    # name: (type, description)
    "guest_image": ("String", "Guest image for -kernel; empty: the embedded one"),
    "machine": ("String", "QEMU machine (-M)"),
    "qemu_system": ("String", "Which shipped qemu-system-* to run (arm, x86_64)"),
    "accelerator": ("String", "tcg-icount (deterministic) or kvm"),
    "icount_shift": ("Integer", "Under tcg-icount, one instruction is 2^shift ns"),
    "extra_args": ("String", "More QEMU arguments, split like a shell would "
                             "(never run through one)"),
    "qemu_binary": ("String", "A QEMU with -qqq to run instead of the shipped one"),
    "step_timeout": ("Real", "Wall-clock limit for one step (s)"),
    "network": ("Boolean", "Give the guest user-mode networking"),
    "console_file": ("String", "File to write the guest console to, lines "
                               "stamped with simulation time; empty: none"),
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
    "console": ("String", "What the guest wrote on its console during the "
                          "last step"),
    "console_bytes": ("Integer", "Bytes the guest has written on its console "
                                 "so far"),
    "next_event_time": ("Real", "Master time of the guest's next pending "
                                "timer (s); -1 if none"),
}
INPUTS = {
    "console_in": ("String", "Bytes for the guest console at the start of the "
                             "next step"),
}
RESERVED = set(PARAMETERS) | set(OUTPUTS) | set(INPUTS)

#: console_in bytes one step can carry: a frame holds 16 MiB, and the rest
#: leaves room for the frame's fields and the signal lines.
CONSOLE_IN_MAX = 16 * 1024 * 1024 - 64 * 1024


def _keep_module_namespace(cls: type) -> None:
    """Work around pythonfmu 0.7's loader, which releases one reference to
    the model script's module namespace per instantiation without having
    taken it.  A script whose namespace nothing else holds (ours define no
    functions) then loses it after the first instance, and the next
    instantiation in the same process fails or crashes the master.
    """
    module = sys.modules.get(cls.__module__)
    if module is not None:
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(vars(module)))


class QemuSlave(Fmi2Slave):
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
        _keep_module_namespace(type(self))
        super().__init__(**kwargs)
        defaults = QemuConfig(**self.parameter_defaults)
        for name, (kind, text) in PARAMETERS.items():
            self._register(kind, name, text, Fmi2Causality.parameter,
                           getattr(defaults, name))
        for name, (kind, text) in OUTPUTS.items():
            start = -1.0 if name == "next_event_time" else None
            self._register(kind, name, text, Fmi2Causality.output,
                           start if start is not None else
                           {"Real": 0.0, "Integer": 0, "String": ""}[kind])
        for name, (kind, text) in INPUTS.items():
            self._register(kind, name, text, Fmi2Causality.input, "")
        self.next_event_time = -1.0
        self.signals = SignalSet.load(Path(self.resources or "."))
        if self.signals:
            for signal in self.signals.inputs + self.signals.outputs:
                self._register(signal.type, signal.name, signal.description,
                               Fmi2Causality[signal.causality], signal.start)
        self._start_time = 0.0
        self._clock: StepClock | None = None
        self._qemu: QemuProcess | None = None
        self._consoles: dict[int, Console] = {}
        self._channels: list[str] = []
        self._signal_index: int | None = None  # channel carrying the signals
        self._sent: dict[str, object] = {}
        self._console_sent = ""
        self._time = 0.0        # where the next step must start
        self._initialized = False
        self._failed = False
        self._fmu_identity: str | None = None

    def _register(self, kind: str, name: str, description: str,
                  causality: Fmi2Causality, start: object) -> None:
        """Register a variable whose accessors hold only a weak reference.

        pythonfmu's default accessors close over ``self``; that cycle would
        keep a freed or reset instance, and its QEMU, alive until the next
        garbage collection.
        """
        setattr(self, name, start)
        if causality == Fmi2Causality.parameter:
            variability = Fmi2Variability.fixed
        elif kind == "Real":
            variability = Fmi2Variability.continuous
        else:
            variability = Fmi2Variability.discrete
        me = weakref.ref(self)
        self.register_variable(KINDS[kind](
            name, causality=causality, variability=variability,
            description=description or None,
            getter=lambda: getattr(me(), name),
            setter=lambda value: setattr(me(), name, value)))

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

    def _config(self) -> QemuConfig:
        return QemuConfig(**{name: getattr(self, name) for name in PARAMETERS})

    def _launch(self, cfg: QemuConfig) -> QemuProcess:
        """Start QEMU for ``cfg`` and exchange HELLO; never leaves it behind."""
        validate(cfg)
        resources = Path(self.resources)
        binary = resolve_binary(cfg, resources)
        image = resolve_image(cfg, resources)
        initrd = resolve_initrd(cfg, resources)
        self._channels = [CONSOLE]
        if self.signals and self.signals.channel != CONSOLE:
            self._channels.append(self.signals.channel)
        self._signal_index = (self._channels.index(self.signals.channel)
                              if self.signals else None)
        self._step_timeout = cfg.step_timeout
        qemu = QemuProcess(
            qemu_argv(cfg, binary, image, self._channels, initrd), version=2)
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
        if names != self._channels:
            qemu.kill()
            raise SyncError(f"QEMU offers channels {names}, expected "
                            f"{self._channels}; do extra_args add -chardev qqq?")
        return qemu

    def _open_consoles(self, cfg: QemuConfig, append: bool = False) -> None:
        transcript = Path(cfg.console_file) if cfg.console_file else None
        self._consoles = {0: Console(transcript, append)}
        self._consoles.update({i: Console() for i in range(1, len(self._channels))})

    def _start(self) -> None:
        cfg = self._config()
        self._qemu = self._launch(cfg)
        self._open_consoles(cfg)
        self._clock = StepClock(self._start_time)
        self.qemu_time = self._start_time
        self._time = self._start_time
        self._sent = {}
        self._console_sent = ""
        self.log(f"QEMU {self._qemu.pid} started: {' '.join(self._qemu.popen.args)}")

    @property
    def channel(self) -> FramedChannel:
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
        inputs = self._inputs()
        if advance or inputs:
            try:
                reply = self.channel.advance(advance, inputs, self._step_timeout)
            except StepTimeout as e:
                self._fail(f"step at t={t:g} s: {e}; QEMU killed", ended)
                return False
            except QemuGone as e:
                self._outputs(e.outputs, t + h)  # what the guest sent till the end
                how = self._qemu.explain_exit()
                if e.cause:
                    how += f" ({e.cause})"
                elif self._qemu.poll() == 0:
                    how += " (the guest powered off)"
                self._fail(f"QEMU ended during the step at t={t:g} s: {how}",
                           ended)
                return False
            self._clock.record(reply.elapsed_ns)
            self.sync_steps += advance > 0
            self.next_event_time = (
                -1.0 if reply.lookahead_ns is None
                else self._clock.to_master(self._clock.qemu_ns + reply.lookahead_ns))
            self._outputs(reply.outputs, t + h)
        else:
            self.console = ""
        self.qemu_time = self._clock.qemu_time
        return True

    # -- guest I/O --------------------------------------------------------

    def _inputs(self) -> dict[int, bytes]:
        """The bytes each channel sends at the start of this step.

        Like the signal inputs, console_in is sent when its value differs
        from the previous step's: a value set once reaches the guest once.
        """
        data: dict[int, bytes] = {}
        if self.console_in != self._console_sent:
            if self.console_in:
                data[0] = self.console_in.encode()
            self._console_sent = self.console_in
        if self.signals:
            lines = []
            for signal in self.signals.inputs:
                value = getattr(self, signal.name)
                if self._sent.get(signal.name) != value:
                    lines.append(signal.format(value))
                    self._sent[signal.name] = value
            if lines:
                index = self._signal_index
                data[index] = data.get(index, b"") + "".join(lines).encode()
        return data

    def _outputs(self, outputs: dict[int, bytes], time: float) -> None:
        self.console = outputs.get(0, b"").decode("utf-8", "replace")
        for index, console in self._consoles.items():
            for line in console.feed(outputs.get(index, b""), time):
                if not self._signal_line(index, line, time):
                    self.log(f"[{time:.6f}] {line}", category="logGuestConsole")
        self.console_bytes = self._consoles[0].total_bytes

    def _signal_line(self, index: int, line: str, time: float) -> bool:
        """Apply a `name=value` line; False if it is console text."""
        if index != self._signal_index:
            return False
        if line == RESEND_REQUEST:
            self._sent = {}  # every input goes out with the next step
            return True
        match = SIGNAL_LINE.fullmatch(line)
        if not match:
            return False
        name, text = match.groups()
        signal: Signal | None = self.signals.output(name)
        problem = None
        if len(line.encode()) + 1 > LINE_MAX:
            problem = f"is longer than {LINE_MAX} bytes"
        elif signal is None:
            problem = f"names no output signal ('{name}')"
        else:
            try:
                setattr(self, name, signal.parse(text))
            except ValueError as e:
                problem = f"has a bad value for {signal.type} {name}: {e}"
        if problem:
            self.log(f"t={time:.6f} s: guest line {line[:LINE_MAX]!r} {problem}; "
                     "ignored", Fmi2Status.warning, category="logGuestSignals")
        return True

    # -- variable access --------------------------------------------------
    # pythonfmu's accessors raise on a bad value reference (fmi2Fatal); these
    # log an Error and leave the instance usable.

    def _variable(self, vr: int, kind: type, setting: bool):
        var = self.vars.get(vr)
        problem = None
        if var is None:
            problem = "does not exist"
        elif not isinstance(var, kind):
            problem = f"is a {type(var).__name__}, not a {kind.__name__}"
        elif setting and var.causality == Fmi2Causality.output:
            problem = f"is the output {var.name}; outputs cannot be set"
        elif (setting and var.causality == Fmi2Causality.parameter
              and (self._initialized or self._failed)):
            problem = (f"is the parameter {var.name}, fixed once "
                       "initialization has ended")
        if problem:
            verb = "set" if setting else "get"
            self.log(f"cannot {verb} variable {vr}: it {problem}", Fmi2Status.error)
            return None
        return var

    def _get(self, vrs: list[int], kind: type, default: object) -> list:
        values = []
        for vr in vrs:
            var = self._variable(vr, kind, False)
            values.append(default if var is None else var.getter())
        return values

    def _set(self, vrs: list[int], values: list, kind: type) -> None:
        for vr, value in zip(vrs, values, strict=False):
            var = self._variable(vr, kind, True)
            if var is None:
                continue
            size = len(value.encode()) if var.name == "console_in" else 0
            if size > CONSOLE_IN_MAX:
                self.log(f"console_in of {size} bytes refused: a "
                         f"step carries at most {CONSOLE_IN_MAX}; split it over "
                         "steps", Fmi2Status.error)
                continue
            var.setter(value)

    def get_real(self, vrs):
        return [float(v) for v in self._get(vrs, Real, 0.0)]

    def get_integer(self, vrs):
        return [int(v) for v in self._get(vrs, Integer, 0)]

    def get_boolean(self, vrs):
        return [bool(v) for v in self._get(vrs, Boolean, False)]

    def get_string(self, vrs):
        return [str(v) for v in self._get(vrs, String, "")]

    def set_real(self, vrs, values):
        self._set(vrs, values, Real)

    def set_integer(self, vrs, values):
        self._set(vrs, values, Integer)

    def set_boolean(self, vrs, values):
        self._set(vrs, values, Boolean)

    def set_string(self, vrs, values):
        self._set(vrs, values, String)

    # -- FMU states (docs/fmu-state.md) -----------------------------------
    # pythonfmu hands our state object to the master as the fmi2FMUstate;
    # fmi2FreeFMUstate drops its reference, which frees everything it holds.

    def _identity(self) -> str:
        """Model name and GUID: a state only restores into the same FMU."""
        if self._fmu_identity is None:
            self._fmu_identity = self._read_identity()
        return self._fmu_identity

    def _read_identity(self) -> str:
        guid = ""
        if self.resources:
            md = Path(self.resources).parent / "modelDescription.xml"
            try:
                match = re.search(rb'guid="([^"]*)"', md.read_bytes()[:4096])
            except OSError:
                match = None
            guid = match.group(1).decode() if match else ""
        return f"{type(self).__name__} {guid}".strip()

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
                machine = self.channel.save_state(self._step_timeout)
            except StateRefused as e:
                raise StateError(str(e)) from None
            except SyncError as e:
                self._fail(f"fmi2GetFMUstate: QEMU failed while saving: {e}",
                           Fmi2Status.discard)
                raise StateError(f"QEMU failed while saving: {e}") from None
        slave = {
            "variables": {v.name: getattr(self, v.name) for v in self.vars.values()},
            "start_time": self._start_time,
            "time": self._time,
            "qemu_ns": self._clock.qemu_ns if self._clock else 0,
            "sent": self._sent,
            "console_sent": self._console_sent,
            "consoles": {str(i): [c.partial.decode("latin-1"), c.total_bytes]
                         for i, c in self._consoles.items()},
        }
        return FmuState(self._identity(), json.loads(json.dumps(slave)), machine)

    def _set_fmu_state(self, state: object) -> None:
        try:
            self._restore(state)
        except StateError as e:
            self.log(f"fmi2SetFMUstate: {e}", Fmi2Status.error)
        except Exception as e:  # a bug: report it, never raise into pythonfmu
            self.log(f"fmi2SetFMUstate: internal error {e!r}", Fmi2Status.error)

    @staticmethod
    def _fmu_state_to_bytes(state: object) -> bytes:
        return state.to_bytes() if isinstance(state, FmuState | BadState) else b""

    @staticmethod
    def _fmu_state_from_bytes(data: bytes) -> FmuState | BadState:
        try:
            return FmuState.from_bytes(data)
        except StateError as e:
            return BadState(f"the serialized state is unusable: {e}")

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
        params = {name: slave["variables"][name] for name in PARAMETERS}
        cfg = QemuConfig(**params)
        qemu = None
        if state.machine is not None and self._restore_in_place(state, cfg):
            qemu = self._qemu
        elif state.machine is not None:
            try:
                qemu = self._launch(cfg)
                qemu.channel.load_state(state.machine, cfg.step_timeout)
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
            for console in self._consoles.values():
                console.close()
        for name, value in slave["variables"].items():
            setattr(self, name, value)
        self._start_time = slave["start_time"]
        self._time = slave["time"]
        self._sent = dict(slave["sent"])
        self._console_sent = slave["console_sent"]
        self._failed = False
        self._initialized = qemu is not None
        if qemu is None:
            return
        self._qemu = qemu
        self._open_consoles(cfg, append=True)
        for index, (partial, total) in slave["consoles"].items():
            console = self._consoles[int(index)]
            console.partial = partial.encode("latin-1")
            console.total_bytes = total
        self._consoles[0].note(f"restored the state of t={self._time:.6f} s")
        self._clock = StepClock(self._start_time)
        self._clock.qemu_ns = slave["qemu_ns"]

    def _restore_in_place(self, state: FmuState, cfg: QemuConfig) -> bool:
        """Load into the running QEMU; False if there is none to load into."""
        if (self._qemu is None or not self._initialized or self._failed
                or cfg != self._config()):
            return False
        try:
            self.channel.load_state(state.machine, self._step_timeout)
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
        for console in self._consoles.values():
            console.close()
        self._consoles = {}
        self._clock = None

    def __del__(self) -> None:
        # fmi2FreeInstance and fmi2Reset drop the instance without terminate.
        self._shutdown()
