"""A funnel that drifts over entry cohorts (issue 20 item 1): the statistics split by cohort, the
random walks recovered against the generator's known cohort shifts, open deals simulated with
their own cohort and later stays with a cohort projected over the horizon."""

import warnings

import numpy as np
import pandas as pd
import pytest

from funnelsim.data.events import FunnelDataError, FunnelDefinition
from funnelsim.data.snapshot import Snapshot
from funnelsim.data.synth import SynthConfig, generate
from funnelsim.model.drift import parameter_sets, projected_steps
from funnelsim.model.funnel_model import FunnelModel
from funnelsim.sim.kernel import Parameters, Pipeline, simulate
from funnelsim.sim.run import deal_arrays

pytestmark = pytest.mark.xdist_group("drift")      # one compiled drift model for the file's fits

DRIFTING = SynthConfig(drift_per_month=-0.06, drift_jumps={"2025-01": 0.6}, shock_sd=0.1)


@pytest.fixture(scope="module")
def drifting():
    events, truth = generate(3000, seed=2, config=DRIFTING)
    funnel = FunnelDefinition(DRIFTING.stages, DRIFTING.won, DRIFTING.lost)
    return events, truth, funnel


@pytest.fixture(scope="module")
def drift_model(drifting):
    events, _, funnel = drifting
    snapshot = Snapshot.read(events, funnel, segment_by="segment", every="month")
    model = FunnelModel.from_snapshot(snapshot)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")           # a short test fit may miss the ESS threshold
        model.fit(draws=500, tune=300, chains=2, random_seed=1)
    return snapshot, model


def test_cohort_statistics_add_up_to_the_unsplit_ones(drifting):
    events, _, funnel = drifting
    whole = Snapshot.read(events, funnel, segment_by="segment", every=None).stage_stats
    split = Snapshot.read(events, funnel, segment_by="segment", every="month").stage_stats
    key = ["stage", "segment", "destination", "bin"]
    summed = split.table.groupby(key)[["n", "sum_log_t", "sum_log_t2"]].sum()
    pd.testing.assert_frame_equal(summed, whole.table.set_index(key)[["n", "sum_log_t", "sum_log_t2"]].sort_index(),
                                  check_exact=False, rtol=1e-9)
    assert split.cohorts[0] == "2024-01" and split.cohorts[-1] == "2025-12" and len(split.cohorts) == 24
    # a stay's cohort is the month it began in
    stays = Snapshot.read(events, funnel, segment_by="segment", every=None).spells.table.to_pandas()
    began = pd.to_datetime(stays.loc[stays["stage"].eq("Qualified"), "entered"]).dt.strftime("%Y-%m")
    by_cohort = split.table[split.table["stage"].eq("Qualified")].groupby("cohort")["n"].sum()
    assert by_cohort.to_dict() == began.value_counts().to_dict()
    quarters = Snapshot.read(events, funnel, every="quarter").stage_stats.cohorts
    assert quarters == tuple(f"{y}Q{q}" for y in (2024, 2025) for q in (1, 2, 3, 4))


def test_a_history_of_two_months_is_too_short_to_drift(drifting):
    """The Python API drifts by month by default, like the command line; a history too short for
    a drift is fitted without one, with a warning; statistics split by hand are refused."""
    from funnelsim.data.stats import to_stage_stats
    from funnelsim.sim.backtest import BacktestSettings

    events, _, funnel = drifting
    assert Snapshot.read(events, funnel).every == "month" and BacktestSettings().every == "month"
    assert FunnelModel.from_events(events, funnel).cohorts is not None
    assert FunnelModel.from_events(events, funnel, every=None).cohorts is None
    early = events[events["timestamp"] < "2024-02-20"]
    snapshot = Snapshot.read(early, funnel)
    with pytest.warns(UserWarning, match="needs 3"):
        stats = snapshot.stage_stats
    assert stats.every is None and FunnelModel.from_snapshot(snapshot).cohorts is None
    with pytest.raises(FunnelDataError, match="at least 3") as caught:
        FunnelModel(to_stage_stats(snapshot.spells, None, "month"))
    assert "--drift none" in caught.value.hint


def test_later_stays_follow_the_projected_parameters():
    """Parameter set 1 (a deal's own cohort) loses every deal at stage 1, set 0 (the projected
    cohort) wins it: a deal in stage 0 following set 1 wins only when its later stays follow
    set 0 (``later``), and P(win ever) says the same."""
    D, S = 500, 2
    pi = np.zeros((D, S, 2, S + 3))
    pi[:, 0, :, 1] = 1.0                       # stage 0 -> stage 1, both sets
    pi[:, 1, 0, S] = 1.0                       # set 0: stage 1 -> won
    pi[:, 1, 1, S + 1] = 1.0                   # set 1: stage 1 -> lost
    loc = np.full((D, S, 2, S + 2), np.log(3.0))
    params = Parameters(pi=pi, family="lognormal", loc=loc, shape=np.full((D, S, S + 2), 0.3),
                        ratio_mean=np.zeros((D, 2)), ratio_sd=np.zeros((D, 2)), won_amounts=np.full((2, 3), np.nan))
    deal = Pipeline(stage=[0], segment=[1], age_days=[1.0], amount=[100.0])
    own = simulate(params, deal, 90, seed=1)
    projected = simulate(Parameters(**{**params.__dict__, "later": np.array([0, 0])}), deal, 90, seed=1)
    assert own.p_win_horizon[0] == 0.0 and own.p_win_ever[0] == 0.0
    assert projected.p_win_horizon[0] == 1.0 and projected.p_win_ever[0] == pytest.approx(1.0)


@pytest.mark.slow
def test_the_cohort_walk_recovers_the_true_drift(drifting, drift_model):
    """The generator shifts every forward logit by a known amount per entry month (a trend of
    -0.06 a month, a jump of +0.6 in January 2025, shocks of 0.1): the fitted walk's 90%
    intervals cover that shift (centred like the walk) in at least 80% of (forward pair, cohort)
    cells, and a funnel that did not drift (shift 0) would be covered in far fewer."""
    _, truth, _ = drifting
    _, model = drift_model
    post = model.idata.posterior["drift_logit"]
    levels = post.values.reshape(-1, *post.shape[2:])                      # (draws, pair, cohort)
    shifts = pd.DataFrame(truth["cohorts"]).set_index("cohort")["forward_shift"]
    cohorts = [c for c in model.cohorts.cohorts if c in shifts.index]
    columns = [model.cohorts.cohorts.index(c) for c in cohorts]
    S = len(model.data.stages)
    covered, flat = [], []
    for k, (s, j) in enumerate(model.data.pairs):
        if not (s < j <= S):                                                # forward pairs: the shifted ones
            continue
        w = model.cohorts.weights[s, columns]
        true = shifts[cohorts].to_numpy() - (w * shifts[cohorts].to_numpy()).sum() / w.sum()
        low, high = np.percentile(levels[:, k][:, columns], [5, 95], axis=0)
        covered.append((low <= true) & (true <= high))
        flat.append((low <= 0) & (0 <= high))
    covered, flat = np.concatenate(covered), np.concatenate(flat)
    assert covered.size >= 150
    assert covered.mean() >= 0.8, covered.mean()
    assert flat.mean() <= covered.mean() - 0.25, (flat.mean(), covered.mean())
    # the funnel now is the last cohort's: its P(advance) at Prospecting covers that month's true
    # conversion, which the average funnel (the stationary model's answer) is far above
    conversion = {c["cohort"]: next(x["conversion"] for x in c["cells"] if x["stage"] == "Prospecting")
                  for c in truth["cohorts"]}
    table = model.stage_table()
    row = table[table["stage"].eq("Prospecting") & table["segment"].isna()].iloc[0]
    last = conversion[model.cohorts.cohorts[-1]]
    assert row["p_advance_low"] <= last <= row["p_advance_high"], (row["p_advance_low"], last, row["p_advance_high"])
    assert np.mean(list(conversion.values())) > row["p_advance_high"]


@pytest.mark.slow
def test_open_deals_follow_their_cohort_and_the_band_widens_with_the_horizon(drift_model):
    snapshot, model = drift_model
    deals = snapshot.open_deals
    params = model.simulation_parameters(draws=200, seed=1, horizon_days=90)
    pipeline = deal_arrays(model, deals, params)
    G = len(model.data.segments)
    entered = (snapshot.as_of + pd.Timedelta(days=1) - pd.to_timedelta(deals["age_days"], unit="D")).dt.strftime("%Y-%m")
    inverse = {index: key for key, index in params.cohort_sets.items()}
    for i in np.flatnonzero(pipeline.segment >= G)[:50]:
        g, c = inverse[int(pipeline.segment[i])]
        assert model.data.segments[g] == deals["segment"].iloc[i]
        assert model.cohorts.cohorts[c] == entered.iloc[i]
    assert (pipeline.segment >= G).mean() > 0.9          # nearly every open deal has its cohort's parameters
    # the projected cohort moves further from the last one the longer the horizon
    assert projected_steps(model.cohorts, model.stats.as_of, 360) > projected_steps(model.cohorts, model.stats.as_of, 30) + 3
    pick = np.arange(0, 1000, 2)
    near, far = (parameter_sets(model, pick, h, seed=1)["pi"][:, 0, :G, 1] for h in (30, 360))
    assert far.std(axis=0).mean() > 1.3 * near.std(axis=0).mean()


@pytest.mark.slow
def test_a_saved_drift_model_loads_and_refuses_a_stationary_log(tmp_path, drifting, drift_model):
    events, _, funnel = drifting
    snapshot, model = drift_model
    model.save(tmp_path / "m")
    loaded = FunnelModel.load(tmp_path / "m", snapshot.stage_stats)
    a = model.simulation_parameters(draws=50, seed=3, horizon_days=60)
    b = loaded.simulation_parameters(draws=50, seed=3, horizon_days=60)
    np.testing.assert_array_equal(a.pi, b.pi)
    assert a.cohort_sets == b.cohort_sets
    stationary = Snapshot.read(events, funnel, segment_by="segment", every=None).stage_stats
    with pytest.raises(FunnelDataError, match="--drift month, not none"):
        FunnelModel.load(tmp_path / "m", stationary)


@pytest.mark.slow
def test_the_cohort_table_and_its_plot(drifting, drift_model):
    from funnelsim.report.charts import plot_drift

    snapshot, model = drift_model
    table = model.cohort_table(draws=100)
    whole = table[table["segment"].isna()]
    assert len(whole) == len(model.data.stages) * len(snapshot.stage_stats.cohorts)
    # entered: every stay of the statistics, by the cohort it began in
    assert whole["entered"].sum() == snapshot.stage_stats.stays
    assert (table["p_advance_low"] <= table["p_advance"]).all() and (table["p_advance"] <= table["p_advance_high"]).all()
    # the drift is in the table: the first cohorts advance far more often than the last
    first = whole[whole["cohort"].eq("2024-02")].set_index("stage")["p_advance"]
    last = whole[whole["cohort"].eq("2025-11")].set_index("stage")["p_advance"]
    assert (first > last + 0.05).all(), (first, last)
    ax = plot_drift(table, "p_advance")
    assert len(ax.get_lines()) == len(model.data.stages)
    assert ax.yaxis.get_major_formatter()(0.25, 0) == "25%"
    with pytest.raises(FunnelDataError, match="does not drift"):
        FunnelModel(Snapshot.read(drifting[0], drifting[2], every=None).stage_stats).cohort_table()


@pytest.mark.slow
def test_drift_command_json(tmp_path, drifting):
    import json
    import subprocess
    import sys

    events, _, _ = drifting
    path = tmp_path / "crm.csv"
    events.to_csv(path, index=False)
    funnel = ["--stages", ",".join(DRIFTING.stages), "--won", DRIFTING.won, "--lost", DRIFTING.lost]
    out, png = tmp_path / "drift.json", tmp_path / "drift.png"
    result = subprocess.run([sys.executable, "-m", "funnelsim.cli.app", "drift", str(path), *funnel,
                             "--segment-by", "segment", "--draws", "300", "--chains", "2", "--json", str(out),
                             "--plot", str(png)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["every"] == "month" and data["as_of"] == "2025-12-28"
    rows = data["cohorts"]
    assert {r["segment"] for r in rows} == {None, *DRIFTING.segments}
    row = next(r for r in rows if r["cohort"] == "2024-03" and r["stage"] == "Qualified" and r["segment"] is None)
    assert set(row) == {"cohort", "stage", "segment", "entered", "p_advance", "p_win_from_entry", "median_days"}
    assert set(row["p_advance"]) == {"mean", "low", "high"} and row["p_advance"]["low"] < row["p_advance"]["high"]
    whole = [r for r in rows if r["segment"] is None]
    parts = [r for r in rows if r["segment"] is not None]
    assert sum(r["entered"] for r in whole) == sum(r["entered"] for r in parts) > 5000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Prospecting by entry cohort" in result.stdout and "2025-12" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "funnelsim.cli.app", "drift", str(path), *funnel, "--every", "fortnight"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "week" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_a_what_if_edits_every_parameter_set_of_its_segment(drift_model):
    """A drifting model has several parameter sets per segment (its open deals' cohorts and the
    projected one): a conversion change for one segment edits all of that segment's sets and no
    other's, so the segment's revenue rises and the others' does not move."""
    from funnelsim.sim.changes import apply_changes
    from funnelsim.sim.scenarios import Change, Scenario, compare

    snapshot, model = drift_model
    params = model.simulation_parameters(draws=100, seed=1, horizon_days=90)
    segments = list(model.data.segments)
    edited = apply_changes(params, (Change("Negotiation", "SMB", conversion_points=10),), list(model.data.stages),
                           segments)
    changed = np.flatnonzero((edited.pi != params.pi).any(axis=(0, 1, 3)))
    assert set(params.segment_of[changed]) == {segments.index("SMB")}
    assert len(changed) == (params.segment_of == segments.index("SMB")).sum() > 1
    result = compare(model, snapshot, [Scenario("baseline"), Scenario("smb", (Change("Negotiation", "SMB",
                                                                                        conversion_points=10),))],
                     horizon_days=90, draws=100, seed=2)
    row = result.table.set_index("scenario").loc["smb"]
    assert row["delta_mean"] > 0
