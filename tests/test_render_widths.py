"""Tables never cut a number or a name, at 80, 120 and 160 columns; output to a file or pipe
follows $COLUMNS."""

import io
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from funnelsim.cli.console import FILE_WIDTH, output_width
from funnelsim.report import render
from funnelsim.report.funnel import funnel_table

from .conftest import write_csv
from .test_cli import FUNNEL

WIDTHS = (80, 120, 160)
STAGES = ("Prospecting", "Qualification", "Needs Analysis", "Negotiation/Review")
SEGMENTS = ("direct_traffic_campaign", "paid_search_enterprise")
BIG = 12_591_234.56


def _text(renderable, width: int) -> str:
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def _check(text: str, width: int, names=()) -> None:
    assert not re.search(r"\d…|…\d|\d\.\.\.", text), text
    assert "…" not in text, text
    assert max(len(line) for line in text.splitlines()) <= width, text
    for name in names:
        assert name in text, (name, text)


def _stage_table() -> pd.DataFrame:
    rows = []
    for segment in (None, *SEGMENTS):
        for i, stage in enumerate(STAGES):
            row = {"stage": stage, "segment": segment, "stays": 1_234_567 + i}
            for name in render.PERCENT:
                row |= {name: 0.4567, f"{name}_low": 0.1234, f"{name}_high": 0.9876}
            for name in render.DAYS:
                row |= {name: 1234.5, f"{name}_low": 123.4, f"{name}_high": 12345.6}
            rows.append(row)
    return pd.DataFrame(rows)


def _forecast():
    periods = pd.DataFrame({
        "period": ["2024-07", "2024-08", "2024-09"], "start": pd.to_datetime(["2024-07-01", "2024-08-01", "2024-09-01"]),
        "end": pd.to_datetime(["2024-07-31", "2024-08-31", "2024-09-30"]), "wins_mean": [1234.5] * 3,
        **{k: [BIG, 2 * BIG, 3 * BIG] for k in ("revenue_mean", "revenue_p10", "revenue_p50", "revenue_p90",
                                                "cumulative_revenue_p50", "new_revenue_mean", "total_revenue_p50")}})
    band = {"mean": BIG, "p10": BIG, "p50": BIG, "p90": BIG}
    return SimpleNamespace(as_of=pd.Timestamp("2024-06-30").date(), horizon_days=90, has_new_deals=True,
                           pipeline_revenue=lambda: band, total_revenue=lambda: band, by_period=lambda: periods)


def _backtest():
    table = pd.DataFrame({
        "origin": ["2024-01-31", "2024-02-29"], "open_deals": [123_456, 234_567], "covered80": [True, False],
        "crps_rel": [0.123, 0.456], "pit": [0.12, 0.98], "converged": [True, False],
        **{k: [BIG, 10 * BIG] for k in ("actual", "p10", "p50", "p90", "weighted", "coverage", "last_period",
                                         "total_actual", "total_p10", "total_p90", "run_rate")}})
    summary = {k: 0.5 for k in ("coverage80", "coverage50", "coverage90", "mean_ape_median", "mean_ape_weighted",
                                "mean_ape_coverage", "mean_ape_last_period", "crps_skill_weighted", "pit_ks_p",
                                "total_coverage80", "total_mean_ape_median", "total_mean_ape_run_rate")}
    summary |= {"converged_fits": 2, "origins": 2}
    return SimpleNamespace(table=table, summary=summary, settings=SimpleNamespace(horizon_days=90))


def _deals() -> pd.DataFrame:
    return pd.DataFrame({"deal_id": ["opportunity-000123456", "opportunity-000654321"], "stage": STAGES[2:],
                         "segment": SEGMENTS, "age_days": [1234.0, 56.0], "amount": [BIG, np.nan],
                         "p_win_horizon": [0.5, 0.25], "p_win_ever": [0.75, 0.5], "expected_revenue": [BIG, BIG],
                         "median_close_date": [pd.Timestamp("2024-08-15"), pd.NaT]})


@pytest.mark.parametrize("width", WIDTHS)
def test_model_tables_keep_every_number_and_name(width):
    stage_text = _text(render.stage_table_rich(_stage_table()), width)
    _check(stage_text, width, [*STAGES, *SEGMENTS, "1,234,567", "45.7 12.3–98.8", "1234.5 123.4–12345.6"])
    periods = _text(render.periods_rich(_forecast()), width)
    _check(periods, width, ["12,591,235", "37,773,704", "2024-09-30", "1,234.5", "new-deal revenue, mean", "total revenue P50", "pipeline wins, mean"])
    backtest = _text(render.backtest_rich(_backtest()), width)
    _check(backtest, width, ["2024-02-29", "125,912,346", "234,567", "total actual", "run rate"])
    deals = _text(render.deals_rich(_deals()), width)
    _check(deals, width, ["opportunity-000123456", "Negotiation/Review", "paid_search_enterprise", "12,591,235"])


def test_a_table_that_fits_is_one_table_and_a_narrow_one_is_split_with_its_keys():
    table = render.stage_table_rich(_stage_table())
    wide, narrow = _text(table, 250), _text(table, 140)
    assert wide.count("Stage table") == 1 and wide.count("┃ stage ") == 1
    assert narrow.count("Stage table") == 1 and narrow.count("┃ stage ") == 2     # one title, two parts
    assert narrow.count("Prospecting") == 2 * wide.count("Prospecting")   # key columns repeat in every part
    for width in (80, 40):                                # more than four parts, or too narrow: stacked
        stacked = _text(table, width)
        _check(stacked, width, ["Prospecting · direct_traffic_campaign", "45.7 12.3–98.8", "days to close"])


@pytest.mark.parametrize("width", WIDTHS)
def test_funnel_table_keeps_every_number_and_name(small_log, width):
    from funnelsim import FunnelDefinition, Snapshot

    log = small_log.assign(region=small_log.region.map({"EU": SEGMENTS[0], "US": SEGMENTS[1]}))
    funnel = FunnelDefinition("Lead,Qualified,Proposal", "Won,Closed Won", "Lost")
    text = _text(funnel_table(Snapshot.read(log, funnel, as_of="2024-02-15", segment_by="region", every=None)), width)
    _check(text, width, [*SEGMENTS, "(blank)", "Qualified", "Proposal", "through naive"])


def test_output_width_follows_columns():
    assert output_width({"COLUMNS": "80"}, terminal=False) == 80
    assert output_width({"COLUMNS": "100"}, terminal=True) == 100
    assert output_width({}, terminal=False) == FILE_WIDTH
    assert output_width({"COLUMNS": "wide"}, terminal=False) == FILE_WIDTH
    assert output_width({}, terminal=True) is None


def test_funnel_to_a_pipe_honours_columns(tmp_path, small_log):
    log = small_log.assign(region=small_log.region.map({"EU": SEGMENTS[0], "US": SEGMENTS[1]}))
    path = write_csv(tmp_path, log)
    result = subprocess.run([sys.executable, "-m", "funnelsim.cli.app", "funnel", str(path), *FUNNEL,
                             "--as-of", "2024-02-15", "--segment-by", "region"], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    _check(result.stdout, 80, SEGMENTS)
