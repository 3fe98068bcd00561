"""Periodic pipeline snapshots in, the canonical event log out (``funnelsim convert snapshots``).

A snapshot file has one row per deal per snapshot: ``snapshot_date``, the deal id, its stage,
optionally its amount, expected ``close_date`` and attributes. Common spellings of these column
names are accepted (:data:`ALIASES`: ``Deal ID``, ``Opportunity ID``, ``Stage Name``, ...).

A stage entry is only known to lie between the last snapshot that did not show it and the first
that does; it is dated at the midpoint of that interval (see :func:`from_snapshots` and
docs/adapters-snapshots.md). The reading helpers at the end of this module (loading a file or
DataFrame with its spreadsheet rows, finding columns by alias, parsing dates and amounts with
errors that name the row, the stage order from moves) are shared with the Pipedrive and
Bitrix24 adapters; they build on ``_read``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

from ..data._files import missing_column_error
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
)

__all__ = ["from_snapshots", "ALIASES"]

# canonical name -> accepted spellings (compared ignoring case, spaces and punctuation), first wins
ALIASES = {
    "snapshot_date": ("snapshot_date", "snapshot", "snapshot_time", "as_of", "as_of_date", "report_date"),
    "deal_id": ("deal_id", "opportunity_id", "record_id", "deal", "opportunity", "id"),
    "stage": ("stage", "stage_name", "deal_stage", "opportunity_stage", "status"),
    "amount": ("amount", "value", "deal_value", "opportunity_amount", "amount_converted"),
    "close_date": ("close_date", "expected_close_date", "closing_date"),
}


def from_snapshots(snapshots, *, stages=None, won=None, lost=None, encoding: str | None = None) -> Converted:
    """Convert periodic pipeline snapshots to the canonical event log.

    Parameters
    ----------
    snapshots : path or DataFrame
        One row per deal per snapshot: ``snapshot_date``, deal id, stage, optional amount,
        ``close_date`` and attributes (see :data:`ALIASES` for accepted column names). A
        ``snapshot_date`` without a time of day means the pipeline as of the *end* of that day
        (as funnelsim's as-of does); with a time of day, that moment.
    stages : sequence of str, optional
        The open stages in order. Default: the order in which deals enter them (for each pair of
        stages, which one most deals entered first; ``_read.flow_order``), said in a note.
    won, lost : sequence of str, optional
        The outcome labels. Default: labels reading "won" / "lost" ("Closed Won", "Won",
        "Closed Lost", "Lost", "closedlost"; see ``_read.outcome_of_label``).

    Dating
    ------
    A deal that shows stage B in a snapshot after showing A in the previous snapshot it appeared
    in entered B somewhere in between; the entry is dated at the **midpoint** of that interval. A
    deal's first appearance is dated at the midpoint between the previous snapshot of the file
    and the one that first shows it; deals already present in the first snapshot are dated at it
    (their first stay is cut short: left-truncated, counted in a note). Taking each true entry as
    uniform within its interval, the midpoint makes every date unbiased, so times in stage,
    the ages of open stays at the as-of and the dates of wins are unbiased too. (Dating at the
    first snapshot that shows the entry is as good for a completed stay between equally spaced
    snapshots, since both ends are late by the same half interval on average, but it makes open
    stays look half an interval younger and every win half an interval late.) Each date is off by
    at most half the snapshot spacing, so a time in stage is off by less than one spacing
    (triangular error, typically spacing/√6, about 2.9 days for weekly snapshots). A stage entered
    and left between two snapshots is never seen: its time is counted in the stage before it, and
    short stays are under-represented (a stay of length L is seen with probability about
    min(1, L / spacing)).

    A deal that disappears from the snapshots in an open stage is kept open (no outcome is
    invented; a note counts them). A deal shown with an outcome and later with another stage was
    reopened: its earlier outcome is dropped (note). Amount and close date on each event are those
    of the snapshot that first showed it; attributes are those of the deal's last snapshot.
    """
    name, frame = load(snapshots, "snapshots", ALIASES, encoding)
    cols = {key: find_column(frame, name, ALIASES[key], required=key in ("snapshot_date", "deal_id", "stage"),
                             canonical=key) for key in ALIASES}
    when = parse_datetime(frame, cols["snapshot_date"], name)
    if (when == when.dt.normalize()).all():  # dates only: the end of that day
        when = when + pd.Timedelta(days=1)
    deal = parse_text(frame, cols["deal_id"], name)
    stage = parse_text(frame, cols["stage"], name)
    data = pd.DataFrame({"deal_id": deal, "stage": stage, "seen": when, ROW: frame[ROW]})
    data["amount"] = parse_amount(frame, cols["amount"], name) if cols["amount"] else np.nan
    if cols["close_date"]:
        data["close_date"] = parse_datetime(frame, cols["close_date"], name, required=False)
    attributes = [c for c in frame.columns if c != ROW and c not in cols.values()]
    notes: list[str] = []

    data = _drop_repeated_rows(data, frame, cols, name, notes)
    funnel = _funnel(data, cols["stage"], name, stages, won, lost)
    terminal = set(funnel.won + funnel.lost)
    events, counts = _entries(data, terminal)
    if stages is None:
        order, forward, moves = stage_order(events, list(funnel.stages))
        funnel = FunnelDefinition(tuple(order), funnel.won, funnel.lost)
        notes.append(order_note(order, forward, moves, "their snapshots"))
    deal_attributes = None
    if attributes:
        last = data.sort_values(["deal_id", "seen"], kind="stable").groupby("deal_id", sort=False).tail(1)
        deal_attributes = frame.loc[last.index, attributes].assign(deal_id=last["deal_id"].to_numpy())
    notes += _snapshot_notes(data, counts)
    return finish(events, funnel, notes, deal_attributes)


# --------------------------------------------------------------------------- snapshots


def _drop_repeated_rows(data, frame, cols, name, notes) -> pd.DataFrame:
    key = data[["deal_id", "seen"]]
    repeated = key.duplicated(keep=False)
    if not repeated.any():
        return data
    clash = data[repeated].groupby(["deal_id", "seen"])["stage"].transform("nunique") > 1
    if clash.any():
        bad = data[repeated][clash].iloc[1]
        raise FunnelDataError(f"deal {bad['deal_id']!r} appears twice in one snapshot with different stages",
                              source=name, row=int(bad[ROW]), column=cols["stage"], value=bad["stage"],
                              hint="Each snapshot must list a deal once; remove the duplicate row.")
    dropped = int(key.duplicated().sum())
    notes.append(f"dropped {dropped} row(s) repeating a deal within one snapshot")
    return data[~key.duplicated()]


def _funnel(data, column, name, stages, won, lost) -> FunnelDefinition:
    labels = list(dict.fromkeys(data.sort_values(["seen", ROW])["stage"]))  # in the order first seen
    given = [*(stages or ()), *(won or ()), *(lost or ())]
    if won is None:
        won = [s for s in labels if outcome_of_label(s) == "won" and s not in given]
    if lost is None:
        lost = [s for s in labels if outcome_of_label(s) == "lost" and s not in given]
    if not won:
        raise FunnelDataError("no stage label reads as a won outcome", source=name, column=column,
                              hint=f"Labels found: {', '.join(labels)}. Name the won label(s): won=[...] (--won).")
    outcomes = set(won) | set(lost)
    if stages is None:
        open_stages = [s for s in labels if s not in outcomes]
        if not open_stages:
            raise FunnelDataError("every stage label is an outcome; there are no open stages", source=name,
                                  column=column, hint="Pass the open stages in order: stages=[...] (--stages).")
        return FunnelDefinition(tuple(open_stages), tuple(won), tuple(lost))
    funnel = FunnelDefinition(tuple(stages), tuple(won), tuple(lost))
    unknown = ~data["stage"].isin(funnel.labels)
    if unknown.any():
        bad = data[unknown].sort_values(ROW).iloc[0]
        raise FunnelDataError("unknown stage", source=name, row=int(bad[ROW]), column=column, value=bad["stage"],
                              hint=f"Known stages: {', '.join(funnel.stages)}; won: {', '.join(funnel.won)}; "
                                   f"lost: {', '.join(funnel.lost) or '(none)'}. Add it to stages/won/lost.")
    return funnel


def _entries(data: pd.DataFrame, terminal: set[str]) -> tuple[pd.DataFrame, dict]:
    """One event per stage change seen, dated at the midpoint of the interval it lies in."""
    moments = np.sort(data["seen"].unique())
    first_moment = moments[0]
    previous_global = pd.Series(np.r_[moments[:1], moments[:-1]], index=moments)
    data = data.sort_values(["deal_id", "seen"], kind="stable")
    prev_stage = data.groupby("deal_id", sort=False)["stage"].shift()
    prev_seen = data.groupby("deal_id", sort=False)["seen"].shift()
    first = prev_stage.isna()
    changed = first | (data["stage"] != prev_stage)
    since = prev_seen.where(~first, data["seen"].map(previous_global))
    entries = data[changed].assign(timestamp=(since + (data["seen"] - since) / 2)[changed])
    # a deal shown with an outcome and later with something else was reopened: drop the outcome
    is_terminal = entries["stage"].isin(terminal)
    followed = entries.groupby("deal_id", sort=False).cumcount(ascending=False) > 0
    reopened = is_terminal & followed
    n_reopened = entries.loc[reopened, "deal_id"].nunique()
    entries = entries[~reopened]
    entries = entries[entries["stage"] != entries.groupby("deal_id", sort=False)["stage"].shift()]
    last = data.groupby("deal_id", sort=False).tail(1)
    counts = {
        "left_truncated": int((first & (data["seen"] == first_moment)).sum()),
        "reopened": int(n_reopened),
        "vanished": int(((last["seen"] < moments[-1]) & ~last["stage"].isin(terminal)).sum()),
        "spacing": float(pd.Series(np.diff(moments)).median() / pd.Timedelta(days=1)) if len(moments) > 1 else 0.0,
        "snapshots": len(moments),
    }
    return entries.drop(columns=["seen"]), counts


def _snapshot_notes(data: pd.DataFrame, counts: dict) -> list[str]:
    spacing = counts["spacing"]
    notes = [f"{counts['snapshots']} snapshots (median spacing {spacing:g} days): each stage entry is dated at the "
             f"midpoint between the snapshot before it and the first that shows it, so each date is known to "
             f"± {spacing / 2:g} days and a time in stage to within {spacing:g} days (unbiased); stays entered "
             f"and left between two snapshots are not seen"]
    if counts["left_truncated"]:
        notes.append(f"{counts['left_truncated']} deal(s) were already in the first snapshot: their first stage is "
                     f"dated at it, so that first stay is cut short")
    if counts["vanished"]:
        notes.append(f"{counts['vanished']} deal(s) disappear from the snapshots in an open stage; they are kept open "
                     f"(no outcome invented). If your snapshots list only open deals, add the closed deals' outcome "
                     f"rows, or these count as stalled")
    if counts["reopened"]:
        notes.append(f"{counts['reopened']} deal(s) were shown with an outcome and later with an open stage "
                     f"(reopened); their earlier outcome was dropped")
    return notes


# --------------------------------------------------------------------------- helpers shared with pipedrive, bitrix24


def load(source, what: str, aliases: dict | None = None, encoding: str | None = None) -> tuple[str, pd.DataFrame]:
    """:func:`read_frame`, naming a DataFrame source after what it holds."""
    expected = tuple(a for names in (aliases or {}).values() for a in names)
    name, frame = read_frame(source, expected, encoding)
    return (f"the {what} DataFrame" if name == "DataFrame" else name), frame


def _key(column: str) -> str:
    return re.sub(r"[^0-9a-z]+", "", str(column).lower())


def find_column(frame: pd.DataFrame, name: str, aliases: Iterable[str], *, required: bool = True,
                canonical: str | None = None) -> str | None:
    """The frame's column matching the first of ``aliases`` (ignoring case, spaces, punctuation)."""
    aliases = list(aliases)
    by_key = {}
    for column in frame.columns:
        if column != ROW:
            by_key.setdefault(_key(column), column)
    for alias in aliases:
        if _key(alias) in by_key:
            return by_key[_key(alias)]
    if required:
        raise missing_column_error(canonical or aliases[0], list(frame.columns), name,
                                   "which is required; also accepted: " + ", ".join(aliases[1:4]),
                                   "a DataFrame with the column renamed")
    return None


def parse_amount(frame: pd.DataFrame, column: str, name: str) -> pd.Series:
    """:func:`parse_number`, refusing a negative amount."""
    amount = parse_number(frame, column, name)
    raise_at(frame, (amount < 0).to_numpy(), name, column, "the amount is negative",
             "A deal's value cannot be below zero; fix the row.")
    return amount


def stage_order(events: pd.DataFrame, open_stages: list[str]) -> tuple[list[str], int, int]:
    """(open stages in the order deals move through them (:func:`flow_order`; ties keep the order
    of ``open_stages``), forward moves, all moves between open stages)."""
    is_open = events["stage"].isin(open_stages)
    order = flow_order(events["deal_id"].to_numpy(), events["stage"].to_numpy(), events["timestamp"].to_numpy(),
                       open_stages)
    rank = {s: i for i, s in enumerate(order)}
    moves = events[is_open].assign(_rank=events.loc[is_open, "stage"].map(rank))
    step = moves.groupby("deal_id", sort=False)["_rank"].diff().dropna()
    step = step[step != 0]
    return order, int((step > 0).sum()), len(step)


def order_note(order: list[str], forward: int, moves: int, source: str, ties: str = "") -> str:
    return (f"stage order inferred from the order deals entered the stages in {source}: {' > '.join(order)} "
            f"({forward} of {moves} move(s) between open stages go forward{ties}); if that is wrong, pass the "
            f"order with --stages")


def finish(events: pd.DataFrame, funnel: FunnelDefinition, notes: list[str],
           attributes: pd.DataFrame | None = None) -> Converted:
    """The canonical log, each deal's events in order (at equal times the outcome last, then
    the order given), attributes (a frame with ``deal_id``) joined on."""
    terminal = events["stage"].isin(funnel.won + funnel.lost).astype(int)
    events = (events.assign(_terminal=terminal, _seq=np.arange(len(events)), deal_id=events["deal_id"].astype(str))
              .sort_values(["deal_id", "timestamp", "_terminal", "_seq"], kind="stable"))
    events["amount"] = events["amount"].astype("float64")
    if attributes is not None:
        attributes = attributes.assign(deal_id=attributes["deal_id"].astype(str))
    return Converted(canonical(events, attributes), funnel, notes)
