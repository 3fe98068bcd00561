"""Sufficient statistics: counts match the spells, and the binned log-likelihood of a
parametric time-in-stage model stays within 0.5% of the exact per-stay value."""

import ibis
import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from funnelsim.data import synth
from funnelsim.data.events import FunnelDefinition, read_events
from funnelsim.data.spells import to_spells
from funnelsim.data.stats import CENSORED, OFFSET_DAYS, SHORT_BIN, to_stage_stats


@pytest.fixture(scope="module")
def crm():
    config = synth.SynthConfig()
    events, truth = synth.generate(20_000, seed=3, config=config)
    funnel = FunnelDefinition(config.stages, config.won, config.lost)
    spells = to_spells(read_events(events, funnel), segment_by="segment")
    return events, funnel, spells, spells.to_pandas(), to_stage_stats(spells).table


def test_counts_and_sums_match_the_spells(crm):
    _, _, _, per_stay, stats = crm
    assert stats["n"].sum() == len(per_stay)
    per_stay = per_stay.assign(destination=per_stay.destination.fillna(CENSORED),
                               log_t=np.log(per_stay.days + OFFSET_DAYS))
    exact = per_stay.groupby(["stage", "segment", "destination"]).agg(
        n=("log_t", "size"), s1=("log_t", "sum"), s2=("log_t", lambda x: (x * x).sum()))
    binned = stats.groupby(["stage", "segment", "destination"]).agg(
        n=("n", "sum"), s1=("sum_log_t", "sum"), s2=("sum_log_t2", "sum"))
    pd.testing.assert_frame_equal(exact.sort_index(), binned.sort_index(), check_dtype=False, rtol=1e-9)
    assert (np.log(stats.days_low + OFFSET_DAYS) <= stats.mean_log_t + 1e-9).all()
    assert (stats.mean_log_t < np.log(stats.days_high + OFFSET_DAYS) + 1e-9).all()
    assert len(stats) < 3000  # small, whatever the number of deals


def _loglik_exact(per_stay, family, params):
    t = per_stay.days.to_numpy() + OFFSET_DAYS
    open_ = per_stay.move.to_numpy() == "censored"
    dist = family(*params)
    return dist.logpdf(t[~open_]).sum() + dist.logsf(t[open_]).sum()


def _loglik_binned(stats, family, params):
    exits = stats[stats.destination != CENSORED]
    opened = stats[stats.destination == CENSORED]
    dist = family(*params)
    if family is _lognormal:  # exits are exact through n, Σ log t, Σ (log t)²
        mu, sigma = params
        n, s1, s2 = exits.n.sum(), exits.sum_log_t.sum(), exits.sum_log_t2.sum()
        exit_ll = -n * np.log(sigma * np.sqrt(2 * np.pi)) - s1 - (s2 - 2 * mu * s1 + n * mu**2) / (2 * sigma**2)
    else:
        exit_ll = (exits.n * dist.logpdf(np.exp(exits.mean_log_t))).sum()
    return exit_ll + (opened.n * dist.logsf(np.exp(opened.mean_log_t))).sum()


def _lognormal(mu, sigma):
    return st.lognorm(s=sigma, scale=np.exp(mu))


def _weibull(shape, scale):
    return st.weibull_min(c=shape, scale=scale)


@pytest.mark.parametrize(("family", "params"), [
    (_lognormal, (np.log(15), 0.8)), (_lognormal, (np.log(40), 1.5)), (_lognormal, (np.log(5), 0.5)),
    (_weibull, (0.8, 20.0)), (_weibull, (1.5, 30.0)), (_weibull, (1.0, 60.0)),
])
def test_binned_loglik_within_half_a_percent(crm, family, params):
    _, _, _, per_stay, stats = crm
    for stage in per_stay.stage.unique():
        exact = _loglik_exact(per_stay[per_stay.stage == stage], family, params)
        binned = _loglik_binned(stats[stats.stage == stage], family, params)
        assert abs(binned - exact) / abs(exact) < 0.005, (stage, exact, binned)


def test_same_statistics_from_a_database_table(crm, tmp_path):
    """The expression runs unchanged inside another database (a DuckDB file here)."""
    events, funnel, spells, _, stats = crm
    con = ibis.duckdb.connect(tmp_path / "crm.duckdb")
    table = con.create_table("events", ibis.memtable(events))  # DataFrames directly hit an ibis 12 + DuckDB 2 bug
    again = to_stage_stats(to_spells(read_events(table, funnel), segment_by="segment"))
    pd.testing.assert_frame_equal(stats, again.table, check_dtype=False)


def test_a_history_window_keeps_the_stays_that_began_in_it_and_every_segment():
    from funnelsim.data.events import FunnelDataError

    funnel = FunnelDefinition(("Lead", "Qualified"), "Won", "Lost")
    rows = [("A", "Lead", "2024-01-05", "X"), ("A", "Qualified", "2024-03-10", "X"), ("A", "Won", "2024-03-20", "X"),
            ("B", "Lead", "2024-03-05", "Y"), ("B", "Lost", "2024-03-15", "Y"),
            ("C", "Lead", "2024-03-25", "Z")]
    frame = pd.DataFrame(rows, columns=["deal_id", "stage", "timestamp", "segment"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    spells = to_spells(read_events(frame, funnel), as_of="2024-03-31", segment_by="segment")
    everything = to_stage_stats(spells)
    recent = to_stage_stats(spells, history_days=30)        # stays that began from 2 March on
    assert everything.stays == 4 and everything.history_days is None
    kept = recent.table.groupby(["stage", "segment", "destination"])["n"].sum().to_dict()
    # A's Lead stay began in January: out, though it ended in the window; its Qualified stay is in
    assert kept == {("Qualified", "X", "Won"): 1, ("Lead", "Y", "Lost"): 1, ("Lead", "Z", CENSORED): 1}
    assert recent.segments == ("X", "Y", "Z") and recent.history_days == 30
    only_z = to_stage_stats(spells, history_days=8)          # from 24 March: only C's open stay
    assert set(only_z.table["segment"]) == {"Z"} and only_z.segments == ("X", "Y", "Z")
    from funnelsim.model.likelihood import model_data

    assert model_data(only_z, funnel).segments == ("X", "Y", "Z")   # the others get the pooled estimate
    with pytest.raises(FunnelDataError, match="no stay began"):
        to_stage_stats(spells, history_days=1)
    with pytest.raises(FunnelDataError, match="positive number of days"):
        to_stage_stats(spells, history_days=0)


def test_bin_edges_in_days_are_the_edges_in_t_less_the_half_day_offset():
    """Both edges of each row's bin, in days, worked out by hand: bin b holds
    0.5 * 2^(b/3) <= days + 0.5 < 0.5 * 2^((b+1)/3), so days_low = 0.5 * 2^(b/3) - 0.5 and
    days_high = 0.5 * 2^((b+1)/3) - 0.5; every stay lies between its row's edges. The log has
    dates only, so its resolution is a day and A's same-day exit is a short stay: bin -1, [0, 1)."""
    funnel = FunnelDefinition(("Lead", "Qualified"), "Won", "Lost")
    rows = [("A", "Lead", "2024-01-01"), ("A", "Qualified", "2024-01-01"), ("A", "Won", "2024-01-11"),
            ("B", "Lead", "2024-01-01"), ("B", "Lost", "2024-01-02"),
            ("C", "Lead", "2024-01-01"), ("C", "Qualified", "2024-04-10"),
            ("D", "Lead", "2024-04-25")]
    frame = pd.DataFrame(rows, columns=["deal_id", "stage", "timestamp"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    spells = to_spells(read_events(frame, funnel), as_of="2024-04-30")      # open stays aged to 1 May 00:00
    stats = to_stage_stats(spells).table
    expected = {   # (stage, destination): days of the stay, bin, days_low, days_high
        ("Lead", "Qualified", SHORT_BIN): (0.0, 0.0, 1.0),         # shorter than the log's resolution
        ("Lead", "Lost", 4): (1.0, 0.759921, 1.087401),            # 0.5 * 2^(4/3) - 0.5, 0.5 * 2^(5/3) - 0.5
        ("Lead", "Qualified", 22): (100.0, 80.134947, 101.093667),
        ("Lead", CENSORED, 11): (6.0, 5.849604, 7.5),               # upper edge 0.5 * 2^4 - 0.5
        ("Qualified", "Won", 13): (10.0, 9.579368, 12.199208),
        ("Qualified", CENSORED, 16): (21.0, 19.658737, 24.898417),
    }
    got = {(r.stage, r.destination, r.bin): (r.days_low, r.days_high) for r in stats.itertuples()}
    assert set(got) == set(expected) and (stats["n"] == 1).all(), got
    for key, (days, low, high) in expected.items():
        assert got[key] == pytest.approx((low, high), abs=1e-6), (key, got[key])
        assert low <= days < high
        b = key[2]
        if b == SHORT_BIN:
            continue
        assert got[key] == pytest.approx((OFFSET_DAYS * 2 ** (b / 3) - OFFSET_DAYS,
                                          OFFSET_DAYS * 2 ** ((b + 1) / 3) - OFFSET_DAYS), rel=1e-12)
    per_stay = spells.to_pandas().assign(destination=lambda s: s.destination.fillna(CENSORED))
    assert sorted(zip(per_stay.stage, per_stay.destination, per_stay.days, strict=True)) == sorted(
        (stage, destination, days) for (stage, destination, _), (days, _, _) in expected.items())
