"""Periodic pipeline snapshots in, the canonical event log out (``funnelsim convert snapshots``).

A snapshot file has one row per deal per snapshot: ``snapshot_date``, the deal id, its stage,
optionally its amount, expected ``close_date`` and attributes. Common spellings of these column
names are accepted (:data:`ALIASES`: ``Deal ID``, ``Opportunity ID``, ``Stage Name``, ...).

A stage entry is only known to lie between the last snapshot that did not show it and the first
that does; it is dated at the midpoint of that interval (see :func:`from_snapshots` and
docs/adapters-snapshots.md). The reading helpers at the end of this module (loading a file or
DataFrame with its spreadsheet rows, finding columns by alias, parsing dates and amounts with
errors that name the row, inferring the stage order from moves) are shared with the Pipedrive
and Bitrix24 adapters.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import numpy as np
import pandas as pd

from ..data._files import ROW, load_source, missing_column_error
from ..data.events import FunnelDefinition
from ..errors import FunnelDataError
from ._common import Converted

__all__ = ["from_snapshots", "ALIASES"]

# canonical name -> accepted spellings (compared ignoring case, spaces and punctuation), first wins
ALIASES = {
    "snapshot_date": ("snapshot_date", "snapshot", "snapshot_time", "as_of", "as_of_date", "report_date"),
    "deal_id": ("deal_id", "opportunity_id", "record_id", "deal", "opportunity", "id"),
    "stage": ("stage", "stage_name", "deal_stage", "opportunity_stage", "status"),
    "amount": ("amount", "value", "deal_value", "opportunity_amount", "amount_converted"),
    "close_date": ("close_date", "expected_close_date", "closing_date"),
}


def from_snapshots(snapshots, *, stages=None, won=None, lost=None) -> Converted:
    """Convert periodic pipeline snapshots to the canonical event log.

    Parameters
    ----------
    snapshots : path or DataFrame
        One row per deal per snapshot: ``snapshot_date``, deal id, stage, optional amount,
        ``close_date`` and attributes (see :data:`ALIASES` for accepted column names). A
        ``snapshot_date`` without a time of day means the pipeline as of the *end* of that day
        (as funnelsim's as-of does); with a time of day, that moment.
    stages : sequence of str, optional
        The open stages in order. Default: inferred from the deals' moves (the order that makes
        the most moves go forward).
    won, lost : sequence of str, optional
        The outcome labels. Default: labels reading "won" / "lost" ("Closed Won", "Won",
        "Closed Lost", "Lost", "Lose").

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
    name, frame = load_table(snapshots, "snapshots", ALIASES)
    cols = {key: find_column(frame, name, ALIASES[key], required=key in ("snapshot_date", "deal_id", "stage"),
                             canonical=key) for key in ALIASES}
    when = parse_dates(frame, cols["snapshot_date"], name)
    if (when == when.dt.normalize()).all():  # dates only: the end of that day
        when = when + pd.Timedelta(days=1)
    deal = text_column(frame, cols["deal_id"], name, "the deal id")
    stage = text_column(frame, cols["stage"], name, "the stage")
    data = pd.DataFrame({"deal_id": deal, "stage": stage, "seen": when, ROW: frame[ROW]})
    data["amount"] = parse_amounts(frame, cols["amount"], name) if cols["amount"] else np.nan
    if cols["close_date"]:
        data["close_date"] = parse_dates(frame, cols["close_date"], name, required=False)
    attributes = [c for c in frame.columns if c != ROW and c not in cols.values()]
    notes: list[str] = []

    data = _drop_repeated_rows(data, frame, cols, name, notes)
    funnel = _funnel(data, cols["stage"], name, stages, won, lost)
    terminal = set(funnel.won + funnel.lost)
    events, counts = _entries(data, terminal)
    if stages is None:
        order, forward, moves = infer_order(_paths(events, terminal), _first_positions(events, terminal))
        funnel = FunnelDefinition(tuple(order), funnel.won, funnel.lost)
        notes.append(order_note(order, forward, moves, "their snapshots"))
    deal_attributes = None
    if attributes:
        last = data.sort_values(["deal_id", "seen"], kind="stable").groupby("deal_id", sort=False).tail(1)
        deal_attributes = frame.loc[last.index, attributes].set_axis(last["deal_id"].to_numpy())
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
    labels = list(dict.fromkeys(data["stage"]))
    given = [*(stages or ()), *(won or ()), *(lost or ())]
    if won is None:
        won = [s for s in labels if outcome_of(s) == "won" and s not in given]
    if lost is None:
        lost = [s for s in labels if outcome_of(s) == "lost" and s not in given]
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
    last = data.groupby("deal_id", sort=False).tail(1)
    counts = {
        "left_truncated": int((first & (data["seen"] == first_moment)).sum()),
        "reopened": int(n_reopened),
        "vanished": int(((last["seen"] < moments[-1]) & ~last["stage"].isin(terminal)).sum()),
        "spacing": float(pd.Series(np.diff(moments)).median() / pd.Timedelta(days=1)) if len(moments) > 1 else 0.0,
        "snapshots": len(moments),
    }
    return entries.drop(columns=["seen"]), counts


def _paths(events: pd.DataFrame, terminal: set[str]) -> list[list[str]]:
    open_events = events[~events["stage"].isin(terminal)]
    return [list(g) for _, g in open_events.groupby("deal_id", sort=False)["stage"]]


def _first_positions(events: pd.DataFrame, terminal: set[str]) -> dict[str, float]:
    """Tie-break for the stage order: a stage's mean position in the deals' paths."""
    open_events = events[~events["stage"].isin(terminal)]
    position = open_events.groupby("deal_id", sort=False).cumcount()
    return position.groupby(open_events["stage"]).mean().to_dict()


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


# --------------------------------------------------------------------------- shared reading helpers


def load_table(source, what: str, aliases: dict | None = None) -> tuple[str, pd.DataFrame]:
    """(name for messages, every column as read, plus ``_row``: the spreadsheet row, header = 1)."""
    expected = tuple(a for names in (aliases or {}).values() for a in names)
    name, table = load_source(source, expected)
    if name == "DataFrame":
        name = f"the {what} DataFrame"
    frame = table.to_pandas()
    if frame.empty:
        raise FunnelDataError("the file has a header but no rows", source=name, hint=f"Export the {what} with rows.")
    frame[ROW] = frame[ROW].astype("int64")
    return name, frame


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


def text_column(frame: pd.DataFrame, column: str, name: str, what: str) -> pd.Series:
    """Stripped text; a missing or blank cell is an error naming its row."""
    raw = frame[column]
    text = raw.astype("string").str.strip()
    blank = text.isna() | (text == "")
    if blank.any():
        raise FunnelDataError(f"{what} is missing", source=name, row=int(frame.loc[blank, ROW].iloc[0]), column=column,
                              hint="Every row needs one; remove the row or fill it in.")
    return text.astype(object)


def parse_dates(frame: pd.DataFrame, column: str, name: str, *, required: bool = True) -> pd.Series:
    """Timestamps (naive; text with a UTC offset or a zone-aware column becomes UTC)."""
    raw = frame[column]
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        parsed = raw.dt.tz_convert("UTC").dt.tz_localize(None)
        text = raw.astype("string")
    elif pd.api.types.is_datetime64_dtype(raw):
        parsed, text = raw, raw.astype("string")
    else:
        text = raw.astype("string").str.strip().replace("", pd.NA)
        parsed = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=True).dt.tz_localize(None)
    parsed = parsed.astype("datetime64[ns]")
    bad = text.notna() & parsed.isna()
    if required:
        bad |= text.isna()
    if bad.any():
        row = frame.loc[bad].iloc[0]
        missing = pd.isna(row[column])
        raise FunnelDataError("the date is missing" if missing else "cannot read this as a date", source=name,
                              row=int(row[ROW]), column=column, value=None if missing else str(row[column]),
                              hint="Use ISO 8601 dates: 2024-03-31 or 2024-03-31 14:05 (an offset such as +03:00 "
                                   "is converted to UTC).")
    return parsed


def parse_amounts(frame: pd.DataFrame, column: str, name: str) -> pd.Series:
    """Amounts as floats (blank is NaN); a non-numeric or negative amount is an error."""
    raw = frame[column]
    if pd.api.types.is_numeric_dtype(raw):
        amount = raw.astype("float64")
        bad = amount < 0
    else:
        text = raw.astype("string").str.strip().replace("", pd.NA)
        amount = pd.to_numeric(text, errors="coerce").astype("float64")
        bad = (text.notna() & amount.isna()) | (amount < 0)
    if bad.any():
        row = frame.loc[bad].iloc[0]
        raise FunnelDataError("the amount is not a non-negative number", source=name, row=int(row[ROW]),
                              column=column, value=str(row[column]),
                              hint="Write amounts as plain numbers (12500.50), without currency signs.")
    return amount


def outcome_of(label: str) -> str | None:
    """'won' for "Won", "Closed Won", "6 - Closed/Won"; 'lost' for "Lost", "Closed Lost", "Lose"."""
    words = set(re.findall(r"[a-z]+", label.lower()))
    if words & {"won", "win"}:
        return "won"
    if words & {"lost", "lose"}:
        return "lost"
    return None


def infer_order(paths: Iterable[list[str]], tie: dict[str, float]) -> tuple[list[str], int, int]:
    """The order of the stages that makes the most moves between consecutive stages of the
    paths go forward; ties (and stages never moved between) follow ``tie`` (smaller first).
    Returns (order, forward moves, all moves)."""
    moves = Counter((a, b) for path in paths for a, b in zip(path, path[1:], strict=False) if a != b)
    stages = sorted(tie, key=lambda s: (tie[s], s))
    n = len(stages)
    index = {s: i for i, s in enumerate(stages)}
    weight = np.zeros((n, n))
    for (a, b), count in moves.items():
        weight[index[a], index[b]] += count
    # a before b scores its forward moves first, then agreement with the tie order
    score = weight * (n * n + 1) + np.triu(np.ones((n, n)), 1)
    order = _best_order(score) if n <= 12 else _local_order(score)
    names = [stages[i] for i in order]
    forward = int(sum(c for (a, b), c in moves.items() if names.index(a) < names.index(b)))
    return names, forward, int(sum(moves.values()))


def _best_order(score: np.ndarray) -> list[int]:
    """Exact: dynamic programming over the subsets placed first."""
    n = len(score)
    size = 1 << n
    best = np.full(size, -np.inf)
    best[0] = 0.0
    choice = np.zeros(size, dtype=np.int64)
    # gain[s][mask] = sum of score[a, s] for a in mask
    gain = np.zeros((n, size))
    for mask in range(1, size):
        low = (mask & -mask).bit_length() - 1
        gain[:, mask] = gain[:, mask & (mask - 1)] + score[low, :]
    for mask in range(size):
        if best[mask] == -np.inf:
            continue
        for s in range(n):
            if not mask >> s & 1:
                value = best[mask] + gain[s, mask]
                nxt = mask | 1 << s
                if value > best[nxt]:
                    best[nxt], choice[nxt] = value, s
    order, mask = [], size - 1
    while mask:
        s = int(choice[mask])
        order.append(s)
        mask &= ~(1 << s)
    return order[::-1]


def _local_order(score: np.ndarray) -> list[int]:
    """Many stages: start from the tie order and move single stages while that helps."""
    order = list(range(len(score)))

    def total(o):
        return sum(score[o[i], o[j]] for i in range(len(o)) for j in range(i + 1, len(o)))

    improved = True
    while improved:
        improved = False
        for s in list(order):
            rest = [x for x in order if x != s]
            best = max((rest[:i] + [s] + rest[i:] for i in range(len(rest) + 1)), key=total)
            if total(best) > total(order):
                order, improved = best, True
    return order


def order_note(order: list[str], forward: int, moves: int, source: str) -> str:
    back = moves - forward
    return (f"stage order inferred from {moves} move(s) between open stages in {source}: {' > '.join(order)} "
            f"({forward} forward, {back} back); if that is wrong, pass the order with --stages")


def finish(events: pd.DataFrame, funnel: FunnelDefinition, notes: list[str],
           attributes: pd.DataFrame | None = None) -> Converted:
    """The canonical log: events in each deal's order (outcome last at equal times), attributes
    (indexed by deal id) joined as columns."""
    terminal = events["stage"].isin(funnel.won + funnel.lost)
    events = (events.assign(_terminal=terminal.astype(int), _seq=np.arange(len(events)))
              .sort_values(["deal_id", "timestamp", "_terminal", "_seq"], kind="stable"))
    columns = ["deal_id", "stage", "timestamp", "amount"]
    if "close_date" in events.columns:
        columns.append("close_date")
    out = events[columns].reset_index(drop=True)
    out["deal_id"] = out["deal_id"].astype(str)
    out["amount"] = out["amount"].astype("float64")
    if attributes is not None and len(attributes.columns):
        taken = set(out.columns)
        renamed = {c: (f"deal_{c}" if c in taken else c) for c in attributes.columns}
        attrs = attributes.rename(columns=renamed)
        attrs.index = attrs.index.astype(str)
        out = out.join(attrs, on="deal_id")
    return Converted(out, funnel, notes)
