"""Derived funnel quantities against Monte Carlo walks of the chain, root finding on the explicit
mixture CDF (scipy.stats) and a one-stage closed form. Times are in days."""

import numpy as np
import pytest
from scipy import optimize
from scipy import stats as st

from funnelsim.data.stats import OFFSET_DAYS
from funnelsim.model.derived import (
    Sojourn,
    expected_days_to_close,
    interval,
    loss_shares,
    median_days,
    mix_segments,
    p_close_from_entry,
    p_win_from_entry,
    visits_from_top,
    whole_funnel_median_days,
)  # fmt: skip

D, S, G = 3, 4, 2  # draws, open stages, segments
WON, LOST, STALL = S, S + 1, S + 2
N_WALKS = 100_000  # per (draw, start stage, segment)

# Destinations seen from each stage (1 = seen): open stages 0..3, won, lost, stall. Back moves
# (1->0, 2->1, 3->0, 3->2), skips (0->2, 1->3) and unseen destinations (pi exactly 0).
SEEN = np.array([
    [0, 1, 1, 0, 1, 1, 1],
    [1, 0, 1, 1, 0, 1, 1],
    [0, 1, 0, 1, 1, 1, 1],
    [1, 0, 1, 0, 1, 1, 1],
])  # fmt: skip


def random_posterior(family, seed=1):
    rng = np.random.default_rng(seed)
    pi = rng.dirichlet(np.full(S + 3, 2.0), size=(D, S, G)) * SEEN[None, :, None, :]
    pi /= pi.sum(axis=-1, keepdims=True)
    loc = rng.uniform(3.0, 40.0, size=(D, S, G, S + 2))  # typical time in t = days + 0.5
    if family == "lognormal":
        return pi, Sojourn.lognormal(np.log(loc), rng.uniform(0.3, 0.9, size=(D, S, S + 2)))
    return pi, Sojourn.weibull(rng.uniform(0.8, 2.5, size=(D, S, S + 2)), loc)


def sample_time(sojourn, d, s, g, j, rng):
    """Days in stage for deals (d, s, g) leaving to destination j (< S + 2)."""
    loc, shape = sojourn.loc_or_scale[d, s, g, j], sojourn.shape_or_sigma[d, s, j]
    t = np.exp(loc + shape * rng.standard_normal(d.size)) if sojourn.family == "lognormal" \
        else loc * rng.weibull(shape)
    return t - OFFSET_DAYS


def walk(pi, sojourn, start, rng):
    """N_WALKS deals per (draw, segment) entering stage ``start``, walked to absorption.

    Returns arrays (D, G, N_WALKS): outcome (WON, LOST or STALL), the stage it happened in,
    and the days spent in open stages (sojourns to non-stall destinations).
    """
    cum = np.cumsum(pi, axis=-1)
    d, g, _ = np.indices((D, G, N_WALKS)).reshape(3, -1)
    state = np.full(d.size, start)
    outcome, last, days = np.empty_like(state), np.empty_like(state), np.zeros(d.size)
    active = np.arange(d.size)
    while active.size:
        dd, ss, gg = d[active], state[active], g[active]
        u = rng.random(active.size)
        dest = np.minimum((u[:, None] >= cum[dd, ss, gg]).sum(axis=1), STALL)
        moves = dest < STALL
        at = (dd[moves], ss[moves], gg[moves], dest[moves])
        days[active[moves]] += sample_time(sojourn, *at, rng)
        ends = dest >= WON
        outcome[active[ends]], last[active[ends]] = dest[ends], ss[ends]
        state[active] = dest
        active = active[~ends]
    return outcome.reshape(D, G, -1), last.reshape(D, G, -1), days.reshape(D, G, -1)


@pytest.fixture(scope="module", params=["lognormal", "weibull"])
def walks(request):
    pi, sojourn = random_posterior(request.param)
    rng = np.random.default_rng(7)
    return pi, sojourn, [walk(pi, sojourn, start, rng) for start in range(S)]


def assert_within_se(estimate, mc, se, k=4.0):
    assert np.all(np.isfinite(estimate))
    z = np.abs(estimate - mc) / se
    assert np.all(z < k), f"max |z| = {z.max():.2f}\nestimate\n{estimate}\nmonte carlo\n{mc}"


def test_p_win_and_p_close_match_monte_carlo(walks):
    pi, _, runs = walks
    for start, (outcome, _, _) in enumerate(runs):
        for value, hit in [(p_win_from_entry(pi), outcome == WON),
                           (p_close_from_entry(pi), outcome != STALL)]:
            p = hit.mean(axis=-1)
            assert_within_se(value[:, start, :], p, np.sqrt(p * (1 - p) / N_WALKS))


def test_loss_shares_sum_to_one_and_match_monte_carlo(walks):
    pi, _, runs = walks
    shares = loss_shares(pi)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, rtol=1e-12)
    outcome, last, _ = runs[0]
    lost = outcome != WON
    n_lost = lost.sum(axis=-1)
    for s in range(S):
        p = (lost & (last == s)).sum(axis=-1) / n_lost
        assert_within_se(shares[:, s, :], p, np.sqrt(p * (1 - p) / n_lost))
    assert np.all(visits_from_top(pi)[:, 0] > 1)  # back moves bring deals back to stage 0


def test_expected_days_to_close_matches_monte_carlo(walks):
    pi, sojourn, runs = walks
    expected = expected_days_to_close(pi, sojourn)
    for start, (outcome, _, days) in enumerate(runs):
        closed = outcome != STALL
        n = closed.sum(axis=-1)
        mean = np.where(closed, days, 0).sum(axis=-1) / n
        var = np.where(closed, (days - mean[..., None]) ** 2, 0).sum(axis=-1) / (n - 1)
        assert_within_se(expected[:, start, :], mean, np.sqrt(var / n))


def scipy_dist(sojourn, d, s, g, j):
    """scipy.stats distribution of t = days + 0.5 for one (draw, stage, segment, destination)."""
    loc, shape = sojourn.loc_or_scale[d, s, g, j], sojourn.shape_or_sigma[d, s, j]
    if sojourn.family == "lognormal":
        return st.lognorm(s=shape, scale=np.exp(loc))
    return st.weibull_min(c=shape, scale=loc)


@pytest.mark.parametrize("family", ["lognormal", "weibull"])
def test_sojourn_matches_scipy_stats(family):
    _, sojourn = random_posterior(family, seed=4)
    t = np.array([0.2, 3.0, 17.0, 250.0])[:, None, None, None, None]
    for d, s, g, j in [(0, 0, 0, 0), (1, 2, 1, 4), (2, 3, 0, 5)]:
        dist = scipy_dist(sojourn, d, s, g, j)
        for method in ("cdf", "sf", "pdf"):
            np.testing.assert_allclose(getattr(sojourn, method)(t)[:, d, s, g, j],
                                       getattr(dist, method)(t[:, 0, 0, 0, 0]), rtol=1e-10)
        assert sojourn.mean()[d, s, g, j] == pytest.approx(dist.mean(), rel=1e-12)
        assert np.exp(sojourn.log_median()[d, s, g, j]) == pytest.approx(dist.median(), rel=1e-12)


def brentq_median_days(components):
    """Median in days of a mixture given as [(weight, cdf of t)], by brentq on t."""
    total = sum(w for w, _ in components)
    f = lambda t: sum(w * cdf(t) for w, cdf in components) / total - 0.5
    return optimize.brentq(f, 1e-3, 1e5, xtol=1e-14, rtol=1e-15) - OFFSET_DAYS


@pytest.mark.parametrize("family", ["lognormal", "weibull"])
def test_median_days_matches_brentq_on_the_mixture_cdf(family):
    pi, sojourn = random_posterior(family, seed=2)
    got = median_days(pi, sojourn)
    for d, s, g in np.ndindex(D, S, G):
        components = [(pi[d, s, g, j], scipy_dist(sojourn, d, s, g, j).cdf)
                      for j in range(S + 2) if pi[d, s, g, j] > 0]
        assert got[d, s, g] == pytest.approx(brentq_median_days(components), rel=1e-9)

    # whole funnel: segments weighted by entries, each destination by w_g * pi[g, j]
    weights = np.array([[30.0, 10.0], [5.0, 50.0], [1.0, 1.0], [0.0, 7.0]])
    funnel = whole_funnel_median_days(pi, sojourn, weights)
    for d, s in np.ndindex(D, S):
        components = [(weights[s, g] * pi[d, s, g, j], scipy_dist(sojourn, d, s, g, j).cdf)
                      for g in range(G) for j in range(S + 2) if weights[s, g] * pi[d, s, g, j] > 0]
        assert funnel[d, s] == pytest.approx(brentq_median_days(components), rel=1e-9)


@pytest.mark.parametrize("family", ["lognormal", "weibull"])
def test_whole_funnel_median_with_one_segment_is_that_segments_median(family):
    pi, sojourn = random_posterior(family, seed=3)
    for g in range(G):
        weights = np.zeros((S, G))
        weights[:, g] = 1.0
        np.testing.assert_allclose(whole_funnel_median_days(pi, sojourn, weights),
                                   median_days(pi, sojourn)[..., g], rtol=1e-12)


def test_single_stage_closed_form():
    # one stage; segment 0 wins p, loses q, stalls the rest; segment 1 always stalls
    p, q = 0.3, 0.45
    pi = np.array([[[[0.0, p, q, 1 - p - q], [0.0, 0.0, 0.0, 1.0]]]])  # (1, 1, 2, 4)
    mu = np.log([[[[np.nan, 20.0, 8.0], [np.nan, 5.0, 5.0]]]])  # stage -> itself never happens
    sigma = np.array([[[np.nan, 0.6, 1.1]]])
    sojourn = Sojourn.lognormal(mu, sigma)
    np.testing.assert_allclose(p_win_from_entry(pi)[0, 0], [p, 0.0])
    np.testing.assert_allclose(p_close_from_entry(pi)[0, 0], [p + q, 0.0])
    np.testing.assert_allclose(loss_shares(pi)[0, 0], [1.0, 1.0])
    np.testing.assert_allclose(visits_from_top(pi)[0, 0], [1.0, 1.0])
    mean_days = np.exp(np.log([20.0, 8.0]) + 0.5 * np.array([0.6, 1.1]) ** 2) - OFFSET_DAYS
    days = expected_days_to_close(pi, sojourn)[0, 0]
    assert days[0] == pytest.approx((p * mean_days[0] + q * mean_days[1]) / (p + q), rel=1e-12)
    assert np.isnan(days[1])  # never closes
    median = median_days(pi, sojourn)[0, 0]
    assert np.isfinite(median[0]) and np.isnan(median[1])  # never leaves


def test_mix_segments_and_interval():
    values = np.array([[[1.0, 3.0, np.nan], [2.0, np.nan, 4.0]]])  # (1 draw, 2 stages, 3 segments)
    weights = np.array([[1.0, 3.0, 0.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(mix_segments(values, weights), [[2.5, 2.0]])
    draws = np.arange(1001.0)[:, None] * [1.0, -1.0]
    mean, low, high = interval(draws, prob=0.9)
    np.testing.assert_allclose([mean, low, high], [[500.0, -500.0], [50.0, -950.0], [950.0, -50.0]])


def test_each_sojourn_family_defines_its_likelihood_terms_once():
    """The families of funnelsim.model.sojourn: one exit's terms (from its statistics, in the
    posterior parameters) are scipy's log-density, the open-stay survival scipy's survival, the
    natural parameters feed Sojourn; an unknown name is a FunnelDataError naming the known ones."""
    from funnelsim.data.events import FunnelDataError
    from funnelsim.model.sojourn import FAMILIES, LOGNORMAL, WEIBULL, family

    t = np.array([0.5, 3.0, 40.0, 700.0])
    loc, shape = np.log(25.0), 0.8                  # mu or log lambda; sigma or k
    scipy_of = {"lognormal": st.lognorm(shape, scale=np.exp(loc)), "weibull": st.weibull_min(shape, scale=np.exp(loc))}
    for kind in (LOGNORMAL, WEIBULL):
        dist = scipy_of[kind.name]
        log_t = np.log(t)
        terms = kind.exit_terms(np, 1.0, log_t, log_t**2, log_t, loc, shape)
        np.testing.assert_allclose(terms, dist.logpdf(t), rtol=1e-12)
        np.testing.assert_allclose(kind.survival(log_t, loc, shape), dist.sf(t), rtol=1e-9)
        natural = kind.natural(np.full((1, 1, 1, 1), loc), np.full((1, 1, 1), shape))
        sojourn = Sojourn(kind.name, *natural)
        np.testing.assert_allclose(sojourn.sf(t[:, None, None, None, None])[:, 0, 0, 0, 0], dist.sf(t), rtol=1e-9)
        assert family(kind.name) is kind and family(kind) is kind and FAMILIES[kind.name] is kind
    assert LOGNORMAL.code != WEIBULL.code and set(LOGNORMAL.params).isdisjoint(WEIBULL.params)
    with pytest.raises(FunnelDataError, match="unknown sojourn family 'gamma'") as error:
        family("gamma")
    assert error.value.hint == "Use 'lognormal' or 'weibull'."
