"""Which cells of the funnel model are sampled centred, and the coordinates of the logits.

Partial pooling is sampled per cell (a rotated logit coordinate, or a (stage, destination)
time-in-stage location, in one segment) in the centred form where the cell's data are far more
precise than the spread across segments estimated from the data, non-centred elsewhere
(:func:`centred_cells`); a stage's destination logits are sampled along the eigenbasis of
their Fisher information (:func:`logit_rotation`). Both are data of the compiled model, not
structure (see :mod:`funnelsim.model.likelihood`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..data.events import FunnelDataError

if TYPE_CHECKING:
    from .likelihood import ModelData

__all__ = ["centred_cells", "logit_rotation", "SPREAD_TEST_LEVEL"]

# auto pooling centres no cell of a stage whose segments do not differ significantly at this
# level: on 4,000-deal logs whose segments share one speed, a spread estimated positive by
# chance centred a few locations, and the sampler diverged (25-48 times) as the spread went to 0
SPREAD_TEST_LEVEL = 0.01


def centred_cells(data: ModelData, pooling: str, precision_ratio: float) -> np.ndarray:
    """Which (pair, segment) cells use the centred form, for the logits ([0], rotated
    coordinates) and the time in stage ([1]): a (2, K, G) boolean array.

    With ``pooling="auto"`` a cell is centred where its data pin its value down at least
    ``precision_ratio`` times more tightly than the spread across segments does: data
    precision x spread² >= ratio. The centred form samples fast there and the non-centred
    form where the spread dominates; the wrong one is a funnel (divergences) or a long
    correlation (low ESS). The spread of each stage is estimated from the data
    (:func:`_segment_spread`); it is 0 unless the segments differ significantly, and then no
    cell is centred. Data precision: for a rotated logit coordinate v (:func:`logit_rotation`),
    v' N (diag(p) - p p') v with N the stays and p the shares leaving to each destination;
    for a location, n / s² (n exits, s² the within-segment variance of log t). No cell is
    centred when there is a single segment."""
    K, G = len(data.pairs), len(data.segments)
    if pooling in ("centred", "non-centred"):
        return np.full((2, K, G), pooling == "centred")
    if pooling != "auto":
        raise FunnelDataError(f"unknown pooling {pooling!r}", hint="Use 'auto', 'centred' or 'non-centred'.")
    if G == 1:
        # one segment: the spread has nothing to learn from, and a centred cell on top of
        # a free spread is a funnel the sampler diverges in
        return np.zeros((2, K, G), dtype=bool)
    k_stage, k_dest = data.pairs[:, 0], data.pairs[:, 1]
    n = data.exit_n[k_stage, :, k_dest]                                   # (K, G) timed exits
    n_all = data.choice_n[k_stage, :, k_dest]                             # (K, G) all exits
    with np.errstate(invalid="ignore", divide="ignore"):
        # logits: the spread from the log shares of the stays leaving to each destination,
        # the precision along each rotated coordinate (logit_rotation)
        share = n_all / data.entries[k_stage]
        logit_spread = _segment_spread(np.log(share), 1.0 / (n_all * (1.0 - share)), n_all, k_stage, weighted=True)
        logit_precision = _rotated_precision(data, logit_rotation(data))
        # time in stage: mean log t, with the pooled within-segment variance of each pair
        mean = data.exit_sum_log_t[k_stage, :, k_dest] / n
        within = data.exit_sum_log_t2[k_stage, :, k_dest] / n - mean ** 2
        var = np.nansum(n * within, axis=1, keepdims=True) / n.sum(axis=1, keepdims=True)
        loc_precision = n / np.maximum(var, 1e-3)
        loc_spread = _segment_spread(mean, 1.0 / loc_precision, n, k_stage, weighted=False)
    return np.stack([np.nan_to_num(logit_precision) * logit_spread[k_stage, None] >= precision_ratio,
                     np.nan_to_num(loc_precision) * loc_spread[k_stage, None] >= precision_ratio])


def logit_rotation(data: ModelData) -> np.ndarray:
    """(K, K) orthogonal, block-diagonal by stage: the coordinates the destination logits of
    each (stage, segment) are sampled in. Rows are the eigenvectors of the stage's Fisher
    information for its logits, pooled over segments (N (diag(p) - p p') for N stays and
    shares p). The logits of one stage are strongly correlated in the posterior (measured:
    up to 0.86 on the 100,000-deal benchmark): the data pin down which destination a deal
    leaves to far better than whether it leaves at all (against stalling), and a diagonal mass
    matrix cannot follow that. The rotation is exact (the segments' prior is isotropic around
    the pair means), so it changes the sampler's coordinates, not the model."""
    K = len(data.pairs)
    rotation = np.eye(K)
    for s in np.unique(data.pairs[:, 0]):
        ks = np.flatnonzero(data.pairs[:, 0] == s)
        _, vectors = np.linalg.eigh(_logit_information(data, s, ks).sum(axis=0))
        rotation[np.ix_(ks, ks)] = vectors.T
    return rotation


def _logit_information(data: ModelData, s: int, ks: np.ndarray) -> np.ndarray:
    """(G, A, A) Fisher information of the logits of stage ``s``'s destinations (pairs
    ``ks``) in each segment: N (diag(p) - p p'), N stays, p the shares that left to each."""
    entries = data.entries[s]                                             # (G,)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.nan_to_num(data.choice_n[s][:, data.pairs[ks, 1]] / entries[:, None])
    return entries[:, None, None] * (p[:, :, None] * np.eye(len(ks)) - p[:, :, None] * p[:, None, :])


def _rotated_precision(data: ModelData, rotation: np.ndarray) -> np.ndarray:
    """(K, G) data precision of each rotated logit coordinate in each segment: v' I v."""
    precision = np.zeros((len(data.pairs), len(data.segments)))
    for s in np.unique(data.pairs[:, 0]):
        ks = np.flatnonzero(data.pairs[:, 0] == s)
        vectors = rotation[np.ix_(ks, ks)]                                # rows: coordinates
        precision[ks] = np.einsum("ia,gab,ib->ig", vectors, _logit_information(data, s, ks), vectors)
    return precision


def _segment_spread(values: np.ndarray, sampling_var: np.ndarray, n: np.ndarray, k_stage: np.ndarray,
                    weighted: bool, min_n: float = 5.0) -> np.ndarray:
    """Per stage, the variance across segments of (pair, segment) ``values`` beyond what
    sampling explains, pooled over the stage's pairs; 0 unless Q, the chi-squared statistic of
    "no spread" (each pair's values around their precision-weighted mean), rejects it at
    :data:`SPREAD_TEST_LEVEL`. Only cells with at least ``min_n`` exits count, and pairs with
    at least 2 of them.

    ``weighted``: the DerSimonian-Laird estimate of random-effects meta-analysis,
    (Q - df) / (sum w - sum w² / sum w), weights w = 1 / sampling variance, so that rare
    destinations' noisy shares do not drown the spread of the common ones (used for the
    logits: the unweighted estimate called the spread 0 on the default CRM's Qualified stage,
    whose losses differ by segment, and its pair mean mixed poorly, R-hat 1.02). Otherwise a
    low plausible value: the unweighted moment estimate less one standard error
    (sqrt(2 / df) (estimate + sampling variance)), at least 0 (used for the time in stage,
    where the weighted estimate centred locations of the Olist funnel and it diverged)."""
    from scipy import stats

    ok = n >= min_n
    S = k_stage.max() + 1
    chi2, df, weight, excess, noise = (np.zeros(S) for _ in range(5))
    for k in range(len(k_stage)):
        x, v = values[k, ok[k]], sampling_var[k, ok[k]]
        if x.size >= 2:
            w = 1.0 / v
            s = k_stage[k]
            chi2[s] += (w * (x - (w * x).sum() / w.sum()) ** 2).sum()
            weight[s] += w.sum() - (w ** 2).sum() / w.sum()
            excess[s] += (x.size - 1) * (x.var(ddof=1) - v.mean())
            noise[s] += (x.size - 1) * v.mean()
            df[s] += x.size - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        if weighted:
            spread = (chi2 - df) / weight
        else:
            spread, noise = excess / df, noise / df
            spread = spread - np.sqrt(2.0 / df) * (np.maximum(spread, 0.0) + noise)
        significant = chi2 > stats.chi2.ppf(1.0 - SPREAD_TEST_LEVEL, np.maximum(df, 1))
    return np.where((df > 0) & significant, np.maximum(spread, 0.0), 0.0)
