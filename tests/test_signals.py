"""Signal FMUs (build_fmu.py --config): typed variables as lines on a channel.

The guest here is firmware/arm/lineecho.c, which sends back every line it
receives; console_in therefore lets a test put any line in the guest's mouth.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from fmpy import extract

from fmi_helpers import Instance, qemu_children
from helpers import REPO
from qemufmu.signals import Signal

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
                          capture_output=True, text=True, timeout=100)


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
                           str(echo_fmu[0])], capture_output=True, text=True,
                          timeout=60)
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


@pytest.mark.parametrize("change,message,names", [
    ('model_name = "EchoEcu"', 'model_name = "9lives"',
     "[fmu] model_name must be an identifier"),
    ('type = "Integer"', 'type = "Complex"',
     "[[output]] #2: type 'Complex' is not one of Real, Integer, Boolean"),
    ('name = "count"', 'name = "value"', "[[output]] #2: name 'value' is already used"),
    ('name = "count"', 'name = "qemu_time"',
     "[[output]] #2: name 'qemu_time' is already used"),
    ('name = "count"', 'name = "bad name"',
     "[[output]] #2: name 'bad name' must match"),
    ('unit = "V"', 'unit = "V"\nspeed = 3', "[[input]] #1: unknown keys ['speed']"),
    ('start = false', 'start = "maybe"', "[[output]] #3: start: 'maybe' is not 0 or 1"),
    ('name = "count"\ntype = "Integer"', 'name = "count"\ntype = "Integer"\nunit = "1"',
     "[[output]] #2: only Real signals have units"),
])
def test_bad_configurations_fail_the_build_with_one_line(tmp_path, guests, change,
                                                         message, names):
    text = CONFIG.format(image=guests / "arm-lineecho.elf").replace(change, message)
    proc = build(tmp_path, text)
    assert proc.returncode == 1
    assert proc.stderr.startswith("build_fmu.py: ")
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert names in proc.stderr, proc.stderr
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
    # Bit for bit: == would take -0.0 for 0.0.
    assert name == "x"
    assert struct.pack("<d", signal.parse(text)) == struct.pack("<d", value)


# -- the line protocol's edges, typed inputs, and the [fmu] keys -------------

def _stepper(ecu: Instance):
    t = 0.0

    def step(text: str = "") -> str:
        nonlocal t
        ecu.set("console_in", text)
        ecu.slave.doStep(t, STEP)
        t += STEP
        return ecu.get("console")
    return step


def test_crlf_and_the_exact_line_limit(echo_fmu):
    """`\\r\\n` ends a line like `\\n`; 120 bytes with the newline is the
    longest line taken, 121 is refused; `\\r`s before the newline do not
    count (docs/signals.md; firmware/lib/test_qqq_signals.c holds the guest
    side to the same rule)."""
    ecu = Instance(*echo_fmu)
    ecu.start()
    step = _stepper(ecu)
    longest = "value=" + "0" * 112 + "7\n"
    too_long = "value=" + "0" * 113 + "8\n"
    assert (len(longest), len(too_long)) == (120, 121)
    try:
        step()
        step("value=2.5\r\ncount=3\r\nflag=1\r\n")
        assert (ecu.get("value"), ecu.get("count"), ecu.get("flag")) == (2.5, 3, 1)
        step(longest)
        assert ecu.get("value") == 7.0
        step(too_long)
        assert ecu.get("value") == 7.0
        assert "longer than 120 bytes" in ecu.log_text()
        step(longest.replace("7\n", "6\r\n"))        # 121 bytes with CRLF
        assert ecu.get("value") == 6.0
        step(longest.replace("7\n", "5\r\r\r\n"))    # every \r is dropped
        assert ecu.get("value") == 5.0
        logged = len(ecu.messages)
        step(too_long.replace("8\n", "4\r\n"))       # 122 bytes with CRLF
        assert ecu.get("value") == 5.0
        assert "longer than 120 bytes" in ecu.log_text(logged)
    finally:
        ecu.close()


TYPED = """
[fmu]
model_name = "{model}"
guest_image = "{image}"
{extra}

[[input]]
name = "level"
type = "Integer"
start = 3

[[input]]
name = "enable"
type = "Boolean"
start = true

[[output]]
name = "value"
type = "Real"
"""


def _build(tmp: Path, extra: str, image: Path, model: str) -> tuple[Path, Path]:
    """An FMU with a model name of its own: pythonfmu cannot load two FMUs
    whose slave scripts share a name in one process."""
    proc = build(tmp, TYPED.format(image=image, extra=extra, model=model))
    assert proc.returncode == 0, proc.stderr
    return tmp / "ecu.fmu", Path(extract(str(tmp / "ecu.fmu"), str(tmp / "x")))


def test_integer_and_boolean_inputs_are_sent_when_they_change(guests, tmp_path):
    ecu = Instance(*_build(tmp_path, "", guests / "arm-lineecho.elf", "TypedEcu"))
    ecu.start()
    sent = []
    try:
        for level, enable in [(3, True), (3, True), (-2147483648, True),
                              (2147483647, False), (2147483647, False)]:
            ecu.set("level", level)
            ecu.set("enable", enable)
            ecu.slave.doStep(len(sent) * STEP, STEP)
            sent.append(ecu.get("console"))
    finally:
        ecu.close()
    assert sent == ["level=3\nenable=1\n", "", "level=-2147483648\n",
                    "level=2147483647\nenable=0\n", ""]


@pytest.mark.parametrize("guest", ["arm-lineecho", "arm-lineecho1"])
def test_channel_key_moves_the_signals_off_the_console(guests, tmp_path, guest):
    """channel = "signals": the signals travel on a second data channel, the
    guest's next UART (UART1), and the console (UART0) carries none.  The
    UART1 echo guest returns the input lines there, where they are read as
    signal lines; the UART0 echo guest returns console text, which is not."""
    ecu = Instance(*_build(tmp_path, 'channel = "signals"',
                           guests / f"{guest}.elf", f"Ch{guest[-1]}Ecu"))
    ecu.start()
    step = _stepper(ecu)
    try:
        pid, = qemu_children()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        console = [step(), step("value=1.5\n")]
        log = ecu.log_text()
        value = ecu.get("value")
    finally:
        ecu.close()
    assert b"qqq,id=signals" in argv
    if guest == "arm-lineecho1":
        assert console == ["", ""]
        # The echoed input came back on the signal channel, as a signal line.
        assert "guest line 'level=3' names no output signal" in log
        assert "guest line 'enable=1' names no output signal" in log
    else:
        assert console == ["", "value=1.5\n"]  # no input lines on the console
        assert "names no output signal" not in log
        assert "value=1.5" in log  # logged as console text, not applied
    assert value == 0.0


def test_machine_qemu_system_and_a_relative_guest_image(guests, tmp_path):
    """The [fmu] keys machine and qemu_system become the parameters' start
    values; guest_image is relative to the configuration file, not to the
    directory build_fmu.py runs in."""
    (tmp_path / "images").mkdir()
    image = tmp_path / "images" / "x86-busy.elf"
    shutil.copy(guests / "x86-busy.elf", image)
    config = tmp_path / "cfg" / "ecu.toml"
    config.parent.mkdir()
    config.write_text(TYPED.format(image="../images/x86-busy.elf", extra=(
        'machine = "pc"\nqemu_system = "x86_64"'), model="X86Ecu"))
    proc = subprocess.run([sys.executable, str(REPO / "build_fmu.py"), "--config",
                           str(config), "-o", str(tmp_path / "ecu.fmu")],
                          capture_output=True, text=True, timeout=100, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    fmu = tmp_path / "ecu.fmu"
    with zipfile.ZipFile(fmu) as z:
        assert z.read("resources/guest/default.elf") == image.read_bytes()
    from fmpy import read_model_description
    starts = {v.name: v.start for v in read_model_description(str(fmu)).modelVariables}
    assert (starts["machine"], starts["qemu_system"]) == ("pc", "x86_64")
    ecu = Instance(fmu, Path(extract(str(fmu), str(tmp_path / "x"))))
    ecu.start()
    try:
        pid, = qemu_children()
        exe = os.readlink(f"/proc/{pid}/exe")
        ecu.slave.doStep(0.0, 0.01)
        assert ecu.get("console") == "busy\n"
    finally:
        ecu.close()
    assert exe.endswith("/resources/qemu/bin/qemu-system-x86_64")


def test_a_question_mark_line_asks_for_every_input_again(echo_fmu):
    """A guest that starts listening late asks with "?" (docs/signals.md):
    the unchanged inputs go out again at the start of the next step."""
    ecu = Instance(*echo_fmu)
    ecu.start()
    seen = []
    try:
        for k, text in enumerate(["", "", "?\n", "", ""]):
            ecu.set("console_in", text)
            ecu.slave.doStep(k * STEP, STEP)
            seen.append(ecu.get("console"))  # the echo shows what the guest got
    finally:
        ecu.close()
    assert seen == ["gain=2.5\n", "", "?\n", "gain=2.5\n", ""]
    # a request, not console text to log
    assert not any(m.endswith("] ?") for _, m in ecu.messages)
