"""The run-rate and ETS baselines of the total (issue 20, item 7): their bands cover what a
process of their own kind brings next, and they read only the revenue before the origin."""

import numpy as np
import pandas as pd
import pytest

import funnelsim as fs
from funnelsim.data import synth
from funnelsim.sim.revenue_baselines import MIN_CHANGES, daily_won_revenue, ets_samples, run_rate_samples

HORIZON = 28


def stationary_days(rng, n_days):
    """Daily revenue of a stationary process: Poisson(3) wins a day of lognormal amounts."""
    wins = rng.poisson(3.0, n_days)
    return np.array([rng.lognormal(8, 0.6, k).sum() for k in wins])


def test_the_run_rate_band_covers_the_next_horizon_of_a_stationary_process():
    rng = np.random.default_rng(1)
    held = []
    for replicate in range(300):
        days = stationary_days(rng, 400 + HORIZON)
        history = pd.Series(days[:400], index=pd.date_range("2024-01-01", periods=400))
        samples = run_rate_samples(history, HORIZON, 1000, seed=replicate)
        low, high = np.quantile(samples, [0.1, 0.9])
        held.append(low <= days[400:].sum() <= high)
    print("run-rate coverage", np.mean(held))
    assert 0.72 <= np.mean(held) <= 0.88, np.mean(held)


def test_the_run_rate_is_a_point_without_enough_history_and_same_seed_same_samples():
    history = pd.Series(np.arange(HORIZON + MIN_CHANGES - 1, dtype=float),
                        index=pd.date_range("2024-01-01", periods=HORIZON + MIN_CHANGES - 1))
    point = run_rate_samples(history, HORIZON, 50)
    assert np.all(point == history.iloc[-HORIZON:].sum())
    longer = pd.Series(np.random.default_rng(0).random(200), index=pd.date_range("2024-01-01", periods=200))
    np.testing.assert_array_equal(run_rate_samples(longer, HORIZON, 50, seed=3), run_rate_samples(longer, HORIZON, 50, seed=3))
    assert run_rate_samples(longer, HORIZON, 50).std() > 0


@pytest.mark.slow
def test_the_ets_band_covers_the_next_horizon_of_a_local_level_process():
    """Weekly revenue whose level walks (the model ETS(A,N,N) is): its 80% band of the next
    four weeks' sum holds about 80% of the time."""
    rng = np.random.default_rng(2)
    held, weeks = [], 60
    for replicate in range(40):
        level = 10_000 + np.cumsum(rng.normal(0, 300, weeks + 4))
        weekly = level + rng.normal(0, 800, weeks + 4)
        daily = np.repeat(weekly / 7, 7)
        history = pd.Series(daily[: 7 * weeks], index=pd.date_range("2024-01-01", periods=7 * weeks))
        samples = ets_samples(history, HORIZON, 1000, seed=replicate)
        low, high = np.quantile(samples, [0.1, 0.9])
        held.append(low <= weekly[weeks:].sum() <= high)
    print("ETS coverage", np.mean(held))
    assert 0.65 <= np.mean(held) <= 0.95, np.mean(held)


def test_ets_needs_twelve_weeks():
    short = pd.Series(1.0, index=pd.date_range("2024-01-01", periods=7 * 11))
    assert ets_samples(short, HORIZON, 10) is None


def test_daily_won_revenue_reads_only_the_past_as_a_spreadsheet_does():
    events, _ = synth.generate(800, seed=5)
    config = synth.SynthConfig()
    log = fs.read_events(events, fs.FunnelDefinition(config.stages, config.won, config.lost))
    snapshot = fs.Snapshot(log, "2024-09-30", every=None)
    daily = daily_won_revenue(snapshot)
    won = events[events["stage"].eq("Won") & (events["timestamp"] < pd.Timestamp("2024-10-01"))]
    expected = won.groupby(won["timestamp"].dt.normalize())["amount"].sum()
    assert daily.index[-1] == pd.Timestamp("2024-09-30") and daily.index[0] == events["timestamp"].min().normalize()
    pd.testing.assert_series_equal(daily[daily > 0], expected.astype(float), check_names=False, check_freq=False,
                                   check_index_type=False)
