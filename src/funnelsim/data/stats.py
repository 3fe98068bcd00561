"""Sufficient statistics of the stays: the small table the funnel model fits from.

One row per (stage, segment, destination, duration bin) with

- ``n``          number of stays,
- ``sum_log_t``  Σ log t and ``sum_log_t2`` Σ (log t)², where t = days + 0.5.

``destination`` is the stage, won or lost label entered next, or ``"censored"`` for
stays still open at ``as_of`` (their t is the age). The half-day offset makes a
same-day move (0 days) a finite duration: a log of dates cannot tell 0 from a few
hours, so every stay is measured from the middle of its first day.

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

import numpy as np
import pandas as pd

from .spells import Spells

__all__ = ["to_stage_stats", "OFFSET_DAYS", "BINS_PER_DOUBLING", "bin_edges", "CENSORED"]

OFFSET_DAYS = 0.5
BINS_PER_DOUBLING = 3
CENSORED = "censored"


FIXED_POINT = 2.0**32   # sums are taken in integers of 2^-32: exact, so the same in any row order


def _fixed(value):
    """``value`` as an integer count of 2^-32 (error < 1.2e-10): integer sums do not depend on
    the order a parallel database adds rows in, so the same data always give the same bits."""
    return (value * FIXED_POINT).round().cast("int64")


def bin_edges(n_bins: int) -> np.ndarray:
    """Lower edges of bins 0..n_bins (in t = days + 0.5)."""
    return OFFSET_DAYS * 2.0 ** (np.arange(n_bins + 1) / BINS_PER_DOUBLING)


def to_stage_stats(spells: Spells, history_days: float | None = None) -> pd.DataFrame:
    """Counts of stays by (stage, segment, destination or censored, duration bin).

    Returns a DataFrame with columns ``stage``, ``stage_index``, ``segment``,
    ``destination``, ``move``, ``bin``, ``n``, ``sum_log_t``, ``sum_log_t2``,
    ``mean_log_t`` (the bin's representative log duration), ``days_low`` and
    ``days_high`` (the bin's edges in days). ``attrs`` holds ``as_of``, the funnel
    definition, ``segment_by``, ``segments`` (every segment of the spells, with stays in the
    window or not), ``history_days`` and the binning constants.

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
    log_t = (t.days + OFFSET_DAYS).ln()
    bin_index = (log_t - np.log(OFFSET_DAYS)) / np.log(2.0) * BINS_PER_DOUBLING
    grouped = (
        t.mutate(destination=t.destination.fill_null(CENSORED), log_t=log_t,
                 bin=bin_index.floor().cast("int64").clip(lower=0))
        .group_by(["stage", "stage_index", "segment", "destination", "move", "bin"])
        .aggregate(n=lambda s: s.count(), sum_log_t=lambda s: _fixed(s.log_t).sum(),
                   sum_log_t2=lambda s: _fixed(s.log_t * s.log_t).sum())
    )
    stats = grouped.to_pandas()
    for column in ("sum_log_t", "sum_log_t2"):
        stats[column] = stats[column].astype("float64") / FIXED_POINT
    stats = stats.sort_values(["stage_index", "segment", "destination", "bin"], ignore_index=True)
    stats["n"] = stats["n"].astype("int64")
    stats["mean_log_t"] = stats["sum_log_t"] / stats["n"]
    edges = bin_edges(int(stats["bin"].max()) + 1 if len(stats) else 1)
    stats["days_low"] = edges[stats["bin"].to_numpy()] - OFFSET_DAYS
    stats["days_high"] = edges[stats["bin"].to_numpy() + 1] - OFFSET_DAYS
    stats.attrs.update(
        as_of=str(spells.as_of.date()), funnel=spells.funnel.to_dict(), segment_by=spells.segment_by,
        segments=segments or sorted(stats["segment"].astype(str).unique()), history_days=None if history_days is None else float(history_days),
        offset_days=OFFSET_DAYS, bins_per_doubling=BINS_PER_DOUBLING, counts=dict(spells.counts),
    )
    return stats


def _recent(spells: Spells, table, history_days: float):
    """The stays that began in the last ``history_days`` days before the end of as-of."""
    import ibis

    from .events import FunnelDataError

    if not np.isfinite(history_days) or history_days <= 0:
        raise FunnelDataError("the history window must be a positive number of days", column="history_days",
                              value=str(history_days), hint="Pass --history-days DAYS, e.g. 365, or leave it out.")
    since = spells.as_of + pd.Timedelta(days=1) - pd.Timedelta(days=float(history_days))
    recent = table.filter(table.entered >= ibis.timestamp(since))
    if not int(recent.count().execute()):
        raise FunnelDataError(f"no stay began in the {history_days:g} days before the end of {spells.as_of.date()}",
                              column="history_days", value=str(history_days),
                              hint="Use a longer --history-days, or leave it out to learn from all history.")
    return recent
