"""Outputs an analyst can take away: --csv DIR, --xlsx PATH, forecast --plot, --horizon quarter.

One small synthetic log whose segments and one open deal's id begin with the characters a
spreadsheet reads as a formula; one quick fit (module fixture), then every command reuses it
with --model, in process (typer's CliRunner).
"""

import csv
import json
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
from typer.testing import CliRunner

from funnelsim.cli import app
from funnelsim.data import synth

from .conftest import write_csv

STAGES = ["--stages", "Prospecting,Qualified,Proposal,Negotiation", "--won", "Won", "--lost", "Lost"]
AS_OF = "2024-08-15"                  # mid-quarter: 'quarter' is 46 days (2024-08-16 .. 2024-09-30)
HYPERLINK = '=HYPERLINK("http://x","y")'
SEGMENTS = {"SMB": "+SMB", "MidMarket": "-x", "Enterprise": "@x", "Partner": "=1+2"}


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def crm(tmp_path_factory):
    """(log path, model folder, common args): a 300-deal log, the open deal created last
    renamed to a HYPERLINK formula, segments renamed to +SMB, -x, @x, =1+2; a quick fit."""
    folder = tmp_path_factory.mktemp("exports")
    log, _ = synth.generate(300, seed=2)
    log["segment"] = log["segment"].map(SEGMENTS)
    seen = log[log["timestamp"] < pd.Timestamp(AS_OF) + pd.Timedelta(days=1)]
    closed = set(seen.loc[seen["stage"].isin(["Won", "Lost"]), "deal_id"])
    still_open = seen.loc[~seen["deal_id"].isin(closed)].sort_values("timestamp")["deal_id"].iloc[-1]
    log["deal_id"] = log["deal_id"].replace(still_open, HYPERLINK)
    events = write_csv(folder, log)
    common = [events, *STAGES, "--as-of", AS_OF, "--segment-by", "segment"]
    model = folder / "model"
    invoke("fit", *common, "--draws", 50, "--tune", 100, "--chains", 2, "--out", model)
    return folder, model, common


def read_csv(path):
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def read_sheet(path, name):
    sheet = openpyxl.load_workbook(path)[name]
    rows = list(sheet.iter_rows())
    header = [c.value for c in rows[0]]
    return [dict(zip(header, row, strict=True)) for row in rows[1:]]


def excel(value):
    """A number as a workbook holds it: openpyxl writes 16 significant digits (Excel keeps 15)."""
    return pytest.approx(value, rel=1e-15, abs=0)


def number(text):
    return None if text == "" else float(text)


@pytest.fixture(scope="module")
def forecast_outputs(crm):
    folder, model, common = crm
    out = folder / "forecast"
    invoke("forecast", *common, "--model", model, "--horizon", "quarter", "--target", 50_000,
           "--json", out / "f.json", "--csv", out / "csv", "--xlsx", out / "f.xlsx", "--plot", out / "fan.png")
    return json.loads((out / "f.json").read_text()), out


def test_forecast_csv_and_xlsx_hold_the_json_numbers(forecast_outputs):
    data, out = forecast_outputs
    names = {p.stem for p in (out / "csv").glob("*.csv")}
    assert names == {"summary", "periods", "deals", "stages", "samples", "new_deals_level_discounts"}
    assert set(openpyxl.load_workbook(out / "f.xlsx").sheetnames) == names
    assert not list((out / "csv").glob(".*")) and not list(out.glob(".*"))       # no temp files left

    summary = {r["field"]: r["value"] for r in read_csv(out / "csv" / "summary.csv")}
    sheet = {r["field"].value: r["value"].value for r in read_sheet(out / "f.xlsx", "summary")}
    for field, value in [("as_of", data["as_of"]), ("horizon_days", data["horizon_days"]),
                         ("pipeline_revenue.p10", data["pipeline_revenue"]["p10"]),
                         ("pipeline_revenue.mean", data["pipeline_revenue"]["mean"]),
                         ("total_revenue.p90", data["total_revenue"]["p90"]),
                         ("target.p_hit_total", data["target"]["p_hit_total"]),
                         ("diagnostics.r_hat_max", data["diagnostics"]["r_hat_max"])]:
        assert sheet[field] == (value if isinstance(value, str) else excel(value))
        assert (summary[field] if isinstance(value, str) else float(summary[field])) == value

    for name in ("periods", "deals"):
        rows, cells = read_csv(out / "csv" / f"{name}.csv"), read_sheet(out / "f.xlsx", name)
        assert len(rows) == len(cells) == len(data[name]) > 0
        for row, cell, expected in zip(rows, cells, data[name], strict=True):
            for key, value in expected.items():
                if isinstance(value, float):           # the exact float, not a rounding of it
                    assert number(row[key]) == value and cell[key].value == excel(value), key
                    assert cell[key].data_type == "n"
    stages = read_csv(out / "csv" / "stages.csv")
    assert [number(r["p_advance.mean"]) for r in stages] == [s["p_advance"]["mean"] for s in data["stages"]]
    assert [number(r["median_days.high"]) for r in stages] == [s["median_days"]["high"] for s in data["stages"]]
    samples = read_csv(out / "csv" / "samples.csv")
    assert [float(r["pipeline_revenue"]) for r in samples] == data["pipeline_revenue"]["samples"]


def test_text_from_the_log_never_becomes_a_formula(forecast_outputs):
    data, out = forecast_outputs
    assert HYPERLINK in {d["deal_id"] for d in data["deals"]}
    assert {d["segment"] for d in data["deals"]} <= set(SEGMENTS.values())
    deals = read_csv(out / "csv" / "deals.csv")
    assert "'" + HYPERLINK in {r["deal_id"] for r in deals}
    assert {r["segment"] for r in deals} <= {"'" + s for s in SEGMENTS.values()}
    assert not any(r["deal_id"].startswith("=") for r in deals)

    cells = read_sheet(out / "f.xlsx", "deals")
    link = next(r["deal_id"] for r in cells if r["deal_id"].value == HYPERLINK)
    assert link.data_type == "s" and link.quotePrefix
    for row in cells:
        assert row["segment"].value in SEGMENTS.values()
        assert row["segment"].data_type == "s" and row["segment"].quotePrefix
    stages = read_sheet(out / "f.xlsx", "stages")
    assert {r["segment"].value for r in stages} - {None} <= set(SEGMENTS.values())


def test_numbers_stay_numbers_and_negative_looking_text_is_not_mangled():
    from funnelsim.report.export import payload_tables, safe_text

    assert safe_text("-5") == "-5" and safe_text("+1.5e3") == "+1.5e3"      # a number cannot be a formula
    assert safe_text("-x") == "'-x" and safe_text("\tx") == "'\tx" and safe_text("\rx") == "'\rx"
    assert safe_text(-5.0) == -5.0 and safe_text("SMB") == "SMB"
    tables = payload_tables({"gain": [{"stage": "-x", "gain_mean": -12.5}]})
    assert tables["gain"]["gain_mean"].tolist() == [-12.5]


def test_forecast_plot_is_a_png_with_a_currency_axis(crm, monkeypatch):
    from funnelsim.report import charts

    folder, model, common = crm
    saved = []
    original = charts.save_png
    monkeypatch.setattr(charts, "save_png", lambda figure, path: saved.append(figure) or original(figure, path))
    png = folder / "plot" / "fan.png"
    invoke("forecast", *common, "--model", model, "--horizon", 30, "--plot", png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert not list(png.parent.glob(".*"))
    (figure,) = saved
    axis = figure.axes[0].yaxis
    figure.canvas.draw()
    labels = [t.get_text() for t in axis.get_ticklabels() if t.get_text()]
    assert labels and not any("e" in label for label in labels) and axis.get_offset_text().get_text() == ""
    assert axis.get_major_formatter()(12_600_000, 0) == "12.6M"


def test_horizon_quarter_runs_to_the_end_of_the_as_of_quarter(forecast_outputs):
    from funnelsim.cli.options import horizon_days

    data, _ = forecast_outputs
    assert data["horizon_days"] == 46                       # 2024-08-16 .. 2024-09-30
    assert data["periods"][-1]["end"] == "2024-09-30"
    assert horizon_days("quarter", "2024-07-01") == 91      # 2024-07-02 .. 2024-09-30
    assert horizon_days("quarter", "2024-09-30") == 92      # from a quarter's last day: the next quarter
    assert horizon_days("quarter", "2024-12-31") == 90      # 2025Q1
    assert horizon_days(30, "2024-08-15") == 30


def test_horizon_other_words_are_a_usage_error(crm):
    _, model, common = crm
    for bad in ("0", "quartre", "-3"):
        result = CliRunner().invoke(app, ["forecast", *map(str, common), "--model", str(model), "--horizon", bad])
        assert result.exit_code == 2 and "quarter" in result.output


def flatten(record: dict, prefix: str = "") -> dict:
    """Nested objects as dotted keys, at any depth (``total_baselines.ets.p10``)."""
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_tables(data, out, xlsx, tables):
    """Every named table of the CSV folder and the workbook holds the JSON's records, number for number."""
    for name, records in tables.items():
        rows, cells = read_csv(out / f"{name}.csv"), read_sheet(xlsx, name)
        assert len(rows) == len(cells) == len(records) > 0, name
        for row, cell, record in zip(rows, cells, records, strict=True):
            flat = flatten(record)
            for key, value in flat.items():
                if isinstance(value, bool):
                    assert row[key] == str(value) and cell[key].value is value, key
                elif isinstance(value, (int, float)):
                    assert number(row[key]) == value and cell[key].value == excel(value), key
                elif value is None:
                    assert row[key] == "" and cell[key].value is None, key
                elif not value.startswith(("=", "+", "-", "@")):
                    assert row[key] == cell[key].value == value, key


def test_whatif_bottlenecks_and_stages_export_their_tables(crm):
    folder, model, common = crm
    scenarios = folder / "scenarios.toml"
    scenarios.write_text('[[scenario]]\nname = "baseline"\n\n[[scenario]]\nname = "=faster"\n'
                         '[[scenario.change]]\nstage = "Proposal"\nconversion_points = 5\n')
    out = folder / "whatif"
    invoke("whatif", *common, "--model", model, "--scenarios", scenarios, "--horizon", 30, "--target", 20_000,
           "--json", out / "w.json", "--csv", out / "csv", "--xlsx", out / "w.xlsx")
    data = json.loads((out / "w.json").read_text())
    check_tables(data, out / "csv", out / "w.xlsx", {"scenarios": data["scenarios"]})
    assert [r["name"] for r in read_csv(out / "csv" / "scenarios.csv")] == ["baseline", "'=faster"]
    summary = {r["field"]: r["value"] for r in read_csv(out / "csv" / "summary.csv")}
    assert float(summary["baseline.mean"]) == data["baseline"]["mean"]

    out = folder / "bottlenecks"
    invoke("bottlenecks", *common, "--model", model, "--horizon", 30, "--json", out / "b.json",
           "--csv", out / "csv", "--xlsx", out / "b.xlsx")
    data = json.loads((out / "b.json").read_text())
    check_tables(data, out / "csv", out / "b.xlsx", {"bottlenecks": data["bottlenecks"]})
    segments = {r["segment"] for r in read_csv(out / "csv" / "bottlenecks.csv")}
    assert segments == {""} | {"'" + s for s in SEGMENTS.values()}          # "": all segments at once

    out = folder / "stages"
    invoke("stages", model, "--json", out / "s.json", "--csv", out / "csv", "--xlsx", out / "s.xlsx")
    data = json.loads((out / "s.json").read_text())
    check_tables(data, out / "csv", out / "s.xlsx", {"stages": data["stages"]})
    assert {p.stem for p in (out / "csv").glob("*.csv")} == {"summary", "stages", "absent_destinations"}


def test_backtest_export_of_a_real_payload(tmp_path):
    """The backtest's tables, cut from the golden backtest JSON (the CLI passes Backtest.to_dict()
    to the same writer): origins with their baselines and totals as dotted columns."""
    from funnelsim.report.export import write_tables

    data = json.loads((Path(__file__).parent / "golden" / "backtest.json").read_text())
    write_tables(data, csv=tmp_path / "csv", xlsx=tmp_path / "b.xlsx")
    check_tables(data, tmp_path / "csv", tmp_path / "b.xlsx", {"origins": data["origins"]})
    summary = {r["field"]: r["value"] for r in read_csv(tmp_path / "csv" / "summary.csv")}
    assert float(summary["summary.crps_skill_weighted"]) == data["summary"]["crps_skill_weighted"]
    assert summary["settings.segment_by"] == data["settings"]["segment_by"]
    assert summary["settings.deal_value"] == ""                      # null: an empty cell


def test_an_export_that_fails_leaves_nothing_half_written(tmp_path, monkeypatch):
    from funnelsim.report import export

    tables = export.payload_tables({"periods": [{"mean": 1.0}], "deals": [{"deal_id": "a"}]})
    original = pd.DataFrame.to_csv
    calls = []

    def failing(self, path, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return original(self, path, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", failing)
    with pytest.raises(OSError):
        export.write_csv_tables(tables, tmp_path / "csv")
    assert list((tmp_path / "csv").iterdir()) == []          # not even the first table, no temp folder


def test_bad_output_paths_and_a_quarter_backtest_exit_2_before_reading_the_log(tmp_path):
    from .test_cli import run

    (tmp_path / "taken").write_text("a file")
    missing = tmp_path / "none.csv"           # never read: each check comes first
    for option, value, says in [("--csv", tmp_path / "taken", "is a file"),
                                ("--xlsx", tmp_path / "out.csv", "does not end in .xlsx"),
                                ("--plot", tmp_path / "fan.svg", "does not end in .png")]:
        result = run("forecast", missing, *STAGES, option, value)
        assert result.returncode == 2 and says in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and "file not found" not in result.stderr
    result = run("backtest", missing, *STAGES, "--horizon", "quarter", "--origins", "2024-06-30")
    assert result.returncode == 2 and "option --horizon" in result.stderr and "--horizon 91" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_saved_model_keeps_its_own_revival(crm):
    """--revival with a --model fitted without it is refused (exit 2, what to do), not ignored."""
    from .test_cli import run

    _, model, common = crm
    result = run("forecast", *common, "--model", model, "--revival")
    assert result.returncode == 2, result.stderr
    assert "fitted with --no-revival" in result.stderr and "--revival --out DIR" in result.stderr
    assert "Traceback" not in result.stderr
