"""A command's results as tables an analyst can take away: one CSV per table, or one workbook.

The tables are cut from the command's ``--json`` payload (:func:`payload_tables`), so the
exports and the JSON hold the same numbers by construction:

- every top-level list of records (``periods``, ``deals``, ``stages``, ``scenarios``,
  ``origins``, ``bottlenecks``...) is a table of that name, one row per record; nested records
  become dotted columns (``p_advance.mean``, ``baselines.weighted``), exactly the JSON path;
- a list of records inside a top-level object is a table named by its path with ``_``
  (``track_record_origins``);
- the top-level values and objects of values (``as_of``, ``pipeline_revenue``, ``diagnostics``,
  ``target``, ``settings``...) are the ``summary`` table: one ``field``/``value`` row each,
  ``field`` the dotted JSON path (``pipeline_revenue.p10``);
- the per-draw ``samples`` lists are the ``samples`` table, one column per list (``pipeline_revenue``,
  ``total_revenue``), one row per draw; other lists of values are joined with ``"; "``.

Text from the log (deal ids, stages, segments) is written so a spreadsheet never runs it as a
formula (CSV/formula injection, OWASP): in a CSV a text cell beginning with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return gets a leading ``'``; in a workbook it is stored as text
(never a formula) with Excel's quote prefix. Numbers stay numbers; a text cell that is just a
number (``-5``) cannot be a formula and is left alone. Every file is written atomically.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from .._io import atomic_write, json_safe, ordinary_mode

__all__ = ["payload_tables", "write_csv_tables", "write_xlsx", "write_tables", "safe_text", "SUMMARY", "SAMPLES"]

SUMMARY = "summary"
SAMPLES = "samples"
_RISKY = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _is_records(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _flat(record: dict, prefix: str = "") -> dict:
    """One record with nested objects as dotted keys; lists of values joined with "; "."""
    row = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            row |= _flat(value, f"{name}.")
        elif isinstance(value, list):
            row[name] = "; ".join("" if v is None else str(v) for v in value)
        else:
            row[name] = value
    return row


def payload_tables(payload: dict) -> dict[str, pd.DataFrame]:
    """The tables of a command's JSON payload (see the module doc), ``summary`` first, then
    the tables in the payload's order, then ``samples``."""
    payload = json_safe(payload)
    summary: list[tuple[str, object]] = []
    tables: dict[str, pd.DataFrame] = {}
    samples: dict[str, list] = {}

    def walk(value, path: tuple[str, ...]) -> None:
        name = ".".join(path)
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, (*path, key))
        elif _is_records(value) or (isinstance(value, list) and not value and len(path) == 1):
            rows = [_flat(r) for r in value]
            columns = list(dict.fromkeys(k for r in rows for k in r))
            tables["_".join(path)] = pd.DataFrame(rows, columns=columns)
        elif isinstance(value, list) and path[-1] == "samples":
            samples[".".join(path[:-1])] = value
        elif isinstance(value, list):
            summary.append((name, "; ".join("" if v is None else str(v) for v in value)))
        else:
            summary.append((name, value))

    for key, value in payload.items():
        walk(value, (key,))
    result = {SUMMARY: pd.DataFrame(summary, columns=["field", "value"])} if summary else {}
    result |= tables
    if samples:
        result[SAMPLES] = pd.DataFrame({name: pd.Series(values, dtype=float) for name, values in samples.items()})
    return result


def safe_text(value):
    """``value`` as a spreadsheet should show it: a text cell a spreadsheet would read as a
    formula gets a leading ``'`` (OWASP's advice for CSV); anything else is unchanged."""
    if isinstance(value, str) and value.startswith(_RISKY) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def _risky(value) -> bool:
    return safe_text(value) is not value


def _csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.rename(columns=safe_text)
    text = [c for c in frame.columns if frame[c].dtype == object or pd.api.types.is_string_dtype(frame[c])]
    return frame.assign(**{c: frame[c].map(safe_text) for c in text}) if text else frame


def write_csv_tables(tables: dict[str, pd.DataFrame], folder) -> list[Path]:
    """One ``NAME.csv`` per table in ``folder`` (created if missing; other files kept): UTF-8
    with a byte-order mark, so Excel reads accents right. The files are written to a temp
    folder beside it, then each moved into place: an error leaves none of them half-written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder))
    try:
        written = []
        for name, frame in tables.items():
            path = staging / f"{name}.csv"
            _csv_frame(frame).to_csv(path, index=False, encoding="utf-8-sig")
            os.chmod(path, ordinary_mode())
            written.append(path)
        for path in written:
            os.replace(path, folder / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [folder / path.name for path in written]


def write_xlsx(tables: dict[str, pd.DataFrame], path) -> Path:
    """The tables as the sheets of one workbook (openpyxl), atomically. Text is stored as
    text, never as a formula, with Excel's quote prefix where it begins with ``=``, ``+``,
    ``-``, ``@``, a tab or a carriage return."""

    def write(tmp: Path) -> None:
        with pd.ExcelWriter(tmp, engine="openpyxl") as writer:
            for name, frame in tables.items():
                frame.to_excel(writer, sheet_name=name[:31], index=False)
            for sheet in writer.book.worksheets:
                for row in sheet.iter_rows():
                    for cell in row:
                        if isinstance(cell.value, str) and _risky(cell.value):
                            cell.data_type = "s"         # openpyxl makes any "=..." string a formula
                            cell.quotePrefix = True      # and Excel keeps it text when edited
                for column in sheet.columns:          # a readable width: the longest cell, within reason
                    width = max(len(str(c.value)) if c.value is not None else 0 for c in column)
                    sheet.column_dimensions[column[0].column_letter].width = min(max(width + 2, 8), 60)
                sheet.freeze_panes = "A2"

    return atomic_write(path, write)


def write_tables(payload: dict, *, csv=None, xlsx=None) -> list[Path]:
    """Write ``payload``'s tables (:func:`payload_tables`) as CSVs in the folder ``csv`` and/or
    the workbook ``xlsx``; returns the files written."""
    if csv is None and xlsx is None:
        return []
    tables = payload_tables(payload)
    written = []
    if csv is not None:
        written += write_csv_tables(tables, csv)
    if xlsx is not None:
        written.append(write_xlsx(tables, xlsx))
    return written
