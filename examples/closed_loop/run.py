"""Run the closed-loop SSP with fmpy or libcosimpy and judge the response.

Both runners return the same columns, sampled at the end of every step:
time, setpoint, speed (plant output), voltage (controller output) and
next_event_time (when the controller firmware's timer fires next).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

COLUMNS = ("time", "setpoint", "speed", "voltage", "next_event_time")


def _inline_parameters(ssp: Path):
    """The components' inline parameter values, as fmpy wants them passed:
    fmpy 0.3 reads a component's ParameterBindings but does not apply them."""
    from fmpy.ssp.ssd import Parameter, ParameterSet, read_ssd

    found = []
    for component in read_ssd(str(ssp)).system.elements:
        for binding in component.parameterBindings:
            for values in binding.parameterValues:
                found += [Parameter(name=f"{component.name}.{p.name}", type=p.type,
                                    value=p.value) for p in values.parameters]
    return ParameterSet(parameters=found) if found else None


def simulate_fmpy(ssp: Path, step: float, stop: float) -> dict[str, np.ndarray]:
    """fmpy.ssp: a fixed-step Jacobi master over the SSP's components."""
    from fmpy.ssp.simulation import simulate_ssp

    rows = simulate_ssp(str(ssp), stop_time=stop, step_size=step,
                        parameter_set=_inline_parameters(ssp))
    # fmpy stamps each row with the step's start; the values are its end's.
    return {"time": rows["time"] + step, "setpoint": rows["plant.setpoint"],
            "speed": rows["plant.speed"], "voltage": rows["ecu.voltage"],
            "next_event_time": rows["ecu.next_event_time"]}


def simulate_libcosim(ssp: Path, step: float, stop: float) -> dict[str, np.ndarray]:
    """libcosimpy (Open Simulation Platform) running the same SSP file."""
    from libcosimpy.CosimEnums import CosimVariableType
    from libcosimpy.CosimExecution import CosimExecution
    from libcosimpy.CosimLogging import CosimLogLevel, log_output_level
    from libcosimpy.CosimObserver import CosimObserver

    log_output_level(CosimLogLevel.WARNING)  # not every FMU log line

    step_ns = round(step * 1e9)
    steps = round(stop / step)
    execution = CosimExecution.from_ssp_file(str(ssp), step_size=step_ns)
    index = {i.name.decode(): i.index for i in execution.slave_infos()}
    refs = {name: {v.name.decode(): v.reference
                   for v in execution.slave_variables(i)}
            for name, i in index.items()}
    observer = CosimObserver.create_time_series(buffer_size=steps + 10)
    execution.add_observer(observer)
    probes = {"setpoint": ("plant", "setpoint"), "speed": ("plant", "speed"),
              "voltage": ("ecu", "voltage"),
              "next_event_time": ("ecu", "next_event_time")}
    for slave, var in probes.values():
        observer.start_time_series(index[slave], refs[slave][var],
                                   CosimVariableType.REAL)
    if not execution.simulate_until(steps * step_ns):
        raise RuntimeError("libcosim stopped before the end; see its log")
    result = {}
    for column, (slave, var) in probes.items():
        times, _, values = observer.time_series_real_samples(
            index[slave], refs[slave][var], 1, steps)
        result[column] = np.array(values, dtype=float)
        result["time"] = np.array(times, dtype=float) * 1e-9
    del execution
    return result


def metrics(run: dict[str, np.ndarray], band: float = 0.02) -> dict[str, float]:
    """Step-response figures after the set-point step."""
    t, sp, y = run["time"], run["setpoint"], run["speed"]
    stepped = np.nonzero(sp > 0)[0]
    if not len(stepped):
        raise ValueError("the set-point never stepped")
    t0, target = t[stepped[0]], sp[-1]
    after = slice(stepped[0], None)
    outside = np.nonzero(np.abs(y[after] - target) > band * abs(target))[0]
    if not len(outside):
        settled = t0
    elif outside[-1] + 1 < len(t[after]):
        settled = t[after][outside[-1] + 1]
    else:  # still outside the band at the end: not settled
        settled = float("nan")
    return {
        "step_time": float(t0),
        "settling_time": float(settled - t0),
        "overshoot_percent": float(max(0.0, (y[after].max() - target) / target * 100)),
        "final_error": float(target - y[-1]),
    }
