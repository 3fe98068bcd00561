"""Tests for funnelsim.data.synth: structure, determinism, and that the truth matches the process."""

import dataclasses
import hashlib
import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from funnelsim.data.synth import STALL, SynthConfig, generate, parse_pass_through, parse_rare, write

BACKWARD = SynthConfig(p_backward=0.2, p_skip=0.1)


@pytest.fixture(scope="module")
def small():
    return generate(20_000, seed=1)


@pytest.fixture(scope="module")
def long_run():
    """10 years of inflow: deals created in the first 5 years are (almost) never censored."""
    cfg = SynthConfig(weeks=520)
    events, truth = generate(200_000, seed=7, config=cfg)
    first = events.groupby("deal_id", sort=False)["timestamp"].transform("min")
    half = np.datetime64(cfg.start) + np.timedelta64(7 * (cfg.weeks // 2), "D")
    early = events[first.to_numpy() < half]
    return cfg, early, truth


def cell(truth, stage, segment):
    [c] = [c for c in truth["cells"] if c["stage"] == stage and c["segment"] == segment]
    return c


def test_same_seed_same_frame_different_seed_differs():
    a, ta = generate(5_000, seed=3)
    b, tb = generate(5_000, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert ta == tb
    c, _ = generate(5_000, seed=4)
    assert not a.equals(c)


def test_structure(small):
    events, truth = small
    cfg = SynthConfig()
    assert list(events.columns) == ["deal_id", "stage", "timestamp", "amount", "segment"]
    for col in ("deal_id", "stage", "segment"):
        assert pd.api.types.is_string_dtype(events[col]), col
    assert pd.api.types.is_datetime64_any_dtype(events["timestamp"])
    assert events["amount"].dtype == np.float64 and (events["amount"] > 0).all()
    assert (events["timestamp"].dt.second == 0).all()
    assert events["timestamp"].dt.hour.nunique() > 12  # times of day, not just dates
    assert events["deal_id"].nunique() == 20_000 and events["deal_id"].str.match(r"^D\d{7}$").all()
    keys = list(zip(events["timestamp"], events["deal_id"], strict=True))
    assert keys == sorted(keys)
    end = pd.Timestamp(truth["as_of"]) + pd.Timedelta(days=1)  # as_of: the end of that day
    assert end == pd.Timestamp(np.datetime64(cfg.start) + np.timedelta64(7 * cfg.weeks, "D"))
    assert events["timestamp"].max() < end
    assert events["timestamp"].max() >= end - pd.Timedelta(days=7)
    assert set(events["stage"]) == {*cfg.stages, cfg.won, cfg.lost}
    assert set(events["segment"]) <= set(cfg.segments)

    by_deal = events.groupby("deal_id", sort=False)
    ts = events["timestamp"].to_numpy()
    same_deal = events["deal_id"].to_numpy()
    order = np.lexsort((np.arange(len(events)), same_deal))  # stable: frame order within deal
    steps = np.diff(ts[order])[same_deal[order][1:] == same_deal[order][:-1]]
    assert (steps >= np.timedelta64(0, "ns")).all()
    assert (by_deal["segment"].nunique() == 1).all()
    terminal = events["stage"].isin([cfg.won, cfg.lost])
    assert (terminal.groupby(events["deal_id"]).sum() <= 1).all()
    is_last = by_deal.cumcount(ascending=False) == 0
    assert not (terminal & ~is_last).any(), "a terminal row is followed by another event"
    first = events[by_deal.cumcount() == 0]["stage"].value_counts()
    terminal_first = first.get(cfg.won, 0) + first.get(cfg.lost, 0)
    assert first[cfg.stages[0]] > first[cfg.stages[1]] > terminal_first > 0
    assert 1_500 < first[cfg.stages[1]] < 2_500  # ~10% created in the second stage
    assert events.groupby("deal_id").size().max() <= cfg.max_moves + 1


def test_truth_is_consistent_and_serialisable(small):
    _, truth = small
    assert json.loads(json.dumps(truth)) == truth
    cfg = SynthConfig()
    assert len(truth["cells"]) == len(cfg.stages) * (len(cfg.segments) + 1)
    for c in truth["cells"]:
        d = c["destinations"]
        assert sum(d.values()) == pytest.approx(1, abs=1e-5)
        assert set(c["sojourn"]) == set(d) - {STALL}
        assert c["p_stall"] == d[STALL] and c["p_lost"] == d[cfg.lost]
        assert c["conversion"] + c["p_lost"] + c["p_stall"] + d.get(c["stage"], 0) <= 1 + 1e-5
        # median_days is the median of the exit-time mixture: check it with scipy's lognorm
        if c["segment"] is not None:
            cdf = sum(d[j] * stats.lognorm.cdf(c["median_days"], s["sigma"], scale=s["median_days"])
                      for j, s in c["sojourn"].items())
            assert cdf / (1 - c["p_stall"]) == pytest.approx(0.5, abs=1e-5)
    # whole-funnel cells: mixture of segment cells with the published weights
    for stage in cfg.stages:
        whole = cell(truth, stage, None)
        w = whole["segment_weights"]
        assert sum(w.values()) == pytest.approx(1, abs=1e-5)
        mix = sum(w[g] * cell(truth, stage, g)["p_win_from_entry"] for g in cfg.segments)
        assert whole["p_win_from_entry"] == pytest.approx(mix, abs=1e-5)
        for j, p in whole["destinations"].items():
            assert p == pytest.approx(sum(w[g] * cell(truth, stage, g)["destinations"][j]
                                          for g in cfg.segments), abs=1e-5)
    # Enterprise converts better and slower than SMB
    ent, smb = cell(truth, cfg.stages[0], "Enterprise"), cell(truth, cfg.stages[0], "SMB")
    assert ent["conversion"] > smb["conversion"] and ent["median_days"] > smb["median_days"]
    assert ent["p_lost"] < smb["p_lost"]


def walk_p_win(truth, segment, start, n_walks, rng):
    """Monte Carlo of the embedded jump chain given by the truth's destination probabilities."""
    stages = truth["stages"]
    names = [*stages, truth["won"], truth["lost"], STALL]
    code = {name: i for i, name in enumerate(names)}
    trans = np.zeros((len(stages), len(names)))
    for s, stage in enumerate(stages):
        for dest, p in cell(truth, stage, segment)["destinations"].items():
            trans[s, code[dest]] = p
    cum = np.cumsum(trans, axis=1)
    state = np.full(n_walks, start)
    for _ in range(2_000):
        open_ = np.flatnonzero(state < len(stages))
        if open_.size == 0:
            break
        u = rng.random(open_.size)
        state[open_] = np.minimum((cum[state[open_]] <= u[:, None]).sum(axis=1), len(names) - 1)
    return np.mean(state == code[truth["won"]])


def test_p_win_from_entry_matches_markov_chain_walk():
    _, truth = generate(100, seed=0, config=BACKWARD)
    assert cell(truth, BACKWARD.stages[1], "SMB")["destinations"][BACKWARD.stages[0]] > 0.15
    rng = np.random.default_rng(123)
    n = 200_000
    for segment in BACKWARD.segments:
        for s, stage in enumerate(BACKWARD.stages):
            want = cell(truth, stage, segment)["p_win_from_entry"]
            got = walk_p_win(truth, segment, s, n, rng)
            se = np.sqrt(want * (1 - want) / n)
            assert abs(got - want) < 4 * se, (stage, segment, got, want)


def test_empirical_win_share_from_first_stage(long_run):
    cfg, early, truth = long_run
    segment = max(cfg.segments, key=cfg.segments.get)
    rows = early[early["segment"] == segment]
    rank = rows.groupby("deal_id", sort=False).cumcount()
    created = rows[rank == 0].set_index("deal_id")
    top = created.index[created["stage"] == cfg.stages[0]]
    n = len(top)
    assert n > 40_000
    c = cell(truth, cfg.stages[0], segment)
    p = c["p_win_from_entry"]
    last = rows.groupby("deal_id", sort=False)["stage"].last()
    won = (last[top] == cfg.won).mean()
    assert abs(won - p) < 4 * np.sqrt(p * (1 - p) / n), (won, p)



def test_empirical_time_in_first_stage_by_segment(long_run):
    """Median time from creation in the first stage to the next event, per segment."""
    cfg, early, truth = long_run
    rank = early.groupby("deal_id", sort=False).cumcount()
    created = early[rank == 0].set_index("deal_id")
    created = created[created["stage"] == cfg.stages[0]]
    second = early[rank == 1].set_index("deal_id")["timestamp"].reindex(created.index)
    days = (second.to_numpy() - created["timestamp"].to_numpy()) / np.timedelta64(1, "D")
    checked = 0
    for segment in cfg.segments:
        d = days[(created["segment"] == segment).to_numpy() & ~np.isnan(days)]
        if len(d) < 5_000:
            continue
        want = cell(truth, cfg.stages[0], segment)["median_days"]
        tol = 4 * 1.2533 * 0.8 / np.sqrt(len(d))  # 4 SE of a sample median on the log scale
        assert abs(np.log(np.median(d) / want)) < tol, (segment, np.median(d), want)
        checked += 1
    assert checked == 3


def test_empirical_destinations_match_truth(long_run):
    """Every spell's next event (none = stall) is drawn from the cell's destination probabilities."""
    cfg, early, truth = long_run
    nxt = early.groupby("deal_id", sort=False)["stage"].shift(-1).fillna(STALL)
    checked = 0
    for c in truth["cells"]:
        if c["segment"] is None:
            continue
        spells = ((early["stage"] == c["stage"]) & (early["segment"] == c["segment"])).to_numpy()
        n = spells.sum()
        if n < 2_000:
            continue
        share = nxt[spells].value_counts(normalize=True)
        assert set(share.index) <= set(c["destinations"]), (c["stage"], c["segment"])
        for dest, p in c["destinations"].items():
            se = np.sqrt(p * (1 - p) / n)
            assert abs(share.get(dest, 0.0) - p) < 4 * se, (c["stage"], c["segment"], dest)
        checked += 1
    assert checked >= 12


def test_amounts(long_run):
    """Created amounts by segment; Lost keeps the amount; Won and moves multiply it by LogNormals."""
    cfg, early, truth = long_run
    prev = early.groupby("deal_id", sort=False)["amount"].shift(1)
    log_ratio = np.log(early["amount"] / prev)
    lost = (early["stage"] == cfg.lost) & prev.notna()
    assert np.allclose(log_ratio[lost], 0, atol=1e-5)
    won = (early["stage"] == cfg.won) & prev.notna()
    assert log_ratio[won].mean() == pytest.approx(cfg.won_log_ratio_mean, abs=0.005)
    assert log_ratio[won].std() == pytest.approx(cfg.won_log_ratio_sigma, rel=0.05)
    moved = early["stage"].isin(cfg.stages) & prev.notna()
    assert log_ratio[moved].mean() == pytest.approx(0, abs=0.005)
    assert log_ratio[moved].std() == pytest.approx(cfg.move_amount_sigma, rel=0.05)
    created = early[prev.isna() & early["stage"].isin(cfg.stages)]
    for segment, median in truth["amounts"]["median_created"].items():
        a = created.loc[created["segment"] == segment, "amount"]
        if len(a) > 1_000:
            assert np.median(a) == pytest.approx(median, rel=0.05), segment


def test_empirical_whole_funnel_conversion_uses_entry_weights(long_run):
    """Pooling every spell in a stage (re-entries included) estimates the whole-funnel cell.

    Weighting segments by deal share alone would miss later stages by 5-7 SE here, because
    Enterprise deals convert better and so make up more of the entries into later stages.
    """
    cfg, early, truth = long_run
    nxt = early.groupby("deal_id", sort=False)["stage"].shift(-1)
    for s, stage in enumerate(cfg.stages):
        spells = early["stage"] == stage
        forward = nxt[spells].isin([*cfg.stages[s + 1:], cfg.won]).mean()
        p = cell(truth, stage, None)["conversion"]
        assert abs(forward - p) < 4 * np.sqrt(p * (1 - p) / spells.sum()), (stage, forward, p)


@pytest.mark.parametrize("name", ["events.csv", "events.parquet"])
def test_write_round_trip(tmp_path, name):
    path = tmp_path / "out" / name
    truth = write(path, 2_000, seed=5)
    events, truth2 = generate(2_000, seed=5)
    assert truth == truth2
    if name.endswith(".csv"):
        back = pd.read_csv(path, parse_dates=["timestamp"])
    else:
        back = pd.read_parquet(path)
    back["timestamp"] = back["timestamp"].astype("datetime64[ns]")
    pd.testing.assert_frame_equal(back, events)
    truth_file = tmp_path / "out" / "events.truth.json"
    assert json.loads(truth_file.read_text()) == truth
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([name, "events.truth.json"])


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="distinct"):
        generate(10, config=SynthConfig(stages=("A", "Won")))
    with pytest.raises(ValueError, match="p_lost"):
        generate(10, config=SynthConfig(p_lost=(0.3, 0.3)))
    with pytest.raises(ValueError, match="room"):
        generate(10, config=SynthConfig(p_lost=(0.9, 0.3, 0.3, 0.3)))


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(OSError, match="disk full"):
        write(tmp_path / "events.csv", 500)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- awkward timing (issue 18)

# sha256 of generate(5_000, seed=1)'s CSV, and of its truth without the fields added with the
# timing knobs, computed before they existed (commit 2654600)
DEFAULT_CSV_SHA256 = "b67e42d0b7435795769791a6ecec17cbe6023b0bf52dbd1cafdefa577e229a32"
DEFAULT_TRUTH_SHA256 = "fcba41c48e0da03a6f3f2ed70948461f302283529edd0df5bc55efbe94a3a7c0"
AWKWARD = SynthConfig(
    pass_through={"Qualified": 1.0, "Proposal": 0.3}, p_same_day_jump=0.15,
    rare_destinations={("Prospecting", "Won"): 0.006},
    destination_segments={("Proposal", "Qualified"): ("Enterprise",)})


@pytest.fixture(scope="module")
def awkward_run():
    """10 years of the awkward config; deals created in the first 5 are (almost) all resolved."""
    cfg = dataclasses.replace(AWKWARD, weeks=520)
    events, truth = generate(100_000, seed=18, config=cfg)
    first = events.groupby("deal_id", sort=False)["timestamp"].transform("min")
    half = np.datetime64(cfg.start) + np.timedelta64(7 * (cfg.weeks // 2), "D")
    early = events[first.to_numpy() < half].copy()
    by_deal = early.groupby("deal_id", sort=False)
    early["next"] = by_deal["stage"].shift(-1)
    early["seconds"] = (by_deal["timestamp"].shift(-1) - early["timestamp"]).dt.total_seconds()
    return cfg, early, truth


def test_default_log_is_bit_identical_to_before_the_timing_knobs():
    events, truth = generate(5_000, seed=1)
    assert hashlib.sha256(events.to_csv(index=False).encode()).hexdigest() == DEFAULT_CSV_SHA256
    old = {k: v for k, v in truth.items() if k not in ("timing", "rare_destinations")}
    old["cells"] = [{k: v for k, v in c.items() if k not in ("instant_share", "p_instant")}
                    for c in truth["cells"]]
    assert hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest() == DEFAULT_TRUTH_SHA256
    assert truth["timing"] == {"resolution": "minute", "pass_through": {}, "p_same_day_jump": 0.0,
                               "instant_seconds": [1.0, 120.0]}
    assert all(c["p_instant"] == 0 for c in truth["cells"])


def test_instant_share_per_destination_matches_truth(awkward_run):
    """A stay ending in j lasts 1-120 s with probability 1 - (1 - pass_through)(1 - jump [forward])."""
    cfg, early, truth = awkward_run
    lo, hi = cfg.instant_seconds
    moved = early["next"].notna()
    quick = early["seconds"] <= hi
    # a pure pass-through: every stay, whatever its destination, lasts seconds
    q = moved & (early["stage"] == "Qualified")
    assert q.sum() > 20_000 and early.loc[q, "seconds"].between(lo, hi).all()
    assert cell(truth, "Qualified", None)["p_instant"] == 1
    assert cell(truth, "Qualified", None)["median_days"] == pytest.approx(60.5 / 86_400, abs=1e-6)
    want = {("Prospecting", "Qualified"): 0.15, ("Prospecting", "Lost"): 0.0,
            ("Proposal", "Negotiation"): 1 - 0.7 * 0.85, ("Proposal", "Lost"): 0.3,
            ("Negotiation", "Proposal"): 0.0, ("Negotiation", "Won"): 0.15}
    for (stage, dest), h in want.items():
        assert cell(truth, stage, None)["instant_share"][dest] == pytest.approx(h)
        spells = moved & (early["stage"] == stage) & (early["next"] == dest)
        n, got = spells.sum(), quick[spells].mean()
        assert n > 500 and abs(got - h) <= 4 * np.sqrt(h * (1 - h) / n) + 1e-12, (stage, dest, got, h)
        if 0 < h < 1:  # the rest keep their LogNormal time: none of it is under a minute or two
            assert early.loc[spells & ~quick, "seconds"].min() > 3_600
    # p_instant: the share of all the stage's exits, pooled over segments
    for stage in ("Prospecting", "Proposal", "Negotiation"):
        spells = moved & (early["stage"] == stage)
        p, n = cell(truth, stage, None)["p_instant"], spells.sum()
        assert abs(quick[spells].mean() - p) < 4 * np.sqrt(p * (1 - p) / n), stage


def test_same_day_jumps_chain_through_several_stages(awkward_run):
    """Prospecting -> Qualified (a jump) -> Proposal (pass-through) -> Negotiation (a jump or the
    30% pass-through) all within seconds: consecutive instant stays, as often as the truth says."""
    cfg, early, truth = awkward_run
    rows = early.sort_values("deal_id", kind="stable").reset_index(drop=True)  # deal by deal
    quick = rows["seconds"] <= cfg.instant_seconds[1]
    entered = (rows["stage"] == "Prospecting") & (rows["next"] == "Qualified")
    chain = entered & quick & (rows["next"].shift(-1) == "Proposal") \
        & (rows["next"].shift(-2) == "Negotiation") & quick.shift(-2, fill_value=False)
    assert (rows["stage"].shift(-1)[entered] == "Qualified").all()
    # per segment, among Prospecting -> Qualified moves: P(that stay instant) x P(Qualified ->
    # Proposal) x P(Proposal -> Negotiation) x P(that stay instant); Qualified stays are instant
    expected = var = 0.0
    for g in cfg.segments:
        qual, prop = cell(truth, "Qualified", g), cell(truth, "Proposal", g)
        p = (0.15 * qual["destinations"]["Proposal"] * prop["destinations"]["Negotiation"]
             * prop["instant_share"]["Negotiation"])
        n = (entered & (rows["segment"] == g)).sum()
        expected, var = expected + n * p, var + n * p * (1 - p)
    assert chain.sum() > 200  # jumps through three stages happen
    assert abs(chain.sum() - expected) < 4 * np.sqrt(var), (chain.sum(), expected)
    span = rows["timestamp"].shift(-3)[chain] - rows["timestamp"][chain]
    assert (span <= pd.Timedelta(seconds=3 * cfg.instant_seconds[1])).all()


def test_p_win_from_entry_holds_with_awkward_timing(awkward_run):
    """Timing does not change P(win from entry): the share of resolved early deals created in the
    first stage that end Won matches the truth, per segment (rare direct wins included)."""
    cfg, early, truth = awkward_run
    rank = early.groupby("deal_id", sort=False).cumcount()
    created = early[rank == 0].set_index("deal_id")
    last = early.groupby("deal_id", sort=False)["stage"].last()
    checked = 0
    for segment in cfg.segments:
        top = created.index[(created["stage"] == cfg.stages[0]) & (created["segment"] == segment)]
        if len(top) < 5_000:
            continue
        p = cell(truth, cfg.stages[0], segment)["p_win_from_entry"]
        won = (last[top] == cfg.won).mean()
        assert abs(won - p) < 4 * np.sqrt(p * (1 - p) / len(top)), (segment, won, p)
        checked += 1
    assert checked == 3


def test_rare_and_segment_only_destinations(awkward_run):
    """Prospecting -> Won has a few dozen exits in a 5,000-deal log, as many as the truth says;
    Proposal -> Qualified exists for Enterprise only, at the truth's rate."""
    events, truth = generate(5_000, seed=2, config=AWKWARD)
    nxt = events.groupby("deal_id", sort=False)["stage"].shift(-1)
    seg = events["segment"]
    count, expected, var = 0, 0.0, 0.0
    for g in AWKWARD.segments:
        d = cell(truth, "Prospecting", g)["destinations"]
        p = d["Won"] / (1 - d[STALL])  # P(Won | the stay ends in a move)
        m = ((events["stage"] == "Prospecting") & (seg == g) & nxt.notna()).sum()
        count += ((events["stage"] == "Prospecting") & (seg == g) & (nxt == "Won")).sum()
        expected, var = expected + m * p, var + m * p * (1 - p)
    assert 15 < expected < 60 and abs(count - expected) < 4 * np.sqrt(var), (count, expected)
    assert truth["rare_destinations"] == [
        {"stage": "Proposal", "destination": "Qualified", "base_probability": None,
         "segments": ["Enterprise"]},
        {"stage": "Prospecting", "destination": "Won", "base_probability": 0.006, "segments": None}]

    cfg, early, truth = awkward_run
    back = (early["stage"] == "Proposal") & (early["next"] == "Qualified")
    assert set(early.loc[back, "segment"]) == {"Enterprise"}
    for g in cfg.segments:
        d = cell(truth, "Proposal", g)["destinations"]
        assert ("Qualified" in d) == (g == "Enterprise")
        assert sum(d.values()) == pytest.approx(1, abs=1e-5)
    spells = (early["stage"] == "Proposal") & (early["segment"] == "Enterprise")
    p, n = cell(truth, "Proposal", "Enterprise")["destinations"]["Qualified"], spells.sum()
    got = (early.loc[spells, "next"].fillna(STALL) == "Qualified").mean()
    assert abs(got - p) < 4 * np.sqrt(p * (1 - p) / n), (got, p)


def test_date_only_drops_the_time_of_day_and_keeps_each_deals_order(tmp_path):
    """The date-only log is the timed log with the time of day dropped, rows in each deal's true
    order; funnelsim's reader (equal times: source row, won/lost last) reads that order back."""
    from funnelsim.data.events import FunnelDefinition, read_events

    timed, _ = generate(3_000, seed=4, config=AWKWARD)
    cfg = dataclasses.replace(AWKWARD, date_only=True)
    path = tmp_path / "dates.csv"
    truth = write(path, 3_000, seed=4, config=cfg)
    dates, _ = generate(3_000, seed=4, config=cfg)
    assert truth["timing"]["resolution"] == "day"
    assert (dates["timestamp"] == dates["timestamp"].dt.normalize()).all()
    stamps = path.read_text().splitlines()[1:]
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", line.split(",")[2]) for line in stamps)
    keys = list(zip(dates["timestamp"], dates["deal_id"], strict=True))
    assert keys == sorted(keys)

    def per_deal(frame):  # stable: frame order within each deal
        return frame.sort_values("deal_id", kind="stable").reset_index(drop=True)

    want = per_deal(timed).assign(timestamp=lambda f: f["timestamp"].dt.normalize())
    pd.testing.assert_frame_equal(per_deal(dates), want)
    same_day = dates.duplicated(["deal_id", "timestamp"], keep=False)
    assert same_day.sum() > 1_000  # the order within a day matters for many rows
    log = read_events(path, FunnelDefinition(cfg.stages, (cfg.won,), (cfg.lost,))).to_pandas()
    assert log["stage"].tolist() == want["stage"].tolist()
    assert log["deal_id"].tolist() == want["deal_id"].tolist()


def test_timing_knobs_are_validated_and_parsed():
    for bad, match in [({"pass_through": {"Nope": 1.0}}, "pass_through"),
                       ({"pass_through": {"Qualified": 1.5}}, "pass_through"),
                       ({"p_same_day_jump": -0.1}, "p_same_day_jump"),
                       ({"instant_seconds": (60.0, 30.0)}, "instant_seconds"),
                       ({"rare_destinations": {("Prospecting", "Qualified"): 0.1}}, "main advance"),
                       ({"rare_destinations": {("Prospecting", "stall"): 0.1}}, "rare destination"),
                       ({"destination_segments": {("Proposal", "Qualified"): ("Nope",)}}, "segments")]:
        with pytest.raises(ValueError, match=match):
            generate(10, config=SynthConfig(**bad))
    assert parse_pass_through(["Qualified=1", "Proposal=0.3, Negotiation"]) == {
        "Qualified": 1.0, "Proposal": 0.3, "Negotiation": 1.0}
    assert parse_rare(["Prospecting:Won=0.006", "Proposal:Qualified@Enterprise+SMB"]) == {
        "rare_destinations": {("Prospecting", "Won"): 0.006},
        "destination_segments": {("Proposal", "Qualified"): ("Enterprise", "SMB")}}
    with pytest.raises(ValueError, match="FROM:TO"):
        parse_rare(["Prospecting-Won=0.1"])


def test_cli_synth_writes_the_awkward_log(tmp_path):
    from typer.testing import CliRunner

    from funnelsim.cli.app import app

    out = tmp_path / "crm.csv"
    args = ["synth", str(out), "--deals", "500", "--seed", "3", "--pass-through", "Qualified=1.0",
            "--same-day-jump", "0.2", "--date-only", "--rare", "Prospecting:Won=0.01",
            "--rare", "Proposal:Qualified@Enterprise"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    truth = json.loads((tmp_path / "crm.truth.json").read_text())
    config = SynthConfig(pass_through={"Qualified": 1.0}, p_same_day_jump=0.2, date_only=True,
                         rare_destinations={("Prospecting", "Won"): 0.01},
                         destination_segments={("Proposal", "Qualified"): ("Enterprise",)})
    assert truth == generate(500, seed=3, config=config)[1]
    bad = CliRunner().invoke(app, ["synth", str(tmp_path / "x.csv"), "--pass-through", "Nope=1"])
    assert bad.exit_code == 2 and not (tmp_path / "x.csv").exists()


def test_drift_and_shocks_by_entry_month_come_with_their_truth():
    """Issue 20 item 8: a trend, a jump and monthly shocks in conversion. Each month's truth is
    what the log shows: the share of Prospecting stays begun that month that moved forward
    (months at least six months before the end, so hardly a stay is still open but stalled
    ones) matches its cohort's conversion within binomial error, and follows the drift."""
    from funnelsim.data.events import FunnelDefinition, read_events
    from funnelsim.data.spells import to_spells

    cfg = SynthConfig(drift_per_month=-0.06, drift_jumps={"2025-01": 0.8}, shock_sd=0.15, shock_speed_sd=0.1)
    events, truth = generate(20_000, seed=4, config=cfg)
    log = read_events(events, FunnelDefinition(cfg.stages, cfg.won, cfg.lost))
    stays = to_spells(log, as_of=truth["as_of"]).table.to_pandas()
    first = stays[stays["stage"].eq("Prospecting")]
    month = pd.to_datetime(first["entered"]).dt.strftime("%Y-%m")
    forward = first["move"].isin(["next", "skip", "won"]).groupby(month).agg(["mean", "size"])
    cohorts = {c["cohort"]: next(x["conversion"] for x in c["cells"] if x["stage"] == "Prospecting")
               for c in truth["cohorts"]}
    early = [m for m in forward.index if m <= "2025-06" and forward.loc[m, "size"] >= 300]
    assert len(early) >= 15
    expected = np.array([cohorts[m] for m in early])
    seen = forward.loc[early, "mean"].to_numpy()
    sd = np.sqrt(expected * (1 - expected) / forward.loc[early, "size"].to_numpy())
    assert np.all(np.abs(seen - expected) <= 4 * sd + 0.01), np.c_[seen, expected]
    assert expected.max() - expected.min() > 0.1 and np.corrcoef(seen, expected)[0, 1] > 0.9
    # the jump: January 2025 converts better than December 2024, in truth and in the log
    assert cohorts["2025-01"] > cohorts["2024-12"] + 0.05 and forward.loc["2025-01", "mean"] > forward.loc["2024-12", "mean"]
    assert "cohorts" not in generate(200, seed=4)[1]          # no drift asked, none written
