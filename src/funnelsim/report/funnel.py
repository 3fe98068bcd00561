"""Stage funnel table from aggregated stays: counts, censoring-correct conversion, timing.

Input is the small statistics table built upstream: one row per distinct
(stage, segment, move, destination, days) with a count ``n`` of stays (spells).
Every duration is in days. Stays still open at ``as_of`` are right-censored at their
age; conversion and loss probabilities are Aalen–Johansen cumulative incidences, so open
deals are neither counted as failures (the spreadsheet ``*_naive`` columns do that) nor
dropped.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import write_json

__all__ = ["FunnelTable", "funnel_table", "funnel_from_counts", "aalen_johansen", "kaplan_meier", "km_median"]

MOVES = ("next", "skip", "back", "won", "lost", "censored")
FORWARD = ("next", "skip", "won")
COUNT_COLUMNS = ("entered", "advanced", "skipped_ahead", "went_back", "won", "lost", "open")
PERCENT_COLUMNS = (
    "conversion",
    "conversion_naive",
    "through_conversion",
    "through_conversion_naive",
    "p_lost",
)
COLUMNS = (
    "stage", "segment", *COUNT_COLUMNS,
    "conversion", "conversion_naive", "through_conversion", "through_conversion_naive",
    "p_lost", "median_days", "dark_candidates",
)  # fmt: skip
SHORT_HEADERS = {
    "skipped_ahead": "skipped",
    "went_back": "back",
    "conversion": "conv",
    "conversion_naive": "conv naive",
    "through_conversion": "through",
    "through_conversion_naive": "through naive",
    "p_lost": "p lost",
    "median_days": "KM median days",
    "dark_candidates": "dark",
}  # terminal headers; JSON and DataFrame keep the full names
KM_NOTE = ("KM median days: Kaplan-Meier median of the days deals spent in the stage, from the log (open stays count "
           "as open); the model's stage table has its own estimate")
DARK_QUANTILE = 0.9  # open stays older than this quantile of forward exit times are "dark"
UNRESOLVED_NOTE = 0.10  # note a stage when more than this share of stays is unresolved


# --------------------------------------------------------------------------- estimators
def _event_table(days, codes, n, k: int):
    """Tied event table: distinct times (days), events per cause (k x m), at-risk weights."""
    days = np.asarray(days, dtype=float)
    codes = np.asarray(codes, dtype=np.int64)
    n = np.asarray(n, dtype=float)
    keep = n > 0
    days, codes, n = days[keep], codes[keep], n[keep]
    times, inv = np.unique(days, return_inverse=True)
    m = times.size
    removed = np.bincount(inv, weights=n, minlength=m)
    at_risk = removed[::-1].cumsum()[::-1]  # at risk at t: all stays with days >= t
    ev = codes >= 0
    flat = codes[ev] * m + inv[ev]
    d = np.bincount(flat, weights=n[ev], minlength=k * m).reshape(k, m)
    return times, d, at_risk


def _aj_codes(days, codes, n, k: int):
    """Aalen–Johansen on integer causes 0..k-1 (-1 = censored); see `aalen_johansen`."""
    times, d, at_risk = _event_table(days, codes, n, k)
    hazard = d / at_risk  # (k, m) cause-specific hazard increments
    surv = np.cumprod(1.0 - hazard.sum(axis=0))
    surv_before = np.concatenate(([1.0], surv[:-1]))  # S(t-)
    cif = np.cumsum(surv_before * hazard, axis=1)
    return times, cif, surv


def aalen_johansen(days, cause, n, causes: Sequence):
    """Aalen–Johansen cumulative incidence for competing causes, weighted and tied.

    days: time in stage (days) per row; cause: label per row; n: weight (count of stays)
    per row; causes: the competing event labels. A row whose label is not in ``causes``
    (e.g. ``None`` or ``"censored"``) is right-censored at ``days``. Ties are handled the
    standard way: at each distinct time t all events happen together with hazard
    d_k(t)/Y(t), where Y(t) counts every stay with days >= t (stays censored at t are
    still at risk at t), and CIF_k(t) = sum over u <= t of S(u-) d_k(u)/Y(u).

    Returns ``(times, cif, surv)``: the distinct observed times (days, ascending, including
    censoring-only times), ``cif`` of shape (len(causes), len(times)) and the all-cause
    survival S(t) (right-continuous step functions evaluated at ``times``).
    """
    codes = pd.Index(list(causes)).get_indexer(pd.Series(np.asarray(cause, dtype=object)))
    return _aj_codes(days, codes, n, len(causes))


def kaplan_meier(days, event, n):
    """Kaplan–Meier survival of time in stage (days); ``event`` True = exit, False = censored.

    Returns ``(times, surv)`` with S(t) at each distinct observed time (days).
    """
    codes = np.where(np.asarray(event, dtype=bool), 0, -1)
    times, _, surv = _aj_codes(days, codes, n, 1)
    return times, surv


def km_median(days, event, n) -> float:
    """Kaplan–Meier median (days): first time with S(t) <= 0.5, NaN if never reached.

    Same convention as lifelines' ``median_survival_time_`` (no midpoint averaging when
    S(t) equals 0.5 exactly); a 1e-10 tolerance absorbs floating-point noise.
    """
    times, surv = kaplan_meier(days, event, n)
    hit = np.flatnonzero(surv <= 0.5 + 1e-10)
    return float(times[hit[0]]) if hit.size else float("nan")


def _hitting_probability(chain: np.ndarray, target: int, start: int = 0) -> float:
    """P(ever reach ``target`` from ``start``) in a sub-stochastic jump chain.

    ``chain[i, j]`` is P(next state j | leave open stage i) for open stages i (rows) and
    all states j (open stages, then absorbing outcomes); missing row mass never moves.
    Solves h = b + Q h over the transient stages that can reach ``target`` (the others
    have h = 0), which keeps I - Q non-singular even when the chain has closed loops.
    """
    n_open = chain.shape[0]
    if target == start:
        return 1.0
    transient = np.array([i for i in range(n_open) if i != target])
    q = chain[np.ix_(transient, transient)]
    b = chain[transient, target]
    reach = b > 0
    while True:
        grown = reach | (q[:, reach] > 0).any(axis=1)
        if (grown == reach).all():
            break
        reach = grown
    h = np.zeros(transient.size)
    if reach.any():
        qr = q[np.ix_(reach, reach)]
        h[reach] = np.linalg.solve(np.eye(qr.shape[0]) - qr, b[reach])
    return float(h[transient == start][0]) if start in transient else 0.0


# --------------------------------------------------------------------------- validation
def _fail(frame: pd.DataFrame, bad: pd.Series, column: str, what: str) -> None:
    """Raise ValueError naming the first bad row (index label), column and value."""
    if bad.any():
        label = bad[bad].index[0]
        value = frame.at[label, column]
        label, value = (x.item() if isinstance(x, np.generic) else x for x in (label, value))
        raise ValueError(
            f"counts row {label!r}, column {column!r}: {what} (got {value!r}; "
            f"{int(bad.sum())} bad row(s)); fix the statistics table upstream"
        )


def _check_funnel(stages: list[str], won: str, lost: str) -> None:
    """Stage names distinct and non-empty; won/lost labels distinct from them."""
    if len(stages) == 0 or len(set(stages)) != len(stages):
        raise ValueError(f"stages must be a non-empty list of distinct names, got {stages!r}")
    if won in stages or lost in stages or won == lost:
        raise ValueError(
            f"won/lost labels ({won!r}, {lost!r}) must differ from each other and the stages"
        )


def _destination_index(data: pd.DataFrame, stages: list[str], idx: pd.Series) -> pd.Series:
    """Destination position among [*stages, won, lost] (-1 = censored), checked vs move."""
    position = {s: i for i, s in enumerate(stages)}
    dest = data["destination"].map(position)
    move = data["move"]
    between = move.isin(["next", "skip", "back"])
    _fail(data, between & dest.isna(), "destination", f"must be one of {stages} for next/skip/back")
    step = dest - idx
    wrong = (
        ((move == "next") & (step != 1))
        | ((move == "skip") & ~(step >= 2))
        | ((move == "back") & ~(step < 0))
    )
    rule = "inconsistent with move (next = +1, skip = +2 or more, back = earlier)"
    _fail(data, between & wrong, "destination", rule)
    k = len(stages)
    return dest.where(between, move.map({"won": k, "lost": k + 1, "censored": -1})).astype(int)


def _validate(counts: pd.DataFrame, stages: list[str], won: str, lost: str) -> pd.DataFrame:
    """Check ``counts`` against the funnel; return a copy with float ``days``/``n`` and
    ``dest_index`` (destination position among [*stages, won, lost], -1 = censored)."""
    if not isinstance(counts, pd.DataFrame):
        raise TypeError("counts must be a pandas DataFrame")
    _check_funnel(stages, won, lost)
    need = ["stage", "stage_index", "move", "destination", "days", "n"]
    missing = [c for c in need if c not in counts.columns]
    if missing:
        raise ValueError(f"Required column(s) {', '.join(missing)} missing from counts")
    data = counts.copy()
    if "segment" not in data.columns:
        data["segment"] = "all"
    _fail(data, data["segment"].isna(), "segment", "must not be missing")
    idx = data["stage"].map({s: i for i, s in enumerate(stages)})
    _fail(data, idx.isna(), "stage", f"not one of the open stages {stages}")
    _fail(data, data["stage_index"] != idx, "stage_index", "does not match the position in stages")
    _fail(data, ~data["move"].isin(MOVES), "move", f"must be one of {list(MOVES)}")
    for col in ("days", "n"):
        value = pd.to_numeric(data[col], errors="coerce").astype(float)
        _fail(data, ~(value >= 0) | ~np.isfinite(value), col, "must be a finite number >= 0")
        data[col] = value
    data["dest_index"] = _destination_index(data, stages, idx)
    return data


# --------------------------------------------------------------------------- per stage
def _stage_row(stays: pd.DataFrame, k: int) -> tuple[dict, np.ndarray, float]:
    """Columns of one (stage, segment) row except through_*, its jump-chain row
    (P(destination) over [*stages, won, lost]) and the unresolved mass S(last time).

    One Aalen–Johansen fit with a cause per destination; CIFs add over causes, so
    conversion (forward = later stages + won) equals the {forward, back, lost} estimate.
    """
    moves = stays["move"].to_numpy()
    n = stays["n"].to_numpy(dtype=float)
    days = stays["days"].to_numpy(dtype=float)

    def total(*which: str) -> int:
        return int(round(n[np.isin(moves, which)].sum()))

    row = {
        "entered": int(round(n.sum())),
        "advanced": total("next", "skip"),
        "skipped_ahead": total("skip"),
        "went_back": total("back"),
        "won": total("won"),
        "lost": total("lost"),
        "open": total("censored"),
    }
    chain = np.zeros(k + 2)
    nan = float("nan")
    row.update(conversion=nan, conversion_naive=nan, p_lost=nan, median_days=nan, dark_candidates=0)
    if row["entered"] == 0:
        return row, chain, 0.0
    _, cif, surv = _aj_codes(days, stays["dest_index"].to_numpy(), n, k + 2)
    chain = cif[:, -1]
    here = int(stays["stage_index"].iloc[0])
    row["conversion"] = float(chain[here + 1 : k + 1].sum())  # later stages + won
    row["p_lost"] = float(chain[k + 1])
    row["conversion_naive"] = (row["advanced"] + row["won"]) / row["entered"]
    row["median_days"] = km_median(days, moves != "censored", n)
    row["dark_candidates"] = _dark_candidates(days, moves, n)
    return row, chain, float(surv[-1])


def _dark_candidates(days: np.ndarray, moves: np.ndarray, n: np.ndarray) -> int:
    """Open stays older (days) than the weighted 90th percentile of forward exit times."""
    fwd = np.isin(moves, FORWARD) & (n > 0)
    if not fwd.any():
        return 0
    cut = np.quantile(days[fwd], DARK_QUANTILE, weights=n[fwd], method="inverted_cdf")
    return int(round(n[(moves == "censored") & (days > cut)].sum()))


def _stage_note(stage: str, where: str, row: dict, unresolved: float, longest: float):
    """A note for a stage with no stays or much unresolved mass, else None."""
    if row["entered"] == 0:
        return f"{stage} ({where}): no stays; its rates are undefined."
    if unresolved > UNRESOLVED_NOTE:
        return (
            f"{stage} ({where}): {unresolved:.0%} of stays still unresolved after {longest:g} "
            f"days (the longest observed); conversion, p_lost and through_conversion count "
            f"them as never moving."
        )
    return None


def _add_through(rows: list[dict], chain: np.ndarray, won_row: dict) -> None:
    """Fill through_conversion (hitting probability from the first stage via the jump
    chain) and its naive ratio (entries / first-stage entries) in place."""
    first = rows[0]["entered"]
    for target, row in enumerate([*rows, won_row]):
        row["through_conversion"] = _hitting_probability(chain, target) if first else np.nan
        row["through_conversion_naive"] = row["entered"] / first if first else np.nan


def _group_rows(part: pd.DataFrame, stages: list[str], segment, won: str, notes: list[str]):
    """Rows for one segment (or the pool, ``segment`` None): each stage, then the won row."""
    k = len(stages)
    chain = np.zeros((k, k + 2))
    rows = []
    where = "whole funnel" if segment is None else f"segment {segment!r}"
    for i, stage in enumerate(stages):
        stays = part[part["stage_index"] == i]
        row, chain[i], unresolved = _stage_row(stays, k)
        rows.append({"stage": stage, "segment": segment, **row})
        note = _stage_note(stage, where, row, unresolved, stays["days"].max())
        notes.extend([note] if note else [])
    won_n = int(round(part.loc[part["move"] == "won", "n"].sum()))
    won_row = {c: None for c in COLUMNS} | {"stage": won, "segment": segment, "entered": won_n}
    _add_through(rows, chain, won_row)
    return [*rows, won_row]


def funnel_table(spells, notes: Sequence[str] = ()) -> FunnelTable:
    """The funnel table of a :class:`funnelsim.Snapshot` (with the notes of reading its log)
    or of :class:`funnelsim.data.spells.Spells`, per segment when split by one: only the small
    table of durations rounded to the hour comes back from the database."""
    from ..data.snapshot import Snapshot

    if isinstance(spells, Snapshot):
        notes, spells = [*spells.log.notes, *notes], spells.spells
    funnel = spells.funnel
    table = funnel_from_counts(
        spells.duration_counts(), list(funnel.stages), as_of=spells.as_of,
        by_segment=spells.segment_by is not None, won=funnel.won_name, lost=funnel.lost_name,
    )
    table.notes = [*notes, *spells.notes, *table.notes]
    return table


def funnel_from_counts(
    counts: pd.DataFrame,
    stages: list[str],
    *,
    as_of: pd.Timestamp | str,
    by_segment: bool = False,
    won: str = "Won",
    lost: str = "Lost",
) -> FunnelTable:
    """Stage funnel table from aggregated stays (durations in days).

    One row per open stage for the whole funnel (``segment`` None, all segments pooled),
    then, when ``by_segment``, one block per segment (sorted); each block ends with a
    summary row ``stage == won`` holding ``entered`` (won exits),
    ``through_conversion`` = P(reach won from first-stage entry) and its naive ratio.
    ``conversion``/``p_lost`` are Aalen–Johansen cumulative incidences at the last observed
    time with causes forward (next, skip, won), back and lost, open stays censored.
    Raises ValueError naming the row, column and value of inconsistent input.
    """
    data = _validate(counts, list(stages), won, lost)
    notes: list[str] = []
    rows = _group_rows(data, list(stages), None, won, notes)
    if by_segment:
        for segment, part in data.groupby("segment", sort=True):
            rows += _group_rows(part, list(stages), segment, won, notes)
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    for col in (*COUNT_COLUMNS, "dark_candidates"):
        table[col] = table[col].astype("Int64")
    for col in (*PERCENT_COLUMNS, "median_days"):
        table[col] = table[col].astype(float)
    table["segment"] = table["segment"].astype(object).where(table["segment"].notna(), None)
    return FunnelTable(table, pd.Timestamp(as_of), notes)


# --------------------------------------------------------------------------- result
def _json_value(value):
    """Plain JSON value: NaN/NA -> None, numpy scalars -> int/float."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if np.isnan(value) else float(value)
    return value


def _cell(column: str, value) -> str:
    """Display text of one cell (percentages, days with one decimal, blanks for missing)."""
    if _json_value(value) is None:
        return "(all)" if column == "segment" else "—"
    if column in PERCENT_COLUMNS:
        return f"{value:.1%}"
    if column == "median_days":
        return f"{value:.1f}"
    return str(value)


class FunnelTable:
    """Funnel table result: ``table`` (DataFrame, columns as in COLUMNS), ``as_of``, ``notes``."""

    def __init__(self, table: pd.DataFrame, as_of: pd.Timestamp, notes: list[str] | None = None):
        self.table = table
        self.as_of = pd.Timestamp(as_of)
        self.notes = list(notes or [])

    @property
    def segmented(self) -> bool:
        """True when the table has per-segment rows besides the whole-funnel ones."""
        return bool(self.table["segment"].notna().any())

    def to_dict(self) -> dict:
        """JSON-safe dict: ``{"as_of": "YYYY-MM-DD", "stages": [rows], "notes": [...]}``."""
        records = self.table.to_dict(orient="records")
        rows = [{c: _json_value(v) for c, v in r.items()} for r in records]
        return {"as_of": self.as_of.strftime("%Y-%m-%d"), "stages": rows, "notes": list(self.notes)}

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write ``to_dict()`` as JSON atomically (temp file in the same folder, then rename)."""
        return write_json(path, self.to_dict())

    def _display(self) -> pd.DataFrame:
        """Formatted text copy of the table (segment column only when segmented)."""
        cols = [c for c in COLUMNS if c != "segment" or self.segmented]
        return pd.DataFrame({c: [_cell(c, v) for v in self.table[c]] for c in cols})

    def _repr_html_(self) -> str:
        body = self._display().to_html(index=False, escape=True)
        cut = body.index(">") + 1
        caption = f"<caption>Funnel as of {self.as_of:%Y-%m-%d}</caption>"
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        return body[:cut] + caption + body[cut:] + (f"<ul>{notes}</ul>" if notes else "")

    def __rich__(self):
        from ._tables import FitTable

        shown = self._display()
        table = FitTable(
            title=f"Funnel as of {self.as_of:%Y-%m-%d}",
            caption="\n".join([*self.notes, KM_NOTE]),
            caption_justify="left",
        )
        for col in shown.columns:
            left = col in ("stage", "segment")
            table.add_column(SHORT_HEADERS.get(col, col), justify="left" if left else "right", key=left)
        segments = self.table["segment"].tolist()
        for i, values in enumerate(shown.itertuples(index=False)):
            last = i + 1 == len(shown) or segments[i + 1] != segments[i]
            table.add_row(*values, end_section=last)
        return table

    def __repr__(self) -> str:
        head = f"FunnelTable(as_of={self.as_of:%Y-%m-%d}, rows={len(self.table)})"
        return f"{head}\n{self.table.to_string()}"
