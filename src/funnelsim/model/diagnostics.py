"""Is a fit to be trusted? The sampler's diagnostics against thresholds, and where a failed fit fails.

:func:`check_fit` runs on every fit (:meth:`funnelsim.model.funnel_model.FunnelModel.fit`):
max R-hat, min bulk and tail ESS of the free parameters and the divergent transitions against
:data:`THRESHOLDS`, with what to do when they fail; :func:`worst_parameters` names the
parameters that mix worst in words a revenue team reads (:data:`PARAMETER_MEANINGS`).
"""

from __future__ import annotations

import numpy as np

from .sojourn import FAMILIES

__all__ = ["THRESHOLDS", "DEFAULT_TARGET_ACCEPT", "ConvergenceWarning", "check_fit", "worst_parameters",
           "PARAMETER_MEANINGS"]

THRESHOLDS = {"r_hat_max": 1.01, "ess_min": 400, "divergences": 0}
# the sampler's target acceptance rate: above nutpie's 0.8, whose longer steps left R-hat at
# 1.010-1.013 and a few divergences on 3,000-deal logs
DEFAULT_TARGET_ACCEPT = 0.9


class ConvergenceWarning(UserWarning):
    """The sampler's diagnostics failed their thresholds: do not trust this fit."""


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
    if target_accept is not None:       # a saved model's attributes come back from netCDF as text
        target_accept = float(target_accept)
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
    "instant_logit": "log-odds that a stay before {pair} is instant (shorter than the log's resolution)",
    "instant_logit_mean": "log-odds of an instant stay at {stage} (stage mean)",
    # a drifting funnel (funnelsim.model.drift)
    "drift_logit": "drift of the log-odds of {pair} in entry cohort {cohort} (from the cohorts' average)",
    "drift_logit_step": "step per cohort of the drift in conversion at {stage}",
    "drift_log_days": "drift of log days in stage before {pair} in entry cohort {cohort}",
    "drift_log_days_step": "step per cohort of the drift in days in stage at {stage}",
    "drift_conversion_step": "step per cohort of the whole funnel's drift in conversion",
    "drift_speed_step": "step per cohort of the whole funnel's drift in days in stage",
    "drift_conversion_shock_sd": "spread of one cohort's own shock to conversion (the whole funnel)",
    # each sojourn family's shape
    **{f.shape_variable: f.shape_meaning for f in FAMILIES.values()},
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
            pair = at.get("pair", at.get("mixed_pair", at.get("instant_pair")))
            stage, _, destination = (pair or at.get("stage", at.get("instant_stage", ""))).partition(" -> ")
            rows.append({"parameter": name, "stage": stage, "destination": destination or None,
                         "segment": at.get("segment"), "r_hat": float(r_hat[name].values[index]),
                         "ess_bulk": float(ess[name].values[index]),
                         "meaning": PARAMETER_MEANINGS[name].format(pair=pair, stage=stage,
                                                                     segment=at.get("segment"),
                                                                     cohort=at.get("cohort"))})
    rows.sort(key=lambda r: (-np.nan_to_num(r["r_hat"], nan=np.inf), np.nan_to_num(r["ess_bulk"], nan=-1.0)))
    return rows[:n]


def _is_free(name: str, posterior) -> bool:
    """Free parameters (not deterministic transforms) of the posterior."""
    return name in ("alpha", "alpha_spread", "log_days", "log_days_spread", "instant_logit", "instant_logit_mean",
                    "drift_logit_step", "drift_log_days_step", "drift_conversion_step", "drift_speed_step",
                    "drift_conversion_shock_sd", *(f.shape_variable for f in FAMILIES.values())) or name.endswith("_raw")


def _extreme(dataset, pick) -> float:
    values = [float(getattr(np, "nanmax" if pick is max else "nanmin")(dataset[v].values))
              for v in dataset.data_vars if dataset[v].size]
    return float(pick(values)) if values else float("nan")
