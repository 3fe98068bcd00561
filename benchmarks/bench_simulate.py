"""Speed of the pipeline simulator: open deals x posterior draws x stages.

Prints one JSON line per size with keys deals, draws, stages, seconds, paths_per_s, peak_mb,
naive_paths_per_s (a plain Python loop over a sample of the same paths, same run), threads.
Parameters are realistic, not fitted: 5 stages, 4 segments, forward / skip / back / won /
lost / stall moves, LogNormal times, deal ages spread over a year (to the minute). The first
call (numba compile, cached on disk) is not timed. Each size runs in a fresh process so the
peak memory is its own.

    python benchmarks/bench_simulate.py [--deals 10000,100000] [--draws 4000] [--horizon 90]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time


def parameters(draws: int, stages: int = 5, segments: int = 4, seed: int = 0):
    import numpy as np

    from funnelsim.sim.kernel import Parameters

    rng = np.random.default_rng(seed)
    S, G = stages, segments
    logits = np.full((S, S + 3), -np.inf)
    for s in range(S):
        if s + 1 < S:
            logits[s, s + 1] = 1.0                     # next
        if s + 2 < S:
            logits[s, s + 2] = -1.5                    # skip
        if s > 0:
            logits[s, s - 1] = -2.5                    # back
        logits[s, S] = -2.0 + 0.8 * s                  # won, likelier late
        logits[s, S + 1] = 0.0                         # lost
        logits[s, S + 2] = -0.5                        # stall
    noise = rng.normal(0, 0.1, (draws, S, G, S + 3))
    eta = logits[None, :, None, :] + noise
    pi = np.exp(eta - eta.max(axis=3, keepdims=True))
    pi /= pi.sum(axis=3, keepdims=True)
    mu = np.log(rng.uniform(7, 40, (S, S + 2)))[None, :, None, :] + rng.normal(0, 0.05, (draws, S, G, S + 2))
    sigma = np.full((draws, S, S + 2), 0.9) + rng.normal(0, 0.02, (draws, S, S + 2))
    return Parameters(pi=pi, family="lognormal", loc=mu, shape=sigma,
                      ratio_mean=rng.normal(-0.05, 0.01, (draws, G)), ratio_sd=np.full((draws, G), 0.1),
                      won_amounts=np.tile(np.linspace(1_000, 90_000, 51), (G, 1)))


def pipeline(deals: int, stages: int = 5, segments: int = 4, seed: int = 1):
    import numpy as np

    from funnelsim.sim.kernel import Pipeline

    rng = np.random.default_rng(seed)
    return Pipeline(stage=rng.integers(0, stages, deals), segment=rng.integers(0, segments, deals),
                    age_days=np.round(rng.exponential(60, deals) * 1440) / 1440,
                    amount=np.where(rng.random(deals) < 0.05, np.nan, rng.lognormal(np.log(20_000), 0.7, deals)))


def naive_paths(params, pipe, horizon: float, deals: int, draws: int, seed: int = 0) -> int:
    """The same model as a plain Python loop (scipy-free, math module), over a sample."""
    import random

    rng = random.Random(seed)
    pi, mu, sigma = params.pi, params.loc, params.shape
    S = pi.shape[1]
    normal = __import__("statistics").NormalDist()
    paths = 0
    for d in range(draws):
        for i in range(deals):
            s, g, age = int(pipe.stage[i]), int(pipe.segment[i]), float(pipe.age_days[i]) + 0.5
            surv = [0.5 * math.erfc((math.log(age) - mu[d, s, g, j]) / (sigma[d, s, j] * math.sqrt(2)))
                    for j in range(S + 2)]
            weights = [pi[d, s, g, j] * surv[j] for j in range(S + 2)] + [pi[d, s, g, S + 2]]
            dest = rng.choices(range(S + 3), weights)[0]
            clock, first = 0.0, True
            while dest < S + 2:
                u = rng.random() * (surv[dest] if first else 1.0)
                t = math.exp(mu[d, s, g, dest] - sigma[d, s, dest] * normal.inv_cdf(max(u, 1e-300)))
                clock += max(t - (age if first else 0.5), 0.0)
                first = False
                if clock >= horizon or dest >= S:
                    break
                s = dest
                dest = rng.choices(range(S + 3), [pi[d, s, g, j] for j in range(S + 3)])[0]
            paths += 1
    return paths


def measure(deals: int, draws: int, horizon: int) -> dict:
    import numba

    from funnelsim.sim.kernel import simulate

    params = parameters(draws)
    pipe = pipeline(deals)
    simulate(parameters(2), pipeline(10), horizon, seed=0)          # compile (or load the cache)
    start = time.perf_counter()
    simulate(params, pipe, horizon, seed=0)
    seconds = time.perf_counter() - start
    sample_deals, sample_draws = 200, 10
    start = time.perf_counter()
    paths = naive_paths(params, pipe, horizon, sample_deals, sample_draws)
    naive = paths / (time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"deals": deals, "draws": draws, "stages": params.pi.shape[1], "horizon_days": horizon,
            "seconds": round(seconds, 3), "paths_per_s": round(deals * draws / seconds),
            "peak_mb": round(peak, 1), "naive_paths_per_s": round(naive),
            "speedup_vs_naive": round(deals * draws / seconds / naive, 1), "threads": numba.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", default="10000,100000")
    parser.add_argument("--draws", type=int, default=4000)
    parser.add_argument("--horizon", type=int, default=90)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.draws, args.horizon)), flush=True)
        return
    for deals in (int(x) for x in args.deals.split(",")):
        subprocess.run([sys.executable, __file__, "--one", str(deals), "--draws", str(args.draws),
                        "--horizon", str(args.horizon)], check=True)


if __name__ == "__main__":
    main()
