"""A sweep's CASES table, checked and typed against the system before any run.

Column ``case`` names each row; every other column is a start value,
``component.variable`` for an SSP and ``variable`` for a single FMU, typed
by the model description.  An empty cell keeps the model's own start value.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

from .system import SETTABLE, InputError, System

INTEGER = re.compile(r"[+-]?\d+")
BOOLEANS = {"true": True, "false": False, "1": True, "0": False}
INT32 = (-(2**31), 2**31 - 1)


@dataclass(frozen=True)
class Case:
    """One run: its name and its start values, ``(column, value)`` in column
    order, each value already of its variable's Python type."""

    name: str
    starts: tuple[tuple[str, object], ...]


def parse_value(kind: str, text: str) -> object:
    """``text`` as a value of FMI type ``kind``; ValueError says why not."""
    if kind == "Real":
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a Real") from None
        if not math.isfinite(value):
            raise ValueError(f"{text!r} is not a finite Real")
        return value
    if kind == "Integer":
        if not INTEGER.fullmatch(text.strip()):
            raise ValueError(f"{text!r} is not an Integer")
        value = int(text)
        if not INT32[0] <= value <= INT32[1]:
            raise ValueError(f"{text!r} does not fit a 32-bit Integer")
        return value
    if kind == "Boolean":
        try:
            return BOOLEANS[text.strip().lower()]
        except KeyError:
            raise ValueError(f"{text!r} is not a Boolean (true, false, 1, 0)") \
                from None
    return text


def _check_header(system: System, header: list[str], source: str) -> None:
    if not header or header[0] != "case":
        raise InputError(f"{source}: the first column must be 'case'")
    seen = set()
    for column in header[1:]:
        if column in seen:
            raise InputError(f"{source}: column {column!r} appears twice")
        seen.add(column)
        if column == "case":
            raise InputError(f"{source}: column 'case' appears twice")
        try:
            component, var = system.lookup(column)
        except KeyError as e:
            raise InputError(f"{source}: column {column!r} {e.args[0]}") from None
        if var.causality not in SETTABLE:
            raise InputError(f"{source}: column {column!r} is an {var.causality} "
                             "of its FMU; only parameters and inputs take start "
                             "values")


def cases_from_rows(system: System, header: list[str], rows: list[list[str]],
                    source: str) -> list[Case]:
    """Check and type every row; the first problem raises InputError naming
    its row (1 = first data row), case and column."""
    _check_header(system, header, source)
    types = [system.lookup(column)[1].type for column in header[1:]]
    cases, names = [], set()
    for number, row in enumerate(rows, start=1):
        where = f"{source}, row {number}"
        if len(row) != len(header):
            raise InputError(f"{where}: {len(row)} cells for {len(header)} columns")
        name = row[0].strip()
        if not name:
            raise InputError(f"{where}, column 'case': empty case name")
        if name in names:
            raise InputError(f"{where}, column 'case': case {name!r} appears twice")
        names.add(name)
        starts = []
        for column, kind, text in zip(header[1:], types, row[1:], strict=True):
            if text == "":
                continue
            try:
                starts.append((column, parse_value(kind, text)))
            except ValueError as e:
                raise InputError(f"{where} (case {name!r}), column {column!r}: "
                                 f"{e}") from None
        cases.append(Case(name, tuple(starts)))
    if not cases:
        raise InputError(f"{source}: no cases")
    return cases


def read_cases(system: System, path: Path) -> list[Case]:
    """The cases of a CSV file."""
    try:
        with path.open(newline="") as f:
            table = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{path}: {e}") from None
    table = [row for row in table if row]  # blank lines
    if not table:
        raise InputError(f"{path}: empty file")
    return cases_from_rows(system, [c.strip() for c in table[0]], table[1:],
                           str(path))


def _cell(value: object) -> str:
    """A DataFrame cell as CSV text; missing values are empty cells."""
    import pandas as pd

    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if value is None or pd.isna(value):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        # A column with gaps is float in pandas: 3.0 may be an Integer 3.
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 \
            else repr(value)
    return str(value)


def cases_from_frame(system: System, frame) -> list[Case]:
    """The cases of a pandas DataFrame with the same columns as the CSV."""
    header = [str(c) for c in frame.columns]
    rows = [[_cell(v) for v in row] for row in frame.itertuples(index=False)]
    return cases_from_rows(system, header, rows, "cases")
