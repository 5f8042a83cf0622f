#!/usr/bin/env python3
"""Package QEMU, its firmware files, a guest and the slave as an FMI 2.0 FMU.

Without --config: dist/qemu.fmu, with the embedded default firmware.
With --config my_ecu.toml: a virtual-ECU FMU whose named inputs and outputs
travel to and from the firmware as `name=value` lines (docs/signals.md),
with the Ethernet ports its [[ethernet]] tables declare (docs/network.md).
With --network [--ports N]: dist/Network.fmu, the network FMU that connects
Ethernet ports (docs/network.md); it needs no QEMU.

Needs `make qemu firmware` first (the Makefile's `fmu` target does both).

The FMU's binary (binaries/linux64/MODEL.so) is our loader shim
(fmu_src/loader), which starts a Python when the master has none and calls
the slave class itself; pythonfmu is used only here, to write the model
description, and as the Python package the slave imports.  QEMU carries
its non-glibc shared libraries, so the FMU needs only glibc and a
libpython from the host.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import uuid
import zipfile
import zlib
from pathlib import Path
from xml.etree import ElementTree as ET

REPO = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO / "fmu_src"))
sys.path.insert(0, str(REPO))

from buildlib.native import (  # noqa: E402
    NativeBuildError,
    build_loader,
    make_self_contained,
)
from qemufmu.channels import ethernet as ports  # noqa: E402
from qemufmu.signals import SignalConfigError, SignalSet, signals_from_config  # noqa: E402
from qemufmu.slave import PARAMETERS, RESERVED  # noqa: E402

QEMU_BUILD = REPO / "build" / "qemu"
DEFAULT_GUEST = REPO / "firmware" / "build" / "arm-default.elf"
SHIPPED_SYSTEMS = ("arm", "x86_64")
MODEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
SCRIPT = '''"""{model}: an FMU built by qemu-fmu's build_fmu.py from {config}."""

from qemufmu.slave import QemuSlave as Fmi2Slave


class {model}(Fmi2Slave):
    """{description}"""

    description = {description!r}
    parameter_defaults = {defaults!r}

    def __init__(self, **kwargs) -> None:
        # Keeps this module's namespace referenced (pythonfmu loader quirk).
        super().__init__(**kwargs)
'''


class BuildError(Exception):
    """Something the user must fix before the FMU can be built."""


def stage_qemu(tmp: Path) -> Path:
    """QEMU binaries and data files, laid out as QEMU expects to find them."""
    qemu = tmp / "qemu"
    (qemu / "bin").mkdir(parents=True)
    for system in SHIPPED_SYSTEMS:
        src = QEMU_BUILD / "bin" / f"qemu-system-{system}"
        if not src.exists():
            raise BuildError(f"{src} missing; run `make qemu`")
        subprocess.run(["strip", "-o", str(qemu / "bin" / src.name), str(src)],
                       check=True)
    make_self_contained(sorted((qemu / "bin").iterdir()), qemu / "lib")
    shutil.copytree(QEMU_BUILD / "share", qemu / "share")
    return qemu


def stage_binaries(tmp: Path) -> Path:
    """binaries/linux64: the loader shim, which needs nothing but glibc.

    pythonfmu's export library is not shipped: it corrupts the heap at
    every process exit (docs/fmu-loader.md).
    """
    linux64 = tmp / "linux64"
    linux64.mkdir(parents=True)
    build_loader(linux64 / "loader.so")
    return linux64


def stage_guest(tmp: Path, image: Path, initrd: Path | None = None) -> Path:
    """The guest image (and a Linux guest's initrd) where the slave looks."""
    guest = tmp / "guest"
    guest.mkdir()
    for src, name, what in ((image, "default.elf", "guest image"),
                            (initrd, "initrd", "initrd")):
        if src is None:
            continue
        if not src.is_file():
            raise BuildError(f"{what} {src} missing; run `make firmware`")
        shutil.copy2(src, guest / name)
    return guest


def load_config(path: Path) -> tuple[dict, SignalSet, list[ports.PortSpec]]:
    """The [fmu] table (with resolved paths), the signals and the Ethernet
    ports of a TOML file."""
    try:
        config = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise BuildError(f"{path}: {e}") from None
    fmu = config.get("fmu")
    if not isinstance(fmu, dict):
        raise BuildError(f"{path}: missing [fmu] table")
    unknown = set(fmu) - {"model_name", "description", "guest_image", "machine",
                          "qemu_system", "channel", "initrd", "kernel_cmdline"}
    if unknown:
        raise BuildError(f"{path}: [fmu] has unknown keys {sorted(unknown)}")
    unknown = set(config) - {"fmu", "input", "output", "ethernet"}
    if unknown:
        raise BuildError(f"{path}: unknown tables {sorted(unknown)}")
    if not MODEL_NAME.fullmatch(fmu.get("model_name", "")):
        raise BuildError(f"{path}: [fmu] model_name must be an identifier "
                         f"({MODEL_NAME.pattern})")
    if "guest_image" not in fmu:
        raise BuildError(f"{path}: [fmu] guest_image is required")
    for key in ("guest_image", "initrd", "kernel_cmdline"):
        if key in fmu and not isinstance(fmu[key], str):
            raise BuildError(f"{path}: [fmu] {key} must be a string")
    fmu["guest_image"] = (path.parent / fmu["guest_image"]).resolve()
    if "initrd" in fmu:
        fmu["initrd"] = (path.parent / fmu["initrd"]).resolve()
    try:
        signals = signals_from_config(config, RESERVED)
    except SignalConfigError as e:
        raise BuildError(f"{path}: {e}") from None
    taken = RESERVED | {s.name for s in signals.inputs + signals.outputs} | {
        "console", signals.channel}
    try:
        specs = ports.ports_from_config(config, taken)
    except ValueError as e:
        raise BuildError(f"{path}: {e}") from None
    return fmu, signals, specs


def fix_model_description(xml: bytes, digest: str, units: dict[str, str]) -> bytes:
    """Make the XML pass `fmpy validate` and carry units and a stable GUID."""
    root = ET.fromstring(xml)
    root.set("guid", "{" + str(uuid.uuid5(uuid.NAMESPACE_URL, digest)) + "}")
    root.attrib.pop("generationDateAndTime", None)
    unit_defs = ET.Element("UnitDefinitions")
    for unit in sorted(set(units.values())):
        defined = ET.SubElement(unit_defs, "Unit", name=unit)
        if unit == "s":
            ET.SubElement(defined, "BaseUnit", s="1")
    anchor = root.find("LogCategories")
    if anchor is None:
        anchor = root.find("ModelVariables")
    root.insert(list(root).index(anchor), unit_defs)
    outputs = []
    for index, var in enumerate(root.find("ModelVariables"), start=1):
        if var.get("name") in units:
            var.find("Real").set("unit", units[var.get("name")])
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


def _entries(raw: Path, linux64: Path) -> dict[str, tuple[bytes, int]]:
    """Name -> (data, unix mode) of every file the FMU holds.

    pythonfmu's binaries are replaced: linux64 gets the loader shim under
    the model's name, alone; win64 goes, since the Linux QEMU inside cannot
    run there.
    """
    entries = {}
    with zipfile.ZipFile(raw) as src:
        model_binary = None
        for info in src.infolist():
            if info.filename.startswith("binaries/"):
                if info.filename.startswith("binaries/linux64/"):
                    model_binary = info.filename
                continue
            entries[info.filename] = (src.read(info), info.external_attr >> 16)
    if model_binary is None:
        raise BuildError("pythonfmu wrote no linux64 binary")
    entries[model_binary] = ((linux64 / "loader.so").read_bytes(), 0o100755)
    return entries


def repack(raw: Path, out: Path, units: dict[str, str]) -> None:
    """Rewrite pythonfmu's archive: our binaries, fixed XML and dates, compressed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qemu-fmu-native-") as tmp:
        entries = _entries(raw, stage_binaries(Path(tmp)))
    digest = "".join(f"{name}:{zlib.crc32(data)}"
                     for name, (data, _) in sorted(entries.items())
                     if name != "modelDescription.xml")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for name, (data, mode) in sorted(entries.items()):
            if name == "modelDescription.xml":
                data = fix_model_description(data, digest, units)
            entry = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            entry.external_attr = mode << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(entry, data)


def build(out: Path | None, config_path: Path | None) -> Path:
    """Build the FMU; return where it was written."""
    from pythonfmu.builder import FmuBuilder

    units = {"qemu_time": "s", "step_timeout": "s", "next_event_time": "s"}
    with tempfile.TemporaryDirectory(prefix="qemu-fmu-build-") as tmpd:
        tmp = Path(tmpd)
        project = [REPO / "fmu_src" / "qemufmu", stage_qemu(tmp / "stage")]
        if config_path is None:
            script = REPO / "fmu_src" / "qemu_slave.py"
            project.append(stage_guest(tmp / "stage", DEFAULT_GUEST))
            out = out or REPO / "dist" / "qemu.fmu"
        else:
            fmu, signals, specs = load_config(config_path)
            model = fmu["model_name"]
            project.append(stage_guest(tmp / "stage", fmu["guest_image"],
                                       fmu.get("initrd")))
            (tmp / "stage" / "signals.json").write_text(signals.to_json())
            project.append(tmp / "stage" / "signals.json")
            # Always written: without it an FMU has qemu.fmu's eth0 and eth1.
            (tmp / "stage" / ports.RESOURCE).write_text(ports.specs_to_json(specs))
            project.append(tmp / "stage" / ports.RESOURCE)
            defaults = {k: fmu[k] for k in ("machine", "qemu_system", "kernel_cmdline")
                        if k in fmu and k in PARAMETERS}
            script = tmp / f"{model.lower()}_fmu.py"
            script.write_text(SCRIPT.format(
                model=model, config=config_path.name, defaults=defaults,
                description=fmu.get("description", f"{model} firmware on QEMU")))
            units.update({s.name: s.unit for s in signals.inputs + signals.outputs
                          if s.unit})
            out = out or REPO / "dist" / f"{model}.fmu"
        raw = FmuBuilder.build_FMU(
            script, dest=tmp / "raw.fmu", project_files=project,
            canHandleVariableCommunicationStepSize=True,
            canBeInstantiatedOnlyOncePerProcess=False, needsExecutionTool=False,
            canGetAndSetFMUstate=True, canSerializeFMUstate=True)
        repack(raw, out, units)
    return out


def stage_dpkt(tmp: Path) -> Path:
    """dpkt (the capture's pcapng writer) and its licence, for resources/:
    C hosts run the FMU's Python isolated, without site-packages."""
    import importlib.metadata

    import dpkt

    dest = tmp / "dpkt"
    shutil.copytree(Path(dpkt.__file__).parent, dest,
                    ignore=shutil.ignore_patterns("__pycache__"))
    licence = importlib.metadata.distribution("dpkt").read_text("LICENSE")
    if licence:
        (dest / "LICENSE").write_text(licence)
    return dest


def build_network(out: Path | None, ports: int = 2) -> Path:
    """Build the network FMU with ``ports`` ports; return where it was written."""
    from pythonfmu.builder import FmuBuilder

    if ports < 2:
        raise BuildError(f"--ports {ports}: a network needs 2 or more ports")
    out = out or REPO / "dist" / "Network.fmu"
    with tempfile.TemporaryDirectory(prefix="qemu-fmu-build-") as tmpd:
        stage = Path(tmpd) / "stage"
        stage.mkdir()
        (stage / "network.json").write_text(json.dumps({"ports": ports}) + "\n")
        project = [REPO / "fmu_src" / "qemufmu", stage_dpkt(stage),
                   stage / "network.json"]
        raw = FmuBuilder.build_FMU(
            REPO / "fmu_src" / "network_slave.py", dest=Path(tmpd) / "raw.fmu",
            project_files=project,
            canHandleVariableCommunicationStepSize=True,
            canBeInstantiatedOnlyOncePerProcess=False, needsExecutionTool=False,
            canGetAndSetFMUstate=True, canSerializeFMUstate=True)
        repack(raw, out, {"delay": "s", "bit_rate": "bit/s"})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="The signal configuration format is described in docs/signals.md.")
    parser.add_argument("-o", "--output", type=Path,
                        help="where to write the FMU (default: dist/qemu.fmu, "
                             "or dist/MODEL_NAME.fmu with --config)")
    parser.add_argument("--config", type=Path,
                        help="TOML file declaring the FMU's signals and guest")
    parser.add_argument("--network", action="store_true",
                        help="build the network FMU (dist/Network.fmu) instead")
    parser.add_argument("--ports", type=int, default=2,
                        help="the network FMU's ports (default 2)")
    args = parser.parse_args()
    if args.network and args.config:
        parser.error("--network and --config build different FMUs; give one")
    try:
        if args.network:
            out = build_network(args.output, args.ports)
        else:
            out = build(args.output, args.config)
    except (BuildError, NativeBuildError) as e:
        print(f"build_fmu.py: {e}", file=sys.stderr)
        return 1
    shown = out.relative_to(REPO) if out.resolve().is_relative_to(REPO) else out
    print(f"wrote {shown} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
