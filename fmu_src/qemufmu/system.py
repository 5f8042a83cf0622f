"""What a sweep runs: one FMU, or the FMUs and connections of an SSP file.

Reads model descriptions and the System Structure Definition only; running
them is ``cosim``'s job.  Used by sweeps, never by the FMU's slave.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from xml.etree import ElementTree as ET

SSD = "{http://ssp-standard.org/SSP1/SystemStructureDescription}"
SSV = "{http://ssp-standard.org/SSP1/SystemStructureParameterValues}"
TYPES = ("Real", "Integer", "Boolean", "String")
SETTABLE = ("parameter", "input")


class InputError(Exception):
    """The SSP or FMU cannot be swept (unreadable, unsupported feature)."""


@dataclass(frozen=True)
class Variable:
    name: str
    type: str          # Real, Integer, Boolean or String
    causality: str
    reference: int


@dataclass
class Component:
    """One FMU instance of the system."""

    name: str
    source: str        # path inside the SSP, or the FMU file's name
    guid: str
    model_identifier: str
    variables: dict[str, Variable]
    # Start values the SSD binds to this component (before a case's own).
    bound: dict[str, object] = field(default_factory=dict)


@dataclass
class System:
    """Components by name, connections as (from, var, to, var)."""

    kind: str          # "ssp" or "fmu"
    components: dict[str, Component]
    connections: list[tuple[str, str, str, str]]

    def column(self, component: str, variable: str) -> str:
        """The CASES/results column naming ``variable`` of ``component``."""
        return variable if self.kind == "fmu" else f"{component}.{variable}"

    def lookup(self, column: str) -> tuple[Component, Variable]:
        """The component and variable a column names; KeyError says why not."""
        if self.kind == "fmu":
            (component,) = self.components.values()
            name = column
        else:
            comp, dot, name = column.partition(".")
            if not dot or comp not in self.components:
                raise KeyError(f"names no component of the SSP (expected "
                               f"COMPONENT.VARIABLE with COMPONENT one of "
                               f"{', '.join(sorted(self.components))})")
            component = self.components[comp]
        if name not in component.variables:
            where = "the FMU" if self.kind == "fmu" else f"component {component.name}"
            raise KeyError(f"{where} has no variable {name!r}")
        return component, component.variables[name]

    def outputs(self) -> list[str]:
        """Every output of every component, as result columns."""
        return [self.column(c.name, v.name) for c in self.components.values()
                for v in c.variables.values() if v.causality == "output"]


def _component(fmu: Path | zipfile.ZipFile, inner: str | None, name: str,
               source: str) -> Component:
    from fmpy import read_model_description

    if inner is None:
        md = read_model_description(str(fmu), validate=False)
    else:
        # fmpy reads a model description from a file-like zip member.
        with fmu.open(inner) as member:
            md = read_model_description(io.BytesIO(member.read()), validate=False)
    if md.coSimulation is None:
        raise InputError(f"{source}: not a co-simulation FMU")
    if md.fmiVersion != "2.0":
        raise InputError(f"{source}: FMI {md.fmiVersion}; only FMI 2.0 is swept")
    variables = {v.name: Variable(v.name, v.type, v.causality, v.valueReference)
                 for v in md.modelVariables if v.type in TYPES}
    return Component(name, source, md.guid, md.coSimulation.modelIdentifier,
                     variables)


def _typed(kind: str, text: str) -> object:
    if kind == "Real":
        return float(text)
    if kind == "Integer":
        return int(text)
    if kind == "Boolean":
        return text.strip().lower() in ("true", "1")
    return text


def _bindings(ssp: zipfile.ZipFile, element: ET.Element, component: Component,
              where: str) -> None:
    """Apply the component's ssd:ParameterBindings (inline or .ssv files)."""
    for binding in element.iter(f"{SSD}ParameterBinding"):
        prefix = binding.get("prefix", "")
        if binding.get("source"):
            path = str(PurePosixPath(binding.get("source")))
            try:
                root = ET.fromstring(ssp.read(path))
            except (KeyError, ET.ParseError) as e:
                raise InputError(f"{where}: parameter binding {path}: {e}") from None
        else:
            root = binding.find(f"{SSD}ParameterValues")
            if root is None:
                continue
        for param in root.iter(f"{SSV}Parameter"):
            name = param.get("name", "")
            if prefix and name.startswith(prefix):
                name = name[len(prefix):]
            var = component.variables.get(name)
            if var is None:
                raise InputError(f"{where}: parameter binding names no variable "
                                   f"{name!r} of component {component.name}")
            for kind in TYPES:
                typed = param.find(f"{SSV}{kind}")
                if typed is not None:
                    component.bound[name] = _typed(var.type, typed.get("value", ""))
                    break


def _read_ssp(path: Path) -> System:
    try:
        ssp = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise InputError(f"{path}: {e}") from None
    with ssp:
        try:
            root = ET.fromstring(ssp.read("SystemStructure.ssd"))
        except (KeyError, ET.ParseError) as e:
            raise InputError(f"{path}: SystemStructure.ssd: {e}") from None
        system = root.find(f"{SSD}System")
        if system is None:
            raise InputError(f"{path}: the SSD has no ssd:System")
        elements = system.find(f"{SSD}Elements")
        components: dict[str, Component] = {}
        for element in (elements if elements is not None else []):
            if element.tag != f"{SSD}Component":
                raise InputError(f"{path}: nested systems are not supported "
                                   f"({element.tag.split('}')[-1]})")
            name, source = element.get("name", ""), element.get("source", "")
            inner = str(PurePosixPath(source))
            if inner not in ssp.namelist():
                raise InputError(f"{path}: component {name}: {source} is not "
                                   "inside the SSP file")
            components[name] = _component(ssp, inner, name, source)
            _bindings(ssp, element, components[name], str(path))
        connections = []
        for conn in system.iter(f"{SSD}Connection"):
            ends = (conn.get("startElement"), conn.get("startConnector"),
                    conn.get("endElement"), conn.get("endConnector"))
            if ends[0] is None or ends[2] is None:
                raise InputError(f"{path}: connections to the system's own "
                                   "connectors are not supported")
            for comp, var in (ends[:2], ends[2:]):
                if comp not in components or var not in components[comp].variables:
                    raise InputError(f"{path}: a connection names {comp}.{var}, "
                                       "which no component has")
            connections.append(ends)
    if not components:
        raise InputError(f"{path}: the SSD has no components")
    return System("ssp", components, connections)


def read_system(path: Path) -> System:
    """The system in an ``.ssp`` or ``.fmu`` file."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix == ".ssp":
        return _read_ssp(path)
    if path.suffix == ".fmu":
        try:
            component = _component(path, None, path.stem, path.name)
        except InputError:
            raise
        except Exception as e:  # fmpy raises plain exceptions on bad files
            raise InputError(f"{path}: {e}") from None
        return System("fmu", {component.name: component}, [])
    raise InputError(f"{path}: expected an .ssp or .fmu file")
