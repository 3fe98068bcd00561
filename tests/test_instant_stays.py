"""Instant stays: exits shorter than the log's resolution (docs/short-stays.md).

The statistics keep them apart, the likelihood reads them as a point mass (the instant share h
of a (stage, destination)) beside the family truncated to t >= the resolution, and the derived
quantities and the simulator follow the same mixture. Each is checked against an independent
implementation: a per-stay likelihood written with scipy, scipy's truncated distributions and a
plain numpy walk of the same process.
"""

import dataclasses

import numpy as np
import pytest
from scipy import stats

from funnelsim.data import synth
from funnelsim.data.events import FunnelDefinition, read_events
from funnelsim.data.spells import to_spells
from funnelsim.data.stats import OFFSET_DAYS, SHORT_BIN, SHORT_DAYS, SHORT_DAYS_DATE_ONLY, to_stage_stats
from funnelsim.model.derived import Sojourn, median_days
from funnelsim.model.funnel_model import pointwise_loglik
from funnelsim.model.likelihood import DEFAULT_CONFIG, build_pymc_model, centred_cells, model_data
from funnelsim.sim.kernel import Parameters, Pipeline, simulate

AWKWARD = {"pass_through": {"Qualified": 1.0}, "p_same_day_jump": 0.15}


def _log(n=3000, seed=5, **timing):
    config = synth.SynthConfig(segments={"A": 0.6, "B": 0.4}, weeks=30, **timing)
    events, truth = synth.generate(n, seed=seed, config=config)
    funnel = FunnelDefinition(config.stages, config.won, config.lost)
    spells = to_spells(read_events(events, funnel), segment_by="segment")
    return funnel, spells.to_pandas(), to_stage_stats(spells), truth


@pytest.fixture(scope="module")
def awkward():
    return _log(**AWKWARD)


# --------------------------------------------------------------------------- statistics

def test_exits_shorter_than_the_resolution_have_their_own_rows(awkward):
    funnel, per_stay, table, _ = awkward
    assert table.short_days == SHORT_DAYS                       # times of day: an hour
    exits = per_stay[per_stay.move != "censored"]
    short = table.table[table.table["bin"] == SHORT_BIN]
    assert short["n"].sum() == (exits.days < SHORT_DAYS).sum() > 1000   # Qualified passes straight through
    assert (short["days_low"] == 0).all() and (short["days_high"] == SHORT_DAYS).all()
    # nothing is lost: every stay is in exactly one row
    assert table.table["n"].sum() == len(per_stay)
    assert (table.table.loc[table.table["bin"] >= 0, "days_low"] >= 0).all()


def test_a_log_of_dates_reads_same_day_stays_as_instant():
    _, per_stay, table, _ = _log(n=800, date_only=True, p_same_day_jump=0.2)
    assert table.short_days == SHORT_DAYS_DATE_ONLY
    exits = per_stay[per_stay.move != "censored"]
    short = table.table.loc[table.table["bin"] == SHORT_BIN, "n"].sum()
    assert short == (exits.days == 0).sum() > 0


# --------------------------------------------------------------------------- likelihood

def _per_stay_loglik(per_stay, funnel, pi, loc, scale, h, family, r):
    """The instant-stay likelihood stay by stay with scipy: log pi_j + log h_j for a short exit,
    log pi_j + log(1 - h_j) + log f_j(t) - log S_j(r) for a timed one where h_j > 0, and
    pi_stall + sum_j pi_j (1 - h_j) S_j(a) / S_j(r) for an open stay."""
    stages, segments = list(funnel.stages), sorted(per_stay.segment.unique())
    dests = [*stages, funnel.won_name, funnel.lost_name]
    s = per_stay.stage.map(stages.index).to_numpy()
    g = per_stay.segment.map(segments.index).to_numpy()
    t = per_stay.days.to_numpy() + OFFSET_DAYS
    open_ = (per_stay.move == "censored").to_numpy()

    def dist(si, gi, j):
        if family == "lognormal":
            return stats.lognorm(s=scale[si, j], scale=np.exp(loc[si, gi, j]))
        return stats.weibull_min(c=scale[si, j], scale=np.exp(loc[si, gi, j]))

    total = 0.0
    j = per_stay.destination[~open_].map(dests.index).to_numpy()
    se, ge, te = s[~open_], g[~open_], t[~open_]
    short = te < r
    hj = h[se, j]
    d = dist(se, ge, j)
    timed = np.log1p(-hj) + d.logpdf(te) - np.where(hj > 0, d.logsf(r), 0.0)
    total += (np.log(pi[se, ge, j]) + np.where(short, np.log(np.where(short, hj, 1.0)), timed)).sum()
    so, go, to = s[open_], g[open_], t[open_]
    E = len(dests)
    d = dist(so[:, None], go[:, None], np.arange(E)[None, :])
    surv = d.sf(to[:, None]) * (1 - h[so]) / np.where(h[so] > 0, d.sf(r), 1.0)
    mix = (pi[so, go, :E] * surv).sum(axis=1) + pi[so, go, E]
    return total + np.log(mix).sum()


@pytest.mark.parametrize("family", ["lognormal", "weibull"])
def test_instant_stay_likelihood_equals_a_per_stay_implementation(awkward, family):
    import pytensor

    funnel, per_stay, table, _ = awkward
    data = model_data(table, funnel)
    assert data.has_short and data.instant_pairs.sum() >= 4
    model = build_pymc_model(data, family, DEFAULT_CONFIG, centred_cells(data, "non-centred", 0.0))
    names = ("mu", "sigma") if family == "lognormal" else ("log_scale", "shape_k")
    outputs = model.replace_rvs_by_values([model["loglik"], model["pi"], model[names[0]], model[names[1]],
                                           model["instant_share"]])
    compiled = pytensor.function(model.value_vars, outputs, on_unused_input="ignore")
    rng = np.random.default_rng(0)
    base = model.initial_point()
    r = float(np.exp(data.short_log_t))
    S, E = len(data.stages), len(data.destinations) - 1
    pairs = data.pairs[data.instant_pairs]
    for _ in range(3):
        point = {k: v + rng.normal(0, 0.3, size=np.shape(v)) for k, v in base.items()}
        value, pi, loc, scale, share = compiled(*[point[v.name] for v in model.value_vars])
        h = np.zeros((S, E))
        h[pairs[:, 0], pairs[:, 1]] = share
        exact = _per_stay_loglik(per_stay, funnel, pi, loc, scale, h, family, r)
        tolerance = 1e-4 if family == "lognormal" else 2e-3     # open stays (and Weibull exits) binned
        assert abs(value - exact) / abs(exact) < tolerance
        arrays = {"pi": pi[None], names[0]: loc[None], names[1]: scale[None], "instant": h[None]}
        rows = pointwise_loglik(table, data, family, arrays)
        assert rows.sum() == pytest.approx(float(value), rel=1e-4)


def test_without_instant_stays_the_old_model_reads_them_as_durations(awkward):
    funnel, _, table, _ = awkward
    old = model_data(table, funnel, instant_stays=False)
    new = model_data(table, funnel)
    assert not old.has_short and old.instant_pairs.sum() == 0
    np.testing.assert_allclose(old.exit_n, new.exit_n + new.short_n)


# --------------------------------------------------------------------------- derived quantities

def _mixture(h, r, mu, sigma):
    """One stage, one segment, destinations (stage, won, lost): won is instant with share h."""
    loc = np.zeros((1, 1, 1, 3))
    loc[..., 1], loc[..., 2] = mu, np.log(20)
    shape = np.full((1, 1, 3), sigma)
    instant = np.zeros((1, 1, 3))
    instant[..., 1] = h
    return Sojourn("lognormal", loc, shape, instant, r)


def test_sojourn_with_instant_stays_is_the_mixture_of_a_point_mass_and_a_truncated_family():
    h, r, mu, sigma = 0.3, 0.5 + SHORT_DAYS, np.log(6.0), 1.2
    soj = _mixture(h, r, mu, sigma)
    timed = stats.truncnorm((np.log(r) - mu) / sigma, np.inf, loc=mu, scale=sigma)   # log t given t >= r
    for t in (0.5, 0.52, r, 1.0, 3.0, 10.0, 60.0):
        expected = h + (1 - h) * timed.cdf(np.log(t)) if t >= r else h
        assert soj.cdf(t)[0, 0, 0, 1] == pytest.approx(expected, abs=1e-12)
        assert soj.sf(t)[0, 0, 0, 2] == pytest.approx(stats.lognorm.sf(t, 1.2, scale=20), rel=1e-12)  # h = 0
    mean_timed = stats.lognorm(sigma, scale=np.exp(mu)).expect(lb=r, conditional=True)
    assert soj.mean()[0, 0, 0, 1] == pytest.approx(h * OFFSET_DAYS + (1 - h) * mean_timed, rel=1e-7)


def test_a_stage_most_deals_pass_straight_through_has_a_median_of_zero_days():
    r = 0.5 + SHORT_DAYS
    pi = np.zeros((1, 1, 1, 4))
    pi[..., 1], pi[..., 2], pi[..., 3] = 0.9, 0.05, 0.05
    assert median_days(pi, _mixture(0.7, r, np.log(6.0), 1.0))[0, 0, 0] == pytest.approx(0.0, abs=1e-9)
    # h = 0.3: the median is the timed part's (0.5 - 0.3 / 0.9) / 0.7 quantile above r, in days
    mixed = median_days(pi, _mixture(0.3, r, np.log(6.0), 1.0))[0, 0, 0]
    share_won = 0.9 / 0.95
    p = (0.5 - share_won * 0.3)       # of the exits, the part of the median mass in the timed parts
    # solve share_won (h + (1 - h) G_won(t)) + (1 - share_won) F_lost(t) = 0.5 by bisection, scipy
    g_won = stats.truncnorm((np.log(r) - np.log(6.0)) / 1.0, np.inf, loc=np.log(6.0), scale=1.0)
    f = lambda t: share_won * (0.3 + 0.7 * g_won.cdf(np.log(t))) + (1 - share_won) * stats.lognorm.cdf(t, 1.0, scale=20)
    from scipy.optimize import brentq

    assert p > 0
    assert mixed == pytest.approx(brentq(lambda t: f(t) - 0.5, r, 1e4) - OFFSET_DAYS, rel=1e-8)


# --------------------------------------------------------------------------- simulator

def _two_stages(h_next, h_won, draws=1):
    """A -> B 0.7 (LogNormal median 5 days, instant share h_next), A -> lost 0.2, stall 0.1;
    B -> won 0.8 (median 3 days, instant share h_won), B -> lost 0.2."""
    S = 2
    pi = np.zeros((draws, S, 1, S + 3))
    pi[:, 0, 0, 1], pi[:, 0, 0, 3], pi[:, 0, 0, 4] = 0.7, 0.2, 0.1
    pi[:, 1, 0, 2], pi[:, 1, 0, 3] = 0.8, 0.2
    loc = np.zeros((draws, S, 1, S + 2))
    loc[:, 0, 0, 1], loc[:, 0, 0, 3] = np.log(5.0), np.log(8.0)
    loc[:, 1, 0, 2], loc[:, 1, 0, 3] = np.log(3.0), np.log(8.0)
    shape = np.full((draws, S, S + 2), 0.7)
    instant = np.zeros((draws, S, S + 2))
    instant[:, 0, 1], instant[:, 1, 2] = h_next, h_won
    return Parameters(pi=pi, family="lognormal", loc=loc, shape=shape, ratio_mean=np.zeros((draws, 1)),
                      ratio_sd=np.zeros((draws, 1)), won_amounts=np.full((1, 3), np.nan),
                      instant=instant, short_t=0.5 + SHORT_DAYS)


def _plain_walk(rng, n, h_next, h_won, r, horizon):
    """The same process walked with numpy: the close day of each won path (NaN otherwise)."""
    def stay(median, h, size):
        instant = rng.random(size) < h
        lo = stats.lognorm.cdf(r, 0.7, scale=median) if h > 0 else 0.0     # the timed part: t >= r
        t = stats.lognorm.ppf(lo + rng.random(size) * (1 - lo), 0.7, scale=median)
        return np.where(instant, 0.0, np.maximum(t - OFFSET_DAYS, 0.0))
    to_b = rng.random(n) < 0.7
    won = rng.random(n) < 0.8
    clock = stay(5.0, h_next, n) + stay(3.0, h_won, n)
    day = np.floor(clock)
    return np.where(to_b & won & (clock < horizon), day, np.nan)


@pytest.mark.parametrize("h_next,h_won", [(0.6, 0.3), (1.0, 0.5)])
def test_new_stays_in_the_simulator_follow_the_instant_mixture(h_next, h_won):
    n, horizon = 40_000, 30
    params = _two_stages(h_next, h_won)
    sim = simulate(params, Pipeline(stage=np.zeros(n, int), segment=np.zeros(n, int), age_days=np.zeros(n),
                                    amount=np.full(n, 1.0)), horizon, seed=11)
    kernel_days = sim.close_days.sum(axis=0)                              # won paths per close day
    walk = _plain_walk(np.random.default_rng(3), n, h_next, h_won, 0.5 + SHORT_DAYS, horizon)
    walk_days = np.bincount(walk[~np.isnan(walk)].astype(int), minlength=horizon)
    assert kernel_days[0] > 0.7 * 0.8 * h_next * h_won * n * 0.9          # deals through both stages at once
    table = np.stack([kernel_days, walk_days])
    table = table[:, table.sum(axis=0) > 0]
    assert stats.chi2_contingency(table).pvalue > 1e-3, (kernel_days[:6], walk_days[:6])
    # without the instant shares the same walk is far from the kernel: the test can fail
    plain = simulate(dataclasses.replace(params, instant=None), Pipeline(
        stage=np.zeros(n, int), segment=np.zeros(n, int), age_days=np.zeros(n), amount=np.full(n, 1.0)),
        horizon, seed=11).close_days.sum(axis=0)
    assert stats.chi2_contingency(np.stack([plain, walk_days])[:, (plain + walk_days) > 0]).pvalue < 1e-6


def test_an_open_deal_has_passed_its_chance_of_an_instant_stay():
    """A deal aged 10 days cannot leave instantly any more: its weights are pi_j (1 - h_j)
    S_j(age) / S_j(r), and P(win ever) is exact (not sampled)."""
    r = 0.5 + SHORT_DAYS
    params = _two_stages(0.6, 0.3, draws=200)
    sim = simulate(params, Pipeline(stage=np.zeros(1, int), segment=np.zeros(1, int), age_days=np.array([10.0]),
                                    amount=np.ones(1)), 60, seed=2)
    t = 10.0 + OFFSET_DAYS
    to_b = 0.7 * 0.4 * stats.lognorm.sf(t, 0.7, scale=5.0) / stats.lognorm.sf(r, 0.7, scale=5.0)
    lost = 0.2 * stats.lognorm.sf(t, 0.7, scale=8.0)
    expected = to_b * 0.8 / (to_b + lost + 0.1)
    assert sim.p_win_ever[0] == pytest.approx(expected, rel=1e-4)



def test_instant_shares_of_the_wrong_shape_are_refused():
    """Instant shares per (draw, stage, destination): another shape is a ValueError naming the
    array, not an index error (or silently wrong shares) deep in the kernel."""
    params = _two_stages(0.6, 0.3, draws=2)
    pipeline = Pipeline(stage=np.zeros(1, int), segment=np.zeros(1, int), age_days=np.zeros(1), amount=np.ones(1))
    with pytest.raises(ValueError, match=r"Parameters.instant needs shape \(2, 2, 4\)"):
        simulate(dataclasses.replace(params, instant=params.instant[:, :, :3]), pipeline, 10, seed=1)

# --------------------------------------------------------------------------- convergence (slow)

SEEDS = (1, 2, 3, 4, 5)
# at 4,000 deals the 90% intervals held 78 of 100 cells, every miss an underestimate (the
# segments' shrinkage towards each other, mostly Enterprise); at 20,000, 17 of 20 on one seed
DEALS = 13_000


def _awkward_snapshot(seed):
    """A 13,000-deal year with a pass-through stage (every Qualified stay lasts seconds) and 10%
    of forward moves clicked through at once: the size and shape of the real funnel of issue 18."""
    from funnelsim.data.snapshot import Snapshot

    config = synth.SynthConfig(weeks=52, pass_through={"Qualified": 1.0}, p_same_day_jump=0.1)
    events, truth = synth.generate(DEALS, seed=seed, config=config)
    funnel = FunnelDefinition(truth["stages"], won=truth["won"], lost=truth["lost"])
    return Snapshot.read(events, funnel, as_of=truth["as_of"], segment_by=truth["segment_column"], every=None), truth


def _covered(model, truth) -> tuple[int, int]:
    table = model.stage_table()
    hit = total = 0
    for cell in truth["cells"]:
        rows = table[(table.stage == cell["stage"])
                     & (table.segment.isna() if cell["segment"] is None else table.segment == cell["segment"])]
        row = rows.iloc[0]
        total += 1
        hit += bool(row.p_win_from_entry_low <= cell["p_win_from_entry"] <= row.p_win_from_entry_high)
    return hit, total


@pytest.mark.slow
def test_default_fits_converge_on_pass_through_stages_and_recover_p_win():
    """Over 5 seeds the default fit passes its own checks (R-hat <= 1.01, ESS >= 400, no
    divergences) and P(win from entry) of at least 80% of the cells lies in its 90% interval.
    The instant shares are recovered too: near 1 at the pass-through, about 0.1 for forward
    moves elsewhere."""
    import warnings

    from funnelsim.model.funnel_model import FunnelModel

    hits = cells = 0
    table = []
    for seed in SEEDS:
        snapshot, truth = _awkward_snapshot(seed)
        model = FunnelModel.from_snapshot(snapshot)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(random_seed=seed)
        diag = model.diagnostics
        table.append((seed, diag["r_hat_max"], diag["ess_bulk_min"], diag["ess_tail_min"], diag["divergences"]))
        assert diag["converged"], table
        hit, total = _covered(model, truth)
        hits, cells = hits + hit, cells + total
        share = model.idata.posterior["instant_share"].mean(("chain", "draw")).to_series()
        assert share["Qualified -> Proposal"] > 0.99
        assert share["Prospecting -> Qualified"] == pytest.approx(0.1, abs=0.03)
    print("\nseed, max R-hat, min bulk ESS, min tail ESS, divergences:", table)
    assert hits >= 0.8 * cells, (hits, cells)


@pytest.mark.slow
def test_default_fits_converge_on_a_log_of_dates_with_same_day_jumps():
    """A date-only log (no time of day) with 20% of forward moves on the same day: every such stay
    lasts 0 days. At 13,000 deals the default fit converges at each seed and holds P(win from
    entry) in its 90% interval in at least 80% of the cells (measured over seeds 1-5: 91 of 100;
    at 4,000 deals seeds 2 and 3 fall short, R-hat 1.023 and 1.014: docs/short-stays.md)."""
    import warnings

    from funnelsim.data.snapshot import Snapshot
    from funnelsim.model.funnel_model import FunnelModel

    hits = cells = 0
    for seed in SEEDS[:3]:
        config = synth.SynthConfig(weeks=52, date_only=True, p_same_day_jump=0.2)
        events, truth = synth.generate(DEALS, seed=seed, config=config)
        funnel = FunnelDefinition(truth["stages"], won=truth["won"], lost=truth["lost"])
        snapshot = Snapshot.read(events, funnel, as_of=truth["as_of"], segment_by=truth["segment_column"], every=None)
        assert snapshot.stage_stats.short_days == SHORT_DAYS_DATE_ONLY
        model = FunnelModel.from_snapshot(snapshot)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(random_seed=seed)
        assert model.diagnostics["converged"], (seed, model.diagnostics["worst"])
        hit, total = _covered(model, truth)
        hits, cells = hits + hit, cells + total
    assert hits >= 0.8 * cells, (hits, cells)


@pytest.mark.slow
def test_the_model_without_instant_stays_fails_on_the_same_logs():
    """The model before instant stays (they read as durations of about 0 days) fails its checks on
    the same logs: its scale at the pass-through collapses (two of the seeds, at the defaults)."""
    import warnings

    from funnelsim.model.funnel_model import FunnelModel

    for seed in SEEDS[:2]:
        snapshot, _ = _awkward_snapshot(seed)
        model = FunnelModel.from_snapshot(snapshot, model_config={"instant_stays": False})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(random_seed=seed)
        assert not model.diagnostics["converged"]
        assert model.diagnostics["r_hat_max"] > 1.05
