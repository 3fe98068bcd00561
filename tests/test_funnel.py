"""Tests for funnelsim.report.funnel: estimators against scikit-survival, hand-computed tables, censoring.

The reference for the Kaplan-Meier and Aalen-Johansen estimators is scikit-survival
(``sksurv.nonparametric``), which supports pandas 3; lifelines, used before, caps pandas below 3.
Weighted rows are expanded (``np.repeat``) since the reference takes one row per stay.
"""

import json

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from sksurv.nonparametric import (
    cumulative_incidence_competing_risks,
    kaplan_meier_estimator,
)

from funnelsim.report.funnel import (
    COLUMNS,
    aalen_johansen,
    funnel_from_counts,
    funnel_table,
    kaplan_meier,
    km_median,
)

CAUSES = ["forward", "back", "lost"]
FIELDS = ["stage", "stage_index", "move", "destination", "days", "n"]


def step_at(times, values, t):
    """Right-continuous step function (values at `times`) evaluated at t; 0 before the first."""
    i = np.searchsorted(times, t, side="right") - 1
    return np.where(i >= 0, np.asarray(values)[np.maximum(i, 0)], 0.0)


def reference_cif(days, codes, n):
    """scikit-survival's Aalen-Johansen CIFs (one row per cause 1..k; code 0 = censored) on
    weighted data expanded to rows."""
    times, cif = cumulative_incidence_competing_risks(np.repeat(codes, n), np.repeat(days, n).astype(float))
    return times, cif[1:]


def reference_km(days, event, n):
    """scikit-survival's Kaplan-Meier survival curve and its median (first time S <= 0.5,
    NaN if it never gets there) on weighted data expanded to rows."""
    times, surv = kaplan_meier_estimator(np.repeat(np.asarray(event, bool), n),
                                         np.repeat(np.asarray(days, float), n))
    below = np.flatnonzero(surv <= 0.5)
    return times, surv, (times[below[0]] if below.size else np.nan)


def counts_frame(rows, stages):
    """Counts table from (stage, move, destination, days, n) tuples, one segment "all"."""
    out = pd.DataFrame(
        [(s, stages.index(s), m, d, float(t), k) for s, m, d, t, k in rows], columns=FIELDS
    )
    out["segment"] = "all"
    return out


# --------------------------------------------------------------------------- estimators
def test_aalen_johansen_matches_scikit_survival_untied_causes():
    """Weighted data with same-cause ties and censorings tied to events, but no two causes
    at one time: CIFs must agree to 1e-9 at every time."""
    rng = np.random.default_rng(11)
    grid = np.arange(1, 151) / 24 * 5  # 150 distinct times, 5 h apart
    code = rng.choice(4, size=grid.size, p=[0.3, 0.3, 0.2, 0.2])  # 0 = censored
    n = rng.integers(1, 6, size=grid.size)
    tied = rng.choice(np.flatnonzero(code > 0), size=25, replace=False)
    days = np.concatenate([grid, grid[tied]])
    code = np.concatenate([code, np.zeros(tied.size, dtype=int)])
    n = np.concatenate([n, rng.integers(1, 4, size=tied.size)])
    labels = np.array([None, *CAUSES], dtype=object)[code]

    times, cif, surv = aalen_johansen(days, labels, n, CAUSES)
    ref_times, ref_cif = reference_cif(days, code, n)
    for k in (1, 2, 3):
        np.testing.assert_allclose(cif[k - 1], step_at(ref_times, ref_cif[k - 1], times), atol=1e-9)
    np.testing.assert_allclose(surv + cif.sum(axis=0), 1.0, atol=1e-12)
    assert times.size == np.unique(days).size


def test_aalen_johansen_tied_causes_match_scikit_survival():
    """Different causes tied at the same day, censorings between days: the reference handles
    ties exactly (no jitter), so the curves agree at every time to 1e-9."""
    rng = np.random.default_rng(5)
    event_days = np.repeat(np.arange(1.0, 41.0), 3)  # three causes at each whole day
    event_code = np.tile([1, 2, 3], 40)
    cens_days = rng.integers(1, 45, size=30) + 0.5
    days = np.concatenate([event_days, cens_days])
    code = np.concatenate([event_code, np.zeros(30, dtype=int)])
    n = rng.integers(1, 4, size=days.size)
    labels = np.array([None, *CAUSES], dtype=object)[code]

    times, cif, _ = aalen_johansen(days, labels, n, CAUSES)
    ref_times, ref_cif = reference_cif(days, code, n)
    probe = np.arange(0, 46) + 0.25
    for k in (1, 2, 3):
        np.testing.assert_allclose(step_at(times, cif[k - 1], probe), step_at(ref_times, ref_cif[k - 1], probe),
                                   atol=1e-9)
        np.testing.assert_allclose(cif[k - 1], step_at(ref_times, ref_cif[k - 1], times), atol=1e-9)


def test_aalen_johansen_zero_weights_and_unknown_labels_are_handled():
    """Rows with n = 0 are ignored; labels outside `causes` are censored."""
    times, cif, surv = aalen_johansen(
        [1, 2, 2, 3], ["forward", "censored", "lost", "forward"], [1, 1, 0, 1], ["forward", "lost"]
    )
    np.testing.assert_allclose(times, [1, 2, 3])
    np.testing.assert_allclose(cif[0], [1 / 3, 1 / 3, 1 / 3 + 2 / 3])
    np.testing.assert_allclose(cif[1], 0.0)
    np.testing.assert_allclose(surv, [2 / 3, 2 / 3, 0.0])


def test_kaplan_meier_and_median_match_scikit_survival_with_weights():
    rng = np.random.default_rng(2)
    t = np.round(rng.lognormal(np.log(20), 0.9, 300) * 24) / 24
    c = np.round(rng.uniform(0, 80, 300) * 24) / 24
    days = np.round(np.minimum(t, c), 0)  # whole days: many ties
    event = t <= c
    n = rng.integers(1, 5, size=300)
    ref_times, ref_surv, ref_median = reference_km(days, event, n)

    times, surv = kaplan_meier(days, event, n)
    np.testing.assert_allclose(surv, step_at(ref_times, ref_surv, times), atol=1e-10)
    assert 0.3 < event.mean() < 0.8  # censoring present
    assert np.isfinite(ref_median)
    assert km_median(days, event, n) == pytest.approx(ref_median, abs=1e-12)


def test_km_median_edge_cases():
    # S drops to exactly 0.5 at day 2: first time with S <= 0.5, no midpoint averaging
    # (lifelines' median_survival_time_ convention).
    days, event, n = [2, 3, 5], [True, True, False], [2, 1, 1]
    assert km_median(days, event, n) == 2.0
    assert reference_km(days, event, n)[2] == 2.0
    # Survival never reaches 0.5 -> NaN.
    assert np.isnan(km_median([1, 4, 9], [True, False, False], [1, 2, 3]))
    assert np.isnan(reference_km([1, 4, 9], [True, False, False], [1, 2, 3])[2])


# --------------------------------------------------------------------------- funnel table
STAGES_PQR = ["P", "Q", "R"]
HAND_ROWS = [  # (stage, move, destination, days, n): 10 stays in P, 4 in Q, 4 in R
    ("P", "next", "Q", 1, 2),
    ("P", "lost", "Lost", 2, 1),
    ("P", "censored", None, 3, 2),
    ("P", "skip", "R", 4, 1),
    ("P", "next", "Q", 6, 1),
    ("P", "censored", None, 8, 3),
    ("Q", "next", "R", 2, 2),
    ("Q", "back", "P", 3, 1),
    ("Q", "censored", None, 5, 1),
    ("R", "won", "Won", 1, 2),
    ("R", "lost", "Lost", 2, 1),
    ("R", "censored", None, 10, 1),
]


def test_hand_computed_funnel():
    ft = funnel_from_counts(counts_frame(HAND_ROWS, STAGES_PQR), STAGES_PQR, as_of="2024-06-30")
    t = ft.table.set_index("stage")
    assert list(ft.table.columns) == list(COLUMNS)
    assert list(t.index) == ["P", "Q", "R", "Won"]
    assert ft.table["segment"].isna().all()

    # Counts.
    for col, want in {
        "entered": [10, 4, 4], "advanced": [4, 2, 0], "skipped_ahead": [1, 0, 0],
        "went_back": [0, 1, 0], "won": [0, 0, 2], "lost": [1, 0, 1], "open": [5, 1, 1],
    }.items():  # fmt: skip
        assert t.loc[STAGES_PQR, col].tolist() == want, col

    # P by hand (Aalen-Johansen, causes forward/back/lost):
    #   day 1: Y=10, 2 forward -> CIF_f 0.2,             S = 0.8
    #   day 2: Y=8,  1 lost    -> CIF_l 0.8/8 = 0.1,     S = 0.7
    #   day 3: 2 censored
    #   day 4: Y=5,  1 skip    -> CIF_f += 0.7/5 = 0.14, S = 0.56
    #   day 6: Y=4,  1 next    -> CIF_f += 0.56/4 = 0.14 -> 0.48, S = 0.42
    #   day 8: 3 censored.  Naive: (4 advanced + 0 won) / 10 = 0.4.
    # Q: day 2 Y=4, 2 next -> 0.5, S = 0.5; day 3 Y=2, 1 back; day 5 censored.
    # R: day 1 Y=4, 2 won -> 0.5, S = 0.5; day 2 Y=2, 1 lost -> 0.25.
    np.testing.assert_allclose(t.loc[STAGES_PQR, "conversion"], [0.48, 0.5, 0.5])
    np.testing.assert_allclose(t.loc[STAGES_PQR, "conversion_naive"], [0.4, 0.5, 0.5])
    np.testing.assert_allclose(t.loc[STAGES_PQR, "p_lost"], [0.1, 0.0, 0.25])
    # KM (any exit): P: S = .8, .7, .56, .42 at days 1, 2, 4, 6 -> median 6;
    # Q and R reach exactly 0.5 at their first event day.
    np.testing.assert_allclose(t.loc[STAGES_PQR, "median_days"], [6.0, 2.0, 1.0])
    # 90th percentile of forward exit days: P {1,1,4,6} -> 6, three open at day 8;
    # Q {2,2} -> 2, one open at 5; R {1,1} -> 1, one open at 10.
    assert t.loc[STAGES_PQR, "dark_candidates"].tolist() == [3, 1, 1]

    # Jump chain from per-destination AJ CIFs at the last time:
    #   P -> Q 0.2 + 0.14 = 0.34, P -> R 0.14, P -> lost 0.1 (0.42 never moves)
    #   Q -> R 0.5, Q -> P 0.25;  R -> won 0.5, R -> lost 0.25.
    # reach Q from P: 0.34 (R cannot lead back to Q)
    # reach R: h_P = 0.14 + 0.34 h_Q, h_Q = 0.5 + 0.25 h_P -> h_P = 0.31 / 0.915
    # reach won: w_P = 0.14 * 0.5 + 0.34 w_Q, w_Q = 0.5 * 0.5 + 0.25 w_P -> 0.155 / 0.915
    np.testing.assert_allclose(
        t["through_conversion"], [1.0, 0.34, 0.31 / 0.915, 0.155 / 0.915], atol=1e-12
    )
    np.testing.assert_allclose(t["through_conversion_naive"], [1.0, 0.4, 0.4, 0.2])
    won = t.loc["Won"]
    assert won["entered"] == 2
    assert won[["advanced", "won", "open", "dark_candidates"]].isna().all()
    assert np.isnan(won[["conversion", "conversion_naive", "p_lost", "median_days"]].astype(float)).all()


def test_through_conversion_closed_form_with_back_moves():
    """Three stages with backward moves, early censoring (renormalises) and late censoring
    (mass that never moves)."""
    stages = ["A", "B", "C"]
    rows = [
        ("A", "censored", None, 1, 5),  # before every event: A -> B 0.6, lost 0.4
        ("A", "lost", "Lost", 3, 4),
        ("A", "next", "B", 5, 6),
        ("B", "next", "C", 2, 5),  # Y = 20 throughout: C 0.25, A 0.1, lost 0.15
        ("B", "back", "A", 4, 2),
        ("B", "lost", "Lost", 6, 3),
        ("B", "censored", None, 30, 10),  # after every event: 0.5 never moves
        ("C", "won", "Won", 1, 4),  # won 0.4, B 0.3, A 0.1, lost 0.2
        ("C", "back", "B", 2, 3),
        ("C", "back", "A", 3, 1),
        ("C", "lost", "Lost", 4, 2),
    ]
    ft = funnel_from_counts(counts_frame(rows, stages), stages, as_of=pd.Timestamp("2025-01-01"))
    got = ft.table.set_index("stage")["through_conversion"]
    # reach B from A: only via A -> B (0.6).
    # reach C: h_A = 0.6 h_B, h_B = 0.25 + 0.1 h_A -> h_A = 0.15 / 0.94.
    # reach won: w_A = 0.6 w_B; w_B = 0.25 w_C + 0.1 w_A; w_C = 0.4 + 0.3 w_B + 0.1 w_A
    #   -> w_B = (0.1 + 0.125 w_A) / 0.925 -> 0.925 w_A = 0.06 + 0.075 w_A -> w_A = 0.06 / 0.85
    np.testing.assert_allclose(got.to_numpy(), [1.0, 0.6, 0.15 / 0.94, 0.06 / 0.85], atol=1e-12)
    np.testing.assert_allclose(ft.table["conversion"][:3], [0.6, 0.25, 0.4])
    np.testing.assert_allclose(ft.table["p_lost"][:3], [0.4, 0.15, 0.2])


def test_through_conversion_closed_loop_is_not_singular():
    """A <-> B forever with no exit: nothing reaches C or Won, and the solve must not fail."""
    stages = ["A", "B", "C"]
    rows = [("A", "next", "B", 1, 3), ("B", "back", "A", 2, 3), ("C", "won", "Won", 1, 1)]
    ft = funnel_from_counts(counts_frame(rows, stages), stages, as_of="2025-01-01")
    np.testing.assert_allclose(ft.table["through_conversion"], [1.0, 1.0, 0.0, 0.0])


def test_dark_candidates_strictly_older_than_weighted_p90():
    stages = ["P", "Q"]
    forward = [("P", "next", "Q", d, 1) for d in range(1, 10)] + [("P", "won", "Won", 10, 1)]
    rows = forward + [
        ("P", "censored", None, 9, 2),  # p90 of forward days 1..10 is 9: not older
        ("P", "censored", None, 9.5, 1),
        ("P", "censored", None, 12, 4),
        ("Q", "lost", "Lost", 3, 1),  # nothing advanced from Q: no dark candidates
        ("Q", "censored", None, 50, 2),
    ]
    ft = funnel_from_counts(counts_frame(rows, stages), stages, as_of="2025-01-01")
    assert ft.table["dark_candidates"].tolist()[:2] == [5, 0]


def _simulate_stage(rng, n_deals):
    """One stage: forward w.p. 0.6 after Exp(mean 12 d), lost w.p. 0.4 after Exp(mean 6 d).
    Administrative censoring at as_of from a fast-growing pipeline: 70% of stays began
    recently (age Exp(mean 6 d)), 30% uniformly over 200 days, so about 45% are still open
    while the long-running ones keep the tail observable (AJ estimates CIF only up to the
    longest follow-up)."""
    forward = rng.random(n_deals) < 0.6
    exit_day = np.where(forward, rng.exponential(12, n_deals), rng.exponential(6, n_deals))
    recent = rng.random(n_deals) < 0.7
    age = np.where(recent, rng.exponential(6, n_deals), rng.uniform(0, 200, n_deals))
    days = np.round(np.minimum(exit_day, age) * 24) / 24
    move = np.where(exit_day <= age, np.where(forward, "next", "lost"), "censored")
    return days, move


@pytest.mark.slow
def test_censoring_correct_conversion_recovers_truth():
    rng = np.random.default_rng(20240601)
    # Sampling SE of the AJ estimate from 200 replicate data sets of 2000 stays.
    estimates = []
    for _ in range(200):
        days, move = _simulate_stage(rng, 2000)
        labels = np.where(move == "next", "forward", move)
        _, cif, _ = aalen_johansen(days, labels, np.ones(days.size), CAUSES)
        estimates.append(cif[[0, 2], -1])
    estimates = np.array(estimates)
    se = estimates.std(axis=0, ddof=1)
    # Bias check: the replicate mean is within 3 SE of the mean.
    np.testing.assert_array_less(np.abs(estimates.mean(axis=0) - [0.6, 0.4]), 3 * se / np.sqrt(200))

    days, move = _simulate_stage(rng, 2000)
    frame = pd.DataFrame({"days": days, "move": move})
    counts = frame.groupby(["move", "days"]).size().rename("n").reset_index()
    counts["destination"] = counts["move"].map({"next": "Q", "lost": "Lost", "censored": None})
    counts = counts.assign(stage="P", stage_index=0, segment="all")
    row = funnel_from_counts(counts, ["P", "Q"], as_of="2025-01-01").table.iloc[0]
    assert (move == "censored").mean() > 0.4
    assert abs(row["conversion"] - 0.6) < 3 * se[0]
    assert abs(row["p_lost"] - 0.4) < 3 * se[1]
    assert row["conversion_naive"] < 0.6 - 10 * se[0]  # open deals counted as failures


def test_by_segment_pools_and_splits():
    north = counts_frame(HAND_ROWS, STAGES_PQR).assign(segment="north")
    south = counts_frame(HAND_ROWS[:6], STAGES_PQR).assign(segment="south")
    counts = pd.concat([north, south], ignore_index=True)
    ft = funnel_from_counts(counts, STAGES_PQR, as_of="2024-06-30", by_segment=True)
    table = ft.table
    assert table["segment"].tolist() == [None] * 4 + ["north"] * 4 + ["south"] * 4
    pooled = funnel_from_counts(counts, STAGES_PQR, as_of="2024-06-30").table
    pd.testing.assert_frame_equal(table.iloc[:4], pooled)
    assert table["entered"].tolist()[:3] == [20, 4, 4]
    north_rows = table.iloc[4:8].reset_index(drop=True)
    alone = funnel_from_counts(north, STAGES_PQR, as_of="2024-06-30").table
    pd.testing.assert_frame_equal(north_rows.drop(columns="segment"), alone.drop(columns="segment"))
    south_rows = table.iloc[8:12]
    assert south_rows["entered"].tolist() == [10, 0, 0, 0]
    assert np.isnan(south_rows["conversion"].iloc[1])
    assert any("Q (segment 'south'): no stays" in note for note in ft.notes)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stage": "Z"}, "column 'stage'"),
        ({"stage_index": 2}, "column 'stage_index'"),
        ({"move": "jump"}, "column 'move'"),
        ({"days": -1.0}, "column 'days'"),
        ({"n": -2}, "column 'n'"),
        ({"destination": "R"}, "inconsistent with move"),
    ],
)
def test_bad_counts_are_rejected_with_row_and_column(change, message):
    counts = counts_frame(HAND_ROWS, STAGES_PQR)
    for col, value in change.items():
        counts[col] = counts[col].astype(object)
        counts.loc[0, col] = value  # row 0 is P -> Q (next)
    with pytest.raises(ValueError, match=message) as err:
        funnel_from_counts(counts, STAGES_PQR, as_of="2024-06-30")
    assert "row 0" in str(err.value)


def test_missing_column_is_named():
    counts = counts_frame(HAND_ROWS, STAGES_PQR).drop(columns="days")
    with pytest.raises(ValueError, match="Required column.* days missing"):
        funnel_from_counts(counts, STAGES_PQR, as_of="2024-06-30")


# --------------------------------------------------------------------------- output
def test_to_dict_json_round_trip(tmp_path):
    ft = funnel_from_counts(counts_frame(HAND_ROWS, STAGES_PQR), STAGES_PQR, as_of="2024-06-30 15:00")
    out = ft.to_dict()
    assert list(out) == ["as_of", "stages", "notes"]
    assert out["as_of"] == "2024-06-30"
    expected = [
        "stage", "segment", "entered", "advanced", "skipped_ahead", "went_back", "won", "lost",
        "open", "conversion", "conversion_naive", "through_conversion",
        "through_conversion_naive", "p_lost", "median_days", "dark_candidates",
    ]  # fmt: skip
    assert all(list(row) == expected for row in out["stages"])
    first, won = out["stages"][0], out["stages"][-1]
    assert type(first["entered"]) is int and type(first["dark_candidates"]) is int
    assert type(first["conversion"]) is float and first["segment"] is None
    assert won["stage"] == "Won" and won["advanced"] is None and won["conversion"] is None

    path = ft.to_json(tmp_path / "funnel.json")
    assert json.loads(path.read_text()) == out
    assert [p.name for p in tmp_path.iterdir()] == ["funnel.json"]  # no temp file left


def test_rich_and_html_rendering():
    counts = counts_frame(HAND_ROWS, STAGES_PQR)
    flat = funnel_from_counts(counts, STAGES_PQR, as_of="2024-06-30")
    console = Console(record=True, width=150)
    console.print(flat)
    text = console.export_text()
    assert "2024-06-30" in text and "48.0%" in text and "segment" not in text

    split = funnel_from_counts(counts.assign(segment="EMEA"), STAGES_PQR, as_of="2024-06-30", by_segment=True)
    console = Console(record=True, width=150)
    console.print(split)
    text = console.export_text()
    assert "segment" in text and "EMEA" in text and "(all)" in text

    page = flat._repr_html_()
    assert "<caption>Funnel as of 2024-06-30</caption>" in page
    assert "48.0%" in page and "<li>" in page


def test_pipeline_recovers_synthetic_truth_where_naive_is_biased():
    """Log -> spells -> funnel table on a synthetic CRM censored after 40 weeks (about 15%
    of stays still open): Aalen-Johansen conversion and the chain's P(win) match the
    generator's truth; the spreadsheet ratios are biased low."""
    from funnelsim.data import synth
    from funnelsim.data.events import FunnelDefinition, read_events
    from funnelsim.data.spells import to_spells

    config = synth.SynthConfig(weeks=40)
    events, truth = synth.generate(40_000, seed=11, config=config)
    funnel = FunnelDefinition(config.stages, config.won, config.lost)
    table = funnel_table(to_spells(read_events(events, funnel))).table
    whole = table[table["segment"].isna()].set_index("stage")
    for cell in (c for c in truth["cells"] if c["segment"] is None):
        row = whole.loc[cell["stage"]]
        assert abs(row["conversion"] - cell["conversion"]) < 0.012, cell["stage"]
        assert cell["conversion"] - row["conversion_naive"] > 0.025, cell["stage"]
    p_win = next(c["p_win_from_entry"] for c in truth["cells"]
                 if c["segment"] is None and c["stage"] == config.stages[0])
    assert abs(whole.loc[config.won, "through_conversion"] - p_win) < 0.012
    assert p_win - whole.loc[config.won, "through_conversion_naive"] > 0.025
