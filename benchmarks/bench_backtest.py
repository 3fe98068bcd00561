"""Wall time of a backtest: monthly origins on a synthetic log, origins in worker processes.

Prints one JSON line with keys deals, origins, workers, horizon_days, seconds,
seconds_per_origin, coverage80, mean_crps_rel, converged_fits. Default: 50,000 deals over two
years, 12 monthly origins, 90-day horizon, the backtest's default fit (4 chains x 500 draws).

    python benchmarks/bench_backtest.py [--deals 50000] [--origins 12] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    import pandas as pd

    from funnelsim.data import synth
    from funnelsim.data.events import FunnelDefinition
    from funnelsim.sim.backtest import BacktestSettings, backtest, origin_dates

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=50_000)
    parser.add_argument("--origins", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--horizon", type=int, default=90)
    args = parser.parse_args()

    config = synth.SynthConfig()
    events, _ = synth.generate(args.deals, seed=1, config=config)
    funnel = FunnelDefinition(stages=config.stages, won=config.won, lost=config.lost)
    start = events["timestamp"].min().normalize() + pd.Timedelta(weeks=26)
    origins = origin_dates("1M", start, start + pd.Timedelta(days=31 * args.origins))[:args.origins]
    settings = BacktestSettings(horizon_days=args.horizon, segment_by=config.segment_column)
    began = time.perf_counter()
    result = backtest(events, funnel, origins, settings, workers=args.workers)
    seconds = time.perf_counter() - began
    summary = result.summary
    print(json.dumps({"deals": args.deals, "origins": len(origins), "workers": args.workers,
                      "horizon_days": args.horizon, "seconds": round(seconds, 1),
                      "seconds_per_origin": round(seconds / len(origins), 1),
                      "coverage80": summary["coverage80"], "mean_crps_rel": round(summary["mean_crps_rel"], 4),
                      "converged_fits": summary["converged_fits"]}), flush=True)


if __name__ == "__main__":
    main()
