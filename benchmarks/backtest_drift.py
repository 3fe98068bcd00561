"""Backtests of the drifting funnel against the stationary one (issue 20): coverage, CRPS, PIT.

Prints one JSON line per (log, --drift): the pipeline's and the total's 80% coverage over the
origins, mean CRPS, the PIT's Kolmogorov-Smirnov p-value, the total's CRPS skill against the
run-rate and ETS baselines, and the fits that converged. Logs: ``synth-drift`` (a synthetic
funnel whose conversion drifts down 0.05 logit a month with monthly shocks, seeds 2, 3),
``synth`` (stationary, seed 1) and ``olist`` (the 8 origins of notebook 03).

    python benchmarks/backtest_drift.py [--logs synth-drift,synth,olist] [--drift none,month]
                                        [--draws 500] [--chains 2] [--deals 8000]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings


def logs(names, deals):
    import pandas as pd

    from funnelsim.data import synth
    from funnelsim.data.events import FunnelDefinition
    from funnelsim.data.olist import FUNNEL_KWARGS, olist_data_dir, olist_events

    for name in names:
        if name == "olist":
            events, _ = olist_events(olist_data_dir())
            yield (name, events, FunnelDefinition(**FUNNEL_KWARGS), pd.date_range("2018-01-31", "2018-08-31", freq="ME"),
                   {"horizon_days": 60, "deal_value": 1.0}, {"dayfirst": True})
            continue
        drifting = name == "synth-drift"
        cfg = synth.SynthConfig(**({"drift_per_month": -0.05, "shock_sd": 0.2, "shock_speed_sd": 0.1} if drifting else {}))
        for seed in ((2, 3) if drifting else (1,)):
            events, _ = synth.generate(deals, seed=seed, config=cfg)
            yield (f"{name}-{seed}", events, FunnelDefinition(cfg.stages, cfg.won, cfg.lost),
                   pd.date_range("2024-10-31", "2025-09-30", freq="ME"), {"horizon_days": 90, "segment_by": "segment"}, {})


def main() -> None:
    from funnelsim.sim.backtest import BacktestSettings, backtest

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", default="synth-drift,synth,olist")
    parser.add_argument("--drift", default="none,month")
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--deals", type=int, default=8000)
    parser.add_argument("--sojourn", default="lognormal")
    parser.add_argument("--config", default=None, help="JSON merged over the model's config")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    for name, events, funnel, origins, settings, read in logs(args.logs.split(","), args.deals):
        for drift in args.drift.split(","):
            every = None if drift == "none" else drift
            began = time.perf_counter()
            result = backtest(events, funnel, origins, BacktestSettings(draws=args.draws, tune=300, chains=args.chains,
                                                                        new_deals=True, every=every, sojourn=args.sojourn,
                                                                        model_config=json.loads(args.config) if args.config else None,
                                                                        **settings),
                              workers=1, **read)
            s = result.summary
            keep = ("origins", "coverage80", "mean_crps", "pit_ks_p", "total_coverage80", "total_mean_crps",
                    "total_pit_ks_p", "total_crps_skill_run_rate", "total_crps_skill_ets", "converged_fits")
            row = {"log": name, "drift": drift, "sojourn": args.sojourn, "config": args.config, **{k: s.get(k) for k in keep}, "seconds": round(time.perf_counter() - began)}
            t = result.table
            row["band_width"] = (t["p90"] - t["p10"]).round(0).tolist()
            row["actual"], row["p50"] = t["actual"].round(0).tolist(), t["p50"].round(0).tolist()
            row["by_age"] = {r["age"]: [round(r["forecast_wins"], 1), r["wins"]] for r in result.age_calibration.to_dict("records")}
            print(json.dumps(row, default=lambda v: round(float(v), 4)), flush=True)


if __name__ == "__main__":
    main()
