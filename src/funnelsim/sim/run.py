"""One simulation run: the open deals, the deals created during the horizon and the deals
created already won, pushed through one set of posterior draws.

:func:`simulate_run` is what :func:`funnelsim.sim.forecast.forecast`, the what-if comparisons
of :mod:`funnelsim.sim.scenarios` and the backtests all simulate, so a rule about the inputs
(a deal value must be a non-negative number, the horizon at least a day, stage and segment
names must be the model's) holds everywhere at once.

Revenue is in the currency of the event log; ``period_of_day`` maps each day of the horizon
(day 0 = the day after as-of) to its reporting period.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data.events import FunnelDataError
from .kernel import Pipeline, Simulation, simulate

__all__ = ["Run", "NewDealDraws", "simulate_run", "new_deal_draws_for", "check_run_settings", "deal_arrays",
           "deal_keys"]


@dataclass(frozen=True)
class NewDealDraws:
    """The new deals of one run, drawn once so that paired scenarios can share them.

    ``inflow``: (counts per draw and cell, cells) of deals created in an open stage
    (:func:`funnelsim.sim.inflow.new_deal_draws`; None when there are none);
    ``created_won``: (2, segments, draws, periods) revenue and count of deals created already
    won, segments as :meth:`funnelsim.sim.inflow.NewDeals.created_won_segments` lists them.
    """

    inflow: tuple[np.ndarray, pd.DataFrame] | None
    created_won: np.ndarray
    segments: list[str]


@dataclass(frozen=True)
class Run:
    """Revenue and wins of one run, per draw and period (currency; deals).

    ``pipeline``: the simulation of the open deals (per-deal results too); ``new_revenue`` /
    ``new_wins``: the deals created during the horizon, in a stage or already won (None
    without new deals); ``created_won_revenue``: per draw, the created-won part of
    ``new_revenue`` (None when the run was given no created-won draws).
    """

    pipeline: Simulation
    new_revenue: np.ndarray | None = None
    new_wins: np.ndarray | None = None
    created_won_revenue: np.ndarray | None = None

    @property
    def pipeline_revenue(self) -> np.ndarray:
        """(draws,) revenue of the open deals within the horizon."""
        return self.pipeline.revenue.sum(axis=1)

    @property
    def total_revenue(self) -> np.ndarray | None:
        """(draws,) open deals plus new deals (None without new deals)."""
        return None if self.new_revenue is None else self.pipeline_revenue + self.new_revenue.sum(axis=1)


def check_run_settings(horizon_days: int, deal_value: float | None) -> None:
    """The horizon is at least a day; a deal value, when given, a non-negative number."""
    if int(horizon_days) < 1:
        raise FunnelDataError("the horizon must be at least one day", column="horizon", value=str(horizon_days),
                              hint="Pass --horizon DAYS, e.g. 90 for a quarter.")
    if deal_value is not None and (not np.isfinite(deal_value) or deal_value < 0):
        raise FunnelDataError("the deal value must be a non-negative number", column="deal_value",
                              value=str(deal_value), hint="Pass --deal-value AMOUNT, e.g. 1000.")


def new_deal_draws_for(model, new_deals, params, horizon_days: int, period_of_day, seed: int,
                       deal_value: float | None) -> NewDealDraws | None:
    """Draw the new deals of a run (None when ``new_deals`` is None or empty)."""
    from .inflow import new_deal_draws

    if new_deals is None or new_deals.empty:
        return None
    segments = list(model.data.segments)
    inflow = None
    if not new_deals.stats.empty:
        inflow = new_deal_draws(new_deals.stats, segments, len(model.funnel.stages), int(horizon_days),
                                params.draws, seed)
    created = new_deals.created_won_revenue(segments, int(horizon_days), params.draws, period_of_day,
                                            params.won_amounts, deal_value, seed)
    return NewDealDraws(inflow, created, new_deals.created_won_segments(segments))


def simulate_run(model, deals: pd.DataFrame, params, horizon_days: int, *, period_of_day, seed: int,
                 deal_value: float | None = None, inflow=None, created_won: np.ndarray | None = None,
                 chunk_draws: int | None = None) -> Run:
    """Simulate ``deals`` (open at as-of: deal_id, segment, stage, age_days, amount) with the
    posterior draws ``params`` (:class:`funnelsim.sim.kernel.Parameters`), plus, when given,
    the new deals ``inflow`` = (counts, cells) and the created-won draws ``created_won`` (2,
    segments, draws, periods) added to the new deals' revenue and wins. Open deals without an
    amount are worth ``deal_value`` when it is given."""
    from .inflow import new_deal_pipeline

    check_run_settings(horizon_days, deal_value)
    if deal_value is not None:
        deals = deals.assign(amount=deals["amount"].fillna(float(deal_value)))
    sim = simulate(params, deal_arrays(model, deals, params), int(horizon_days), period_of_day=period_of_day, seed=seed,
                   chunk_draws=chunk_draws)
    if inflow is None and created_won is None:
        return Run(sim)
    new_revenue, new_wins = np.zeros_like(sim.revenue), np.zeros_like(sim.wins)
    if inflow is not None:
        counts, cells = inflow
        fresh = simulate(params, new_deal_pipeline(counts, cells, deal_value), int(horizon_days),
                         period_of_day=period_of_day, seed=seed, chunk_draws=chunk_draws, counts=counts)
        new_revenue, new_wins = new_revenue + fresh.revenue, new_wins + fresh.wins
    created = None
    if created_won is not None:
        new_revenue, new_wins = new_revenue + created_won[0].sum(axis=0), new_wins + created_won[1].sum(axis=0)
        created = created_won[0].sum(axis=(0, 2))
    return Run(sim, new_revenue, new_wins, created)


def deal_arrays(model, deals: pd.DataFrame, params=None) -> Pipeline:
    """Stage and segment names of the open deals as the model's indices, with a clear error
    for a name the model does not know. With ``params`` of a drifting model (their
    ``cohort_sets``), each deal's parameter set is its segment's in the cohort its stay began
    in (as-of's end less its age)."""
    missing = [c for c in ("deal_id", "segment", "stage", "age_days", "amount") if c not in deals.columns]
    if missing:
        raise FunnelDataError(f"the open deals lack column(s) {', '.join(missing)}",
                              hint="Take them from Snapshot.open_deals (funnelsim.data.deals.open_deals).")
    stages = {s: i for i, s in enumerate(model.funnel.stages)}
    segments = {g: i for i, g in enumerate(model.data.segments)}
    for column, known in (("stage", stages), ("segment", segments)):
        unknown = sorted(set(deals[column]) - set(known))
        if unknown:
            raise FunnelDataError(f"open deals in {column} {unknown[0]!r}, which the model was not fitted on",
                                  column=column, value=str(unknown[0]),
                                  hint=f"The model knows: {', '.join(known)}. Fit it on this log "
                                       "(same --segment-by).")
    segment = deals["segment"].map(segments).to_numpy()
    if params is not None and params.cohort_sets:
        segment = _cohort_sets(model, deals, segment, params.cohort_sets)
    return Pipeline(stage=deals["stage"].map(stages).to_numpy(), segment=segment,
                    age_days=deals["age_days"].to_numpy(float), amount=deals["amount"].to_numpy(float),
                    key=deal_keys(deals["deal_id"]))


def _cohort_sets(model, deals: pd.DataFrame, segment: np.ndarray, sets: dict) -> np.ndarray:
    """Each open deal's parameter set: its (segment, entry cohort)'s, or its segment's projected
    one when there is none (a stay begun before the history window)."""
    from ..data.spells import end_of_day
    from ..data.stats import cohort_labels

    cohorts = {label: i for i, label in enumerate(model.cohorts.cohorts)}
    entered = end_of_day(model.stats.as_of) - pd.to_timedelta(deals["age_days"].to_numpy(float), unit="D")
    cohort = [cohorts.get(label, -1) for label in cohort_labels(entered, model.cohorts.every)]
    return np.array([sets.get((int(g), c), g) for g, c in zip(segment, cohort, strict=True)], np.int64)


def deal_keys(deal_ids) -> np.ndarray:
    """Each deal's random stream: a fixed hash of its id, so a deal keeps its random numbers
    when others are added or removed (paired scenarios) and whatever its row order."""
    return pd.util.hash_array(np.asarray(deal_ids, dtype=object).astype(str).astype(object))
