"""Reading a CRM export for an adapter: a CSV, Parquet file or DataFrame as pandas, with the
spreadsheet row of every record, and the parsers that name the file, row, column and value
of the first thing they cannot read.

Shared by every ``from_<format>`` adapter; the functions here keep their signatures.

- :func:`read_frame`: the export as a DataFrame (CSV cells as text; only an empty cell is
  missing) with :data:`ROW`, the row as a spreadsheet numbers it (CSV and .xlsx: the header is row 1, so
  the first record is row 2; DataFrame and Parquet: the first record is row 1).
- :func:`require`: the columns an export must have, or a missing-column error with a guess.
- :func:`parse_datetime`, :func:`parse_number`, :func:`parse_flag`, :func:`parse_text`: typed
  columns, vectorised; the first bad cell raises :class:`FunnelDataError`.
- :func:`raise_at`: raise for the first row of a mask.
- :func:`outcome_of_label`: "won", "lost" or None from a stage label ("Closed Won").
- :func:`flow_order`: open stages in the order deals move through them.
- :func:`canonical`: the canonical log's columns, in order.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..data._files import ROW as FILE_ROW
from ..data._files import _check_file, missing_column_error, read_file
from ..errors import FunnelDataError

__all__ = ["ROW", "read_frame", "require", "raise_at", "parse_datetime", "parse_number", "parse_flag",
           "parse_text", "outcome_of_label", "flow_order", "canonical"]

ROW = FILE_ROW  # "_row": the record's row as a spreadsheet numbers it

TRUE = {"true", "1", "yes", "y", "t"}
FALSE = {"false", "0", "no", "n", "f", ""}


def read_frame(source, expected: tuple[str, ...] = (), encoding: str | None = None) -> tuple[str, pd.DataFrame]:
    """(a name for messages, the export as a DataFrame with a :data:`ROW` column).

    ``source`` is a .csv / .xlsx / .parquet path or a DataFrame (a workbook: its first sheet). A CSV's delimiter (comma, semicolon,
    tab) is detected from its header, guided by the ``expected`` column names; all its cells are
    text; ``encoding`` is its text encoding (default UTF-8; another is an error saying which to
    pass). An empty export is an error."""
    if isinstance(source, pd.DataFrame):
        name, frame, first = "DataFrame", source.reset_index(drop=True).copy(), 1
    else:
        path = Path(os.fspath(source))
        name = str(source)
        _check_file(path, name, "Export the table with a header row.")
        if path.suffix.lower() in (".parquet", ".pq"):
            try:
                frame = pd.read_parquet(path)
            except Exception as exc:  # any reader failure is a bad file
                raise FunnelDataError(f"cannot read Parquet: {str(exc).splitlines()[0]}", source=name) from None
            first = 1
        else:  # a CSV (all cells text) or a workbook's first sheet, numbered as the spreadsheet shows it
            name, arrow = read_file(path, name, tuple(expected), encoding=encoding)
            frame, first = arrow.to_pandas(), None
    if frame.empty:
        raise FunnelDataError("the export has a header but no rows", source=name, hint="Export at least one record.")
    rows = frame.pop(ROW).to_numpy(dtype=np.int64) if first is None else None
    frame.columns = [str(c).strip() for c in frame.columns]
    frame[ROW] = np.arange(first, first + len(frame), dtype=np.int64) if rows is None else rows
    return name, frame


def require(frame: pd.DataFrame, columns, source: str, what: str = "export") -> None:
    """Raise a missing-column error (with the closest present name) for the first of
    ``columns`` that ``frame`` lacks."""
    for column in columns:
        if column not in frame.columns:
            raise missing_column_error(column, list(frame.columns), source, f"which the {what} must have",
                                       "the CRM's export with its standard column names")


def raise_at(frame: pd.DataFrame, mask, source: str, column: str, problem: str, hint: str,
             value=None) -> None:
    """If ``mask`` (aligned with ``frame``) holds anywhere, raise for its first row (lowest
    :data:`ROW`), showing the cell of ``column`` (or ``value``, an aligned Series)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return
    position = int(np.flatnonzero(mask)[np.argmin(frame[ROW].to_numpy()[mask])])
    shown = (value.iloc[position] if value is not None
             else frame[column].iloc[position] if column in frame.columns else None)
    if shown is not None and _missing(shown):
        shown = None
    raise FunnelDataError(problem, source=source, row=int(frame[ROW].iloc[position]), column=column,
                          value=shown if shown is None else str(shown), hint=hint)


def _missing(value) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def parse_text(frame: pd.DataFrame, column: str, source: str, *, required: bool = True) -> pd.Series:
    """The column as stripped text (object dtype, None for blanks); with ``required`` a blank
    cell is an error."""
    raw = frame[column]
    text = raw.astype("string").str.strip()
    text = text.mask(text == "")
    if required:
        raise_at(frame, text.isna().to_numpy(), source, column, "this cell is empty",
                 f"Every row needs a {column}.")
    return text.astype(object).where(text.notna(), None)


def parse_datetime(frame: pd.DataFrame, column: str, source: str, *, required: bool = True,
                   dayfirst: bool = False) -> pd.Series:
    """The column as naive datetime64[ns]. ISO 8601 text first (``2024-01-31``,
    ``2024-01-31T10:05:00.000Z``, ``2024-01-31 10:05``); other spellings (``1/31/2024 10:05 AM``)
    are tried one by one. Times with a UTC offset are converted to UTC; naive ones are kept as
    written. Blank cells are NaT, or an error with ``required``."""
    raw = frame[column]
    if pd.api.types.is_datetime64_any_dtype(raw):
        parsed = raw.dt.tz_convert("UTC").dt.tz_localize(None) if raw.dt.tz is not None else raw
        parsed = parsed.astype("datetime64[ns]")
    else:
        text = raw.astype("string").str.strip()
        text = text.mask(text == "")
        parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
        retry = parsed.isna() & text.notna()
        if retry.any():
            parsed.loc[retry] = pd.to_datetime(text[retry], format="mixed", dayfirst=dayfirst, errors="coerce",
                                               utc=True)
        parsed = parsed.dt.tz_localize(None).astype("datetime64[ns]")
        raise_at(frame, (parsed.isna() & text.notna()).to_numpy(), source, column, "cannot read this as a date",
                 "Export dates as ISO 8601 (2024-01-31 or 2024-01-31T10:05:00Z).")
    if required:
        raise_at(frame, parsed.isna().to_numpy(), source, column, "this date is empty",
                 f"Every row needs a {column}.")
    return parsed


def parse_number(frame: pd.DataFrame, column: str, source: str) -> pd.Series:
    """The column as float64 (blank: NaN). Currency symbols and thousands commas are not
    guessed at: a cell that is not a plain number is an error."""
    raw = frame[column]
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        number = raw.astype("float64")
    else:
        text = raw.astype("string").str.strip()
        text = text.mask(text == "")
        number = pd.to_numeric(text, errors="coerce").astype("float64")
        raise_at(frame, (number.isna() & text.notna()).to_numpy(), source, column, "cannot read this as a number",
                 "Export amounts as plain numbers (1234.50), without currency signs or thousands separators.")
    raise_at(frame, ~np.isfinite(number.fillna(0).to_numpy()), source, column, "this number is not finite",
             "Export amounts as plain numbers.")
    return number


def parse_flag(frame: pd.DataFrame, column: str, source: str) -> pd.Series:
    """The column as bool: true/false, 1/0, yes/no (any case); blank is false."""
    raw = frame[column]
    if pd.api.types.is_bool_dtype(raw):
        return raw.astype(bool)
    text = raw.astype("string").str.strip().str.lower().fillna("")
    text = text.str.replace(r"\.0$", "", regex=True)
    known = text.isin(TRUE | FALSE)
    raise_at(frame, (~known).to_numpy(), source, column, "cannot read this as true or false",
             "Use true/false (or 1/0).")
    return text.isin(TRUE).astype(bool)


_WON = re.compile(r"\bwon\b", re.IGNORECASE)
_LOST = re.compile(r"\blost\b", re.IGNORECASE)


def outcome_of_label(label: str) -> str | None:
    """``"won"`` for a label with the word "won" ("Closed Won", "closedwon" too), ``"lost"``
    for "lost", else None."""
    text = re.sub(r"(?i)^closed(?=won|lost)", "closed ", str(label).strip())
    won, lost = bool(_WON.search(text)), bool(_LOST.search(text))
    if won == lost:
        return None
    return "won" if won else "lost"


def flow_order(deal: np.ndarray, stage: np.ndarray, timestamp: np.ndarray, stages) -> list[str]:
    """``stages`` in the order deals move through them.

    For every pair of stages, count the deals that first entered one before the other (deals
    that entered both); a stage is placed before another when more deals say so, and stages
    are ranked by how many others they precede (a Copeland ranking, so skips, back-moves and
    deals created further down do not upset it). Ties keep the order of ``stages``."""
    stages = list(stages)
    if len(stages) < 2:
        return stages
    frame = pd.DataFrame({"d": deal, "s": stage, "t": timestamp})
    frame = frame[frame["s"].isin(stages)]
    first = frame.groupby(["d", "s"], sort=False, observed=True)["t"].min().unstack("s")
    first = first.reindex(columns=stages)
    times = first.to_numpy(dtype="datetime64[ns]").astype("int64").astype("float64")
    times[first.isna().to_numpy()] = np.nan
    k = len(stages)
    before = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            if i != j:
                before[i, j] = np.count_nonzero(times[:, i] < times[:, j])
    wins = (before > before.T).sum(axis=1) + 0.5 * ((before == before.T).sum(axis=1) - 1)
    margin = (before - before.T).sum(axis=1)
    order = sorted(range(k), key=lambda i: (-wins[i], -margin[i], i))
    return [stages[i] for i in order]


def canonical(events: pd.DataFrame, attributes: pd.DataFrame | None = None, key: str = "deal_id") -> pd.DataFrame:
    """``events`` (deal_id, stage, timestamp, amount [, close_date]) with the deal attributes
    (a frame with ``key`` and one column per attribute) joined on, columns in canonical order."""
    columns = [c for c in ("deal_id", "stage", "timestamp", "amount", "close_date") if c in events.columns]
    events = events[columns].reset_index(drop=True)
    if attributes is not None and len(attributes.columns) > 1:
        attributes = attributes.drop_duplicates(key).set_index(key)
        clash = [c for c in attributes.columns if c in columns]
        attributes = attributes.rename(columns={c: f"{c}_attribute" for c in clash})
        joined = attributes.reindex(pd.Index(events["deal_id"]))
        for column in joined.columns:
            events[column] = joined[column].to_numpy()
    return events
