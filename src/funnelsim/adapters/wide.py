"""One row per deal with a date column per stage ("wide" spreadsheets) to the canonical log.

Options (the command line's in brackets):

- ``stage_dates`` [``--stage-dates 'Lead=lead_date,Qualified=qualified_on,...'``]: the open
  stages *in funnel order*, each with the column holding the date the deal entered it (blank:
  never entered). It may also name outcome columns, ``Won=won_date,Lost=lost_date``: a date in
  one of those is the deal's outcome and its date.
- ``outcome`` [``--outcome COLUMN``]: a column holding each deal's outcome label. A value among
  ``won`` / ``lost`` (matched ignoring case and spaces) closes the deal; a blank cell, "open" or
  one of the open stages means still open; anything else is an error that lists the labels.
- ``outcome_date`` [``--outcome-date COLUMN``]: when the deal was won or lost (with ``outcome``).
  Without it, the outcome's date is its column in ``stage_dates`` (``Won=won_date``); a closed
  deal with no date for its outcome is an error.
- ``won`` / ``lost`` [``--won``, ``--lost``]: the outcome labels, comma-separated (default
  ``Won`` and ``Lost``); the first of each names the outcome in the log.
- ``deal_id`` [``--deal-id``] (default ``deal_id``), ``amount`` [``--amount``] (default the
  ``amount`` column if there is one) and ``close_date`` [``--close-date``] (optional): columns.
  Every row of a deal carries its amount and close date. The other columns become deal
  attribute columns, usable with ``--segment-by``.

A deal's stage entries are ordered by date, equal dates by the funnel's order (a date-only sheet
often has several stages on one day); the outcome comes last. A sheet keeps one date per stage,
so re-entries and back-moves are not in it. Deals with no date at all are left out (a note counts
them); an outcome dated before the deal's last stage entry is an error.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..data.events import FunnelDefinition
from ..errors import FunnelDataError
from ._common import Converted
from ._read import ROW, canonical, parse_datetime, parse_number, parse_text, raise_at, read_frame, require

__all__ = ["from_wide", "parse_stage_dates"]

OPEN_WORDS = {"open", "in progress", "active", ""}


def parse_stage_dates(spec: str) -> dict[str, str]:
    """``'Lead=lead_date,Qualified=qualified_on'`` as {stage: column}, in order."""
    mapping: dict[str, str] = {}
    for part in str(spec).split(","):
        if not part.strip():
            continue
        stage, sep, column = part.partition("=")
        if not sep or not stage.strip() or not column.strip():
            raise FunnelDataError(f"cannot read --stage-dates entry {part!r}", column="--stage-dates",
                                  hint="Write it as Stage=column, in funnel order: 'Lead=lead_date,Won=won_date'.")
        if stage.strip() in mapping:
            raise FunnelDataError(f"stage {stage.strip()!r} is listed twice", column="--stage-dates",
                                  hint="Give each stage one date column.")
        mapping[stage.strip()] = column.strip()
    if not mapping:
        raise FunnelDataError("no stages given", column="--stage-dates",
                              hint="Write --stage-dates 'Lead=lead_date,Qualified=qualified_date,...'.")
    return mapping


def _labels(value) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(s.strip() for s in value.split(",") if s.strip())
    return tuple(value or ())


def from_wide(deals, *, stage_dates: dict[str, str] | str, outcome: str | None = None,
              outcome_date: str | None = None, won=("Won",), lost=("Lost",), deal_id: str = "deal_id",
              amount: str | None = None, close_date: str | None = None, dayfirst: bool = False,
              encoding: str | None = None) -> Converted:
    """Convert a one-row-per-deal sheet (see the module doc for the options) to the canonical
    event log, its funnel and notes."""
    mapping = parse_stage_dates(stage_dates) if isinstance(stage_dates, str) else dict(stage_dates)
    won, lost = _labels(won), _labels(lost)
    if not won:
        raise FunnelDataError("no won label given", column="--won", hint="Name it, e.g. --won Won.")
    outcomes = {label.casefold(): ("won", won[0]) for label in won} | {label.casefold(): ("lost", lost[0] if lost else None)
                                                                        for label in lost}
    open_stages = [s for s in mapping if s.casefold() not in outcomes]
    outcome_columns = {s: c for s, c in mapping.items() if s.casefold() in outcomes}
    funnel = FunnelDefinition(stages=tuple(open_stages), won=won, lost=lost)
    if outcome is None and not outcome_columns:
        raise FunnelDataError("no outcome given", column="--outcome",
                              hint="Name the column holding Won / Lost (--outcome status --outcome-date closed_on), "
                                   "or date columns for them (--stage-dates '...,Won=won_date,Lost=lost_date').")

    columns = [deal_id, *mapping.values(), *(c for c in (outcome, outcome_date, amount, close_date) if c)]
    name, raw = read_frame(deals, tuple(columns), encoding)
    require(raw, columns, name, "sheet (as the options name it)")
    if amount is None and "amount" in raw.columns:
        amount = "amount"
    deal = parse_text(raw, deal_id, name)
    raise_at(raw, deal.duplicated().to_numpy(), name, deal_id, "this deal appears twice",
             "A wide sheet has one row per deal.")
    dates = np.column_stack([parse_datetime(raw, mapping[s], name, required=False, dayfirst=dayfirst)
                             .to_numpy(dtype="datetime64[ns]") for s in open_stages])
    n = len(raw)
    result_label = np.full(n, None, dtype=object)
    result_date = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    result_column = np.full(n, None, dtype=object)
    if outcome is not None:
        text = parse_text(raw, outcome, name, required=False).fillna("")
        key = text.str.strip().str.casefold()
        kind = key.map(lambda k: outcomes.get(k, (None, None))[0])
        known_open = key.isin(OPEN_WORDS | {s.casefold() for s in open_stages})
        raise_at(raw, (kind.isna() & ~known_open).to_numpy(), name, outcome, "unknown outcome",
                 f"Outcome values: {', '.join(won + lost)} (closed), blank, 'open' or an open stage (still open); "
                 f"other won or lost spellings go in --won / --lost.")
        closed = kind.notna().to_numpy()
        result_label[closed] = [outcomes[k][1] for k in key[closed]]
        if outcome_date is not None:
            when = parse_datetime(raw, outcome_date, name, required=False, dayfirst=dayfirst).to_numpy()
            result_date[closed] = when[closed]
            result_column[closed] = outcome_date
        for label, column in outcome_columns.items():
            canonical_label = outcomes[label.casefold()][1]
            when = parse_datetime(raw, column, name, required=False, dayfirst=dayfirst).to_numpy()
            fill = closed & (result_label == canonical_label) & np.isnat(result_date)
            result_date[fill], result_column[fill] = when[fill], column
        undated = closed & np.isnat(result_date)
        raise_at(raw, undated, name, outcome_date or outcome, "this deal is closed but its outcome has no date",
                 "Give the outcome's date column with --outcome-date COLUMN (or Won=column in --stage-dates).")
    else:
        for label, column in outcome_columns.items():
            canonical_label = outcomes[label.casefold()][1]
            when = parse_datetime(raw, column, name, required=False, dayfirst=dayfirst).to_numpy()
            has = ~np.isnat(when)
            raise_at(raw, has & pd.notna(result_label), name, column,
                     "this deal has dates for two outcomes", "A deal ends once: clear one of its outcome dates.")
            result_label[has], result_date[has], result_column[has] = canonical_label, when[has], column

    closed = pd.notna(result_label)
    last_open = pd.DataFrame(dates).max(axis=1).to_numpy(dtype="datetime64[ns]")
    early = closed & ~np.isnat(last_open) & (result_date < last_open)
    raise_at(raw, early, name, str(result_column[np.flatnonzero(early)[0]]) if early.any() else "",
             "the outcome is dated before the deal's last stage entry",
             "Check the dates: a deal is won or lost after the stages it went through.",
             value=pd.Series(result_date).astype(str))

    has = ~np.isnat(dates)
    row_index, stage_index = np.nonzero(has)
    frame = pd.DataFrame({"_deal": row_index, "stage": np.array(open_stages, dtype=object)[stage_index],
                          "timestamp": dates[row_index, stage_index], "_col": stage_index})
    closed_rows = np.flatnonzero(closed)
    frame = pd.concat([frame, pd.DataFrame({"_deal": closed_rows, "stage": result_label[closed_rows],
                                            "timestamp": result_date[closed_rows],
                                            "_col": len(open_stages)})], ignore_index=True)
    frame = frame.sort_values(["_deal", "timestamp", "_col"], kind="stable").reset_index(drop=True)
    rows = frame["_deal"].to_numpy()
    frame["deal_id"] = deal.to_numpy(dtype=object)[rows]
    frame["amount"] = parse_number(raw, amount, name).to_numpy()[rows] if amount else np.nan
    if close_date:
        frame["close_date"] = parse_datetime(raw, close_date, name, required=False,
                                             dayfirst=dayfirst).dt.normalize().to_numpy()[rows]
    notes = [f"stage order as given: {', '.join(open_stages)}; a sheet keeps one date per stage, so re-entries and "
             f"back-moves are not in it"]
    dateless = ~has.any(axis=1) & ~closed
    if dateless.any():
        notes.append(f"left out {int(dateless.sum())} deal(s) with no stage or outcome date")
    used = {deal_id, *mapping.values(), outcome, outcome_date, amount, close_date, ROW}
    attributes = pd.concat([deal.rename("deal_id"), raw[[c for c in raw.columns if c not in used]]], axis=1)
    return Converted(canonical(frame, attributes), funnel, notes)
