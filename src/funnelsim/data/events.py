"""Read and validate a CRM event log.

The canonical log has one row per stage a deal entered (docs/architecture.md):

=========  ========  =======================================================
column     required  meaning
=========  ========  =======================================================
deal_id    yes       any string
stage      yes       stage (or won/lost outcome) the deal entered
timestamp  yes       when it entered it (ISO 8601; day-first on request)
amount     no        deal value known at that event (currency of the log)
others     no        deal attributes usable as segments (region, source, ...)
=========  ========  =======================================================

:func:`read_events` accepts a CSV, Excel (.xlsx) or Parquet path, a pandas DataFrame or an Ibis
table, renames columns, parses timestamps and amounts, and checks the log. Every
problem raises :class:`FunnelDataError`, which names the source, the row as a
spreadsheet shows it (the header is row 1), the column, the bad value, and what to
do. All checks run as Ibis expressions, so a database table is validated where it
lives; only the offending row comes back to Python.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import ibis
import ibis.expr.datatypes as dt
import pandas as pd

from ..errors import FunnelDataError
from ._files import REQUIRED_COLUMNS, ROW, load_source, missing_column_error, rename_columns
from ._portable import as_int

__all__ = ["FunnelDataError", "FunnelDefinition", "EventLog", "read_events", "REQUIRED_COLUMNS"]

ORDER = "_order"  # sort key of a deal's events: seconds since 1970 x 2, + 1 for won/lost


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
        seen: dict[str, str] = {}
        for label in labels:  # the log's labels are matched ignoring case and surrounding spaces
            other = seen.setdefault(_label_key(label), label)
            if other != label:
                raise FunnelDataError(f"labels {other!r} and {label!r} differ only by case or spaces",
                                      hint="Stage labels in the log are matched ignoring case and surrounding "
                                           "spaces, so these two cannot be told apart; rename one.")

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
    segment_from: str = "first"  # a deal's attributes (its segment) are read from its first or last row

    def to_pandas(self) -> pd.DataFrame:
        """The events as a DataFrame ordered by deal and time (small logs only)."""
        return self.table.order_by(["deal_id", *event_order()]).drop(ORDER).to_pandas()

    def check_segment(self, segment_by: str | None) -> None:
        """Raise a clear error if ``segment_by`` is not a column of the log."""
        if segment_by and segment_by not in self.attributes:
            raise missing_column_error(segment_by, self.attributes, self.source,
                                        "as a segment", "--segment-by")


# --------------------------------------------------------------------------- loading

SEGMENT_FROM = ("first", "last")


def read_events(source, funnel: FunnelDefinition, *, columns: dict[str, str] | None = None,
                dayfirst: bool = False, decimal: str = ".", encoding: str | None = None,
                sheet: str | int | None = None, segment_from: str = "first") -> EventLog:
    """Read, clean and validate an event log.

    Parameters
    ----------
    source : str, Path, pandas.DataFrame or ibis.Table
        A ``.csv`` / ``.xlsx`` / ``.parquet`` file, a DataFrame, a table in any database Ibis reaches, or
        such a table by URL: ``"postgres://user@host:5432/db?table=events"``,
        ``"duckdb:///path/crm.duckdb?table=events"`` (see :class:`funnelsim.data._files.TableURL`).
    funnel : FunnelDefinition
        The ordered open stages and the won / lost labels.
    columns : dict, optional
        Map from the log's column names to the canonical ones, e.g.
        ``{"Opportunity ID": "deal_id", "Stage": "stage", "Date": "timestamp"}``.
    dayfirst : bool
        Read text dates as day-first (``31-01-2024``, ``31/01/2024 14:05``, ``31.01.2024``,
        ``1.2.2024``).
    decimal : ``"."`` or ``","``
        The decimal mark of text amounts. With ``","`` (European spreadsheets) ``1234,50``
        reads as 1234.5, and thousands may be grouped by a dot, a space or a non-breaking
        space (``1.234,50``, ``1 234,50``); a dot anywhere else (``1234.50``) is an error
        rather than a silent factor of 100.
    encoding : str, optional
        A CSV's text encoding (``"latin-1"``, ``"cp1252"``...). Default: UTF-8, with or without
        a byte-order mark (UTF-16 with its byte-order mark is recognised too); a file that is not
        valid UTF-8 is an error naming the row and the byte and suggesting the encoding to pass.
    sheet : str or int, optional
        A workbook's sheet, by name or by position counting from 1. Default: the first sheet
        (with a note when the workbook has others). Rows are numbered as Excel shows them.
    segment_from : ``"first"`` or ``"last"``
        Which of a deal's rows its attribute columns (its segment, with ``segment_by``) are read
        from: its first row (the default), or its latest row with a value (a CRM that fills a
        column only later, e.g. Olist's ``business_segment`` on won rows). Only rows visible at
        the as-of day count, so nothing leaks from after it.

    A CSV's delimiter (comma, semicolon or tab) is detected from its header line. Stage
    labels that differ from the funnel's only by case or surrounding spaces (``" won"``)
    take the funnel's label, and a note says how many rows were changed. Text timestamps
    with UTC offsets (``2024-01-31T10:00+02:00``, ``...Z``) and time-zone-aware columns are
    converted to UTC (naive), with a note; timestamps without an offset are kept as written.

    Raises
    ------
    FunnelDataError
        For a missing or empty file, a missing column, an unparseable timestamp, an
        unknown stage, a negative, infinite or non-numeric amount, an event after a deal's
        won/lost event, or two won/lost events for one deal.
    """
    if decimal not in (".", ","):
        raise FunnelDataError("the decimal mark must be '.' or ','", column="decimal", value=decimal,
                              hint="Pass --decimal , for amounts written 1234,50.")
    if segment_from not in SEGMENT_FROM:
        raise FunnelDataError("a deal's segment is read from its first or its last row", column="segment_from",
                              value=str(segment_from), hint="Pass --segment-from first or --segment-from last.")
    columns = columns or {}
    notes: list[str] = []
    name, raw = load_source(source, (*REQUIRED_COLUMNS, "amount", *columns), encoding=encoding, sheet=sheet,
                            notes=notes)
    raw = rename_columns(raw, columns, name)
    typed, checks = _typed(raw, funnel, dayfirst, decimal)
    table = _materialise(typed)
    scan = _scan(table)
    if scan["problems"]:
        _raise_first_problem(table, checks, funnel, name)
    if scan["relabelled"]:
        notes.append(f"{scan['relabelled']} row(s) had a stage label differing from the funnel's only by case "
                     f"or surrounding spaces; read as the funnel's label")
    notes += _zone_notes(table, raw.timestamp.type(), scan)
    table = table.drop("_problem", "_bad_value", "_relabelled", "_offset")
    if scan["distinct"] < scan["rows"]:
        table = _materialise(_drop_duplicates(table))
        notes.append(f"dropped {scan['rows'] - scan['distinct']} exact duplicate row(s) from {name}")
    _check_outcomes(table, funnel, name)
    attributes = tuple(c for c in table.columns if c not in (*REQUIRED_COLUMNS, "amount", ROW, ORDER))
    return EventLog(table, funnel, name, attributes, notes, segment_from)


@dataclass(frozen=True)
class _Check:
    column: str
    problem: str
    hint: str


def _typed(table: ibis.Table, funnel: FunnelDefinition, dayfirst: bool,
           decimal: str = ".") -> tuple[ibis.Table, list[_Check]]:
    """The canonical columns, typed, plus ``_problem`` / ``_bad_value`` per row, and for
    the notes ``_relabelled`` (stage label matched ignoring case and spaces) and
    ``_offset`` (the UTC offset a text timestamp carried)."""
    deal = table.deal_id.cast("string").strip()
    raw_stage = table.stage.cast("string")
    written = _strip(raw_stage)
    stage = _label_key(written).substitute({_label_key(s): s for s in funnel.labels}, else_=written)
    timestamp, offset, timestamp_checks = _parse_timestamp(table.timestamp, dayfirst)
    if "amount" in table.columns:
        amount, amount_checks = _parse_amount(table.amount, decimal)
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
    outcome = as_int(stage.isin(list(funnel.won + funnel.lost)))
    typed = table.mutate(deal_id=deal, stage=stage, timestamp=timestamp, amount=amount,
                         _problem=problem, _bad_value=bad_value,
                         _relabelled=stage.isin(list(funnel.labels)) & (raw_stage != stage), _offset=offset,
                         **{ORDER: timestamp.epoch_seconds().cast("int64") * 2 + outcome})
    return typed, [check for _, _, check in checks]


_NBSP = "\u00a0\u202f"  # no-break spaces, written as characters so any database's regex reads them


def _strip(text: ibis.StringValue) -> ibis.StringValue:
    """Remove surrounding white space, non-breaking spaces included."""
    return text.re_replace(f"^[\\s{_NBSP}]+|[\\s{_NBSP}]+$", "")


def _label_key(label):
    """What two stage labels must share to be the same label: case and surrounding spaces
    do not count. Works on a Python string and on an Ibis string column alike."""
    if isinstance(label, str):
        return label.strip(" \t\n\r\f\v\u00a0\u202f").lower()
    return label.lower()


# a time of day followed by a UTC offset: 10:00Z, 10:00:00+02:00, 10:00:00.5-0530, 10:00+02
_OFFSET = r"^(.*\d:\d{2}(?::\d{2}(?:[.,]\d+)?)?)\s*(Z|z|[+-]\d{2}(?::?\d{2})?)$"
EARLIEST, LATEST = pd.Timestamp("1900-01-01"), pd.Timestamp("2200-01-01")


def _parse_timestamp(raw: ibis.Value, dayfirst: bool):
    """(timestamp, offset text or null, checks). A time-zone-aware column and text with a UTC
    offset become naive UTC; other timestamps are kept as written."""
    offset = ibis.null("string")
    if raw.type().is_timestamp():
        # a zone-aware column becomes naive UTC (Ibis sets DuckDB's session zone to UTC)
        parsed = raw.cast(dt.Timestamp())
    elif raw.type().is_date():
        parsed = raw.cast("timestamp")
    else:
        text = _strip(raw.cast("string"))
        if dayfirst:
            text = text.re_replace(r"^(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})", r"\3-\2-\1")
            text = _zero_pad_iso(text)
        text = text.replace("T", " ")
        offset = text.re_extract(_OFFSET, 2).nullif("")
        local = ibis.cases((offset.notnull(), text.re_extract(_OFFSET, 1)), else_=text)
        sign = ibis.cases((offset.left(1) == "-", -1), else_=1)
        hours = offset.substr(1, 2).try_cast("int64")
        minutes = offset.re_replace(r"^[+-]\d{2}:?", "").nullif("").try_cast("int64").fill_null(0)
        shift = ibis.cases((offset.isnull() | (offset.upper() == "Z"), 0),
                           ((hours <= 14) & (minutes < 60), sign * (hours * 60 + minutes)),
                           else_=ibis.null("int64"))  # +99:99 is no offset: the date is unreadable
        parsed = local.try_cast("timestamp") - shift.as_interval("m")
    hint = ("Use ISO 8601 dates (2024-03-31 or 2024-03-31 14:05)"
            + ("." if dayfirst else ", or pass --dayfirst for 31-03-2024 or 31.03.2024."))
    return parsed, offset, [
        (raw.isnull(), raw, _Check("timestamp", "the timestamp is missing",
                                   "Every event needs the date the deal entered the stage.")),
        (parsed.isnull(), raw, _Check("timestamp", "cannot read this as a date", hint)),
        ((parsed < ibis.timestamp(EARLIEST)) | (parsed >= ibis.timestamp(LATEST)), raw,
         _Check("timestamp", f"the date is before {EARLIEST.year} or after {LATEST.year - 1}",
                "Check the year (a typo, or a placeholder date such as 0001-01-01 or 9999-12-31).")),
    ]


def _zero_pad_iso(text: ibis.StringValue) -> ibis.StringValue:
    """2024-3-5 -> 2024-03-05 so the database's ISO parser accepts it."""
    text = text.re_replace(r"^(\d{4})-(\d)-", r"\1-0\2-")
    return text.re_replace(r"^(\d{4})-(\d{2})-(\d)(\D|$)", r"\1-\2-0\3\4")


# a number with a decimal comma, thousands optionally grouped by a dot, space or no-break space
_DECIMAL_COMMA = (r"^[+-]?(\d+|\d{1,3}(\.\d{3})+|\d{1,3}( \d{3})+"
                  + "".join(rf"|\d{{1,3}}({space}\d{{3}})+" for space in _NBSP) + r")(,\d+)?$")
NO_AMOUNT = ("#N/A", "N/A", "NA", "NAN", "NULL", "NONE")  # spreadsheet ways to write "no amount"
_DECIMAL_POINT = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"


def _parse_amount(raw: ibis.Value, decimal: str = "."):
    checks = []
    if raw.type().is_numeric():
        amount = raw.cast("float64")
    else:
        text = _strip(raw.cast("string"))
        text = ibis.cases((text.upper().isin(NO_AMOUNT), ""), else_=text)
        if decimal == ",":
            number = text.re_replace(f"[. {_NBSP}]", "").replace(",", ".")
            amount = ibis.cases((text.re_search(_DECIMAL_COMMA), number.try_cast("float64")),
                                else_=ibis.null("float64"))
            hint = ("With --decimal , write amounts as 12500,50 or 12.500,50 (a dot, space or non-breaking "
                    "space may group thousands), without currency signs.")
        else:
            amount = ibis.cases((text.re_search(_DECIMAL_POINT), text.try_cast("float64")),
                                else_=ibis.null("float64"))
            hint = ("Write amounts as plain numbers (12500.50) without currency signs or thousands separators, "
                    "or pass --decimal , for decimal commas (12500,50 or 12.500,50).")
        checks.append(((text != "") & amount.isnull(), raw, _Check("amount", "the amount is not a number", hint)))
    checks.append((amount.isnan() | amount.isinf(), raw, _Check(
        "amount", "the amount is not a finite number", "Deal values must be ordinary numbers; fix the row "
                                                       "or leave the amount empty.")))
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
    exit with DuckDB 2.) Spark has no temporary tables: there the table is cached in
    the session's memory."""
    import uuid

    backend = table._find_backend(use_default=True)
    if backend.name == "pyspark":
        return table.cache()
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
    """One pass: rows, rows with a problem, distinct rows (to spot duplicates), relabelled
    stages, and timestamps with and without a UTC offset."""
    content = [c for c in table.columns if c not in (ROW, ORDER, "_problem", "_bad_value", "_relabelled", "_offset")]
    row = ibis.struct({c: table[c] for c in content})  # exact, and any database counts it (few hash a struct)
    result = table.aggregate(rows=table.count(), problems=as_int(table._problem.notnull()).sum(),
                             distinct=row.nunique(),
                             relabelled=as_int(table._relabelled).sum(),
                             offsets=as_int(table._offset.notnull()).sum()).to_pandas().iloc[0]
    return {k: int(0 if pd.isna(v) else v) for k, v in result.items()}


def _zone_notes(table: ibis.Table, raw_type: dt.DataType, scan: dict) -> list[str]:
    """Say which time zones were converted to UTC."""
    if raw_type.is_timestamp() and raw_type.timezone:
        return [f"timestamps were in time zone {raw_type.timezone}; converted to UTC"]
    if not scan["offsets"]:
        return []
    found = table.select(offset=table._offset.upper()).filter(ibis._.offset.notnull()).distinct()
    offsets = sorted(found.order_by("offset").limit(6).to_pandas()["offset"])
    shown = ", ".join(offsets[:5]) + (", ..." if len(offsets) > 5 else "")
    note = f"timestamps carried UTC offsets ({shown}); converted to UTC"
    naive = scan["rows"] - scan["offsets"]
    if naive:
        note += f"; {naive} timestamp(s) without an offset were kept as written (taken as UTC)"
    return [note]


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
        outcomes=as_int(terminal).sum(),
        outcome_at=table.timestamp.max(where=terminal),
        last_open_at=table.timestamp.max(where=~terminal),
    )
    broken = per_deal.filter((per_deal.outcomes > 1) | (per_deal.last_open_at > per_deal.outcome_at))
    if int(broken.count().execute()):
        _raise_first_after_outcome(table, funnel, name)


def _raise_first_after_outcome(table: ibis.Table, funnel: FunnelDefinition, name: str) -> None:
    terminal = table.stage.isin(list(funnel.won + funnel.lost))
    window = ibis.cumulative_window(group_by="deal_id", order_by=event_order())
    prior = as_int(terminal).sum().over(window) - as_int(terminal)
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


# --------------------------------------------------------------------------- the default as-of

def _today() -> pd.Timestamp:
    """Today's date on this machine (tests replace it)."""
    return pd.Timestamp.now().normalize()


def refuse_future_events(log: EventLog, last) -> None:
    """The default as-of is the last event's day; an event dated after today must not
    silently become it. Raise naming the first such row."""
    tomorrow = _today() + pd.Timedelta(days=1)
    if last is None or pd.isna(last) or pd.Timestamp(last) < tomorrow:
        return
    table = log.table
    bad = (table.filter(table.timestamp >= ibis.timestamp(tomorrow))
           .order_by([ROW, "deal_id", "timestamp"]).limit(1).to_pandas().iloc[0])
    raise FunnelDataError(f"the event is dated after today ({tomorrow - pd.Timedelta(days=1):%Y-%m-%d}), so the "
                          "last event's day cannot be the as-of date", source=log.source, row=_row_of(bad),
                          column="timestamp", value=str(bad["timestamp"]),
                          hint="Fix the date, or pass --as-of YYYY-MM-DD (as_of=...) to see the CRM as of a day; "
                               "later events are then hidden.")
