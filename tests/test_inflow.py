"""New deals: weekly counts from the log, their predictive distribution, and their simulation."""

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from funnelsim.data.events import FunnelDefinition, read_events
from funnelsim.data.spells import to_spells
from funnelsim.sim.inflow import (
    DISCOUNTS,
    NewDeals,
    created_won_draws,
    new_deal_draws,
    new_deal_pipeline,
    new_deal_stats,
)
from funnelsim.sim.kernel import Parameters, simulate

FUNNEL = FunnelDefinition(("Lead", "Qualified", "Proposal"), "Won", "Lost")


def log_of(rows):
    frame = pd.DataFrame(rows, columns=["deal_id", "stage", "timestamp", "amount", "segment"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    return read_events(frame, FUNNEL)


def test_new_deals_are_counted_per_week_back_from_the_end_of_as_of():
    log = log_of([
        ("A", "Lead", "2024-03-30 10:00", 10, "X"),        # week 0: the 7 days up to the end of 31 March
        ("B", "Lead", "2024-03-25 12:00", 10, "X"),        # 6.5 days before the end: week 0
        ("B", "Qualified", "2024-03-27 12:00", 10, "X"),   # a later move is not a new deal
        ("C", "Qualified", "2024-03-20 09:00", 10, "Y"),   # week 1, created straight into Qualified
        ("D", "Lead", "2024-04-02 09:00", 10, "Y"),        # after as-of: invisible
        ("E", "Lead", "2023-12-01 09:00", 10, "X"),        # the log's start: 17 full weeks covered
        ("F", "Won", "2024-03-28 09:00", 10, "X"),         # created won: never in the pipeline
    ])
    table = new_deal_stats(to_spells(log, as_of="2024-03-31", segment_by="segment"))
    assert table.attrs["weeks"] == 17
    assert len(table) == 2 * 3 * 17                         # every segment x stage x week, zeros included
    counted = table[table.deals > 0].set_index(["segment", "stage", "week"])["deals"].to_dict()
    assert counted == {("X", "Lead", 0): 2, ("Y", "Qualified", 1): 1}
    per_week = NewDeals(table).per_week
    assert per_week["X"] == pytest.approx(2 / 17) and per_week["Y"] == pytest.approx(1 / 17)
    short = new_deal_stats(to_spells(log, as_of="2023-12-10", segment_by="segment"))
    assert short.empty and short.attrs["weeks"] == 1 and NewDeals(short).weeks == 1


def history(weekly, shares=(0.8, 0.2, 0.0), segment="all"):
    rows = [{"segment": segment, "stage": FUNNEL.stages[e], "stage_index": e, "week": w,
             "deals": int(round(n * share))} for w, n in enumerate(weekly) for e, share in enumerate(shares)]
    table = pd.DataFrame(rows)
    table.attrs["weeks"] = len(weekly)
    return table


@pytest.mark.parametrize("weekly", [np.full(26, 20), np.tile([5, 40, 10, 45], 6)], ids=["steady", "bursty"])
def test_weekly_counts_follow_the_negative_binomial_predictive(weekly):
    table = history(weekly, shares=(1.0, 0.0, 0.0))
    # the flat rate (ω = 1): its predictive has a closed form; the moving level is tested below
    counts, cells = new_deal_draws(table, ["all"], 3, horizon_days=14, draws=60_000, seed=1, discount=1.0)
    assert list(cells.stage_index) == [0, 0] and list(cells.week) == [0, 1]     # no deals ever entered later
    n = table.groupby("week")["deals"].sum().to_numpy(float)
    W, total = n.size, n.sum()
    rate_mean, rate_var = (0.5 + total) / W, (0.5 + total) / W**2              # Gamma posterior of the rate
    m, v = n.mean(), n.var(ddof=1)
    over = (rate_var + rate_mean**2) * (v - m) / m**2 if v > m else 0.0          # E[rate^2] / r
    expected_var = rate_mean + rate_var + over
    for week in (0, 1):
        assert counts[:, week].mean() == pytest.approx(rate_mean, rel=0.01)
        assert counts[:, week].var() == pytest.approx(expected_var, rel=0.05)
    # a partial last week gets its share of the rate; the same seed gives the same counts
    partial, cells = new_deal_draws(table, ["all"], 3, horizon_days=10, draws=60_000, seed=1, discount=1.0)
    assert list(cells.start_width) == [7.0, 3.0]
    assert partial[:, 1].mean() == pytest.approx(rate_mean * 3 / 7, rel=0.02)
    again, _ = new_deal_draws(table, ["all"], 3, horizon_days=10, draws=60_000, seed=1, discount=1.0)
    np.testing.assert_array_equal(partial, again)


def test_entry_stages_split_by_their_history_and_unknown_segments_create_nothing():
    table = history(np.full(26, 50), shares=(0.8, 0.2, 0.0), segment="X")
    counts, cells = new_deal_draws(table, ["X", "Z"], 3, horizon_days=7, draws=20_000, seed=2)
    assert set(cells.segment_index) == {0} and list(cells.stage_index) == [0, 1]
    share = counts[:, 1].sum() / counts.sum()
    assert share == pytest.approx(0.2, abs=0.01)


def one_stage_sure_win(draws):
    """One open stage, every deal won (no loss, no stall); LogNormal(log 5, 0.7) in t."""
    pi = np.zeros((draws, 1, 1, 4))
    pi[..., 1] = 1.0
    loc = np.zeros((draws, 1, 1, 3))
    loc[..., 1] = np.log(5.0)
    return Parameters(pi=pi, family="lognormal", loc=loc, shape=np.full((draws, 1, 3), 0.7),
                      ratio_mean=np.zeros((draws, 1)), ratio_sd=np.zeros((draws, 1)),
                      won_amounts=np.full((1, 3), 100.0))


def test_new_deals_start_in_their_week_and_exist_only_in_draws_that_create_them():
    D, horizon = 20_000, 10
    counts = np.tile([[1], [0]], (D // 2, 1))                 # one new deal in every other draw
    cells = pd.DataFrame({"segment_index": [0], "stage_index": [0], "week": [0], "start_low": [0.0],
                          "start_width": [7.0]})
    sim = simulate(one_stage_sure_win(D), new_deal_pipeline(counts, cells), horizon, seed=4, counts=counts)
    wins = sim.wins.sum(axis=1)
    assert wins[1::2].sum() == 0                                # no deal in those draws, no win
    # created at a uniform time in the first 7 days, a stay of T - 0.5 days with T > 0.5
    dist = stats.lognorm(0.7, scale=5.0)
    def p_win(u):
        return (dist.cdf(horizon - 7 * u + 0.5) - dist.cdf(0.5)) / dist.sf(0.5)
    expected = integrate.quad(p_win, 0, 1)[0]
    observed = wins[::2].mean()
    assert abs(observed - expected) < 4 * np.sqrt(expected * (1 - expected) / (D // 2)), (observed, expected)
    np.testing.assert_allclose(sim.revenue.sum(axis=1), 100.0 * wins)   # valued from the won amounts


def test_deals_created_already_won_are_counted_with_their_amounts():
    log = log_of([
        ("A", "Won", "2024-03-29 10:00", 100, "X"),        # week 0
        ("B", "Won", "2024-03-20 10:00", 200, "Y"),        # week 1
        ("C", "Lead", "2024-03-26 10:00", 50, "X"),        # created in the pipeline, won later: not counted
        ("C", "Won", "2024-03-29 10:00", 55, "X"),
        ("D", "Lost", "2024-03-27 10:00", 70, "X"),        # created lost
        ("E", "Won", "2024-04-02 10:00", 300, "X"),        # after as-of: invisible
        ("F", "Won", "2023-10-01 10:00", 400, "X"),        # older than the weeks counted
        ("G", "Won", "2024-03-30 10:00", None, "Y"),       # no amount
        ("H", "Lead", "2023-09-01 10:00", 10, "X"),        # the log's start
    ])
    spells = to_spells(log, as_of="2024-03-31", segment_by="segment")
    inflow = NewDeals.from_log(log, spells, weeks=20)
    created = inflow.created_won
    assert created.attrs["weeks"] == 20 and inflow.weeks == 20
    rows = sorted(zip(created.segment, created.week, created.amount.fillna(-1), strict=True))
    assert rows == [("X", 0, 100.0), ("Y", 0, -1.0), ("Y", 1, 200.0)]
    assert inflow.created_won_per_week == pytest.approx(3 / 20)
    # deals created in the pipeline are the other kind of inflow, never both
    counted = inflow.stats[inflow.stats.deals > 0]
    assert list(counted.segment) == ["X"] and list(counted.week) == [0]


def test_created_won_revenue_matches_rate_times_amount():
    weeks = 26
    rng = np.random.default_rng(3)
    weekly = rng.poisson(4.0, weeks)
    amounts = {"X": [1000.0, 3000.0], "Y": [np.nan]}
    rows = [("X" if k % 3 else "Y", w, amounts["X" if k % 3 else "Y"][k % 2 if k % 3 else 0])
            for w, n in enumerate(weekly) for k in range(n)]
    created = pd.DataFrame(rows, columns=["segment", "week", "amount"])
    created.attrs["weeks"] = weeks
    horizon = 30                                            # four weeks and a partial one of 2 days
    period_of_day = np.arange(horizon) // 7                 # weekly periods
    fallback = np.array([np.full(5, 10.0), np.full(5, 500.0)])
    draws = 40_000
    out = created_won_draws(created, ["X", "Y"], horizon, draws, period_of_day, fallback, seed=4)
    assert out.shape == (2, 2, draws, 5)
    for g, segment in enumerate(["X", "Y"]):
        mine = created[created.segment == segment]
        rate = (0.5 + len(mine)) / weeks                    # per week, posterior mean
        value = mine.amount.fillna(fallback[g][0]).mean()  # Y has no amounts: its fallback's
        expected_wins = rate * horizon / 7
        assert out[1, g].sum(axis=1).mean() == pytest.approx(expected_wins, rel=0.02)
        assert out[0, g].sum(axis=1).mean() == pytest.approx(expected_wins * value, rel=0.03)
        # deals fall in the period of their day: the partial last week holds 2/7 of a week
        assert out[1, g, :, 4].mean() == pytest.approx(rate * 2 / 7, rel=0.05)
    # within its week a deal's day is uniform
    daily = created_won_draws(created, ["X", "Y"], horizon, draws, np.arange(horizon), fallback, seed=4)
    per_day = daily[1, 0].mean(axis=0)
    rate = (0.5 + (created.segment == "X").sum()) / weeks
    np.testing.assert_allclose(per_day, rate / 7, rtol=0.05)
    again = created_won_draws(created, ["X", "Y"], horizon, draws, period_of_day, fallback, seed=4)
    np.testing.assert_array_equal(out, again)
    with_value = created_won_draws(created, ["X", "Y"], horizon, 2000, period_of_day, fallback, deal_value=7.0, seed=4)
    assert with_value[0, 1].sum() == pytest.approx(7.0 * with_value[1, 1].sum())


def test_a_segment_with_only_created_won_deals_still_counts():
    created = pd.DataFrame({"segment": ["X", "Renewals", "Renewals", "Renewals"], "week": [0, 0, 1, 2],
                            "amount": [100.0, 50.0, 50.0, 50.0]})
    created.attrs["weeks"] = 4
    inflow = NewDeals(pd.DataFrame(columns=["segment", "stage", "stage_index", "week", "deals"]), created)
    assert inflow.created_won_segments(["X", "Y"]) == ["X", "Y", "Renewals"]
    out = inflow.created_won_revenue(["X", "Y"], 14, 20_000, np.zeros(14, int), np.full((2, 3), 9.0), seed=5)
    assert out.shape == (2, 3, 20_000, 1)
    assert out[0, 1].sum() == 0                                   # Y creates nothing
    assert out[1, 2].mean() == pytest.approx((0.5 + 3) / 4 * 2, rel=0.03)
    assert out[0, 2].sum() == pytest.approx(50.0 * out[1, 2].sum())


def test_the_level_discount_tells_a_moving_inflow_from_a_steady_or_bursty_one():
    """Issue 20 item 6: ω = 1 (a flat rate) for most steady histories, also over-dispersed
    ones, and ω <= 0.85 for most histories whose level walks (15% a week)."""
    from funnelsim.sim.inflow import level_discount

    rng = np.random.default_rng(0)
    steady = [level_discount([rng.poisson(20, 26).astype(float)]) for _ in range(150)]
    bursty = [level_discount([rng.negative_binomial(5, 0.2, 26).astype(float)]) for _ in range(150)]
    walking = [level_discount([rng.poisson(20 * np.exp(np.cumsum(rng.normal(0, 0.15, 26)))).astype(float)])
               for _ in range(150)]
    assert np.mean(np.array(steady) == 1.0) > 0.55 and np.mean(np.array(steady) >= 0.9) > 0.8
    assert np.mean(np.array(bursty) >= 0.9) > 0.8
    assert np.mean(np.array(walking) <= 0.85) > 0.6
    assert level_discount([np.full(7, 5.0)]) == 1.0                    # under 8 weeks: a flat rate


def test_a_moving_inflow_gets_a_band_that_holds_and_the_flat_rate_does_not():
    """New deals in the next 8 weeks when the weekly level walks (15% a week): the 80% band
    of the moving level holds the actual count about 80% of the time; the flat rate's,
    centred on the 26-week average, much less often."""
    rng = np.random.default_rng(3)
    held = {"level": [], "flat": [], "steady": []}
    for replicate in range(120):
        level = 20 * np.exp(np.cumsum(rng.normal(0, 0.15, 34)))
        for name, weekly in (("walking", rng.poisson(level)), ("steady", rng.poisson(20, 34))):
            table = history(weekly[:26][::-1], shares=(1.0, 0.0, 0.0))        # week 0 = the most recent
            actual = weekly[26:].sum()
            for label, discount in ((("level", None), ("flat", 1.0)) if name == "walking" else (("steady", None),)):
                counts, cells = new_deal_draws(table, ["all"], 3, horizon_days=56, draws=2000, seed=replicate,
                                               discount=discount)
                low, high = np.quantile(counts.sum(axis=1), [0.1, 0.9])
                held[label].append(low <= actual <= high)
    rates = {k: float(np.mean(v)) for k, v in held.items()}
    assert 0.68 <= rates["level"] <= 0.92 and rates["flat"] < rates["level"] - 0.2, rates
    assert 0.72 <= rates["steady"] <= 0.95, rates                              # steady inflows lose nothing
    assert set(cells.attrs["discounts"]) <= set(DISCOUNTS) and sum(cells.attrs["discounts"].values()) == pytest.approx(1)


def test_the_moving_level_keeps_the_mean_of_a_steady_history():
    table = history(np.full(26, 20), shares=(1.0, 0.0, 0.0))
    flat, cells = new_deal_draws(table, ["all"], 3, horizon_days=56, draws=40_000, seed=1, discount=1.0)
    assert cells.attrs["discounts"] == {1.0: 1.0}
    moving, _ = new_deal_draws(table, ["all"], 3, horizon_days=56, draws=40_000, seed=1, discount=0.8)
    assert moving.sum(axis=1).mean() == pytest.approx(flat.sum(axis=1).mean(), rel=0.02)
    assert moving.sum(axis=1).std() > 1.5 * flat.sum(axis=1).std()          # a level that may move is less sure
