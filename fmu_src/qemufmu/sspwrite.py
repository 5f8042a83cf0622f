"""Write SSP 1.0 files: FMUs, their parameters and connections, in one zip.

Multi-ECU systems (several QEMU FMUs and a network FMU) are tedious to
write by hand; this writes the SystemStructure.ssd from a few Python
values, with each component's connectors typed from its FMU's model
description, as fmpy.ssp, libcosim and our own master (qemufmu.system)
read it.  Each FMU file is stored once, however many components use it.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

SSD_NS = "http://ssp-standard.org/SSP1/SystemStructureDescription"
SSC_NS = "http://ssp-standard.org/SSP1/SystemStructureCommon"
SSV_NS = "http://ssp-standard.org/SSP1/SystemStructureParameterValues"


@dataclass
class Element:
    """One component: an FMU file and the start values the SSD binds."""

    fmu: Path
    parameters: dict[str, object] = field(default_factory=dict)


def _variables(fmu: Path) -> dict[str, tuple[str, str]]:
    """Variable name -> (type, causality) from the FMU's model description."""
    from fmpy import read_model_description

    md = read_model_description(str(fmu), validate=False)
    return {v.name: (v.type, v.causality) for v in md.modelVariables}


def _value(kind: str, value: object) -> str:
    if kind == "Boolean":
        return "true" if value else "false"
    return str(value)


def write_ssp(out: Path, name: str, elements: dict[str, Element],
              connections: list[tuple[str, str, str, str]],
              stop_time: float = 1.0) -> Path:
    """Write ``out``: ``elements`` by component name, ``connections`` as
    (from component, variable, to component, variable)."""
    types = {fmu: _variables(fmu) for fmu in {e.fmu for e in elements.values()}}
    used: dict[str, set[str]] = {c: set() for c in elements}
    for a, va, b, vb in connections:
        for comp, var in ((a, va), (b, vb)):
            if comp not in elements or var not in types[elements[comp].fmu]:
                raise ValueError(f"connection end {comp}.{var} names no "
                                 "variable of a component")
            used[comp].add(var)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<ssd:SystemStructureDescription version="1.0" name={quoteattr(name)}',
             f'    xmlns:ssd="{SSD_NS}" xmlns:ssc="{SSC_NS}" xmlns:ssv="{SSV_NS}">',
             f'  <ssd:System name={quoteattr(name)}>', '    <ssd:Elements>']
    for comp, element in elements.items():
        variables = types[element.fmu]
        lines.append(f'      <ssd:Component name={quoteattr(comp)} '
                     'type="application/x-fmu-sharedlibrary" '
                     f'source="resources/{element.fmu.name}">')
        lines.append('        <ssd:Connectors>')
        for var in sorted(used[comp]):
            kind, causality = variables[var]
            lines.append(f'          <ssd:Connector name={quoteattr(var)} '
                         f'kind="{causality}"><ssc:{kind}/></ssd:Connector>')
        lines.append('        </ssd:Connectors>')
        if element.parameters:
            lines += ['        <ssd:ParameterBindings><ssd:ParameterBinding>',
                      '          <ssd:ParameterValues>',
                      '            <ssv:ParameterSet version="1.0" '
                      f'name={quoteattr(comp)}>',
                      '              <ssv:Parameters>']
            for var, value in element.parameters.items():
                if var not in variables:
                    raise ValueError(f"{comp} has no parameter {var!r}")
                kind = variables[var][0]
                lines.append(f'                <ssv:Parameter name={quoteattr(var)}>'
                             f'<ssv:{kind} value={quoteattr(_value(kind, value))}/>'
                             '</ssv:Parameter>')
            lines += ['              </ssv:Parameters>',
                      '            </ssv:ParameterSet>',
                      '          </ssd:ParameterValues>',
                      '        </ssd:ParameterBinding></ssd:ParameterBindings>']
        lines.append('      </ssd:Component>')
    lines += ['    </ssd:Elements>', '    <ssd:Connections>']
    for a, va, b, vb in connections:
        lines.append(f'      <ssd:Connection startElement={quoteattr(a)} '
                     f'startConnector={quoteattr(va)} endElement={quoteattr(b)} '
                     f'endConnector={quoteattr(vb)}/>')
    lines += ['    </ssd:Connections>', '  </ssd:System>',
              f'  <ssd:DefaultExperiment startTime="0" stopTime="{stop_time}"/>',
              '</ssd:SystemStructureDescription>', '']
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as ssp:
        ssp.writestr("SystemStructure.ssd", "\n".join(lines))
        for fmu in sorted({e.fmu for e in elements.values()}):
            ssp.write(fmu, f"resources/{fmu.name}")
    return out
