"""``funnelsim inspect``: a first look at a log, and options that read it (issue 23, item 8)."""

import json

import numpy as np
import pandas as pd
import pytest

from funnelsim.data import synth
from funnelsim.data.events import FunnelDataError
from funnelsim.data.overview import overview

from .olist import olist_data_dir, olist_events
from .test_cli import run


@pytest.fixture(scope="module")
def crm():
    events, _ = synth.generate(600, seed=4)
    return events


def test_the_suggested_options_are_the_generator_s_funnel(crm):
    config = synth.SynthConfig()
    found = overview(crm.sample(frac=1.0, random_state=1))          # row order does not matter
    assert found.suggested == {"stages": list(config.stages), "won": [config.won], "lost": [config.lost],
                               "segment_by": [config.segment_column]}
    # counts as plain pandas has them
    by_label = found.stages.set_index("label")
    expected = crm.groupby("stage").agg(rows=("deal_id", "size"), deals=("deal_id", "nunique"))
    pd.testing.assert_series_equal(by_label["rows"].sort_index(), expected["rows"].sort_index(), check_names=False,
                                   check_dtype=False)
    pd.testing.assert_series_equal(by_label["deals"].sort_index(), expected["deals"].sort_index(),
                                   check_names=False, check_dtype=False)
    assert by_label.loc["Won", "ends_deals"] == 1.0 and by_label.loc["Prospecting", "ends_deals"] < 0.5
    assert (found.rows, found.deals) == (len(crm), crm["deal_id"].nunique())
    assert found.first_event == pd.Timestamp(crm["timestamp"].min()).normalize()
    assert found.last_event == pd.Timestamp(crm["timestamp"].max()).normalize()


def test_labels_in_other_languages_and_an_order_from_the_deals():
    """Spanish labels, stages listed in the file out of funnel order: the order comes from
    the order deals enter them, the outcomes from their names."""
    rows = []
    for i in range(30):
        day = pd.Timestamp("2024-03-01") + pd.Timedelta(days=i)
        path = ["Contacto", "Calificado", "Propuesta"][: 1 + i % 3]
        path += [["Ganado", "Perdido", None][i % 3]] if i % 2 else []
        for k, label in enumerate(p for p in path if p):
            rows.append({"Id": f"op-{i}", "Etapa": label, "Fecha": (day + pd.Timedelta(days=3 * k)).strftime("%d/%m/%Y"),
                         "Region": ["Norte", "Sur"][i % 2]})
    frame = pd.DataFrame(rows).iloc[::-1]
    found = overview(frame, columns={"Id": "deal_id", "Etapa": "stage", "Fecha": "timestamp"}, dayfirst=True)
    assert found.suggested["stages"] == ["Contacto", "Calificado", "Propuesta"]
    assert (found.suggested["won"], found.suggested["lost"]) == (["Ganado"], ["Perdido"])
    assert found.suggested["segment_by"] == ["Region"] and found.unreadable_timestamps == 0
    # without --dayfirst 31/03/2024 does not read (only ISO dates do): counted, not hidden
    month_first = overview(frame, columns={"Id": "deal_id", "Etapa": "stage", "Fecha": "timestamp"})
    assert month_first.unreadable_timestamps == len(frame) and month_first.first_event is None


def test_a_log_without_the_columns_lists_them_and_guesses_the_mapping(tmp_path):
    path = tmp_path / "export.csv"
    pd.DataFrame({"Opportunity ID": ["a", "b"], "Stage": ["Lead", "Won"], "Created Date": ["2024-01-01"] * 2}).to_csv(
        path, index=False)
    with pytest.raises(FunnelDataError) as error:
        overview(path)
    assert "Opportunity ID=deal_id,Stage=stage,Created Date=timestamp" in str(error.value)
    result = run("inspect", path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--columns 'Opportunity ID=deal_id,Stage=stage,Created Date=timestamp'" in result.stderr
    fixed = run("inspect", path, "--columns", "Opportunity ID=deal_id,Stage=stage,Created Date=timestamp")
    assert fixed.returncode == 0, fixed.stderr
    assert "--stages Lead --won Won" in fixed.stdout and 'no label reads as lost' in fixed.stderr


def test_cli_prints_options_that_read_the_log_and_writes_json(tmp_path, crm):
    log = tmp_path / "crm.csv"
    odd = crm.assign(stage=np.where(crm["stage"].eq("Qualified"), "[bold]Qualified", crm["stage"]))
    odd.to_csv(log, index=False)
    out = tmp_path / "inspect.json"
    result = run("inspect", log, "--json", out)
    assert result.returncode == 0, result.stderr
    assert "[bold]Qualified" in result.stdout                     # a label from the log prints as written
    options = result.stdout.split("Suggested options (check the stage order): ")[1].split("\n")[0]
    data = json.loads(out.read_text())
    assert data["suggested"]["stages"] == ["Prospecting", "[bold]Qualified", "Proposal", "Negotiation"]
    assert {"source", "rows", "deals", "first_event", "last_event", "columns", "stages"} <= set(data)
    # the suggestion reads the log as it stands
    funnel = run("funnel", log, *options.replace('"', "").split(" "))
    assert funnel.returncode == 0, funnel.stderr


@pytest.mark.skipif(olist_data_dir() is None, reason="Olist data not found")
def test_olist_reads_as_one_stage_won_and_no_lost_label(tmp_path):
    events, _ = olist_events(olist_data_dir())
    found = overview(events, dayfirst=True)
    assert found.suggested["stages"] == ["MQL"] and found.suggested["won"] == ["Won"]
    assert found.suggested["lost"] == [] and "origin" in found.suggested["segment_by"]
    parsed = pd.to_datetime(events["timestamp"], dayfirst=True, format="mixed")
    assert (found.first_event, found.last_event) == (parsed.min().normalize(), parsed.max().normalize())
    assert found.options().endswith("--segment-by origin")
