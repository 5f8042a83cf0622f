"""Our master steps QEMU-based FMUs concurrently, with the results of
stepping them in turn (qemufmu.cosim, used by `qemu-fmu sweep`)."""

from __future__ import annotations

import threading

import pytest

from conftest import REPO
from qemufmu import cosim
from qemufmu.cases import Case
from qemufmu.sspwrite import Element, write_ssp
from qemufmu.system import System, read_system

QEMU_FMU = REPO / "dist" / "qemu.fmu"


def ecus(tmp_path, n: int) -> tuple[System, object]:
    """An SSP of n unconnected qemu.fmu instances: an n-ECU system."""
    path = write_ssp(tmp_path / f"ecus{n}.ssp", "ecus",
                     {f"ecu{k}": Element(QEMU_FMU) for k in range(n)}, [])
    return read_system(path), path


def run(system, parallel: bool | None, stop_time: float = 0.3,
        starts: tuple = ()) -> cosim.CaseResult:
    system, path = system
    record = tuple(f"ecu{k}.{v}" for k in range(len(system.components))
                   for v in ("console", "qemu_time", "next_event_time"))
    settings = cosim.Settings(stop_time, 1e-3, record, parallel=parallel)
    # Different guests' speeds: each ECU its own instruction rate.
    starts = starts or tuple((f"ecu{k}.icount_shift", k)
                             for k in range(len(system.components)))
    return cosim.run_case(system, path, cosim.digest_of(path),
                          Case("c", starts), settings)


def test_parallel_steps_give_the_results_of_steps_in_turn(fmus, tmp_path):
    """In turn, in parallel, and the default (timed both ways over the
    first 100 steps, then the faster): the same results."""
    system = ecus(tmp_path, 3)
    in_turn, parallel, auto = run(system, False), run(system, True), run(system, None)
    assert cosim.TRIAL_STEPS * 2 < 300
    for other in (parallel, auto):
        assert in_turn.status == other.status == cosim.STATUS_OK, other.message
        assert other.values == in_turn.values
        assert other.time == in_turn.time
    # The default guest prints every 100 ms; the print due at 300 ms ends
    # just after the last step.
    assert "".join(in_turn.values["ecu2.console"]) == "boot\nticks=100\nticks=200\n"


def test_qemu_fmus_really_step_on_threads_of_their_own(fmus, tmp_path,
                                                     monkeypatch):
    """Each out-of-process FMU's doStep runs on a pool thread; the check
    would pass with steps in turn otherwise."""
    seen: set[str] = set()
    original = cosim._Instance.call

    def spy(self, method, *args, **kwargs):
        if method == "doStep":
            seen.add(threading.current_thread().name)
        return original(self, method, *args, **kwargs)

    monkeypatch.setattr(cosim._Instance, "call", spy)
    assert run(ecus(tmp_path, 2), True, stop_time=0.02).status == cosim.STATUS_OK
    assert len(seen) == 2 and all(n.startswith("cosim-step") for n in seen), seen


@pytest.mark.parametrize("parallel", [False, True])
def test_a_failing_step_ends_the_case_with_the_fmus_words(fmus, tmp_path,
                                                         parallel):
    """One ECU's step times out: the FMU's own message, either way."""
    result = run(ecus(tmp_path, 2), parallel, stop_time=0.01,
                 starts=(("ecu1.icount_shift", 99),))
    assert result.status == cosim.STATUS_FAILED
    assert "icount_shift" in result.message


def test_end_on_discard_ends_the_case_as_a_success(fmus, tmp_path, guests):
    """A guest that powers off when its job is done ends the run, its
    last output recorded; without end_on_discard that is a failure."""
    system, path = ecus(tmp_path, 2)
    starts = (("ecu1.guest_image", str(guests / "x86-poweroff.elf")),
              ("ecu1.qemu_system", "x86_64"), ("ecu1.machine", "pc"))
    results = {}
    for end in (False, True):
        settings = cosim.Settings(1.0, 1e-3, ("ecu1.console", "ecu0.qemu_time"),
                                  end_on_discard=end)
        results[end] = cosim.run_case(system, path, cosim.digest_of(path),
                                      Case("off", starts), settings)
    assert results[False].status == cosim.STATUS_FAILED
    ended = results[True]
    assert ended.status == cosim.STATUS_OK
    assert "ecu1: " in ended.message and "powered off" in ended.message
    # The rows of the failed run, and the discarded step's end.
    assert ended.time[:-1] == results[False].time
    assert ended.time[-1] < 1.0
    assert "".join(ended.values["ecu1.console"]) != ""
