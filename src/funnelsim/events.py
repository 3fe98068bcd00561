"""Read and validate a CRM event log.

The canonical log has one row per stage a deal entered (see DESIGN.md):

=========  ========  =======================================================
column     required  meaning
=========  ========  =======================================================
deal_id    yes       any string
stage      yes       stage (or won/lost outcome) the deal entered
timestamp  yes       when it entered it (ISO 8601; day-first on request)
amount     no        deal value known at that event (currency of the log)
others     no        deal attributes usable as segments (region, source, ...)
=========  ========  =======================================================

:func:`read_events` accepts a CSV or Parquet path, a pandas DataFrame or an Ibis
table, renames columns, parses timestamps and amounts, and checks the log. Every
problem raises :class:`FunnelDataError`, which names the source, the row as a
spreadsheet shows it (the header is row 1), the column, the bad value, and what to
do. All checks run as Ibis expressions, so a database table is validated where it
lives; only the offending row comes back to Python.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path

import ibis
import ibis.expr.datatypes as dt
import pandas as pd
import pyarrow as pa

__all__ = ["FunnelDataError", "FunnelDefinition", "EventLog", "read_events", "REQUIRED_COLUMNS"]

REQUIRED_COLUMNS = ("deal_id", "stage", "timestamp")
ROW = "_row"  # position of the event in its source, as a spreadsheet numbers it


class FunnelDataError(ValueError):
    """Bad input: the message says where (source, row, column), what, and what to do."""

    def __init__(self, problem: str, *, source: str | None = None, row: int | None = None,
                 column: str | None = None, value=None, hint: str | None = None):
        self.problem, self.source, self.row, self.column = problem, source, row, column
        self.value, self.hint = value, hint
        where = ", ".join(p for p in (
            source,
            f"row {row}" if row is not None else None,
            f"column '{column}'" if column else None,
        ) if p)
        shown = f" (value {value!r})" if value is not None else ""
        message = f"{where}: {problem}{shown}." if where else f"{problem}{shown}."
        if hint:
            message += f" {hint}"
        super().__init__(message)


@dataclass(frozen=True)
class FunnelDefinition:
    """The ordered open stages of a funnel and the labels that end a deal.

    Several labels may mean the same outcome (``won=("Closed Won", "Won")``); the
    first one names the outcome in tables.
    """

    stages: tuple[str, ...]
    won: tuple[str, ...]
    lost: tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("stages", "won", "lost"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = tuple(s.strip() for s in value.split(",") if s.strip())
            object.__setattr__(self, name, tuple(value))
        if not self.stages:
            raise FunnelDataError("the funnel has no open stages", hint="Give them in order, e.g. --stages Lead,Qualified,Proposal.")
        if not self.won:
            raise FunnelDataError("the funnel has no won label", hint="Name the stage that means a won deal, e.g. --won Won.")
        labels = self.stages + self.won + self.lost
        repeated = sorted({s for s in labels if labels.count(s) > 1})
        if repeated:
            raise FunnelDataError(f"label {repeated[0]!r} appears twice in the funnel definition",
                                  hint="Each stage and outcome label must be listed once.")

    @property
    def labels(self) -> tuple[str, ...]:
        """Every label a `stage` cell may hold."""
        return self.stages + self.won + self.lost

    @property
    def won_name(self) -> str:
        return self.won[0]

    @property
    def lost_name(self) -> str:
        return self.lost[0] if self.lost else "Lost"

    def to_dict(self) -> dict:
        return {"stages": list(self.stages), "won": list(self.won), "lost": list(self.lost)}


@dataclass
class EventLog:
    """A validated event log: an Ibis table with the canonical columns.

    ``table`` has ``deal_id`` (string), ``stage`` (string), ``timestamp``
    (timestamp), ``amount`` (float64, may be null), ``_row`` (source row, may be
    null for database tables) and the attribute columns. Sorting is not implied.
    """

    table: ibis.Table
    funnel: FunnelDefinition
    source: str
    attributes: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    def to_pandas(self) -> pd.DataFrame:
        """The events as a DataFrame ordered by deal and time (small logs only)."""
        return self.table.order_by(["deal_id", "timestamp", ROW]).to_pandas()

    def check_segment(self, segment_by: str | None) -> None:
        """Raise a clear error if ``segment_by`` is not a column of the log."""
        if segment_by and segment_by not in self.attributes:
            raise _missing_column_error(segment_by, self.attributes, self.source,
                                        "as a segment", "--segment-by")


# --------------------------------------------------------------------------- loading

def read_events(source, funnel: FunnelDefinition, *, columns: dict[str, str] | None = None,
                dayfirst: bool = False) -> EventLog:
    """Read, clean and validate an event log.

    Parameters
    ----------
    source : str, Path, pandas.DataFrame or ibis.Table
        A ``.csv`` / ``.parquet`` file, a DataFrame, or a table in any database Ibis reaches.
    funnel : FunnelDefinition
        The ordered open stages and the won / lost labels.
    columns : dict, optional
        Map from the log's column names to the canonical ones, e.g.
        ``{"Opportunity ID": "deal_id", "Stage": "stage", "Date": "timestamp"}``.
    dayfirst : bool
        Read text dates as day-first (``31-01-2024``, ``31/01/2024 14:05``).

    Raises
    ------
    FunnelDataError
        For a missing or empty file, a missing column, an unparseable timestamp, an
        unknown stage, a negative or non-numeric amount, an event after a deal's
        won/lost event, or two won/lost events for one deal.
    """
    name, raw = _load(source)
    table = _rename(raw, columns or {}, name)
    table = _canonical(table, name, dayfirst)
    _check_stages(table, funnel, name)
    table, n_duplicates = _drop_duplicates(table)
    table = _materialise(table)
    _check_terminal_order(table, funnel, name)
    notes = []
    if n_duplicates:
        notes.append(f"dropped {n_duplicates} exact duplicate row(s) from {name}")
    attributes = tuple(c for c in table.columns if c not in (*REQUIRED_COLUMNS, "amount", ROW))
    return EventLog(table, funnel, name, attributes, notes)


def _load(source) -> tuple[str, ibis.Table]:
    """Return (a name for messages, an Ibis table with a ``_row`` column)."""
    if isinstance(source, ibis.Table):
        return "table", source.mutate(**{ROW: ibis.null("int64")})
    if isinstance(source, pd.DataFrame):
        frame = source.reset_index(drop=True)
        arrow = pa.Table.from_pandas(frame, preserve_index=False)
        return "DataFrame", _memtable(arrow, first_row=1)
    path = Path(os.fspath(source))
    name = str(source)
    if not path.exists():
        raise FunnelDataError("file not found", source=name, hint="Check the path and the current directory.")
    if path.is_dir() or path.stat().st_size == 0:
        raise FunnelDataError("the file is empty" if not path.is_dir() else "this is a folder, not a file",
                              source=name, hint="Export the event log with a header row and one row per stage change.")
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            arrow = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise FunnelDataError(f"cannot read Parquet: {exc}", source=name) from None
        return name, _memtable(arrow, first_row=1)
    return name, _memtable(_read_csv(path, name), first_row=2)


def _read_csv(path: Path, name: str) -> pa.Table:
    """Read every column of a CSV as text; parsing happens in the database."""
    import pyarrow.csv as pacsv

    with open(path, newline="", encoding="utf-8-sig") as fh:
        header = fh.readline()
    if not header.strip():
        raise FunnelDataError("the first line is blank; expected a header row", source=name,
                              hint="Put the column names (deal_id,stage,timestamp,...) on line 1.")
    import csv

    names = next(csv.reader([header]))
    try:
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=True, block_size=1 << 24),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in names}, strings_can_be_null=True),
        )
    except pa.ArrowInvalid as exc:
        raise FunnelDataError(f"not a valid CSV: {str(exc).splitlines()[0]}", source=name,
                              hint="Every row needs the same number of comma-separated fields as the header.") from None


def _memtable(arrow: pa.Table, first_row: int) -> ibis.Table:
    import numpy as np

    rows = pa.array(np.arange(first_row, first_row + arrow.num_rows, dtype="int64"))
    return ibis.memtable(arrow.append_column(ROW, rows))


def _rename(table: ibis.Table, columns: dict[str, str], name: str) -> ibis.Table:
    missing_sources = [c for c in columns if c not in table.columns]
    if missing_sources:
        raise _missing_column_error(missing_sources[0], table.columns, name, "in the column mapping", "--columns")
    table = table.rename({canonical: theirs for theirs, canonical in columns.items()})
    for required in REQUIRED_COLUMNS:
        if required not in table.columns:
            raise _missing_column_error(required, [c for c in table.columns if c != ROW], name,
                                        "which is required", "a column mapping (--columns theirs=" + required + ")")
    if table.count().execute() == 0:
        raise FunnelDataError("the log has a header but no rows", source=name,
                              hint="Export at least one event per deal.")
    return table


def _missing_column_error(column, available, source, why, fix) -> FunnelDataError:
    available = [c for c in available if c != ROW]
    close = difflib.get_close_matches(column, available, n=1, cutoff=0.5)
    hint = f"Did you mean '{close[0]}'? " if close else ""
    hint += f"Columns present: {', '.join(available)}. Rename it or use {fix}."
    return FunnelDataError(f"there is no column '{column}' ({why})", source=source, hint=hint)


# --------------------------------------------------------------------------- parsing

def _canonical(table: ibis.Table, name: str, dayfirst: bool) -> ibis.Table:
    """Types and trims the canonical columns; raises on the first unparseable value."""
    deal = table.deal_id.cast("string").strip()
    stage = table.stage.cast("string").strip()
    _first_bad(table, deal.isnull() | (deal == ""), "deal_id", name,
               "the deal id is missing", "Every row needs the deal it belongs to.")
    timestamp = _parse_timestamp(table, name, dayfirst)
    mutations = {"deal_id": deal, "stage": stage, "timestamp": timestamp}
    mutations["amount"] = _parse_amount(table, name) if "amount" in table.columns else ibis.null("float64")
    return table.mutate(**mutations)


def _parse_timestamp(table: ibis.Table, name: str, dayfirst: bool) -> ibis.Value:
    raw = table.timestamp
    if raw.type().is_timestamp():
        parsed = raw.cast(dt.Timestamp())  # drop any time zone: stage dates are local business dates
    elif raw.type().is_date():
        parsed = raw.cast("timestamp")
    else:
        text = raw.cast("string").strip()
        if dayfirst:
            text = text.re_replace(r"^(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})", r"\3-\2-\1")
            text = _zero_pad_iso(text)
        parsed = text.replace("T", " ").try_cast("timestamp")
    hint = ("Use ISO 8601 dates (2024-03-31 or 2024-03-31 14:05)"
            + ("." if dayfirst else ", or pass --dayfirst for 31-03-2024."))
    _first_bad(table, raw.notnull() & parsed.isnull(), "timestamp", name, "cannot read this as a date", hint)
    _first_bad(table, raw.isnull(), "timestamp", name, "the timestamp is missing",
               "Every event needs the date the deal entered the stage.")
    return parsed


def _zero_pad_iso(text: ibis.StringValue) -> ibis.StringValue:
    """2024-3-5 -> 2024-03-05 so the database's ISO parser accepts it."""
    text = text.re_replace(r"^(\d{4})-(\d)-", r"\1-0\2-")
    return text.re_replace(r"^(\d{4})-(\d{2})-(\d)(\D|$)", r"\1-\2-0\3\4")


def _parse_amount(table: ibis.Table, name: str) -> ibis.Value:
    raw = table.amount
    if raw.type().is_numeric():
        amount = raw.cast("float64")
    else:
        text = raw.cast("string").strip()
        amount = text.try_cast("float64")
        _first_bad(table, (text != "") & amount.isnull(), "amount", name, "the amount is not a number",
                   "Write amounts as plain numbers (12500.50) without currency signs or thousands separators.")
    _first_bad(table, amount < 0, "amount", name, "the amount is negative",
               "Deal values must be zero or more; fix the row or leave the amount empty.")
    return amount


def _first_bad(table: ibis.Table, bad: ibis.BooleanValue, column: str, name: str, problem: str, hint: str):
    """Raise FunnelDataError for the first row where ``bad`` holds, if any."""
    offender = table.filter(bad).order_by([ROW]).select(ROW, "deal_id", value=table[column]).limit(1).to_pandas()
    if len(offender):
        raise FunnelDataError(problem, source=name, row=_row_of(offender.iloc[0]), column=column,
                              value=_plain(offender["value"].iloc[0]), hint=hint)


def _row_of(record) -> int | None:
    row = record[ROW]
    return None if pd.isna(row) else int(row)


def _plain(value):
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return str(value)
    return value.item() if hasattr(value, "item") else value


def _materialise(table: ibis.Table) -> ibis.Table:
    """Store the parsed log once in its backend (a temporary table) so later steps
    do not parse the text again. (``Table.cache`` would do, but its clean-up fails
    at interpreter exit with DuckDB 2.)"""
    import uuid

    backend = table._find_backend(use_default=True)
    return backend.create_table(f"funnelsim_events_{uuid.uuid4().hex[:12]}", table, temp=True)


# --------------------------------------------------------------------------- checks

def _check_stages(table: ibis.Table, funnel: FunnelDefinition, name: str) -> None:
    seen = table.group_by("stage").agg(**{ROW: table[ROW].min()}).to_pandas()
    known = set(funnel.labels)
    unknown = seen[~seen["stage"].isin(known)].sort_values(ROW)
    if len(unknown):
        first = unknown.iloc[0]
        label = first["stage"]
        lower = {s.lower(): s for s in funnel.labels}
        close = ([lower[label.lower()]] if label and label.lower() in lower
                 else difflib.get_close_matches(label or "", funnel.labels, n=1, cutoff=0.4))
        hint = f"Did you mean '{close[0]}'? " if close else ""
        hint += (f"Known stages: {', '.join(funnel.stages)}; won: {', '.join(funnel.won)}; "
                 f"lost: {', '.join(funnel.lost) or '(none)'}. Add it to --stages/--won/--lost or fix the row.")
        more = f"unknown stage (and {len(unknown) - 1} other unknown label(s))" if len(unknown) > 1 else "unknown stage"
        raise FunnelDataError(more, source=name, row=_row_of(first), column="stage", value=label, hint=hint)


def _drop_duplicates(table: ibis.Table) -> tuple[ibis.Table, int]:
    """Keep the first of each set of exactly equal rows; return the count dropped."""
    keys = [c for c in table.columns if c != ROW]
    deduped = table.group_by(keys).agg(**{ROW: table[ROW].min()}).select(*table.columns)
    dropped = int(table.count().execute()) - int(deduped.count().execute())
    return (deduped if dropped else table), dropped


def _check_terminal_order(table: ibis.Table, funnel: FunnelDefinition, name: str) -> None:
    """A won/lost event ends a deal: nothing may follow it, not even another outcome."""
    terminal = table.stage.isin(list(funnel.won + funnel.lost))
    window = ibis.cumulative_window(group_by="deal_id", order_by=["timestamp", ROW])
    prior = terminal.cast("int64").sum().over(window) - terminal.cast("int64")
    offenders = (table.mutate(_terminal=terminal, _prior=prior)
                 .filter(lambda t: t._prior.fill_null(0) > 0)
                 .order_by([ROW, "deal_id", "timestamp"]).limit(1).to_pandas())
    if not len(offenders):
        return
    bad = offenders.iloc[0]
    if bad["_terminal"]:
        raise FunnelDataError(f"deal {bad['deal_id']!r} has a second won/lost event", source=name,
                              row=_row_of(bad), column="stage", value=bad["stage"],
                              hint="A deal ends once; keep one outcome row per deal "
                                   "(a reopened deal needs a new deal_id).")
    raise FunnelDataError(f"deal {bad['deal_id']!r} has an event after it was won or lost", source=name,
                          row=_row_of(bad), column="stage", value=bad["stage"],
                          hint="Remove events after the outcome, or if the deal was reopened give it a new deal_id.")
