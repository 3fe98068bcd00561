"""Fit time of the funnel model from a synthetic log: statistics, compile, sampling.

Prints one JSON line per size with keys deals, stats_s, compile_s, sample_s, seconds,
peak_mb, converged (and the diagnostics). Default: 5 stages x 20 segments, 4 chains x
1000 draws after the model's default tuning steps, nutpie. Each size runs in a fresh process.

    python benchmarks/bench_fit.py [--sizes 100000,1000000] [--draws 1000] [--chains 4]

``--drift month`` fits the funnel that drifts over entry cohorts (the synthetic log's two years:
24 monthly cohorts; issue 20's line: 1,000,000 deals at most 60 s warm, converged, under 2 GB).

``--revival`` fits dormant deals that revive (docs/revival.md) on the same log.

``--short-stays`` writes the log of issue 18's real funnel shape instead: Qualified a
pass-through (every stay lasts seconds) and 10% of forward moves clicked through at once, so
the fit includes the instant shares (docs/short-stays.md).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings


def config(segments: int, short_stays: bool = False):
    import numpy as np

    from funnelsim.data import synth

    rng = np.random.default_rng(segments)
    names = [f"S{i:02d}" for i in range(segments)]
    weights = [1.0 / (i + 1) for i in range(segments)]    # a few big segments, a long tail
    total = sum(weights)
    return synth.SynthConfig(
        stages=("Lead", "Qualified", "Demo", "Proposal", "Negotiation"),
        segments={n: w / total for n, w in zip(names, weights, strict=True)},
        segment_logit_shift={n: tuple(rng.normal(0, 0.3, 2).round(3)) for n in names},
        segment_speed={n: float(np.exp(rng.normal(0, 0.2)).round(3)) for n in names},
        amount_median={n: 20000.0 for n in names},
        **({"pass_through": {"Qualified": 1.0}, "p_same_day_jump": 0.1} if short_stays else {}),
    )


def measure(deals: int, segments: int, draws: int, tune: int, chains: int, short_stays: bool,
            drift: str | None = None, revival: bool = False) -> dict:
    import funnelsim as fs
    from funnelsim.data import synth
    from funnelsim.model.funnel_model import DEFAULT_TUNE

    cfg = config(segments, short_stays)
    events, _ = synth.generate(deals, seed=deals, config=cfg)
    funnel = fs.FunnelDefinition(cfg.stages, cfg.won, cfg.lost)
    start = time.perf_counter()
    snap = fs.Snapshot.read(events, funnel, segment_by="segment", every=drift)
    stats = snap.stage_stats
    stats_s = time.perf_counter() - start
    model = fs.FunnelModel(stats, model_config={"revival": revival})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(draws=draws, chains=chains, random_seed=1, **({} if tune is None else {"tune": tune}))
    diag = model.diagnostics
    return {"deals": deals, "stats_s": round(stats_s, 2), "compile_s": round(model.timings["compile_s"], 2),
            "sample_s": round(model.timings["sample_s"], 2), "seconds": round(stats_s + model.timings["seconds"], 2),
            "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "converged": diag["converged"], "r_hat_max": round(diag["r_hat_max"], 4),
            "ess_bulk_min": round(diag["ess_bulk_min"]), "divergences": diag["divergences"],
            "stats_rows": len(stats.table), "segments": segments, "chains": chains, "draws": draws,
            "tune": tune or DEFAULT_TUNE, "short_stays": short_stays,
            "short_exits": int(stats.table.loc[stats.table["bin"] < 0, "n"].sum()),
            "drift": drift, "cohorts": len(stats.cohorts), "revival": revival}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=None, help="default: the model's")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--short-stays", action="store_true",
                        help="a pass-through stage and same-day jumps (instant stays)")
    parser.add_argument("--drift", default=None, help="week, month or quarter: the drifting model")
    parser.add_argument("--revival", action="store_true", help="dormant deals that revive")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.segments, args.draws, args.tune, args.chains, args.short_stays,
                                 args.drift, args.revival)), flush=True)
        return
    for deals in (int(s) for s in args.sizes.split(",")):
        subprocess.run([sys.executable, __file__, "--one", str(deals), "--segments", str(args.segments),
                        "--draws", str(args.draws), "--chains", str(args.chains),
                        *(["--tune", str(args.tune)] if args.tune else []),
                        *(["--short-stays"] if args.short_stays else []),
                        *(["--drift", args.drift] if args.drift else []),
                        *(["--revival"] if args.revival else [])],
                       check=True)


if __name__ == "__main__":
    main()
