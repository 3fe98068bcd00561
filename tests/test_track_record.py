"""The forecast's track record (``forecast --check N``) and the band it calibrates (``--calibrate``).

The calibration is checked statistically: over many simulated (past origins, today) sets whose
forecast bands are too narrow, the widened 80% band covers today's actual at its nominal rate
(split conformal: at least 80%, at most about 80% + 1 / (N + 1)), where the model's band covers
about half the time; with bands that were right it stays as it is. The command is checked
against the backtest of the same origins and settings: the same numbers.
"""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from funnelsim.sim.track_record import TrackRecord, check_origins, widen, widening_factor

SCALE = 0.3          # the world's spread of log revenue around the forecast's median


def _forecast(rng, spread, size=400):
    """Draws of one forecast (log-normal around a median of 1M with ``spread`` on the log scale) and an
    actual from the world (log-normal with SCALE)."""
    median = 1e6 * np.exp(rng.normal(0, 1))
    return median * np.exp(rng.normal(0, spread, size)), median * np.exp(rng.normal(0, SCALE))


def _record(rng, spread, n):
    rows = []
    for _ in range(n):
        samples, actual = _forecast(rng, spread)
        p10, p50, p90 = np.quantile(samples, [0.1, 0.5, 0.9])
        rows.append({"actual": actual, "p10": p10, "p50": p50, "p90": p90})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("spread,n", [(SCALE / 2.5, 8), (SCALE / 2.5, 4), (SCALE, 8)])
def test_the_calibrated_band_covers_at_its_nominal_rate(spread, n):
    rng = np.random.default_rng(7)
    trials, model_hits, calibrated_hits, factors = 1500, 0, 0, []
    for _ in range(trials):
        factor = widening_factor(_record(rng, spread, n))
        samples, actual = _forecast(rng, spread)
        wide = widen(samples, factor)
        lo, hi = np.quantile(samples, [0.1, 0.9])
        wlo, whi = np.quantile(wide, [0.1, 0.9])
        model_hits += lo <= actual <= hi
        calibrated_hits += wlo <= actual <= whi
        factors.append(factor)
    coverage, upper = calibrated_hits / trials, 0.8 + 1 / (n + 1) + 0.03
    assert 0.77 <= coverage <= upper, (coverage, np.median(factors))
    if spread < SCALE:     # too narrow: the model's band covers about 2 Phi(1.28 / 2.5) - 1 = 0.39
        assert model_hits / trials < 0.5
        assert np.median(factors) > 2.0     # at least the 2.5 the world needs, more with few origins
    else:                  # right: the factor stays near 1 (never below)
        assert min(factors) >= 1.0 and np.median(factors) < 1.4


def test_widening_keeps_the_median_and_the_order_of_draws():
    rng = np.random.default_rng(1)
    samples = np.exp(rng.normal(13, 0.2, 1001))
    wide = widen(samples, 2.0)
    assert np.median(wide) == pytest.approx(np.median(samples), rel=1e-9)
    assert (np.argsort(wide) == np.argsort(samples)).all()
    assert np.std(np.log(wide)) == pytest.approx(2 * np.std(np.log(samples)), rel=0.02)
    assert (widen(samples, 1.0) == samples).all() and (widen(samples, 0.5) == samples).all()
    zeros = widen(np.zeros(10), 3.0)
    assert (zeros == 0).all()


def test_a_zero_width_band_that_missed_cannot_be_calibrated():
    """Olist's early origins forecast 0 wins with P10 = P90 = 0 and saw some: no factor covers that."""
    table = pd.DataFrame([{"actual": 5.0, "p10": 0.0, "p50": 0.0, "p90": 0.0}] + [
        {"actual": 100.0, "p10": 90.0, "p50": 100.0, "p90": 110.0}] * 4)
    assert widening_factor(table) == np.inf
    record = TrackRecord(table.assign(origin="2024-01-31", covered=False, pit=1.0, converged=True), "pipeline", 30, 5)
    samples = np.linspace(50, 150, 101)
    calibrated = record.calibrated(samples)
    assert calibrated["calibrated"] is False and calibrated["p90"] == pytest.approx(np.quantile(samples, 0.9))


def test_origins_are_one_horizon_apart_and_need_some_log_before_them():
    origins = check_origins("2024-06-30", 30, 5, "2024-03-01")
    assert [str(o.date()) for o in origins] == ["2024-05-31", "2024-05-01", "2024-04-01"]


def _table(covered):
    rows = [{"origin": f"2024-0{i + 1}-28", "actual": 150.0 if not c else 100.0, "p10": 90.0, "p50": 100.0, "p90": 110.0,
             "covered": c, "pit": 1.0 if not c else 0.5, "converged": True} for i, c in enumerate(covered)]
    return pd.DataFrame(rows)


def test_a_band_that_keeps_missing_gets_a_plain_warning():
    narrow = TrackRecord(_table([False, False, True, False, True, False]), "total", 90, 6)
    assert narrow.too_narrow and stats.binom.cdf(2, 6, 0.8) < 0.1
    assert "too narrow" in narrow.warning and "held at 2 of 6" in narrow.warning and "above P90 at 4" in narrow.warning
    assert "WARNING" in narrow.summary()
    fine = TrackRecord(_table([True, True, False, True, True, True]), "total", 90, 6)
    assert not fine.too_narrow and fine.warning is None
    few = TrackRecord(_table([True, True]), "pipeline", 90, 5)
    assert not few.too_narrow and "only 2 past origin" in few.warning
    assert few.to_dict()["origins_asked"] == 5 and few.to_dict()["origins_checked"] == 2
    assert "WARNING" not in fine.summary()
    old = TrackRecord(_table([True, True, False, True, True, True]), "total", 90, 6,
                      age_misses=["open deals aged 180+ days at the origins won 9 times against 2.0 forecast"])
    assert old.warnings == old.age_misses and "WARNING: open deals aged 180+ days" in old.summary()
    assert old.to_dict()["age_warnings"] == old.age_misses


def run(*args):
    return subprocess.run([sys.executable, "-m", "funnelsim.cli.app", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


STAGES = ["--stages", "Prospecting,Qualified,Proposal,Negotiation", "--won", "Won", "--lost", "Lost"]
SMALL_FIT = ["--draws", 60, "--tune", 60, "--chains", 2, "--seed", 4]


def test_calibrate_without_check_exits_2_before_fitting(tmp_path):
    events = tmp_path / "crm.csv"
    assert run("synth", events, "--deals", 300, "--weeks", 20).returncode == 0
    result = run("forecast", events, *STAGES, "--calibrate")
    assert result.returncode == 2 and "--check" in result.stderr and "Traceback" not in result.stderr
    assert "Fitting" not in result.stderr


@pytest.mark.slow
def test_forecast_check_reports_what_the_backtest_of_those_origins_scores(tmp_path):
    """forecast --check 2 --calibrate: the track record's origins are one horizon apart before --as-of,
    its numbers are the backtest's at those origins with the same settings (total revenue), the
    held count is the rows', and the calibrated band is the JSON's samples widened by its factor."""
    events = tmp_path / "crm.csv"
    assert run("synth", events, "--deals", 1500, "--weeks", 40, "--seed", 2).returncode == 0
    out = tmp_path / "f.json"
    result = run("forecast", events, *STAGES, *SMALL_FIT, "--as-of", "2024-09-30", "--horizon", 45, "--check", 2,
                 "--calibrate", "--target", 1_000_000, "--json", out)
    assert result.returncode == 0, result.stderr
    assert "Track record" in result.stdout and "Calibrated by the track record" in result.stdout
    record = json.loads(out.read_text())["track_record"]
    assert [r["origin"] for r in record["origins"]] == ["2024-08-16", "2024-07-02"]
    assert record["scored"] == "total" and record["origins_checked"] == 2
    assert record["held80"] == sum(r["p10"] <= r["actual"] <= r["p90"] for r in record["origins"])
    assert record["pit"] == [r["pit"] for r in record["origins"]]

    bt = tmp_path / "bt.json"
    replay = run("backtest", events, *STAGES, *SMALL_FIT, "--origins", "2024-07-02,2024-08-16", "--horizon", 45,
                 "--new-deals", "--workers", 1, "--json", bt)
    assert replay.returncode == 0, replay.stderr
    replayed = json.loads(bt.read_text())
    totals = {o["origin"]: o["total"] for o in replayed["origins"]}
    for row in record["origins"]:
        for key in ("actual", "p10", "p50", "p90", "pit"):
            assert row[key] == pytest.approx(totals[row["origin"]][key], rel=1e-12), (row["origin"], key)
    # the open deals' wins by age at those origins are the backtest's too
    assert [r["age"] for r in record["by_age"]] == ["0-30 days", "30-90 days", "90-180 days", "180+ days"]
    for mine, theirs in zip(record["by_age"], replayed["by_age"], strict=True):
        assert mine["wins"] == theirs["wins"] and mine["forecast_wins"] == pytest.approx(theirs["forecast_wins"], rel=1e-12)
    assert sum(r["revenue"] for r in record["by_age"]) == pytest.approx(sum(o["actual"] for o in replayed["origins"]))
    assert isinstance(record["age_warnings"], list)

    data = json.loads(out.read_text())
    samples = np.asarray(data["total_revenue"]["samples"])
    calibrated = record["calibrated"]
    wide = widen(samples, record["widening_factor"])
    assert calibrated["p10"] == pytest.approx(np.quantile(wide, 0.1)) and calibrated["p90"] == pytest.approx(np.quantile(wide, 0.9))
    assert calibrated["p_hit"] == pytest.approx((wide >= 1_000_000).mean())
    assert calibrated["rough"] is True and record["widening_factor"] >= 1.0
