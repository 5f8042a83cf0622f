#!/usr/bin/env python3
"""Package QEMU, its firmware files, the default guest and the slave as qemu.fmu.

Usage: build_fmu.py [-o dist/qemu.fmu]

Needs `make qemu firmware` first (the Makefile's `fmu` target does both).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import uuid
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

REPO = Path(__file__).resolve().parent
QEMU_BUILD = REPO / "build" / "qemu"
DEFAULT_GUEST = REPO / "firmware" / "build" / "arm-default.elf"
SHIPPED_SYSTEMS = ("arm", "x86_64")
SECONDS = {"qemu_time", "step_timeout"}


def stage(tmp: Path) -> list[Path]:
    """Lay out what goes under resources/: QEMU, its data files, the guest."""
    qemu = tmp / "qemu"
    (qemu / "bin").mkdir(parents=True)
    for system in SHIPPED_SYSTEMS:
        src = QEMU_BUILD / "bin" / f"qemu-system-{system}"
        if not src.exists():
            sys.exit(f"build_fmu.py: {src} missing; run `make qemu`")
        dst = qemu / "bin" / src.name
        subprocess.run(["strip", "-o", str(dst), str(src)], check=True)
    shutil.copytree(QEMU_BUILD / "share", qemu / "share")
    guest = tmp / "guest"
    guest.mkdir()
    if not DEFAULT_GUEST.exists():
        sys.exit(f"build_fmu.py: {DEFAULT_GUEST} missing; run `make firmware`")
    shutil.copy2(DEFAULT_GUEST, guest / "default.elf")
    return [REPO / "fmu_src" / "qemufmu", qemu, guest]


def fix_model_description(xml: bytes, fmu_bytes_digest: str) -> bytes:
    """Make the XML pass `fmpy validate` and carry units and a stable GUID."""
    root = ET.fromstring(xml)
    root.set("guid", "{" + str(uuid.uuid5(uuid.NAMESPACE_URL, fmu_bytes_digest)) + "}")
    root.attrib.pop("generationDateAndTime", None)
    units = ET.Element("UnitDefinitions")
    ET.SubElement(ET.SubElement(units, "Unit", name="s"), "BaseUnit", s="1")
    pos = list(root).index(root.find("ModelVariables"))
    if root.find("LogCategories") is not None:
        pos = list(root).index(root.find("LogCategories"))
    root.insert(pos, units)
    outputs = []
    for index, var in enumerate(root.find("ModelVariables"), start=1):
        if var.get("name") in SECONDS:
            var.find("Real").set("unit", "s")
        if var.get("causality") == "output":
            outputs.append(index)
    structure = root.find("ModelStructure")
    initial = structure.find("InitialUnknowns")
    if initial is None:
        initial = ET.SubElement(structure, "InitialUnknowns")
    for index in outputs:
        ET.SubElement(initial, "Unknown", index=str(index))
    ET.indent(root)
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def build(out: Path) -> Path:
    from pythonfmu.builder import FmuBuilder

    with tempfile.TemporaryDirectory(prefix="qemu-fmu-build-") as tmpd:
        tmp = Path(tmpd)
        project = stage(tmp / "stage")
        raw = FmuBuilder.build_FMU(
            REPO / "fmu_src" / "qemu_slave.py", dest=tmp / "raw.fmu",
            project_files=project,
            canHandleVariableCommunicationStepSize=True,
            canBeInstantiatedOnlyOncePerProcess=False,
            needsExecutionTool=False)
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(raw) as src, zipfile.ZipFile(
                out, "w", zipfile.ZIP_DEFLATED) as dst:
            digest = uuid.uuid5(uuid.NAMESPACE_OID, "".join(
                f"{i.filename}:{i.CRC}" for i in src.infolist()
                if i.filename != "modelDescription.xml")).hex
            for info in sorted(src.infolist(), key=lambda i: i.filename):
                data = src.read(info)
                if info.filename == "modelDescription.xml":
                    data = fix_model_description(data, digest)
                entry = zipfile.ZipInfo(info.filename, date_time=(2026, 1, 1, 0, 0, 0))
                entry.external_attr = info.external_attr
                entry.compress_type = zipfile.ZIP_DEFLATED
                dst.writestr(entry, data)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path,
                        default=REPO / "dist" / "qemu.fmu",
                        help="where to write the FMU (default: dist/qemu.fmu)")
    args = parser.parse_args()
    out = build(args.output)
    print(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out} "
          f"({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
