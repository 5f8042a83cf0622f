#!/usr/bin/env python3
"""Build the closed-loop demo: the ECU FMU, the plant FMU and the SSP file.

Writes dist/PiSpeedController.fmu (build_fmu.py --config pi_speed.toml),
dist/DcMotor.fmu (pythonfmu) and dist/closed_loop.ssp holding both; and the
same loop with the controller as a Linux program: dist/PiSpeedLinux.fmu
(pi_speed_linux.toml) in dist/closed_loop_linux.ssp.
"""

from __future__ import annotations

import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DIST = REPO / "dist"
sys.path.insert(0, str(REPO))

import build_fmu  # noqa: E402


def build_plant() -> Path:
    from pythonfmu.builder import FmuBuilder

    with tempfile.TemporaryDirectory() as tmp:
        # Every variable of the plant is registered, so pythonfmu's default
        # state (all variables, JSON when serialized) is its whole state.
        raw = FmuBuilder.build_FMU(HERE / "dc_motor.py", dest=Path(tmp) / "raw.fmu",
                                   needsExecutionTool=False,
                                   canGetAndSetFMUstate=True,
                                   canSerializeFMUstate=True)
        out = DIST / "DcMotor.fmu"
        build_fmu.repack(raw, out, {"speed": "rad/s", "setpoint": "rad/s",
                                    "voltage": "V", "time_constant": "s",
                                    "step_time": "s", "step_value": "rad/s"})
    return out


def build_ssp(name: str, ssd: Path, fmus: list[Path]) -> Path:
    out = DIST / f"{name}.ssp"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as ssp:
        ssp.write(ssd, "SystemStructure.ssd")
        for fmu in fmus:
            ssp.write(fmu, f"resources/{fmu.name}")
    return out


def main() -> int:
    try:
        ecu = build_fmu.build(None, HERE / "pi_speed.toml")
        linux = build_fmu.build(None, HERE / "pi_speed_linux.toml")
    except build_fmu.BuildError as e:
        print(f"build.py: {e}", file=sys.stderr)
        return 1
    plant = build_plant()
    ssp = build_ssp("closed_loop", HERE / "SystemStructure.ssd", [ecu, plant])
    ssp_linux = build_ssp("closed_loop_linux", HERE / "SystemStructure_linux.ssd",
                          [linux, plant])
    for path in (ecu, linux, plant, ssp, ssp_linux):
        print(f"wrote {path.relative_to(REPO)} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
