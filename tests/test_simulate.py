"""The simulator against closed forms and the absorbing-chain algebra, and its invariances."""

import dataclasses

import numba
import numpy as np
import pytest
from scipy import stats

from funnelsim.sim.kernel import Parameters, Pipeline, simulate

D = 4000
HORIZON = 90


def one_stage(family="lognormal", draws=D):
    """One open stage: won 0.3 (median 40 days), lost 0.2 (median 20 days), stall 0.5."""
    pi = np.zeros((draws, 1, 1, 4))
    pi[..., 1], pi[..., 2], pi[..., 3] = 0.3, 0.2, 0.5
    loc = np.zeros((draws, 1, 1, 3))
    if family == "lognormal":
        loc[..., 1], loc[..., 2] = np.log(40), np.log(20)
        shape = np.full((draws, 1, 3), 0.8)
    else:
        loc[..., 1], loc[..., 2] = 40.0, 20.0       # Weibull scale (in t)
        shape = np.full((draws, 1, 3), 1.5)
    return Parameters(pi=pi, family=family, loc=loc, shape=shape, ratio_mean=np.zeros((draws, 1)),
                      ratio_sd=np.zeros((draws, 1)), won_amounts=np.full((1, 3), np.nan))


def closed_form(family, ages, horizon):
    """P(win within horizon | survived `age` days) and P(win ever | age), one stage."""
    if family == "lognormal":
        won, lost = stats.lognorm(0.8, scale=40), stats.lognorm(0.8, scale=20)
    else:
        won, lost = stats.weibull_min(1.5, scale=40), stats.weibull_min(1.5, scale=20)
    t = np.asarray(ages) + 0.5
    alive = 0.5 + 0.3 * won.sf(t) + 0.2 * lost.sf(t)
    return 0.3 * (won.sf(t) - won.sf(t + horizon)) / alive, 0.3 * won.sf(t) / alive


def pipeline_of(ages, stage=0, amount=100.0):
    n = len(ages)
    return Pipeline(stage=np.full(n, stage), segment=np.zeros(n, int), age_days=np.asarray(ages, float),
                    amount=np.full(n, amount))


@pytest.mark.parametrize("family", ["lognormal", "weibull"])
def test_one_stage_matches_the_closed_form_at_every_age(family):
    ages = [0.0, 10.0, 45.5, 200.0, 2000.0]          # 2000 days: far beyond any observed stay
    sim = simulate(one_stage(family), pipeline_of(ages), HORIZON, seed=3)
    p_horizon, p_ever = closed_form(family, ages, HORIZON)
    se = np.sqrt(p_horizon * (1 - p_horizon) / D)
    assert np.all(np.abs(sim.p_win_horizon - p_horizon) <= 4 * se + 1e-4), (sim.p_win_horizon, p_horizon)
    np.testing.assert_allclose(sim.p_win_ever, p_ever, rtol=1e-4, atol=1e-9)   # exact, not sampled
    assert np.all(np.isfinite(sim.expected_revenue))
    # revenue per draw: won deals times their amount (ratio exactly 1 here)
    np.testing.assert_allclose(sim.revenue.sum(axis=1), 100.0 * sim.wins.sum(axis=1))


def test_the_old_deal_is_mostly_stalled_and_never_nan():
    sim = simulate(one_stage(), pipeline_of([1e5]), HORIZON, seed=0)
    assert sim.p_win_horizon[0] == 0.0 and np.isfinite(sim.p_win_ever[0]) and sim.p_win_ever[0] < 1e-6


def chain(draws=D, back=True):
    """Three stages with forward, skip, back, won, lost and stall moves."""
    S = 3
    pi = np.zeros((draws, S, 1, S + 3))
    rows = [[0, 0.5, 0.1, 0.0, 0.25, 0.15],
            [0.1 if back else 0.0, 0, 0.5, 0.05, 0.2, 0.15 if back else 0.25],
            [0.05 if back else 0.0, 0.05 if back else 0.0, 0, 0.5, 0.3, 0.1 if back else 0.2]]
    pi[:, :, 0, :] = np.array(rows)
    loc = np.log(np.array([5.0, 10.0, 20.0]))[None, :, None, None] + np.zeros((draws, S, 1, S + 2))
    return Parameters(pi=pi, family="lognormal", loc=loc, shape=np.full((draws, S, S + 2), 0.7),
                      ratio_mean=np.zeros((draws, 1)), ratio_sd=np.zeros((draws, 1)),
                      won_amounts=np.full((1, 3), np.nan))


@pytest.mark.parametrize("back", [True, False])
def test_long_horizon_wins_match_the_absorbing_chain(back):
    """With a horizon far beyond every stay, the share of simulated wins equals the exact
    P(win ever) (absorbing chain, age-conditioned first move): the walk's moves are right."""
    params = chain(back=back)
    ages = np.array([0.0, 3.0, 30.0, 0.0, 12.0, 60.0, 0.0, 25.0, 90.0])
    pipe = Pipeline(stage=np.repeat([0, 1, 2], 3), segment=np.zeros(9, int), age_days=ages, amount=np.ones(9))
    sim = simulate(params, pipe, 100_000, period_of_day=np.zeros(100_000, int), seed=5)
    se = np.sqrt(sim.p_win_ever * (1 - sim.p_win_ever) / D)
    assert np.all(np.abs(sim.p_win_horizon - sim.p_win_ever) <= 4 * se), (sim.p_win_horizon, sim.p_win_ever)
    entry = params.p_win_from_entry()[0, :, 0]
    # an age-0 deal has survived nothing but the offset: close to the chain's P(win from entry)
    np.testing.assert_allclose(sim.p_win_ever[[0, 3, 6]], entry, atol=0.02)


def test_same_seed_same_numbers_whatever_the_chunk_or_threads():
    params, pipe = chain(draws=300), Pipeline(stage=np.arange(200) % 3, segment=np.zeros(200, int),
                                              age_days=np.arange(200) * 0.7, amount=np.linspace(1, 5, 200))
    reference = simulate(params, pipe, HORIZON, seed=11)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = simulate(params, pipe, HORIZON, seed=11, chunk_draws=7)
    finally:
        numba.set_num_threads(threads)
    for field in dataclasses.fields(reference):
        np.testing.assert_array_equal(getattr(single, field.name), getattr(reference, field.name))
    other = simulate(params, pipe, HORIZON, seed=12)
    assert not np.array_equal(other.revenue, reference.revenue)


def test_no_open_deals_gives_zero_revenue():
    sim = simulate(chain(draws=50), pipeline_of([]), HORIZON, seed=0)
    assert sim.revenue.shape == (50, HORIZON) and not sim.revenue.any() and not sim.wins.any()


def test_amounts_scale_revenue_linearly():
    params = dataclasses.replace(chain(draws=200), ratio_mean=np.full((200, 1), -0.05), ratio_sd=np.full((200, 1), 0.1))
    ages = np.arange(60.0)
    base = simulate(params, pipeline_of(ages, amount=1000.0), HORIZON, seed=2)
    triple = simulate(params, pipeline_of(ages, amount=3000.0), HORIZON, seed=2)
    np.testing.assert_allclose(triple.revenue, 3 * base.revenue, rtol=1e-12)
    np.testing.assert_array_equal(triple.wins, base.wins)
    # the won/last-open ratio: mean exp(m + s^2/2) per won deal
    ratio = base.revenue.sum() / base.wins.sum() / 1000.0
    assert ratio == pytest.approx(np.exp(-0.05 + 0.005), rel=0.01)


def test_deals_without_amount_take_their_segments_won_amounts():
    params = dataclasses.replace(chain(draws=400), won_amounts=np.linspace(100.0, 300.0, 51)[None, :])
    sim = simulate(params, pipeline_of(np.zeros(50), amount=np.nan), HORIZON, seed=4)
    per_win = sim.revenue.sum() / sim.wins.sum()
    assert per_win == pytest.approx(200.0, rel=0.02)      # uniform on 100..300


def test_bad_shapes_and_indices_are_refused():
    with pytest.raises(ValueError, match="stage indices"):
        simulate(chain(draws=5), pipeline_of([1.0], stage=3), HORIZON)
    with pytest.raises(ValueError, match="ages"):
        pipeline_of([-1.0])
    with pytest.raises(ValueError, match="horizon"):
        simulate(chain(draws=5), pipeline_of([1.0]), 0)


def elementwise(kernel):
    """A numba loop applying one of the simulator's scalar kernels to every element of an array."""
    @numba.njit(error_model="numpy")
    def apply(x):
        out = np.empty_like(x)
        for i in range(x.size):
            out[i] = kernel(x[i])
        return out
    return apply


def test_own_exp_matches_numpy_and_clips_instead_of_overflowing():
    """The simulator's exp (written so that its loops vectorise) against numpy's."""
    from funnelsim.sim._fastmath import _exp

    exp_all = elementwise(_exp)
    x = np.concatenate([np.linspace(-700, 700, 200_001), np.random.default_rng(0).normal(0, 5, 100_000), [0.0]])
    assert np.max(np.abs(exp_all(x) / np.exp(x) - 1)) < 1e-15
    edges = exp_all(np.array([-1e4, -708.0, 709.0, 1e4]))
    assert edges[0] == edges[1] and edges[3] == edges[2] and np.all(np.isfinite(edges))
    np.testing.assert_allclose(edges[1:3], np.exp([-708.0, 709.0]), rtol=1e-15)


def test_normal_quantile_matches_scipy_in_the_centre_and_both_tails():
    """Acklam's approximation as the kernel runs it (central formula for all, tail formula for
    the values listed in the tails): relative error 1.15e-9."""
    from scipy import special

    from funnelsim.sim._fastmath import _normal_quantiles

    @numba.njit(error_model="numpy")
    def quantiles(p):
        z = np.empty_like(p)
        _normal_quantiles(p.size, p, z, np.empty(p.size, np.int64))
        return z

    p = np.concatenate([np.geomspace(1e-300, 0.5, 50_000), 1 - np.geomspace(1e-16, 0.5, 50_000),
                        np.random.default_rng(1).random(50_000)])
    exact = special.ndtri(p)
    assert np.max(np.abs(quantiles(p) - exact) / np.maximum(np.abs(exact), 1e-9)) < 1.2e-9


def reference_win_times(params, paths, rng):
    """Win times (days after as-of) of ``paths`` deals aged 0 days in stage 0, by a plain numpy
    walk of the same model (draw 0 of ``params``, segment 0), independent of the kernel."""
    pi, loc, shape = params.pi[0, :, 0], params.loc[0, :, 0], params.shape[0]
    S = pi.shape[0]
    if params.family == "lognormal":
        dist = lambda s, j: stats.lognorm(shape[s, j], scale=np.exp(loc[s, j]))
    else:
        dist = lambda s, j: stats.weibull_min(shape[s, j], scale=loc[s, j])
    t_age = 0.5
    survive = np.array([dist(0, j).sf(t_age) if pi[0, j] > 0 else 0.0 for j in range(S + 2)])
    weights = np.append(pi[0, :S + 2] * survive, pi[0, S + 2])
    dest = rng.choice(S + 3, size=paths, p=weights / weights.sum())
    clock = np.zeros(paths)
    for j in range(S + 2):                       # the first stay, given it has lasted t_age
        at = dest == j
        if at.any():
            t = dist(0, j).isf(rng.random(at.sum()) * survive[j])
            clock[at] = np.maximum(t - t_age, 0.0)
    won = np.full(paths, np.inf)
    stage = np.zeros(paths, int)
    for _ in range(200):
        won[dest == S] = clock[dest == S]
        moving = dest < S
        if not moving.any():
            break
        stage[moving] = dest[moving]
        new_dest = dest.copy()
        for s in range(S):
            at = moving & (stage == s)
            new_dest[at] = rng.choice(S + 3, size=at.sum(), p=pi[s])
            for j in range(S + 2):
                go = at & (new_dest == j)
                if go.any():
                    clock[go] += np.maximum(dist(s, j).rvs(size=go.sum(), random_state=rng) - 0.5, 0.0)
        dest = np.where(moving, new_dest, S + 2)
    return won


@pytest.mark.parametrize("family", ["lognormal", "weibull"])
def test_time_to_win_through_several_stages_matches_a_plain_walk(family):
    """The distribution of win times of deals that go through several stays (skips and moves
    back) matches an independent numpy walk of the same model, for both sojourn families."""
    params = chain(back=True)
    params = dataclasses.replace(params, loc=params.loc + np.log(1 + 0.6 * np.arange(5)))  # times by destination too
    if family == "weibull":
        params = dataclasses.replace(params, family="weibull", loc=np.exp(params.loc) * 1.2,
                                     shape=np.full_like(params.shape, 1.5))
    deals = 20
    pipe = Pipeline(stage=np.zeros(deals, int), segment=np.zeros(deals, int), age_days=np.zeros(deals),
                    amount=np.ones(deals))
    horizon = 150
    sim = simulate(params, pipe, horizon, seed=11)
    simulated = np.cumsum(sim.close_days.sum(axis=0)) / (deals * D)
    reference = reference_win_times(params, 200_000, np.random.default_rng(3))
    days = np.array([5, 10, 20, 40, 80, 149])
    expected = np.array([(reference < d + 1).mean() for d in days])
    se = np.sqrt(expected * (1 - expected) / (deals * D) + expected * (1 - expected) / 200_000)
    assert np.all(np.abs(simulated[days] - expected) <= 4 * se + 1e-4), (simulated[days], expected)


@pytest.mark.parametrize("family", ["lognormal", "weibull"])
def test_an_old_deals_close_day_follows_the_sojourn_truncated_at_its_age(family):
    """The rest of an old deal's first stay is drawn given the stay has already lasted its
    age: among the paths that win within the horizon, the close day of a deal aged a days
    (t_age = a + 0.5) follows P(day <= k) = (F(t_age + k + 1) - F(t_age)) / (F(t_age + H) - F(t_age)),
    F the won sojourn's CDF (one stage, so every win is the first move). Untruncated draws
    would close a 45-day-old deal on day 0 in most of its winning paths (about 3% here)."""
    copies = 10                                      # deals with their own random streams, per age
    ages = np.repeat([0.0, 45.0], copies)
    sim = simulate(one_stage(family), pipeline_of(ages), HORIZON, seed=7)
    won = stats.lognorm(0.8, scale=40) if family == "lognormal" else stats.weibull_min(1.5, scale=40)
    days = np.arange(HORIZON)
    for age in (0.0, 45.0):
        counts = sim.close_days[ages == age].sum(axis=0)
        n = counts.sum()
        assert n > 2000, n
        t_age = age + 0.5
        exact = (won.cdf(t_age + days + 1) - won.cdf(t_age)) / (won.cdf(t_age + HORIZON) - won.cdf(t_age))
        simulated = np.cumsum(counts) / n
        se = np.sqrt(exact * (1 - exact) / n)
        assert np.all(np.abs(simulated - exact) <= 4 * se + 1e-3), (age, simulated[[0, 5, 20, 50]], exact[[0, 5, 20, 50]])
        day0 = counts[0] / n                         # the share closing the day after as-of
        assert abs(day0 - exact[0]) <= 4 * np.sqrt(exact[0] * (1 - exact[0]) / n) + 1e-3, (age, day0, exact[0])
        median = np.argmax(exact >= 0.5)             # 33/23 (lognormal), 29/15 (Weibull) days
        assert abs(np.argmax(simulated >= 0.5) - median) <= 1, (age, simulated, median)
        assert np.all(np.abs(sim.median_close_day()[ages == age] - median) <= 4), (age, sim.median_close_day(), median)
