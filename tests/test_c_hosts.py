"""The FMUs in hosts without Python: our own C master and libcosim's C API."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from buildlib.native import GLIBC, needed, runpath
from c_host import (
    CLEAN_ENV,
    FMUS,
    Unpacked,
    compile_host,
    run_host,
    start,
    values,
)
from fmi_helpers import Instance

# -- the FMU needs glibc and a libpython, nothing else ---------------------


def elf_files(root: Path) -> list[Path]:
    return [p for p in sorted(root.rglob("*"))
            if p.is_file() and p.read_bytes()[:4] == b"\x7fELF"]


@pytest.mark.parametrize("name", FMUS)
def test_every_needed_library_resolves_inside_the_fmu_or_to_glibc(fmus, name):
    root = fmus[name].root
    elves = elf_files(root)
    assert any(p.name == f"{fmus[name].model}.so" for p in elves)
    for elf in elves:
        dirs = [Path(d.replace("$ORIGIN", str(elf.parent))).resolve()
                for d in runpath(elf)]
        for lib in needed(elf):
            if lib in GLIBC:
                continue
            inside = [d / lib for d in dirs if (d / lib).is_file()]
            assert inside, f"{elf.relative_to(root)} needs {lib}, not in the FMU"
            assert all(p.resolve().is_relative_to(root.resolve()) for p in inside)
        # What the dynamic linker really picks, with nothing in the environment.
        ldd = subprocess.run(["ldd", str(elf)], capture_output=True, text=True,
                             env=CLEAN_ENV, timeout=30).stdout
        for soname, path in re.findall(r"^\s*(\S+) => (\S+)", ldd, re.M):
            assert soname in GLIBC or Path(path).resolve().is_relative_to(
                root.resolve()), f"{elf.relative_to(root)}: {soname} => {path}"


@pytest.mark.parametrize("name", FMUS)
def test_linux64_is_the_only_platform(fmus, name):
    from fmpy import supported_platforms

    assert supported_platforms(str(fmus[name].fmu)) == ["linux64"]


# -- our own C master ------------------------------------------------------


def test_c_master_runs_qemu_fmu_one_second_at_one_millisecond(fmus, fmi2_host,
                                                             tmp_path):
    q = fmus["qemu.fmu"]
    script = (start(q, "A") + "run A 0 0.001 1000\n"
              f"get A r {q.vrs['qemu_time']}\nget A i {q.vrs['sync_steps']}\n"
              "term A\nfree A\n")
    out = run_host(fmi2_host, script, tmp_path).stdout
    assert "run A steps=1000 -> 0" in out
    qemu_time = float(values(out, "A", q.vrs["qemu_time"])[0])
    assert qemu_time == pytest.approx(1.0, abs=1e-9)
    assert values(out, "A", q.vrs["sync_steps"]) == ["1000"]


def pi_script(u: Unpacked, slot: str, steps: int) -> str:
    """Set-point 2 rad/s, the measured speed rising; voltage every step."""
    script = ""
    for k in range(steps):
        script += (f"set {slot} r {u.vrs['speed']} {k * 0.05!r}\n"
                   f"step {slot} {k * 0.001!r} 0.001\n"
                   f"get {slot} r {u.vrs['voltage']}\n")
    return script


def test_c_master_exchanges_signals_exactly_as_fmpy_does(fmus, fmi2_host,
                                                         tmp_path):
    pi = fmus["PiSpeedController.fmu"]
    steps = 40
    script = (start(pi, "P", setpoint=("r", "2.0")) + pi_script(pi, "P", steps)
              + "term P\nfree P\n")
    out = run_host(fmi2_host, script, tmp_path).stdout
    in_c = [float(v) for v in values(out, "P", pi.vrs["voltage"])]
    assert len(in_c) == steps and len(set(in_c)) > 10

    ref = Instance(pi.fmu, pi.root, setpoint=2.0)
    try:
        ref.start()
        in_fmpy = []
        for k in range(steps):
            ref.set("speed", k * 0.05)
            ref.slave.doStep(k * 0.001, 0.001)
            in_fmpy.append(ref.get("voltage"))
    finally:
        ref.close()
    assert in_c == in_fmpy


def test_two_fmus_side_by_side_in_one_c_process(fmus, fmi2_host, tmp_path):
    q, pi = fmus["qemu.fmu"], fmus["PiSpeedController.fmu"]
    script = start(q, "A") + start(pi, "P", setpoint=("r", "50.0"))
    for k in range(100):
        script += f"step A {k * 0.001!r} 0.001\nstep P {k * 0.001!r} 0.001\n"
    script += (f"get A r {q.vrs['qemu_time']}\nget P r {pi.vrs['voltage']}\n"
               "children -\nterm A\nterm P\nfree A\nfree P\nchildren -\n")
    out = run_host(fmi2_host, script, tmp_path).stdout
    assert out.count(" -> 0\n") >= 200 + 2 and "-> 3" not in out
    qemu_time = float(values(out, "A", q.vrs["qemu_time"])[0])
    assert qemu_time == pytest.approx(0.1, abs=1e-9)
    assert float(values(out, "P", pi.vrs["voltage"])[0]) != 0.0
    assert re.findall(r"^children (\d+)$", out, re.M) == ["2", "0"]


def test_free_without_terminate_ends_qemu_and_the_host_exits(fmus, fmi2_host,
                                                            tmp_path):
    q = fmus["qemu.fmu"]
    script = (start(q, "A") + start(q, "B") + "run A 0 0.001 10\n"
              "run B 0 0.001 10\nchildren -\nfree A\nchildren -\n")
    # B is neither terminated nor freed: the host's exit must end its QEMU.
    done = run_host(fmi2_host, script, tmp_path, timeout=30)
    assert re.findall(r"^children (\d+)$", done.stdout, re.M) == ["2", "1"]
    leftover = subprocess.run(["pgrep", "-f", str(q.root)], capture_output=True,
                              text=True, timeout=10).stdout.split()
    for _ in range(50):
        if not leftover:
            break
        subprocess.run(["sleep", "0.1"], check=True)
        leftover = subprocess.run(["pgrep", "-f", str(q.root)], capture_output=True,
                                  text=True, timeout=10).stdout.split()
    assert not leftover


@pytest.mark.parametrize("form", ["file:{path}", "file://localhost{path}",
                                  "file://{escaped}"])
def test_resource_uri_forms_the_loader_understands(fmus, fmi2_host, tmp_path, form):
    """docs/fmu-loader.md: `file:/p`, `file://localhost/p` and percent-escapes
    (a directory name with a space, and every '-' written %2D: the export
    library alone decodes nothing but %20) reach the same resources."""
    q = fmus["qemu.fmu"]
    spaced = tmp_path / "an fmu"
    spaced.symlink_to(q.root)
    uri = form.format(path=f"{q.root}/resources",
                      escaped=f"{spaced}/resources".replace(" ", "%20")
                      .replace("-", "%2D"))
    assert "%2D" in uri or "{escaped}" not in form
    script = (q.load("A") + f"inst A 0 {uri}\nsetup A 0\nenter A\nexit A\n"
              f"run A 0 0.001 10\nget A r {q.vrs['qemu_time']}\nterm A\nfree A\n")
    done = run_host(fmi2_host, script, tmp_path)
    assert "inst A -> ok" in done.stdout and "exit A -> 0" in done.stdout, done.stderr
    assert float(values(done.stdout, "A", q.vrs["qemu_time"])[0]) == 0.01


def test_null_arrays_are_refused_before_python_sees_them(fmus, fmi2_host, tmp_path):
    q = fmus["qemu.fmu"]
    script = (start(q, "A") + f"null A {q.vrs['console_in']}\n"
              f"run A 0 0.001 1\nterm A\nfree A\n")
    done = run_host(fmi2_host, script, tmp_path)
    assert "null A -> 3 3 3 3" in done.stdout, done.stdout + done.stderr
    for function in ("fmi2SetReal", "fmi2GetReal", "fmi2SetString", "fmi2GetString"):
        assert f"{function}: 1 values but no array" in done.stderr
    assert "steps=1 -> 0" in done.stdout      # the instance goes on


# A slave that raises (only a bug of ours would).
BOOM = """
def _boom(self, current_time, step_size):
    raise RuntimeError("boom")


QemuSlave.do_step = _boom
"""


def test_a_slave_that_raises_is_an_error_with_its_message_in_a_c_master(
        fmus, fmi2_host, tmp_path):
    """docs/fmu-loader.md: in the loader's bridge an exception is fmi2Error
    with its type and text, and the instance is not fenced off: it still
    answers and frees (fmi2Fatal, and the fence, are left for a Python that
    is shutting down)."""
    q = fmus["qemu.fmu"]
    broken = tmp_path / "broken"
    shutil.copytree(q.root, broken, symlinks=True)
    slave = broken / "resources" / "qemufmu" / "slave.py"
    slave.write_text(slave.read_text() + BOOM)
    u = dataclasses.replace(q, root=broken)
    script = (start(u, "A") + "step A 0 0.001\n"
              f"get A r {q.vrs['qemu_time']}\nterm A\nfree A\nchildren -\n")
    done = run_host(fmi2_host, script, tmp_path)
    assert re.findall(r"^step A -> (\d)", done.stdout, re.M) == ["3"], done.stdout
    assert "do_step raised RuntimeError: boom" in done.stderr, done.stderr
    assert re.search(rf"^get A {q.vrs['qemu_time']} -> 0 0$", done.stdout, re.M)
    assert "term A -> 0" in done.stdout and "children 0" in done.stdout
    assert "refused" not in done.stderr


def test_log_text_reaches_the_master_verbatim(fmus, fmi2_host, tmp_path):
    # The C master formats like FMI Library (vfprintf): a '%' in a message
    # must be text, not a conversion reading arguments nobody passed.
    q = fmus["qemu.fmu"]
    script = (start(q, "A", logging=1, extra_args=("s", "-name pct%s%n%s%%x"))
              + "run A 0 0.001 5\nterm A\nfree A\n")
    done = run_host(fmi2_host, script, tmp_path)
    assert "-name pct%s%n%s%%x" in done.stderr


def test_a_bad_parameter_is_an_error_with_its_message_even_with_logging_off(
        fmus, fmi2_host, tmp_path):
    q = fmus["qemu.fmu"]
    script = (start(q, "A", logging=0,
                    guest_image=("s", str(tmp_path / "missing.elf")))
              + "step A 0 0.001\nterm A\nreset A\nfree A\n")
    done = run_host(fmi2_host, script, tmp_path)
    assert "exit A -> 3" in done.stdout
    assert "step A -> 3" in done.stdout
    assert "free A" in done.stdout
    assert re.search(r"\[log A 3 \S+\] cannot start QEMU: guest image \S*missing.elf "
                     r"does not exist \(parameter guest_image\)", done.stderr)


def test_without_a_usable_libpython_instantiate_fails_with_advice(fmus, fmi2_host,
                                                                  tmp_path):
    q = fmus["qemu.fmu"]
    bad = tmp_path / "libpython3.11.so.1.0"
    bad.write_bytes(b"not a library")
    script = q.load("A") + "inst A 0\nfree A\n"
    done = run_host(fmi2_host, script, tmp_path,
                    env={"QEMU_FMU_LIBPYTHON": str(bad)})
    assert "inst A -> NULL" in done.stdout
    assert "QEMU_FMU_LIBPYTHON" in done.stderr and str(bad) in done.stderr


def test_without_any_libpython_the_message_says_what_to_install(fmus, fmi2_host,
                                                                tmp_path):
    # Hide every libpython on the search path in a private mount namespace.
    hidden = [str(p) for p in Path("/usr/lib/x86_64-linux-gnu").glob("libpython3*.so*")
              if p.is_file() and not p.is_symlink()]
    q = fmus["qemu.fmu"]
    (tmp_path / "script.txt").write_text(q.load("A") + "inst A 0\nfree A\n")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespaces here: {probe.stderr.decode().strip()}")
    mounts = " && ".join(f"mount --bind /dev/null {p}" for p in hidden)
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c",
         f"{mounts or 'true'} && exec {fmi2_host} {tmp_path / 'script.txt'}"],
        env=CLEAN_ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "inst A -> NULL" in done.stdout
    assert "apt-get install libpython3" in done.stderr


def pyenv_libpythons() -> list[Path]:
    root = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions"
    found = []
    for minor in (10, 12, 13):
        found += sorted(root.glob(f"3.{minor}.*/lib/libpython3.{minor}.so.1.0"))[-1:]
    return found


@pytest.mark.parametrize("libpython", pyenv_libpythons() or [None],
                         ids=lambda p: p.parent.parent.name if p else "none")
def test_any_libpython_from_3_10_runs_with_its_own_stdlib(fmus, fmi2_host, tmp_path,
                                                          libpython):
    if libpython is None:
        pytest.skip("no other CPython installation (pyenv) on this machine")
    # PATH's python3 is Debian's 3.11: the shim must not take its stdlib.
    q = fmus["qemu.fmu"]
    script = start(q, "A") + f"run A 0 0.01 10\nget A r {q.vrs['qemu_time']}\n"
    script += "term A\nfree A\n"
    out = run_host(fmi2_host, script, tmp_path,
                   env={"QEMU_FMU_LIBPYTHON": str(libpython)}).stdout
    qemu_time = float(values(out, "A", q.vrs["qemu_time"])[0])
    assert qemu_time == pytest.approx(0.1, abs=1e-9)


# -- libcosim's C API, a third-party C++ master ----------------------------


def test_libcosim_c_api_runs_qemu_fmu(fmus, tmp_path):
    import libcosimpy

    lib = Path(libcosimpy.__file__).parent / "libcosimc"
    host = compile_host("cosim_host.c", tmp_path / "cosim_host", f"-L{lib}",
                        "-lcosimc", f"-Wl,-rpath,{lib}")
    q = fmus["qemu.fmu"]
    done = subprocess.run([str(host), str(q.fmu), "1", "0.001",
                           str(q.vrs["qemu_time"]), str(q.vrs["next_event_time"])],
                          env=CLEAN_ENV, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr[-3000:]
    got = dict(re.findall(r"^(\d+)=(\S+)$", done.stdout, re.M))
    assert float(got[str(q.vrs["qemu_time"])]) == pytest.approx(1.0, abs=1e-9)
    # libcosim instantiates on a worker thread that ends before terminate:
    # QEMU must live on until terminate closes its socket.
    assert "QEMU exited with status" not in done.stderr
    assert "killed" not in done.stderr
