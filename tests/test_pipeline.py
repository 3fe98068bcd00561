"""Open deals and won-amount statistics as the CRM looked on the as-of date."""

import numpy as np
import pandas as pd
import pytest

from funnelsim.data.deals import amount_stats, open_deals, ratio_draws, won_amount_quantiles
from funnelsim.data.events import read_events
from funnelsim.data.spells import to_spells


def test_open_deals_on_the_hand_built_log(small_log, funnel):
    log = read_events(small_log, funnel)
    spells = to_spells(log, as_of="2024-02-15", segment_by="region")
    deals = open_deals(log, spells).set_index("deal_id")
    # d4 in Lead since 2024-02-01 09:00 (blank region); d5 in Qualified since 2024-01-20 (its
    # Proposal row on 2024-03-01 is after the as-of date and hidden, amount 30 still visible)
    assert list(deals.index) == ["d4", "d5"]
    assert deals.loc["d4", ["stage", "segment"]].tolist() == ["Lead", "(blank)"]
    assert deals.loc["d4", "age_days"] == pytest.approx(14 + 15 / 24)
    assert deals.loc["d5", ["stage", "segment", "amount"]].tolist() == ["Qualified", "US", 30.0]
    assert deals.loc["d5", "age_days"] == pytest.approx(27.0)


def test_amounts_after_the_as_of_date_are_invisible(small_log, funnel):
    later = small_log.assign(amount=np.where(small_log.timestamp >= "2024-02-16", 9_999.0, small_log.amount))
    frames = []
    for frame in (small_log, later):
        log = read_events(frame, funnel)
        spells = to_spells(log, as_of="2024-02-15", segment_by="region")
        frames.append((open_deals(log, spells), amount_stats(log, spells)))
    pd.testing.assert_frame_equal(frames[0][0], frames[1][0])
    pd.testing.assert_frame_equal(frames[0][1], frames[1][1])


def test_amount_stats_ratio_of_won_to_last_open_amount(small_log, funnel):
    log = read_events(small_log, funnel)
    stats = amount_stats(log, to_spells(log, as_of="2024-02-15", segment_by="region")).set_index("segment")
    # EU: d1 won at 150 after 120 (ratio 1.25); d3 created won at 70 (no open amount: no ratio)
    assert stats.loc["EU", ["won_deals", "ratio_n"]].tolist() == [2, 1]
    assert stats.loc["EU", "ratio_sum"] == pytest.approx(np.log(1.25))
    assert stats.loc["EU", "won_amounts"][0] == 70.0 and stats.loc["EU", "won_amounts"][-1] == 150.0
    assert stats.loc["US", "won_deals"] == 0 and stats.loc["US", "won_amounts"] == []


def test_ratio_draws_recover_a_known_ratio_and_fall_back_to_the_prior():
    rng = np.random.default_rng(0)
    x = rng.normal(-0.1, 0.2, 400)
    stats = pd.DataFrame({"segment": ["A"], "won_deals": [400], "ratio_n": [400], "ratio_sum": [x.sum()],
                          "ratio_sum2": [(x**2).sum()], "won_amounts": [list(np.linspace(1, 2, 51))]})
    mean, sd = ratio_draws(stats, ["A", "B"], 4000, seed=1)
    assert mean[:, 0].mean() == pytest.approx(x.mean(), abs=0.005)
    assert sd[:, 0].mean() == pytest.approx(x.std(), rel=0.05)
    assert abs(mean[:, 1].mean()) < 0.01 and 0.05 < sd[:, 1].mean() < 0.3      # prior: ratio ~1
    table = won_amount_quantiles(stats, ["A", "B"])
    np.testing.assert_allclose(table[1], table[0], rtol=1e-12)                   # B borrows A's amounts


@pytest.mark.parametrize("won", [26, 51, 101])
def test_won_amount_quantiles_where_the_position_lands_next_to_an_integer(funnel, won):
    """(n - 1) q in floating point can land just past an integer (25 x 0.28 = 7.000000000000001)
    while the database computes it exactly: the quantiles still come back, equal to numpy's."""
    rows = []
    for i in range(won):
        deal = f"w{i}"
        rows += [{"deal_id": deal, "stage": funnel.stages[0], "timestamp": pd.Timestamp("2024-01-01") + pd.Timedelta(hours=i),
                  "amount": 100.0 + 7.0 * i, "region": "EU"},
                 {"deal_id": deal, "stage": funnel.won[0], "timestamp": pd.Timestamp("2024-02-01") + pd.Timedelta(hours=i),
                  "amount": 100.0 + 7.0 * i + (i % 5), "region": "EU"}]
    log = read_events(pd.DataFrame(rows), funnel)
    spells = to_spells(log, as_of="2024-03-01", segment_by="region")
    quantiles = amount_stats(log, spells).set_index("segment").loc["EU", "won_amounts"]
    realised = np.array([100.0 + 7.0 * i + (i % 5) for i in range(won)])
    from funnelsim.data.deals import AMOUNT_QUANTILES

    np.testing.assert_allclose(quantiles, np.quantile(realised, AMOUNT_QUANTILES), rtol=1e-12)
