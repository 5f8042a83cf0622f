"""No invalid memory access by the FMUs, at any point of their life, and
master processes that end as they should (issue 15).

pythonfmu 0.7's export library, which the FMUs used to ship, wrote to a
global C++ object after the C++ runtime had destroyed it, at every process
exit: valgrind saw it every time, and some fmpy scripts then aborted with
"corrupted double-linked list" (status 134) after a successful run.  The
FMUs now call their Python slave through our own C bridge
(fmu_src/loader/bridge.c, docs/fmu-loader.md).

Two kinds of check, each in processes of their own:
- valgrind (memcheck) over a whole life of every FMU kind (qemu.fmu, a
  --config signal FMU, the pythonfmu DcMotor, the network FMU) in a Python
  master (fmpy) and in our C master: load, instantiate, run, log, FMU
  states, a Python exception, reset, free, instantiate again, unload,
  reload, process exit (tests/c_hosts/reload_host.c unloads and reloads in
  C).
  Any invalid read, write or free fails, except ld.so's own reports while
  it expands $ORIGIN (findings.md: strncmp in is_dst, dl-load.c).
- 200 short fmpy scripts (a logger, string parameters of many lengths, as
  in the issue) must all exit 0 with no glibc heap message.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from c_host import CLEAN_ENV, FMUS, Unpacked, start, unpack
from conftest import REPO, built

VALGRIND = ["valgrind", "--trace-children=no", "--num-callers=30"]
# about 30 s (fmpy) and 8 s (C master) on a busy 2-core machine
VALGRIND_TIMEOUT = 110
ERROR_START = re.compile(r"^==\d+== (Invalid (read|write|free)|Mismatched free)")
LD_SO_NOISE = "is_dst (dl-load.c"
HEAP_MESSAGE = re.compile(r"corrupted|double free|free\(\)|malloc\(\)|realloc\(\)|"
                          r"munmap_chunk|malloc_consolidate|Aborted|Segmentation")

needs_valgrind = pytest.mark.skipif(shutil.which("valgrind") is None,
                                    reason="valgrind missing: run `make setup`")

#: every kind of FMU the project builds: qemu.fmu, a --config signal FMU,
#: the pythonfmu DcMotor, the network FMU
KINDS = (*FMUS, "Network.fmu")


@pytest.fixture(scope="module")
def kinds(fmus, tmp_path_factory) -> dict[str, Unpacked]:
    """Every kind unpacked as a C master would (c_host.unpack)."""
    network = built(REPO / "dist" / "Network.fmu", "make fmu")
    return {**fmus, "Network.fmu": unpack(network,
                                          tmp_path_factory.mktemp("network"))}


def string_parameter(u: Unpacked) -> str | None:
    """The file-name parameter the FMU has, if any."""
    return next((n for n in ("console_file", "capture_file") if n in u.vrs), None)


def invalid_accesses(log: str) -> list[str]:
    """valgrind's reports of invalid reads, writes and frees in ``log``,
    each as its text, without ld.so's known ones."""
    reports, current = [], None
    for line in log.splitlines():
        if ERROR_START.match(line):
            current = [line]
            reports.append(current)
        elif current is not None and re.fullmatch(r"==\d+== ?", line):
            current = None
        elif current is not None:
            current.append(line)
    return ["\n".join(r) for r in reports
            if not any(LD_SO_NOISE in line for line in r)]


def valgrind(argv: list[str], tmp_path: Path, env: dict | None = None,
             ) -> tuple[subprocess.CompletedProcess, str]:
    log = tmp_path / "valgrind.log"
    done = subprocess.run([*VALGRIND, f"--log-file={log}", *argv], env=env,
                          capture_output=True, text=True, errors="replace",
                          timeout=VALGRIND_TIMEOUT, cwd=tmp_path)
    return done, log.read_text(errors="replace")


# -- a Python master: fmpy --------------------------------------------------

# For each FMU: simulate_fmu twice (fmpy unloads the binary after each run:
# the second loads it again into a process whose Python already ran it),
# then the raw API (through fmi_helpers, whose logger callback outlives the
# instances: fmpy's logger proxy would otherwise call a freed one): FMU
# states, a call that fails, reset, free.
PYTHON_MASTER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from fmpy import simulate_fmu
    from fmpy.fmi1 import FMICallException

    tests, plan = sys.argv[1], json.loads(sys.argv[2])
    sys.path.insert(0, tests)
    from fmi_helpers import Instance   # one immortal logger callback

    def logger(env, instance, status, category, message):
        print(instance.decode(), status, category.decode(),
              message.decode(errors="replace"), flush=True)

    for root, start_values, bad in plan:
        for _ in range(2):
            simulate_fmu(root, stop_time=0.02, output_interval=1e-3,
                         logger=logger, debug_logging=True,
                         start_values=start_values)
        raw = Instance(Path(root), Path(root), name="raw")
        raw.start()
        raw.slave.doStep(0.0, 1e-3)
        state = raw.slave.getFMUstate()
        copy = raw.slave.deSerializeFMUstate(raw.slave.serializeFMUstate(state))
        raw.slave.doStep(1e-3, 1e-3)
        raw.slave.setFMUstate(copy)
        raw.slave.freeFMUstate(copy)
        raw.slave.freeFMUstate(state)
        try:
            raw.slave.getReal([bad])
        except FMICallException:
            print("refused", bad, raw.messages[-1], flush=True)
        raw.slave.reset()
        raw.close()
    print("done", flush=True)
    sys.exit(0)
""")


def python_master_plan(kinds: dict[str, Unpacked], tmp_path: Path) -> list:
    plan = []
    for name in KINDS:
        u = kinds[name]
        param = string_parameter(u)
        values = ({param: str(tmp_path / f"{u.model}.out")} if param
                  else {"voltage": 1.0})
        plan.append([str(u.root), values, 999])
    return plan


@needs_valgrind
def test_python_master_makes_no_invalid_access(kinds, tmp_path):
    plan = python_master_plan(kinds, tmp_path)
    done, log = valgrind([sys.executable, "-c", PYTHON_MASTER,
                          str(Path(__file__).parent), json.dumps(plan)],
                         tmp_path, env={**CLEAN_ENV, "PYTHONMALLOC": "malloc"})
    bad = invalid_accesses(log)
    assert not bad, f"{len(bad)} invalid accesses:\n\n" + "\n\n".join(bad[:5])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "done"
    assert done.stdout.count("refused 999") == len(KINDS)


# -- a C master: tests/c_hosts/fmi2_host.c (loads like FMI Library) ---------

SLOTS = "ABCD"

def c_master_script(kinds: dict[str, Unpacked], tmp_path: Path) -> str:
    script = ""
    for slot, name in zip(SLOTS, KINDS, strict=True):
        u = kinds[name]
        param = string_parameter(u)
        params = {param: ("s", str(tmp_path / f"{u.model}.out"))} if param else {}
        script += start(u, slot, logging=1, **params)
        script += f"run {slot} 0 0.001 20\nget {slot} r 999\n"
        if "console" in u.vrs:
            script += f"get {slot} s {u.vrs['console']}\n"
        script += (f"save {slot}\nserialize {slot}\nrun {slot} 0.02 0.001 5\n"
                   f"restore {slot}\ndeserialize {slot}\nrestore {slot}\n"
                   f"freestate {slot}\nreset {slot}\nterm {slot}\nfree {slot}\n"
                   f"inst {slot} 1\nfree {slot}\n")
    return script


@needs_valgrind
def test_c_master_makes_no_invalid_access(kinds, fmi2_host, tmp_path):
    (tmp_path / "script.txt").write_text(c_master_script(kinds, tmp_path))
    done, log = valgrind([str(fmi2_host), str(tmp_path / "script.txt")],
                         tmp_path, env=CLEAN_ENV)
    bad = invalid_accesses(log)
    assert not bad, f"{len(bad)} invalid accesses:\n\n" + "\n\n".join(bad[:5])
    assert done.returncode == 0, done.stderr[-3000:]
    for slot in SLOTS:
        assert f"run {slot} steps=20 -> 0" in done.stdout, done.stdout
        assert f"restore {slot} -> 0" in done.stdout
        assert f"get {slot} 999 -> 3" in done.stdout


@needs_valgrind
def test_c_master_unloads_and_loads_again_without_invalid_access(kinds, tmp_path):
    """dlopen, instantiate, run, free, dlclose, three times in one process
    (FMI Library hosts unload an FMU's binary when they are done with it)."""
    from c_host import compile_host

    host = compile_host("reload_host.c", tmp_path / "reload_host", "-ldl")
    q = kinds["qemu.fmu"]
    done, log = valgrind([str(host), str(q.root), q.model, q.guid, "3"],
                         tmp_path, env=CLEAN_ENV)
    bad = invalid_accesses(log)
    assert not bad, f"{len(bad)} invalid accesses:\n\n" + "\n\n".join(bad[:5])
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert re.findall(r"^round \d status (\d)$", done.stdout, re.M) == ["0"] * 3


# -- 200 short master processes ----------------------------------------------

SHORT_MASTER = textwrap.dedent("""
    import json, sys
    from fmpy import simulate_fmu

    fmu, start_values, echo = json.loads(sys.argv[1])
    messages = []

    def logger(env, instance, status, category, message):
        if echo:
            print(status, category.decode(), message.decode(errors="replace"))
        else:
            messages.append(message)

    result = simulate_fmu(fmu, stop_time=0.02, output_interval=1e-3,
                          logger=logger, debug_logging=True,
                          start_values=start_values)
    print("done", len(result))
    sys.exit(0)
""")
RUNS = 200
BATCHES = 8


@pytest.fixture(scope="module")
def user_unpacked(kinds) -> dict[str, Path]:
    """Each FMU unpacked where fmpy.simulate_fmu unpacks it for a user's
    script (a mkdtemp() directory: /tmp/tmpXXXXXXXX), once for all runs."""
    from fmpy import extract

    dirs = {name: Path(extract(str(kinds[name].fmu))) for name in KINDS}
    yield dirs
    for path in dirs.values():
        shutil.rmtree(path, ignore_errors=True)


def console_name(run: int, length: int) -> str:
    """A file name of exactly ``length`` characters, one per run."""
    return f"{run:03d}-".ljust(length, "c")


def short_runs(kinds: dict[str, Unpacked], where: dict[str, Path]) -> list[list]:
    """The 200 runs: mostly qemu.fmu with console_file paths of 10 to 49
    characters (heap layouts differ with them: with the old FMUs 22 to 25
    aborted every time when unpacked as fmpy does), echoing logger or not,
    guest_image given or not; then the signal FMU, the DcMotor and the
    network FMU (its capture_file)."""
    q, pi, dc, net = (str(where[name]) for name in KINDS)
    guest = str(kinds["qemu.fmu"].root / "resources" / "guest" / "default.elf")
    runs = []
    for length in range(10, 50):
        for echo in (True, False):
            for with_guest in (False, True):
                values = {"console_file": console_name(len(runs), length)}
                if with_guest:
                    values["guest_image"] = guest
                runs.append([q, values, echo])
    for length in range(10, 30):
        runs.append([pi, {"console_file": console_name(len(runs), length)}, True])
    for k in range(10):
        runs.append([dc, {"voltage": k * 0.5}, k % 2 == 0])
    for k in range(10):
        name = console_name(len(runs), 10 + 3 * k)
        runs.append([net, {"capture_file": name}, k % 2 == 0])
    assert len(runs) == RUNS
    return runs


def run_short_master(run: list, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SHORT_MASTER, json.dumps(run)],
                          capture_output=True, text=True, errors="replace",
                          timeout=60, cwd=cwd, env={**CLEAN_ENV})


@pytest.mark.parametrize("batch", range(BATCHES))
def test_short_master_processes_all_exit_cleanly(kinds, user_unpacked, tmp_path,
                                                batch):
    """An eighth of the 200 runs per test, two processes at a time, in
    tmp_path: the console files are named relative to it."""
    runs = short_runs(kinds, user_unpacked)[batch::BATCHES]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda r: run_short_master(r, tmp_path), runs))
    failed = [(run, done.returncode, done.stderr[-500:])
              for run, done in zip(runs, results, strict=True)
              if done.returncode != 0 or HEAP_MESSAGE.search(done.stderr)
              or not done.stdout.rstrip().endswith("done 21")]
    assert not failed, (f"{len(failed)} of {len(runs)} runs failed; first: "
                        f"{failed[:3]}")
