"""A careless master: bad values and bad call orders through the raw FMI API.

Each case runs in a C master process of its own (tests/c_host.py), so a
crash of the host is a failed test.  Every misuse must give fmi2Error (3)
with a message in the log, and leave an instance that can still be freed.
"""

from __future__ import annotations

import re

from c_host import run_host, start, values
from conftest import built

ERROR = 3


def status(out: str, call: str) -> list[int]:
    return [int(s) for s in re.findall(rf"^{call} -> (\d+)", out, re.M)]


def test_bad_parameter_is_an_error_and_free_and_reset_are_safe(fmus, fmi2_host,
                                                               tmp_path):
    q = fmus["qemu.fmu"]
    script = (start(q, "A", icount_shift=("i", "11")) + "step A 0 0.001\n"
              "reset A\n" + start(q, "A")[len(q.load("A")) + len("inst A 0\n"):]
              + "run A 0 0.001 10\nterm A\nfree A\n")
    done = run_host(fmi2_host, script, tmp_path)
    assert status(done.stdout, "exit A") == [ERROR, 0]
    assert status(done.stdout, "step A") == [ERROR]
    assert "icount_shift 11 is outside 0..10" in done.stderr
    # After fmi2Reset the same instance starts cleanly.
    assert "run A steps=10 -> 0" in done.stdout


def test_guest_image_that_is_a_directory_says_so(fmus, fmi2_host, tmp_path):
    q = fmus["qemu.fmu"]
    script = start(q, "A", guest_image=("s", str(tmp_path))) + "free A\n"
    done = run_host(fmi2_host, script, tmp_path)
    assert status(done.stdout, "exit A") == [ERROR]
    assert "is a directory, not a file (parameter guest_image)" in done.stderr


def test_console_in_that_is_not_utf8_is_refused(fmus, fmi2_host, tmp_path):
    q = fmus["qemu.fmu"]
    vr = q.vrs["console_in"]
    script = (start(q, "A") + f"set A s {vr} ok\xff\xfe\n" + "run A 0 0.001 3\n"
              + f"get A s {vr}\nterm A\nfree A\n")
    path = tmp_path / "script.bin"
    path.write_bytes(script.encode("latin-1"))
    done = run_host(fmi2_host, path.read_text("latin-1"), tmp_path,
                    encoding="latin-1")
    assert status(done.stdout, f"set A {vr}") == [ERROR]
    assert "not UTF-8" in done.stderr
    assert "run A steps=3 -> 0" in done.stdout       # the instance lives on
    assert values(done.stdout, "A", vr) == [""]


def test_do_step_must_start_where_the_last_one_ended(fmus, fmi2_host, tmp_path):
    q = fmus["qemu.fmu"]
    script = (start(q, "A") + "step A 0 0.001\nstep A 0 0.001\nstep A 0.005 0.001\n"
              "step A 0.001 0.001\n" + f"get A r {q.vrs['qemu_time']}\n"
              "term A\nfree A\n")
    done = run_host(fmi2_host, script, tmp_path)
    assert status(done.stdout, "step A") == [0, ERROR, ERROR, 0]
    assert "fmi2DoStep at t=0.0 s, but the FMU is at t=0.001 s" in done.stderr
    assert "fmi2DoStep at t=0.005 s, but the FMU is at t=0.001 s" in done.stderr
    assert float(values(done.stdout, "A", q.vrs["qemu_time"])[0]) == 0.002


def test_do_step_before_initialization_is_an_error(fmus, fmi2_host, tmp_path):
    q = fmus["qemu.fmu"]
    script = q.load("A") + "inst A 0\nstep A 0 0.001\nsetup A 0\nenter A\n"
    script += "step A 0 0.001\nexit A\nstep A 0 0.001\nterm A\nfree A\n"
    done = run_host(fmi2_host, script, tmp_path)
    assert status(done.stdout, "step A") == [ERROR, ERROR, 0]
    assert "fmi2DoStep before initialization ended" in done.stderr


def test_outputs_cannot_be_set_before_initialization_either(fmus, fmi2_host,
                                                             tmp_path):
    """README: setting an output ever is an error, in every mode."""
    q = fmus["qemu.fmu"]
    vr = q.vrs["qemu_time"]
    script = (q.load("A") + f"inst A 0\nset A r {vr} 5\nsetup A 0\nenter A\n"
              f"set A r {vr} 6\nexit A\nrun A 0 0.001 1\nget A r {vr}\n"
              "term A\nfree A\n")
    done = run_host(fmi2_host, script, tmp_path)
    assert status(done.stdout, f"set A {vr}") == [ERROR, ERROR]
    assert done.stderr.count("is the output qemu_time; outputs cannot be set") == 2
    assert float(values(done.stdout, "A", vr)[0]) == 0.001


def test_parameters_and_outputs_cannot_be_set_once_running(fmus, fmi2_host,
                                                           tmp_path):
    q = fmus["qemu.fmu"]
    script = (start(q, "A") + f"set A i {q.vrs['icount_shift']} 3\n"
              f"set A r {q.vrs['qemu_time']} 5\n"
              f"set A r 999 1\nget A r 999\n"
              f"get A i {q.vrs['icount_shift']}\nterm A\nfree A\n")
    done = run_host(fmi2_host, script, tmp_path)
    assert status(done.stdout, f"set A {q.vrs['icount_shift']}") == [ERROR]
    assert status(done.stdout, f"set A {q.vrs['qemu_time']}") == [ERROR]
    assert status(done.stdout, "set A 999") == [ERROR]
    assert status(done.stdout, "get A 999") == [ERROR]
    assert values(done.stdout, "A", q.vrs["icount_shift"]) == ["-1"]
    assert "fixed once initialization has ended" in done.stderr
    assert "outputs cannot be set" in done.stderr
    assert "variable 999: it does not exist" in done.stderr


def test_console_in_reaches_the_guest_once_per_change(fmus, fmi2_host, tmp_path,
                                                      guests):
    q = fmus["qemu.fmu"]
    echo = built(guests / "arm-lineecho.elf", "make firmware")
    vr, count = q.vrs["console_in"], q.vrs["console_bytes"]
    script = (start(q, "A", guest_image=("s", str(echo)))
              + f"set A s {vr} abc\nrun A 0 0.001 5\nget A i {count}\n"
              + f"set A s {vr} abc\nrun A 0.005 0.001 5\nget A i {count}\n"
              + f"set A s {vr} \nrun A 0.01 0.001 1\n"
              + f"set A s {vr} abc\nrun A 0.011 0.001 5\nget A i {count}\n"
              + "term A\nfree A\n")
    done = run_host(fmi2_host, script, tmp_path)
    assert values(done.stdout, "A", count) == ["3", "3", "6"]


def test_console_in_of_exactly_the_limit_goes_and_a_byte_more_does_not(
        fmus, fmi2_host, tmp_path):
    """README: one step carries at most 16 MiB - 64 KiB (16,711,680 bytes)."""
    q = fmus["qemu.fmu"]
    vr = q.vrs["console_in"]
    limit = 16 * 1024 * 1024 - 64 * 1024
    assert limit == 16_711_680
    script = (start(q, "A") + f"set A s {vr} {'x' * limit}\nrun A 0 0.001 1\n"
              + f"set A s {vr} {'y' * (limit + 1)}\nrun A 0.001 0.001 1\n"
              + "term A\nfree A\n")
    done = run_host(fmi2_host, script, tmp_path)
    assert status(done.stdout, f"set A {vr}") == [0, ERROR]
    assert f"console_in of {limit + 1} bytes refused" in done.stderr
    assert f"console_in of {limit} bytes" not in done.stderr
    assert done.stdout.count("steps=1 -> 0") == 2, done.stdout


def test_console_in_beyond_a_frame_is_refused_before_anything_is_sent(
        fmus, fmi2_host, tmp_path, guests):
    q = fmus["qemu.fmu"]
    echo = built(guests / "arm-lineecho.elf", "make firmware")
    vr, count = q.vrs["console_in"], q.vrs["console_bytes"]
    big = "x" * (16 * 1024 * 1024)
    script = (start(q, "A", guest_image=("s", str(echo)))
              + f"set A s {vr} {big}\nrun A 0 0.001 5\nget A i {count}\n"
              + "term A\nfree A\n")
    done = run_host(fmi2_host, script, tmp_path)
    assert status(done.stdout, f"set A {vr}") == [ERROR]
    assert "console_in of 16777216 bytes refused" in done.stderr
    assert "run A steps=5 -> 0" in done.stdout
    assert values(done.stdout, "A", count) == ["0"]
