"""The Bayesian funnel model: fit, check, summarise, save and load.

:class:`FunnelModel` takes the sufficient statistics of :mod:`funnelsim.data.stats` (or an event
log and a funnel definition), builds the PyMC model of :mod:`funnelsim.model.likelihood`, samples
it (nutpie by default), checks the fit on every run, and turns the posterior into the stage
table a revenue team reads: P(advance), P(lost), P(stall), P(win from stage entry), median
days in stage and expected days to close, each with a mean and a 90% interval.

The time-in-stage families are defined in :mod:`funnelsim.model.sojourn`, the checks of a fit
in :mod:`funnelsim.model.diagnostics`. Comparing the families: fit one model with
``sojourn="lognormal"`` and one with ``sojourn="weibull"`` on the same statistics and call
:func:`compare_sojourn` (:mod:`funnelsim.model.compare`, PSIS-LOO over the rows of the
statistics table).

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
from ..defaults import DRAWS, DRIFT_EVERY, TUNE
from . import derived
from .compare import compare_sojourn, pointwise_loglik
from .diagnostics import (
    DEFAULT_TARGET_ACCEPT,
    PARAMETER_MEANINGS,
    THRESHOLDS,
    ConvergenceWarning,
    check_fit,
    worst_parameters,
)
from .drift import cohort_model_data
from .likelihood import DEFAULT_CONFIG, build_pymc_model, centred_cells, model_data, model_inputs
from .sojourn import family as sojourn_family

# check_fit, worst_parameters, PARAMETER_MEANINGS, THRESHOLDS, ConvergenceWarning (diagnostics.py) and
# pointwise_loglik, compare_sojourn (compare.py) are importable from here too
__all__ = ["FunnelModel", "THRESHOLDS", "check_fit", "worst_parameters", "merge_config", "ConvergenceWarning", "compare_sojourn",
           "pointwise_loglik", "PARAMETER_MEANINGS", "DEFAULT_DRAWS", "DEFAULT_TUNE", "DEFAULT_TARGET_ACCEPT"]

# tuning steps per chain: nutpie adapts its step size and mass matrix quickly. With the pooling
# of likelihood.centred_cells, 300 (nutpie's own default) gives the 20-segment benchmark a
# minimum ESS above 1,500 of 4,000 draws, and 3,000-deal logs above 800; 500 did no better
DEFAULT_DRAWS, DEFAULT_TUNE = DRAWS, TUNE      # funnelsim.defaults: every fit's defaults
# p_advance + p_back + p_lost + p_stall = 1 (advance: a later stage or won; back: an earlier stage)
QUANTITIES = ("p_advance", "p_back", "p_lost", "p_stall", "p_win_from_entry", "median_days", "expected_days_to_close")
_COMPILED: dict[str, tuple] = {}   # model signature -> (the PyMC model, its compiled nutpie model)


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
        family = sojourn_family(sojourn)       # FunnelDataError for an unknown name
        if not isinstance(stats, StageStats):
            raise FunnelDataError(f"the model needs StageStats, not {type(stats).__name__}",
                                  hint="Build them with Snapshot(...).stage_stats or funnelsim.data.stats.to_stage_stats.")
        self.stats = stats
        self.amounts = amounts
        self.funnel = stats.funnel
        self.sojourn = family.name
        self.sojourn_family = family
        self.config = merge_config(DEFAULT_CONFIG, model_config or {})
        self.data = model_data(stats, self.funnel, bool(self.config["instant_stays"]),
                               float(self.config["absent_expected_exits"]))
        self.centred = centred_cells(self.data, self.config["pooling"], self.config["centred_precision_ratio"])
        # a funnel that drifts over entry cohorts (statistics split by cohort: funnelsim.model.drift)
        self.cohorts = None
        if stats.every is not None:
            self.cohorts = cohort_model_data(stats, self.data, bool(self.config["instant_stays"]),
                                             float(self.config["absent_expected_exits"]))
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
                    encoding: str | None = None, sheet: str | int | None = None, segment_from: str = "first",
                    every: str | None = DRIFT_EVERY, **kwargs) -> FunnelModel:
        """Read an event log (path, DataFrame or Ibis table) and build the model of the CRM as
        of ``as_of`` (see :class:`funnelsim.Snapshot`, also for ``every``, the drift's entry
        cohorts; the reading options as for :func:`funnelsim.read_events`)."""
        from ..data.snapshot import Snapshot

        snapshot = Snapshot.read(events, funnel, as_of=as_of, segment_by=segment_by, history_days=history_days,
                                 dayfirst=dayfirst, decimal=decimal, encoding=encoding, sheet=sheet,
                                 segment_from=segment_from, every=every)
        return cls.from_snapshot(snapshot, **kwargs)

    # ------------------------------------------------------------------ fitting

    @property
    def signature(self) -> str:
        """What fixes the compiled graph: shapes, destinations seen, priors (which cells are
        centred is data)."""
        d = self.data
        # exits shorter than the log's resolution: which pairs have them, and which pass straight
        # through, shape the graph (two logs with the same pairs but other instant pairs reused one
        # compiled graph and failed on its instant shares' shape)
        short = [d.short_log_t, d.instant_pairs.tolist(), d.passing_pairs.tolist()] if d.has_short else []
        cohorts = [] if self.cohorts is None else [self.cohorts.every, self.cohorts.size]
        return json.dumps([self.sojourn, self.config, d.stages, d.segments, d.pairs.tolist(), *short, *cohorts],
                          default=str)

    def build_model(self):
        """The PyMC model (a new one each call)."""
        return build_pymc_model(self.data, self.sojourn, self.config, self.centred, self.cohorts)

    def fit(self, draws: int = DEFAULT_DRAWS, tune: int = DEFAULT_TUNE, chains: int = 4, sampler: str = "nutpie",
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
        import pymc as pm
        import pytensor

        from ._nutpie import compile_model

        t0 = time.perf_counter()
        cached = _COMPILED.get(self.signature)
        if cached is None:
            # strict IEEE arithmetic: with fast-math, code compiled afresh and code loaded from
            # PyTensor's disk cache round differently, so the same seed gave other draws on a
            # machine's first fit than on later ones
            model = self.build_model()
            with pytensor.config.change_flags(numba__fastmath=False):
                compiled = compile_model(model)
            _COMPILED[self.signature] = (model, compiled)
        else:
            model, compiled = cached
            inputs = model_inputs(self.data, self.sojourn, self.centred, self.cohorts, bool(self.config["revival"]))
            compiled = compiled.with_data(**inputs)
            # the sampler starts from the PyMC model's initial point, which reads the model's own
            # data containers: without this a refit started where the first dataset's would, and
            # gave other draws than a fresh fit with the same seed
            with model:
                pm.set_data(inputs)
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
                if name in ("pi", *self.sojourn_family.params)}
        if "instant_share" in post.data_vars:      # (D, S, S+2): 0 for the pairs with no instant stays
            share = _stacked(post["instant_share"])
            S, E = len(self.data.stages), len(self.data.destinations) - 1
            dense = np.zeros((share.shape[0], S, E))
            instant = self.data.pairs[self.data.instant_pairs]
            dense[:, instant[:, 0], instant[:, 1]] = share
            flat["instant"] = dense
        if "revival_rate" in post.data_vars:       # (D, S) per day: dormant deals that revive
            flat["revival_rate"] = _stacked(post["revival_rate"])
        return flat

    def simulation_parameters(self, draws: int | None = None, seed: int = 0, horizon_days: float | None = None):
        """Posterior draws as :class:`funnelsim.sim.kernel.Parameters` for the simulator:
        ``draws`` evenly spaced draws of the fit (all by default), amount ratios drawn from
        their conjugate posterior with ``seed``. A drifting model (:mod:`funnelsim.model.drift`)
        gives each open deal's current stay its cohort's parameters and every stay entered
        during the horizon (``horizon_days``, days) a cohort projected that far by the walk."""
        from ..data.deals import ratio_draws, won_amount_quantiles
        from ..sim.kernel import Parameters
        from .drift import parameter_sets

        arrays = self.posterior_arrays()
        total = arrays["pi"].shape[0]
        pick = np.arange(total) if not draws or draws >= total else np.linspace(0, total - 1, draws).round().astype(int)
        first, second = (arrays[name][pick] for name in self.sojourn_family.params)
        segments = self.data.segments
        ratio_mean, ratio_sd = ratio_draws(self.amounts, segments, pick.size, seed)
        won_amounts = won_amount_quantiles(self.amounts, segments)
        instant = arrays["instant"][pick] if "instant" in arrays else None
        revival = ({"revival_rate": arrays["revival_rate"][pick], "revival_days": float(self.config["revival_days"])}
                   if "revival_rate" in arrays else {})
        pi, sets = arrays["pi"][pick], {}
        if self.cohorts is not None:
            sets = parameter_sets(self, pick, horizon_days, seed)
            pi, first = sets.pop("pi"), sets.pop("loc")
            sets.pop("projected_steps")
            ratio_mean, ratio_sd = ratio_mean[:, sets["segment_of"]], ratio_sd[:, sets["segment_of"]]
            won_amounts = won_amounts[sets["segment_of"]]
        loc, shape = self.sojourn_family.natural(first, second)
        return Parameters(pi=pi, family=self.sojourn, loc=loc, shape=shape,
                          instant=instant, short_t=float(np.exp(self.data.short_log_t)),
                          ratio_mean=ratio_mean, ratio_sd=ratio_sd, won_amounts=won_amounts, **sets, **revival)

    def sojourn_draws(self) -> derived.Sojourn:
        """The time in stage of every posterior draw (see :class:`funnelsim.model.derived.Sojourn`)."""
        return derived.Sojourn.from_posterior(self.sojourn_family, self.posterior_arrays(),
                                              float(np.exp(self.data.short_log_t)))

    def quantity_draws(self, pi=None, sojourn=None, weights=None, revival_rate=None) -> dict[str, np.ndarray]:
        """Each stage quantity per draw: (D, S, G) for segments and (D, S) for the whole funnel
        (segments weighted by their stays in the stage, or by ``weights`` (S, G)). ``pi`` and
        ``sojourn`` default to the posterior's (a drifting model's: the last cohort's). With
        dormant deals that revive (``model_config={"revival": True}``) the shares count the
        revivals where they end (:func:`funnelsim.model.derived.eventual_pi`; ``revival_rate``
        (D, S) per day, the posterior's with its ``pi``); the days are the active moves' (a
        revival's wait is not time in stage of the usual kind)."""
        if pi is None:
            arrays = self.posterior_arrays()
            pi, revival_rate = arrays["pi"], arrays.get("revival_rate")
        sojourn = self.sojourn_draws() if sojourn is None else sojourn
        S = len(self.funnel.stages)
        ends = derived.eventual_pi(pi, revival_rate, float(self.config["revival_days"]))
        later = np.triu(np.ones((S, S)), k=1)                      # [s, s'] = 1 if s' after s
        advance = np.einsum("dsgj,sj->dsg", ends[..., :S], later) + ends[..., S]
        back = np.einsum("dsgj,sj->dsg", ends[..., :S], later.T)
        per_segment = {
            "p_advance": advance, "p_back": back, "p_lost": ends[..., S + 1], "p_stall": ends[..., S + 2],
            "p_win_from_entry": derived.p_win_from_entry(ends),
            "median_days": derived.median_days(pi, sojourn),
            "expected_days_to_close": derived.expected_days_to_close(pi, sojourn),
        }
        weights = self.data.entries if weights is None else weights
        whole = {name: derived.mix_segments(values, weights) for name, values in per_segment.items()}
        whole["median_days"] = derived.whole_funnel_median_days(pi, sojourn, weights)
        return {"segment": per_segment, "whole": whole}

    def stage_table(self, prob: float = 0.9) -> pd.DataFrame:
        """Per stage, for the whole funnel (``segment`` None) and each segment: every
        quantity's posterior mean and equal-tailed ``prob`` interval (``_low``, ``_high``).
        Probabilities are shares (0-1); days are days."""
        rows = interval_rows(self.quantity_draws(), self.funnel.stages, self._segments(), self.data.entries,
                             QUANTITIES, prob, "stays")
        return pd.DataFrame(rows)

    def drift_summary(self, horizon_days: float | None = None) -> dict | None:
        """How a drifting model moves (None for a stationary one): ``every``, the ``cohorts``
        learnt from, ``projected_cohorts`` (how far the stays entered during ``horizon_days``
        are projected, in cohorts; see :func:`funnelsim.model.drift.projected_steps`) and the
        posterior mean step of the whole funnel's walks per cohort: ``conversion_step`` (logit)
        and ``speed_step`` (log days), and the spread of a cohort's own conversion shock,
        ``conversion_shock_sd``."""
        if self.cohorts is None:
            return None
        from .drift import projected_steps

        post = self._require_fit().posterior
        return {"every": self.cohorts.every, "cohorts": len(self.stats.cohorts),
                "projected_cohorts": projected_steps(self.cohorts, self.stats.as_of, horizon_days),
                "conversion_step": float(post["drift_conversion_step"].mean()),
                "speed_step": float(post["drift_speed_step"].mean()),
                "conversion_shock_sd": float(post["drift_conversion_shock_sd"].mean())}

    def cohort_table(self, prob: float = 0.9, draws: int = 500) -> pd.DataFrame:
        """A drifting model's funnel by entry cohort (see :func:`funnelsim.model.drift.cohort_table`)."""
        from .drift import cohort_table

        return cohort_table(self, prob, draws)

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
        """``{"stages": [...], "absent_destinations": [...], "diagnostics": {...}}`` as in
        docs/json.md (the absent destinations: :attr:`ModelData.absent_cells`)."""
        table = self.stage_table(prob)
        stages = [{"stage": r["stage"], "segment": r["segment"], "stays": r["stays"],
                   **{k: {"mean": r[k], "low": r[f"{k}_low"], "high": r[f"{k}_high"]} for k in QUANTITIES}}
                  for r in table.to_dict(orient="records")]
        diag = self.diagnostics
        return {"stages": stages, "absent_destinations": self.data.absent_cells, "diagnostics": {k: diag[k] for k in
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


def interval_rows(draws: dict, stages, segments, counts: np.ndarray, names, prob: float, count_name: str,
                  **fixed) -> list[dict]:
    """Table rows of :meth:`FunnelModel.quantity_draws`' ``draws``: for the whole funnel
    (``segment`` None) and each (index, name) of ``segments``, per stage, ``fixed`` columns
    first, the ``counts`` (S, G) as ``count_name``, then each quantity's mean and ``prob``
    interval (``_low``, ``_high``)."""
    rows = []
    for g, segment in [(None, None), *segments]:
        for s, stage in enumerate(stages):
            row = {**fixed, "stage": stage, "segment": segment,
                   count_name: int(counts[s].sum() if g is None else counts[s, g])}
            for name in names:
                values = draws["whole"][name][:, s] if g is None else draws["segment"][name][:, s, g]
                mean, low, high = derived.interval(values, prob)
                row |= {name: float(mean), f"{name}_low": float(low), f"{name}_high": float(high)}
            rows.append(row)
    return rows


def _stacked(array) -> np.ndarray:
    values = array.values
    return values.reshape(-1, *values.shape[2:])


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
