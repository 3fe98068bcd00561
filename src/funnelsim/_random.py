"""The random streams: one registry of the salts that split a user's seed into independent
streams, so no two parts of funnelsim draw the same numbers and none of them changes by
accident (a changed salt changes every forecast: tests/test_golden.py would fail).

Two kinds of stream:

- numpy streams, ``numpy.random.default_rng([seed, SALT])``: :func:`rng` with a name below;
- the simulator's counter-based streams (:mod:`funnelsim.sim.kernel`): each deal has a 64-bit
  key and each uniform a counter; the counters below mark where a stream starts, so the
  same deal draws the same numbers whatever else is simulated beside it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["rng", "SALTS", "STREAM_WITHIN", "STREAM_START", "STREAM_REVIVE", "WON_VALUE", "NEW_DEAL_KEYS"]

SALTS = {
    "amount_ratio": 0xA40,     # posterior draws of log(realised / last open amount), data/deals.py
    "new_deal_counts": 7243,   # how many new deals each week brings, sim/inflow.py
    "created_won": 7244,       # deals created already won and their amounts, sim/inflow.py
    "scenario_inflow": 4099,   # which new deals a what-if's new_deals_factor keeps, sim/scenarios.py
}

# counters of the simulator's per-deal streams
STREAM_WITHIN = 1 << 20        # offset of the uniforms that pick a destination inside its group
STREAM_START = 1 << 21         # the uniform that places a new deal's creation in its window
STREAM_REVIVE = 1 << 22        # offset of the uniforms of a dormant deal's revival: when, and where to
WON_VALUE = 1_000_003          # the uniforms that value a won deal
# the keys of simulated new deals start here (a real deal's key is a hash of its id)
NEW_DEAL_KEYS = np.uint64(0x5EED_0000_0000_0000)


def rng(seed: int, stream: str) -> np.random.Generator:
    """The numpy generator of ``stream`` (a key of :data:`SALTS`) for the user's ``seed``."""
    return np.random.default_rng([seed, SALTS[stream]])
