"""What the simulator (:mod:`funnelsim.sim.kernel`) takes and returns: the open deals
(:class:`Pipeline`), the posterior draws (:class:`Parameters`), the result
(:class:`Simulation`), and the five groups of arrays its numba kernel takes (:class:`Run`,
:class:`Deals`, :class:`Draws`, :class:`Amounts`, :class:`Totals`; numba passes named tuples
as they are). Import them from :mod:`funnelsim.sim.kernel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..model.sojourn import family as sojourn_family

__all__ = ["Pipeline", "Parameters", "Simulation", "Run", "Deals", "Draws", "Amounts", "Totals", "check_inputs",
           "instant_arrays"]


@dataclass(frozen=True)
class Pipeline:
    """Open deals as arrays: ``stage`` and ``segment`` indices, ``age_days`` in the current
    stage, ``amount`` (currency; NaN when unknown), and ``key``: the deal's random stream
    (default: its position). Give each deal a key of its own (e.g. a hash of its id) so that
    adding or removing deals leaves every other deal's random numbers unchanged.

    New deals (created during the horizon, see :mod:`funnelsim.sim.inflow`) are *slots*: a deal
    whose path starts at a uniform time in [``start_low``, ``start_low + start_width``) days
    after as-of, and which exists in draw d only if its ``slot`` number is below
    ``counts[d, cell]`` (the ``counts`` argument of :func:`funnelsim.sim.kernel.simulate`). Open deals have slot -1.
    """

    stage: np.ndarray
    segment: np.ndarray
    age_days: np.ndarray
    amount: np.ndarray
    key: np.ndarray | None = None
    start_low: np.ndarray | None = None
    start_width: np.ndarray | None = None
    slot: np.ndarray | None = None
    cell: np.ndarray | None = None

    def __post_init__(self):
        n = np.size(self.stage)
        key = np.arange(n) if self.key is None else self.key
        arrays = {"stage": np.asarray(self.stage, np.int64), "segment": np.asarray(self.segment, np.int64),
                  "age_days": np.asarray(self.age_days, np.float64), "amount": np.asarray(self.amount, np.float64),
                  "key": np.asarray(key).astype(np.uint64),
                  "start_low": np.zeros(n) if self.start_low is None else np.asarray(self.start_low, np.float64),
                  "start_width": np.zeros(n) if self.start_width is None else np.asarray(self.start_width, np.float64),
                  "slot": np.full(n, -1) if self.slot is None else np.asarray(self.slot, np.int64),
                  "cell": np.zeros(n, np.int64) if self.cell is None else np.asarray(self.cell, np.int64)}
        sizes = {a.shape for a in arrays.values()}
        if len(sizes) != 1 or len(next(iter(sizes))) != 1:
            raise ValueError(f"Pipeline arrays must be 1-d and of one length; got shapes {sizes}")
        if (arrays["age_days"] < 0).any() or np.isnan(arrays["age_days"]).any():
            raise ValueError("Pipeline ages must be >= 0 days")
        for name, value in arrays.items():
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return self.stage.size


@dataclass(frozen=True)
class Parameters:
    """Posterior draws as arrays (D draws, S open stages, G segments).

    ``pi`` (D, S, G, S+3): destinations (stages, won, lost, stall).
    ``family``: a sojourn family's name (:mod:`funnelsim.model.sojourn`), its natural
    parameters: "lognormal" (``loc`` = mu, ``shape`` = sigma) or "weibull" (``loc`` = scale
    lambda in t, ``shape`` = k); ``loc`` (D, S, G, S+2), ``shape`` (D, S, S+2).
    ``ratio_mean``, ``ratio_sd`` (D, G): log(realised / last open amount) of won deals.
    ``won_amounts`` (G, Q): quantiles of won amounts per segment (currency), for deals with
    no amount; a row of NaN values such deals at 0.
    ``time_scale`` (S, G), optional: multiplies the time still to spend in each stage from
    the as-of date on (what-if scenarios; default 1). It leaves the fitted survival, and so
    which old deals look stalled, unchanged.
    ``instant`` (D, S, S+2), optional: the instant share h of each (stage, destination), the
    stays shorter than the log's resolution, t < ``short_t`` (days + OFFSET_DAYS); the rest of a
    stay is the family truncated to t >= ``short_t`` (see :mod:`funnelsim.model.likelihood`).

    A drifting funnel (:mod:`funnelsim.model.drift`) has more parameter sets than segments:
    ``segment_of`` (G,) names the segment (an index of the model's segments) of each set,
    ``later`` (G,) the set that stays entered during the horizon follow (a deal's current stay
    follows its own, its cohort's), and ``cohort_sets`` maps (segment index, cohort index) to
    the set of that cohort's open deals. The first sets are the segments', in order. Without
    them (None) every set is its own segment's.

    ``revival_rate`` (D, S), optional: dormant deals that revive (docs/revival.md); a stalled
    stay still leaves, at this rate per day, within ``revival_days`` of entering its stage, to
    the stage's destinations in their shares pi_j / (1 - pi_stall). None: stalls are final.
    """

    pi: np.ndarray
    family: str
    loc: np.ndarray
    shape: np.ndarray
    ratio_mean: np.ndarray
    ratio_sd: np.ndarray
    won_amounts: np.ndarray
    time_scale: np.ndarray | None = None
    instant: np.ndarray | None = None
    short_t: float = 0.0
    segment_of: np.ndarray | None = None
    later: np.ndarray | None = None
    cohort_sets: dict | None = None
    revival_rate: np.ndarray | None = None
    revival_days: float = 0.0

    @property
    def draws(self) -> int:
        return self.pi.shape[0]

    def p_win_from_entry(self) -> np.ndarray:
        """(D, S, G) P(win | enter stage), revivals within the window counted."""
        from ..model.derived import eventual_pi, p_win_from_entry

        return p_win_from_entry(eventual_pi(self.pi, self.revival_rate, self.revival_days))


@dataclass
class Simulation:
    """What the simulator returns (currency as in the log, days from the end of as-of).

    ``revenue``, ``wins`` (D, P): per draw and period, pipeline deals won in the period.
    ``p_win_horizon``, ``p_win_ever``, ``expected_revenue`` (N,): per deal, averaged over draws.
    ``close_days`` (N, H): per deal, how many draws won it on each day of the horizon.
    ``capped``: paths stopped at the kernel's MAX_STEPS moves (counted as not won).
    """

    revenue: np.ndarray
    wins: np.ndarray
    p_win_horizon: np.ndarray
    p_win_ever: np.ndarray
    expected_revenue: np.ndarray
    close_days: np.ndarray
    capped: int

    def median_close_day(self) -> np.ndarray:
        """Per deal, the median day (0 = the day after as-of) of closing among draws that win
        it within the horizon; NaN for deals never won in the horizon."""
        cumulative = np.cumsum(self.close_days, axis=1)
        total = cumulative[:, -1]
        day = np.argmax(cumulative >= (total[:, None] + 1) // 2, axis=1).astype(float)
        day[total == 0] = np.nan
        return day


# --------------------------------------------------------------------------- the kernel's arguments
# funnelsim.sim.kernel._simulate_chunk takes these five groups of arrays

class Run(NamedTuple):
    """One chunk of draws and the run's settings."""

    d0: int                      # the chunk's first draw
    n: int                       # its number of draws
    horizon: float               # days simulated after the as-of day
    offset: float                # OFFSET_DAYS: t = days + offset
    seed: np.uint64              # the user's seed (all 64 bits)
    period_of_day: np.ndarray    # (H,) int: the period of each day of the horizon
    block_deals: int             # deals per block of parallel work


class Deals(NamedTuple):
    """The deals, one entry each (N,) (see :class:`Pipeline`), and the new-deal slot counts."""

    stage: np.ndarray            # int: current stage
    segment: np.ndarray          # int
    age: np.ndarray              # days in the current stage
    log_age: np.ndarray          # log(age + offset)
    amount: np.ndarray           # last open amount, NaN if unknown
    key: np.ndarray              # uint64: the deal's random stream
    start_low: np.ndarray        # new deals: their creation window, days after as-of
    start_width: np.ndarray      # (0 for open deals)
    slot: np.ndarray             # int: new deals' slot number, -1 for open deals
    cell: np.ndarray             # int: new deals' cell, a column of ``counts``
    counts: np.ndarray           # (D, C) int: slots of each cell present in each draw


class Draws(NamedTuple):
    """The posterior draws the paths follow, draw-last (see :class:`Parameters`)."""

    family: int                  # sojourn family code (funnelsim.model.sojourn)
    possible: np.ndarray         # (S, S+2) bool: destinations some draw takes from each stage
    pi: np.ndarray               # (S, G, S+3, D) destination probabilities
    loc: np.ndarray              # (S, G, S+2, D) sojourn location (natural parameters)
    shape: np.ndarray            # (S, S+2, D) sojourn shape
    first_shape: np.ndarray      # (S, S+2, D) the shape the survival at a deal's age reads
    h_win: np.ndarray            # (S, G, D) P(win | enter stage)
    time_scale: np.ndarray       # (S, G) what-if multiplier of the time still to spend
    any_instant: bool            # some pair has instant stays (else the four below are unused)
    instant_pair: np.ndarray     # (S, S+2) bool: the pairs with instant stays
    instant_h: np.ndarray        # (S, S+2, D) their instant share h
    instant_c: np.ndarray        # (S, G, S+2, D) S(r) / (1 - h): survival levels of the timed part (1 elsewhere)
    later: np.ndarray            # (G,) int: the parameter set of the stays entered during the horizon
    revival: np.ndarray          # (S, D) dormant deals' revival rate per day (0: stalls are final)
    revival_days: float          # revivals happen within this many days of entering the stage


class Amounts(NamedTuple):
    """What a won deal is worth."""

    ratio_mean: np.ndarray       # (D, G) log(realised / last open amount): mean
    ratio_sd: np.ndarray         # (D, G) and standard deviation
    won_amounts: np.ndarray      # (G, Q) quantiles of won amounts, for deals with no amount


class Totals(NamedTuple):
    """What the kernel adds to (outputs)."""

    sums: np.ndarray             # (3, N): won in horizon, revenue, P(win ever), summed over draws
    close_days: np.ndarray       # (N, H) int: draws winning each deal on each day
    block_totals: np.ndarray     # (blocks, 2, draws per chunk, P): each block's revenue and wins


# --------------------------------------------------------------------------- preparing the arguments

def check_inputs(params: Parameters, pipeline: Pipeline, S: int, G: int) -> None:
    """A ValueError naming the array whose shape does not fit (D draws, S stages, G segments)."""
    D = params.pi.shape[0]
    expected = {"pi": (D, S, G, S + 3), "loc": (D, S, G, S + 2), "shape": (D, S, S + 2),
                "ratio_mean": (D, G), "ratio_sd": (D, G)}
    for name, shape in expected.items():
        if getattr(params, name).shape != shape:
            raise ValueError(f"Parameters.{name} needs shape {shape}; got {getattr(params, name).shape}")
    if params.time_scale is not None and np.shape(params.time_scale) != (S, G):
        raise ValueError(f"Parameters.time_scale needs shape ({S}, {G})")
    if params.won_amounts.ndim != 2 or params.won_amounts.shape[0] != G:
        raise ValueError(f"Parameters.won_amounts needs shape ({G}, Q)")
    if params.later is not None and (np.shape(params.later) != (G,) or np.min(params.later) < 0
                                     or np.max(params.later) >= G):
        raise ValueError(f"Parameters.later needs shape ({G},) of indices below {G}")
    if params.instant is not None and np.shape(params.instant) != (D, S, S + 2):
        raise ValueError(f"Parameters.instant needs shape {(D, S, S + 2)}; got {np.shape(params.instant)}")
    sojourn_family(params.family)             # FunnelDataError (a ValueError) for an unknown one
    if len(pipeline) and (pipeline.stage.min() < 0 or pipeline.stage.max() >= S):
        raise ValueError(f"Pipeline stage indices must be in 0..{S - 1}")
    if len(pipeline) and (pipeline.segment.min() < 0 or pipeline.segment.max() >= G):
        raise ValueError(f"Pipeline segment indices must be in 0..{G - 1}")


def instant_arrays(family, params: Parameters, S: int, G: int, D: int) -> dict:
    """The instant stays' arrays of :class:`Draws`: where ``params.instant`` is positive, a new
    stay is instant (shorter than the resolution r = ``short_t``) with probability h and
    otherwise follows the family truncated to t >= r, which the kernel draws as the survival
    level u * S(r) / (1 - h) (a level at or above S(r), u >= 1 - h, is an instant stay); an
    open deal's weights are pi (1 - h) S(age) / S(r). Without instant stays c = 1."""
    h = params.instant
    if h is None or not (h > 0).any():
        return {"any_instant": False, "instant_pair": np.zeros((S, S + 2), np.bool_),
                "instant_h": np.zeros((S, S + 2, 1)), "instant_c": np.ones((S, G, S + 2, 1))}
    h = np.asarray(h, np.float64)
    pair = (h > 0).any(axis=0)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        sf_r = family.sf(family.z(np.asarray(params.short_t, float), np.asarray(params.loc, float),
                                  np.asarray(params.shape, float)[:, :, None, :]))
        # h = 1 (a pass-through pair): every fresh stay is instant, an open deal can no longer take it
        c = np.where(pair[None, :, None, :], np.minimum(np.maximum(sf_r, 1e-300) / (1.0 - h[:, :, None, :]), 1e300), 1.0)
    return {"any_instant": True, "instant_pair": pair, "instant_h": np.ascontiguousarray(h.transpose(1, 2, 0)),
            "instant_c": np.ascontiguousarray(c.transpose(1, 2, 3, 0))}
