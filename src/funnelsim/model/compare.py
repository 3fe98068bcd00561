"""Comparing the time-in-stage families: PSIS-LOO over the rows of the statistics table.

Fit one model with ``sojourn="lognormal"`` and one with ``sojourn="weibull"`` on the same
statistics and call :func:`compare_sojourn`; :func:`pointwise_loglik` gives each row's
log-likelihood per draw (the rows sum to the model's likelihood).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..data.events import FunnelDataError
from ..data.stats import SHORT_BIN, StageStats
from .likelihood import stats_hash
from .sojourn import family as sojourn_family

__all__ = ["pointwise_loglik", "compare_sojourn"]


def pointwise_loglik(stats: StageStats, data, sojourn: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Log-likelihood of each row of the statistics table (a group of stays sharing stage,
    segment, destination and duration bin) per posterior draw: (draws, rows). ``arrays``
    are :meth:`FunnelModel.posterior_arrays`. Exits use the row's Σ log t and Σ (log t)²
    (LogNormal) or its mean log t (Weibull); open rows their mean log age. The rows sum to
    the model's likelihood; they are the observations LOO leaves out."""
    family = sojourn_family(sojourn)
    d = data
    stats = stats.table
    s = stats["stage"].map({x: i for i, x in enumerate(d.stages)}).to_numpy()
    g = stats["segment"].map({x: i for i, x in enumerate(d.segments)}).to_numpy()
    j = stats["destination"].map({x: i for i, x in enumerate(d.destinations)}).fillna(-1).to_numpy(int)
    n, s1, s2, m = (stats[c].to_numpy(float) for c in ("n", "sum_log_t", "sum_log_t2", "mean_log_t"))
    is_open = j < 0
    # instant stays (a model fitted with them): short exits apart, the timed part truncated
    short = ~is_open & (stats["bin"].to_numpy() == SHORT_BIN) & d.has_short
    pi = arrays["pi"]
    E = len(d.destinations) - 1
    loc, scale = (arrays[name] for name in family.params)
    h = arrays.get("instant")                           # (D, S, E) or None
    out = np.empty((pi.shape[0], len(stats)))

    def timed_factor(rows, lam, sig):                   # log(1 - h) - log S(r), 0 without instant stays
        if h is None:
            return 0.0
        hj = h[:, s[rows], j[rows]] if lam.ndim == 2 else h[:, s[rows], :]
        return np.log1p(-hj) - np.where(hj > 0, family.log_sf(d.short_log_t, lam, sig), 0.0)

    x = ~is_open & ~short
    jx = j[x]
    lam, sig = loc[:, s[x], g[x], jx], scale[:, s[x], jx]
    choice = n[x] * np.log(np.maximum(pi[:, s[x], g[x], jx], 1e-300))
    times = family.exit_terms(np, n[x], s1[x], s2[x], m[x], lam, sig)
    out[:, x] = choice + times + n[x] * timed_factor(x, lam, sig)
    if short.any():      # instant: log pi_j + log h_j
        k = short
        out[:, k] = n[k] * (np.log(np.maximum(pi[:, s[k], g[k], j[k]], 1e-300)) + np.log(h[:, s[k], j[k]]))
    o = is_open
    lam, sig = loc[:, s[o], g[o], :], scale[:, s[o], :]
    if h is None:
        surv = family.survival(m[o][None, :, None], lam, sig)
    else:        # (1 - h) S(a) / S(r), in logs
        surv = np.exp(family.log_sf(m[o][None, :, None], lam, sig) + timed_factor(o, lam, sig))
    mix = (pi[:, s[o], g[o], :E] * surv).sum(axis=-1) + pi[:, s[o], g[o], E]
    out[:, o] = n[o] * np.log(mix)
    return out


def compare_sojourn(*models) -> pd.DataFrame:
    """Compare fitted models (typically ``sojourn="lognormal"`` and ``"weibull"`` on the same
    statistics) by PSIS-LOO over the rows of the statistics table; ArviZ's comparison table,
    best first (higher ``elpd`` is better; see ``weight`` and ``dse``). ``models`` are
    fitted :class:`funnelsim.model.funnel_model.FunnelModel` objects."""
    import arviz as az
    import xarray as xr

    if any(getattr(m, "cohorts", None) is not None for m in models):
        raise FunnelDataError("LOO compares stationary models: a drifting model's cohorts are not in its pointwise "
                              "likelihood yet", hint="Fit both families with --drift none (Snapshot(every=None)).")
    hashes = {stats_hash(m.stats) for m in models}
    if len(hashes) != 1:
        raise FunnelDataError("the models were fitted on different statistics; LOO can only compare "
                              "models of the same data", hint="Fit both families on the same log.")
    trees = {}
    for model in models:
        idata = model._require_fit()
        chains, draws = idata.posterior.sizes["chain"], idata.posterior.sizes["draw"]
        ll = pointwise_loglik(model.stats, model.data, model.sojourn, model.posterior_arrays())
        ll = ll.reshape(chains, draws, -1)
        tree = xr.DataTree.from_dict({
            "posterior": idata.posterior.to_dataset(),
            "log_likelihood": xr.Dataset({"stats_row": (("chain", "draw", "row"), ll)}),
        })
        trees[model.sojourn] = tree
    return az.compare(trees)
