"""The truth of a synthetic CRM (:mod:`funnelsim.data.synth`): per (stage, segment) and per
stage for the whole funnel, the destination probabilities, LogNormal time in stage, the
instant shares, P(win from entry) from the absorbing Markov chain of destinations and the
median days to exit. Probabilities are shares; times are days."""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq
from scipy.special import ndtr

from .spells import SECONDS_PER_DAY

__all__ = ["STALL", "forward_mask", "truth"]

STALL = "stall"


def forward_mask(n_stages: int) -> np.ndarray:
    """(S, K) boolean: destination j is a forward exit (later open stage or Won) from stage s."""
    k = np.arange(n_stages + 3)
    s = np.arange(n_stages)[:, None]
    return ((k < n_stages) & (k > s)) | (k == n_stages)


def _mixture_median(weights, log_medians, sigmas, instant=None, seconds=(1.0, 120.0)) -> float:
    """Median (days) of a mixture of LogNormals, by brentq on the mixture CDF in log-days.

    With ``instant`` (a share per component), that share of each component lasts
    U(seconds) seconds instead of its LogNormal time.
    """
    w = np.asarray(weights, float) / np.sum(weights)
    mu, sd = np.asarray(log_medians, float), np.asarray(sigmas, float)
    lo, hi = mu.min() - 12 * sd.max(), mu.max() + 12 * sd.max()
    if instant is None or not np.any(instant):
        f = lambda x: float(np.sum(w * ndtr((x - mu) / sd))) - 0.5
    else:
        h = np.asarray(instant, float)
        a, b = (x / SECONDS_PER_DAY for x in seconds)
        lo = min(lo, np.log(b * 1e-9))
        uniform = lambda x: min(max((np.exp(x) - a) / (b - a), 0.0), 1.0)
        f = lambda x: float(np.sum(w * (h * uniform(x) + (1 - h) * ndtr((x - mu) / sd)))) - 0.5
    return float(np.exp(brentq(f, lo, hi, xtol=1e-12)))


def _absorbing(pi_g: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Embedded jump chain of one segment (open stages transient; Won, Lost, stall absorbing).

    Returns P(eventually Won | entered s) = (I - Q)^-1 r_won, and the expected number of entries
    into each stage per deal created open with entry distribution ``start`` = start (I - Q)^-1.
    """
    n = pi_g.shape[0]
    a = np.eye(n) - pi_g[:, :n]
    return np.linalg.solve(a, pi_g[:, n]), np.linalg.solve(a.T, start)


def _cell(cfg, s, segment, probs, sojourn, p_win, median_days, instant, extra=None) -> dict:
    """One truth row; probs (K,) over destinations, sojourn {j: (median days, sigma)} of the
    stays that are not instant, instant (K,) the instant share per destination."""
    n = len(cfg.stages)
    names = [*cfg.stages, cfg.won, cfg.lost, STALL]
    r = lambda x: round(float(x), 6)
    cell = {
        "stage": cfg.stages[s], "segment": segment,
        "destinations": {names[j]: r(p) for j, p in enumerate(probs) if p > 0},
        "sojourn": {names[j]: {"median_days": r(m), "sigma": r(sd)} for j, (m, sd) in sojourn.items()},
        "conversion": r(probs[forward_mask(n)[s]].sum()),
        "p_lost": r(probs[n + 1]), "p_stall": r(probs[n + 2]),
        "p_win_from_entry": r(p_win), "median_days": r(median_days),
        "instant_share": {names[j]: r(instant[j]) for j in sojourn},
        "p_instant": r(probs[:n + 2] @ instant[:n + 2] / probs[:n + 2].sum()),
    }
    return cell | (extra or {})


def _whole_cell(cfg, s, exits, v, pi_s, median_s, sigma_s, p_win_s, instant_s) -> dict:
    """Whole-funnel cell for stage s: segments mixed with weights v (share x expected entries).

    Per destination the sojourn is a mixture of the segments' LogNormals: its median (days) is
    the mixture median and its sigma the standard deviation of log-days under the mixture.
    Instant shares do not depend on the segment, so they carry over unchanged.
    """
    soj = {}
    for j in exits:
        mu = np.log(median_s[j])
        w = v * pi_s[:, j] / np.sum(v * pi_s[:, j])
        sd = np.sqrt(sigma_s[j] ** 2 + np.sum(w * (mu - np.sum(w * mu)) ** 2))
        soj[j] = (_mixture_median(w, mu, np.full(len(v), sigma_s[j])), sd)
    med = _mixture_median((v[:, None] * pi_s[:, exits]).ravel(), np.log(median_s[exits].T).ravel(),
                          np.tile(sigma_s[exits], len(v)), np.tile(instant_s[exits], len(v)),
                          cfg.instant_seconds)
    extra = {"segment_weights": {g: round(float(x), 6) for g, x in zip(cfg.segments, v, strict=True)}}
    return _cell(cfg, s, None, v @ pi_s, soj, v @ p_win_s, med, instant_s, extra)


def truth(cfg, pi, median, sigma, instant, shares, n_deals, seed) -> dict:
    n, segs = len(cfg.stages), list(cfg.segments)
    start = np.zeros(n)
    start[0] += 1 - cfg.p_created_second
    start[min(1, n - 1)] += cfg.p_created_second
    solved = [_absorbing(pi[:, g], start) for g in range(len(segs))]
    p_win = np.stack([w for w, _ in solved], axis=1)                    # (S, G)
    visits = np.stack([v for _, v in solved], axis=1) * shares[None]    # (S, G) entries per deal
    cells = []
    for s in range(n):
        exits = [j for j in range(n + 2) if pi[s, :, j].max() > 0]
        for g, name in enumerate(segs):
            soj = {j: (median[s, j, g], sigma[s, j]) for j in exits if pi[s, g, j] > 0}
            med = _mixture_median(pi[s, g, exits], np.log(median[s, exits, g]), sigma[s, exits],
                                  instant[s, exits], cfg.instant_seconds)
            cells.append(_cell(cfg, s, name, pi[s, g], soj, p_win[s, g], med, instant[s]))
        cells.append(_whole_cell(cfg, s, exits, visits[s] / visits[s].sum(), pi[s], median[s],
                                 sigma[s], p_win[s], instant[s]))
    as_of = np.datetime64(cfg.start, "D") + np.timedelta64(cfg.weeks * 7 - 1, "D")
    return {
        "as_of": str(as_of), "stages": list(cfg.stages), "won": cfg.won, "lost": cfg.lost,
        "segment_column": cfg.segment_column,
        "segments": {g: round(float(x), 6) for g, x in zip(segs, shares, strict=True)},
        "n_deals": int(n_deals), "seed": int(seed),
        "entry": {"p_created_terminal": cfg.p_created_terminal, "p_created_won": cfg.p_created_won,
                  "p_created_stage": {cfg.stages[i]: round(float(x), 6)
                                      for i, x in enumerate(start) if x > 0}},
        "amounts": {"median_created": {g: cfg.amount_median.get(g, 10_000.0) for g in segs},
                    "sigma_created": cfg.amount_sigma, "move_log_sigma": cfg.move_amount_sigma,
                    "won_log_ratio_mean": cfg.won_log_ratio_mean,
                    "won_log_ratio_sigma": cfg.won_log_ratio_sigma},
        "max_moves": cfg.max_moves,
        "timing": {"resolution": "day" if cfg.date_only else "second" if instant.any() else "minute",
                   "pass_through": dict(cfg.pass_through), "p_same_day_jump": cfg.p_same_day_jump,
                   "instant_seconds": list(cfg.instant_seconds)},
        "rare_destinations": [
            {"stage": stage, "destination": dest, "base_probability": cfg.rare_destinations.get(key),
             "segments": list(cfg.destination_segments[key]) if key in cfg.destination_segments else None}
            for key in sorted({*cfg.rare_destinations, *cfg.destination_segments}) for stage, dest in [key]],
        "cells": cells,
    }
