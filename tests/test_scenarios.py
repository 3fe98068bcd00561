"""What-if scenarios: paired differences, closed form, common random numbers, TOML, CLI."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from funnelsim.data import synth
from funnelsim.data.events import FunnelDataError, read_events
from funnelsim.data.spells import to_spells
from funnelsim.sim.inflow import NewDeals, new_deal_stats
from funnelsim.sim.kernel import Pipeline, simulate
from funnelsim.sim.scenarios import (
    Change,
    NewDeal,
    Scenario,
    apply_changes,
    bottlenecks,
    compare,
    comparison_json,
    paired_revenue,
    plot_scenarios,
    read_scenarios,
)

from .test_forecast import CONFIG, FUNNEL, fitted, run
from .test_simulate import chain, one_stage

HORIZON = 90
STAGES = ["A", "B", "C"]


def revenue(params, pipe, seed=0):
    return simulate(params, pipe, HORIZON, period_of_day=np.zeros(HORIZON, int), seed=seed).revenue[:, 0]


def pipeline(n=2000, seed=1):
    rng = np.random.default_rng(seed)
    return Pipeline(stage=rng.integers(0, 3, n), segment=np.zeros(n, int), age_days=rng.exponential(20, n),
                    amount=rng.lognormal(9, 0.5, n), key=np.arange(n) * 7919)


def test_a_null_change_gives_exactly_zero_difference():
    params, pipe = chain(draws=500), pipeline()
    same = apply_changes(params, [Change("B", conversion_points=0.0), Change(time_factor=1.0)], STAGES, ["all"])
    np.testing.assert_array_equal(revenue(same, pipe), revenue(params, pipe))


def test_more_conversion_raises_revenue_and_slower_time_lowers_it_in_every_draw():
    params, pipe = chain(draws=1000), pipeline()
    base = revenue(params, pipe)
    better = revenue(apply_changes(params, [Change("B", conversion_points=5)], STAGES, ["all"]), pipe)
    slower = revenue(apply_changes(params, [Change("B", time_factor=1.25)], STAGES, ["all"]), pipe)
    assert better.mean() > base.mean() and slower.mean() < base.mean()
    # A deal that moved forward still does, to the same stage; only lost/back/stall paths can
    # turn forward. A turned path can still lose later, and a back move that turned forward
    # can reach Won after the horizon where the old path reached it inside: rare, so 95%.
    assert (better - base >= 0).mean() >= 0.95
    # slowing a stage lengthens every stay in it and changes nothing else: never more revenue
    assert (slower <= base).all()


def test_one_stage_conversion_change_matches_the_closed_form():
    """One stage, won 0.3 / lost 0.2 / stall 0.5; +5 points of conversion makes won 0.35 and
    scales lost and stall by 0.65 / 0.7. P(win within h | age a) in closed form."""
    params = one_stage()
    ages = np.array([0.0, 20.0, 60.0])
    pipe = Pipeline(stage=np.zeros(3, int), segment=np.zeros(3, int), age_days=ages, amount=np.full(3, 100.0))
    edited = apply_changes(params, [Change("A", conversion_points=5)], ["A"], ["all"])
    np.testing.assert_allclose(edited.pi[0, 0, 0], [0.0, 0.35, 0.2 * 0.65 / 0.7, 0.5 * 0.65 / 0.7])
    sim = simulate(edited, pipe, HORIZON, seed=9)
    won, lost = stats.lognorm(0.8, scale=40), stats.lognorm(0.8, scale=20)
    t = ages + 0.5
    k = 0.65 / 0.7
    expected = 0.35 * (won.sf(t) - won.sf(t + HORIZON)) / (0.5 * k + 0.35 * won.sf(t) + 0.2 * k * lost.sf(t))
    se = np.sqrt(expected * (1 - expected) / params.pi.shape[0])
    assert np.all(np.abs(sim.p_win_horizon - expected) <= 4 * se), (sim.p_win_horizon, expected)
    # odds x1.5 on the logit scale: odds of 0.3 become 0.642857 / 1, i.e. P = 0.391304
    odds = apply_changes(params, [Change("A", conversion_odds=1.5)], ["A"], ["all"])
    assert odds.pi[0, 0, 0, 1] == pytest.approx(0.45 / 1.15)


def test_common_random_numbers_shrink_the_spread_of_the_difference():
    """The paired difference of +5 points at stage B has a spread at most a quarter of the
    difference of two runs with independent random numbers (measured: 0.19; non-negative in
    all 1,000 draws)."""
    params, pipe = chain(draws=1000), pipeline()
    base = revenue(params, pipe, seed=0)
    better = apply_changes(params, [Change("B", conversion_points=5)], STAGES, ["all"])
    paired = revenue(better, pipe, seed=0) - base
    independent = revenue(better, pipe, seed=1) - base
    assert paired.std() <= 0.25 * independent.std(), (paired.std(), independent.std())


def test_removing_or_adding_a_deal_changes_exactly_that_deal():
    """Each deal has its own random stream: the pipeline without deal 17, plus deal 17 alone,
    gives the full pipeline's revenue in every draw."""
    params, pipe = chain(draws=300), pipeline(n=500)

    def subset(mask):
        return Pipeline(*(getattr(pipe, f.name)[mask] for f in dataclasses.fields(pipe)))

    keep = np.arange(500) != 17
    np.testing.assert_allclose(revenue(params, subset(keep), seed=2) + revenue(params, subset(~keep), seed=2),
                               revenue(params, pipe, seed=2), rtol=1e-12)


# --------------------------------------------------------------------------- TOML


def write(tmp_path, text):
    path = tmp_path / "scenarios.toml"
    path.write_text(text)
    return path


def test_toml_scenarios_are_read(tmp_path):
    path = write(tmp_path, '''
[[scenario]]
name = "baseline"

[[scenario]]
name = "proposal+5"
segment = "SMB"
remove = ["D1"]
[[scenario.change]]
stage = "Proposal"
conversion_points = 5
[[scenario.change]]
stage = "Proposal"
segment = "SMB"
time_factor = 0.8
[[scenario.add]]
deal_id = "NEW"
stage = "Negotiation"
amount = 50000
''')
    base, plus = read_scenarios(path)
    assert base.is_baseline and not plus.is_baseline and plus.segment == "SMB" and plus.remove == ("D1",)
    assert plus.changes == (Change("Proposal", conversion_points=5.0), Change("Proposal", "SMB", time_factor=0.8))
    assert plus.add == (NewDeal("NEW", "Negotiation", 50000.0),)


@pytest.mark.parametrize(("text", "message"), [
    ('[[scenario]]\nname = "a"\n[[scenario.change]]\nstage = "B"\nconversion_points = 5\ntime_factor = 0.8\n',
     "exactly one of"),
    ('[[scenario]]\nname = "a"\n[[scenario.change]]\nstage = "B"\nconversion_pts = 5\n', "unknown key 'conversion_pts'"),
    ('[[scenario]]\nname = "a"\n[[scenario]]\nname = "a"\n', "used twice"),
    ('[[scenario]]\nname = "a"\n[[scenario.change]]\ntime_factor = -1\n', "must be positive"),
    ('[[scenario]]\nname = "a"\n[[scenario.change]]\nnew_deals_factor = -1\n', "must not be negative"),
    ('[[scenario]]\nname = "a"\n[[scenario.add]]\nstage = "B"\n', "lacks deal_id, amount"),
    ('name = "a"\n', "no [[scenario]] table"),
    ('[[scenario]\n', "not valid TOML"),
])
def test_bad_scenario_files_are_clear_errors(tmp_path, text, message):
    with pytest.raises(FunnelDataError, match=message.replace("[", r"\[")) as info:
        read_scenarios(write(tmp_path, text))
    assert "scenarios.toml" in str(info.value)


# --------------------------------------------------------------------------- with a fitted model

@pytest.fixture(scope="module")
def fitted_crm():
    events, _ = synth.generate(2000, seed=11, config=CONFIG)
    as_of = (events.timestamp.min() + pd.Timedelta(weeks=30)).normalize()
    model, deals = fitted(read_events(events, FUNNEL), as_of, seed=3, draws=150)
    return events, as_of, model, deals


@pytest.mark.slow
def test_compare_bottlenecks_and_names(fitted_crm, monkeypatch):
    _, _, model, deals = fitted_crm
    top = deals.sort_values("amount").deal_id.iloc[-1]
    plan = [Scenario("baseline"), Scenario("proposal+5", (Change("Proposal", conversion_points=5),)),
            Scenario("drop the biggest", remove=(top,)),
            Scenario("new deal", add=(NewDeal("NEW", "Negotiation", 1e6, "Enterprise"),)),
            Scenario("SMB only", segment="SMB")]
    result = compare(model, deals, plan, horizon_days=HORIZON, seed=1, target=1e6)
    table = result.table.set_index("scenario")
    assert table.loc["baseline", ["delta_mean", "delta_p10", "delta_p90", "p_better"]].tolist() == [0, 0, 0, 0]
    assert table.loc["proposal+5", "delta_mean"] > 0 and table.loc["proposal+5", "p_better"] > 0.8
    assert table.loc["drop the biggest", "delta_p90"] <= 0 and table.loc["new deal", "delta_p10"] >= 0
    assert table.loc["SMB only", "revenue_mean"] < table.loc["baseline", "revenue_mean"]
    paired = paired_revenue(model, deals, plan[3:4], horizon_days=HORIZON, seed=1)["new deal"]
    wins_new = (paired[1] - paired[0] > 0).mean()      # the added deal is won in these draws
    assert 0.05 < wins_new < 0.95
    data = comparison_json(table.reset_index(), target=1e6)
    assert result.to_dict() == data
    assert set(data["baseline"]) == {"mean", "p10", "p50", "p90", "p_hit"}
    assert {"name", "revenue", "delta", "p_better", "p_hit"} <= set(data["scenarios"][1])
    ranking = bottlenecks(model, deals, horizon_days=HORIZON, seed=1, by_segment=True)
    assert ranking["gain_mean"].is_monotonic_decreasing and list(ranking["rank"]) == list(range(1, len(ranking) + 1))
    assert len(ranking) == 2 * 4 * (1 + len(model.data.segments))
    time_rows = ranking[ranking.lever.str.startswith("time")]
    assert (time_rows.gain_p10 >= 0).all()                 # faster never loses revenue (paired)
    # the plot draws the comparison's own draws: no second simulation
    from funnelsim.sim import scenarios as scenarios_module

    def no_rerun(*args, **kwargs):
        raise AssertionError("plotting reran the simulation")

    monkeypatch.setattr(scenarios_module, "simulate_run", no_rerun)
    ax = plot_scenarios(result)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["baseline", *[s.name for s in plan]]
    paths = [c.get_segments()[0] for c in ax.collections[::2]]     # the 10-90% lines, baseline first
    for (low, high), (_, revenue) in zip(paths[1:], result.draws.values(), strict=True):
        assert (low[1], high[1]) == pytest.approx(tuple(np.quantile(revenue, [0.1, 0.9])))
    assert result.plot().get_ylabel().startswith(f"revenue in {HORIZON} days")
    monkeypatch.undo()
    with pytest.raises(FunnelDataError, match="Valid stages: Prospecting, Qualified"):
        compare(model, deals, [Scenario("x", (Change("Proposl", conversion_points=5),))])
    with pytest.raises(FunnelDataError, match="Valid segments"):
        compare(model, deals, [Scenario("x", segment="Mars")])
    with pytest.raises(FunnelDataError, match="not open"):
        compare(model, deals, [Scenario("x", remove=("nobody",))])


def _inflow(events, as_of):
    return NewDeals(new_deal_stats(to_spells(read_events(events, FUNNEL), as_of=as_of, segment_by="segment")))


def _new_deal_levers(model, deals, inflow, smb_name, smb_factor):
    """Baseline, twice the new deals, none, and SMB's times ``smb_factor``, paired; and the
    open pipeline alone."""
    plan = [Scenario("baseline"), Scenario("double", (Change(new_deals_factor=2.0),)),
            Scenario("none", (Change(new_deals_factor=0.0),)),
            Scenario(smb_name, (Change(segment="SMB", new_deals_factor=smb_factor),))]
    paired = paired_revenue(model, deals, plan, horizon_days=HORIZON, seed=1, new_deals=inflow)
    pipeline_only = paired_revenue(model, deals, plan[:1], horizon_days=HORIZON, seed=1)["baseline"][0]
    return plan, paired, pipeline_only


@pytest.mark.slow
def test_more_new_deals_add_revenue_paired_and_none_gives_the_pipeline(fitted_crm):
    events, as_of, model, deals = fitted_crm
    inflow = _inflow(events, as_of)
    plan, paired, pipeline_only = _new_deal_levers(model, deals, inflow, "SMB +50%", 1.5)
    base = paired["baseline"][0]
    np.testing.assert_array_equal(paired["baseline"][1], base)
    # no new deals at all is exactly the open pipeline, draw by draw
    np.testing.assert_array_equal(paired["none"][1], pipeline_only)
    new_part = base - pipeline_only
    assert new_part.mean() > 0
    # twice the new deals: they keep the baseline's (same streams) and add as many again
    gain = paired["double"][1] - base
    assert (gain >= -1e-6 * np.abs(base).max()).all()
    assert gain.mean() == pytest.approx(new_part.mean(), rel=0.25)
    smb = paired["SMB +50%"][1] - base
    assert (smb >= -1e-6 * np.abs(base).max()).all() and 0 < smb.mean() < gain.mean()
    with pytest.raises(FunnelDataError, match="needs new deals"):
        paired_revenue(model, deals, plan[1:2], horizon_days=HORIZON, seed=1)
    with pytest.raises(FunnelDataError, match="applies to deals, not to a stage"):
        compare(model, deals, [Scenario("x", (Change("Proposal", new_deals_factor=2.0),))], new_deals=inflow)


@pytest.mark.slow
def test_bottlenecks_with_new_deals_value_the_top_of_the_funnel_more(fitted_crm):
    events, as_of, model, deals = fitted_crm
    inflow = _inflow(events, as_of)
    without = bottlenecks(model, deals, horizon_days=HORIZON, seed=1).set_index(["stage", "lever"])
    with_new = bottlenecks(model, deals, horizon_days=HORIZON, seed=1, new_deals=inflow).set_index(["stage", "lever"])
    top = (FUNNEL.stages[0], "conversion +5 pts")
    # new deals enter at the top: a better first stage gains more once they are counted
    assert with_new.loc[top, "gain_mean"] > 1.2 * without.loc[top, "gain_mean"]
    assert with_new.loc[top, "baseline_mean"] > without.loc[top, "baseline_mean"]
    # the last stage's conversion gains mostly from deals already in the pipeline
    last = (FUNNEL.stages[-1], "conversion +5 pts")
    assert with_new.loc[last, "gain_mean"] >= without.loc[last, "gain_mean"] * 0.95


@pytest.mark.slow
def test_deals_created_already_won_scale_in_revenue_with_the_lever(fitted_crm):
    _, _, model, deals = fitted_crm
    created = pd.DataFrame({"segment": ["SMB", "Enterprise"] * 20, "week": np.arange(40) % 10,
                            "amount": np.tile([1000.0, 5000.0], 20)})
    created.attrs["weeks"] = 10
    none = pd.DataFrame(columns=["segment", "stage", "stage_index", "week", "deals"])
    _, paired, pipeline_only = _new_deal_levers(model, deals, NewDeals(none, created), "SMB x3", 3.0)
    base = paired["baseline"][0]
    created_part = base - pipeline_only
    # about 2 a week per segment for HORIZON days, at 1000 (SMB) and 5000 (Enterprise)
    assert created_part.mean() == pytest.approx((0.5 + 20) / 10 * HORIZON / 7 * 6000, rel=0.15)
    np.testing.assert_allclose(paired["double"][1] - base, created_part, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(paired["none"][1], pipeline_only, rtol=1e-12)
    smb_gain = (paired["SMB x3"][1] - base).mean()
    assert smb_gain == pytest.approx(2 * (0.5 + 20) / 10 * HORIZON / 7 * 1000, rel=0.2)


@pytest.mark.slow
def test_cli_whatif_and_bottlenecks(fitted_crm, tmp_path):
    events, as_of, model, _ = fitted_crm
    log = tmp_path / "crm.csv"
    events.to_csv(log, index=False)
    model.save(tmp_path / "model")
    common = [log, "--stages", ",".join(CONFIG.stages), "--as-of", str(as_of.date()), "--segment-by", "segment",
              "--model", tmp_path / "model"]
    plan = write(tmp_path, '[[scenario]]\nname = "base"\n[[scenario]]\nname = "neg+5"\n'
                           '[[scenario.change]]\nstage = "Negotiation"\nconversion_points = 5\n')
    out = tmp_path / "whatif.json"
    result = run("whatif", *common, "--scenarios", plan, "--target", 1e6, "--json", out)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert [s["name"] for s in data["scenarios"]] == ["base", "neg+5"] and data["scenarios"][1]["delta"]["mean"] > 0
    assert "What-if scenarios" in result.stdout
    result = run("bottlenecks", *common, "--json", tmp_path / "b.json")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "b.json").read_text())["bottlenecks"][0]["rank"] == 1
    bad = write(tmp_path, '[[scenario]]\nname = "x"\n[[scenario.change]]\nstage = "Proposl"\nconversion_points = 5\n')
    result = run("whatif", *common, "--scenarios", bad, "--json", tmp_path / "no.json")
    assert result.returncode == 2 and "Valid stages" in result.stderr and "Traceback" not in result.stderr
    assert "scenarios.toml" in result.stderr
    assert not (tmp_path / "no.json").exists()


@pytest.mark.parametrize("scenario, segment_by, message", [
    ('[[scenario]]\nname = "smb"\nsegment = "SMB"\n', None, "Pass --segment-by COLUMN"),
    ('[[scenario]]\nname = "x"\n[[scenario.change]]\nsegment = "SMB"\nconversion_points = 5\n', None,
     "Pass --segment-by COLUMN"),
    ('[[scenario]]\nname = "x"\nsegment = "Nowhere"\n', "segment", "unknown segment 'Nowhere'"),
    ('[[scenario]]\nname = "x"\nremove = ["no-such-deal"]\n', "segment", "not open at the as-of date"),
    ('[[scenario]]\nname = "x"\n[[scenario.add]]\ndeal_id = "n1"\nstage = "Proposal"\namount = 1000\n', "segment",
     "needs a segment"),
])
def test_whatif_checks_its_scenarios_against_the_log_before_fitting(tmp_path, scenario, segment_by, message):
    """Each of these failed only after a fit (about 30 s) before; now before any: exit 2,
    the message says what to pass, and nothing is fitted."""
    events, _ = synth.generate(300, seed=3, config=CONFIG)
    log = tmp_path / "crm.csv"
    events.to_csv(log, index=False)
    args = [log, "--stages", ",".join(CONFIG.stages), "--scenarios", write(tmp_path, scenario), "--draws", 50]
    result = run("whatif", *args, *(["--segment-by", segment_by] if segment_by else []))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "scenarios.toml" in result.stderr
    assert "Fitting" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_one_segment_scenario_has_its_own_baseline_and_no_whole_funnel_target(fitted_crm):
    """Issue 23: a scenario of SMB's deals was printed beside the whole funnel's baseline. Its
    baseline is a forecast of SMB's deals alone (same seed, same streams), written and shown
    with it; the whole funnel's target is not applied to it; a baseline row shows "—"."""
    from funnelsim.report.render import comparison_rich

    from .test_render_widths import _text

    _, _, model, deals = fitted_crm
    plan = [Scenario("baseline"), Scenario("SMB +5", (Change("Negotiation", conversion_points=5),), segment="SMB")]
    calls = []
    result = compare(model, deals, plan, horizon_days=HORIZON, seed=1, target=1e6,
                     progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]                    # the progress bar's callback, once per scenario
    alone = compare(model, deals[deals["segment"].eq("SMB")], [Scenario("SMB alone")], horizon_days=HORIZON, seed=1)
    smb = result.table.set_index("scenario").loc["SMB +5"]
    assert smb["baseline_mean"] == pytest.approx(alone.table.loc[0, "revenue_mean"], rel=1e-12)
    assert smb["baseline_mean"] < result.table.loc[0, "baseline_mean"] and np.isnan(smb["p_hit"])
    data = result.to_dict()
    assert data["scenarios"][1]["segment"] == "SMB" and data["scenarios"][0]["segment"] is None
    assert data["scenarios"][1]["baseline"]["mean"] == pytest.approx(smb["baseline_mean"])
    assert data["scenarios"][1]["p_hit"] is None and data["baseline"]["mean"] == result.table.loc[0, "baseline_mean"]
    text = _text(comparison_rich(result, HORIZON), 250)
    base_line = next(line for line in text.splitlines() if line.startswith("│ baseline"))
    smb_line = next(line for line in text.splitlines() if line.startswith("│ SMB +5"))
    header = next(line for line in text.splitlines() if "P(better)" in line)
    better = [c.strip() for c in header.split("┃")].index("P(better)")
    assert [c.strip() for c in base_line.split("│")][better] == "—"            # not "P(better) 0%"
    assert base_line.count("—") == 3                                           # nor a difference of +0
    assert f"{smb['baseline_mean']:,.0f}" in smb_line and "—" in smb_line      # its own baseline, no target odds
