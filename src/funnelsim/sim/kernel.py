"""Monte Carlo simulator: push the open pipeline through the fitted funnel.

Pure numpy + numba (no PyMC). For each posterior draw and each open deal:

1. Its first move is conditioned on what we know: the deal has already spent ``age`` days in
   its stage. Destination j (a stage, won, lost) has weight pi_j * S_j(age), stall has weight
   pi_stall; the remaining time is drawn from the sojourn distribution truncated to T > age
   (inverse survival function: S_j(T) = u * S_j(age)).
2. Every later stay starts fresh: destination by pi, time by the sojourn distribution.
3. Repeat until won, lost, stalled, or past the horizon. With dormant deals that revive
   (``Parameters.revival_rate``, docs/revival.md) a stall is not final: the stall weight of an
   open deal is pi_stall e^{-r min(age, W)}, and a stalled path waits Exp(r) days (memoryless)
   and, if that ends within W days of entering the stage, moves on to a destination drawn
   from the stage's shares pi_j / (1 - pi_stall). A drifting funnel's later stays follow
   another parameter set than the current one (``Parameters.later``: a cohort projected over
   the horizon instead of the deal's own). A won deal's value is its last open
   amount times exp(m_g + s_g * z), the won/last-open ratio of its segment (per draw); a deal
   with no amount takes one from its segment's won amounts (quantiles, interpolated).

Times follow the model's convention t = days + OFFSET_DAYS (see :mod:`funnelsim.data.stats`): a
deal aged a days has survived to t = a + 0.5; a fresh stay lasts max(t - 0.5, 0) days. The
clock starts at the end of the as-of day; a deal won at clock c (days) closes on as-of day
+ 1 + floor(c).

The same deal-level answer P(win ever) is computed exactly (not sampled) at the first step:
sum_j w_j(age) * P(win | enter j), with the chain of :func:`funnelsim.model.derived.p_win_from_entry`.

Random numbers come from a counter-based generator (a hash of seed, draw, deal and step), so
the same seed gives the same numbers whatever the chunk size or the number of threads. Draws
are processed in chunks (bounded memory); within a chunk, blocks of deals run in parallel
threads, and all of a deal's paths advance together, a step at a time, in loops over draws
that the compiler vectorises (no branches in them, and no libm calls: see :func:`_exp`).
"""

from __future__ import annotations

import numba
import numpy as np

from .._random import STREAM_REVIVE, STREAM_START, STREAM_WITHIN, WON_VALUE
from ..data.stats import OFFSET_DAYS
from ..model.sojourn import LOGNORMAL
from ..model.sojourn import family as sojourn_family
from ._fastmath import _GOLDEN, _K_DEAL, _exp, _mix, _normal_quantiles, _normal_sf, _uniforms

# the simulator's inputs and outputs, importable from here as they always were
from .kernel_io import (
    Amounts,
    Deals,
    Draws,
    Parameters,
    Pipeline,
    Run,
    Simulation,
    Totals,
    check_inputs,
    instant_arrays,
)

__all__ = ["Pipeline", "Parameters", "Simulation", "simulate", "MAX_STEPS"]

MAX_STEPS = 200           # moves per path; a path still moving after that is counted and not won
CHUNK_CELLS = 2_000_000   # (block x draw x period) revenue cells per chunk, 16 bytes each
CHUNK_DRAWS = 512         # draws per chunk at most: a deal's parameters for them stay in cache
BLOCK_DEALS = 64          # deals per block of work, at least (the split does not depend on threads)
MAX_BLOCKS = 32           # blocks at most: memory per chunk, and so the draws per chunk, do not
                          # depend on the number of deals (long loops over draws vectorise); each
                          # block has its own revenue per (draw, period), so fewer blocks, less
                          # to zero and add up (32 keeps up to 32 cores busy)
# the sojourn family codes the kernel branches on (funnelsim.model.sojourn): LogNormal, else Weibull
_LOGNORMAL = LOGNORMAL.code


def simulate(params: Parameters, pipeline: Pipeline, horizon_days: int, *, period_of_day=None,
             seed: int = 0, chunk_draws: int | None = None, counts: np.ndarray | None = None) -> Simulation:
    """Simulate every open deal under every posterior draw up to ``horizon_days``.

    ``period_of_day`` (H,) maps each day of the horizon (0 = the day after as-of) to a period
    index; default: one period per day. ``chunk_draws`` bounds memory (default: about
    CHUNK_CELLS cells of per-block revenue per chunk); it does not change the numbers.
    ``counts`` (D, C) int: for new-deal slots, how many of each cell's slots exist in each
    draw (see :class:`Pipeline`).
    """
    horizon = int(horizon_days)
    if horizon < 1:
        raise ValueError(f"horizon_days must be at least 1; got {horizon_days}")
    period_of_day = np.arange(horizon) if period_of_day is None else np.asarray(period_of_day, np.int64)
    if period_of_day.shape != (horizon,):
        raise ValueError(f"period_of_day needs one entry per day of the horizon ({horizon})")
    D, S, G = params.pi.shape[:3]
    N = len(pipeline)
    check_inputs(params, pipeline, S, G)
    counts = np.zeros((D, 1), np.int64) if counts is None else np.ascontiguousarray(counts, np.int64)
    if counts.shape[0] != D or (len(pipeline) and (pipeline.slot >= 0).any() and pipeline.cell.max() >= counts.shape[1]):
        raise ValueError(f"counts needs one row per draw ({D}) and a column per new-deal cell")
    n_periods = int(period_of_day.max()) + 1
    blocks = max(1, min(MAX_BLOCKS, -(-N // BLOCK_DEALS)))
    block_deals = -(-N // blocks)
    chunk = chunk_draws or max(1, min(D, CHUNK_DRAWS, CHUNK_CELLS // max(blocks * n_periods, 1)))

    family = sojourn_family(params.family)
    loc, shape, first_shape = family.kernel_arrays(params.loc, params.shape)
    # draw-last copies: every loop of the kernel runs over draws
    draws = Draws(
        family=family.code,
        possible=(params.pi[..., :S + 2] > 0).any(axis=(0, 2)),                                 # (S, S+2)
        pi=_contiguous(params.pi.transpose(1, 2, 3, 0)),                                        # (S, G, S+3, D)
        loc=_contiguous(loc.transpose(1, 2, 3, 0)),                                             # (S, G, S+2, D)
        shape=_contiguous(np.asarray(shape, np.float64).transpose(1, 2, 0)),                    # (S, S+2, D)
        first_shape=_contiguous(np.asarray(first_shape, np.float64).transpose(1, 2, 0)),        # (S, S+2, D)
        h_win=_contiguous(params.p_win_from_entry().transpose(1, 2, 0)),                        # (S, G, D)
        time_scale=_contiguous(np.ones((S, G)) if params.time_scale is None else params.time_scale),
        **instant_arrays(family, params, S, G, D),
        later=np.arange(G, dtype=np.int64) if params.later is None else np.asarray(params.later, np.int64),
        revival=_contiguous(np.zeros((S, D)) if params.revival_rate is None else np.asarray(params.revival_rate).T),
        revival_days=0.0 if params.revival_rate is None else float(params.revival_days))
    amounts = Amounts(ratio_mean=_contiguous(params.ratio_mean), ratio_sd=_contiguous(params.ratio_sd),
                       won_amounts=np.ascontiguousarray(params.won_amounts, np.float64))
    deals = Deals(stage=pipeline.stage, segment=pipeline.segment, age=pipeline.age_days,
                   log_age=np.log(pipeline.age_days + OFFSET_DAYS), amount=pipeline.amount, key=pipeline.key,
                   start_low=pipeline.start_low, start_width=pipeline.start_width, slot=pipeline.slot,
                   cell=pipeline.cell, counts=counts)
    revenue = np.zeros((D, n_periods))
    wins = np.zeros((D, n_periods))
    sums = np.zeros((3, N))                                        # won in horizon, revenue, P(win ever)
    close_days = np.zeros((N, horizon), np.int64)
    capped = 0
    block_totals = np.empty((blocks, 2, min(chunk, D), n_periods))  # per block: revenue, wins (zeroed per chunk)
    totals = Totals(sums=sums, close_days=close_days, block_totals=block_totals)
    for d0 in range(0, D, chunk):
        n = min(chunk, D - d0)
        run = Run(d0=d0, n=n, horizon=float(horizon), offset=OFFSET_DAYS, seed=np.uint64(seed & 0xFFFFFFFFFFFFFFFF),
                   period_of_day=period_of_day, block_deals=block_deals)
        capped += _simulate_chunk(run, deals, draws, amounts, totals)
        _sum_blocks(block_totals, n, revenue[d0:d0 + n], wins[d0:d0 + n])
    return Simulation(revenue=revenue, wins=wins, p_win_horizon=sums[0] / D, expected_revenue=sums[1] / D,
                      p_win_ever=sums[2] / D, close_days=close_days, capped=int(capped))


def _contiguous(array) -> np.ndarray:
    return np.ascontiguousarray(array, np.float64)


# --------------------------------------------------------------------------- kernels

@numba.njit(inline="always")
def _is_forward(j, s, S):
    """Is destination j (stages, won, lost) forward from stage s: a later stage or won."""
    return (s < j) & (j <= S)


@numba.njit(inline="always")
def _first_moves(n, d0, s, g, t_age, log_t, key_deal, draw_keys, draws, weights, ever, keys, stages, dest, u_time,
                 scratch, chosen):
    """The first move of one deal under draws d0 .. d0+n-1, each loop over draws (so the
    compiler vectorises it). Destination weights given survival to ``t_age`` go into
    ``weights`` (S+3, n): pi_j * S_j(age), stall last (rows of destinations stage s never
    takes are left unset); then P(win ever) into ``ever``, the path keys, the destination
    and the uniform for the stay's time (see :func:`_pick_all`); ``stages``, ``scratch`` and
    ``chosen`` are work space.
    Parameters (``draws``, :class:`Draws`) are in draw-last layout (``pi`` (S, G, S+3, D) and
    so on); ``first_shape`` is 1/sigma for LogNormal; ``possible`` (S, S+2) says which
    destinations any draw can take."""
    (family, possible, pi_t, loc_t, _, first_shape_t, h_win_t, _, any_instant, instant_pair, _, instant_c, later,
     revival, revival_days) = draws
    g_later = later[g]                         # P(win | enter j) for the stage it enters next
    S = pi_t.shape[0]
    aged = t_age > OFFSET_DAYS                 # an open deal (a new deal's first stay is fresh)
    forward, other = scratch[0], scratch[1]          # the groups' weights, for the pick
    revive_win = scratch[2]                          # P(win | revived): work space until the pick
    for k in range(n):
        keys[k] = _mix(draw_keys[k] + key_deal)
        weights[S + 2, k] = pi_t[s, g, S + 2, d0 + k]
        forward[k] = 0.0
        other[k] = 0.0
        ever[k] = 0.0
        revive_win[k] = 0.0
        stages[k] = s
    age_days = t_age - OFFSET_DAYS
    if revival_days > 0.0:                     # still dormant at this age: pi_stall e^{-r min(age, W)}
        dormant_days = min(age_days, revival_days)
        for k in range(n):
            weights[S + 2, k] *= np.exp(-revival[s, d0 + k] * dormant_days)
    for j in range(S + 2):
        if not possible[s, j]:                # never taken from stage s: weight 0, row left unset
            continue
        # 1-d rows: indexing them is far cheaper in these loops than indexing the 4-d arrays
        w_row, pi_row = weights[j], pi_t[s, g, j, d0:d0 + n]
        loc_row, shape_row = loc_t[s, g, j, d0:d0 + n], first_shape_t[s, j, d0:d0 + n]
        if family == _LOGNORMAL:
            for k in range(n):
                w_row[k] = pi_row[k] * _normal_sf((log_t - loc_row[k]) * shape_row[k])
        else:
            for k in range(n):
                w = pi_row[k]
                if w > 0.0:
                    w *= np.exp(-(t_age / loc_row[k]) ** shape_row[k])
                w_row[k] = w
        if any_instant and instant_pair[s, j]:    # pi (1 - h) S(age) / S(r); a fresh stay: pi
            c_row = instant_c[s, g, j, d0:d0 + n]
            if aged:
                for k in range(n):
                    w_row[k] = w_row[k] / c_row[k]
            else:
                for k in range(n):
                    w_row[k] = pi_row[k]
        group = forward if _is_forward(j, s, S) else other
        for k in range(n):
            group[k] += w_row[k]
        if j < S:
            win_row = h_win_t[j, g_later, d0:d0 + n]
            for k in range(n):
                ever[k] += w_row[k] * win_row[k]
        if revival_days > 0.0 and j <= S:      # a revived stay moves by the plain shares
            for k in range(n):
                revive_win[k] += pi_row[k] * (1.0 if j == S else h_win_t[j, g_later, d0 + k])
    if revival_days > 0.0:                     # a dormant deal revives within the window and may win
        left = max(revival_days - age_days, 0.0)
        for k in range(n):
            moving = 1.0 - pi_t[s, g, S + 2, d0 + k]
            w = -np.expm1(-revival[s, d0 + k] * left) * revive_win[k] / moving if moving > 0.0 else 0.0
            ever[k] += weights[S + 2, k] * w
    won_possible = possible[s, S]
    for k in range(n):
        total = forward[k] + other[k] + weights[S + 2, k]
        e = ever[k] + (weights[S, k] if won_possible else 0.0)
        ever[k] = e / total if total > 0.0 else 0.0
    _pick_all(n, stages, S, weights, keys, 0, dest, u_time, scratch, chosen, possible[s])


@numba.njit(inline="always")
def _pick_all(n, stages, S, weights, keys, step, dest, u_time, sums, chosen, rows):
    """Pick the destination of n paths: path a is in stage ``stages[a]`` with unnormalised
    destination weights ``weights[:, a]`` (stages, won, lost, stall); ``dest[a]`` gets the
    index. Loops over paths innermost, with selects instead of branches, so they vectorise;
    ``u_time[a]`` gets the second uniform of the counter, for the time of the stay that follows.
    ``sums`` (4, n) holds each path's forward and other weight in its first two rows (the
    callers add them up as they fill ``weights``); the rest of it and ``chosen`` (n,) are work
    space. Only the destinations j with ``rows[j]`` are looked at: the others must have weight
    0 for every path.

    Two steps, so that what-if scenarios pair well: the first uniform of counter ``step`` of
    ``keys[a]`` picks the group (forward: later stages and won; other: earlier stages and
    lost; stall) and the first uniform of counter STREAM_WITHIN + ``step`` the destination
    inside it by the group's own shares. Scaling a group (a conversion or stall change) then
    moves paths only across group boundaries, never inside a group.

    Inside the group, the destination is the first whose running total of weight passes the
    budget (uniform x the group's weight): the last destination of the group (with weight
    > 0) whose running total *before* it is still within the budget, which one select per
    destination finds (a budget at or past the group's total, from rounding, gets the group's
    last destination)."""
    forward, other, budget, acc = sums[0], sums[1], sums[2], sums[3]
    stall = weights[S + 2]
    for a in range(n):
        u_group, u_time[a] = _uniforms(keys[a], step)
        u_within, _ = _uniforms(keys[a], STREAM_WITHIN + step)
        f, o = forward[a], other[a]
        x = u_group * (f + o + stall[a])
        is_forward = x < f
        budget[a] = u_within * (f if is_forward else o)
        # stall: no destination inside a group can be chosen
        dest[a] = -1 if x >= f + o else (1 if is_forward else 0)
        acc[a] = 0.0
        chosen[a] = S + 2
    for j in range(S + 2):
        if not rows[j]:
            continue
        w_row = weights[j]
        for a in range(n):
            # every load before the selects, and & rather than `and`: no branches
            w, running, c = w_row[a], acc[a], chosen[a]
            inside = (dest[a] == (1 if _is_forward(j, stages[a], S) else 0)) & (w > 0.0)
            chosen[a] = j if inside & (running <= budget[a]) else c
            acc[a] = running + (w if inside else 0.0)
    for a in range(n):
        dest[a] = chosen[a]


@numba.njit(inline="always")
def _revival_destination(pi_f, base, D, S, u):
    """Where a revived stay goes: destination j (a stage, won, lost) with probability
    pi_j / (1 - pi_stall), by uniform ``u``; the stage's pi_j are ``pi_f[base + j * D]`` (the
    flat draw-last layout)."""
    budget = u * (1.0 - pi_f[base + (S + 2) * D])
    acc = 0.0
    chosen = S + 2
    for j in range(S + 2):
        p = pi_f[base + j * D]
        if p > 0.0:                 # the first whose running total passes the budget (else the last)
            chosen = j
            acc += p
            if acc > budget:
                break
    return chosen


@numba.njit(inline="always")
def _revive_first(n, d0, s, g, t_age, draws, dest, keys, now, time_scale):
    """Dormant deals that revive, in the current stay: a path whose first move is a stall
    waits Exp(r) days more (memoryless, whatever its age) and, if that ends within the window
    of its stage entry, moves to a destination by the stage's plain shares (uniforms of counter
    STREAM_REVIVE)."""
    pi_t, revival, revival_days = draws.pi, draws.revival, draws.revival_days
    S, G, D = pi_t.shape[0], pi_t.shape[1], pi_t.shape[3]
    pi_f = pi_t.reshape(pi_t.size)
    age_days = t_age - OFFSET_DAYS
    for k in range(n):
        r = revival[s, d0 + k]
        if dest[k] != S + 2 or r <= 0.0:
            continue
        u1, u2 = _uniforms(keys[k], STREAM_REVIVE)
        wait = -np.log(u1) / r
        if age_days + wait < revival_days:
            now[k] = wait * time_scale
            dest[k] = _revival_destination(pi_f, ((s * G + g) * (S + 3)) * D + d0 + k, D, S, u2)


@numba.njit(inline="always")
def _first_stays(n, d0, s, g, t_age, draws, weights, dest, keys, start_low, start_width, now, u, z, ratio, lam, sig,
                 tails):
    """The rest of the current stay, for every draw (a path lost or stalled gets a time too,
    unused): T > t_age by inverse survival, S_j(T) = u * S_j(t_age), with u the second
    uniform of counter 0 (``u[k]`` on entry, from :func:`_pick_all`) and j = ``dest[k]``;
    ``now[k]`` is when the stay ends, days after as-of (a new deal's start in its window
    first, from the uniform of counter STREAM_START).
    The parameters are ``draws`` (:class:`Draws`), the time scale the stage's. The chosen
    destination's S_j(t_age) (weight / pi) and sojourn parameters are taken by selection, row
    by row (``ratio``, ``lam``, ``sig``, ``tails``: work space), so every loop runs over draws
    in order and vectorises."""
    family, possible, pi_t, loc_t, shape_t, _, _, time_scales, any_instant, instant_pair, _, instant_c = draws[:12]
    time_scale = time_scales[s, g]
    S = weights.shape[0] - 3
    for k in range(n):
        ratio[k] = 1.0
        lam[k] = 1.0
        sig[k] = 1.0
    for j in range(S + 2):
        if not possible[s, j]:
            continue
        w_row, pi_row = weights[j], pi_t[s, g, j, d0:d0 + n]
        loc_row, shape_row = loc_t[s, g, j, d0:d0 + n], shape_t[s, j, d0:d0 + n]
        for k in range(n):
            chosen = dest[k] == j
            r, old_ratio, old_lam, old_sig = w_row[k] / pi_row[k], ratio[k], lam[k], sig[k]
            ratio[k] = r if chosen else old_ratio
            lam[k] = loc_row[k] if chosen else old_lam
            sig[k] = shape_row[k] if chosen else old_sig
    if any_instant:      # the survival level of the timed part: u S(age) (open deal) or u S(r) / (1 - h)
        for j in range(S + 2):
            if not (possible[s, j] and instant_pair[s, j]):
                continue
            c_row = instant_c[s, g, j, d0:d0 + n]
            for k in range(n):
                ratio[k] = ratio[k] * c_row[k] if dest[k] == j else ratio[k]
        if family == _LOGNORMAL:
            for k in range(n):
                u[k] = min(u[k] * ratio[k], 1.0)      # at or above S(r): an instant stay (t <= r)
                ratio[k] = 1.0
        else:                                         # the Weibull draw below conditions on t_age itself
            for k in range(n):
                u[k] = min(u[k] * ratio[k] / np.exp(-(t_age / lam[k]) ** sig[k]), 1.0)
    if family == _LOGNORMAL:
        for k in range(n):
            u[k] *= ratio[k]
        _normal_quantiles(n, u, z, tails)
        for k in range(n):
            now[k] = max(_exp(lam[k] - sig[k] * z[k]) - t_age, 0.0) * time_scale
    else:
        for k in range(n):
            t = lam[k] * (-np.log(u[k]) + (t_age / lam[k]) ** sig[k]) ** (1.0 / sig[k])
            now[k] = max(t - t_age, 0.0) * time_scale
    if draws.revival_days > 0.0:
        _revive_first(n, d0, s, g, t_age, draws, dest, keys, now, time_scale)
    if start_width > 0.0:                           # a new deal: created in its window
        for k in range(n):
            u_start, _ = _uniforms(keys[k], STREAM_START)
            now[k] += start_low + u_start * start_width


@numba.njit(inline="always")
def _later_moves(m, d0, g, flat, horizon, offset, lane, stages, now, keys, won_at, weights, dest, u, z, scratch,
                 chosen):
    """Move ``m`` paths on from the end of their current stay until won, lost, stalled or
    past the horizon, one step at a time for all paths still moving: path a is draw d0 +
    ``lane[a]``, entering stage ``stages[a]`` at ``now[a]`` days, with key ``keys[a]``. Every
    stay here starts fresh: destination by pi (:func:`_pick_all` with counter ``step``, the
    move's number), time by the sojourn distribution (the second uniform of that counter).
    Sets ``won_at[lane]`` (days) for the paths won within the horizon. The parameters,
    ``flat``, are the family code, the draw-last arrays of :class:`Draws` flattened (pi,
    loc, shape, time scale) and ``any_possible`` (S+2,), the destinations some stage can take.
    The paths are compacted in place after each step; the rest is work space. Returns the
    number of paths stopped at MAX_STEPS moves."""
    family, pi_f, loc_f, shape_f, scale_f, any_possible, any_instant, c_f, revival_f, revival_days = flat
    S = weights.shape[0] - 3
    G = scale_f.size // S
    D = pi_f.size // (S * G * (S + 3))
    nd = S + 3
    step = 1
    while m > 0:
        if step >= MAX_STEPS:
            return m
        forward, other = scratch[0], scratch[1]
        for a in range(m):
            forward[a] = 0.0
            other[a] = 0.0
        for j in range(nd):                        # destination weights of each path's stage
            w_row = weights[j]
            for a in range(m):
                w = pi_f[((stages[a] * G + g) * nd + j) * D + d0 + lane[a]]
                w_row[a] = w
                is_forward = _is_forward(j, stages[a], S)       # (stall, j = S + 2, is neither)
                forward[a] += w if is_forward else 0.0
                other[a] += 0.0 if is_forward or j == S + 2 else w
        _pick_all(m, stages, S, weights, keys, step, dest, u, scratch, chosen, any_possible)
        start = scratch[2]                         # when the stay began (a revival counts from it)
        if revival_days > 0.0:
            for a in range(m):
                start[a] = now[a]
        if any_instant:      # u S(r) / (1 - h): at or above S(r), an instant stay
            for a in range(m):
                s, j, d = stages[a], min(dest[a], S + 1), d0 + lane[a]
                u[a] = min(u[a] * c_f[((s * G + g) * (S + 2) + j) * D + d], 1.0)
        if family == _LOGNORMAL:
            _normal_quantiles(m, u, z, chosen)
            for a in range(m):
                s, j, d = stages[a], min(dest[a], S + 1), d0 + lane[a]     # a stalled path's time is unused
                t = _exp(loc_f[((s * G + g) * (S + 2) + j) * D + d] - shape_f[(s * (S + 2) + j) * D + d] * z[a])
                now[a] += max(t - offset, 0.0) * scale_f[s * G + g]
        else:
            for a in range(m):
                s, j, d = stages[a], min(dest[a], S + 1), d0 + lane[a]
                lam, shape = loc_f[((s * G + g) * (S + 2) + j) * D + d], shape_f[(s * (S + 2) + j) * D + d]
                t = lam * (-np.log(u[a])) ** (1.0 / shape)
                now[a] += max(t - offset, 0.0) * scale_f[s * G + g]
        if revival_days > 0.0:                     # a stalled path may revive (see _revive_first)
            for a in range(m):
                s, d = stages[a], d0 + lane[a]
                r = revival_f[s * D + d]
                if dest[a] != S + 2 or r <= 0.0:
                    continue
                u1, u2 = _uniforms(keys[a], STREAM_REVIVE + step)
                wait = -np.log(u1) / r
                if wait < revival_days:
                    now[a] = start[a] + wait * scale_f[s * G + g]
                    dest[a] = _revival_destination(pi_f, ((s * G + g) * nd) * D + d, D, S, u2)
        moving = 0
        for a in range(m):
            k, j, t = lane[a], dest[a], now[a]
            in_time = t < horizon
            won_at[k] = t if (j == S) & in_time else won_at[k]
            lane[moving] = k
            stages[moving] = j
            now[moving] = t
            keys[moving] = keys[a]
            moving += 1 if (j < S) & in_time else 0
        m = moving
        step += 1
    return 0


@numba.njit(inline="always")
def _won_values(nw, won_lane, d0, g, amount, won_amounts, ratio_mean, ratio_sd, keys, u, z, values, tails):
    """values[w] (currency) for the paths won_lane[:nw] (draws d0 + lane) that win the deal:
    its last open ``amount`` times exp(m_g + s_g * z), the won/last-open ratio, with z from the
    first uniform of counter WON_VALUE; or, for a deal with no amount (NaN), one of its
    segment's won amounts, interpolated between quantiles at the second uniform (0 when the
    segment has none). ``u``, ``z`` and ``tails`` are work space."""
    if amount != amount:
        q = won_amounts[g]
        top = q.size - 1
        for w in range(nw):
            _, u2 = _uniforms(keys[won_lane[w]], WON_VALUE)
            position = u2 * top
            k = min(int(position), top - 1)
            values[w] = 0.0 if q[0] != q[0] else q[k] + (position - k) * (q[k + 1] - q[k])
        return
    for w in range(nw):
        u[w], _ = _uniforms(keys[won_lane[w]], WON_VALUE)
    _normal_quantiles(nw, u, z, tails)
    for w in range(nw):
        d = d0 + won_lane[w]
        values[w] = amount * _exp(ratio_mean[d, g] + ratio_sd[d, g] * z[w])


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _simulate_chunk(run, deals, draws, amounts, totals):
    """Simulate draws d0 .. d0+n-1 for every deal: parallel over blocks of deals; within a
    block, deal by deal, each step for all of the deal's paths at once, in loops over draws
    that vectorise: the first move and the rest of the current stay (:func:`_first_moves`,
    :func:`_first_stays`), the later moves a step at a time for the paths still moving
    (:func:`_later_moves`), then the values of the paths won (:func:`_won_values`). Adds to
    the per-deal ``sums`` and ``close_days`` and to each block's revenue and wins per (draw,
    period); every sum is taken in draw order, whatever the chunk. Returns the number of
    capped paths. The numpy error model (a division by zero gives inf, no exception check)
    is what lets the loops with a division vectorise.

    Five groups of arrays (named tuples, see :mod:`funnelsim.sim.kernel_io`): ``run``
    (:class:`Run`: the chunk's draws d0, n and the run's settings), ``deals``
    (:class:`Deals`: one entry per deal, and the new-deal slot counts), ``draws``
    (:class:`Draws`: the posterior draws, draw-last), ``amounts`` (:class:`Amounts`: what a
    won deal is worth) and ``totals`` (:class:`Totals`: the outputs added to)."""
    d0, n, horizon, offset, seed, period_of_day, block_deals = run
    stage0, segment, age, log_age, amount, deal_keys, start_low, start_width, slot, cell, counts = deals
    family, possible, pi_t, loc_t, shape_t, _, _, time_scale, any_instant, _, _, instant_c, later = draws[:13]
    ratio_mean, ratio_sd, won_amounts = amounts
    sums, close_days, block_totals = totals
    N = stage0.size
    S, G = pi_t.shape[:2]
    blocks = block_totals.shape[0]
    any_possible = np.zeros(S + 2, np.bool_)                 # destinations some stage can take
    for s in range(S):
        for j in range(S + 2):
            any_possible[j] |= possible[s, j]
    # draw-last and flat: a deal's paths are in draw order, so neighbouring paths read neighbouring values
    pi_f, loc_f, shape_f = pi_t.reshape(pi_t.size), loc_t.reshape(loc_t.size), shape_t.reshape(shape_t.size)
    scale_f = time_scale.reshape(time_scale.size)
    flat = (family, pi_f, loc_f, shape_f, scale_f, any_possible, any_instant, instant_c.reshape(instant_c.size),
            draws.revival.reshape(draws.revival.size), draws.revival_days)
    capped = np.zeros(blocks, np.int64)
    draw_keys = np.empty(n, np.uint64)
    for k in range(n):
        draw_keys[k] = _mix(seed ^ _mix(np.uint64(d0 + k) + _GOLDEN))
    for b in numba.prange(blocks):
        block_totals[b, :, :n] = 0.0
        block_revenue, block_wins = block_totals[b, 0], block_totals[b, 1]
        weights = np.empty((S + 3, n))
        scratch = np.empty((4, n))
        per_draw = np.empty((7, n))      # ever, now, u, z; the first stay's weight / pi, loc, shape
        ever, now, u, z = per_draw[0], per_draw[1], per_draw[2], per_draw[3]
        keys = np.empty(n, np.uint64)
        path_keys = np.empty(n, np.uint64)
        dest = np.empty(n, np.int64)
        chosen = np.empty(n, np.int64)
        stages = np.empty(n, np.int64)
        lane = np.empty(n, np.int64)
        won_at = np.empty(n)
        values = np.empty(n)
        first, last = b * block_deals, min(N, (b + 1) * block_deals)
        for i in range(first, last):
            g, s = segment[i], stage0[i]
            t_age = age[i] + offset
            _first_moves(n, d0, s, g, t_age, log_age[i], deal_keys[i] * _K_DEAL, draw_keys, draws, weights, ever,
                         keys, stages, dest, u, scratch, chosen)
            p_ever = sums[2, i]
            for k in range(n):
                p_ever += ever[k]
            sums[2, i] = p_ever
            _first_stays(n, d0, s, g, t_age, draws, weights, dest, keys, start_low[i], start_width[i], now, u, z,
                         per_draw[4], per_draw[5], per_draw[6], chosen)
            # won at the end of this stay, or moving on (lost, stalled, past the horizon: done)
            m = 0
            is_slot = slot[i] >= 0
            for k in range(n):
                absent = is_slot and slot[i] >= counts[d0 + k, cell[i]]      # a slot not in this draw
                j, t = dest[k], now[k]
                in_time = (t < horizon) & (not absent)
                won_at[k] = t if (j == S) & in_time else np.inf
                lane[m] = k
                stages[m] = j
                now[m] = t
                path_keys[m] = keys[k]
                m += 1 if (j < S) & in_time else 0
            capped[b] += _later_moves(m, d0, later[g], flat, horizon, offset, lane, stages, now, path_keys, won_at, weights,
                                      dest, u, z, scratch, chosen)
            nw = 0
            for k in range(n):                         # the paths won within the horizon, in draw order
                lane[nw] = k
                nw += 1 if won_at[k] < horizon else 0
            _won_values(nw, lane, d0, g, amount[i], won_amounts, ratio_mean, ratio_sd, keys, u, z, values, chosen)
            won, revenue = sums[0, i], sums[1, i]
            for w in range(nw):
                k = lane[w]
                day = int(won_at[k])
                p = period_of_day[day]
                block_revenue[k, p] += values[w]
                block_wins[k, p] += 1.0
                won += 1.0
                revenue += values[w]
                close_days[i, day] += 1
            sums[0, i], sums[1, i] = won, revenue
    return capped.sum()


@numba.njit(parallel=True, cache=True)
def _sum_blocks(block_totals, n, revenue, wins):
    """revenue[k, p], wins[k, p] += the blocks' totals for draw k < n, summed in block order."""
    for k in numba.prange(n):
        for b in range(block_totals.shape[0]):
            for p in range(block_totals.shape[3]):
                revenue[k, p] += block_totals[b, 0, k, p]
                wins[k, p] += block_totals[b, 1, k, p]
