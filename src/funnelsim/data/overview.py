"""A first look at an event log before anything is defined: its columns, its stage labels
with their counts, the days it covers, and the ``--stages/--won/--lost`` options that would
read it (``funnelsim inspect``).

Nothing here needs the funnel: the log is read as it comes (the same files, encodings,
sheets and database tables as :func:`funnelsim.read_events`), and every count is an Ibis
aggregate, so a table in a database is summarised where it lives.

The suggestions are guesses, said to be: a label whose name says won or lost (``Closed Won``,
``Perdido``...) is an outcome; the open stages are ordered by where they come, on average, in
the order each deal first entered its labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import ibis
import pandas as pd

from ._files import REQUIRED_COLUMNS, ROW, load_source
from .events import FunnelDataError, _parse_timestamp, _strip

__all__ = ["LogOverview", "overview"]

# outcome labels by name, in the languages CRM exports come in (English, Spanish, Portuguese,
# German, French, Italian, Russian)
_WON = re.compile(r"\b(won|win|signed|ganad[oa]|ganho|gewonnen|gagn[ée]e?|vint[oa])\b|выигр|успешн", re.I)
_LOST = re.compile(r"\b(lost|dead|disqualified|rejected|churned|perdid[oa]|verloren|perdue?)\b|проигр|провал",
                   re.I)
SEGMENT_MAX_VALUES = 50     # a column with more distinct values is an id or a name, not a segment
EXAMPLES = 3


@dataclass
class LogOverview:
    """What :func:`overview` found. ``columns``: one row per column (``column``, ``filled``
    rows, ``distinct`` values, ``examples``); ``stages``: one row per stage label (``label``,
    ``rows``, ``deals``, ``position``: mean rank of the label in the order its deals entered
    their labels, 1 = first; ``ends_deals``: share of its deals whose last label it is;
    ``kind``: ``open``, ``won`` or ``lost``, guessed); ``first_event`` / ``last_event`` the
    days the readable timestamps span, ``unreadable_timestamps`` the rows whose timestamp does
    not read (with ``dayfirst`` as given)."""

    source: str
    rows: int
    deals: int
    columns: pd.DataFrame
    stages: pd.DataFrame
    first_event: pd.Timestamp | None
    last_event: pd.Timestamp | None
    unreadable_timestamps: int
    segment_candidates: list[str] = field(default_factory=list)

    @property
    def suggested(self) -> dict:
        """The options that would read this log, as guessed: ``stages`` (in order), ``won``,
        ``lost`` (lists of labels) and ``segment_by`` candidates."""
        kinds = self.stages.set_index("label")["kind"]
        open_stages = self.stages[self.stages["kind"] == "open"].sort_values("position")["label"].tolist()
        return {"stages": open_stages, "won": kinds[kinds == "won"].index.tolist(),
                "lost": kinds[kinds == "lost"].index.tolist(), "segment_by": self.segment_candidates}

    def options(self) -> str:
        """The suggestion as command-line options, quoted where a label needs it."""
        s = self.suggested

        def listed(labels):
            text = ",".join(labels)
            return f'"{text}"' if re.search(r"[\s\"'$&;|<>()]", text) else text

        parts = [f"--stages {listed(s['stages'])}", f"--won {listed(s['won']) or '...'}",
                 f"--lost {listed(s['lost']) or '...'}"]
        if s["segment_by"]:
            parts.append(f"--segment-by {s['segment_by'][0]}")
        return " ".join(parts)

    def to_dict(self) -> dict:
        def day(t):
            return None if t is None else str(t.date())

        return {"source": self.source, "rows": self.rows, "deals": self.deals, "first_event": day(self.first_event),
                "last_event": day(self.last_event), "unreadable_timestamps": self.unreadable_timestamps,
                "columns": self.columns.to_dict(orient="records"), "stages": self.stages.to_dict(orient="records"),
                "suggested": self.suggested}


def overview(source, *, columns: dict[str, str] | None = None, dayfirst: bool = False, encoding: str | None = None,
             sheet: str | int | None = None) -> LogOverview:
    """Summarise an event log (a .csv/.xlsx/.parquet path, a DataFrame, an Ibis table or a
    table URL; ``columns`` renames as in :func:`funnelsim.read_events`). A log without the
    ``deal_id``, ``stage`` and ``timestamp`` columns is a FunnelDataError that lists its
    columns and guesses the ``--columns`` mapping."""
    name, raw = load_source(source, (*REQUIRED_COLUMNS, *(columns or {})), encoding=encoding, sheet=sheet)
    raw = raw.drop(ROW) if ROW in raw.columns else raw
    if columns:
        unknown = [c for c in columns if c not in raw.columns]
        if unknown:
            raise FunnelDataError(f"there is no column '{unknown[0]}' (in the column mapping)", source=name,
                                  hint=f"Columns present: {', '.join(raw.columns)}.")
        raw = raw.rename({canonical: theirs for theirs, canonical in columns.items()})
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise FunnelDataError(f"no column {', '.join(repr(c) for c in missing)}", source=name,
                              hint=f"Columns present: {', '.join(raw.columns)}. Map yours with --columns, "
                                   f"for example --columns '{_guess_mapping(raw.columns, missing)}'.")
    table = raw.mutate(deal_id=_strip(raw.deal_id.cast("string")), stage=_strip(raw.stage.cast("string")),
                       _at=_parse_timestamp(raw.timestamp, dayfirst)[0])
    rows = int(table.count().execute())
    if rows == 0:
        raise FunnelDataError("the log has a header but no rows", source=name, hint="Export at least one event per deal.")
    span = table.aggregate(first=table._at.min(), last=table._at.max(), unreadable=table._at.isnull().sum(),
                           deals=table.deal_id.nunique()).to_pandas().iloc[0]
    column_table = _columns(raw)
    return LogOverview(
        source=name, rows=rows, deals=int(span["deals"]), columns=column_table, stages=_stages(table),
        first_event=_day(span["first"]), last_event=_day(span["last"]),
        unreadable_timestamps=int(span["unreadable"] or 0), segment_candidates=_segment_candidates(column_table, rows))


def _day(value) -> pd.Timestamp | None:
    return None if pd.isna(value) else pd.Timestamp(value).normalize()


def _columns(raw: ibis.Table) -> pd.DataFrame:
    """Per column: rows with a value, distinct values and a few examples (most frequent first)."""
    text = {i: raw[column].cast("string") for i, column in enumerate(raw.columns)}
    filled = {i: value.notnull() & (_strip(value) != "") for i, value in text.items()}
    counts = raw.aggregate(**{f"filled_{i}": filled[i].sum() for i in text},           # one query for all columns
                           **{f"distinct_{i}": text[i].nullif("").nunique() for i in text}).to_pandas().iloc[0]
    records = []
    for i, column in enumerate(raw.columns):
        top = (raw.filter(filled[i]).group_by(value=text[i]).aggregate(n=ibis._.count())
               .order_by([ibis.desc("n"), "value"]).limit(EXAMPLES).to_pandas())
        records.append({"column": column, "filled": int(counts[f"filled_{i}"] or 0),
                        "distinct": int(counts[f"distinct_{i}"]), "examples": top["value"].tolist()})
    return pd.DataFrame(records)


def _stages(table: ibis.Table) -> pd.DataFrame:
    """Per stage label: rows, deals, mean position in its deals' order of first entry, the
    share of its deals it ends, and its guessed kind."""
    firsts = table.group_by(["deal_id", "stage"]).aggregate(rows=ibis._.count(), first=ibis._._at.min(),
                                                            last=ibis._._at.max())
    deal_window = ibis.window(group_by="deal_id")
    ranked = firsts.mutate(position=ibis.row_number().over(group_by="deal_id", order_by=["first", "stage"]) + 1,
                           deal_last=firsts["last"].max().over(deal_window))
    per_label = (ranked.group_by("stage")
                 .aggregate(rows=ranked.rows.sum(), deals=ranked.count(), position=ranked.position.mean(),
                            ends=(ranked["last"] == ranked.deal_last).cast("int64").sum())
                 .to_pandas())
    per_label = per_label.rename(columns={"stage": "label"})
    per_label["ends_deals"] = per_label.pop("ends") / per_label["deals"]
    per_label["kind"] = [_kind(label) for label in per_label["label"]]
    per_label["label"] = per_label["label"].fillna("")
    return per_label.sort_values(["position", "label"]).reset_index(drop=True)[
        ["label", "rows", "deals", "position", "ends_deals", "kind"]]


def _kind(label) -> str:
    if not isinstance(label, str):
        return "open"
    if _LOST.search(label):
        return "lost"
    return "won" if _WON.search(label) else "open"


def _segment_candidates(columns: pd.DataFrame, rows: int) -> list[str]:
    """Attribute columns with a few distinct values filled on at least half the rows, fewest
    values first: what --segment-by could split by."""
    attributes = columns[~columns["column"].isin([*REQUIRED_COLUMNS, "amount", "close_date"])]
    fit = attributes[(attributes["distinct"].between(2, SEGMENT_MAX_VALUES)) & (attributes["filled"] >= rows / 2)]
    return fit.sort_values(["distinct", "column"])["column"].tolist()


def _guess_mapping(present, missing) -> str:
    """theirs=canonical for each missing canonical column, from the names present."""
    patterns = {"deal_id": r"(deal|opportunit|lead|record).*id|^id$|_id$", "stage": r"stage|status|phase|etapa|stufe",
                "timestamp": r"date|time|created|modified|changed|fecha|data|datum"}
    guesses = []
    for canonical in missing:
        found = next((c for c in present if re.search(patterns[canonical], c, re.I)), None)
        guesses.append(f"{found or 'YOUR_COLUMN'}={canonical}")
    return ",".join(guesses)
