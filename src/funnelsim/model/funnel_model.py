"""The Bayesian funnel model: fit, check, summarise, save and load.

:class:`FunnelModel` takes the sufficient statistics of :mod:`funnelsim.data.stats` (or an event
log and a funnel definition), builds the PyMC model of :mod:`funnelsim.model.likelihood`, samples
it (nutpie by default), checks the fit on every run, and turns the posterior into the stage
table a revenue team reads: P(advance), P(lost), P(stall), P(win from stage entry), median
days in stage and expected days to close, each with a mean and a 90% interval.

Comparing the two time-in-stage families: fit one model with ``sojourn="lognormal"`` and
one with ``sojourn="weibull"`` on the same statistics and call :func:`compare_sojourn`, which
runs PSIS-LOO (ArviZ) over the rows of the statistics table.

Compiling the model takes longer than sampling it for small data, so a compiled model is
kept per process for each model shape (stages, segments, destinations seen, priors)
and refitting new statistics of the same shape only swaps the data.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .._signals import interrupts_raised
from ..data.events import FunnelDataError, FunnelDefinition
from ..data.stats import StageStats
from . import derived
from .likelihood import DEFAULT_CONFIG, build_pymc_model, centred_cells, model_data, model_inputs, stats_hash

__all__ = ["FunnelModel", "THRESHOLDS", "check_fit", "worst_parameters", "merge_config", "ConvergenceWarning", "compare_sojourn",
           "pointwise_loglik"]

THRESHOLDS = {"r_hat_max": 1.01, "ess_min": 400, "divergences": 0}
# tuning steps per chain: nutpie adapts its step size and mass matrix quickly. With the pooling
# of likelihood.centred_cells, 300 (nutpie's own default) gives the 20-segment benchmark a
# minimum ESS above 1,500 of 4,000 draws, and 3,000-deal logs above 800; 500 did no better
DEFAULT_TUNE = 300
# the sampler's target acceptance rate: above nutpie's 0.8, whose longer steps left R-hat at
# 1.010-1.013 and a few divergences on 3,000-deal logs
DEFAULT_TARGET_ACCEPT = 0.9
QUANTITIES = ("p_advance", "p_lost", "p_stall", "p_win_from_entry", "median_days", "expected_days_to_close")
_COMPILED: dict[str, object] = {}   # model signature -> compiled nutpie model


class ConvergenceWarning(UserWarning):
    """The sampler's diagnostics failed their thresholds: do not trust this fit."""


class FunnelModel:
    """Censored competing-risks funnel model with stalls, pooled across segments.

    Parameters
    ----------
    stats : StageStats
        From :func:`funnelsim.data.stats.to_stage_stats` or :attr:`funnelsim.Snapshot.stage_stats`
        (they carry the funnel).
    sojourn : "lognormal" or "weibull"
        Family of time in stage given the destination.
    model_config : dict, optional
        Merged over :data:`funnelsim.model.likelihood.DEFAULT_CONFIG` (priors and pooling).
    amounts : DataFrame, optional
        From :func:`funnelsim.data.deals.amount_stats`: won amounts and the ratio of realised
        to last open amount per segment, for forecasts in currency (conjugate, see
        :func:`funnelsim.data.deals.ratio_draws`). Without it, a won deal is worth its last
        amount and deals with no amount are worth 0.

    Use :meth:`from_events` to start from an event log.
    """

    def __init__(self, stats: StageStats, *, amounts: pd.DataFrame | None = None, sojourn: str = "lognormal",
                 model_config: dict | None = None):
        if sojourn not in ("lognormal", "weibull"):
            raise FunnelDataError(f"unknown sojourn family {sojourn!r}", hint="Use 'lognormal' or 'weibull'.")
        if not isinstance(stats, StageStats):
            raise FunnelDataError(f"the model needs StageStats, not {type(stats).__name__}",
                                  hint="Build them with Snapshot(...).stage_stats or funnelsim.data.stats.to_stage_stats.")
        self.stats = stats
        self.amounts = amounts
        self.funnel = stats.funnel
        self.sojourn = sojourn
        self.config = merge_config(DEFAULT_CONFIG, model_config or {})
        self.data = model_data(stats, self.funnel)
        self.centred = centred_cells(self.data, self.config["pooling"], self.config["centred_precision_ratio"])
        self.idata = None
        self._diagnostics: dict | None = None
        self.timings: dict[str, float] = {}

    @classmethod
    def from_snapshot(cls, snapshot, **kwargs) -> FunnelModel:
        """The model of a :class:`funnelsim.Snapshot`: its stage statistics (of the stays in its
        history window) and its won amounts; ``kwargs`` as for the constructor."""
        return cls(snapshot.stage_stats, amounts=snapshot.amounts, **kwargs)

    @classmethod
    def from_events(cls, events, funnel: FunnelDefinition, *, as_of=None, segment_by: str | None = None,
                    dayfirst: bool = False, decimal: str = ".", history_days: float | None = None,
                    **kwargs) -> FunnelModel:
        """Read an event log (path, DataFrame or Ibis table) and build the model of the CRM as
        of ``as_of`` (see :class:`funnelsim.Snapshot`)."""
        from ..data.snapshot import Snapshot

        snapshot = Snapshot.read(events, funnel, as_of=as_of, segment_by=segment_by, history_days=history_days,
                                 dayfirst=dayfirst, decimal=decimal)
        return cls.from_snapshot(snapshot, **kwargs)

    # ------------------------------------------------------------------ fitting

    @property
    def signature(self) -> str:
        """What fixes the compiled graph: shapes, destinations seen, priors (which cells are
        centred is data)."""
        d = self.data
        return json.dumps([self.sojourn, self.config, d.stages, d.segments, d.pairs.tolist()], default=str)

    def build_model(self):
        """The PyMC model (a new one each call)."""
        return build_pymc_model(self.data, self.sojourn, self.config, self.centred)

    def fit(self, draws: int = 1000, tune: int = DEFAULT_TUNE, chains: int = 4, sampler: str = "nutpie",
            random_seed: int | None = None, target_accept: float = DEFAULT_TARGET_ACCEPT, progressbar: bool = False):
        """Sample the posterior; returns (and keeps as ``idata``) an ArviZ DataTree.

        Diagnostics are checked on every fit (``diagnostics``); a fit that fails them emits a
        :class:`ConvergenceWarning` and has ``converged`` False.
        """
        start = time.perf_counter()
        if sampler == "nutpie":
            idata = self._fit_nutpie(draws, tune, chains, random_seed, target_accept, progressbar)
        elif sampler in ("pymc", "numpyro"):
            idata = self._fit_pymc(draws, tune, chains, sampler, random_seed, target_accept, progressbar)
        else:
            raise FunnelDataError(f"unknown sampler {sampler!r}", hint="Use 'nutpie', 'pymc' or 'numpyro'.")
        self.timings["seconds"] = time.perf_counter() - start
        self.timings["sample_s"] = self.timings["seconds"] - self.timings.get("compile_s", 0.0)
        idata.attrs["funnelsim_sampler"] = sampler
        idata.attrs["funnelsim_target_accept"] = float(target_accept)
        self.idata, self._diagnostics = idata, check_fit(idata)   # once, when the fit ends
        report = self._diagnostics
        if not report["converged"]:
            where = "; ".join(f"{w['parameter']} ({w['meaning']}) R-hat {w['r_hat']:.2f}" for w in report["worst"])
            warnings.warn(f"the fit failed its diagnostics: {report['problems']}; mixing worst: {where}; do not forecast from it "
                          f"({report['advice']})", ConvergenceWarning, stacklevel=2)
        return idata

    def _fit_nutpie(self, draws, tune, chains, seed, target_accept, progressbar):
        import nutpie
        import pytensor

        from ._nutpie import compile_model

        t0 = time.perf_counter()
        compiled = _COMPILED.get(self.signature)
        if compiled is None:
            # strict IEEE arithmetic: with fast-math, code compiled afresh and code loaded from
            # PyTensor's disk cache round differently, so the same seed gave other draws on a
            # machine's first fit than on later ones
            with pytensor.config.change_flags(numba__fastmath=False):
                compiled = compile_model(self.build_model())
            _COMPILED[self.signature] = compiled
        else:
            compiled = compiled.with_data(**model_inputs(self.data, self.sojourn, self.centred))
        self.timings["compile_s"] = time.perf_counter() - t0
        # not blocking: nutpie's blocking sample() catches a KeyboardInterrupt (Ctrl-C, a Jupyter
        # interrupt) and returns the draws made so far, which would then be checked, saved and
        # forecast from as if the fit had ended. Its wait() raises the interrupt instead; the
        # draws are the same as blocking's (the same sampler, waited on the same way)
        sampler = nutpie.sample(compiled, draws=draws, tune=tune, chains=chains, cores=min(chains, 2),
                                seed=seed, progress_bar=progressbar, target_accept=target_accept,
                                save_warmup=False, blocking=False)
        try:
            return sampler.wait()
        except BaseException:
            with contextlib.suppress(Exception):   # stop the sampler's threads; the interrupt is what to report
                sampler.cancel()
            raise

    def _fit_pymc(self, draws, tune, chains, sampler, seed, target_accept, progressbar):
        import pymc as pm

        t0 = time.perf_counter()
        model = self.build_model()
        self.timings["compile_s"] = time.perf_counter() - t0
        try:
            with model, interrupts_raised():
                return pm.sample(draws=draws, tune=tune, chains=chains, cores=min(chains, 2), random_seed=seed,
                                 nuts_sampler=sampler, target_accept=target_accept, progressbar=progressbar,
                                 compute_convergence_checks=False)
        except ImportError as exc:
            raise FunnelDataError(f"the {sampler} sampler is not installed ({exc})",
                                  hint="Use --sampler nutpie (the default) or install its packages.") from None

    # ------------------------------------------------------------------ checks

    @property
    def diagnostics(self) -> dict:
        """Max R-hat, min bulk and tail ESS and divergences of the free parameters, against
        :data:`THRESHOLDS`; ``converged`` says whether all hold. Computed once, when the fit
        ends (see :func:`check_fit`); a loaded model computes them on first read."""
        if self._diagnostics is None:
            self._diagnostics = check_fit(self._require_fit())
        return self._diagnostics

    def _require_fit(self):
        if self.idata is None:
            raise RuntimeError("the model is not fitted yet: call fit() first")
        return self.idata

    # ------------------------------------------------------------------ results

    def posterior_arrays(self) -> dict[str, np.ndarray]:
        """Posterior draws as plain arrays with (chain, draw) stacked into one axis:
        ``pi`` (D, S, G, S+3) and the time-in-stage parameters (see :mod:`funnelsim.model.derived`)."""
        post = self._require_fit().posterior
        flat = {name: _stacked(post[name]) for name in post.data_vars
                if name in ("pi", "mu", "sigma", "log_scale", "shape_k")}
        return flat

    def simulation_parameters(self, draws: int | None = None, seed: int = 0):
        """Posterior draws as :class:`funnelsim.sim.kernel.Parameters` for the simulator:
        ``draws`` evenly spaced draws of the fit (all by default), amount ratios drawn from
        their conjugate posterior with ``seed``."""
        from ..data.deals import ratio_draws, won_amount_quantiles
        from ..sim.kernel import Parameters

        arrays = self.posterior_arrays()
        total = arrays["pi"].shape[0]
        pick = np.arange(total) if not draws or draws >= total else np.linspace(0, total - 1, draws).round().astype(int)
        if self.sojourn == "lognormal":
            loc, shape = arrays["mu"][pick], arrays["sigma"][pick]
        else:
            loc, shape = np.exp(arrays["log_scale"][pick]), arrays["shape_k"][pick]
        segments = self.data.segments
        ratio_mean, ratio_sd = ratio_draws(self.amounts, segments, pick.size, seed)
        return Parameters(pi=arrays["pi"][pick], family=self.sojourn, loc=loc, shape=shape,
                          ratio_mean=ratio_mean, ratio_sd=ratio_sd,
                          won_amounts=won_amount_quantiles(self.amounts, segments))

    def sojourn_draws(self) -> derived.Sojourn:
        arrays = self.posterior_arrays()
        if self.sojourn == "lognormal":
            return derived.Sojourn.lognormal(arrays["mu"], arrays["sigma"])
        return derived.Sojourn.weibull(arrays["shape_k"], np.exp(arrays["log_scale"]))

    def quantity_draws(self) -> dict[str, np.ndarray]:
        """Each stage quantity per draw: (D, S, G) for segments and (D, S) for the whole funnel
        (segments weighted by their stays in the stage)."""
        pi = self.posterior_arrays()["pi"]
        sojourn = self.sojourn_draws()
        S = len(self.funnel.stages)
        later = np.triu(np.ones((S, S)), k=1)                      # [s, s'] = 1 if s' after s
        advance = np.einsum("dsgj,sj->dsg", pi[..., :S], later) + pi[..., S]
        per_segment = {
            "p_advance": advance, "p_lost": pi[..., S + 1], "p_stall": pi[..., S + 2],
            "p_win_from_entry": derived.p_win_from_entry(pi),
            "median_days": derived.median_days(pi, sojourn),
            "expected_days_to_close": derived.expected_days_to_close(pi, sojourn),
        }
        weights = self.data.entries
        whole = {name: derived.mix_segments(values, weights) for name, values in per_segment.items()}
        whole["median_days"] = derived.whole_funnel_median_days(pi, sojourn, weights)
        return {"segment": per_segment, "whole": whole}

    def stage_table(self, prob: float = 0.9) -> pd.DataFrame:
        """Per stage, for the whole funnel (``segment`` None) and each segment: every
        quantity's posterior mean and equal-tailed ``prob`` interval (``_low``, ``_high``).
        Probabilities are shares (0-1); days are days."""
        draws = self.quantity_draws()
        rows = []
        for g, segment in [(None, None), *self._segments()]:
            for s, stage in enumerate(self.funnel.stages):
                row = {"stage": stage, "segment": segment,
                       "stays": int(self.data.entries[s].sum() if g is None else self.data.entries[s, g])}
                for name in QUANTITIES:
                    values = draws["whole"][name][:, s] if g is None else draws["segment"][name][:, s, g]
                    mean, low, high = derived.interval(values, prob)
                    row |= {name: float(mean), f"{name}_low": float(low), f"{name}_high": float(high)}
                rows.append(row)
        return pd.DataFrame(rows)

    def where_deals_are_lost(self, prob: float = 0.9) -> pd.DataFrame:
        """Stages ranked by their share of eventual losses (lost or stalled) of deals entering
        the top of the funnel — the bottleneck to fix first. Whole funnel (segments weighted
        by their stays at the top) and per segment."""
        pi = self.posterior_arrays()["pi"]
        shares = derived.loss_shares(pi)                           # (D, S, G)
        top = self.data.entries[0]
        whole = (shares * (top / top.sum())[None, None, :]).sum(axis=2) if top.sum() else shares.mean(axis=2)
        rows = []
        for segment, values in [(None, whole), *((g, shares[:, :, i]) for i, g in self._segments())]:
            for s, stage in enumerate(self.funnel.stages):
                mean, low, high = derived.interval(values[:, s], prob)
                rows.append({"segment": segment, "stage": stage, "loss_share": float(mean),
                             "loss_share_low": float(low), "loss_share_high": float(high)})
        table = pd.DataFrame(rows)
        table["rank"] = table.groupby("segment", dropna=False)["loss_share"].rank(ascending=False, method="first").astype(int)
        return table.sort_values(["segment", "rank"], na_position="first", ignore_index=True)

    def _segments(self) -> list[tuple[int, str]]:
        """(index, name) of the segments to list beside the whole funnel: none when the
        model was not split by segment."""
        from ..data.spells import NO_SEGMENT

        if self.data.segments == (NO_SEGMENT,):
            return []
        return list(enumerate(self.data.segments))

    def to_dict(self, prob: float = 0.9) -> dict:
        """``{"stages": [...], "diagnostics": {...}}`` as in DESIGN.md's JSON contract."""
        table = self.stage_table(prob)
        keys = ("p_advance", "p_lost", "p_stall", "p_win_from_entry", "median_days", "expected_days_to_close")
        stages = [{"stage": r["stage"], "segment": r["segment"], "stays": r["stays"],
                   **{k: {"mean": r[k], "low": r[f"{k}_low"], "high": r[f"{k}_high"]} for k in keys}}
                  for r in table.to_dict(orient="records")]
        diag = self.diagnostics
        return {"stages": stages, "diagnostics": {k: diag[k] for k in
                ("r_hat_max", "ess_bulk_min", "ess_tail_min", "divergences", "sampler", "converged", "problems")}}

    # ------------------------------------------------------------------ save / load

    def save(self, path) -> Path:
        """Write ``path/posterior.nc`` (netCDF: posterior, sample stats and the training
        statistics) and ``path/model.json`` (funnel, config, statistics hash, versions).
        Nothing is pickled."""
        from .persist import save_model

        return save_model(self, Path(path))

    @classmethod
    def load(cls, path, stats: StageStats | None = None) -> FunnelModel:
        """Rebuild a saved model. With ``stats``, refuse (FunnelDataError) if they are not
        the statistics the model was fitted on."""
        from .persist import load_model

        return load_model(cls, Path(path), stats)


def _is_free(name: str, posterior) -> bool:
    """Free parameters (not deterministic transforms) of the posterior."""
    return name in ("alpha", "alpha_spread", "log_days", "log_days_spread", "sigma_t", "log_shape") or \
        name.endswith("_raw")


def _extreme(dataset, pick) -> float:
    values = [float(getattr(np, "nanmax" if pick is max else "nanmin")(dataset[v].values))
              for v in dataset.data_vars if dataset[v].size]
    return float(pick(values)) if values else float("nan")


def _stacked(array) -> np.ndarray:
    values = array.values
    return values.reshape(-1, *values.shape[2:])


# --------------------------------------------------------------------------- comparing families

def pointwise_loglik(stats: StageStats, data, sojourn: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Log-likelihood of each row of the statistics table (a group of stays sharing stage,
    segment, destination and duration bin) per posterior draw: (draws, rows). ``arrays``
    are :meth:`FunnelModel.posterior_arrays`. Exits use the row's Σ log t and Σ (log t)²
    (LogNormal) or its mean log t (Weibull); open rows their mean log age. The rows sum to
    the model's likelihood; they are the observations LOO leaves out."""
    from scipy import special

    d = data
    stats = stats.table
    s = stats["stage"].map({x: i for i, x in enumerate(d.stages)}).to_numpy()
    g = stats["segment"].map({x: i for i, x in enumerate(d.segments)}).to_numpy()
    j = stats["destination"].map({x: i for i, x in enumerate(d.destinations)}).fillna(-1).to_numpy(int)
    n, s1, s2, m = (stats[c].to_numpy(float) for c in ("n", "sum_log_t", "sum_log_t2", "mean_log_t"))
    is_open = j < 0
    pi = arrays["pi"]
    E = len(d.destinations) - 1
    if sojourn == "lognormal":
        loc, scale = arrays["mu"], arrays["sigma"]
    else:
        loc, scale = arrays["log_scale"], arrays["shape_k"]
    out = np.empty((pi.shape[0], len(stats)))
    x = ~is_open
    jx = j[x]
    lam, sig = loc[:, s[x], g[x], jx], scale[:, s[x], jx]
    choice = n[x] * np.log(np.maximum(pi[:, s[x], g[x], jx], 1e-300))
    if sojourn == "lognormal":
        times = (-n[x] * (np.log(sig) + 0.5 * np.log(2 * np.pi)) - s1[x]
                 - (s2[x] - 2 * lam * s1[x] + n[x] * lam**2) / (2 * sig**2))
    else:
        times = n[x] * (np.log(sig) - sig * lam + (sig - 1) * m[x] - np.exp(sig * (m[x] - lam)))
    out[:, x] = choice + times
    o = is_open
    lam, sig = loc[:, s[o], g[o], :], scale[:, s[o], :]
    if sojourn == "lognormal":
        surv = special.ndtr(-(m[o][None, :, None] - lam) / sig)
    else:
        surv = np.exp(-np.exp(sig * (m[o][None, :, None] - lam)))
    mix = (pi[:, s[o], g[o], :E] * surv).sum(axis=-1) + pi[:, s[o], g[o], E]
    out[:, o] = n[o] * np.log(mix)
    return out


def compare_sojourn(*models: FunnelModel) -> pd.DataFrame:
    """Compare fitted models (typically ``sojourn="lognormal"`` and ``"weibull"`` on the same
    statistics) by PSIS-LOO over the rows of the statistics table; ArviZ's comparison table,
    best first (higher ``elpd`` is better; see ``weight`` and ``dse``)."""
    import arviz as az
    import xarray as xr

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


def check_fit(idata) -> dict:
    """The diagnostics of a posterior: max R-hat, min bulk and tail ESS of the free parameters
    and the divergent transitions, against :data:`THRESHOLDS`, with what to do when they fail."""
    import arviz as az

    free = [v for v in idata.posterior.data_vars if _is_free(v, idata.posterior)]
    post = idata.posterior.to_dataset()[free]
    r_hat = _extreme(az.rhat(post), max)
    ess_bulk = _extreme(az.ess(post, method="bulk"), min)
    ess_tail = _extreme(az.ess(post, method="tail"), min)
    divergences = int(idata.sample_stats["diverging"].sum()) if "sample_stats" in idata.children else 0
    problems = []
    if not r_hat <= THRESHOLDS["r_hat_max"]:
        problems.append(f"max R-hat {r_hat:.3f} > {THRESHOLDS['r_hat_max']}")
    if not min(ess_bulk, ess_tail) >= THRESHOLDS["ess_min"]:
        problems.append(f"min ESS {min(ess_bulk, ess_tail):.0f} < {THRESHOLDS['ess_min']}")
    advice = ["sample longer (more tune and draws)"] if problems else []
    target_accept = idata.attrs.get("funnelsim_target_accept")
    if divergences > THRESHOLDS["divergences"]:
        problems.append(f"{divergences} divergent transitions")
        # divergences come from steps too long for the posterior's curvature: smaller ones help
        advice.append("take smaller steps (target_accept above "
                      f"{target_accept or DEFAULT_TARGET_ACCEPT:g}, e.g. 0.95)")
    return {"r_hat_max": r_hat, "ess_bulk_min": ess_bulk, "ess_tail_min": ess_tail,
            "divergences": divergences, "sampler": idata.attrs.get("funnelsim_sampler", "nutpie"),
            "target_accept": target_accept, "converged": not problems, "problems": problems,
            "advice": " and ".join(advice), "thresholds": dict(THRESHOLDS),
            "worst": worst_parameters(idata) if problems else []}


# what each named parameter means, for the message of a fit that fails its checks
PARAMETER_MEANINGS = {
    "alpha": "log-odds of {pair} against stalling (stage mean)",
    "eta": "log-odds of {pair} against stalling, segment {segment}",
    "alpha_spread": "spread of conversion across segments at {stage}",
    "log_days": "log days in stage before {pair} (stage mean)",
    "loc": "log days in stage before {pair}, segment {segment}",
    "log_days_spread": "spread of days in stage across segments at {stage}",
    "sigma_t": "LogNormal scale of days in stage before {pair}",
    "log_shape": "Weibull log shape of days in stage before {pair}",
}


def worst_parameters(idata, n: int = 3) -> list[dict]:
    """The ``n`` named parameters that mix worst (highest R-hat, then lowest bulk ESS), each
    with its stage, destination and segment and what it means: where a failed fit fails."""
    import arviz as az

    post = idata.posterior.to_dataset()
    names = [v for v in PARAMETER_MEANINGS if v in post.data_vars and post[v].size]
    if not names:
        return []
    r_hat, ess = az.rhat(post[names]), az.ess(post[names], method="bulk")
    rows = []
    for name in names:
        coords = {dim: r_hat[name][dim].values for dim in r_hat[name].dims}
        for index in np.ndindex(r_hat[name].shape):
            at = {dim: str(coords[dim][i]) for dim, i in zip(r_hat[name].dims, index, strict=True)}
            stage, _, destination = at.get("pair", at.get("stage", "")).partition(" -> ")
            rows.append({"parameter": name, "stage": stage, "destination": destination or None,
                         "segment": at.get("segment"), "r_hat": float(r_hat[name].values[index]),
                         "ess_bulk": float(ess[name].values[index]),
                         "meaning": PARAMETER_MEANINGS[name].format(pair=at.get("pair"), stage=stage,
                                                                     segment=at.get("segment"))})
    rows.sort(key=lambda r: (-np.nan_to_num(r["r_hat"], nan=np.inf), np.nan_to_num(r["ess_bulk"], nan=-1.0)))
    return rows[:n]


def merge_config(defaults: dict, overrides: dict) -> dict:
    """``defaults`` with ``overrides`` merged in key by key, into nested dicts too, so that
    ``{"logit_mean": {"sigma": 3.0}}`` keeps the default ``mu``. An unknown key is an error
    naming the known ones (a typo would otherwise be ignored silently)."""
    merged = dict(defaults)
    for key, value in overrides.items():
        if key not in defaults:
            raise FunnelDataError(f"unknown model_config key {key!r}",
                                  hint=f"Known keys: {', '.join(defaults)}.")
        if isinstance(defaults[key], dict):
            if not isinstance(value, dict):
                raise FunnelDataError(f"model_config[{key!r}] must be a dict like {defaults[key]!r}", value=value)
            merged[key] = merge_config(defaults[key], value)
        else:
            merged[key] = value
    return merged
