"""HubSpot: the deals export with its "Date entered" columns to the canonical log.

Input (a .csv/.parquet path or a DataFrame): one row per deal, with ``Record ID``, ``Deal Stage``,
``Pipeline``, ``Amount``, ``Create Date``, ``Close Date`` and, per stage of each pipeline, a column
``Date entered "<stage> (<pipeline>)"`` (and ``Date exited "<stage> (<pipeline>)"``, not needed:
a stay ends when the next one starts). The other columns (owner, deal type, source, ...) become
deal attribute columns, usable with ``--segment-by``; HubSpot's own time-in-stage columns and
bookkeeping (:data:`NOT_ATTRIBUTES`) do not.

How it becomes the log:

- one pipeline at a time: ``pipeline`` names it; without it an export with one pipeline uses that
  one, and one with several is an error that lists them;
- each non-empty "Date entered" cell is a stage entry; a deal's entries are ordered by date,
  equal dates by the columns' order;
- a "Date entered" column keeps one date per stage, so a deal that came back to a stage shows
  only one entry there: re-entries and back-moves are lost (a note says so);
- the export has only the deal's current amount and close date: every row of the deal carries
  them;
- a deal of the pipeline with no "Date entered" date enters its ``Deal Stage`` at its
  ``Create Date`` (a note counts them).

Stage order: the order of the pipeline's "Date entered" columns (HubSpot writes them in the
pipeline's order); a note says so when the dates suggest another order. Won and lost stages are
the ones whose label says so ("Closed won", "Closed lost").
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ..data.events import FunnelDefinition
from ..errors import FunnelDataError
from ._common import Converted
from ._read import (
    ROW,
    canonical,
    flow_order,
    outcome_of_label,
    parse_datetime,
    parse_number,
    parse_text,
    raise_at,
    read_frame,
    require,
)

__all__ = ["from_hubspot", "NOT_ATTRIBUTES"]

ENTERED = re.compile(r'^Date entered "?(?P<stage>.+?) \((?P<pipeline>[^()]+)\)"?$')
STAGE_COLUMN = re.compile(r'^(Date entered|Date exited|Time in|Cumulative time in|Latest time in)\b', re.IGNORECASE)
DEAL_COLUMNS = ("Record ID", "Deal Stage", "Pipeline", "Amount", "Create Date", "Close Date")
NOT_ATTRIBUTES = frozenset({*DEAL_COLUMNS, "Deal Name", "Last Modified Date", "Last Activity Date",
                            "Next Activity Date", "Date of last meeting booked in meetings tool",
                            "Number of Sales Activities", "Number of times contacted", ROW})


def from_hubspot(deals, *, pipeline: str | None = None, encoding: str | None = None) -> Converted:
    """Convert a HubSpot deals export (see the module doc) to the canonical event log, its
    funnel and notes."""
    name, raw = read_frame(deals, DEAL_COLUMNS, encoding)
    require(raw, ("Record ID",), name, "HubSpot deals export")
    columns = _entered_columns(raw, name)
    chosen = _choose_pipeline(raw, columns, pipeline, name)
    stage_columns = [(column, stage) for column, stage, pipe in columns if pipe == chosen]
    notes = [f"pipeline {chosen!r}"]
    if "Pipeline" in raw.columns:
        in_pipeline = _key(parse_text(raw, "Pipeline", name, required=False)) == _key(pd.Series([chosen])).iloc[0]
        raw = raw.loc[in_pipeline.to_numpy()].reset_index(drop=True)
    deal = parse_text(raw, "Record ID", name)
    raise_at(raw, deal.duplicated().to_numpy(), name, "Record ID", "this deal appears twice",
             "Export each deal once.")
    labels = [stage for _, stage in stage_columns]
    outcome = {label: outcome_of_label(label) for label in labels}
    won = [s for s in labels if outcome[s] == "won"]
    lost = [s for s in labels if outcome[s] == "lost"]
    open_ = [s for s in labels if outcome[s] is None]
    if not won or not open_:
        raise FunnelDataError(f"cannot tell the {'won' if not won else 'open'} stage(s) of pipeline {chosen!r} "
                              "from the stage names", source=name, value=", ".join(labels),
                              hint="funnelsim reads won / lost stages from their names (Closed won, Closed lost); "
                                   "rename them in the export's Date entered columns.")

    dates = np.column_stack([parse_datetime(raw, column, name, required=False).to_numpy(dtype="datetime64[ns]")
                             for column, _ in stage_columns])
    has = ~np.isnat(dates)
    row_index, stage_index = np.nonzero(has)
    amount = parse_number(raw, "Amount", name).to_numpy() if "Amount" in raw.columns else np.full(len(raw), np.nan)
    close = (parse_datetime(raw, "Close Date", name, required=False).dt.normalize().to_numpy()
             if "Close Date" in raw.columns else None)
    deal_ids = deal.to_numpy(dtype=object)
    frame = pd.DataFrame({"deal_id": deal_ids[row_index], "stage": np.array(labels, dtype=object)[stage_index],
                          "timestamp": dates[row_index, stage_index], "amount": amount[row_index],
                          "_row": row_index, "_col": stage_index})
    if close is not None:
        frame["close_date"] = close[row_index]

    empty = ~has.any(axis=1)
    if empty.any():
        frame = pd.concat([frame, _from_current_stage(raw, name, empty, labels, deal_ids, amount, close)],
                          ignore_index=True)
        notes.append(f"{int(empty.sum())} deal(s) had no Date entered date; each enters its Deal Stage at its "
                     f"Create Date")
    frame = frame.sort_values(["_row", "timestamp", "_col"], kind="stable")
    after = _after_outcome(frame, won + lost)
    if after.any():
        first = frame[after].iloc[0]
        raise FunnelDataError("this deal entered a stage after it was won or lost", source=name,
                              row=int(raw[ROW].iloc[int(first["_row"])]), column=_column_of(stage_columns, first["stage"]),
                              value=str(first["timestamp"]),
                              hint="HubSpot keeps only one entry date per stage, so a reopened deal cannot be "
                                   "told apart; fix the deal's dates or leave it out.")
    by_flow = flow_order(frame["deal_id"].to_numpy(), frame["stage"].to_numpy(), frame["timestamp"].to_numpy(), open_)
    notes.append("stage order: the order of the Date entered columns"
                 + ("" if by_flow == open_ else f" (the dates suggest {', '.join(by_flow)}: check it)"))
    notes.append("HubSpot keeps one Date entered per stage: a deal's re-entries to a stage (back-moves) are lost; "
                 "every row carries the deal's current Amount and Close Date")
    kept = [c for c in raw.columns if c not in NOT_ATTRIBUTES and not STAGE_COLUMN.match(c)]
    attributes = pd.concat([deal.rename("deal_id"), raw[kept]], axis=1)
    funnel = FunnelDefinition(stages=tuple(open_), won=tuple(won), lost=tuple(lost))
    return Converted(canonical(frame, attributes), funnel, notes)


def _key(values: pd.Series) -> pd.Series:
    return values.astype("string").str.strip().str.casefold()


def _entered_columns(raw: pd.DataFrame, name: str) -> list[tuple[str, str, str]]:
    """(column, stage, pipeline) of every ``Date entered "<stage> (<pipeline>)"`` column."""
    found = []
    for column in raw.columns:
        match = ENTERED.match(column)
        if match:
            found.append((column, match["stage"].strip(), match["pipeline"].strip()))
    if not found:
        raise FunnelDataError('there is no Date entered "<stage> (<pipeline>)" column', source=name,
                              hint="Export the deals with the Date entered properties of every stage "
                                   "(HubSpot: Export, include all properties).")
    return found


def _choose_pipeline(raw: pd.DataFrame, columns, pipeline: str | None, name: str) -> str:
    in_headers = list(dict.fromkeys(pipe for _, _, pipe in columns))
    counts = (_key(parse_text(raw, "Pipeline", name, required=False)).value_counts()
              if "Pipeline" in raw.columns else None)
    listed = ", ".join(f"{p} ({int(counts.get(p.casefold(), 0))} deals)" if counts is not None else p
                       for p in in_headers)
    if pipeline is None:
        used = [p for p in in_headers if counts is None or counts.get(p.casefold(), 0) > 0]
        if len(used) == 1:
            return used[0]
        raise FunnelDataError("the export holds several pipelines; convert one at a time", source=name,
                              column="Pipeline", hint=f"Choose one with --pipeline NAME: {listed}.")
    match = [p for p in in_headers if p.casefold() == pipeline.strip().casefold()]
    if not match:
        raise FunnelDataError(f"no Date entered columns for pipeline {pipeline!r}", source=name, column="Pipeline",
                              value=pipeline, hint=f"Pipelines in the export: {listed}.")
    return match[0]


def _from_current_stage(raw, name, empty, labels, deal_ids, amount, close) -> pd.DataFrame:
    """One row per deal without entry dates: its Deal Stage at its Create Date."""
    require(raw, ("Deal Stage", "Create Date"), name, "HubSpot deals export")
    part = raw.loc[empty].reset_index(drop=True)
    stage = parse_text(part, "Deal Stage", name)
    lookup = {label.casefold(): label for label in labels}
    mapped = stage.str.casefold().map(lookup)
    raise_at(part, mapped.isna().to_numpy(), name, "Deal Stage", "unknown stage for this pipeline",
             f"Stages of the pipeline: {', '.join(labels)}.")
    rows = np.flatnonzero(empty)
    frame = pd.DataFrame({"deal_id": deal_ids[rows], "stage": mapped.to_numpy(dtype=object),
                          "timestamp": parse_datetime(part, "Create Date", name).to_numpy(),
                          "amount": amount[rows], "_row": rows,
                          "_col": [labels.index(s) for s in mapped]})
    if close is not None:
        frame["close_date"] = close[rows]
    return frame


def _after_outcome(frame: pd.DataFrame, outcomes) -> np.ndarray:
    """Rows (sorted by deal and time) that follow their deal's won/lost entry."""
    terminal = frame["stage"].isin(outcomes).astype("int64")
    before = terminal.groupby(frame["_row"].to_numpy()).cumsum() - terminal
    return (before > 0).to_numpy()


def _column_of(stage_columns, stage: str) -> str:
    return next(column for column, label in stage_columns if label == stage)
