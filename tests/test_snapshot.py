"""The Snapshot (the CRM as of the end of a day), the one simulation run and the public API.

Realised revenue is checked against plain pandas sums over the raw events, with wins placed
on the boundary days on purpose; the snapshot's pieces against the functions they wrap;
``forecast(model, snapshot)`` against the same forecast wired by hand, bit for bit.
"""

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

import funnelsim as fs
from funnelsim.data import synth
from funnelsim.data.deals import amount_stats, open_deals
from funnelsim.data.events import FunnelDataError, FunnelDefinition, read_events
from funnelsim.data.snapshot import Snapshot
from funnelsim.data.spells import end_of_day, to_spells
from funnelsim.data.stats import to_stage_stats

FUNNEL = FunnelDefinition(("Lead", "Qualified"), "Won", "Lost")
DAY = pd.Timedelta(days=1)


def _boundary_log():
    """Deals open at the end of 31 March, won on the boundary days of a 10-day window:
    31 March 23:59 (before: not counted), 1 April 00:00 (first day: counted), 10 April 23:59
    (last day: counted), 11 April 00:00 (after: not counted); one with no won amount (its last
    amount counts), one created after the cut-off and won inside the window."""
    rows = [
        ("before", "Lead", "2024-03-01", 10.0), ("before", "Won", "2024-03-31 23:59", 11.0),
        ("first", "Lead", "2024-03-02", 20.0), ("first", "Won", "2024-04-01 00:00", 21.0),
        ("last", "Lead", "2024-03-03", 30.0), ("last", "Qualified", "2024-03-20", 31.0),
        ("last", "Won", "2024-04-10 23:59", 32.0),
        ("after", "Lead", "2024-03-04", 40.0), ("after", "Won", "2024-04-11 00:00", 41.0),
        ("no_amount", "Lead", "2024-03-05", 50.0), ("no_amount", "Won", "2024-04-05", np.nan),
        ("fresh", "Lead", "2024-04-02", 60.0), ("fresh", "Won", "2024-04-06", 61.0),
        ("lost", "Lead", "2024-03-06", 70.0), ("lost", "Lost", "2024-04-03", np.nan),
    ]
    frame = pd.DataFrame(rows, columns=["deal_id", "stage", "timestamp", "amount"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], format="ISO8601")
    return frame


def test_realised_revenue_counts_exactly_the_days_after_the_cut_off():
    events = _boundary_log()
    snap = Snapshot(read_events(events, FUNNEL), "2024-03-31", every=None)
    assert snap.cutoff == pd.Timestamp("2024-04-01") == end_of_day("2024-03-31 18:00")
    realised = snap.realised(10)
    # by hand: open at the cut-off and won in [1 April 00:00, 11 April 00:00)
    assert realised.pipeline == 21.0 + 32.0 + 50.0
    assert realised.new == 61.0
    assert realised.all == 21.0 + 32.0 + 0.0 + 61.0          # a won row without amount counts 0 here
    assert realised.total == realised.pipeline + realised.new
    # the same as a plain pandas sum over the raw events
    won = events[events.stage.eq("Won") & (events.timestamp >= snap.cutoff) & (events.timestamp < snap.cutoff + 10 * DAY)]
    assert realised.all == won.amount.fillna(0).sum()
    assert snap.realised(10, deal_value=5.0).all == won.amount.fillna(5.0).sum()


def test_a_snapshot_is_the_functions_it_wraps_and_keeps_what_it_built():
    config = synth.SynthConfig(segments={"A": 0.5, "B": 0.5}, weeks=20)
    events, _ = synth.generate(800, seed=3, config=config)
    funnel = FunnelDefinition(config.stages, config.won, config.lost)
    as_of = (events.timestamp.max() - pd.Timedelta(days=30)).normalize()
    log = read_events(events, funnel)
    snap = Snapshot(log, as_of, segment_by="segment", history_days=70, every=None)
    spells = to_spells(log, as_of=as_of, segment_by="segment")
    pd.testing.assert_frame_equal(snap.spells.to_pandas(), spells.to_pandas())
    pd.testing.assert_frame_equal(snap.stage_stats.table, to_stage_stats(spells, 70).table)
    pd.testing.assert_frame_equal(snap.amounts, amount_stats(log, spells))
    pd.testing.assert_frame_equal(snap.open_deals, open_deals(log, spells))
    assert snap.stage_stats.history_days == 70 and snap.history_start == snap.cutoff - pd.Timedelta(days=70)
    assert snap.spells is snap.spells and snap.open_deals is snap.open_deals      # built once
    earlier = snap.at(as_of - pd.Timedelta(days=14))
    assert earlier.as_of == as_of - pd.Timedelta(days=14) and earlier.segment_by == "segment"
    assert len(earlier.open_deals) != len(snap.open_deals)
    assert "as_of=" in repr(snap) and str(as_of.date()) in repr(snap)
    with pytest.raises(FunnelDataError, match="segment"):
        Snapshot(log, as_of, segment_by="regio", every=None)


@pytest.fixture(scope="module")
def fitted():
    config = synth.SynthConfig(segments={"A": 0.6, "B": 0.4}, weeks=30)
    events, _ = synth.generate(1500, seed=11, config=config)
    funnel = fs.FunnelDefinition(config.stages, config.won, config.lost)
    snap = fs.Snapshot.read(events, funnel, as_of=(events.timestamp.max() - pd.Timedelta(days=60)).normalize(),
                            segment_by="segment", every=None)
    model = fs.FunnelModel.from_snapshot(snap, model_config={"pooling": "non-centred"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(draws=100, tune=200, chains=2, random_seed=2)
    return snap, model


def test_forecast_of_a_snapshot_is_the_forecast_wired_by_hand(fitted):
    snap, model = fitted
    by_hand = fs.forecast(model, snap.open_deals, horizon_days=45, as_of=snap.as_of, seed=4,
                          new_deals=snap.new_deals)
    result = fs.forecast(model, snap, horizon_days=45, seed=4)
    for name in ("revenue", "pipeline_revenue", "total_revenue", "new_revenue", "p_win_horizon"):
        np.testing.assert_array_equal(result.dataset[name].values, by_hand.dataset[name].values)
    alone = fs.forecast(model, snap, horizon_days=45, seed=4, new_deals=False)
    assert not alone.has_new_deals
    np.testing.assert_array_equal(alone.dataset["pipeline_revenue"].values, result.dataset["pipeline_revenue"].values)
    with pytest.raises(FunnelDataError, match="needs a Snapshot"):
        fs.forecast(model, snap.open_deals, new_deals=True)
    # new_deals=False with the open deals themselves is the open pipeline alone (it was refused)
    deals_only = fs.forecast(model, snap.open_deals, horizon_days=45, as_of=snap.as_of, seed=4, new_deals=False)
    assert not deals_only.has_new_deals
    np.testing.assert_array_equal(deals_only.dataset["pipeline_revenue"].values, alone.dataset["pipeline_revenue"].values)


def test_every_run_refuses_a_negative_deal_value(fitted):
    """forecast and the what-if comparison share one run, so they share its checks."""
    snap, model = fitted
    for call in (lambda: fs.forecast(model, snap, horizon_days=30, deal_value=-1.0),
                 lambda: fs.compare(model, snap, [fs.Scenario("baseline")], horizon_days=30, deal_value=-1.0),
                 lambda: fs.bottlenecks(model, snap, horizon_days=30, deal_value=float("nan"))):
        with pytest.raises(FunnelDataError, match="deal value must be a non-negative number"):
            call()


def test_compare_keeps_its_draws_and_they_are_the_paired_runs(fitted):
    snap, model = fitted
    plan = [fs.Scenario("baseline"), fs.Scenario("faster", (fs.Change("Qualified", time_factor=0.5),))]
    result = fs.compare(model, snap, plan, horizon_days=45, seed=3, target=1.0)
    base, faster = result.draws["faster"]
    row = result.table.set_index("scenario").loc["faster"]
    assert row["delta_mean"] == pytest.approx((faster - base).mean())
    assert row["p_hit"] == pytest.approx((faster >= 1.0).mean())
    # a snapshot brings its new deals: the same as passing them by hand
    by_hand = fs.compare(model, snap.open_deals, plan, horizon_days=45, seed=3, target=1.0, new_deals=snap.new_deals)
    pd.testing.assert_frame_equal(result.table, by_hand.table)


def test_the_public_api_resolves_and_import_stays_light():
    for name in fs.__all__:
        assert getattr(fs, name) is not None, name
    assert fs.forecast.__module__ == "funnelsim.sim.forecast" and callable(fs.backtest)
    assert fs.synth.generate is synth.generate and "Snapshot" in dir(fs)
    with pytest.raises(AttributeError):
        fs.no_such_name  # noqa: B018
    code = "import sys, funnelsim; print(sorted(m for m in ('pymc', 'pandas', 'numba', 'ibis') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
