"""The baselines a data scientist would pick for the total revenue of the next horizon, each
with its own spread, so the backtest scores them by the same CRPS and coverage as the
forecast (issue 20, item 7). Both read only the revenue won before the origin.

- **Run rate**: what the previous ``horizon_days`` brought, moved by how much one horizon's
  revenue has differed from the one before it. Its samples are ``W0 + (W_t - W_{t-H})`` for
  the horizon windows ``W_t`` ending on each day of the year before the origin (clipped at 0);
  with fewer than :data:`MIN_CHANGES` such pairs it is the point ``W0``.
- **ETS**: exponential smoothing of the weekly won revenue (statsmodels' ``ETSModel``,
  additive errors; the trend none, additive or damped, and a 52-week season when two years
  are there, chosen by AIC, as AutoETS does), with simulated paths summed over the horizon
  (the last, partial week pro rata), clipped at 0. None with fewer than :data:`MIN_WEEKS`
  weeks of history.

Revenue is in the log's currency: won rows' amounts, else ``deal_value``, else 0, as
:meth:`funnelsim.Snapshot.realised` counts the total it is scored against.
"""

from __future__ import annotations

import math
import warnings

import ibis
import numpy as np
import pandas as pd

__all__ = ["daily_won_revenue", "run_rate_samples", "ets_samples", "MIN_CHANGES", "MIN_WEEKS"]

MIN_CHANGES = 8        # run rate: fewer (W_t, W_{t-H}) pairs give the point W0
MIN_WEEKS = 12         # ETS: fewer weeks of history give no ETS baseline
CHANGE_DAYS = 365      # run rate: windows ending in this many days before the origin
SEASON_WEEKS = 52


def daily_won_revenue(snapshot, deal_value: float | None = None) -> pd.Series:
    """Revenue won on each day from the log's first event to the snapshot's as-of day
    (zeros included), indexed by day."""
    t = snapshot.log.table
    won = t.filter(t.stage.isin(list(snapshot.funnel.won)) & (t.timestamp < ibis.timestamp(snapshot.cutoff)))
    amount = won.amount.cast("float64")
    if deal_value is not None:
        amount = amount.fill_null(float(deal_value))
    daily = (won.mutate(day=won.timestamp.truncate("D"), value=amount.fill_null(0.0))
             .group_by("day").aggregate(revenue=ibis._.value.sum()).to_pandas())
    first = pd.Timestamp(t.timestamp.min().execute()).normalize()
    days = pd.date_range(first, snapshot.as_of.normalize(), freq="D")
    series = pd.Series(0.0, index=days)
    if not daily.empty:
        series = series.add(daily.set_index(pd.to_datetime(daily["day"]))["revenue"].astype(float), fill_value=0.0)
    return series.loc[days]


def run_rate_samples(daily: pd.Series, horizon_days: int, draws: int, seed: int = 0) -> np.ndarray:
    """``draws`` samples of the next horizon's revenue by the run rate (see module doc)."""
    values = daily.to_numpy(float)
    windows = np.convolve(values, np.ones(horizon_days), mode="valid")   # windows[i] ends on day i + H - 1
    latest = float(windows[-1]) if len(windows) else float(values.sum())
    changes = windows[horizon_days:] - windows[:-horizon_days] if len(windows) > horizon_days else np.array([])
    changes = changes[-CHANGE_DAYS:]
    if len(changes) < MIN_CHANGES:
        return np.full(draws, latest)
    picked = np.random.default_rng(seed).choice(changes, size=draws, replace=True)
    return np.clip(latest + picked, 0.0, None)


def ets_samples(daily: pd.Series, horizon_days: int, draws: int, seed: int = 0) -> np.ndarray | None:
    """``draws`` samples of the next horizon's revenue by ETS on weekly revenue (see module
    doc), or None with too short a history."""
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    values = daily.to_numpy(float)
    weeks = len(values) // 7
    if weeks < MIN_WEEKS:
        return None
    weekly = values[len(values) - 7 * weeks:].reshape(weeks, 7).sum(axis=1)    # complete weeks ending at as-of
    if not np.any(weekly):
        return np.zeros(draws)
    forms = [dict(trend=None), dict(trend="add"), dict(trend="add", damped_trend=True)]
    if weeks >= 2 * SEASON_WEEKS:
        forms += [dict(f, seasonal="add", seasonal_periods=SEASON_WEEKS) for f in forms]
    best = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # convergence chatter of the optimiser
        for form in forms:
            try:
                fitted = ETSModel(weekly, error="add", **form).fit(disp=False)
            except (ValueError, np.linalg.LinAlgError):
                continue
            if np.isfinite(fitted.aic) and (best is None or fitted.aic < best.aic):
                best = fitted
        if best is None:
            return None
        ahead = math.ceil(horizon_days / 7)
        paths = np.asarray(best.simulate(ahead, anchor="end", repetitions=draws, rng=np.random.default_rng(seed)),
                           float)
    paths = paths.reshape(ahead, draws)
    share = np.ones(ahead)
    share[-1] = horizon_days / 7 - (ahead - 1)                  # the last week, pro rata
    return np.clip(share @ paths, 0.0, None)
