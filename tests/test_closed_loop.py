"""The firmware-in-the-loop demo: PI controller firmware on QEMU and a DC motor.

The SSP file (make closed-loop) runs under fmpy and libcosimpy.
"""

from __future__ import annotations

import re
import sys
import zipfile

import numpy as np
import pytest

from helpers import REPO

sys.path.insert(0, str(REPO / "examples" / "closed_loop"))

from run import metrics, simulate_fmpy, simulate_libcosim  # noqa: E402

STOP = 0.3
MASTERS = {"fmpy": simulate_fmpy, "libcosim": simulate_libcosim}


@pytest.fixture(scope="module")
def plant(ssp, tmp_path_factory) -> dict[str, float]:
    """The DC motor's parameters, as the plant FMU declares them."""
    from fmpy import read_model_description
    fmu = tmp_path_factory.mktemp("plant") / "DcMotor.fmu"
    with zipfile.ZipFile(ssp) as z:
        fmu.write_bytes(z.read("resources/DcMotor.fmu"))
    return {v.name: float(v.start) for v in
            read_model_description(str(fmu)).modelVariables
            if v.causality == "parameter"}


def firmware_constant(name: str) -> float:
    """A `#define NAME value` of the controller firmware: its law
    (firmware/lib/pi_law.h) or its sampling (firmware/arm/pi.c)."""
    text = "".join((REPO / "firmware" / f).read_text()
                   for f in ("lib/pi_law.h", "arm/pi.c"))
    return float(re.search(rf"^#define {name}\s+([-\d.e]+)", text, re.M)[1])


@pytest.fixture(scope="module")
def runs(ssp) -> dict:
    """Each master twice at 1 ms, fmpy once at 0.5 ms."""
    out = {(name, k): run(ssp, 1e-3, STOP)
           for name, run in MASTERS.items() for k in range(2)}
    out[("fmpy", "half")] = simulate_fmpy(ssp, 0.5e-3, STOP)
    return out


def _bytes(run: dict) -> bytes:
    return b"".join(np.ascontiguousarray(run[c]).tobytes() for c in sorted(run))


@pytest.mark.parametrize("master", MASTERS)
def test_same_ssp_twice_is_byte_identical(runs, master):
    assert _bytes(runs[(master, 0)]) == _bytes(runs[(master, 1)])


def test_both_masters_compute_the_same_loop(runs):
    a, b = runs[("fmpy", 0)], runs[("libcosim", 0)]
    # fmpy sums its float step sizes, libcosim counts integer nanoseconds.
    assert np.allclose(a["time"], b["time"], rtol=0, atol=1e-12)
    # The plant's exp(-h/tau) sees h rounded differently in the last bit.
    for column in ("speed", "voltage", "setpoint", "next_event_time"):
        assert np.allclose(a[column], b[column], rtol=1e-12, atol=1e-12), column


def test_the_controller_settles(runs, plant):
    """The targets README.md states for the demo's step response."""
    m = metrics(runs[("fmpy", 0)])
    assert m["step_time"] == pytest.approx(plant["step_time"], abs=1e-3)
    assert m["settling_time"] < 0.15
    assert m["overshoot_percent"] < 5
    assert abs(m["final_error"]) < 1e-3 * plant["step_value"]


def test_a_response_not_settled_by_the_end_has_no_settling_time(runs, plant):
    """metrics() of a run cut off before the speed settles (the demo with a
    short --stop-time) says NaN, where it used to fail with an IndexError."""
    full = runs[("fmpy", 0)]
    end = np.searchsorted(full["time"], plant["step_time"] + 0.02)
    cut = {column: values[:end] for column, values in full.items()}
    assert np.isnan(metrics(cut)["settling_time"])
    assert not np.isnan(metrics(full)["settling_time"])


def test_step_size_does_not_move_the_sample_instants(runs, plant):
    """The firmware samples on its own SysTick: the same instants whatever
    the master's step, and a response within one sample period's effect."""
    full, half = runs[("fmpy", 0)], runs[("fmpy", "half")]
    ticks_full = set(np.round(full["next_event_time"], 9))
    ticks_half = set(np.round(half["next_event_time"], 9))
    assert ticks_full == ticks_half
    period = firmware_constant("TS")
    assert len(ticks_full) >= STOP / period - 1
    # One sample period more or less of delay moves the speed by at most its
    # fastest rate times that period: gain * V_MAX / time_constant * period.
    bound = (plant["gain"] * firmware_constant("V_MAX") / plant["time_constant"]
             * period)
    common = np.isin(np.round(half["time"], 9), np.round(full["time"], 9))
    deviation = np.abs(half["speed"][common] - full["speed"])
    assert deviation.max() <= bound
    # A period of delay, plus one (1 ms) step of resolution.
    assert (abs(metrics(half)["settling_time"] - metrics(full)["settling_time"])
            <= period + 1e-3 + 1e-9)
