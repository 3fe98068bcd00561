"""New deals: how many enter the funnel each week, per segment, and in which stage.

The open pipeline is only part of what a quarter brings: deals created during the horizon
can be won inside it too. This module learns the weekly inflow of new deals from the recent
history and turns it into new-deal *slots* for the simulator.

- :func:`new_deal_stats` (Ibis, where the events live): for each of the ``weeks`` full weeks
  (7 days) ending at the end of as-of, per segment and entry stage, the number of deals whose
  first open stage was entered that week. Deals created straight into won or lost are not
  counted (they never sit in the pipeline).
- :func:`new_deal_draws`: per posterior draw, how many deals each segment creates in each
  week of the horizon and where they enter. Weekly counts are Poisson with a rate that may
  move: the Poisson-Gamma local level of Smith & Miller (1986) / Harvey & Fernandes (1989).
  Each week the level's Gamma(a, b) is discounted to Gamma(ωa, ωb) (same mean, less
  certainty), then updated with the week's count (a + count, b + 1), from the Jeffreys
  prior (a = 1/2, b = 0). Over the horizon the level walks on as λ' = λ η / ω with η ~
  Beta(ωa, (1 - ω)a) (mean unchanged, spread growing with the horizon). Each draw takes its
  own ω from :data:`DISCOUNTS`, with the posterior weights of how well each predicts the
  history's weekly counts (the one-step-ahead Negative Binomial likelihood, summed over
  segments, from the third week on; a uniform prior over the grid), so the doubt about how
  fast the level moves is in the band too. ω = 1 is a level that does not move: the
  Gamma(1/2 + total, weeks) posterior of a flat rate; under 8 weeks of history every draw
  takes it. Each week is also multiplied by a Gamma(r, 1/r) factor, r = mean² / (variance -
  mean) from the history's weekly counts (Poisson when they are not over-dispersed). Entry
  stages split each week's deals by Dirichlet(1/2 + counts) shares over the stages deals were
  created in. A partial last week gets its share of the rate.
- :func:`new_deal_pipeline`: the slots: for every (segment, week, entry stage) cell, as many
  deals as the largest count over draws, each created at a uniform time in its week; the
  simulator keeps, in draw d, the first ``counts[d, cell]`` of them.

Deals **created already won** (a renewal or a self-serve order logged straight as won) never
sit in the pipeline, but they are revenue in the horizon all the same:
:func:`created_won_stats` lists those of the last ``weeks`` (segment, week, amount) and
:func:`created_won_draws` adds, per draw, as many as the same Negative Binomial weekly model
gives, each on a uniform day of its week and worth an amount drawn from its segment's own
created-won amounts (bootstrap).

No trend or seasonality: with ω = 1 the next weeks look like the average of the last
``weeks``; with ω < 1 like the recent weeks, more uncertain the further ahead. New
deals have no amount yet, so a won one is valued from its segment's won amounts (or the
forecast's ``deal_value``).
"""

from __future__ import annotations

import ibis
import numpy as np
import pandas as pd

from .._random import NEW_DEAL_KEYS
from .._random import rng as random_stream
from ..data.events import event_order
from ..data.spells import Spells, deal_segment
from .kernel import Pipeline

__all__ = ["new_deal_stats", "new_deal_draws", "new_deal_pipeline", "created_won_stats", "created_won_draws",
           "discount_weights", "level_discount", "NewDeals", "WEEKS", "DISCOUNTS"]

WEEKS = 26          # weeks of history the inflow is learnt from (fewer if the log is shorter)
MIN_WEEKS = 2       # fewer full weeks of history than this: no inflow estimate
DISCOUNTS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5)   # the level's weekly discounts to choose from (1: a flat rate)


def new_deal_stats(spells: Spells, weeks: int = WEEKS) -> pd.DataFrame:
    """Deals entering the funnel per (segment, entry stage, week), week 0 being the 7 days
    ending at the end of as-of. Columns ``segment``, ``stage``, ``stage_index``, ``week``,
    ``deals``; every (segment, stage, week) combination of the segments and open stages seen
    is present (zeros included). ``attrs["weeks"]`` is the number of full weeks the log
    covers (at most ``weeks``); 0 rows when it covers fewer than :data:`MIN_WEEKS`."""
    stays = spells.table
    end = spells.cutoff
    first = stays.group_by("deal_id").aggregate(
        entered=stays.entered.min(), stage=stays.stage.argmin(stays.entered),
        stage_index=stays.stage_index.argmin(stays.entered), segment=stays.segment.argmin(stays.entered))
    age_days = (ibis.timestamp(end).epoch_seconds() - first.entered.epoch_seconds()) / 86400.0
    recent = first.mutate(week=(age_days / 7.0).floor().cast("int64")).filter(lambda t: t.week < weeks)
    counted = recent.group_by(["segment", "stage", "stage_index", "week"]).aggregate(deals=lambda t: t.count())
    frame = counted.to_pandas()
    earliest = first.entered.min().to_pandas() if len(frame) else None
    covered = int(min(weeks, (end - pd.Timestamp(earliest)).days // 7)) if earliest is not None else 0
    columns = ["segment", "stage", "stage_index", "week", "deals"]
    if covered < MIN_WEEKS:
        empty = pd.DataFrame(columns=columns)
        empty.attrs.update(weeks=covered, as_of=str(spells.as_of.date()))
        return empty
    stages = spells.funnel.stages
    segments = sorted(spells.table.select("segment").distinct().to_pandas()["segment"].astype(str))
    grid = pd.MultiIndex.from_product([segments, range(len(stages)), range(covered)],
                                      names=["segment", "stage_index", "week"]).to_frame(index=False)
    frame = frame[frame["week"] < covered]
    frame["segment"] = frame["segment"].astype(str)
    merged = grid.merge(frame[["segment", "stage_index", "week", "deals"]], how="left",
                        on=["segment", "stage_index", "week"])
    merged["deals"] = merged["deals"].fillna(0).astype("int64")
    merged["stage"] = [stages[i] for i in merged["stage_index"]]
    merged = merged[columns]
    merged.attrs.update(weeks=covered, as_of=str(spells.as_of.date()))
    return merged


def new_deal_draws(stats: pd.DataFrame, segments, n_stages: int, horizon_days: int, draws: int,
                   seed: int = 0, discount: float | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """Per draw, new deals per (segment, horizon week, entry stage) cell (see module doc).

    Returns ``counts`` (draws, C) int and ``cells`` (C rows: ``segment_index``,
    ``stage_index``, ``week``, ``start_low`` and ``start_width`` in days after as-of;
    ``cells.attrs["discounts"]`` the level's discounts ω with their weights). ``discount``: ω
    for every draw, or None to weigh the discounts by the history (see module doc). Segments of the model that the inflow history does
    not have create no deals."""
    rng = random_stream(seed, "new_deal_counts")
    width = _horizon_weeks(horizon_days)
    n_weeks = width.size
    by_segment = {str(g): stats[stats["segment"].astype(str) == str(g)] for g in segments}
    series = {g: _chronological(mine) for g, mine in by_segment.items()}
    if discount is None:
        weights = discount_weights([w for w in series.values() if w.size])
        omega = np.asarray(DISCOUNTS)[rng.choice(len(DISCOUNTS), size=draws, p=weights)]     # ω of each draw
    else:
        weights, omega = np.asarray(DISCOUNTS) == float(discount), float(discount)
    rows, columns = [], []
    for g, segment in enumerate(segments):
        mine = by_segment[str(segment)]
        if mine.empty:
            continue
        weekly = series[str(segment)]
        by_stage = mine.groupby("stage_index")["deals"].sum().reindex(range(n_stages), fill_value=0).to_numpy(float)
        totals = _weekly_totals(weekly, width, draws, rng, omega)                         # (D, W)
        entry = np.flatnonzero(by_stage > 0)                     # stages deals were ever created in
        if entry.size == 0:
            continue
        shares = rng.dirichlet(0.5 + by_stage[entry], size=draws)                         # (D, E')
        for w in range(n_weeks):
            split = rng.multinomial(totals[:, w], shares)                                 # (D, E')
            for x, e in enumerate(entry):
                columns.append(split[:, x])
                rows.append({"segment_index": g, "stage_index": e, "week": w,
                             "start_low": 7.0 * w, "start_width": float(width[w])})
    counts = np.stack(columns, axis=1).astype(np.int64) if columns else np.zeros((draws, 0), np.int64)
    cells = pd.DataFrame(rows, columns=["segment_index", "stage_index", "week", "start_low", "start_width"])
    cells.attrs["discounts"] = {float(d): float(w) for d, w in zip(DISCOUNTS, weights, strict=True) if w > 0}
    return counts, cells


def _chronological(stats: pd.DataFrame) -> np.ndarray:
    """A segment's new deals per week, oldest week first (the statistics count week 0 as the
    last 7 days)."""
    if stats.empty:
        return np.zeros(0)
    return stats.groupby("week")["deals"].sum().sort_index(ascending=False).to_numpy(float)


def _dispersion(weekly: np.ndarray) -> float:
    """r of the week factor Gamma(r, 1/r): mean² / (variance - mean) of the weekly counts,
    infinite (no factor) with under 3 weeks or when they are not over-dispersed."""
    mean, var = weekly.mean(), weekly.var(ddof=1) if weekly.size > 1 else 0.0
    return mean**2 / (var - mean) if weekly.size >= 3 and var > mean > 0 else np.inf


def _level(weekly: np.ndarray, omega: float, r: float = np.inf) -> tuple[float, float, float]:
    """(a, b, log-likelihood) of the Poisson-Gamma local level after the weekly counts
    (oldest first) with discount ``omega``: the level is Gamma(a, b) (rate b). The likelihood
    is of the one-step-ahead predictions from the third week on, each the Negative Binomial
    with the mean and variance of a Poisson count of that level times the week factor of
    dispersion ``r``, so that over-dispersion is not taken for a moving level."""
    from scipy import stats

    a, b, loglik = 0.5, 0.0, 0.0
    for t, y in enumerate(weekly):
        a, b = omega * a, omega * b
        if t >= 2 and b > 0:
            mean, spread = a / b, a / b**2
            var = mean + spread + ((mean**2 + spread) / r if np.isfinite(r) else 0.0)
            loglik += stats.nbinom.logpmf(y, mean**2 / (var - mean), mean / var)
        a, b = a + y, b + 1.0
    return a, b, loglik


def discount_weights(series: list[np.ndarray]) -> np.ndarray:
    """Posterior weights of the discounts of :data:`DISCOUNTS` (a uniform prior over them)
    from how well each one's local level predicts the weekly ``series`` (one per segment,
    oldest week first); all on 1 (a flat rate) with under 8 weeks."""
    series = [w for w in series if w.sum() > 0]
    if not series or max(w.size for w in series) < 8:
        return (np.asarray(DISCOUNTS) == 1.0).astype(float)
    loglik = np.array([sum(_level(w, omega, _dispersion(w))[2] for w in series) for omega in DISCOUNTS])
    weights = np.exp(loglik - loglik.max())
    return weights / weights.sum()


def level_discount(series: list[np.ndarray]) -> float:
    """The discount of :data:`DISCOUNTS` with the largest weight (:func:`discount_weights`)."""
    return float(DISCOUNTS[int(np.argmax(discount_weights(series)))])


def _horizon_weeks(horizon_days: int) -> np.ndarray:
    """Days of each horizon week (7, the last one possibly fewer)."""
    n_weeks = -(-int(horizon_days) // 7)
    return np.minimum(7.0, int(horizon_days) - 7.0 * np.arange(n_weeks))


def _weekly_totals(weekly: np.ndarray, width: np.ndarray, draws: int, rng, omega: float = 1.0) -> np.ndarray:
    """(draws, W) deals per horizon week from the history's weekly counts (oldest first): the
    local level's rate (Gamma(1/2 + total, weeks) when ``omega`` is 1), walking on over the
    horizon when ``omega`` < 1, times a Gamma(r, 1/r) week factor when the history is
    over-dispersed (see module doc); a week of ``width`` days gets width/7 of the rate."""
    rates = np.empty((draws, width.size))
    each = np.broadcast_to(np.asarray(omega, float), (draws,))
    for value in np.unique(each):               # the draws of each discount (one group for a scalar ω)
        mine = each == value
        a, b, _ = _level(weekly, float(value))
        level = rng.gamma(a, 1.0 / b, size=int(mine.sum()))                        # deals per week, now
        rates[mine] = level[:, None]
        if value < 1.0:                          # the level walks on: λ' = λ η / ω, η ~ Beta(ωa, (1 - ω)a)
            for w in range(width.size):
                level = level * rng.beta(value * a, (1.0 - value) * a, size=level.size) / value
                a *= value
                rates[mine, w] = level
    r = _dispersion(weekly)
    factor = np.ones((draws, width.size))
    if np.isfinite(r):
        factor = rng.gamma(r, 1.0 / r, size=(draws, width.size))
    return rng.poisson(rates * factor * width[None, :] / 7.0)


def created_won_stats(log, spells: Spells, weeks: int) -> pd.DataFrame:
    """Deals created straight into won (their first visible event is a won row) in the
    ``weeks`` full weeks ending at the end of as-of, one row each: ``segment``, ``week`` (0 =
    the last 7 days), ``amount`` (the won row's, currency; NaN if none). An Ibis query; only
    these deals come back. ``attrs["weeks"]`` is ``weeks``."""
    table = log.table
    end = spells.cutoff
    visible = table.filter(table.timestamp < ibis.timestamp(end))
    by_deal = ibis.window(group_by="deal_id", order_by=event_order())
    events = visible.mutate(segment=deal_segment(visible, spells.segment_by, spells.segment_from),
                            _first=visible.stage.first().over(by_deal))
    deals = events.group_by("deal_id").aggregate(
        segment=events.segment.min(), first=events._first.min(),  # one value per deal (min: any database)
        created=events.timestamp.min(), amount=events.amount.max(where=events.stage.isin(list(log.funnel.won))))
    age_days = (ibis.timestamp(end).epoch_seconds() - deals.created.epoch_seconds()) / 86400.0
    recent = deals.filter(deals.first.isin(list(log.funnel.won))).mutate(
        week=(age_days / 7.0).floor().cast("int64")).filter(lambda t: t.week < weeks)
    frame = recent.select("segment", "week", "amount").order_by(["segment", "week", "amount"]).to_pandas()
    frame["segment"] = frame["segment"].astype(str)
    frame["amount"] = frame["amount"].astype(float)
    frame.attrs["weeks"] = int(weeks)
    return frame


def created_won_draws(created: pd.DataFrame, segments, horizon_days: int, draws: int, period_of_day,
                      fallback_amounts: np.ndarray | None = None, deal_value: float | None = None,
                      seed: int = 0) -> np.ndarray:
    """Per segment, draw and period, the revenue (currency) and count of deals created already
    won during the horizon: (2, G, draws, periods), revenue first (see module doc).

    A deal's amount is drawn from its segment's created-won amounts; deals without one take
    ``deal_value``, else the segment's ``fallback_amounts`` row (quantiles, e.g. of all won
    amounts), else 0."""
    rng = random_stream(seed, "created_won")
    period_of_day = np.asarray(period_of_day)
    width = _horizon_weeks(horizon_days)
    weeks = int(created.attrs.get("weeks", 0))
    out = np.zeros((2, len(segments), draws, int(period_of_day.max()) + 1))
    for g, segment in enumerate(segments):
        mine = created[created["segment"] == str(segment)]
        if mine.empty or weeks < 1:
            continue
        weekly = np.bincount(mine["week"].to_numpy(int), minlength=weeks).astype(float)[::-1]   # oldest first
        totals = _weekly_totals(weekly, width, draws, rng)                            # (D, W)
        amounts = mine["amount"].to_numpy(float)
        for w in np.flatnonzero(totals.max(axis=0)):
            size = int(totals[:, w].max())
            exists = np.arange(size)[None, :] < totals[:, w][:, None]                # (D, size)
            day = np.minimum((7 * w + rng.random((draws, size)) * width[w]).astype(int), len(period_of_day) - 1)
            value = amounts[rng.integers(0, amounts.size, (draws, size))]
            value = _fill_amounts(value, rng.random((draws, size)), deal_value,
                                  None if fallback_amounts is None else fallback_amounts[g])
            where = (np.broadcast_to(np.arange(draws)[:, None], exists.shape)[exists], period_of_day[day[exists]])
            np.add.at(out[0, g], where, value[exists])
            np.add.at(out[1, g], where, 1.0)
    return out


def _fill_amounts(value: np.ndarray, u: np.ndarray, deal_value: float | None, quantiles) -> np.ndarray:
    """Amounts with NaN replaced by ``deal_value``, else a draw from ``quantiles`` (interpolated
    at ``u``), else 0."""
    missing = np.isnan(value)
    if not missing.any():
        return value
    if deal_value is not None:
        fill = np.full(value.shape, float(deal_value))
    elif quantiles is not None and np.isfinite(quantiles).all():
        fill = np.interp(u * (len(quantiles) - 1), np.arange(len(quantiles)), quantiles)
    else:
        fill = np.zeros(value.shape)
    return np.where(missing, fill, value)


def new_deal_pipeline(counts: np.ndarray, cells: pd.DataFrame, deal_value: float | None = None) -> Pipeline:
    """The slots of :func:`new_deal_draws` as a :class:`funnelsim.sim.kernel.Pipeline`: per cell,
    as many deals as its largest count, age 0, amount ``deal_value`` (NaN: valued from the
    segment's won amounts), each with a random stream of its own."""
    size = counts.max(axis=0) if counts.size else np.zeros(0, np.int64)
    cell = np.repeat(np.arange(len(cells)), size)
    slot = np.concatenate([np.arange(m) for m in size]) if len(size) else np.zeros(0, np.int64)
    take = cells.iloc[cell]
    keys = (NEW_DEAL_KEYS + (cell.astype(np.uint64) << np.uint64(24)) + slot.astype(np.uint64))
    return Pipeline(stage=take["stage_index"].to_numpy(), segment=take["segment_index"].to_numpy(),
                    age_days=np.zeros(cell.size), amount=np.full(cell.size, np.nan if deal_value is None else deal_value),
                    key=keys, start_low=take["start_low"].to_numpy(), start_width=take["start_width"].to_numpy(),
                    slot=slot, cell=cell)


class NewDeals:
    """Inflow for a forecast: the statistics of :func:`new_deal_stats` (deals entering open
    stages) and, optionally, of :func:`created_won_stats` (deals created already won), plus how
    to turn them into slots and revenue. ``funnelsim.sim.forecast.forecast(..., new_deals=NewDeals(stats))``."""

    def __init__(self, stats: pd.DataFrame, created_won: pd.DataFrame | None = None):
        self.stats = stats
        self.created_won = created_won

    @classmethod
    def from_log(cls, log, spells: Spells, weeks: int = WEEKS) -> NewDeals:
        """Both kinds of inflow as of the spells' date (empty when the log covers under
        :data:`MIN_WEEKS` full weeks)."""
        stats = new_deal_stats(spells, weeks)
        covered = int(stats.attrs.get("weeks", 0))
        return cls(stats, created_won_stats(log, spells, covered) if covered >= MIN_WEEKS else None)

    @property
    def empty(self) -> bool:
        return self.stats.empty and not self.has_created_won

    @property
    def has_created_won(self) -> bool:
        return self.created_won is not None and not self.created_won.empty

    @property
    def weeks(self) -> int:
        return int(self.stats.attrs.get("weeks", 0))

    @property
    def per_week(self) -> pd.Series:
        """Average new deals per week by segment over the history used (entering open stages)."""
        if self.stats.empty:
            return pd.Series(dtype=float)
        return self.stats.groupby("segment")["deals"].sum() / self.weeks

    @property
    def created_won_per_week(self) -> float:
        """Average deals created already won per week, all segments."""
        if not self.has_created_won:
            return 0.0
        return len(self.created_won) / int(self.created_won.attrs["weeks"])

    def slots(self, segments, n_stages: int, horizon_days: int, draws: int, seed: int = 0,
              deal_value: float | None = None) -> tuple[Pipeline, np.ndarray]:
        counts, cells = new_deal_draws(self.stats, segments, n_stages, horizon_days, draws, seed)
        return new_deal_pipeline(counts, cells, deal_value), counts

    def created_won_segments(self, segments) -> list[str]:
        """``segments`` (the model's) followed by any segment that only has deals created
        already won: such a segment has no stay to fit, but its revenue still counts."""
        names = [str(g) for g in segments]
        extra = sorted(set(self.created_won["segment"]) - set(names)) if self.has_created_won else []
        return names + extra

    def created_won_revenue(self, segments, horizon_days: int, draws: int, period_of_day,
                            fallback_amounts=None, deal_value: float | None = None, seed: int = 0) -> np.ndarray:
        """(2, G', draws, periods): revenue and count of deals created already won in the
        horizon, per segment of :meth:`created_won_segments` (zeros without any in the
        history); see :func:`created_won_draws`. ``fallback_amounts`` has a row per model
        segment; segments beyond them have none."""
        names = self.created_won_segments(segments)
        if not self.has_created_won:
            return np.zeros((2, len(names), draws, int(np.max(period_of_day)) + 1))
        if fallback_amounts is not None and len(names) > len(fallback_amounts):
            pad = np.full((len(names) - len(fallback_amounts), np.shape(fallback_amounts)[1]), np.nan)
            fallback_amounts = np.vstack([fallback_amounts, pad])
        return created_won_draws(self.created_won, names, horizon_days, draws, period_of_day,
                                 fallback_amounts, deal_value, seed)
