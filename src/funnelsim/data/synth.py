"""Synthetic CRM event logs with a known truth, for testing parameter recovery.

The generator follows the same semi-Markov, competing-risks-with-stall process the funnel
model assumes (see docs/architecture.md, "The model"). Times are in days, amounts in currency units.

Per deal:
1. Creation. Creation times are an exact-size sample from a mildly seasonal daily density
   (yearly cosine, weekends rare) over ``weeks`` weeks, at a time of day between 08:00 and 18:00.
   A deal belongs to segment g with probability ``segments[g]``. It is created directly as Won or
   Lost with probability ``p_created_terminal`` (a single row), otherwise in the second open stage
   with probability ``p_created_second`` and in the first open stage otherwise.
2. Moves. In open stage s a deal of segment g leaves to destination j with probability
   π[s,g,j]: the next stage (Won from the last stage), one stage ahead of that (``p_skip``, only
   onto an open stage), back one stage (``p_backward``, from the second stage on), Won directly
   from the second-to-last stage (``p_direct_win``), Lost, or ``"stall"``: it goes dark and never
   moves again. Base probabilities per stage are turned into logits against stall (the reference,
   logit 0); a segment adds ``segment_logit_shift[g] = (forward, lost)`` to the logits of forward
   destinations (next, skip, Won) and of Lost. Given j, the time in stage is
   LogNormal(log median[s,j,g], sigma[s,j]) days; segments scale the medians by
   ``segment_speed[g]``. A deal moving more than ``max_moves`` times stalls.
3. Amounts. Created with LogNormal(log amount_median[g], amount_sigma); times exp(N(0,
   move_amount_sigma)) at every move between open stages; unchanged on Lost; on Won the realised
   value is the last amount times exp(N(won_log_ratio_mean, won_log_ratio_sigma)).
4. Censoring. The log ends at midnight ``end = start + 7 * weeks`` days; events after it are
   dropped, so late deals are still open. The truth's ``as_of`` is the day before ``end``: in
   funnelsim an as-of date means the end of that day, so ``as_of`` sees exactly this log.
5. Awkward timing of real CRMs (all off by default, and then the log is bit-identical to the
   log without these knobs). A stay in stage s that ends in destination j is *instant* with
   probability h[s,j] = 1 - (1 - pass_through[s]) (1 - p_same_day_jump [j is forward]): it then
   lasts U(instant_seconds) seconds (default 1-120 s) instead of its LogNormal time; destination
   probabilities do not change. ``pass_through`` makes a stage an automation's pass-through
   (share 1.0: every stay lasts seconds); ``p_same_day_jump`` is a rep clicking a deal on (next
   stage, skip or Won) at once, so a jump through k stages is k consecutive instant stays.
   With instant stays the timestamps are written to the second, otherwise to the minute;
   ``date_only`` writes dates only (midnight, ``YYYY-MM-DD`` in a CSV), the same log with the
   time of day dropped, so same-day stays last 0 days. Rows stay in each deal's true order
   (sorted by timestamp, deal, then move), which is the order funnelsim's reader keeps for
   events of equal time (by source row, won/lost last).
6. Rare destinations. ``rare_destinations[(stage, destination)] = p`` sets that exit's base
   probability (before segment shifts; the main advance takes up the rest), e.g. a rare direct
   win; ``destination_segments[(stage, destination)] = (segments...)`` makes the exit possible
   only for those segments (probability 0 elsewhere, the other exits renormalised).

7. A funnel that changes. By the calendar month a stay *begins* in (its entry cohort), the
   forward destinations' logits move by ``drift_per_month`` per month since the start plus
   every ``drift_jumps[month]`` reached so far, stall's by ``stall_drift_per_month``, and each
   month draws shared shocks: N(0, ``shock_sd``) on the forward logits and N(0,
   ``shock_speed_sd``) on log time in stage, so deals of one month share their luck. The shocks
   come from their own random stream (seed, 7): with all of these at 0 the log is bit-identical
   to the log without them. The truth then has ``cohorts``: per month its ``forward_shift``,
   ``stall_shift``, ``speed_factor`` and the whole-funnel cells under that month's parameters
   (``p_win_from_entry`` as if the funnel stayed as it was that month).

8. Dormant deals that revive (docs/revival.md). With ``revival_rate`` r > 0 (per day) a stay
   that stalls waits Exp(r) days and, if that ends within ``revival_days`` of entering the
   stage, moves on after all, to a destination drawn from the stage's other shares. Two extra
   uniforms per move, only then: with r = 0 the log is as before. The truth's destination
   probabilities and P(win from entry) are the stay's first choice (stall before revivals).

The truth has one cell per (stage, segment) and per stage for the whole funnel (segment None),
with destination probabilities, LogNormal sojourn parameters, P(win from entry) from the
absorbing Markov chain of destinations (the ``max_moves`` cap is ignored there; its effect is
negligible), and the median time to exit given the deal leaves (instant stays included), the instant share per
destination (``instant_share``; ``sojourn`` is then the non-instant part) and the instant share
of all exits (``p_instant``). Whole-funnel cells mix the
segments with weight share[g] x E[entries into s per deal of g] (``segment_weights``): the mixture
a random entry into stage s is drawn from, which is what pooling all deals estimates.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import atomic_write
from .spells import SECONDS_PER_DAY
from .synth_truth import STALL, forward_mask, truth


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the synthetic CRM. Probabilities per exit; medians in days; amounts in currency."""

    stages: tuple[str, ...] = ("Prospecting", "Qualified", "Proposal", "Negotiation")
    won: str = "Won"
    lost: str = "Lost"
    segments: dict[str, float] = field(
        default_factory=lambda: {"Enterprise": 0.15, "MidMarket": 0.35, "SMB": 0.49, "Partner": 0.01})
    start: str = "2024-01-01"
    weeks: int = 104
    segment_column: str = "segment"
    p_backward: float = 0.05
    p_skip: float = 0.05
    p_stall_base: float = 0.08
    p_created_terminal: float = 0.002
    p_created_won: float = 0.5            # share of created-terminal deals that are Won
    p_created_second: float = 0.10        # created in the second open stage
    p_direct_win: float = 0.02            # second-to-last stage straight to Won
    p_lost: tuple[float, ...] | None = None               # per stage; None: 0.30 -> 0.25
    advance_median_days: tuple[float, ...] | None = None  # per stage; None: 10 -> 25 days
    lost_median_factor: float = 1.6       # lost exits are slower than advances
    back_median_factor: float = 1.3
    skip_median_factor: float = 1.2       # skips and direct wins
    sigma_forward: float = 0.6
    sigma_back: float = 0.8
    sigma_lost: float = 0.9
    segment_logit_shift: dict[str, tuple[float, float]] = field(default_factory=lambda: {
        "Enterprise": (0.35, -0.25), "MidMarket": (0.0, 0.0), "SMB": (-0.15, 0.30),
        "Partner": (0.20, -0.10)})
    segment_speed: dict[str, float] = field(default_factory=lambda: {
        "Enterprise": 1.5, "MidMarket": 1.0, "SMB": 0.7, "Partner": 1.1})
    amount_median: dict[str, float] = field(default_factory=lambda: {
        "Enterprise": 80_000.0, "MidMarket": 20_000.0, "SMB": 5_000.0, "Partner": 15_000.0})
    amount_sigma: float = 0.7
    move_amount_sigma: float = 0.1
    won_log_ratio_mean: float = -0.05
    won_log_ratio_sigma: float = 0.1
    seasonal_amplitude: float = 0.15      # relative amplitude of the yearly inflow cycle
    weekend_weight: float = 0.1           # weekend days' inflow relative to weekdays
    max_moves: int = 30
    # awkward timing and rare exits (module docstring, items 5 and 6); the defaults add none
    pass_through: dict[str, float] = field(default_factory=dict)  # stage -> share of instant stays
    p_same_day_jump: float = 0.0          # share of forward exits (next, skip, Won) that are instant
    instant_seconds: tuple[float, float] = (1.0, 120.0)  # an instant stay lasts U(lo, hi) seconds
    date_only: bool = False               # timestamps are dates: same-day stays last 0 days
    rare_destinations: dict[tuple[str, str], float] = field(default_factory=dict)  # base probability
    destination_segments: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    # a funnel that changes (module docstring, item 7): by the calendar month a stay begins in
    drift_per_month: float = 0.0          # logit shift of the forward destinations per month since start
    drift_jumps: dict[str, float] = field(default_factory=dict)  # "YYYY-MM" -> extra forward shift from then on
    stall_drift_per_month: float = 0.0    # logit shift of stall (against every other destination) per month
    shock_sd: float = 0.0                 # a month's shared N(0, sd) shock of the forward logits
    shock_speed_sd: float = 0.0           # a month's shared N(0, sd) shock of log time in stage
    # dormant deals that revive (module docstring, item 8): rate per day, and the window in days
    revival_rate: float = 0.0
    revival_days: float = 730.0

    @property
    def drifts(self) -> bool:
        return bool(self.drift_per_month or self.drift_jumps or self.stall_drift_per_month or self.shock_sd
                    or self.shock_speed_sd)


def _per_stage(value, first: float, last: float, n: int, name: str) -> np.ndarray:
    if value is None:
        return np.linspace(first, last, n) if n > 1 else np.array([first])
    if len(value) != n:
        raise ValueError(f"{name} has {len(value)} values but there are {n} stages")
    return np.asarray(value, dtype=float)


def _base_probs(cfg: SynthConfig) -> np.ndarray:
    """(S, K) destination probabilities before segment shifts; columns = dest_names order."""
    n = len(cfg.stages)
    won, lost, stall = n, n + 1, n + 2
    p_lost = _per_stage(cfg.p_lost, 0.30, 0.25, n, "p_lost")
    probs = np.zeros((n, n + 3))
    for s in range(n):
        probs[s, stall] = cfg.p_stall_base
        probs[s, lost] = p_lost[s]
        if s >= 1:
            probs[s, s - 1] = cfg.p_backward
        if s + 2 < n:
            probs[s, s + 2] = cfg.p_skip
        if s == n - 2:
            probs[s, won] = cfg.p_direct_win
        for (stage, dest), p in cfg.rare_destinations.items():
            if stage == cfg.stages[s]:
                probs[s, _code(cfg, dest)] = p
        rest = 1.0 - probs[s].sum()
        if rest <= 0.0 or cfg.p_stall_base <= 0.0 or (probs[s] < 0).any():
            raise ValueError(f"stage {cfg.stages[s]!r}: need p_stall_base > 0 and the other exits "
                             f"to leave room for advancing (left {rest:.3f})")
        probs[s, s + 1 if s + 1 < n else won] += rest
    return probs


def _destination_probs(cfg: SynthConfig, forward_shift: float = 0.0, stall_shift: float = 0.0) -> np.ndarray:
    """(S, G, K) π[s, g, j]: segment shifts added on the logit scale (stall = reference 0), and
    a cohort's ``forward_shift`` (forward logits) and ``stall_shift`` (stall against the rest)."""
    base = _base_probs(cfg)
    n = len(cfg.stages)
    fwd = forward_mask(n).astype(float)
    is_lost = (np.arange(n + 3) == n + 1).astype(float)
    is_stall = (np.arange(n + 3) == n + 2).astype(float)
    with np.errstate(divide="ignore"):
        eta = np.log(base) - np.log(base[:, [n + 2]])
    out = []
    for g in cfg.segments:
        forward, lost = cfg.segment_logit_shift.get(g, (0.0, 0.0))
        w = np.exp(eta + (forward + forward_shift) * fwd + lost * is_lost + stall_shift * is_stall)
        for (stage, dest), only in cfg.destination_segments.items():
            if g not in only:
                w[cfg.stages.index(stage), _code(cfg, dest)] = 0.0
        out.append(w / w.sum(axis=1, keepdims=True))
    return np.stack(out, axis=1)


def _code(cfg: SynthConfig, name: str) -> int:
    """Destination code of a stage, won, lost or stall name (dest_names order)."""
    return [*cfg.stages, cfg.won, cfg.lost, STALL].index(name)


def _instant_share(cfg: SynthConfig) -> np.ndarray:
    """(S, K) h[s, j]: probability that a stay in s ending in j lasts seconds (0 for stall)."""
    n = len(cfg.stages)
    q = np.array([cfg.pass_through.get(st, 0.0) for st in cfg.stages])
    h = 1.0 - (1.0 - q[:, None]) * (1.0 - cfg.p_same_day_jump * forward_mask(n))
    h[:, n + 2] = 0.0
    return h


def _sojourn_params(cfg: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """LogNormal time in stage: median (S, K, G) days and sigma (S, K); stall entries unused."""
    n = len(cfg.stages)
    adv = _per_stage(cfg.advance_median_days, 10.0, 25.0, n, "advance_median_days")
    med = np.ones((n, n + 3))
    sig = np.full((n, n + 3), cfg.sigma_forward)
    for s in range(n):
        for j in range(n + 2):
            if j == n + 1:
                med[s, j], sig[s, j] = adv[s] * cfg.lost_median_factor, cfg.sigma_lost
            elif j < s:
                med[s, j], sig[s, j] = adv[s] * cfg.back_median_factor, cfg.sigma_back
            elif j == s + 1 or (j == n and s == n - 1):
                med[s, j] = adv[s]
            else:
                med[s, j] = adv[s] * cfg.skip_median_factor
    speed = np.array([cfg.segment_speed.get(g, 1.0) for g in cfg.segments])
    return med[:, :, None] * speed[None, None, :], sig


def _months(cfg: SynthConfig) -> list[str]:
    """The calendar months from the start to the log's end, "YYYY-MM"."""
    first = np.datetime64(cfg.start, "M")
    last = (np.datetime64(cfg.start, "D") + np.timedelta64(cfg.weeks * 7 - 1, "D")).astype("datetime64[M]")
    return [str(first + k) for k in range(int((last - first).astype(int)) + 1)]


def cohort_shifts(cfg: SynthConfig, seed: int = 0) -> pd.DataFrame:
    """Per calendar month of stay entry (``cohort``): the forward logit shift (the trend, the
    jumps so far and the month's shock), the stall shift and the factor on time in stage. The
    shocks come from their own random stream, so a log without them is drawn as before."""
    months = _months(cfg)
    index = np.arange(len(months))
    forward = cfg.drift_per_month * index
    for month, jump in cfg.drift_jumps.items():
        forward = forward + jump * (np.array(months) >= month)
    shocks = np.random.default_rng([seed, 7]).standard_normal((2, len(months)))
    return pd.DataFrame({"cohort": months, "forward_shift": forward + cfg.shock_sd * shocks[0],
                         "stall_shift": cfg.stall_drift_per_month * index,
                         "speed_factor": np.exp(cfg.shock_speed_sd * shocks[1])})


def _cohort_of(cfg: SynthConfig, t: np.ndarray, n_months: int) -> np.ndarray:
    """Month index (0 = the start's month) of times ``t`` (days since start), capped at the last."""
    day = np.datetime64(cfg.start, "D") + np.floor(t).astype("timedelta64[D]")
    month = (day.astype("datetime64[M]") - np.datetime64(cfg.start, "M")).astype(int)
    return np.minimum(month, n_months - 1)


def _creation_days(rng: np.random.Generator, cfg: SynthConfig, n: int) -> np.ndarray:
    """Sorted creation times, days since start: seasonal day weights, 08:00-18:00 time of day."""
    n_days = cfg.weeks * 7
    dates = np.datetime64(cfg.start, "D") + np.arange(n_days)
    day_of_year = (dates - dates.astype("datetime64[Y]")).astype(int)
    weekday = (dates.astype(int) + 3) % 7  # 0 = Monday
    weight = 1.0 + cfg.seasonal_amplitude * np.cos(2 * np.pi * (day_of_year - 300) / 365.25)
    weight = weight * np.where(weekday >= 5, cfg.weekend_weight, 1.0)
    day = rng.choice(n_days, size=n, p=weight / weight.sum())
    return np.sort(day + (8.0 + 10.0 * rng.random(n)) / 24.0)


def _simulate(rng, cfg, pi, median, sigma, instant, seg, entry, t0, amount0, end, cohorts=None):
    """Move all open deals at once, one move per loop iteration (vectorised over deals).

    ``instant`` (S, K) is the share of stays lasting U(instant_seconds) seconds; an all-zero
    array draws nothing extra, so the defaults give the same log as before it existed.
    ``cohorts`` = (π per month (M, S, G, K), time factor per month (M,)): a stay's destination
    and time follow the month it begins in (None: ``pi`` for every stay, no extra draws).

    Returns concatenated event arrays: deal index, destination code, time (days since start),
    amount (currency) and move number (0 = creation). Stalls and events after ``end`` are not rows.
    """
    n_st = len(cfg.stages)
    won, stall = n_st, n_st + 2
    cum = np.cumsum(pi if cohorts is None else cohorts[0], axis=-1)
    cum[..., -1] = 1.0
    log_med = np.log(median)
    any_instant = bool(instant.any())
    lo, hi = (x / SECONDS_PER_DAY for x in cfg.instant_seconds)
    out = [(np.arange(seg.size), entry, t0, amount0, np.zeros(seg.size, np.int16))]
    idx = np.flatnonzero(entry < n_st)
    st, t, amt = entry[idx], t0[idx], amount0[idx]
    for move in range(1, cfg.max_moves + 1):
        if idx.size == 0:
            break
        g = seg[idx]
        u, z, e = rng.random(idx.size), rng.standard_normal(idx.size), rng.standard_normal(idx.size)
        if cohorts is None:
            dest = (cum[st, g] <= u[:, None]).sum(axis=1).astype(np.int8)
            days = np.exp(log_med[st, dest, g] + sigma[st, dest] * z)
        else:
            m = _cohort_of(cfg, t, len(cohorts[1]))
            dest = (cum[m, st, g] <= u[:, None]).sum(axis=1).astype(np.int8)
            days = np.exp(log_med[st, dest, g] + sigma[st, dest] * z) * cohorts[1][m]
        if any_instant:
            v, h = rng.random(idx.size), instant[st, dest]
            quick = v < h  # given that, v / h is uniform on (0, 1): it places the stay in [lo, hi]
            days = np.where(quick, lo + (hi - lo) * v / np.where(quick, h, 1.0), days)
        if cfg.revival_rate > 0:
            probs = pi[st, g] if cohorts is None else cohorts[0][m, st, g]
            wait = -np.log(rng.random(idx.size)) / cfg.revival_rate
            budget = rng.random(idx.size) * (1.0 - probs[:, stall])
            revived = (dest == stall) & (wait < cfg.revival_days)
            where = np.minimum((np.cumsum(probs[:, :stall], axis=1) <= budget[:, None]).sum(axis=1), stall - 1)
            dest = np.where(revived, where, dest).astype(np.int8)
            days = np.where(revived, wait, days)
        t = t + days
        amt = np.where(dest < n_st, amt * np.exp(cfg.move_amount_sigma * e), amt)
        amt = np.where(dest == won, amt * np.exp(cfg.won_log_ratio_mean + cfg.won_log_ratio_sigma * e),
                       amt)
        seen = (dest != stall) & (t <= end)
        out.append((idx[seen], dest[seen], t[seen], amt[seen], np.full(seen.sum(), move, np.int16)))
        keep = seen & (dest < n_st)
        idx, st, t, amt = idx[keep], dest[keep], t[keep], amt[keep]
    return [np.concatenate(parts) for parts in zip(*out, strict=True)]


def _create_deals(rng, cfg: SynthConfig, n: int, shares: np.ndarray):
    """Creation time (days since start, sorted), segment index, entry code and amount (currency)."""
    n_st = len(cfg.stages)
    t0 = _creation_days(rng, cfg, n)
    seg = rng.choice(len(shares), size=n, p=shares).astype(np.int16)
    u = rng.random(n)
    entry = np.where(u < cfg.p_created_second, min(1, n_st - 1), 0).astype(np.int8)
    terminal = u >= 1 - cfg.p_created_terminal
    entry[terminal] = n_st + 1
    entry[terminal & (u < 1 - cfg.p_created_terminal * (1 - cfg.p_created_won))] = n_st
    med_amt = np.array([cfg.amount_median.get(g, 10_000.0) for g in cfg.segments])
    amount0 = med_amt[seg] * np.exp(cfg.amount_sigma * rng.standard_normal(n))
    won_factor = np.exp(cfg.won_log_ratio_mean + cfg.won_log_ratio_sigma * rng.standard_normal(n))
    return t0, seg, entry, np.where(entry == n_st, amount0 * won_factor, amount0)


def _frame(cfg: SynthConfig, n_deals, seg, deal, code, t, amt, seq, seconds=False) -> pd.DataFrame:
    """Event arrays -> canonical frame, times rounded to the minute (to the second if
    ``seconds``; then cut to the day if ``cfg.date_only``), sorted by (time, deal, move)."""
    unit, per_day = ("s", SECONDS_PER_DAY) if seconds else ("m", 1440.0)
    ticks = np.rint(t * per_day).astype(np.int64)
    if cfg.date_only:
        unit, ticks = "D", ticks // int(per_day)
    order = np.lexsort((seq, deal, ticks))  # the move number keeps a deal's same-time rows in order
    deal, code, ticks, amt = deal[order], code[order], ticks[order], amt[order]
    width = max(7, len(str(n_deals)))  # fixed width: string order = creation order
    ids = np.array([f"D{i:0{width}d}" for i in range(1, n_deals + 1)], dtype=object)
    names = np.array([*cfg.stages, cfg.won, cfg.lost, STALL], dtype=object)
    stamps = np.datetime64(cfg.start, unit) + ticks.astype(f"timedelta64[{unit}]")
    return pd.DataFrame({
        "deal_id": ids[deal],
        "stage": names[code],
        "timestamp": stamps.astype("datetime64[ns]"),
        "amount": np.round(amt, 2),
        cfg.segment_column: np.array(list(cfg.segments), dtype=object)[seg[deal]],
    })


def generate(n_deals: int, seed: int = 0, config: SynthConfig | None = None
             ) -> tuple[pd.DataFrame, dict]:
    """Return (events, truth): a canonical event log of ``n_deals`` deals and its true parameters.

    Columns: deal_id, stage, timestamp (to the minute; to the second when instant stays are
    configured; midnight when ``date_only``), amount (currency), <segment_column>; sorted by
    timestamp, deal_id, then each deal's true order. Same seed and config give an identical frame.
    """
    cfg = config or SynthConfig()
    _validate(cfg, n_deals)
    rng = np.random.default_rng(seed)
    shares = np.array(list(cfg.segments.values()), dtype=float)
    shares /= shares.sum()
    pi = _destination_probs(cfg)
    median, sigma = _sojourn_params(cfg)
    instant = _instant_share(cfg)
    t0, seg, entry, amount0 = _create_deals(rng, cfg, n_deals, shares)
    shifts = cohort_shifts(cfg, seed) if cfg.drifts else None
    cohorts = None
    if shifts is not None:
        cohorts = (np.stack([_destination_probs(cfg, r.forward_shift, r.stall_shift) for r in shifts.itertuples()]),
                   shifts["speed_factor"].to_numpy(float))
    arrays = _simulate(rng, cfg, pi, median, sigma, instant, seg, entry, t0, amount0,
                       end=cfg.weeks * 7.0, cohorts=cohorts)
    events = _frame(cfg, n_deals, seg, *arrays, seconds=bool(instant.any()))
    found = truth(cfg, pi, median, sigma, instant, shares, n_deals, seed)
    if shifts is not None:
        found["cohorts"] = [
            {**{k: (round(float(v), 6) if k != "cohort" else v) for k, v in r._asdict().items() if k != "Index"},
             "cells": [c for c in truth(cfg, pi_m, median * r.speed_factor, sigma, instant, shares, n_deals,
                                        seed)["cells"] if c["segment"] is None]}
            for r, pi_m in zip(shifts.itertuples(), cohorts[0], strict=True)]
    return events, found


def _validate(cfg: SynthConfig, n_deals: int) -> None:
    names = [*cfg.stages, cfg.won, cfg.lost, STALL]
    if not cfg.stages or len(set(names)) != len(names):
        raise ValueError(f"stage, won and lost names must be distinct and not {STALL!r}: {names}")
    if n_deals < 1 or cfg.weeks < 1 or not cfg.segments or min(cfg.segments.values()) <= 0:
        raise ValueError("need n_deals >= 1, weeks >= 1 and positive segment shares")
    if cfg.p_created_second + cfg.p_created_terminal > 1:
        raise ValueError("p_created_second + p_created_terminal must be <= 1")
    for stage, share in cfg.pass_through.items():
        if stage not in cfg.stages or not 0 <= share <= 1:
            raise ValueError(f"pass_through {stage!r}={share}: need an open stage of {list(cfg.stages)} "
                             f"and a share between 0 and 1")
    if not 0 <= cfg.p_same_day_jump <= 1:
        raise ValueError(f"p_same_day_jump={cfg.p_same_day_jump} must be between 0 and 1")
    if cfg.revival_rate < 0 or cfg.revival_days <= 0:
        raise ValueError(f"revival_rate={cfg.revival_rate} and revival_days={cfg.revival_days}: need a rate >= 0 "
                         f"per day and a positive window")
    lo, hi = cfg.instant_seconds
    if not 0 <= lo < hi <= 3600:
        raise ValueError(f"instant_seconds={cfg.instant_seconds}: need 0 <= low < high <= 3600 seconds")
    n = len(cfg.stages)
    for key in {*cfg.rare_destinations, *cfg.destination_segments}:
        stage, dest = key
        if stage not in cfg.stages or dest not in names[:-1] or dest == stage:
            raise ValueError(f"rare destination {stage!r} -> {dest!r}: need an open stage of "
                             f"{list(cfg.stages)} and another stage, {cfg.won!r} or {cfg.lost!r}")
        s = cfg.stages.index(stage)
        if key in cfg.rare_destinations and (_code(cfg, dest) == (s + 1 if s + 1 < n else n)
                                             or not 0 <= cfg.rare_destinations[key] < 1):
            raise ValueError(f"rare destination {stage!r} -> {dest!r}: need a probability in [0, 1) "
                             f"and not the main advance (it takes up the rest)")
        only = cfg.destination_segments.get(key)
        if only is not None and (not only or set(only) - set(cfg.segments)):
            raise ValueError(f"destination_segments {stage!r} -> {dest!r}: {list(only)} must be "
                             f"some of the segments {list(cfg.segments)}")


def parse_pass_through(items) -> dict[str, float]:
    """``["Qualified=1.0", "Proposal=0.3,Negotiation=0.1"]`` -> ``{stage: share}`` (the CLI's
    ``--pass-through``); a stage without ``=share`` is a pure pass-through (1.0)."""
    out = {}
    for part in (p.strip() for item in items for p in item.split(",") if p.strip()):
        stage, _, share = part.partition("=")
        try:
            out[stage.strip()] = float(share) if share.strip() else 1.0
        except ValueError:
            raise ValueError(f"--pass-through {part!r}: write STAGE=SHARE, e.g. Qualified=1.0") from None
    return out


def parse_rare(items) -> dict[str, dict]:
    """``["Prospecting:Won=0.006", "Proposal:Prospecting@Enterprise+SMB"]`` -> the config's
    ``rare_destinations`` and ``destination_segments`` (the CLI's ``--rare``): FROM:TO, then
    ``=P`` for the exit's base probability and/or ``@SEG+SEG`` for the only segments having it."""
    rare, only = {}, {}
    for item in items:
        text, _, segs = item.partition("@")
        pair, _, prob = text.partition("=")
        stage, colon, dest = pair.partition(":")
        try:
            if not colon or not (prob.strip() or segs.strip()):
                raise ValueError
            if prob.strip():
                rare[(stage.strip(), dest.strip())] = float(prob)
        except ValueError:
            raise ValueError(f"--rare {item!r}: write FROM:TO=P and/or FROM:TO@SEGMENT+SEGMENT, "
                             f"e.g. Prospecting:Won=0.006") from None
        if segs.strip():
            only[(stage.strip(), dest.strip())] = tuple(g.strip() for g in segs.split("+") if g.strip())
    return {"rare_destinations": rare, "destination_segments": only}


def parse_jumps(items) -> dict[str, float]:
    """``["2025-01=0.5"]`` -> ``{"2025-01": 0.5}`` (the CLI's ``--jump``)."""
    out = {}
    for item in items:
        month, _, shift = item.partition("=")
        try:
            if not re.fullmatch(r"\d{4}-\d{2}", month.strip()):
                raise ValueError
            out[month.strip()] = float(shift)
        except ValueError:
            raise ValueError(f"--jump {item!r}: write YYYY-MM=SHIFT, e.g. 2025-01=0.5") from None
    return out


def write(path, n_deals: int, seed: int = 0, config: SynthConfig | None = None) -> dict:
    """Write events to ``path`` (Parquet if it ends in .parquet, else CSV) and the truth to
    ``<stem>.truth.json`` beside it, each atomically. Return the truth."""
    path = Path(path)
    events, truth = generate(n_deals, seed, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".parquet":
        atomic_write(path, lambda tmp: events.to_parquet(tmp, index=False))
    else:
        atomic_write(path, lambda tmp: events.to_csv(tmp, index=False))
    truth_path = path.with_name(path.stem + ".truth.json")
    atomic_write(truth_path, lambda tmp: Path(tmp).write_text(json.dumps(truth, indent=2) + "\n"))
    return truth
