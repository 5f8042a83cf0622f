"""Signal FMUs (build_fmu.py --config): typed variables as lines on a channel.

The guest here is firmware/arm/lineecho.c, which sends back every line it
receives; console_in therefore lets a test put any line in the guest's mouth.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fmpy import extract

from fmi_helpers import Instance, qemu_children
from qemufmu.signals import Signal

REPO = Path(__file__).resolve().parent.parent
STEP = 1e-3

CONFIG = """
[fmu]
model_name = "EchoEcu"
description = "line echo firmware"
guest_image = "{image}"

[[input]]
name = "gain"
type = "Real"
unit = "V"
start = 2.5

[[output]]
name = "value"
type = "Real"
unit = "rad/s"
start = -1.0

[[output]]
name = "count"
type = "Integer"
start = 0

[[output]]
name = "flag"
type = "Boolean"
start = false
"""


def build(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    config = tmp_path / "ecu.toml"
    config.write_text(text)
    return subprocess.run([sys.executable, str(REPO / "build_fmu.py"), "--config",
                           str(config), "-o", str(tmp_path / "ecu.fmu")],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def echo_fmu(guests, tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("echo_fmu")
    proc = build(tmp, CONFIG.format(image=guests / "arm-lineecho.elf"))
    assert proc.returncode == 0, proc.stderr
    fmu = tmp / "ecu.fmu"
    return fmu, Path(extract(str(fmu), str(tmp / "unzipped")))


def test_model_description_declares_the_signals(echo_fmu):
    from fmpy import read_model_description

    md = read_model_description(str(echo_fmu[0]))
    assert md.coSimulation.modelIdentifier == "EchoEcu"
    v = {x.name: x for x in md.modelVariables}
    assert (v["gain"].causality, v["gain"].type, v["gain"].unit,
            v["gain"].start) == ("input", "Real", "V", "2.5")
    assert (v["value"].causality, v["value"].unit) == ("output", "rad/s")
    assert (v["count"].type, v["flag"].type) == ("Integer", "Boolean")
    proc = subprocess.run([str(Path(sys.executable).parent / "fmpy"), "validate",
                           str(echo_fmu[0])], capture_output=True, text=True)
    assert "No problems found" in proc.stdout, proc.stdout


def test_guest_lines_set_outputs_and_bad_lines_are_logged(echo_fmu):
    ecu = Instance(*echo_fmu)
    ecu.start()
    t = 0.0

    def step(text: str = "") -> None:
        nonlocal t
        ecu.set("console_in", text)
        ecu.slave.doStep(t, STEP)
        t += STEP

    try:
        step()
        assert (ecu.get("value"), ecu.get("count"), ecu.get("flag")) == (-1.0, 0, 0)
        step("value=1.25\ncount=-7\nflag=1\n")
        assert (ecu.get("value"), ecu.get("count"), ecu.get("flag")) == (1.25, -7, 1)
        bad = ["nosuch=1", "count=abc", "count=99999999999", "flag=2",
               "value=nan", "value=" + "1" * 130]
        step("\n".join(bad) + "\n")
        assert (ecu.get("value"), ecu.get("count"), ecu.get("flag")) == (1.25, -7, 1)
        log = ecu.log_text()
        for line, why in zip(bad, ["names no output signal", "bad value for Integer",
                                   "does not fit", "is not 0 or 1",
                                   "not a finite number", "longer than 120 bytes"],
                             strict=True):
            assert f"t=0.003000 s: guest line {line[:120]!r}" in log, line
            assert why in log
        step("plain console text\n")  # not a signal line: just console
        assert "plain console text" in ecu.log_text()
        assert ecu.get("value") == 1.25
    finally:
        ecu.close()
    assert not qemu_children()


def test_inputs_are_sent_when_they_change(echo_fmu):
    ecu = Instance(*echo_fmu)
    ecu.start()
    sent = []
    try:
        for k, gain in enumerate([2.5, 2.5, 0.1 + 0.2, 0.1 + 0.2, -1e-300]):
            ecu.set("gain", gain)
            ecu.slave.doStep(k * STEP, STEP)
            sent.append(ecu.get("console"))  # the echo shows what the guest got
    finally:
        ecu.close()
    assert sent == ["gain=2.5\n", "", f"gain={0.1 + 0.2!r}\n", "", "gain=-1e-300\n"]
    assert float(sent[2].split("=")[1]) == 0.1 + 0.2  # exact round trip


@pytest.mark.parametrize("change,message", [
    ('model_name = "EchoEcu"', 'model_name = "9lives"'),
    ('type = "Integer"', 'type = "Complex"'),
    ('name = "count"', 'name = "value"'),
    ('name = "count"', 'name = "qemu_time"'),
    ('name = "count"', 'name = "bad name"'),
    ('unit = "V"', 'unit = "V"\nspeed = 3'),
    ('start = false', 'start = "maybe"'),
])
def test_bad_configurations_fail_the_build_with_one_line(tmp_path, guests, change,
                                                         message):
    text = CONFIG.format(image=guests / "arm-lineecho.elf").replace(change, message)
    proc = build(tmp_path, text)
    assert proc.returncode == 1
    assert proc.stderr.startswith("build_fmu.py: ")
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "ecu.fmu").exists()


def test_missing_guest_image_fails_the_build(tmp_path):
    proc = build(tmp_path, CONFIG.format(image=tmp_path / "missing.elf"))
    assert proc.returncode == 1
    assert "guest image" in proc.stderr and "missing" in proc.stderr


@pytest.mark.parametrize("value", [0.0, -0.0, 1.5, 0.1 + 0.2, 1e-300, 2.5e20,
                                   -123456.789, 5e-324, 1.7976931348623157e308])
def test_real_lines_round_trip_exactly(value):
    signal = Signal("x", "Real", "input")
    name, text = signal.format(value).rstrip("\n").split("=")
    assert name == "x" and signal.parse(text) == value
