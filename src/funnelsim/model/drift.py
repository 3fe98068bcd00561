"""A funnel that drifts: conversion and time in stage that move over entry cohorts.

With statistics split by entry cohort (the calendar period a stay begins in,
:func:`funnelsim.data.stats.to_stage_stats` with ``every``), the model adds to each (stage,
destination) pair a Gaussian random walk over the cohorts, shared by the segments:

- the destination logits (stall's fixed at 0, so a walk of every destination together is
  stall drifting the other way): ``eta[k, g, c] = eta[k, g] + level[k, c]``;
- the time-in-stage location (log days): ``mu[k, g, c] = mu[k, g] + level'[k, c]``;

``level[k, c] - level[k, c-1] ~ Normal(0, step[s])`` with one step size per stage (Half-Normal
prior, ``drift_logit_step`` / ``drift_log_days_step``, per month and scaled by the square root
of the period's length), plus two walks of the whole funnel, shared by the stages: its
conversion (on every forward destination's logit, ``drift_conversion_step``) and its speed (on
every location, ``drift_speed_step``): lead quality, pricing or the market move every stage at
once, and a stage with few stays a month then borrows the drift the others show. Each walk is centred on the cohorts' average, weighted by the stage's
stays in each cohort, so the segment values (``eta``, ``loc``) are the average funnel and the
walk is its cohorts' departure from it. On top of the funnel-wide walks, each cohort has a
conversion shock of its own that is not carried on to the next (``drift_conversion_shock``:
Normal(0, sd), sd estimated; docs/shocks.md): a month's campaign or quarter-end push moves that
month, and a walk fitted without them reads every such month as a lasting step and projects too
wide a future. (A shock on the speed too left its sd and the speed walk's step, both near 0 on
logs whose speed does not move, mixing poorly: R-hat 1.024 on the drifting synthetic log.) The logit steps are sampled in the rotated coordinates
of :func:`funnelsim.model.pooling.logit_rotation` (the walk is isotropic, so this is exact) and
non-centred (cumulative sums of standard normals): recent cohorts, still mostly open, get the
width the walk gives them.

The likelihood is the stationary model's on (segment, cohort) cells: the statistics of cohort
c of segment g are the "segment" g * C + c of a :class:`ModelData` (:func:`cohort_model_data`),
so exits and open stays are still sufficient statistics and the graph is compiled once per
shape (stages, segments, cohorts, destinations seen). A destination absent from a segment
(:attr:`ModelData.absent`) is absent from all its cohorts.

The simulator (:meth:`funnelsim.model.funnel_model.FunnelModel.simulation_parameters`) gives
each open deal's current stay the parameters of its own cohort, and every stay entered during
the horizon (an open deal's later stages, the new deals) those of a cohort projected forward by
the walk: the last cohort's level plus a step of ``step * sqrt(m)``, m the cohorts from the last
one to the horizon's middle plus a third of the horizon (the variance of the walk averaged over
the horizon), drawn once per posterior draw, so the band widens with the horizon.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ..data.events import FunnelDataError
from ..data.stats import StageStats

__all__ = ["CohortData", "cohort_model_data", "walks", "by_cell", "dense_logits", "dense_locations",
           "softmax_with_stall", "PERIOD_DAYS", "MIN_COHORTS"]

PERIOD_DAYS = {"week": 7.0, "month": 365.25 / 12.0, "quarter": 365.25 / 4.0}
MIN_COHORTS = 3          # fewer cohorts than this: nothing to learn a drift from
# the cohorts are padded at the start, with periods before the first stay, to a multiple of
# this: the compiled graph's shape depends on their number, and a backtest's origins, a month
# apart, then share one compiled model instead of compiling one each (80 s apiece measured on a
# 4-stage funnel); an empty cohort is a step of the walk with no data (its prior only)
COHORT_BLOCK = {"week": 13, "month": 12, "quarter": 4}


@dataclass
class CohortData:
    """The statistics over (segment, cohort) cells, what the drift model's likelihood reads.

    ``cells``: a :class:`ModelData` whose segment axis is g * C + c (segment g, cohort c);
    ``cohorts``: their labels, oldest first; ``weights`` (S, C): each stage's share of stays in
    each cohort (what the walks are centred by); ``every``: the cohort period.
    """

    cells: object
    cohorts: tuple[str, ...]
    weights: np.ndarray
    every: str

    @property
    def size(self) -> int:
        return len(self.cohorts)

    @property
    def step_scale(self) -> float:
        """The walks' step priors are per month: sqrt(period / month)."""
        return float(np.sqrt(PERIOD_DAYS[self.every] / PERIOD_DAYS["month"]))

    def entries(self) -> np.ndarray:
        """(S, G, C) stays begun per stage, segment and cohort."""
        S, X = self.cells.entries.shape
        return self.cells.entries.reshape(S, X // self.size, self.size)


def cohort_model_data(stats: StageStats, collapsed, instant_stays: bool, absent_expected: float) -> CohortData:
    """The (segment, cohort) cells of ``stats`` (split by cohort) as a :class:`CohortData`;
    ``collapsed`` is the :class:`ModelData` of the same statistics summed over cohorts."""
    from .likelihood import model_data

    cohorts = padded(stats.cohorts, stats.every)
    if len(stats.cohorts) < MIN_COHORTS:
        raise FunnelDataError(f"the history holds {len(cohorts)} {stats.every}(s) of entries; a drifting funnel needs "
                              f"at least {MIN_COHORTS}", column="every", value=str(stats.every),
                              hint="Use a shorter --every period, or --drift none for a funnel that stays as it is.")
    segments = collapsed.segments
    G, C = len(segments), len(cohorts)
    g = stats.table["segment"].astype(str).map({x: i for i, x in enumerate(segments)}).to_numpy(int)
    c = stats.table["cohort"].map({x: i for i, x in enumerate(cohorts)})
    if c.isna().any():       # a stay before the first cohort cannot be: cohorts start at the first
        raise ValueError("statistics hold a cohort outside their own range")
    labels = [f"{i:05d}|{k:05d}" for i in range(G) for k in range(C)]
    table = stats.table.assign(segment=[labels[i * C + k] for i, k in zip(g, c.to_numpy(int), strict=True)])
    cells = model_data(replace(stats, table=table, segments=tuple(labels)), stats.funnel, instant_stays, absent_expected)
    if not np.array_equal(cells.pairs, collapsed.pairs):
        raise ValueError("the cohort cells see other destinations than their sum")
    cells.absent_given = np.repeat(collapsed.absent, C, axis=1)
    entries = cells.entries.reshape(len(collapsed.stages), G, C).sum(axis=1)          # (S, C)
    with np.errstate(invalid="ignore", divide="ignore"):
        weights = np.nan_to_num(entries / entries.sum(axis=1, keepdims=True), nan=1.0 / C)
    return CohortData(cells, tuple(cohorts), weights, str(stats.every))


def padded(cohorts: tuple[str, ...], every: str) -> tuple[str, ...]:
    """``cohorts`` with the periods before the first added, to a multiple of :data:`COHORT_BLOCK`."""
    import pandas as pd

    from ..data.stats import COHORT_PERIODS, cohort_labels

    missing = -len(cohorts) % COHORT_BLOCK[every]
    if not missing:
        return tuple(cohorts)
    first = pd.Period(pd.Timestamp(cohorts[0]) if every == "week" else cohorts[0], COHORT_PERIODS[every])
    before = [(first - k).start_time for k in range(missing, 0, -1)]
    return (*cohort_labels(before, every), *cohorts)


# --------------------------------------------------------------------------- the PyMC graph

def walks(config: dict, cohorts: CohortData, weights, pairs: np.ndarray, S: int, rotation):
    """The cohort levels (pair, cohort) of the logits and of the log time in stage, recorded as
    ``drift_logit`` and ``drift_log_days``: each pair's own walk plus, for the logits of the
    forward destinations (a later stage, won), the walk of the whole funnel's conversion, and
    for every location the walk of the whole funnel's speed. Each is centred on the cohorts'
    average, weighted by ``weights`` (S, C) (the funnel-wide walks by their mean over stages)."""
    import pymc as pm

    forward = ((pairs[:, 0] < pairs[:, 1]) & (pairs[:, 1] <= S)).astype(float)
    stage = pairs[:, 0]
    overall = weights.mean(axis=0)[None, :]
    scale = cohorts.step_scale

    def sigma(key):
        return float(config[key]["sigma"]) * scale

    own = _walk("drift_logit", sigma("drift_logit_step"), weights[stage], stage, rotation)
    conversion = _walk("drift_conversion", sigma("drift_conversion_step"), overall)
    conversion = conversion + _shock("drift_conversion_shock", float(config["drift_conversion_shock"]["sigma"]), overall)
    logits = pm.Deterministic("drift_logit", own + forward[:, None] * conversion, dims=("pair", "cohort"))
    own = _walk("drift_log_days", sigma("drift_log_days_step"), weights[stage], stage)
    speed = _walk("drift_speed", sigma("drift_speed_step"), overall)
    return logits, pm.Deterministic("drift_log_days", own + speed, dims=("pair", "cohort"))


def _shock(name: str, sigma: float, weights):
    """Shocks of the whole funnel, one per cohort and not carried on (docs/shocks.md): Normal(0,
    sd) with sd ~ Half-Normal(``sigma``), non-centred, centred on their ``weights`` (1, C)
    average like the walks; recorded as ``name`` (cohort,), the sd as ``name_sd``. (1, C)."""
    import pymc as pm

    sd = pm.HalfNormal(f"{name}_sd", sigma=sigma)
    value = sd * pm.Normal(f"{name}_raw", 0.0, 1.0, dims="cohort")[None, :]
    value = value - (value * weights).sum(axis=1, keepdims=True)
    pm.Deterministic(name, value[0], dims="cohort")
    return value


def _walk(name: str, sigma: float, weights, stage: np.ndarray | None = None, rotation=None):
    """Random walks over the cohorts, non-centred, centred on their ``weights``-average: one per
    pair with a step per stage (``stage``: each pair's), in ``rotation``'s coordinates when given,
    or (``stage`` None) a single one with a single step. (rows, C)."""
    import pymc as pm
    import pytensor.tensor as pt

    if stage is None:
        step = pm.HalfNormal(f"{name}_step", sigma=sigma)
        increments = step * pm.Normal(f"{name}_raw", 0.0, 1.0, dims="cohort_step")[None, :]
    else:
        step = pm.HalfNormal(f"{name}_step", sigma=sigma, dims="stage")
        increments = step[stage][:, None] * pm.Normal(f"{name}_raw", 0.0, 1.0, dims=("pair", "cohort_step"))
    if rotation is not None:
        increments = pt.dot(rotation.T, increments)
    rows = 1 if stage is None else len(stage)
    level = pt.concatenate([pt.zeros((rows, 1)), pt.cumsum(increments, axis=1)], axis=1)
    return level - (level * weights).sum(axis=1, keepdims=True)


def by_cell(values, level):
    """(K, G) segment values plus (K, C) cohort levels: (K, G * C), cell g * C + c."""
    K = values.shape[0]
    return (values[:, :, None] + level[:, None, :]).reshape((K, -1))


# --------------------------------------------------------------------------- numpy, for the simulator and tables

def dense_logits(eta: np.ndarray, pairs: np.ndarray, S: int, E: int, absent: np.ndarray) -> np.ndarray:
    """(D, S, X, E) destination logits from pair values ``eta`` (D, K, X): unseen destinations
    and those ``absent`` (S, X, E) get the graph's IMPOSSIBLE offset."""
    from .likelihood import IMPOSSIBLE

    D, _, X = eta.shape
    logits = np.full((D, S, X, E), IMPOSSIBLE)
    logits[:, pairs[:, 0], :, pairs[:, 1]] = eta.transpose(1, 0, 2)
    return logits + np.where(absent, IMPOSSIBLE, 0.0)[None]


def dense_locations(loc: np.ndarray, pairs: np.ndarray, S: int, E: int) -> np.ndarray:
    """(D, S, X, E) time-in-stage locations from pair values (D, K, X), 0 where unseen (as the graph)."""
    D, _, X = loc.shape
    out = np.zeros((D, S, X, E))
    out[:, pairs[:, 0], :, pairs[:, 1]] = loc.transpose(1, 0, 2)
    return out


def _draws(post, name: str, pick: np.ndarray) -> np.ndarray:
    """The posterior draws ``pick`` of variable ``name``, chains stacked into one axis."""
    values = post[name].values
    return values.reshape(-1, *values.shape[2:])[pick]


def softmax_with_stall(logits: np.ndarray) -> np.ndarray:
    """(..., E + 1) destination probabilities, stall last, from (..., E) logits against stall's 0."""
    top = np.maximum(logits.max(axis=-1, keepdims=True), 0.0)
    odds = np.exp(logits - top)
    stall = np.exp(-top)
    total = odds.sum(axis=-1, keepdims=True) + stall
    return np.concatenate([odds / total, stall / total], axis=-1)


def projected_steps(cohorts: CohortData, as_of, horizon_days: float | None) -> float:
    """Cohort steps (fractional) from the last cohort to the stays entered during the horizon,
    as the variance of the walk sees them: from the last cohort's middle to the end of as-of,
    plus a third of the horizon (the variance of a random walk averaged over the horizon)."""
    import pandas as pd

    from ..data.stats import COHORT_PERIODS

    period = pd.Period(cohorts.cohorts[-1] if cohorts.every != "week" else pd.Timestamp(cohorts.cohorts[-1]),
                       COHORT_PERIODS[cohorts.every])
    middle = period.start_time + (period.end_time - period.start_time) / 2
    elapsed = max((pd.Timestamp(as_of) + pd.Timedelta(days=1) - middle).total_seconds() / 86_400.0, 0.0)
    return (elapsed + float(horizon_days or 0.0) / 3.0) / PERIOD_DAYS[cohorts.every]


def parameter_sets(model, pick: np.ndarray, horizon_days: float | None, seed: int) -> dict:
    """The simulator's parameter sets of a drifting model (see the module doc), for the
    posterior draws ``pick``: first one per segment, the cohort projected over the horizon;
    then one per (segment, cohort) holding open stays. Returns ``pi`` (D, S, X, S+3),
    ``loc`` (D, S, X, S+2) in the model's parametrisation, ``segment_of``, ``later`` and
    ``cohort_sets`` as :class:`funnelsim.sim.kernel.Parameters` takes them."""
    cohorts, data = model.cohorts, model.data
    post = model.idata.posterior

    S, G, C = len(data.stages), len(data.segments), cohorts.size
    E = len(data.destinations) - 1
    stage_of_pair = data.pairs[:, 0]
    rng = np.random.default_rng([int(seed), 20])
    m = projected_steps(cohorts, model.stats.as_of, horizon_days)
    open_cells = np.flatnonzero(cohorts.cells.open_total.sum(axis=0) > 0)           # cells g * C + c
    set_segment, set_cohort = open_cells // C, open_cells % C
    out = {}
    forward = (data.pairs[:, 0] < data.pairs[:, 1]) & (data.pairs[:, 1] <= S)
    # the horizon's stays begin over this many future cohorts: their shocks average out that much
    spanned = max(1.0, float(horizon_days or 0.0) / PERIOD_DAYS[cohorts.every])
    for name, level_name, overall, rows in (("eta", "drift_logit", "drift_conversion", forward),
                                            ("loc", "drift_log_days", "drift_speed", np.ones_like(forward))):
        values, level = _draws(post, name, pick), _draws(post, level_name, pick)     # (D, K, G), (D, K, C)
        step = _draws(post, f"{level_name}_step", pick)[:, stage_of_pair]         # (D, K)
        # (D, K): the funnel-wide walk's step
        shared = _draws(post, f"{overall}_step", pick)[:, None] * rows[None, :]
        last_shock = shock_sd = 0.0
        if name == "eta":                       # conversion: the last cohort's own shock, and the horizon's
            last_shock = _draws(post, f"{overall}_shock", pick)[:, -1:] * rows[None, :]
            shock_sd = _draws(post, f"{overall}_shock_sd", pick)[:, None] * rows[None, :] / np.sqrt(spanned)
        z = rng.standard_normal((3, *step.shape))
        future = (level[:, :, -1] - last_shock + np.sqrt(m) * (step * z[0] + shared * z[1][:, :1])
                  + shock_sd * z[2][:, :1])
        sets = np.concatenate([values + future[:, :, None],
                               values[:, :, set_segment] + level[:, :, set_cohort]], axis=2)   # (D, K, X)
        out[name] = sets
    segment_of = np.concatenate([np.arange(G), set_segment])
    absent = data.absent[:, segment_of]                                             # (S, X, E)
    pi = softmax_with_stall(dense_logits(out["eta"], data.pairs, S, E, absent))
    loc = dense_locations(out["loc"], data.pairs, S, E)
    return {"pi": pi, "loc": loc, "segment_of": segment_of, "later": segment_of.copy(),
            "cohort_sets": {(int(g), int(c)): G + i for i, (g, c) in enumerate(zip(set_segment, set_cohort, strict=True))},
            "projected_steps": m}


COHORT_QUANTITIES = ("p_advance", "p_win_from_entry", "median_days")


def cohort_table(model, prob: float = 0.9, draws: int = 500) -> pd.DataFrame:
    """Per entry cohort, stage and segment (None: the whole funnel, segments weighted by that
    cohort's stays), the stays that ``entered`` and the posterior mean and equal-tailed ``prob``
    interval (``_low``, ``_high``) of P(advance), P(win from entry) and the median days in
    stage of the deals that leave it, under that cohort's parameters; from ``draws`` evenly
    spaced posterior draws. Cohorts from the first stay's to as-of's (the padding left out)."""
    from . import derived
    from .funnel_model import interval_rows

    if model.cohorts is None:
        raise FunnelDataError("the model does not drift: it was fitted on statistics not split by cohort",
                              hint="Fit it with --drift month (or week, quarter): Snapshot(..., every='month').")
    cohorts, data = model.cohorts, model.data
    post = model._require_fit().posterior
    total = post.sizes["chain"] * post.sizes["draw"]
    pick = np.unique(np.linspace(0, total - 1, min(draws, total)).round().astype(int))

    S, E = len(data.stages), len(data.destinations) - 1
    eta, loc, logit_level, loc_level = (_draws(post, n, pick) for n in ("eta", "loc", "drift_logit", "drift_log_days"))
    arrays = model.posterior_arrays()
    shape = arrays[model.sojourn_family.params[1]][pick]
    instant = arrays["instant"][pick] if "instant" in arrays else None
    revival = arrays["revival_rate"][pick] if "revival_rate" in arrays else None   # counted where revivals end
    entries = cohorts.entries()                                                      # (S, G, C)
    segments = model._segments()
    rows = []
    first = cohorts.cohorts.index(model.stats.cohorts[0])
    for c in range(first, cohorts.size):
        pi = softmax_with_stall(dense_logits(eta + logit_level[:, :, c:c + 1], data.pairs, S, E, data.absent))
        location = dense_locations(loc + loc_level[:, :, c:c + 1], data.pairs, S, E)
        sojourn = derived.Sojourn(model.sojourn, *model.sojourn_family.natural(location, shape), instant,
                                  float(np.exp(data.short_log_t)))
        weights = np.where(entries[:, :, c].sum(axis=1, keepdims=True) > 0, entries[:, :, c], data.entries)
        found = model.quantity_draws(pi, sojourn, weights, revival)
        rows += interval_rows(found, data.stages, segments, entries[:, :, c], COHORT_QUANTITIES, prob, "entered",
                              cohort=cohorts.cohorts[c])
    return pd.DataFrame(rows)
