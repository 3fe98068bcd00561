"""Sufficient statistics of the stays: the small table the funnel model fits from.

One row per (stage, segment, destination, duration bin) with

- ``n``          number of stays,
- ``sum_log_t``  Σ log t and ``sum_log_t2`` Σ (log t)², where t = days + 0.5.

``destination`` is the stage, won or lost label entered next, or ``"censored"`` for
stays still open at ``as_of`` (their t is the age). The half-day offset makes a
same-day move (0 days) a finite duration: a log of dates cannot tell 0 from a few
hours, so every stay is measured from the middle of its first day.

Short stays. An exit after less than ``short_days`` (an hour in a log with times of day, a day
in a log of dates only) is kept in its own row, ``bin`` = :data:`SHORT_BIN` = -1, with
``days_low`` 0 and ``days_high`` ``short_days``: the model reads it as an *instant* stay (the
deal passed straight through: an automation, or a rep clicking it through several stages), not
as a duration of that length. With t = days + 0.5 such stays would all sit near t = 0.5, and a
LogNormal fitted to a stage whose stays are all like that collapses its scale onto one point:
a posterior the sampler cannot cross (docs/short-stays.md).

Binning. Bin b holds 0.5 · 2^(b/3) <= t < 0.5 · 2^((b+1)/3): three bins per doubling
of duration (edges 0.5, 0.63, 0.79, 1.0, ... days; 40 bins reach 256 days, 50 reach
5 years). Because each row also carries Σ log t and Σ (log t)², a LogNormal
time-in-stage model uses exits *exactly* (n, Σ log t and Σ (log t)² per destination
are sufficient); only still-open stays and non-LogNormal families use the bin's
mean log t as its representative, which keeps the binned log-likelihood within 0.5%
of the per-stay value (tests/test_stats.py measures it).

The whole computation is one Ibis expression over the spells, so it runs in
embedded DuckDB by default and unchanged in any database Ibis reaches; only the
statistics (thousands of rows, whatever the number of deals) come back to pandas.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ibis
import numpy as np
import pandas as pd

from ._portable import rounded
from .events import FunnelDefinition
from .spells import Spells, end_of_day

__all__ = ["StageStats", "to_stage_stats", "OFFSET_DAYS", "BINS_PER_DOUBLING", "bin_edges", "CENSORED",
           "SHORT_BIN", "SHORT_DAYS", "SHORT_DAYS_DATE_ONLY", "COHORT_PERIODS", "cohort_labels", "cohort_of"]

OFFSET_DAYS = 0.5
BINS_PER_DOUBLING = 3
CENSORED = "censored"
SHORT_BIN = -1                 # the row of exits shorter than the log's resolution
SHORT_DAYS = 1.0 / 24.0        # ... in a log with times of day: under an hour
SHORT_DAYS_DATE_ONLY = 1.0     # ... in a log of dates only: the same day


# the entry cohorts a drifting funnel is estimated over (--every): the calendar period a stay
# begins in, as pandas periods ("2024-03", "2024Q1", a week by its Monday)
COHORT_PERIODS = {"week": "W-SUN", "month": "M", "quarter": "Q"}
_TRUNCATE = {"week": "W", "month": "M", "quarter": "Q"}

FIXED_POINT = 2.0**32   # sums are taken in integers of 2^-32: exact, so the same in any row order


def _fixed(value):
    """``value`` as an integer count of 2^-32 (error < 1.2e-10): integer sums do not depend on
    the order a parallel database adds rows in, so the same data always give the same bits."""
    return rounded(value * FIXED_POINT).cast("int64")


@dataclass(frozen=True, eq=False)
class StageStats:
    """The sufficient statistics of the stays and what they were computed from.

    ``table`` has one row per (stage, segment, destination, duration bin): ``stage``,
    ``stage_index``, ``segment``, ``destination`` (or ``"censored"``), ``move``, ``bin``,
    ``n``, ``sum_log_t``, ``sum_log_t2``, ``mean_log_t`` (the bin's representative log
    duration, t = days + 0.5) and ``days_low`` / ``days_high`` (the bin's edges, days).
    ``segments`` lists every segment of the spells, with stays in the history window or not;
    ``history_days`` is the window (None: all history); ``counts`` the spells' edge cases;
    ``short_days`` the resolution below which an exit is a short stay (bin :data:`SHORT_BIN`).
    """

    table: pd.DataFrame
    funnel: FunnelDefinition
    as_of: pd.Timestamp
    segment_by: str | None = None
    segments: tuple[str, ...] = ()
    history_days: float | None = None
    counts: dict = field(default_factory=dict)
    short_days: float = SHORT_DAYS
    every: str | None = None

    @property
    def cohorts(self) -> tuple[str, ...]:
        """The entry cohorts, oldest first, from the first stay's to as-of's, with none left out
        (a period without entries is a step of the drift like any other); () when the
        statistics are not split by cohort (``every`` None)."""
        if self.every is None:
            return ()
        first = self.table["cohort"].min() if len(self.table) else cohort_labels([self.as_of], self.every)[0]
        periods = pd.period_range(pd.Period(first, COHORT_PERIODS[self.every]),
                                  pd.Period(self.as_of, COHORT_PERIODS[self.every]))
        return tuple(_label(p, self.every) for p in periods)

    @property
    def short_exits(self) -> int:
        """Exits shorter than ``short_days`` (the model's instant stays)."""
        return int(self.table.loc[self.table["bin"] == SHORT_BIN, "n"].sum())

    @property
    def stays(self) -> int:
        """Stays the statistics hold (exits and still-open stays)."""
        return int(self.table["n"].sum())

    def metadata(self) -> dict:
        """Everything but the table, as plain JSON values (for a saved model)."""
        return {"as_of": str(self.as_of.date()), "funnel": self.funnel.to_dict(), "segment_by": self.segment_by,
                "segments": list(self.segments), "history_days": self.history_days,
                "offset_days": OFFSET_DAYS, "bins_per_doubling": BINS_PER_DOUBLING, "counts": dict(self.counts),
                "short_days": self.short_days, "every": self.every}

    @classmethod
    def from_metadata(cls, table: pd.DataFrame, meta: dict) -> StageStats:
        """The inverse of :meth:`metadata`."""
        return cls(table, FunnelDefinition(**meta["funnel"]), pd.Timestamp(meta["as_of"]), meta.get("segment_by"),
                   tuple(meta.get("segments") or ()), meta.get("history_days"), dict(meta.get("counts") or {}),
                   float(meta.get("short_days", SHORT_DAYS)), meta.get("every"))


def bin_edges(n_bins: int) -> np.ndarray:
    """Lower edges of bins 0..n_bins (in t = days + 0.5)."""
    return OFFSET_DAYS * 2.0 ** (np.arange(n_bins + 1) / BINS_PER_DOUBLING)


def cohort_labels(dates, every: str) -> list[str]:
    """The entry cohort of each date: "2024-03" (month), "2024Q1" (quarter), or the Monday
    that begins its week, "2024-03-04" (week)."""
    periods = pd.DatetimeIndex(pd.to_datetime(list(dates))).to_period(COHORT_PERIODS[every])
    if every == "week":
        return [str(d) for d in periods.start_time.date]
    return [str(p) for p in periods]


def _label(period: pd.Period, every: str) -> str:
    return str(period.start_time.date()) if every == "week" else str(period)


def cohort_of(every: str | None):
    """A checked ``every`` (None: no cohorts), with a clear error for an unknown period."""
    from .events import FunnelDataError

    if every is None or every in COHORT_PERIODS:
        return every
    raise FunnelDataError(f"unknown cohort period {every!r}", column="every", value=str(every),
                          hint=f"Use one of: {', '.join(COHORT_PERIODS)}.")


def to_stage_stats(spells: Spells, history_days: float | None = None, every: str | None = None) -> StageStats:
    """Counts of stays by (stage, segment, destination or censored, duration bin): a
    :class:`StageStats` (its ``table`` has the columns listed there).

    ``every`` ("week", "month", "quarter"; None: not split) adds the stay's entry cohort, the
    calendar period it began in, to the key: column ``cohort`` (labels as
    :func:`cohort_labels`), what a drifting funnel model is fitted from.

    ``history_days``: learn only from stays that *began* in the last ``history_days`` days
    before the end of as-of, for a funnel that changes over time (None: all history). Stays
    are kept or dropped whole, by their start, so exits and still-open stays of the window
    are weighed alike; a segment with no stay in the window keeps its place (the model gives
    it the pooled estimate).
    """
    t = spells.table
    segments = None
    if history_days is not None:      # the window may leave segments out: list them all first
        segments = sorted(t.select("segment").distinct().to_pandas()["segment"].astype(str))
        t = _recent(spells, t, history_days)
    short_days = _short_days(spells)
    log_t = (t.days + OFFSET_DAYS).ln()
    bin_index = (log_t - np.log(OFFSET_DAYS)) / np.log(2.0) * BINS_PER_DOUBLING
    short = t.destination.notnull() & (t.days < short_days)
    every = cohort_of(every)
    keys = ["stage", "stage_index", "segment", "destination", "move", "bin"]
    if every is not None:
        t = t.mutate(cohort_start=t.entered.truncate(_TRUNCATE[every]))
        keys.append("cohort_start")
    grouped = (
        t.mutate(destination=t.destination.fill_null(CENSORED), log_t=log_t,
                 bin=ibis.ifelse(short, SHORT_BIN, bin_index.floor().cast("int64").clip(lower=0)))
        .group_by(keys)
        .aggregate(n=lambda s: s.count(), sum_log_t=lambda s: _fixed(s.log_t).sum(),
                   sum_log_t2=lambda s: _fixed(s.log_t * s.log_t).sum())
    )
    stats = grouped.to_pandas()
    for column in ("sum_log_t", "sum_log_t2"):
        stats[column] = stats[column].astype("float64") / FIXED_POINT
    order = ["stage_index", "segment", "destination", "bin"]
    if every is not None:
        starts = stats.pop("cohort_start")
        labels = {x: cohort_labels([x], every)[0] for x in starts.unique()}
        stats["cohort"] = starts.map(labels).astype(str)
        order.append("cohort")
    stats = stats.sort_values(order, ignore_index=True)
    stats["n"] = stats["n"].astype("int64")
    stats["mean_log_t"] = stats["sum_log_t"] / stats["n"]
    edges = bin_edges(max(int(stats["bin"].max()) + 1, 1) if len(stats) else 1)
    b = stats["bin"].to_numpy()
    is_short = b == SHORT_BIN
    stats["days_low"] = np.where(is_short, 0.0, edges[np.maximum(b, 0)] - OFFSET_DAYS)
    stats["days_high"] = np.where(is_short, short_days, edges[np.maximum(b, 0) + 1] - OFFSET_DAYS)
    return StageStats(stats, spells.funnel, spells.as_of, spells.segment_by,
                      tuple(segments or sorted(stats["segment"].astype(str).unique())),
                      None if history_days is None else float(history_days), dict(spells.counts), short_days, every)


def _short_days(spells: Spells) -> float:
    """The log's resolution for stays: a day when every stay begins and ends at midnight (a
    log of dates only), else an hour (see the module doc)."""
    t = spells.table

    def seconds_into_day(ts):
        return ts.hour() * 3600 + ts.minute() * 60 + ts.second()

    timed = ((seconds_into_day(t.entered) != 0) | (t.left.notnull() & (seconds_into_day(t.left) != 0))).any()
    return SHORT_DAYS if bool(timed.execute()) else SHORT_DAYS_DATE_ONLY


def _recent(spells: Spells, table, history_days: float):
    """The stays that began in the last ``history_days`` days before the end of as-of."""
    from .events import FunnelDataError

    if not np.isfinite(history_days) or history_days <= 0:
        raise FunnelDataError("the history window must be a positive number of days", column="history_days",
                              value=str(history_days), hint="Pass --history-days DAYS, e.g. 365, or leave it out.")
    since = end_of_day(spells.as_of) - pd.Timedelta(days=float(history_days))
    recent = table.filter(table.entered >= ibis.timestamp(since))
    if not int(recent.count().execute()):
        raise FunnelDataError(f"no stay began in the {history_days:g} days before the end of {spells.as_of.date()}",
                              column="history_days", value=str(history_days),
                              hint="Use a longer --history-days, or leave it out to learn from all history.")
    return recent
