"""What this project's pythonfmu slaves share: checked variable access and
the FMU identity a state is tied to.

Both slaves (QEMU's, qemufmu.slave, and the network's, network_slave.py)
refuse what FMI 2.0 forbids with an Error naming the variable, never with
an exception (the loader turns a logged Error into the call's status), and
serialize their states with qemufmu.fmustate's container.
"""

from __future__ import annotations

import re
from pathlib import Path

from pythonfmu import Boolean, Integer, Real, String
from pythonfmu.enums import Fmi2Causality, Fmi2Status

from .fmustate import BadState, FmuState, StateError

#: pythonfmu's variable class for each type name of the model description
KINDS = {"Real": Real, "Integer": Integer, "Boolean": Boolean, "String": String}


class CheckedSlave:
    """Mixin for an ``Fmi2Slave`` with ``vars``, ``log``, ``resources`` and
    the flags ``_initialized`` and ``_failed``."""

    _fmu_identity: str | None = None
    #: the master's logging settings (set_debug_logging); until it says, all
    _logging_on = True
    _log_categories: frozenset[str] | None = None     # None: every category

    def set_debug_logging(self, on: bool, categories: list[str]) -> None:
        """fmi2Instantiate's loggingOn and fmi2SetDebugLogging, from the
        loader (which filters what it hands on all the same)."""
        self._logging_on = on
        self._log_categories = frozenset(categories) if categories else None

    def logs(self, category: str) -> bool:
        """Whether the master takes OK-status messages of ``category``;
        errors and warnings always go.  Lets a slave skip building a
        message that would be dropped (a guest line per step)."""
        return self._logging_on and (self._log_categories is None
                                     or category in self._log_categories)

    def _refuse(self, var, value: object) -> str | None:
        """Why ``value`` may not be set into ``var``, or None; a slave's own
        rules beyond FMI's."""
        return None

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
            problem = self._refuse(var, value)
            if problem:
                self.log(problem, Fmi2Status.error)
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

    # -- FMU states -----------------------------------------------------------

    def _identity(self) -> str:
        """Model name and GUID: a state only restores into the same FMU."""
        if self._fmu_identity is None:
            guid = ""
            if self.resources:
                md = Path(self.resources).parent / "modelDescription.xml"
                try:
                    match = re.search(rb'guid="([^"]*)"', md.read_bytes()[:4096])
                except OSError:
                    match = None
                guid = match.group(1).decode() if match else ""
            self._fmu_identity = f"{type(self).__name__} {guid}".strip()
        return self._fmu_identity

    @staticmethod
    def _fmu_state_to_bytes(state: object) -> bytes:
        return state.to_bytes() if isinstance(state, FmuState | BadState) else b""

    @staticmethod
    def _fmu_state_from_bytes(data: bytes) -> FmuState | BadState:
        try:
            return FmuState.from_bytes(data)
        except StateError as e:
            return BadState(f"the serialized state is unusable: {e}")
