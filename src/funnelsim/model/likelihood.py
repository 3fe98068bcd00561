"""The funnel model's PyMC graph: censored competing risks with stalls, pooled across segments.

For each open stage s and segment g a deal eventually leaves to one destination j (a later
stage, an earlier stage, won, lost) or **stalls** (goes dark and never moves again):

- destination probabilities ``pi[s, g, :] = softmax(eta[s, g, :])`` with the stall logit
  fixed at 0 (this identifies the softmax) and, for every destination seen from the stage,
  ``eta[s, g, j] ~ Normal(alpha[s, j], spread[s])``: small segments shrink to the stage
  mean. One spread per stage, shared by its destinations: with a handful of segments a
  spread per (stage, destination) is barely identified and the sampler mixes poorly.
  Destinations never seen from a stage are left out (probability 0);
- time in stage given destination j, ``t = days + 0.5``: LogNormal(mu[s, g, j], sigma[s, j])
  with ``mu`` pooled across segments the same way, or Weibull(shape[s, j], scale[s, g, j])
  with log scale pooled (``sojourn="weibull"``);
- likelihood, from the statistics of :mod:`funnelsim.data.stats`: n exits to j with Σ log t and
  Σ (log t)² add ``n log pi_j + Σ log f_j(t)`` (exact for the LogNormal; per duration bin for
  the Weibull); n stays still open at age a add ``n log(pi_stall + Σ_j pi_j S_j(a))``. Counts
  are weights, so the cost follows the number of groups, not of deals;
- instant stays (exits shorter than the log's resolution r, see :func:`_instant_loglik` and
  docs/short-stays.md): a (stage, destination) that has them has an instant share h, and its
  time in stage given a timed exit is the family truncated to t >= r.

The destination logits of each (stage, segment) are sampled in rotated coordinates, the
eigenbasis of the stage's Fisher information (:func:`logit_rotation`): the data pin down
where deals go far better than whether they go at all (against stalling), which makes the
logits of a stage strongly correlated, and a sampler with a diagonal mass matrix takes many
small steps there. The segments' prior is isotropic, so the rotation leaves the model as it
is. Pooling is chosen per cell (a rotated logit coordinate, or a (stage, destination)
time-in-stage location, in one segment): centred where the cell's data are far more precise
than the spread across segments estimated from the data (the centred form samples far faster
there), non-centred elsewhere (see :func:`centred_cells`);
``model_config={"pooling": "centred" | "non-centred"}`` overrides it for every cell. The
spreads across segments have boundary-avoiding Gamma priors. A log with a single segment
(no ``segment_by``) has no spread: its values are the stage means themselves.

Exits are dense (stage, segment, destination) arrays and parameters are spread onto them by
a constant one-hot matrix; open stays are evaluated only in the (stage, segment, age bin)
cells that hold some, for the destinations seen from their stage. :class:`funnelsim.model.funnel_model.FunnelModel` wraps it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..data.events import FunnelDefinition
from ..data.stats import CENSORED, OFFSET_DAYS, SHORT_BIN, StageStats
from .pooling import centred_cells, logit_rotation
from .sojourn import PRIORS
from .sojourn import family as sojourn_family

__all__ = ["DEFAULT_CONFIG", "ModelData", "model_data", "model_inputs", "centred_cells", "logit_rotation",
           "build_pymc_model", "stats_hash"]

STALL = "stall"
OPEN_BIN_MERGE = 2   # statistics bins per model age bin for open stays
NO_TIMED_PART = -1e4  # log(1 - h) of a pass-through pair (h = 1): exp() of it is exactly 0
IMPOSSIBLE = -1e3     # logit offset of a destination left out: its probability is exactly 0
# a destination seen from a stage is impossible in a segment that never took it although the
# other segments' share predicts at least this many of its exits (P(none | Poisson 10) = 5e-5):
# its logit ran down a tail bounded only by the segment spread and the sampler mixed poorly
# (R-hat 1.05, ESS 80 on 13,000 deals whose SMB never wins straight from Proposal)
# (model_config["absent_expected_exits"]; infinity keeps every destination in every segment)
ABSENT_EXPECTED_EXITS = 10.0
DEFAULT_CONFIG = {
    # log-odds of each destination against stalling: alpha[s, j] ~ Normal(mu, sigma)
    "logit_mean": {"mu": 1.0, "sigma": 2.0},
    # spread of segments around the stage mean: Gamma(alpha, beta), a boundary-avoiding prior
    # (mean alpha/beta = 0.33 on the logit scale): with a handful of segments a prior with
    # mass at 0 lets the spread collapse and the sampler diverge in the funnel it makes
    "logit_spread": {"alpha": 2.0, "beta": 6.0},
    # location of log t (t = days + 0.5) for each (stage, destination): Normal(mu, sigma)
    "log_days_mean": {"mu": float(np.log(30.0)), "sigma": 1.5},
    "log_days_spread": {"alpha": 2.0, "beta": 6.0},
    # each sojourn family's shape prior (funnelsim.model.sojourn): LogNormal sigma of log t
    # "log_days_sigma": HalfNormal(scale); Weibull log shape "weibull_log_shape": Normal(mu, sigma)
    **{key: dict(prior) if isinstance(prior, dict) else prior for key, prior in PRIORS.items()},
    # instant stays (exits shorter than the log's resolution): a share per (stage, destination);
    # "instant_stays": False reads them as ordinary durations (the model
    # before instant stays, whose scale collapses on pass-through stages: docs/short-stays.md)
    # logit h[s, j] ~ Normal(m_s, spread), m_s ~ Normal(mu, sigma): pooled within the stage
    "instant_share": {"mu": 0.0, "sigma": 2.5, "spread": 1.5},
    "instant_stays": True,
    # a destination a segment never took although the others' share predicts this many of its
    # exits is impossible there (ModelData.absent)
    "absent_expected_exits": ABSENT_EXPECTED_EXITS,
    "pooling": "auto",
    # auto pooling: a cell is centred where its data are this many times more precise than
    # the spread across segments (see centred_cells)
    "centred_precision_ratio": 2.0,
    # a drifting funnel (statistics split by entry cohort, funnelsim.model.drift): the step of
    # each stage's random walk over cohorts, Half-Normal(sigma) per month (scaled by the square
    # root of the period's length), on the destination logits and on log time in stage
    "drift_logit_step": {"sigma": 0.15},
    "drift_log_days_step": {"sigma": 0.05},
    # ... and the walks of the whole funnel's conversion (every forward logit) and speed
    "drift_conversion_step": {"sigma": 0.2},
    "drift_speed_step": {"sigma": 0.1},
    # ... and the conversion shock of one cohort, not carried on: its sd ~ Half-Normal(sigma)
    "drift_conversion_shock": {"sigma": 0.2},
    # dormant deals that revive (docs/revival.md): a stalled stay leaves after all at a
    # constant rate r per day (log r ~ Normal(mu, sigma) per stage) within "revival_days" of
    # entering the stage, to the stage's destinations in their usual shares; off by default
    "revival": False,
    "revival_rate": {"mu": float(np.log(1.0 / 3650.0)), "sigma": 1.5},
    "revival_days": 730.0,
}


# --------------------------------------------------------------------------- data

@dataclass
class ModelData:
    """The statistics table as dense arrays for the likelihood (no gathers in the graph).

    Axes: stage S, segment G, duration bin B, exit destination E = S + 2 (stages, won,
    lost; stall has no time in stage). ``pairs`` lists the (stage, destination) indices
    seen in the data; the model has parameters for those only.
    """

    stages: tuple[str, ...]
    segments: tuple[str, ...]
    destinations: tuple[str, ...]        # stages, won, lost, stall
    pairs: np.ndarray                    # (K, 2) int: stage index, destination index
    exit_n: np.ndarray                   # (S, G, E) exits, all durations
    exit_sum_log_t: np.ndarray           # (S, G, E) Σ log t
    exit_sum_log_t2: np.ndarray          # (S, G, E) Σ (log t)²
    bin_exit_n: np.ndarray               # (S, G, B, E) exits per duration bin
    bin_exit_log_t: np.ndarray           # (S, G, B, E) mean log t of those exits
    open_n: np.ndarray                   # (S, G, B / 2) stays still open, by age bin
    open_log_t: np.ndarray               # (S, G, B / 2) their mean log age
    short_n: np.ndarray | None = None    # (S, G, E) exits shorter than short_days (None: there are none)
    short_log_t: float = 0.0             # log t at short_days: those exits left before it
    absent_expected: float = ABSENT_EXPECTED_EXITS   # see absent
    absent_given: np.ndarray | None = None           # absent, when set from elsewhere (cohort cells: their sum's)

    @property
    def has_short(self) -> bool:
        return self.short_n is not None

    @property
    def instant_pairs(self) -> np.ndarray:
        """(K,) bool: the pairs with instant stays (some exits shorter than the resolution)."""
        if self.short_n is None:
            return np.zeros(len(self.pairs), dtype=bool)
        return self.short_n.sum(axis=1)[self.pairs[:, 0], self.pairs[:, 1]] > 0

    @property
    def passing_pairs(self) -> np.ndarray:
        """(K,) bool: the pass-through pairs, whose exits are all instant (none timed)."""
        timed = self.exit_n.sum(axis=1)[self.pairs[:, 0], self.pairs[:, 1]]
        return self.instant_pairs & (timed == 0)

    @property
    def instant_labels(self) -> list[str]:
        return [label for label, x in zip(self.pair_labels, self.instant_pairs, strict=True) if x]

    @property
    def choice_n(self) -> np.ndarray:
        """(S, G, E) every exit, short ones included: what the destination shares learn from."""
        return self.exit_n if self.short_n is None else self.exit_n + self.short_n

    @property
    def entries(self) -> np.ndarray:
        """Stays per (stage, segment)."""
        return self.choice_n.sum(axis=2) + self.open_n.sum(axis=2)

    @cached_property
    def open_cells(self) -> tuple[np.ndarray, ...]:
        """The (stage, segment, age bin) cells holding open stays: indices, counts, log ages."""
        s, g, b = np.nonzero(self.open_n)
        return s, g, self.open_n[s, g, b], self.open_log_t[s, g, b]

    open_count = property(lambda self: self.open_cells[2])
    open_age = property(lambda self: self.open_cells[3])

    @property
    def open_total(self) -> np.ndarray:
        """(S, G) stays still open, all ages."""
        return self.open_n.sum(axis=2)

    @cached_property
    def open_lookup(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each open cell and each destination seen from its stage (padded to A): its
        flat index into (S, G, E) arrays, into (S, E) arrays, and 1 for real entries, 0 for
        padding. Plain integer gathers of flat arrays are the cheapest in the gradient."""
        table, mask = self.destinations_seen
        s, g = self.open_cells[:2]
        S, G, E = self.exit_n.shape
        j = table[s]
        return ((s[:, None] * G + g[:, None]) * E + j, s[:, None] * E + j, mask[s].astype(float))

    open_index = property(lambda self: self.open_lookup[0])
    open_scale_index = property(lambda self: self.open_lookup[1])
    open_mask = property(lambda self: self.open_lookup[2])

    @property
    def destinations_seen(self) -> tuple[np.ndarray, np.ndarray]:
        """(S, A) exit indices seen from each stage, padded, and the mask of real ones."""
        seen = [self.pairs[self.pairs[:, 0] == s, 1] for s in range(len(self.stages))]
        width = max(1, max(len(x) for x in seen))
        table = np.zeros((len(seen), width), dtype=int)
        mask = np.zeros((len(seen), width), dtype=bool)
        for s, js in enumerate(seen):
            table[s, :len(js)], mask[s, :len(js)] = js, True
        return table, mask

    @cached_property
    def absent(self) -> np.ndarray:
        """(S, G, E) bool: the destinations impossible in a segment. A (stage, destination)
        seen in the log is absent from a segment that never took it although its share of
        the other segments' exits from the stage predicts at least
        :attr:`absent_expected` (:data:`ABSENT_EXPECTED_EXITS`) of the segment's exits: the model gives it probability
        0 there, as it does to destinations never seen from a stage at all."""
        if self.absent_given is not None:
            return self.absent_given
        n = self.choice_n                                                  # (S, G, E)
        exits = n.sum(axis=2, keepdims=True)                               # (S, G, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = (n.sum(axis=1, keepdims=True) - n) / (exits.sum(axis=1, keepdims=True) - exits)
        seen = np.zeros(n.shape[::2], dtype=bool)
        seen[self.pairs[:, 0], self.pairs[:, 1]] = True
        return seen[:, None, :] & (n == 0) & (np.nan_to_num(share) * exits >= self.absent_expected)

    @property
    def absent_cells(self) -> list[dict]:
        """The absent destinations (:attr:`absent`) with the evidence: exits the segment made
        from the stage, and how many of them the other segments' share predicts."""
        n = self.choice_n
        exits = n.sum(axis=2)
        rows = []
        for s, g, j in np.argwhere(self.absent):
            others = n[s, :, j].sum() / (exits[s].sum() - exits[s, g])
            rows.append({"stage": self.stages[s], "segment": self.segments[g], "destination": self.destinations[j],
                         "exits": int(exits[s, g]), "expected": float(others * exits[s, g])})
        return rows

    @property
    def pair_labels(self) -> list[str]:
        return [f"{self.stages[s]} -> {self.destinations[j]}" for s, j in self.pairs]


def model_data(stage_stats: StageStats, funnel: FunnelDefinition, instant_stays: bool = True,
               absent_expected: float = ABSENT_EXPECTED_EXITS) -> ModelData:
    """Dense arrays from the statistics table. Exits summed over bins give n, Σ log t and
    Σ (log t)² per (stage, segment, destination): exact for the LogNormal.

    Exits shorter than the log's resolution (bin SHORT_BIN) are kept apart as ``short_n``
    (the instant stays of the model) unless ``instant_stays`` is False: they are then
    ordinary durations in the first bin, the model before instant stays. ``absent_expected``:
    see :attr:`ModelData.absent`."""
    from ..data.stats import bin_edges

    stages = tuple(funnel.stages)
    destinations = (*stages, funnel.won_name, funnel.lost_name, STALL)
    # every segment of the spells (some may have no stay in a history window: pooled estimate)
    stats = stage_stats.table
    segments = tuple(sorted(set(stage_stats.segments) | set(stats["segment"].astype(str))))
    S, G, E, B = len(stages), len(segments), len(destinations) - 1, max(int(stats["bin"].max()), 0) + 1
    s = stats["stage"].map({x: i for i, x in enumerate(stages)}).to_numpy(int)
    g = stats["segment"].map({x: i for i, x in enumerate(segments)}).to_numpy(int)
    b = stats["bin"].to_numpy(int)
    if not instant_stays:
        b = np.maximum(b, 0)               # t < the resolution lies in bin 0 (t < 0.63)
    is_open = (stats["destination"] == CENSORED).to_numpy()
    j = stats["destination"].map({x: i for i, x in enumerate(destinations)}).fillna(-1).to_numpy(int)
    n, s1, s2 = (stats[c].to_numpy(float) for c in ("n", "sum_log_t", "sum_log_t2"))

    centre = np.log(bin_edges(B)[:-1] * 2 ** (0.5 / 3))  # empty bins: any finite age
    exit_n, exit_s1, exit_s2 = (np.zeros((S, G, E)) for _ in range(3))
    bin_n, bin_s1 = np.zeros((S, G, B, E)), np.zeros((S, G, B, E))
    # open stays: two statistics bins per model bin (1.5 per doubling of age); each cell is
    # evaluated at its stays' mean log age, and the survival functions there are most of
    # the gradient's cost (the likelihood test bounds the error this adds)
    ob = b // OPEN_BIN_MERGE
    B_open = (B + OPEN_BIN_MERGE - 1) // OPEN_BIN_MERGE
    open_n, open_s1 = np.zeros((S, G, B_open)), np.zeros((S, G, B_open))
    short = ~is_open & (b == SHORT_BIN)
    x = ~is_open & ~short
    for target, values in ((exit_n, n), (exit_s1, s1), (exit_s2, s2)):
        np.add.at(target, (s[x], g[x], j[x]), values[x])
    np.add.at(bin_n, (s[x], g[x], b[x], j[x]), n[x])
    np.add.at(bin_s1, (s[x], g[x], b[x], j[x]), s1[x])
    np.add.at(open_n, (s[is_open], g[is_open], ob[is_open]), n[is_open])
    np.add.at(open_s1, (s[is_open], g[is_open], ob[is_open]), s1[is_open])
    with np.errstate(invalid="ignore", divide="ignore"):
        bin_log_t = np.where(bin_n > 0, bin_s1 / bin_n, centre[None, None, :, None])
        open_log_t = np.where(open_n > 0, open_s1 / open_n, 0.0)
    short_n = None
    if short.any():      # exits shorter than the log's resolution: the instant stays
        short_n = np.zeros((S, G, E))
        np.add.at(short_n, (s[short], g[short], j[short]), n[short])
    pairs = np.argwhere((exit_n if short_n is None else exit_n + short_n).sum(axis=1) > 0)
    return ModelData(stages, segments, destinations, pairs, exit_n, exit_s1, exit_s2,
                     bin_n, bin_log_t, open_n, open_log_t, short_n,
                     float(np.log(stage_stats.short_days + OFFSET_DAYS)), float(absent_expected))


def stats_hash(stats: StageStats) -> str:
    """A fingerprint of the training statistics (sha256 of their table's canonical CSV)."""
    columns = ["stage", "segment", "destination", "bin", "n", "sum_log_t", "sum_log_t2"]
    if "cohort" in stats.table.columns:      # statistics split by entry cohort
        columns.insert(4, "cohort")
    ordered = stats.table[columns].sort_values(columns[:4 + ("cohort" in columns)]).round(9)
    return hashlib.sha256(ordered.to_csv(index=False).encode()).hexdigest()


# --------------------------------------------------------------------------- the PyMC model

def model_inputs(data: ModelData, sojourn: str, centred: np.ndarray, cohorts=None,
                 revival: bool = False) -> dict[str, np.ndarray]:
    """The model's data containers, packed into as few arrays as possible: nutpie's compiler
    spends about 0.4 s per container (measured: 11 containers cost 13 s to compile, 2 cost 5 s).

    - ``exits`` (S, G, 4E + 1): per (stage, segment) the exits n, Σ log t, Σ (log t)² per
      destination (E each), the stays still open, then the logit offsets of the destinations
      absent from the segment (:attr:`ModelData.absent`; data, so a refit may differ);
    - ``open_stays`` (R, 3A + 2): per open cell (see :attr:`ModelData.open_lookup`) the flat
      (S, G, E) index, the flat (S, E) index and the mask of its A destinations, then the
      count and the mean log age;
    - ``centred`` (2, K, G): 1 for the cells in the centred form, 0 for the non-centred (see
      :func:`centred_cells`): data rather than structure, so one compiled graph serves every
      dataset of one shape (absent with a single segment, which is not pooled);
    - ``rotation`` (K, K): the coordinates the logits are sampled in (:func:`logit_rotation`);
    - ``binned`` (2, S, G, B, E), for the families whose exits are binned (the Weibull): exits
      per duration bin and their mean log t;
    - ``revival_bins`` (R, 4), with ``revival``: the duration bins holding exits (see
      :func:`revival_bins`).

    With ``cohorts`` (:class:`funnelsim.model.drift.CohortData`) the statistics are its cells'
    (segment axis G x C), the centring and the rotation still ``data``'s, and
    ``cohort_weight`` (S, C) centres the walks.
    """
    rotation = logit_rotation(data)
    segments = data.segments
    if cohorts is not None:
        data = cohorts.cells
    exits = np.concatenate([data.exit_n, data.exit_sum_log_t, data.exit_sum_log_t2, data.open_total[..., None],
                            np.where(data.absent, IMPOSSIBLE, 0.0)], axis=-1)
    open_stays = np.column_stack([data.open_index, data.open_scale_index, data.open_mask,
                                  data.open_count, data.open_age]).astype(float)
    inputs = {"exits": exits, "open_stays": open_stays, "rotation": rotation}
    if len(segments) > 1:     # one segment is not pooled (build_pymc_model): nothing to centre
        inputs["centred"] = np.asarray(centred, float)
    if cohorts is not None:
        inputs["cohort_weight"] = cohorts.weights
    if revival:
        inputs["revival_bins"] = revival_bins(data)
    if sojourn_family(sojourn).binned:
        inputs["binned"] = np.stack([data.bin_exit_n, data.bin_exit_log_t])
    if data.has_short:
        inputs["short_exits"] = data.short_n
    return inputs


def revival_bins(data: ModelData) -> np.ndarray:
    """The (stage, segment, duration bin, destination) bins holding exits, one row each: the
    flat (S, G, E) index, the flat (S, E) index, the exits and their mean log t. Only these
    bins are evaluated for revivals (:func:`_revival_exit_loglik`): a dense (S, G x C, B, E)
    array would be most of a drifting fit's gradient."""
    s, g, b, j = np.nonzero(data.bin_exit_n)
    S, G, _, E = data.bin_exit_n.shape
    return np.column_stack([(s * G + g) * E + j, s * E + j, data.bin_exit_n[s, g, b, j],
                            data.bin_exit_log_t[s, g, b, j]]).astype(float)


def _unpacked(containers, E: int, A: int) -> dict:
    """The tensors of :func:`model_inputs`' containers, by name."""
    import pytensor.tensor as pt

    exits, rows = containers["exits"], containers["open_stays"]
    d = {"exit_n": exits[..., :E], "exit_sum_log_t": exits[..., E:2 * E], "exit_sum_log_t2": exits[..., 2 * E:3 * E],
         "open_total": exits[..., 3 * E], "absent": exits[..., 3 * E + 1:],
         "open_index": pt.cast(rows[:, :A], "int64"), "open_scale_index": pt.cast(rows[:, A:2 * A], "int64"),
         "open_mask": rows[:, 2 * A:3 * A], "open_count": rows[:, 3 * A], "open_age": rows[:, 3 * A + 1]}
    if "binned" in containers:
        d["bin_exit_n"], d["bin_exit_log_t"] = containers["binned"][0], containers["binned"][1]
    if "short_exits" in containers:
        d["short_n"] = containers["short_exits"]
    if "revival_bins" in containers:
        rows = containers["revival_bins"]
        d["revival_index"], d["revival_scale_index"] = pt.cast(rows[:, 0], "int64"), pt.cast(rows[:, 1], "int64")
        d["revival_n"], d["revival_log_t"] = rows[:, 2], rows[:, 3]
    return d


def build_pymc_model(data: ModelData, sojourn: str, config: dict, centred: np.ndarray, cohorts=None):
    """The PyMC model. Data live in ``pm.Data`` containers so one compiled model can be
    refitted on new statistics of the same shape (stages, segments, destinations seen).
    ``centred`` (2, pair, segment) marks the cells given the centred parametrisation, for
    the logits and for the time in stage (see :func:`centred_cells`). It is data: a segment's
    value x around the pair's mean m with spread s is sampled as x~ ~ Normal(c m, c s + 1 - c),
    x = c x~ + (1 - c) (m + s x~), the centred form for c = 1 and the non-centred for c = 0.

    With ``cohorts`` (:class:`funnelsim.model.drift.CohortData`) the logits and locations walk
    over entry cohorts (:mod:`funnelsim.model.drift`) and the likelihood reads the (segment,
    cohort) cells; ``pi`` and the sojourn location recorded are the last cohort's (the funnel
    now), ``drift_logit`` and ``drift_log_days`` (pair, cohort) the walks."""
    import pymc as pm
    import pytensor.tensor as pt

    from . import drift

    family = sojourn_family(sojourn)
    S, G, E = data.exit_n.shape
    K = len(data.pairs)
    cells = data if cohorts is None else cohorts.cells
    X = len(cells.segments)                # G, or G x C (segment, cohort) cells
    # parameters live on the pairs seen; a constant one-hot matrix spreads them onto the
    # dense (stage, exit) grid, so the graph has matrix products instead of scatters
    onehot = np.zeros((K, S * E))
    onehot[np.arange(K), data.pairs[:, 0] * E + data.pairs[:, 1]] = 1.0
    unseen = np.where(onehot.sum(axis=0).reshape(S, E) > 0, 0.0, IMPOSSIBLE)

    def dense(values, groups=G):  # (K, groups) -> (S, groups, E); (K,) -> (S, E)
        if values.ndim == 1:
            return pt.dot(values, onehot).reshape((S, E))
        return pt.dot(values.T, onehot).reshape((groups, S, E)).dimshuffle(1, 0, 2)

    coords = {"stage": list(data.stages), "segment": list(data.segments),
              "destination": list(data.destinations), "exit": list(data.destinations[:-1]),
              "pair": data.pair_labels}
    if data.has_short:
        coords["instant_pair"] = data.instant_labels
        mixed = data.instant_pairs & ~data.passing_pairs
        coords["mixed_pair"] = [label for label, x in zip(data.pair_labels, mixed, strict=True) if x]
        coords["instant_stage"] = [data.stages[i] for i in np.unique(data.pairs[mixed, 0])]
    if cohorts is not None:
        coords["cohort"], coords["cohort_step"] = list(cohorts.cohorts), list(cohorts.cohorts[1:])
    with pm.Model(coords=coords) as model:
        containers = {name: pm.Data(name, value)
                      for name, value in model_inputs(data, sojourn, centred, cohorts,
                                                      bool(config["revival"])).items()}
        d = _unpacked(containers, E, cells.open_index.shape[1])
        absent = d["absent"]                   # (S, X, E)

        def now(values, level):
            """(K, G) segment values at the last cohort (the values themselves without cohorts)."""
            return values if level is None else values + level[:, -1:]

        def pooled(name, mean, spread_name, spread_prior, form, rotation=None):
            """Segment values around the pair's mean: centred where c is 1, non-centred where
            it is 0 (each form is fast where the other struggles). With a rotation, ``mean``
            and the values are sampled in rotated coordinates (rows of ``rotation``; the prior
            is isotropic) and turned back. ``form`` indexes the ``centred`` container (0: logits,
            1: locations). A single segment is the mean itself: no spread,
            which nothing could be learnt from and whose ridge with the mean made the sampler
            diverge (13 divergent transitions on Olist's funnel without segments)."""
            mean = mean[:, None]
            if G == 1:
                values = mean
            else:
                c = containers["centred"][form]
                spread = pm.Gamma(spread_name, **spread_prior, dims="stage")[data.pairs[:, 0]][:, None]
                raw = pm.Normal(f"{name}_raw", c * mean, c * spread + (1.0 - c), dims=("pair", "segment"))
                values = c * raw + (1.0 - c) * (mean + spread * raw)
            if rotation is not None:
                values = pt.dot(rotation.T, values)
            return pm.Deterministic(name, values, dims=("pair", "segment"))

        # the logits' means and segment values in the rotated coordinates of logit_rotation:
        # alpha ~ Normal(mu, sigma) per pair is Normal(R mu, sigma) there
        rotation = containers["rotation"]
        logit_mean = config["logit_mean"]
        alpha_rotated = pm.Normal("alpha_raw", pt.dot(rotation, np.full(K, float(logit_mean["mu"]))),
                                  logit_mean["sigma"], dims="pair")
        pm.Deterministic("alpha", pt.dot(rotation.T, alpha_rotated), dims="pair")
        eta = pooled("eta", alpha_rotated, "alpha_spread", config["logit_spread"], 0, rotation)
        logit_walk = loc_walk = None
        if cohorts is not None:
            logit_walk, loc_walk = drift.walks(config, cohorts, containers["cohort_weight"], data.pairs, S, rotation)

        def log_shares(values, offsets):
            logits = dense(values, offsets.shape[1]) + unseen[:, None, :] + offsets   # stall logit: 0
            log_norm = pt.logaddexp(pt.logsumexp(logits, axis=-1, keepdims=True), 0.0)
            return logits, logits - log_norm, -log_norm[..., 0]       # (S, X, E), (S, X, E), (S, X)

        absent_now = absent if cohorts is None else absent.reshape((S, G, cohorts.size, E))[:, :, -1]
        _, log_pi_now, log_stall_now = log_shares(now(eta, logit_walk), absent_now)
        pm.Deterministic("pi", pt.concatenate([pt.exp(log_pi_now), pt.exp(log_stall_now)[..., None]], axis=-1),
                         dims=("stage", "segment", "destination"))
        logits, log_pi, log_stall = log_shares(eta if cohorts is None else drift.by_cell(eta, logit_walk), absent)

        location = pm.Normal("log_days", **config["log_days_mean"], dims="pair")
        loc_segments = pooled("loc", location, "log_days_spread", config["log_days_spread"], 1)
        loc = dense(loc_segments) if cohorts is None else dense(drift.by_cell(loc_segments, loc_walk), X)
        scale = dense(family.pymc_shape(config)) + (unseen < 0)   # 1 where unseen, so every entry is finite
        pm.Deterministic(family.params[0], loc if cohorts is None else dense(now(loc_segments, loc_walk)),
                         dims=("stage", "segment", "exit"))
        pm.Deterministic(family.params[1], scale, dims=("stage", "exit"))

        exit_ll = _exit_loglik(d, log_pi, loc, scale, family)
        timed = None
        if data.has_short:
            instant_ll, timed = _instant_loglik(cells, d, config, log_pi, loc, scale, family)
            exit_ll = exit_ll + instant_ll
        revival = None
        if config["revival"]:
            prior = config["revival_rate"]
            rate = pt.exp(pm.Normal("revival_log_rate", prior["mu"], prior["sigma"], dims="stage"))
            revival = (pm.Deterministic("revival_rate", rate, dims="stage"), float(config["revival_days"]))
            exit_ll = exit_ll + _revival_exit_loglik(d, logits, loc, scale, family, timed, *revival)
        open_ll = _open_loglik(d, logits, log_stall, loc, scale, family, timed, revival)
        pm.Potential("loglik", exit_ll + open_ll)
    return model


def _exit_loglik(d, log_pi, loc, scale, family):
    """Σ over exits of log pi_j + log f_j(t) (f of the sojourn ``family``)."""
    choice = (d["exit_n"] * log_pi).sum()
    return choice + family.pymc_exit_terms(d, loc, scale).sum()


def _instant_loglik(data: ModelData, d, config, log_pi, loc, scale, family):
    """Instant stays (docs/short-stays.md). A pair with exits shorter than the log's
    resolution r has an instant share h (logit pooled within the stage, ``instant_share``): a stay leaving to j
    is instant (left within r) with probability h_j, and otherwise lasts a time of the family
    truncated to t >= r. Short exits add n log(pi_j h_j); timed exits, beside their
    log pi_j + log f_j(t), add log(1 - h_j) - log S_j(r); an open stay's survival to age a
    becomes (1 - h_j) S_j(a) / S_j(r). The instant share is then learnt from the short exits
    alone (no ridge between it and the lower tail of f), and a stage whose stays are all
    instant leaves its time parameters to their priors instead of collapsing their scale.

    Returns the short exits' log-likelihood and the log factor (S, G, E) of the timed part,
    log(1 - h) - log S(r) (0 for pairs with no instant stays)."""
    import pymc as pm
    import pytensor.tensor as pt

    S, G, E = data.exit_n.shape
    instant = data.pairs[data.instant_pairs]
    passing = data.passing_pairs[data.instant_pairs]           # of those, the ones with no timed exit

    def spread(rows):                                          # (rows, S * E) one-hot of instant pairs
        out = np.zeros((len(rows), S * E))
        out[np.arange(len(rows)), rows[:, 0] * E + rows[:, 1]] = 1.0
        return out

    mask = spread(instant).sum(axis=0).reshape(S, E)           # 1 for the pairs with instant stays
    mixed_onehot = spread(instant[~passing])
    through = spread(instant[passing]).sum(axis=0).reshape(S, E)   # 1 for the pass-through pairs
    # pass-through pairs (every exit instant, none timed: nothing to learn a time from) have h = 1;
    # the others logit h pooled within the stage, with a fixed spread (no funnel): a pair with few
    # exits borrows the stage's share instead of leaving room for slow exits that would compete
    # with stalling for the stage's open stays (a ridge the sampler mixes badly in)
    log_h = 0.0
    log_rest = through * NO_TIMED_PART                         # log(1 - h): "never" for pass-through pairs
    shares = pt.as_tensor_variable(passing.astype(float))
    if (~passing).any():
        prior = config["instant_share"]
        _, stage_index = np.unique(instant[~passing, 0], return_inverse=True)
        stage_mean = pm.Normal("instant_logit_mean", prior["mu"], prior["sigma"], dims="instant_stage")
        logit_h = pm.Normal("instant_logit", stage_mean[stage_index], prior["spread"], dims="mixed_pair")
        log_h = pt.dot(-pt.softplus(-logit_h), mixed_onehot).reshape((S, E))     # log h; 0 elsewhere
        log_rest = log_rest + pt.dot(-pt.softplus(logit_h), mixed_onehot).reshape((S, E))
        shares = pt.set_subtensor(shares[np.flatnonzero(~passing)], pm.math.sigmoid(logit_h))
        log_h = log_h[:, None, :]
    pm.Deterministic("instant_share", shares, dims="instant_pair")
    log_sf_r = family.pymc_log_sf(data.short_log_t, loc, scale[:, None, :]) * mask[:, None, :]
    timed = log_rest[:, None, :] - log_sf_r                      # (S, G, E)
    short_ll = (d["short_n"] * (log_pi + log_h)).sum()
    return short_ll + (d["exit_n"] * timed).sum(), timed


def _revival_exit_loglik(d, logits, loc, scale, family, timed, rate, window):
    """What dormant deals that revive add to the exits (docs/revival.md). A stay stalls with
    probability pi_stall and then leaves at rate r (``rate`` (S,), per day) within ``window``
    days of entry, to j with the stage's usual shares q_j = pi_j / (1 - pi_stall). An exit to
    j after t days has density pi_j f_j(t) + pi_stall q_j r e^{-r t}, which is
    pi_j f_j(t) (1 + rho r e^{-r t} / f_j(t)) with rho = pi_stall / (1 - pi_stall): the exact
    terms of :func:`_exit_loglik` plus n log1p(rho r e^{-r t} / f_j(t)), taken per duration
    bin at its exits' mean log t (f_j the timed part where the pair has instant stays), for
    the bins that hold exits (:func:`revival_bins`)."""
    import pytensor.tensor as pt

    E = logits.shape[-1]
    index, n, log_t = d["revival_index"], d["revival_n"], d["revival_log_t"]
    log_f = family.exit_terms(pt, 1.0, log_t, log_t ** 2, log_t, loc.reshape((-1,))[index],
                              scale.reshape((-1,))[d["revival_scale_index"]])
    if timed is not None:
        log_f = log_f + timed.reshape((-1,))[index]
    days = pt.exp(log_t) - OFFSET_DAYS
    log_rho = -pt.logsumexp(logits, axis=-1).reshape((-1,))[index // E]      # stall against any move
    r = rate[d["revival_scale_index"] // E]
    log_revived = log_rho + pt.log(r) - r * days
    return (n * pt.where(days < window, pt.softplus(log_revived - log_f), 0.0)).sum()


def _open_loglik(d, logits, log_stall, loc, scale, family, timed=None, revival=None):
    """Σ over stays still open at age a of log(pi_stall + Σ_j pi_j S_j(a)), written as
    log pi_stall + log1p(Σ_j (pi_j / pi_stall) S_j(a)): the odds against stalling are
    exp(logit) (the stall logit is 0), so nothing underflows to log(0) however old the stay, and the
    survival functions are taken directly (no log-space series, no logsumexp). With
    ``revival`` (rate (S,) per day, window in days; :func:`_revival_exit_loglik`) a stalled
    stay is still open at age a with probability e^{-r min(a, window)}, which replaces the 1.

    Only cells holding open stays and destinations seen from their stage are evaluated
    (flat gathers, see :attr:`ModelData.open_lookup`): the survival functions are most of
    the gradient's cost."""
    import pytensor.tensor as pt

    odds = pt.exp(logits).reshape((-1,))[d["open_index"]] * d["open_mask"]     # (R, A)
    lam = loc.reshape((-1,))[d["open_index"]]
    sig = scale.reshape((-1,))[d["open_scale_index"]]
    if timed is None:
        surv = family.pymc_survival(d["open_age"][:, None], lam, sig)
    else:      # instant stays: (1 - h) S(a) / S(r), in logs (S(r) may underflow where the timed part is a prior)
        surv = pt.exp(family.pymc_log_sf(d["open_age"][:, None], lam, sig) + timed.reshape((-1,))[d["open_index"]])
    moving = (odds * surv).sum(axis=-1)
    if revival is None:
        still = pt.log1p(moving)
    else:
        rate, window = revival
        stage = d["open_scale_index"][:, 0] // logits.shape[-1]
        days = pt.minimum(pt.exp(d["open_age"]) - OFFSET_DAYS, window)
        still = pt.log(pt.exp(-rate[stage] * days) + moving)
    return (d["open_total"] * log_stall).sum() + (d["open_count"] * still).sum()
