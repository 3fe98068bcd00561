"""Backtests: scores, origins, no leakage, calibration over origins, baselines, CLI."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from funnelsim.data import synth
from funnelsim.data.events import FunnelDataError, FunnelDefinition, read_events
from funnelsim.data.snapshot import Snapshot
from funnelsim.data.spells import to_spells
from funnelsim.sim.backtest import Backtest, BacktestSettings, backtest, origin_dates, origin_inputs, score

from .test_forecast import run, weighted_pipeline

CONFIG = synth.SynthConfig(weeks=40)
FUNNEL = FunnelDefinition(stages=CONFIG.stages, won=CONFIG.won, lost=CONFIG.lost)


def test_crps_of_a_point_mass_is_the_absolute_error():
    assert score(np.full(100, 7.0), 10.0)["crps"] == pytest.approx(3.0)
    assert score(np.full(100, 7.0), 7.0)["crps"] == 0.0


def test_coverage_and_pit_on_a_hand_built_forecast():
    samples = np.arange(1.0, 101.0)                  # 1..100
    middle = score(samples, 50.5)
    assert middle["pit"] == 0.5 and middle["covered50"] and middle["covered80"] and middle["covered90"]
    high = score(samples, 95.0)                     # 80% band 10.9-90.1, 90% band 5.95-95.05
    assert not high["covered80"] and high["covered90"]
    assert 0.94 <= high["pit"] <= 0.95              # 94 below, 1 tie, split by the seeded uniform
    tied = score(np.r_[np.zeros(50), np.full(50, 10.0)], 0.0)   # half the samples equal the actual
    assert 0.0 <= tied["pit"] <= 0.5 and tied["ape_median"] != tied["ape_median"]   # NaN: actual 0


def test_origin_dates():
    assert origin_dates("1M", "2024-01-15", "2024-04-30") == [pd.Timestamp(d) for d in
                                                              ("2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30")]
    assert len(origin_dates("2W", "2024-01-01", "2024-03-01")) == 4
    with pytest.raises(FunnelDataError, match="count and a unit"):
        origin_dates("monthly", "2024-01-01", "2024-03-01")


@pytest.fixture(scope="module")
def crm():
    events, _ = synth.generate(2000, seed=31, config=CONFIG)
    origin = (events.timestamp.min() + pd.Timedelta(weeks=24)).normalize()
    return events, origin


def tampered(events, origin):
    """The future rewritten: amounts x10, stages shuffled, a tenth of later events deleted."""
    future = events.timestamp >= origin + pd.Timedelta(days=1)
    rng = np.random.default_rng(0)
    changed = events.assign(amount=np.where(future, events.amount * 10, events.amount))
    later = changed[future]
    changed.loc[later.index, "stage"] = rng.permutation(later.stage.to_numpy())
    changed = changed.drop(index=later.index[rng.random(len(later)) < 0.1])
    # keep the rewritten log valid: nothing after a won/lost event
    order = changed.sort_values(["deal_id", "timestamp"])
    ended = order.stage.isin(["Won", "Lost"]).groupby(order.deal_id).cumsum().groupby(order.deal_id).shift(fill_value=0)
    return order[ended == 0]


def test_no_event_after_the_origin_reaches_its_inputs(crm):
    """Stage statistics, amounts, open deals and baselines at the origin are what the fit and
    the forecast are built from: rewriting or deleting later events leaves them identical."""
    events, origin = crm
    settings = BacktestSettings(horizon_days=60, every=None)
    original = origin_inputs(read_events(events, FUNNEL), origin, settings)
    changed = origin_inputs(read_events(tampered(events, origin), FUNNEL), origin, settings)
    pd.testing.assert_frame_equal(original["stats"].table, changed["stats"].table)
    for name in ("amounts", "deals"):
        pd.testing.assert_frame_equal(original[name], changed[name])
    assert original["baselines"] == changed["baselines"]


def test_weighted_baseline_matches_a_spreadsheet_calculation(crm):
    events, origin = crm
    inputs = origin_inputs(read_events(events, FUNNEL), origin, BacktestSettings(horizon_days=60, every=None))
    assert inputs["baselines"]["weighted"] == pytest.approx(weighted_pipeline(events, inputs["deals"], origin), rel=1e-9)


def test_total_revenue_inputs_see_no_future_and_match_a_spreadsheet(crm):
    """With new deals: the inflow statistics at the origin ignore the future; the run-rate
    baseline and the realised revenue of deals created in the horizon match pandas sums."""
    events, origin = crm
    settings = BacktestSettings(horizon_days=60, new_deals=True, every=None)
    original = origin_inputs(read_events(events, FUNNEL), origin, settings)
    changed = origin_inputs(read_events(tampered(events, origin), FUNNEL), origin, settings)
    pd.testing.assert_frame_equal(original["new_deals"].stats, changed["new_deals"].stats)
    pd.testing.assert_frame_equal(original["new_deals"].created_won, changed["new_deals"].created_won)
    assert original["baselines"] == changed["baselines"]
    day = pd.Timedelta(days=1)
    won = events[events.stage.eq("Won")]
    before = won[(won.timestamp >= origin + day - 60 * day) & (won.timestamp < origin + day)]
    assert original["baselines"]["run_rate"] == pytest.approx(before.amount.sum(), rel=1e-12)
    created = events.groupby("deal_id").timestamp.min()
    fresh = created[(created >= origin + day) & (created < origin + 61 * day)].index
    after = won[won.deal_id.isin(fresh) & (won.timestamp < origin + 61 * day)]
    assert len(after) > 0
    realised = Snapshot(read_events(events, FUNNEL), origin, every=None).realised(60)
    assert realised.new == pytest.approx(after.amount.sum(), rel=1e-12)


def test_a_history_window_at_each_origin_is_counted_back_from_it(crm):
    events, origin = crm
    log = read_events(events, FUNNEL)
    window = origin_inputs(log, origin, BacktestSettings(horizon_days=60, history_days=56, every=None))["stats"]
    assert window.history_days == 56
    spells = to_spells(log, as_of=origin).to_pandas()
    began = spells.entered >= origin + pd.Timedelta(days=1) - pd.Timedelta(days=56)
    assert window.stays == began.sum() < len(spells)


@pytest.mark.slow
def test_backtest_scores_the_total_with_new_deals(crm):
    events, origin = crm
    settings = BacktestSettings(horizon_days=60, draws=100, tune=200, chains=2, new_deals=True, every=None)
    result = backtest(events, FUNNEL, [origin, origin + pd.Timedelta(days=28)], settings, workers=1)
    t = result.table
    assert (t.total_actual > t.actual).all() and (t.total_p50 > t.p50).all()
    assert {"total_coverage80", "total_mean_crps", "total_mean_ape_run_rate", "total_crps_skill_run_rate"} <= set(
        result.summary)
    data = result.to_dict()
    assert {"actual", "p10", "p50", "p90", "crps", "pit"} <= set(data["origins"][0]["total"])
    assert "run_rate" in data["origins"][0]["baselines"]


@pytest.mark.slow
def test_the_forecast_at_an_origin_is_bit_identical_whatever_happened_after(crm, tmp_path):
    """End to end, each run in a fresh process: the forecast's band at the origin is the
    same to the last bit for the true and the rewritten future (only the actual differs)."""
    events, origin = crm
    results = []
    for name, frame in (("true", events), ("rewritten", tampered(events, origin))):
        path = tmp_path / f"{name}.csv"
        frame.to_csv(path, index=False)
        out = tmp_path / f"{name}.json"
        result = run("backtest", path, "--stages", ",".join(CONFIG.stages), "--horizon", 60, "--origins",
                     str(origin.date()), "--draws", 100, "--tune", 200, "--chains", 2, "--workers", 1, "--json", out)
        assert result.returncode == 0, result.stderr
        results.append(json.loads(out.read_text())["origins"][0])
    for key in ("open_deals", "mean", "p10", "p50", "p90", "baselines"):
        assert results[0][key] == results[1][key], key
    assert results[0]["actual"] != results[1]["actual"]


@pytest.mark.slow
def test_bands_hold_over_twenty_origins_and_beat_the_weighted_pipeline():
    """5 synthetic logs x 4 monthly origins (60-day horizon, by segment as the synthetic process
    is). The 80% band covers 65-95% of
    actuals; the PIT values pass a Kolmogorov-Smirnov test of uniformity at the 1% level; mean
    CRPS is below the weighted pipeline's mean absolute error; the wins of every age band match
    their forecast."""
    tables, by_age = [], []
    settings = BacktestSettings(horizon_days=60, segment_by="segment", draws=200, tune=300, chains=2,
                                model_config={"pooling": "non-centred"}, every=None)
    for seed in range(5):
        events, _ = synth.generate(2500, seed=200 + seed, config=CONFIG)
        start = events.timestamp.min().normalize()
        origins = origin_dates("1M", start + pd.Timedelta(weeks=16), start + pd.Timedelta(weeks=31))
        result = backtest(events, FUNNEL, origins[:4], settings, workers=1)
        tables.append(result.table)
        by_age.append(result.by_age.assign(origin=f"{seed}-" + result.by_age["origin"]))
    table = pd.concat(tables, ignore_index=True)
    # where the model is the world, the wins of every age band match their forecast (|z| < 3)
    ages = Backtest(table, settings, {}, [], pd.concat(by_age, ignore_index=True)).age_calibration
    assert ages["z"].abs().max() < 3 and ages["deals"].min() > 100, ages
    assert not Backtest(table, settings, {}, [], pd.concat(by_age, ignore_index=True)).age_misses()
    assert len(table) >= 20
    assert 0.65 <= table["covered80"].mean() <= 0.95, table
    assert stats.kstest(table["pit"], "uniform").pvalue > 0.01, table["pit"].tolist()
    assert table["crps"].mean() < (table["weighted"] - table["actual"]).abs().mean()


def test_cli_refuses_bad_origins(tmp_path, crm):
    events, _ = crm
    path = tmp_path / "crm.csv"
    events.head(50).to_csv(path, index=False)
    base = ["backtest", path, "--stages", ",".join(CONFIG.stages), "--json", tmp_path / "b.json"]
    for extra, message in ((["--origins", "2024-02-30"], "cannot read '2024-02-30' as a date"),
                           (["--origins", "2024-03-31", "--every", "1M"], "either --origins or --every"),
                           (["--every", "1M"], "needs --start and --end")):
        result = run(*base, *extra)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
        assert not (tmp_path / "b.json").exists()


def test_actual_and_last_period_count_wins_on_their_boundary_days_as_a_spreadsheet_does(monkeypatch):
    """Wins exactly on every boundary day. Origin O = 31 March (the end of that day), horizon
    H = 30 days: the actual counts wins of the deals open at O from the start of O + 1 to the
    end of O + H (1 April 00:00 .. 30 April 23:59); the last-period baseline counts wins of the
    deals open at O - H (1 March) from the start of O - H + 1 to the end of O (2 March 00:00 ..
    31 March 23:59). With new deals, the run rate counts every win of that baseline window and
    the total adds the horizon's wins of the deals created in it. The fit and the forecast are
    stubbed out: only the counting is tested."""
    import types

    import funnelsim.model.funnel_model
    import funnelsim.sim.forecast

    class NoFit:
        def __init__(self, stats, amounts=None, sojourn="lognormal", model_config=None):
            self.diagnostics, self.timings = {"converged": True}, {"seconds": 0.0}

        def fit(self, **kwargs):
            return self

    def no_forecast(model, deals, **kwargs):
        values = {"deal": deals["deal_id"], "amount": deals["amount"], "age_days": deals["age_days"],
                  "p_win_horizon": np.zeros(len(deals)), "expected_revenue": np.zeros(len(deals)),
                  "pipeline_revenue": np.zeros(10)}
        return types.SimpleNamespace(dataset={k: types.SimpleNamespace(values=np.asarray(v)) for k, v in values.items()},
                                     has_new_deals=False)

    monkeypatch.setattr(funnelsim.model.funnel_model, "FunnelModel", NoFit)
    monkeypatch.setattr(funnelsim.sim.forecast, "forecast", no_forecast)
    funnel = FunnelDefinition(stages=("Lead", "Qualified"), won="Won", lost="Lost")
    wins = {                                    # deal: (created, won at), amount 2^k tells them apart
        "w0": ("2024-02-01", "2024-02-29 23:59"),   # the day before the baseline window
        "w1": ("2024-02-01", "2024-03-01 12:00"),   # O - H: not open at its end
        "w2": ("2024-02-01", "2024-03-02 00:00"),   # first day of the baseline window
        "w3": ("2024-02-01", "2024-03-31 23:59"),   # the origin day: last day of the baseline window
        "w4": ("2024-02-01", "2024-04-01 00:00"),   # O + 1: first day of the horizon
        "w5": ("2024-02-01", "2024-04-30 23:59"),   # O + H: last day of the horizon
        "w6": ("2024-02-01", "2024-05-01 00:00"),   # O + H + 1: the day after the horizon
        "w7": ("2024-03-15", "2024-03-20 10:00"),   # created after O - H, won before O
        "w8": ("2024-03-15", "2024-04-10 10:00"),   # created after O - H, won in the horizon
        "w9": ("2024-04-02", "2024-04-03 10:00"),   # created after O, won in the horizon
        "w10": ("2024-03-31 09:00", "2024-04-20"),  # created on O: open at O, not a new deal
        "w11": ("2024-04-30 08:00", "2024-04-30 18:00"),   # created and won on O + H: a new deal
    }
    rows = []
    for k, (deal, (created, won_at)) in enumerate(wins.items()):
        rows += [(deal, "Lead", created, 2.0**k), (deal, "Won", won_at, 2.0**k)]
    rows += [("lost", "Lead", "2024-02-01", 1000.0), ("lost", "Qualified", "2024-02-10", 1000.0),
             ("lost", "Lost", "2024-03-10", 1000.0), ("open", "Lead", "2024-02-05", 3000.0),
             ("late", "Lead", "2024-05-20", 5000.0)]
    events = pd.DataFrame(rows, columns=["deal_id", "stage", "timestamp", "amount"])
    events["timestamp"] = pd.to_datetime(events["timestamp"], format="ISO8601")
    origin, horizon = pd.Timestamp("2024-03-31"), 30
    settings = BacktestSettings(horizon_days=horizon, draws=10, tune=10, chains=1, new_deals=True, every=None)
    result = backtest(events, funnel, [origin], settings, workers=1)
    table = result.table

    # the spreadsheet: calendar days of the events, nothing from funnelsim
    day = events.timestamp.dt.normalize()
    first = day.groupby(events.deal_id).min()
    closed = day[events.stage.isin(["Won", "Lost"])].groupby(events.deal_id[events.stage.isin(["Won", "Lost"])]).min()

    def open_at(date):
        return set(first.index[(first <= date) & ~(closed.reindex(first.index) <= date)])

    def won_by(deals, first_day, last_day):
        won = events[events.stage.eq("Won") & events.deal_id.isin(deals) & (day >= first_day) & (day <= last_day)]
        return won.amount.sum()

    def created_in(first_day, last_day):
        return set(first.index[(first >= first_day) & (first <= last_day)])

    H = pd.Timedelta(days=horizon)
    one = pd.Timedelta(days=1)
    actual = won_by(open_at(origin), origin + one, origin + H)
    last_period = won_by(open_at(origin - H), origin - H + one, origin)
    assert (actual, last_period) == (2**4 + 2**5 + 2**8 + 2**10, 2**2 + 2**3)     # w4, w5, w8, w10; w2, w3
    row = table.iloc[0]
    assert row["actual"] == actual and row["last_period"] == last_period, (row["actual"], row["last_period"])
    # the wins by age count the same deals: w4, w5 and w8 opened in February/March, w10 on the origin day
    by_age = result.by_age.set_index("age")
    assert by_age["wins"].sum() == 4 and by_age["revenue"].sum() == actual
    assert by_age.loc["0-30 days", "wins"] == 2 and by_age.loc["30-90 days", "wins"] == 2   # w8, w10; w4, w5
    amount = events.groupby("deal_id").amount.last()
    coverage = amount[list(open_at(origin))].sum() * last_period / amount[list(open_at(origin - H))].sum()
    assert row["coverage"] == pytest.approx(coverage, rel=1e-12)
    run_rate = won_by(set(first.index), origin - H + one, origin)
    total = actual + won_by(created_in(origin + one, origin + H), origin + one, origin + H)
    assert (run_rate, total) == (2**2 + 2**3 + 2**7, actual + 2**9 + 2**11)        # w2, w3, w7; w9, w11
    assert row["run_rate"] == run_rate and row["total_actual"] == total, (row["run_rate"], row["total_actual"])
    # the baselines' own bands: two months of history give one pair of horizons, so the run
    # rate is the point, and too few weeks for ETS (NaN scores, "—" in the table)
    assert row["total_run_rate_p10"] == row["total_run_rate_p90"] == run_rate and np.isnan(row["total_ets_crps"])
    assert row["total_run_rate_crps"] == pytest.approx(abs(run_rate - total))
    # the log's last event is "late" on 2024-05-20: an origin whose horizon ends after it is
    # not scored against actuals still to come; one ending on that day is
    boundary = backtest(events, funnel, [origin, pd.Timestamp("2024-04-20"), pd.Timestamp("2024-04-21")], settings,
                        workers=1)
    assert boundary.table["origin"].tolist() == ["2024-03-31", "2024-04-20"]
    assert boundary.to_dict()["skipped_origins"] == [
        {"origin": "2024-04-21", "horizon_end": "2024-05-21",
         "reason": "its horizon ends after the log's last event (2024-05-20)"}]
    with pytest.raises(FunnelDataError, match="runs past the log's last event") as error:
        backtest(events, funnel, [pd.Timestamp("2024-04-25")], settings, workers=1)
    assert "on or before 2024-04-20" in str(error.value)


def test_each_origin_is_fitted_with_the_chosen_sojourn_family(crm, monkeypatch):
    """BacktestSettings.sojourn (backtest --sojourn) reaches the model fitted at each origin, and
    its --help offers the families: compare them on one's own history."""
    from funnelsim.model.funnel_model import FunnelModel
    from funnelsim.sim.backtest import run_origin

    class Fitted(Exception):
        pass

    def fit(model, **kwargs):
        raise Fitted(model.sojourn)

    monkeypatch.setattr(FunnelModel, "fit", fit)
    events, origin = crm
    log = read_events(events, FUNNEL)
    for family in ("lognormal", "weibull"):
        with pytest.raises(Fitted, match=family):
            run_origin(log, origin, BacktestSettings(horizon_days=60, sojourn=family, every=None))
    help_text = run("backtest", "--help").stdout
    assert "--sojourn" in help_text and "weibull" in help_text


def test_wins_by_age_band_add_up_and_flag_a_band_the_forecast_misses():
    """age_rows splits the open deals by age in stage (0-30, 30-90, 90-180, 180+ days); pooled
    over origins, a band whose deals won far more often than their chances said is warned of."""
    from funnelsim.sim.backtest import age_rows

    rng = np.random.default_rng(3)
    ages = rng.uniform(0, 400, 4000)
    p = np.where(ages < 90, 0.2, 0.01)             # the forecast: old deals hardly ever close
    truth = np.where(ages < 90, 0.2, 0.04)         # the world: they close 4x as often
    won = rng.uniform(size=ages.size) < truth
    revenue = np.where(won, 100.0, 0.0)
    rows = age_rows(ages, p, 100.0 * p, won, revenue)
    assert [r["age"] for r in rows] == ["0-30 days", "30-90 days", "90-180 days", "180+ days"]
    assert sum(r["deals"] for r in rows) == ages.size and sum(r["wins"] for r in rows) == won.sum()
    assert sum(r["forecast_wins"] for r in rows) == pytest.approx(p.sum())
    assert rows[0]["deals"] == (ages < 30).sum() and rows[3]["deals"] == (ages >= 180).sum()
    by_age = pd.DataFrame([{"origin": o, **r} for o in ("2024-01-31", "2024-02-29") for r in rows])
    result = Backtest(pd.DataFrame(), BacktestSettings(every=None), {}, [], by_age)
    t = result.age_calibration.set_index("age")
    assert t.loc["90-180 days", "deals"] == 2 * rows[2]["deals"]
    assert t.loc["90-180 days", "z"] > 3 and t.loc["180+ days", "z"] > 3
    assert abs(t.loc["0-30 days", "z"]) < 3 and abs(t.loc["30-90 days", "z"]) < 3
    misses = result.age_misses()
    assert len(misses) == 2 and "90-180 days" in misses[0] and "late closes" in misses[0]
    assert "--revival" in misses[0]                           # what to try, unless it is on already
    revived = Backtest(pd.DataFrame(), BacktestSettings(every=None, model_config={"revival": True}), {}, [], by_age)
    assert len(revived.age_misses()) == 2 and "--revival" not in revived.age_misses()[0]
    assert Backtest(pd.DataFrame(), BacktestSettings(every=None), {}, []).age_misses() == []
