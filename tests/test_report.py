"""The quarterly forecast report (issue 21): the segment roll-up, the waterfall, and the HTML page
opened in a real headless Chromium (Debian's ``chromium``, driven by Playwright without its own
browser download; one browser per test session).

Checked: the segments add up to the total in every draw; the waterfall on a hand-built log equals
what plain pandas says; the page renders with no console error and no request beyond itself, its
headline numbers are the forecast JSON's; a segment called ``<script>alert(1)</script>`` and a deal
id with ``<b>`` show as text and no script runs; ``--pdf`` writes a PDF; a missing browser is exit 2.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

import funnelsim as fs
from funnelsim.data import synth
from funnelsim.report import html
from funnelsim.report.changes import pipeline_changes

CHROMIUM = "/usr/bin/chromium"
EVIL_SEGMENT = "<script>alert(1)</script>"
EVIL_DEAL = "D<b>1</b>"
AS_OF = pd.Timestamp("2024-08-31")
COMPARE_TO = pd.Timestamp("2024-07-31")
TARGET = 1_500_000.0

needs_browser = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (.ci/run installs it)")


# --------------------------------------------------------------------------- a small fitted forecast

@pytest.fixture(scope="module")
def log() -> pd.DataFrame:
    """1,500 synthetic deals over 40 weeks; one segment renamed to a script tag and the open deal
    with the largest amount given an id with markup."""
    cfg = synth.SynthConfig(weeks=40)
    events, _ = synth.generate(1500, seed=3, config=cfg)
    segment = events[cfg.segment_column].value_counts().index[1]
    events[cfg.segment_column] = events[cfg.segment_column].replace({segment: EVIL_SEGMENT})
    seen = events[pd.to_datetime(events["timestamp"]) < AS_OF + pd.Timedelta(days=1)]
    closed = set(seen.loc[seen["stage"].isin([cfg.won, cfg.lost]), "deal_id"])
    open_ids = seen.loc[~seen["deal_id"].isin(closed)]
    biggest = open_ids.sort_values("amount", ascending=False)["deal_id"].iloc[0]
    events["deal_id"] = events["deal_id"].replace({biggest: EVIL_DEAL})
    return events


@pytest.fixture(scope="module")
def funnel():
    cfg = synth.SynthConfig()
    return fs.FunnelDefinition(",".join(cfg.stages), cfg.won, cfg.lost)


@pytest.fixture(scope="module")
def snapshot(log, funnel):
    return fs.Snapshot.read(log, funnel, as_of=AS_OF, segment_by=synth.SynthConfig().segment_column, every=None)


@pytest.fixture(scope="module")
def model(snapshot):
    model = fs.FunnelModel.from_snapshot(snapshot)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(draws=150, tune=150, chains=2, random_seed=1, progressbar=False)
    return model


@pytest.fixture(scope="module")
def report(model, snapshot):
    return html.forecast_report(model, snapshot, horizon_days=45, target=TARGET, compare_to=COMPARE_TO, seed=2,
                                bottleneck_draws=100)


@pytest.fixture(scope="module")
def page_file(report, tmp_path_factory):
    return report.write_html(tmp_path_factory.mktemp("report") / "report.html")


# --------------------------------------------------------------------------- the segment roll-up

def test_segments_add_up_to_the_total_in_every_draw(report):
    forecast = report.forecast
    per_segment = forecast.segment_revenue()
    total = forecast.dataset["pipeline_revenue"].values
    assert per_segment.dims == ("draw", "segment") and EVIL_SEGMENT in per_segment["segment"].values
    np.testing.assert_allclose(per_segment.sum("segment").values, total, rtol=1e-12, atol=1e-6)
    table = forecast.by_segment()
    assert math.isclose(table["mean"].sum(), total.mean(), rel_tol=1e-12)
    assert table["deals"].sum() == forecast.dataset.sizes["deal"]
    assert (table["p10"] <= table["p50"]).all() and (table["p50"] <= table["p90"]).all()


def test_segments_in_the_json_only_with_the_roll_up(model, snapshot, report):
    data = report.to_dict()
    assert [set(row) for row in data["segments"]] == [{"segment", "mean", "p10", "p50", "p90"}] * len(data["segments"])
    assert math.isclose(sum(row["mean"] for row in data["segments"]), data["pipeline_revenue"]["mean"], rel_tol=1e-12)
    plain = fs.forecast(model, snapshot, horizon_days=10, seed=2, draws=20)
    assert "segments" not in plain.to_dict()        # forecast --json (and its golden file) unchanged


# --------------------------------------------------------------------------- the waterfall, by hand

WATERFALL_LOG = [
    # history: A -> B after 30-34 days, B -> Won after 51-55 days (the going-dark yardsticks)
    *[(f"H{k}", stage, ts, 1000.0) for k in range(5) for stage, ts in (
        ("A", pd.Timestamp("2023-11-01 12:00")), ("B", pd.Timestamp("2023-11-01 12:00") + pd.Timedelta(days=30 + k)),
        ("Won", pd.Timestamp("2024-01-25 12:00")))],
    ("D1", "A", "2024-03-01 12:00", 100.0), ("D1", "B", "2024-03-05 12:00", 100.0),
    ("D1", "B", "2024-03-20 12:00", 150.0),                                   # amount change
    ("D2", "A", "2024-03-08 12:00", 200.0), ("D2", "B", "2024-03-15 12:00", 200.0),   # moved forward
    ("D3", "A", "2024-03-09 12:00", 300.0), ("D3", "Won", "2024-03-20 12:00", 300.0),  # won
    ("D4", "A", "2024-03-09 12:00", 400.0), ("D4", "Lost", "2024-03-12 12:00", None),  # lost
    ("D5", "A", "2024-02-10 12:00", 500.0),                                   # live then, dark now
    ("D6", "A", "2024-03-15 12:00", 600.0),                                   # created
    ("D7", "A", "2024-03-16 12:00", 700.0), ("D7", "Won", "2024-03-25 12:00", 700.0),  # created and won
    ("D8", "A", "2024-03-05 12:00", None),                                    # no amount
    ("D9", "A", "2024-01-01 12:00", 900.0), ("D9", "B", "2024-03-20 12:00", 900.0),    # dark then, back now
]


def _open_amount_by_hand(events: pd.DataFrame, day: pd.Timestamp, limits: dict) -> float:
    """Plain pandas: the amounts of deals open at the end of ``day`` that are not older in their
    stage than the stage's limit."""
    cut = day + pd.Timedelta(days=1)
    seen = events[events["timestamp"] < cut].sort_values(["deal_id", "timestamp"], kind="stable")
    total = 0.0
    for _, rows in seen.groupby("deal_id"):
        stage = rows["stage"].iloc[-1]
        if stage in ("Won", "Lost"):
            continue
        entered = rows.loc[rows["stage"].ne(rows["stage"].shift()), "timestamp"].iloc[-1]
        if (cut - entered) / pd.Timedelta(days=1) > limits[stage]:
            continue
        amount = rows["amount"].dropna()
        total += float(amount.iloc[-1]) if len(amount) else 0.0
    return total


def _limits_by_hand(events: pd.DataFrame, day: pd.Timestamp) -> dict:
    """Plain pandas: 90% (inverted CDF) of the days of forward moves out of each stage."""
    seen = events[events["timestamp"] < day + pd.Timedelta(days=1)].sort_values(["deal_id", "timestamp"])
    order = {"A": 0, "B": 1, "Won": 2, "Lost": -1}
    days = {"A": [], "B": []}
    for _, rows in seen.groupby("deal_id"):
        rows = rows[rows["stage"].ne(rows["stage"].shift())]
        for (stage, start), (nxt, end) in zip(rows[["stage", "timestamp"]].values[:-1],
                                              rows[["stage", "timestamp"]].values[1:], strict=True):
            if order[nxt] > order[stage]:
                days[stage].append((end - start) / pd.Timedelta(days=1))
    return {s: float(np.quantile(v, 0.9, method="inverted_cdf")) for s, v in days.items()}


def test_waterfall_adds_up_to_the_difference_of_the_open_amounts():
    events = pd.DataFrame(WATERFALL_LOG, columns=["deal_id", "stage", "timestamp", "amount"])
    events["timestamp"] = pd.to_datetime(events["timestamp"])
    then, now = pd.Timestamp("2024-03-10"), pd.Timestamp("2024-03-31")
    snap = fs.Snapshot.read(events, fs.FunnelDefinition("A,B", "Won", "Lost"), as_of=now, every=None)
    result = pipeline_changes(snap, then)
    steps = result.steps.set_index("step")["amount"]
    limits = _limits_by_hand(events, now)
    assert limits == {"A": 34.0, "B": 55.0}
    assert result.open_then == _open_amount_by_hand(events, then, limits) == 1500.0
    assert result.open_now == _open_amount_by_hand(events, now, limits) == 1850.0
    assert math.isclose(math.fsum(steps.iloc[1:-1]), result.open_now - result.open_then, abs_tol=1e-9)
    assert steps.to_dict() == {"open then": 1500.0, "created": 1300.0, "won": -1000.0, "lost": -400.0,
                               "went dark": 400.0, "moved forward or back": 0.0, "amount changes": 50.0,
                               "open now": 1850.0}
    moved = result.steps.set_index("step").loc["moved forward or back"]
    assert (moved["deals"], moved["moved_amount"]) == (1, 200.0)
    valued = pipeline_changes(snap, then, deal_value=1000.0)      # D8, without an amount, counts 1,000
    assert (valued.open_then, valued.open_now) == (2500.0, 2850.0)
    assert valued.steps.set_index("step")["amount"].drop(["open then", "open now"]).to_dict() == {
        k: v for k, v in steps.items() if k not in ("open then", "open now")}


def test_waterfall_of_the_synthetic_log_adds_up(report):
    steps = report.context["c"]["table"].steps
    assert math.isclose(math.fsum(steps["amount"].iloc[1:-1]), steps["amount"].iloc[-1] - steps["amount"].iloc[0],
                        rel_tol=1e-12, abs_tol=1e-6)


# --------------------------------------------------------------------------- in a real browser

@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip("needs Debian's chromium (.ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=list(html.BROWSER_FLAGS[1:]))
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def opened(browser, page_file):
    """The report opened in Chromium: (page, console errors and page errors, other requests, dialogs)."""
    page = browser.new_page()
    errors, requests, dialogs = [], [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: requests.append(r.url) if r.url != page_file.as_uri() else None)
    page.goto(page_file.as_uri(), wait_until="load")
    yield page, errors, requests, dialogs
    page.close()


def test_renders_without_errors_or_network(opened):
    page, errors, requests, _ = opened
    assert errors == [] and requests == []
    assert page.locator("svg").count() >= 4          # fan, periods, segments, waterfall
    assert page.title().startswith("Revenue forecast as of 2024-08-31")


def test_headline_numbers_are_the_forecast_json(opened, report):
    page = opened[0]
    data = report.to_dict()
    shown = {key: page.locator(f'[data-key="{key}"]').inner_text() for key in
             ("pipeline_p50", "pipeline_mean", "total_p50", "target", "p_hit", "p_hit_total")}
    assert shown == {"pipeline_p50": html.money(data["pipeline_revenue"]["p50"]),
                     "pipeline_mean": html.money(data["pipeline_revenue"]["mean"]),
                     "total_p50": html.money(data["total_revenue"]["p50"]), "target": html.money(TARGET),
                     "p_hit": html.pct(data["target"]["p_hit"]), "p_hit_total": html.pct(data["target"]["p_hit_total"])}
    band = page.locator('[data-key="pipeline_band"]').inner_text()
    p10, p90 = (html.money(data["pipeline_revenue"][k]) for k in ("p10", "p90"))
    assert band.split() == [p10, "–", p90]


def test_values_from_the_log_show_as_text(opened, page_file):
    page, _, _, dialogs = opened
    assert dialogs == [] and page.locator("script").count() == 0 and page.locator("td b").count() == 0
    segment_cells = page.locator("td.seg").all_inner_texts()
    assert EVIL_SEGMENT in segment_cells
    assert EVIL_DEAL in page.locator("#deals td").all_inner_texts()
    raw = page_file.read_text(encoding="utf-8")
    assert "<script" not in raw and "<b>1</b>" not in raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw and "D&lt;b&gt;1&lt;/b&gt;" in raw


def test_self_contained_and_readable_axes(page_file):
    raw = page_file.read_text(encoding="utf-8")
    outside = set(re.findall(r"https?://[^\"' )>]+", raw))
    assert outside <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}     # XML namespaces only
    # matplotlib's SVG ids are content hashes ("d3d2424m5d1e798635"): look at what a reader sees, not them
    shown = re.sub(r'="[^"]*"', '=""', raw)
    assert "@font-face" not in raw and "1e6" not in shown and "1e7" not in shown
    assert "@media print" in raw and "break-inside: avoid" in raw


def test_jupyter_shows_the_same_body(report):
    shown = report._repr_html_()
    assert shown.startswith("<style>") and "<html" not in shown and report.body() in shown


def test_the_stage_table_shows_moves_back_so_its_shares_add_up(report, model):
    """Issue 23: advance + lost + stall did not reach 100% without the moves back."""
    stages = report.body().split('<section id="stages">')[1].split("</section>")[0]
    assert '<th class="n">back</th>' in stages and "add up to 100%" in stages
    back = model.stage_table()["p_back"].iloc[1]
    assert f"{100 * back:.1f}" in stages


@pytest.mark.slow
@needs_browser
def test_pdf_is_written(report, tmp_path):
    path = report.write_pdf(tmp_path / "report.pdf", paper="letter")
    assert path.read_bytes()[:5] == b"%PDF-" and path.stat().st_size > 10_000


# --------------------------------------------------------------------------- the command line

def test_a_missing_browser_is_exit_2_before_any_work(monkeypatch, tmp_path, capsys):
    from funnelsim.cli.app import main

    monkeypatch.setattr(html, "BROWSER", str(tmp_path / "no-chromium"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["funnelsim", "report", str(tmp_path / "missing.csv"), "--stages", "A,B",
                                      "--out", str(tmp_path / "r.html"), "--pdf", str(tmp_path / "r.pdf")])
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 2
    assert "no headless browser" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
@needs_browser
def test_cli_writes_html_pdf_and_json(log, tmp_path):
    csv = tmp_path / "crm.csv"
    log.to_csv(csv, index=False)
    cfg = synth.SynthConfig()
    out, pdf, js = tmp_path / "r.html", tmp_path / "r.pdf", tmp_path / "f.json"
    result = subprocess.run(
        [sys.executable, "-m", "funnelsim.cli.app", "report", str(csv), "--stages", ",".join(cfg.stages),
         "--won", cfg.won, "--lost", cfg.lost, "--segment-by", cfg.segment_column, "--as-of", str(AS_OF.date()),
         "--horizon", "30", "--target", "1000000", "--compare-to", str(COMPARE_TO.date()), "--draws", "100",
         "--tune", "100", "--chains", "2", "--seed", "1", "--out", str(out), "--pdf", str(pdf), "--json", str(js)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    data = json.loads(js.read_text())
    assert "segments" in data and data["target"]["amount"] == 1_000_000
    assert pdf.read_bytes()[:5] == b"%PDF-" and "<script" not in out.read_text()
    assert shutil.which(CHROMIUM)
