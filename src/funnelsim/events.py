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
ORDER = "_order"  # sort key of a deal's events: seconds since 1970 x 2, + 1 for won/lost


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
        return self.table.order_by(["deal_id", *event_order()]).drop(ORDER).to_pandas()

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
    raw = _rename(raw, columns or {}, name)
    typed, checks = _typed(raw, funnel, dayfirst)
    table = _materialise(typed)
    scan = _scan(table)
    if scan["problems"]:
        _raise_first_problem(table, checks, funnel, name)
    table = table.drop("_problem", "_bad_value")
    notes = []
    if scan["distinct"] < scan["rows"]:
        table = _materialise(_drop_duplicates(table))
        notes.append(f"dropped {scan['rows'] - scan['distinct']} exact duplicate row(s) from {name}")
    _check_outcomes(table, funnel, name)
    attributes = tuple(c for c in table.columns if c not in (*REQUIRED_COLUMNS, "amount", ROW, ORDER))
    return EventLog(table, funnel, name, attributes, notes)


def _load(source) -> tuple[str, ibis.Table]:
    """Return (a name for messages, an Ibis table with a ``_row`` column)."""
    if isinstance(source, ibis.Table):  # no row numbers in a database: number rows deterministically
        order = [c for c in ("deal_id", "timestamp", "stage") if c in source.columns]
        return "table", source.mutate(**{ROW: ibis.row_number().over(order_by=order) + 1})
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
    if path.suffix.lower() in (".parquet", ".pq"):  # DuckDB reads it in place, in parallel
        try:
            table = ibis.get_backend().read_parquet(path, file_row_number=True)
            table.count().execute()
        except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
            raise FunnelDataError(f"cannot read Parquet: {str(exc).splitlines()[0]}", source=name) from None
        return name, table.rename({ROW: "file_row_number"}).mutate(**{ROW: ibis._[ROW] + 1})
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
#
# Parsing and row checks happen in one pass: each row gets the first problem it has
# (``_problem``, an index into the list of checks) and the offending text
# (``_bad_value``). Only when some row has a problem does a second query fetch the
# first such row to describe it.

@dataclass(frozen=True)
class _Check:
    column: str
    problem: str
    hint: str


def _typed(table: ibis.Table, funnel: FunnelDefinition, dayfirst: bool) -> tuple[ibis.Table, list[_Check]]:
    """The canonical columns, typed, plus ``_problem`` / ``_bad_value`` per row."""
    deal = table.deal_id.cast("string").strip()
    stage = table.stage.cast("string").strip()
    timestamp, timestamp_checks = _parse_timestamp(table.timestamp, dayfirst)
    if "amount" in table.columns:
        amount, amount_checks = _parse_amount(table.amount)
    else:
        amount, amount_checks = ibis.null("float64"), []
    checks = [
        (deal.isnull() | (deal == ""), table.deal_id,
         _Check("deal_id", "the deal id is missing", "Every row needs the deal it belongs to.")),
        *timestamp_checks,
        (stage.isnull() | ~stage.isin(list(funnel.labels)), table.stage, _Check("stage", "unknown stage", "")),
        *amount_checks,
    ]
    problem = ibis.cases(*[(bad, i) for i, (bad, _, _) in enumerate(checks)], else_=ibis.null("int64"))
    bad_value = ibis.cases(*[(bad, raw.cast("string")) for bad, raw, _ in checks], else_=ibis.null("string"))
    outcome = stage.isin(list(funnel.won + funnel.lost)).cast("int64")
    typed = table.mutate(deal_id=deal, stage=stage, timestamp=timestamp, amount=amount,
                         _problem=problem, _bad_value=bad_value,
                         **{ORDER: timestamp.epoch_seconds().cast("int64") * 2 + outcome})
    return typed, [check for _, _, check in checks]


def _parse_timestamp(raw: ibis.Value, dayfirst: bool):
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
    return parsed, [
        (raw.isnull(), raw, _Check("timestamp", "the timestamp is missing",
                                   "Every event needs the date the deal entered the stage.")),
        (parsed.isnull(), raw, _Check("timestamp", "cannot read this as a date", hint)),
    ]


def _zero_pad_iso(text: ibis.StringValue) -> ibis.StringValue:
    """2024-3-5 -> 2024-03-05 so the database's ISO parser accepts it."""
    text = text.re_replace(r"^(\d{4})-(\d)-", r"\1-0\2-")
    return text.re_replace(r"^(\d{4})-(\d{2})-(\d)(\D|$)", r"\1-\2-0\3\4")


def _parse_amount(raw: ibis.Value):
    checks = []
    if raw.type().is_numeric():
        amount = raw.cast("float64")
    else:
        text = raw.cast("string").strip()
        amount = text.try_cast("float64")
        checks.append(((text != "") & amount.isnull(), raw, _Check(
            "amount", "the amount is not a number",
            "Write amounts as plain numbers (12500.50) without currency signs or thousands separators.")))
    checks.append((amount < 0, raw, _Check(
        "amount", "the amount is negative", "Deal values must be zero or more; fix the row or leave the amount empty.")))
    return amount, checks


def _raise_first_problem(table: ibis.Table, checks: list[_Check], funnel: FunnelDefinition, name: str):
    first = (table.filter(table._problem.notnull()).order_by([ROW, "deal_id", "timestamp"])
             .select(ROW, "_problem", "_bad_value").limit(1).to_pandas().iloc[0])
    check = checks[int(first["_problem"])]
    value = None if pd.isna(first["_bad_value"]) else first["_bad_value"]
    hint = _stage_hint(value, funnel) if check.column == "stage" else check.hint
    raise FunnelDataError(check.problem, source=name, row=_row_of(first), column=check.column,
                          value=value, hint=hint)


def _row_of(record) -> int | None:
    row = record[ROW]
    return None if pd.isna(row) else int(row)


def _materialise(table: ibis.Table) -> ibis.Table:
    """Store a table once in its backend (a temporary table) so later steps do not
    recompute it. (``Table.cache`` would do, but its clean-up fails at interpreter
    exit with DuckDB 2.)"""
    import uuid

    backend = table._find_backend(use_default=True)
    return backend.create_table(f"funnelsim_{uuid.uuid4().hex[:12]}", table, temp=True)


# --------------------------------------------------------------------------- checks

def _stage_hint(label: str | None, funnel: FunnelDefinition) -> str:
    lower = {s.lower(): s for s in funnel.labels}
    close = ([lower[label.lower()]] if label and label.lower() in lower
             else difflib.get_close_matches(label or "", funnel.labels, n=1, cutoff=0.4))
    hint = f"Did you mean '{close[0]}'? " if close else ""
    return hint + (f"Known stages: {', '.join(funnel.stages)}; won: {', '.join(funnel.won)}; "
                   f"lost: {', '.join(funnel.lost) or '(none)'}. Add it to --stages/--won/--lost or fix the row.")


def _scan(table: ibis.Table) -> dict:
    """One pass: rows, rows with a problem, and distinct rows (to spot duplicates)."""
    content = [c for c in table.columns if c not in (ROW, ORDER, "_problem", "_bad_value")]
    row_hash = ibis.struct({c: table[c] for c in content}).hash()
    result = table.aggregate(rows=table.count(), problems=table._problem.notnull().cast("int64").sum(),
                             distinct=row_hash.nunique()).to_pandas().iloc[0]
    return {k: int(0 if pd.isna(v) else v) for k, v in result.items()}


def _drop_duplicates(table: ibis.Table) -> ibis.Table:
    """Keep the first of each set of exactly equal rows."""
    keys = [c for c in table.columns if c not in (ROW, ORDER)]
    return table.group_by(keys).agg(**{ROW: table[ROW].min(), ORDER: table[ORDER].min()}).select(*table.columns)


def event_order() -> list[str]:
    """Sort keys that order a deal's events: by time (to the second); at equal times
    a won/lost event comes last (a date-only log often has the last stage and the
    outcome on the same day), then by source row."""
    return [ORDER, ROW]


def _check_outcomes(table: ibis.Table, funnel: FunnelDefinition, name: str) -> None:
    """A won/lost event ends a deal: nothing may follow it, not even another outcome.

    A per-deal aggregate finds whether any deal breaks the rule; only then does a
    window query find the first offending row."""
    terminal = table.stage.isin(list(funnel.won + funnel.lost))
    per_deal = table.group_by("deal_id").aggregate(
        outcomes=terminal.cast("int64").sum(),
        outcome_at=table.timestamp.max(where=terminal),
        last_open_at=table.timestamp.max(where=~terminal),
    )
    broken = per_deal.filter((per_deal.outcomes > 1) | (per_deal.last_open_at > per_deal.outcome_at))
    if int(broken.count().execute()):
        _raise_first_after_outcome(table, funnel, name)


def _raise_first_after_outcome(table: ibis.Table, funnel: FunnelDefinition, name: str) -> None:
    terminal = table.stage.isin(list(funnel.won + funnel.lost))
    window = ibis.cumulative_window(group_by="deal_id", order_by=event_order())
    prior = terminal.cast("int64").sum().over(window) - terminal.cast("int64")
    offenders = (table.mutate(_terminal=terminal, _prior=prior)
                 .filter(lambda t: t._prior.fill_null(0) > 0)
                 .order_by([ROW, "deal_id", "timestamp"]).limit(1).to_pandas())
    bad = offenders.iloc[0]
    if bad["_terminal"]:
        raise FunnelDataError(f"deal {bad['deal_id']!r} has a second won/lost event", source=name,
                              row=_row_of(bad), column="stage", value=bad["stage"],
                              hint="A deal ends once; keep one outcome row per deal "
                                   "(a reopened deal needs a new deal_id).")
    raise FunnelDataError(f"deal {bad['deal_id']!r} has an event after it was won or lost", source=name,
                          row=_row_of(bad), column="stage", value=bad["stage"],
                          hint="Remove events after the outcome, or if the deal was reopened give it a new deal_id.")
