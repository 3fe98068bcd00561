"""Dormant deals that revive (docs/revival.md): the simulator against closed forms, the
likelihood against a direct computation, and recovery of a known revival rate with the
backtest's wins by age in stage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from funnelsim.data import synth
from funnelsim.data.events import FunnelDefinition
from funnelsim.data.snapshot import Snapshot
from funnelsim.model.derived import eventual_pi, p_win_from_entry
from funnelsim.model.funnel_model import FunnelModel
from funnelsim.sim.backtest import BacktestSettings, backtest
from funnelsim.sim.kernel import Parameters, Pipeline, simulate

PI_WON, MU, SIGMA, RATE, WINDOW, HORIZON = 0.1, np.log(20.0), 1.0, 1e-3, 730.0, 60


def _one_stage(draws: int, revival: bool) -> Parameters:
    """One open stage whose deals win (10%) or stall; stalls revive at RATE within WINDOW."""
    pi = np.zeros((draws, 1, 1, 4))
    pi[..., 1], pi[..., 3] = PI_WON, 1.0 - PI_WON
    extra = {"revival_rate": np.full((draws, 1), RATE), "revival_days": WINDOW} if revival else {}
    return Parameters(pi=pi, family="lognormal", loc=np.full((draws, 1, 1, 3), MU), shape=np.full((draws, 1, 3), SIGMA),
                      ratio_mean=np.zeros((draws, 1)), ratio_sd=np.zeros((draws, 1)),
                      won_amounts=np.full((1, 5), np.nan), **extra)


def test_the_simulator_revives_dormant_deals_as_the_closed_form_says():
    """An open deal aged a wins within H days with probability
    [pi S(a) - pi S(a + H) + (1 - pi)(e^{-r a} - e^{-r (a + H)})] / [pi S(a) + (1 - pi) e^{-r a}]
    (dormancy capped at the window W), and ever with the revivals still to come within W."""
    ages = np.array([10.0, 100.0, 300.0, 700.0, 800.0])
    per_age = 2000
    age = np.repeat(ages, per_age)
    pipeline = Pipeline(stage=np.zeros(age.size, np.int64), segment=np.zeros(age.size, np.int64), age_days=age,
                        amount=np.ones(age.size))
    sim = simulate(_one_stage(200, True), pipeline, HORIZON, seed=3)
    final = simulate(_one_stage(200, False), pipeline, HORIZON, seed=3)

    def survival(days):
        return stats.lognorm.sf(days + 0.5, SIGMA, scale=np.exp(MU))

    def dormant(days):
        return np.exp(-RATE * np.minimum(days, WINDOW))

    for a in ages:
        still = PI_WON * survival(a) + (1 - PI_WON) * dormant(a)
        horizon = (PI_WON * (survival(a) - survival(a + HORIZON)) + (1 - PI_WON) * (dormant(a) - dormant(a + HORIZON))) / still
        ever = (PI_WON * survival(a) + (1 - PI_WON) * (dormant(a) - dormant(WINDOW))) / still
        got = sim.p_win_horizon[age == a].mean()
        se = np.sqrt(horizon * (1 - horizon) / per_age) + 1e-9
        assert abs(got - horizon) < 4 * se + 1e-4, (a, got, horizon)
        assert sim.p_win_ever[age == a].mean() == pytest.approx(ever, rel=1e-4)   # the kernel's fast normal tail
    # stalls that are final: a 300-day-old deal is all but dead, a revived one wins 5.8% in 60 days
    assert final.p_win_horizon[age == 300].mean() < 0.001 < 0.05 < sim.p_win_horizon[age == 300].mean()
    assert sim.p_win_horizon[age == 800].mean() < 1e-4       # past the window: no revival left


def test_eventual_shares_count_revivals_where_they_end():
    pi = np.array([[[[0.0, 0.3, 0.1, 0.2, 0.4]], [[0.0, 0.0, 0.5, 0.1, 0.4]]]])     # (1, 2 stages, 1, 5)
    rate = np.array([[np.log(2) / 365.0, 0.0]])                                       # half revive in a year
    ends = eventual_pi(pi, rate, 365.0)
    np.testing.assert_allclose(ends.sum(axis=-1), 1.0)
    np.testing.assert_allclose(ends[0, 0, 0], [0.0, 0.3 * (1 + 0.5 * 0.4 / 0.6), 0.1 * 4 / 3, 0.2 * 4 / 3, 0.2])
    np.testing.assert_allclose(ends[0, 1], pi[0, 1])                                  # rate 0: as it was
    assert p_win_from_entry(ends)[0, 0, 0] > p_win_from_entry(pi)[0, 0, 0]
    assert eventual_pi(pi, None) is pi


FUNNEL = FunnelDefinition(("Lead", "Demo"), ("Won",), ("Lost",))
TRUE_RATE = 1 / 300


@pytest.fixture(scope="module")
def revival_log():
    cfg = synth.SynthConfig(stages=FUNNEL.stages, segments={"All": 1.0}, segment_logit_shift={"All": (0.0, 0.0)},
                            segment_speed={"All": 1.0}, amount_median={"All": 10_000.0}, p_stall_base=0.3,
                            revival_rate=TRUE_RATE, revival_days=730.0)
    events, _ = synth.generate(4000, seed=5, config=cfg)
    return events


def test_synth_revives_a_share_of_the_stalls(revival_log):
    """With r = 1/300 per day over a 730-day window 91% of stalls revive: far more deals close."""
    plain = synth.SynthConfig(stages=FUNNEL.stages, segments={"All": 1.0}, segment_logit_shift={"All": (0.0, 0.0)},
                              segment_speed={"All": 1.0}, amount_median={"All": 10_000.0}, p_stall_base=0.3)
    events, _ = synth.generate(4000, seed=5, config=plain)
    closed = lambda e: e.stage.isin(["Won", "Lost"]).sum()
    assert closed(revival_log) > 1.25 * closed(events)


@pytest.mark.parametrize("sojourn, every", [("weibull", None), ("lognormal", "month")])
def test_every_family_and_the_drift_take_revivals(revival_log, sojourn, every):
    """The Weibull (binned exits) and a drifting funnel ((segment, cohort) cells) build a
    revival likelihood that is finite, moves with the rate, and is the stall-final model's
    as the rate goes to 0."""
    snapshot = Snapshot.read(revival_log, FUNNEL, as_of="2025-06-29", every=every)
    values = {}
    for revival in (False, True):
        model = FunnelModel(snapshot.stage_stats, amounts=snapshot.amounts, sojourn=sojourn,
                            model_config={"revival": revival})
        pm_model = model.build_model()
        logp = pm_model.compile_logp(vars=[pm_model.potentials[0]], jacobian=False)
        point = pm_model.initial_point()
        for rate in ((1e-30, TRUE_RATE) if revival else (0.0,)):
            if revival:
                point["revival_log_rate"] = np.full(len(FUNNEL.stages), np.log(rate))
            values[rate] = float(logp(point))
    assert np.isfinite(list(values.values())).all(), values
    assert values[1e-30] == pytest.approx(values[0.0], rel=1e-12)
    assert abs(values[TRUE_RATE] - values[0.0]) > 1, values


@pytest.mark.xdist_group("revival")
def test_the_fit_recovers_the_revival_rate(revival_log, tmp_path):
    snapshot = Snapshot.read(revival_log, FUNNEL, as_of="2025-12-28", every=None)
    model = FunnelModel.from_snapshot(snapshot, model_config={"revival": True})
    model.fit(draws=300, tune=300, chains=2, random_seed=1, progressbar=False)
    rate = model.idata.posterior["revival_rate"].stack(sample=("chain", "draw")).values      # (stage, sample)
    low, high = np.quantile(rate, [0.05, 0.95], axis=1)
    assert ((low < TRUE_RATE) & (TRUE_RATE < high)).all(), (low, high)
    d = model.diagnostics        # 2 x 300 draws: R-hat and ESS are rough; no divergence, no stuck chain
    assert d["divergences"] == 0 and d["r_hat_max"] < 1.05, d
    # the stage table counts revivals where they end: P(stall) is what never comes back
    table = model.stage_table().query("segment.isna()")
    assert (table["p_stall"] < 0.1).all(), table["p_stall"]       # 0.3 e^{-730 r} = 0.03 in the generator
    # saved and loaded, the simulator gets the same revival rates
    loaded = FunnelModel.load(model.save(tmp_path / "m"), model.stats)
    np.testing.assert_array_equal(loaded.simulation_parameters().revival_rate, model.simulation_parameters().revival_rate)
    assert loaded.simulation_parameters().revival_days == 730.0


@pytest.mark.xdist_group("revival")
def test_old_open_deals_win_as_often_as_forecast_only_with_revival(revival_log):
    """One origin a year before the end, 90 days ahead: open deals aged 180+ days (nearly all
    dormant) win many times the stall-final model's forecast (z > 3) and as often as the
    revival model's (|z| < 3)."""
    z = {}
    for revival in (False, True):
        settings = BacktestSettings(horizon_days=90, draws=300, tune=300, chains=2, every=None,
                                    model_config={"revival": revival})
        result = backtest(revival_log, FUNNEL, [pd.Timestamp("2024-12-29")], settings, workers=1)
        old = result.age_calibration.set_index("age").loc["180+ days"]
        assert old["deals"] > 100
        z[revival] = old["z"]
    assert z[False] > 3 > abs(z[True]), z
