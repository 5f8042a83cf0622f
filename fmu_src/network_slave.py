"""Network: the network FMU, a link or switch between Ethernet ports.

The pythonfmu entry of dist/Network.fmu (build_fmu.py --network).  Its
variables follow docs/network.md; the model lives in qemufmu.network
(forwarding, link timing and loss, pcapng capture), this file only ties it
to FMI: variables, steps, errors and FMU states.

As in qemufmu/slave.py, no hook raises (pythonfmu would turn an exception
into fmi2Fatal and lose its message): a failure is logged with Error, and
the FMU's loader shim makes the call return the worst status logged.
"""

from __future__ import annotations

import json
import math
import weakref
from pathlib import Path

from pythonfmu import (
    Fmi2Causality,
    Fmi2Slave,
    Fmi2Variability,
)
from pythonfmu.enums import Fmi2Status

from qemufmu.ethernet import Frame, FrameError, decode, encode
from qemufmu.fmustate import BadState, FmuState, StateError
from qemufmu.network.capture import INBOUND, OUTBOUND, Capture
from qemufmu.network.link import LinkParams, ParameterError
from qemufmu.network.link import Network as Model
from qemufmu.slavebase import KINDS, CheckedSlave

PARAMETERS = {
    # name: (type, start, description)
    "delay": ("Real", 0.0, "Propagation delay (s)"),
    "bit_rate": ("Real", 0.0, "Bit rate of every port (bit/s); 0: no "
                              "serialization time"),
    "loss": ("Real", 0.0, "Probability that a frame is lost"),
    "seed": ("Integer", 0, "Seed of the loss draws"),
    "queue_limit": ("Integer", 1000, "Frames waiting per output port before "
                                     "drops; 0: no limit"),
    "learning": ("Boolean", False, "A learning switch; else every frame goes "
                                   "to every other port"),
    "capture_file": ("String", "", "pcapng file stamped with simulation time; "
                                   "empty: none"),
}
COUNTERS = {
    "frames": "Frames scheduled on output ports so far",
    "lost": "Frames lost (loss draws) so far",
}


def _ports(resources: str | None) -> int:
    """Ports fixed at build time: resources/network.json, else 2."""
    try:
        return int(json.loads((Path(resources or ".") / "network.json")
                              .read_text())["ports"])
    except FileNotFoundError:
        return 2


class Network(CheckedSlave, Fmi2Slave):
    """A link (2 ports), hub or learning switch between Ethernet ports."""

    author = "qemu-fmu"
    description = ("Ethernet link or switch: delay, bit rate, loss, queue "
                   "limit, learning, pcapng capture in simulation time")

    def __init__(self, **kwargs) -> None:
        # pythonfmu instantiates this class at build time: nothing heavy here.
        super().__init__(**kwargs)
        self.ports = _ports(self.resources)
        for name, (kind, start, text) in PARAMETERS.items():
            self._register(kind, name, text, Fmi2Causality.parameter, start)
        for k in range(self.ports):
            self._register("String", f"port{k}_in", f"Frames from the node on "
                           f"port {k}", Fmi2Causality.input, "")
        for k in range(self.ports):
            self._register("String", f"port{k}_out", f"Frames to the node on "
                           f"port {k}, with delivery times", Fmi2Causality.output, "")
        for k in range(self.ports):
            self._register("Integer", f"port{k}_dropped", f"Frames dropped by "
                           f"port {k}'s full output queue", Fmi2Causality.output, 0)
        for name, text in COUNTERS.items():
            self._register("Integer", name, text, Fmi2Causality.output, 0)
        self._model: Model | None = None
        self._capture: Capture | None = None
        self._time = 0.0
        self._initialized = False
        self._failed = False

    def _register(self, kind: str, name: str, description: str,
                  causality: Fmi2Causality, start: object) -> None:
        """Register a variable whose accessors hold a weak reference: a
        closure over ``self`` would keep a freed instance (and its open
        capture file) alive until the next garbage collection."""
        setattr(self, name, start)
        variability = (Fmi2Variability.fixed if causality == Fmi2Causality.parameter
                       else Fmi2Variability.discrete)
        me = weakref.ref(self)
        self.register_variable(KINDS[kind](
            name, causality=causality, variability=variability,
            description=description,
            getter=lambda: getattr(me(), name),
            setter=lambda value: setattr(me(), name, value)))

    # -- life cycle -------------------------------------------------------

    def setup_experiment(self, start_time: float, stop_time, tolerance) -> None:
        self._time = start_time

    def exit_initialization_mode(self) -> None:
        if self._initialized:   # fmi2SetFMUstate in initialization mode did it
            return
        try:
            self._model = Model(self._params())
            if self.capture_file:
                self._capture = Capture.create(Path(self.capture_file), self.ports,
                                               self.bit_rate)
        except (ParameterError, OSError) as e:
            self._fail(f"cannot start the network: {e}")
            return
        self._initialized = True

    def _params(self) -> LinkParams:
        return LinkParams(ports=self.ports, delay=self.delay, bit_rate=self.bit_rate,
                          loss=self.loss, seed=self.seed,
                          queue_limit=self.queue_limit, learning=self.learning)

    def do_step(self, current_time: float, step_size: float) -> bool:
        if self._failed or not self._initialized or self._model is None:
            self.log("fmi2DoStep after a failure (see the error before)"
                     if self._failed else "fmi2DoStep before initialization ended",
                     Fmi2Status.error)
            return False
        if abs(current_time - self._time) > 1e-9 + 1e-12 * abs(current_time):
            self.log(f"fmi2DoStep at t={current_time!r} s, but the FMU is at "
                     f"t={self._time!r} s; steps must follow each other",
                     Fmi2Status.error)
            return False
        if not (math.isfinite(step_size) and step_size > 0):
            self.log(f"step size {step_size!r} at t={current_time:g} s: must be "
                     "finite and > 0", Fmi2Status.error)
            return False
        inputs = []
        for k in range(self.ports):
            try:
                inputs.append(decode(getattr(self, f"port{k}_in")))
            except FrameError as e:
                # The step is not taken: the master may fix the input or
                # restore a state and try again.
                self.log(f"port{k}_in at t={current_time:g} s: {e}",
                         Fmi2Status.error)
                return False
        self._forward(inputs, round(current_time * 1e9))
        self._time = current_time + step_size
        return True

    def _forward(self, inputs: list[list[Frame]], start_ns: int) -> None:
        outputs = self._model.step(inputs)
        for k in range(self.ports):
            # An input is consumed by the step it starts: a master that does
            # not set it again must not have its frames sent twice.
            setattr(self, f"port{k}_in", "")
            setattr(self, f"port{k}_out", encode(outputs[k]))
            setattr(self, f"port{k}_dropped", self._model.dropped[k])
        self.frames = self._model.frames
        self.lost = self._model.lost
        if self._capture is not None:
            for direction, frames in ((INBOUND, inputs), (OUTBOUND, outputs)):
                for k, port in enumerate(frames):
                    for frame in port:
                        self._capture.add(frame.time_ns, k, frame.data, direction)
            # Later steps' inputs were sent at or after this step's start.
            self._capture.write_until(start_ns)

    def terminate(self) -> None:
        self._close_capture()

    def _fail(self, message: str) -> None:
        self.log(message, Fmi2Status.error)
        self._failed = True
        self._close_capture()

    def _close_capture(self) -> None:
        if self._capture is not None:
            self._capture.close()
            self._capture = None

    def __del__(self) -> None:
        # fmi2FreeInstance and fmi2Reset drop the instance without terminate.
        self._close_capture()

    # -- variable access --------------------------------------------------
    # pythonfmu's accessors raise on a bad value reference (fmi2Fatal); these
    # log an Error and leave the instance usable.

    # -- FMU states (docs/network.md) -------------------------------------
    # The whole network: variables, output queues, PRNG, learned table,
    # counters, and the capture (its final length and the records still
    # pending).  qemufmu.fmustate's container, without a machine.

    def _get_fmu_state(self) -> FmuState | BadState:
        if self._failed:
            why = "the simulation ended with an error (see above); no state to take"
            self.log(f"fmi2GetFMUstate: {why}", Fmi2Status.error)
            return BadState(why)
        try:
            slave = {
                "variables": {v.name: getattr(self, v.name)
                              for v in self.vars.values()},
                "time": self._time,
                "initialized": self._initialized,
                "model": self._model.state() if self._model else None,
                "capture": self._capture.state() if self._capture else None,
            }
            return FmuState(self._identity(), json.loads(json.dumps(slave)), None)
        except Exception as e:  # a bug: report it, never raise into pythonfmu
            self.log(f"fmi2GetFMUstate: internal error {e!r}", Fmi2Status.error)
            return BadState(repr(e))

    def _set_fmu_state(self, state: object) -> None:
        try:
            self._restore(state)
        except StateError as e:
            self.log(f"fmi2SetFMUstate: {e}", Fmi2Status.error)
        except Exception as e:  # a bug: report it, never raise into pythonfmu
            self.log(f"fmi2SetFMUstate: internal error {e!r}", Fmi2Status.error)

    def _restore(self, state: object) -> None:
        """Make ``state`` this instance's state.  The capture is cut back to
        the length it had when the state was taken and written on from there
        (records after that point belonged to the abandoned future)."""
        if isinstance(state, BadState):
            raise StateError(f"cannot restore: {state.reason}")
        if not isinstance(state, FmuState) or state.machine is not None:
            raise StateError("cannot restore: that is not an FMU state of this FMU")
        if state.fmu != self._identity():
            raise StateError(f"cannot restore a state of FMU '{state.fmu}' "
                             f"into '{self._identity()}'")
        slave = state.slave
        model = None
        if slave["initialized"]:
            variables = slave["variables"]
            model = Model(LinkParams(
                ports=self.ports, delay=variables["delay"],
                bit_rate=variables["bit_rate"], loss=variables["loss"],
                seed=variables["seed"], queue_limit=variables["queue_limit"],
                learning=variables["learning"]))
            model.restore(slave["model"])
        # Records pending in the current capture belong to the abandoned
        # future: drop them; never write them.
        if self._capture is not None:
            self._capture.pending.clear()
            self._close_capture()
        for name, value in slave["variables"].items():
            setattr(self, name, value)
        self._time = slave["time"]
        self._model = model
        self._initialized = slave["initialized"]
        self._failed = False
        if slave["capture"] is not None:
            saved = slave["capture"]
            try:
                self._capture, warning = Capture.resume(
                    Path(self.capture_file), self.ports, self.bit_rate,
                    saved["offset"])
            except OSError as e:
                self._failed = True
                raise StateError(f"cannot reopen capture_file: {e}") from None
            if warning:
                self.log(warning, Fmi2Status.warning)
            self._capture.restore_pending(saved)
