"""Sweeps: many co-simulation cases of one system, run on Dask workers.

    import qemufmu.sweep
    results = qemufmu.sweep.run("dist/closed_loop.ssp", "cases.csv",
                                stop_time=0.5, step=1e-3)
    summary = pandas.DataFrame(results.attrs["summary"])
    # case, status, message, wall_s, worker

Everything is checked before anything runs (the system, every CASES cell,
the recorded variables, the times).  Each case then runs in fmpy (see
``cosim``) on a Dask worker: by default a ``distributed.LocalCluster`` with
one single-threaded worker process per core, or the cluster whose scheduler
address is given.  Workers get the system file as bytes from the client
(scattered once to every worker, cached per host in ``cosim.cache_dir()``), so
no shared filesystem is needed; they need qemu-fmu installed.

Only sweep users import this module: it pulls in pandas and Dask, which the
FMU's slave (the same ``qemufmu`` package) must never need.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .cases import Case, cases_from_frame, read_cases
from .cosim import (
    STATUS_LOST,
    STATUS_OK,
    CaseResult,
    Settings,
    digest_of,
    materialize,
    run_case,
)
from .system import InputError, System, read_system

__all__ = ["InputError", "Plan", "prepare", "execute", "frames", "write", "run"]

SUMMARY_COLUMNS = ("case", "status", "message", "wall_s", "worker")
DTYPES = {"Real": "float64", "Integer": "int32", "Boolean": "bool", "String": "str"}


@dataclass
class Plan:
    """A checked sweep, ready to run."""

    path: Path
    system: System
    digest: str
    cases: list[Case]
    settings: Settings


def _times(stop_time: float, step: float) -> None:
    for name, value in (("stop time", stop_time), ("step", step)):
        if not (isinstance(value, int | float) and math.isfinite(value)
                and value > 0):
            raise InputError(f"the {name} must be a finite number > 0, "
                             f"not {value!r}")
    steps = round(stop_time / step)
    if steps < 1 or abs(steps * step - stop_time) > 1e-9 * stop_time:
        raise InputError(f"the stop time {stop_time!r} is not a whole number "
                         f"of steps of {step!r}")


def _record(system: System, record: Sequence[str] | None) -> tuple[str, ...]:
    columns = list(system.outputs() if record is None else record)
    if not columns:
        raise InputError("nothing to record: the system has no outputs "
                         "(name variables to record)")
    seen: set[str] = set()
    for column in columns:
        if column in ("case", "time") or column in seen:
            raise InputError(f"record: column {column!r} appears twice or "
                             "clashes with 'case'/'time'")
        seen.add(column)
        try:
            system.lookup(column)
        except KeyError as e:
            raise InputError(f"record: {column!r} {e.args[0]}") from None
    return tuple(columns)


def prepare(system: str | Path, cases, *, stop_time: float, step: float,
            record: Sequence[str] | None = None) -> Plan:
    """Check everything; InputError names the first problem (for CASES: row,
    case and column).  ``cases`` is a CSV path or a pandas DataFrame."""
    path = Path(system)
    model = read_system(path)
    if isinstance(cases, str | os.PathLike):
        checked = read_cases(model, Path(cases))
    else:
        checked = cases_from_frame(model, cases)
    _times(stop_time, step)
    settings = Settings(float(stop_time), float(step), _record(model, record))
    return Plan(path, model, digest_of(path), checked, settings)


def _bar(total: int, progress: bool | None):
    from tqdm.auto import tqdm
    # None: a bar only when stderr is a terminal.
    return tqdm(total=total, unit="case", disable=None if progress is None
                else not progress, desc="cases")


def _in_process(plan: Plan, progress: bool | None) -> list[CaseResult]:
    results = []
    with _bar(len(plan.cases), progress) as bar:
        for case in plan.cases:
            results.append(run_case(plan.system, plan.path, plan.digest, case,
                                    plan.settings))
            bar.update(1)
    return results


def _on_worker(data: bytes, digest: str, suffix: str, system: System, case: Case,
               settings: Settings) -> CaseResult:
    """The Dask task: one case on whichever worker runs it."""
    from distributed import get_worker

    path = materialize(data, digest, suffix)
    return run_case(system, path, digest, case, settings, get_worker().address)


def _importable(*modules: str) -> bool:
    for module in modules:
        importlib.import_module(module)
    return True


def _check_workers(client) -> None:
    client.wait_for_workers(1, timeout=60)
    try:
        client.run(_importable, "qemufmu.cosim", "fmpy", "distributed")
    except Exception as e:
        raise RuntimeError(f"a Dask worker cannot import qemu-fmu's sweep code "
                           f"({type(e).__name__}: {e}); install qemu-fmu on "
                           "every worker") from None


def _on_cluster(plan: Plan, client, progress: bool | None) -> list[CaseResult]:
    from distributed import as_completed

    _check_workers(client)
    # Once per worker, not once per task; every worker keeps a copy, so a
    # worker that dies takes no part of the sweep's input with it.
    (blob,) = client.scatter([plan.path.read_bytes()], broadcast=True)
    tag = f"{plan.digest[:8]}-{os.getpid()}-{id(plan):x}"
    todo = list(enumerate(plan.cases))[::-1]
    where: dict[str, int] = {}
    running = as_completed()
    futures = []
    results: list[CaseResult | None] = [None] * len(plan.cases)

    def top_up() -> None:
        # No more cases in flight than the cluster has threads: a worker
        # then holds only the case it runs, so one that dies takes that
        # case alone with it (Dask counts every task a dead worker held
        # towards allowed-failures), and new workers get work as they come.
        capacity = max(1, sum(client.nthreads().values()))
        while todo and running.count() < capacity:
            i, case = todo.pop()
            future = client.submit(_on_worker, blob, plan.digest, plan.path.suffix,
                                   plan.system, case, plan.settings, pure=False,
                                   key=f"qemu-fmu-case-{i}-{tag}")
            where[future.key] = i
            futures.append(future)
            running.add(future)

    try:
        with _bar(len(plan.cases), progress) as bar:
            top_up()
            for future in running:
                i = where[future.key]
                try:
                    results[i] = future.result()
                except Exception as e:
                    # KilledWorker: the workers running it kept dying (Dask
                    # reruns a case whose worker died, up to its
                    # distributed.scheduler.allowed-failures).
                    results[i] = CaseResult(plan.cases[i].name, STATUS_LOST,
                                            f"{type(e).__name__}: {e}")
                bar.update(1)
                top_up()
    finally:
        client.cancel([f for f in futures if not f.done()])
        client.cancel([blob])
    return results  # type: ignore[return-value]


@contextmanager
def _own_package_first():
    """Hide sys.path entries that hold another ``qemufmu`` (an FMU's
    resources/ that pythonfmu left at the front) while worker processes are
    spawned: they copy this process's path and must import this package."""
    ours = Path(__file__).resolve().parent.parent
    saved = list(sys.path)
    sys.path[:] = [p for p in saved
                   if not (Path(p or ".") / "qemufmu").is_dir()
                   or Path(p or ".").resolve() == ours]
    try:
        yield
    finally:
        sys.path[:] = saved


def execute(plan: Plan, *, scheduler: str | None = None, workers: int | None = None,
            client=None, in_process: bool = False,
            progress: bool | None = False) -> list[CaseResult]:
    """Run every case; results in CASES order.  ``client``: an existing
    ``distributed.Client``; else ``scheduler`` (an address), else a
    LocalCluster of ``workers`` processes (default: one per core)."""
    if in_process:
        return _in_process(plan, progress)
    if client is not None:
        return _on_cluster(plan, client, progress)
    import logging

    from distributed import Client, LocalCluster

    if scheduler is not None:
        with Client(scheduler, timeout="30s") as own:
            return _on_cluster(plan, own, progress)
    n = workers or os.cpu_count() or 1
    # For the whole run: the nannies respawn workers that die.
    with _own_package_first(), \
            LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                         dashboard_address=":0",
                         silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as own:
        return _on_cluster(plan, own, progress)


def frames(plan: Plan, results: list[CaseResult]):
    """(results, summary) as pandas DataFrames: one results row per case and
    recorded time point, typed by the model description."""
    import numpy as np
    import pandas as pd

    columns: dict[str, object] = {
        "case": pd.array([r.case for r in results for _ in r.time], dtype="str"),
        "time": np.array([t for r in results for t in r.time], dtype="float64"),
    }
    for column in plan.settings.record:
        kind = plan.system.lookup(column)[1].type
        values = [v for r in results for v in r.values.get(column, [])]
        columns[column] = pd.array(values, dtype=DTYPES[kind])
    table = pd.DataFrame(columns)
    summary = pd.DataFrame({
        "case": pd.array([r.case for r in results], dtype="str"),
        "status": pd.array([r.status for r in results], dtype="str"),
        "message": pd.array([r.message for r in results], dtype="str"),
        "wall_s": np.array([round(r.wall_s, 3) for r in results], dtype="float64"),
        "worker": pd.array([r.worker for r in results], dtype="str"),
    })
    return table, summary


def summary_path(out: Path) -> Path:
    """Where the summary CSV of results file ``out`` goes."""
    return out.with_name(out.stem + ".summary.csv")


def write(table, summary, out: Path) -> Path:
    """Results as Parquet at ``out``, the summary as CSV beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out, engine="pyarrow", index=False)
    summary.to_csv(summary_path(out), index=False)
    return summary_path(out)


def run(system: str | Path, cases, *, stop_time: float, step: float,
        record: Sequence[str] | None = None, scheduler: str | None = None,
        workers: int | None = None, client=None, in_process: bool = False,
        out: str | Path | None = None, progress: bool | None = None):
    """Check, run and collect a sweep; the results DataFrame (``case``,
    ``time``, one column per recorded variable) with the summary's rows in
    ``.attrs["summary"]`` (records, JSON-safe so that the frame still writes
    to Parquet).  With ``out``, also write both files."""
    plan = prepare(system, cases, stop_time=stop_time, step=step, record=record)
    results = execute(plan, scheduler=scheduler, workers=workers, client=client,
                      in_process=in_process, progress=progress)
    table, summary = frames(plan, results)
    if out is not None:
        write(table, summary, Path(out))
    table.attrs["summary"] = summary.to_dict("records")
    return table


__all__ += ["STATUS_OK", "summary_path", "SUMMARY_COLUMNS"]
