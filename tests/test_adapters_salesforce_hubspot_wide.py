"""CRM exports to the canonical log: Salesforce, HubSpot and wide sheets (issue 22).

Each export below is written by hand from the CRM's documented columns; the per-deal stage
paths it encodes are written next to it and compared with the converted log, which must also
read with funnelsim's own reader using the returned funnel."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from funnelsim.adapters import from_hubspot, from_salesforce, from_wide
from funnelsim.data.events import FunnelDefinition, read_events
from funnelsim.data.synth import SynthConfig, generate
from funnelsim.errors import FunnelDataError


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text.strip() + "\n")
    return path


def paths(events: pd.DataFrame, with_time=False) -> dict:
    """Per deal, the stages it entered in order (a row repeating the current stage is no entry)."""
    result = {}
    for deal, rows in events.groupby("deal_id", sort=False):
        path = []
        for stage, when in zip(rows["stage"], rows["timestamp"], strict=True):
            if not path or path[-1][0] != stage:
                path.append((stage, pd.Timestamp(when)) if with_time else (stage,))
        result[deal] = [p if with_time else p[0] for p in path]
    return result


def readable(converted):
    log = read_events(converted.events, converted.funnel)
    assert log.table.count().execute() == len(converted.events)
    return log


# --------------------------------------------------------------------------- Salesforce

HISTORY = """
Id,OpportunityId,CreatedDate,StageName,Amount,CloseDate,Probability,ForecastCategory,IsDeleted
008A1,006A,2024-01-02T09:00:00.000Z,Prospecting,1000,2024-03-31,10,Pipeline,false
008A2,006A,2024-01-04T09:00:00.000Z,Prospecting,1200,2024-03-31,10,Pipeline,false
008A3,006A,2024-01-08T09:00:00.000Z,Qualification,1200,2024-03-31,20,Pipeline,false
008A4,006A,2024-01-10T09:00:00.000Z,Prospecting,1200,2024-03-31,10,Pipeline,false
008A5,006A,2024-01-11T09:00:00.000Z,Prospecting,1200,2024-03-31,15,Pipeline,false
008A6,006A,2024-01-15T09:00:00.000Z,Qualification,1200,2024-04-15,20,Pipeline,false
008A7,006A,2024-01-20T09:00:00.000Z,Proposal/Price Quote,1200,2024-04-15,75,Pipeline,false
008A8,006A,2024-02-01T09:00:00.000Z,Closed Won,1500,2024-02-01,100,Closed,false
008A9,006A,2024-02-03T09:00:00.000Z,Closed Won,1450,2024-02-01,100,Closed,false
008B1,006B,2024-01-03T10:00:00.000Z,Prospecting,500,2024-02-28,10,Pipeline,false
008B2,006B,2024-01-05T10:00:00.000Z,Closed Lost,500,2024-02-28,0,Omitted,true
008B3,006B,2024-01-06T10:00:00.000Z,Closed Lost,500,2024-01-06,0,Omitted,false
008C1,006C,2024-01-05T08:00:00.000Z,Qualification,,2024-05-01,20,Pipeline,false
008C2,006C,2024-01-09T08:00:00.000Z,Closed Lost,,2024-01-09,0,Omitted,false
008C3,006C,2024-01-12T08:00:00.000Z,Proposal/Price Quote,800,2024-05-01,75,Pipeline,false
"""
# what it encodes: back-move in 006A, amount-only change (row 3), probability-only change (row 6),
# a change after the win (row 10), a deleted row (row 12), 006C reopened after Closed Lost
EXPECTED_PATHS = {
    "006A": ["Prospecting", "Qualification", "Prospecting", "Qualification", "Proposal/Price Quote", "Closed Won"],
    "006B": ["Prospecting", "Closed Lost"],
    "006C": ["Qualification", "Proposal/Price Quote"],
    "006D": ["Prospecting"],
}

OPPORTUNITIES = """
Id,Name,CreatedDate,StageName,IsClosed,IsWon,Amount,CloseDate,LeadSource,Type,OwnerId
006A,Acme,2024-01-02T09:00:00.000Z,Closed Won,true,true,1450,2024-02-01,Web,New Business,005X
006B,Globex,2024-01-03T10:00:00.000Z,Closed Lost,true,false,500,2024-01-06,Partner,New Business,005Y
006C,Initech,2024-01-05T08:00:00.000Z,Proposal/Price Quote,false,false,800,2024-05-01,Web,Existing Business,005X
006D,Umbrella,2024-01-20T08:00:00.000Z,Prospecting,false,false,300,2024-06-01,Phone,New Business,005Y
"""

STAGES = """
Id,ApiName,MasterLabel,SortOrder,IsActive,IsClosed,IsWon,DefaultProbability
01J1,Prospecting,Prospecting,1,true,false,false,10
01J2,Qualification,Qualification,2,true,false,false,20
01J3,Needs Analysis,Needs Analysis,3,true,false,false,20
01J4,Proposal/Price Quote,Proposal/Price Quote,4,true,false,false,75
01J5,Closed Won,Closed Won,5,true,true,true,100
01J6,Closed Lost,Closed Lost,6,true,true,false,0
01J7,Legacy,Legacy,7,false,false,false,0
"""


@pytest.fixture
def salesforce_files(tmp_path):
    return (write(tmp_path, "OpportunityHistory.csv", HISTORY), write(tmp_path, "Opportunity.csv", OPPORTUNITIES),
            write(tmp_path, "OpportunityStage.csv", STAGES))


def test_salesforce_paths_amounts_attributes(salesforce_files):
    history, opportunities, stages = salesforce_files
    converted = from_salesforce(history, opportunities=opportunities, stage_table=stages)
    events = converted.events
    assert converted.funnel == FunnelDefinition(
        stages=("Prospecting", "Qualification", "Needs Analysis", "Proposal/Price Quote"), won=("Closed Won",),
        lost=("Closed Lost",))  # the inactive unused stage is left out
    assert paths(events) == EXPECTED_PATHS
    a = events[events["deal_id"] == "006A"]
    # the amount-only change is a row repeating Prospecting with the new amount; the probability-only
    # change leaves no row; the change after the win updates the won row
    assert list(a["stage"]) == ["Prospecting", "Prospecting", "Qualification", "Prospecting", "Qualification",
                                "Proposal/Price Quote", "Closed Won"]
    assert list(a["amount"]) == [1000, 1200, 1200, 1200, 1200, 1200, 1450]
    assert a["timestamp"].iloc[1] == pd.Timestamp("2024-01-04 09:00")   # Z: UTC, kept naive
    assert a["close_date"].iloc[-1] == pd.Timestamp("2024-02-01")
    assert a[a["stage"] == "Qualification"]["close_date"].tolist() == [pd.Timestamp("2024-03-31"),
                                                                       pd.Timestamp("2024-04-15")]
    assert events[events["deal_id"] == "006C"]["amount"].isna().tolist() == [True, False]
    assert {"LeadSource", "Type", "OwnerId"} <= set(events.columns)
    assert "Name" not in events.columns and "IsWon" not in events.columns
    assert events.set_index("deal_id")["LeadSource"].groupby(level=0).first().to_dict() == {
        "006A": "Web", "006B": "Partner", "006C": "Web", "006D": "Phone"}
    notes = " | ".join(converted.notes)
    for fragment in ("dropped 1 deleted", "1 deal(s) were reopened", "1 history row(s) changed only the amount",
                     "1 change(s) after a deal was won", "dropped 1 history row(s) that changed neither",
                     "1 opportunit(y/ies) had no history row", "OpportunityStage.csv (SortOrder"):
        assert fragment in notes
    log = readable(converted)
    assert set(log.attributes) >= {"LeadSource", "Type", "OwnerId", "close_date"}


def test_salesforce_without_stage_table_infers_order_and_outcomes(salesforce_files):
    history, opportunities, _ = salesforce_files
    by_probability = from_salesforce(history)
    assert by_probability.funnel.stages == ("Prospecting", "Qualification", "Proposal/Price Quote")
    assert by_probability.funnel.won == ("Closed Won",) and by_probability.funnel.lost == ("Closed Lost",)
    assert any("median Probability" in n and "from the labels" in n for n in by_probability.notes)
    assert paths(by_probability.events) == {k: v for k, v in EXPECTED_PATHS.items() if k != "006D"}
    readable(by_probability)
    # no Probability column: the order deals move through the stages; outcomes from IsWon / IsClosed
    frame = pd.read_csv(history).drop(columns="Probability")
    by_flow = from_salesforce(frame, opportunities=opportunities)
    assert by_flow.funnel.stages == ("Prospecting", "Qualification", "Proposal/Price Quote")
    assert any("order deals move through" in n and "IsClosed / IsWon" in n for n in by_flow.notes)


def test_salesforce_unknown_stage_names_file_row_column(salesforce_files, tmp_path):
    history, _, stages = salesforce_files
    bad = write(tmp_path, "bad.csv", HISTORY.replace("008C3,006C,2024-01-12T08:00:00.000Z,Proposal/Price Quote",
                                                     "008C3,006C,2024-01-12T08:00:00.000Z,Proposal"))
    with pytest.raises(FunnelDataError) as caught:
        from_salesforce(bad, stage_table=stages)
    error = caught.value
    assert (error.source, error.row, error.column, error.value) == (str(bad), 16, "StageName", "Proposal")
    assert "Proposal/Price Quote" in error.hint


def test_salesforce_history_of_unknown_opportunity(salesforce_files, tmp_path):
    history, _, _ = salesforce_files
    opportunities = write(tmp_path, "Opportunity.csv", "\n".join(OPPORTUNITIES.strip().splitlines()[:2]))
    with pytest.raises(FunnelDataError) as caught:
        from_salesforce(history, opportunities=opportunities)
    error = caught.value
    assert (error.source, error.row, error.column, error.value) == (str(history), 11, "OpportunityId", "006B")
    assert "Opportunity export" in str(error)


def test_salesforce_missing_column_and_bad_date(tmp_path):
    no_stage = write(tmp_path, "h.csv", "OpportunityId,CreatedDate,Stage\n006A,2024-01-01,Prospecting")
    with pytest.raises(FunnelDataError, match="no column 'StageName'.*Did you mean 'Stage'"):
        from_salesforce(no_stage)
    bad_date = write(tmp_path, "h2.csv", "OpportunityId,CreatedDate,StageName\n006A,2024-01-01,Prospecting\n"
                                         "006A,yesterday,Closed Won")
    with pytest.raises(FunnelDataError) as caught:
        from_salesforce(bad_date)
    assert (caught.value.row, caught.value.column, caught.value.value) == (3, "CreatedDate", "yesterday")


def load_bench():
    spec = importlib.util.spec_from_file_location(
        "bench_convert", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_convert.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_salesforce_round_trip_of_a_synthetic_log(tmp_path):
    config = SynthConfig()
    events, _ = generate(1500, seed=3, config=config)
    history, stage_table, opportunities = load_bench().salesforce_history(
        events, config.stages, config.won, config.lost, seed=3)
    assert history["IsDeleted"].any() and len(history) > len(events)
    history.to_csv(tmp_path / "h.csv", index=False)
    converted = from_salesforce(tmp_path / "h.csv", opportunities=opportunities, stage_table=stage_table)
    assert converted.funnel == FunnelDefinition(stages=config.stages, won="Closed Won", lost="Closed Lost")
    expected = events.assign(stage=events["stage"].replace({"Won": "Closed Won", "Lost": "Closed Lost"}))
    assert paths(converted.events, with_time=True) == paths(expected, with_time=True)
    assert set(converted.events["Segment"]) == set(events["segment"])
    readable(converted)


# --------------------------------------------------------------------------- HubSpot

P = "Sales Pipeline"
HUBSPOT_COLUMNS = ["Record ID", "Deal Name", "Deal Stage", "Pipeline", "Amount", "Create Date", "Close Date",
                   "Deal Type", f'Date entered "Appointment scheduled ({P})"',
                   f'Date exited "Appointment scheduled ({P})"', f'Date entered "Qualified to buy ({P})"',
                   f'Date entered "Contract sent ({P})"', f'Date entered "Closed won ({P})"',
                   f'Date entered "Closed lost ({P})"', 'Date entered "New (Renewals)"',
                   'Date entered "Renewed (Renewals)"', f'Time in "Qualified to buy ({P})"']
HUBSPOT_ROWS = [
    ["101", "A", "Closed won", P, "1000", "2024-01-01 10:00", "2024-02-01", "newbusiness", "2024-01-01 10:00",
     "2024-01-05 10:00", "2024-01-05 10:00", "2024-01-20 09:00", "2024-02-01 12:00", "", "", "", "123"],
    ["102", "B", "Qualified to buy", P, "", "2024-01-03 10:00", "", "existingbusiness", "2024-01-03 10:00", "",
     "2024-01-04 10:00", "", "", "", "", "", ""],
    ["103", "C", "Closed lost", P, "500", "2024-01-03 10:00", "2024-01-10", "newbusiness", "", "", "", "", "",
     "2024-01-10 10:00", "", "", ""],
    ["104", "D", "Appointment scheduled", P, "70", "2024-01-07 10:00", "", "newbusiness", "", "", "", "", "", "",
     "", "", ""],
    ["201", "E", "Renewed", "Renewals", "70", "2024-01-07 10:00", "", "", "", "", "", "", "", "", "2024-01-07",
     "2024-01-09", ""],
]


@pytest.fixture
def hubspot_file(tmp_path):
    path = tmp_path / "hubspot-deals.csv"
    pd.DataFrame(HUBSPOT_ROWS, columns=HUBSPOT_COLUMNS).to_csv(path, index=False)
    return path


def test_hubspot_one_pipeline_at_a_time(hubspot_file):
    with pytest.raises(FunnelDataError, match=r"several pipelines.*Sales Pipeline \(4 deals\), Renewals \(1 deals\)"):
        from_hubspot(hubspot_file)
    with pytest.raises(FunnelDataError, match="no Date entered columns for pipeline 'Marketing'"):
        from_hubspot(hubspot_file, pipeline="Marketing")
    converted = from_hubspot(hubspot_file, pipeline="sales pipeline")
    assert converted.funnel == FunnelDefinition(stages=("Appointment scheduled", "Qualified to buy", "Contract sent"),
                                                won="Closed won", lost="Closed lost")
    assert paths(converted.events) == {
        "101": ["Appointment scheduled", "Qualified to buy", "Contract sent", "Closed won"],
        "102": ["Appointment scheduled", "Qualified to buy"],
        "103": ["Closed lost"],
        "104": ["Appointment scheduled"],     # no Date entered: its Deal Stage at its Create Date
    }
    events = converted.events.set_index("deal_id")
    assert events.loc["101", "amount"].tolist() == [1000.0] * 4
    assert events.loc["104", "timestamp"] == pd.Timestamp("2024-01-07 10:00")
    assert "Deal Type" in events.columns and not any(c.startswith(("Date ", "Time in")) for c in events.columns)
    assert any("re-entries" in n for n in converted.notes)
    readable(converted)


def test_hubspot_pipeline_without_a_won_stage(hubspot_file):
    with pytest.raises(FunnelDataError, match="cannot tell the won stage"):
        from_hubspot(hubspot_file, pipeline="Renewals")


# --------------------------------------------------------------------------- wide sheets

WIDE = """
id,lead_date,demo_date,proposal_date,status,closed_on,value,region,won_date,lost_date
w1,2024-01-01,2024-01-03,2024-01-09,Won,2024-01-20,1000,EU,2024-01-20,
w2,2024-01-02,2024-01-02,,lost,2024-01-04,200,US,,2024-01-04
w3,,2024-01-04,,open,,300,EU,,
w4,2024-01-05,,,,,,US,,
w5,,,,,,50,US,,
"""
WIDE_PATHS = {"w1": ["Lead", "Demo", "Proposal", "Won"], "w2": ["Lead", "Demo", "Lost"], "w3": ["Demo"],
              "w4": ["Lead"]}


def test_wide_outcome_column_and_date(tmp_path):
    sheet = write(tmp_path, "deals.csv", WIDE)
    converted = from_wide(sheet, stage_dates="Lead=lead_date,Demo=demo_date,Proposal=proposal_date",
                          outcome="status", outcome_date="closed_on", deal_id="id", amount="value")
    assert converted.funnel == FunnelDefinition(stages=("Lead", "Demo", "Proposal"), won="Won", lost="Lost")
    assert paths(converted.events) == WIDE_PATHS
    assert converted.events.loc[converted.events["deal_id"] == "w1", "amount"].tolist() == [1000.0] * 4
    assert "region" in converted.events.columns and "status" not in converted.events.columns
    assert any("left out 1 deal" in n for n in converted.notes)
    readable(converted)
    # the same deals with a date column per outcome instead of a status column
    by_dates = from_wide(sheet, stage_dates={"Lead": "lead_date", "Demo": "demo_date", "Proposal": "proposal_date",
                                             "Won": "won_date", "Lost": "lost_date"}, deal_id="id")
    assert paths(by_dates.events) == WIDE_PATHS


def test_wide_errors(tmp_path):
    sheet = write(tmp_path, "deals.csv", WIDE.replace("w3,,2024-01-04,,open", "w3,,2024-01-04,,Closed"))
    stages = "Lead=lead_date,Demo=demo_date,Proposal=proposal_date"
    with pytest.raises(FunnelDataError) as caught:
        from_wide(sheet, stage_dates=stages, outcome="status", outcome_date="closed_on", deal_id="id")
    assert (caught.value.row, caught.value.column, caught.value.value) == (4, "status", "Closed")
    with pytest.raises(FunnelDataError, match="closed but its outcome has no date"):
        from_wide(write(tmp_path, "ok.csv", WIDE), stage_dates=stages, outcome="status", deal_id="id")
    with pytest.raises(FunnelDataError, match="no column 'deal_id'"):
        from_wide(sheet, stage_dates=stages, outcome="status")
    early = write(tmp_path, "early.csv", WIDE.replace("Won,2024-01-20", "Won,2024-01-05"))
    with pytest.raises(FunnelDataError, match="before the deal's last stage entry") as caught:
        from_wide(early, stage_dates=stages, outcome="status", outcome_date="closed_on", deal_id="id")
    assert (caught.value.row, caught.value.column) == (2, "closed_on")


# --------------------------------------------------------------------------- the command line

def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "funnelsim.cli.app", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300, env={**os.environ, "COLUMNS": "200"})


def test_cli_convert_then_funnel(salesforce_files, tmp_path):
    history, opportunities, stages = salesforce_files
    result = run("convert", "salesforce", history, "--opportunities", opportunities, "--stage-table", stages,
                 "--out", "events.parquet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "dropped 1 deleted history row(s)" in result.stderr
    command = next(line for line in result.stdout.splitlines() if line.startswith("funnelsim funnel "))
    import shlex

    argv = shlex.split(command)[2:]
    assert argv[:2] == ["events.parquet", "--stages"]
    funnel = run("funnel", *argv, "--segment-by", "LeadSource", cwd=tmp_path)
    assert funnel.returncode == 0, funnel.stderr
    assert "Proposal/Price Quote" in funnel.stdout
    # an option of another format, and an unknown format: exit 2, one line
    wrong = run("convert", "salesforce", history, "--pipeline", "X", "--out", "e.csv", cwd=tmp_path)
    assert wrong.returncode == 2 and "--pipeline does not apply to salesforce" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    unknown = run("convert", "zoho", history, "--out", "e.csv", cwd=tmp_path)
    assert unknown.returncode == 2 and "salesforce" in unknown.stderr


def test_cli_convert_reads_an_export_in_another_encoding(tmp_path):
    """A Salesforce export saved by Excel on Windows (cp1252, ';'-separated): without
    --encoding the error says to pass it (convert takes it now), with it the labels read right
    in all three files."""
    accented = {"Prospecting": "Prospecção", "Qualification": "Qualificação", "Proposal/Price Quote": "Proposta"}

    def european(text):
        for english, local in accented.items():
            text = text.replace(english, local)
        return text.strip().replace(",", ";") + "\n"

    files = {}
    for name, text in (("OpportunityHistory.csv", HISTORY), ("Opportunity.csv", OPPORTUNITIES),
                       ("OpportunityStage.csv", STAGES)):
        files[name] = tmp_path / name
        files[name].write_bytes(european(text).encode("cp1252"))
    args = ["convert", "salesforce", files["OpportunityHistory.csv"], "--opportunities", files["Opportunity.csv"],
            "--stage-table", files["OpportunityStage.csv"], "--out", tmp_path / "events.csv"]
    refused = run(*args)
    assert refused.returncode == 2 and "pass --encoding latin-1" in refused.stderr and "Traceback" not in refused.stderr
    result = run(*args, "--encoding", "cp1252")
    assert result.returncode == 0, result.stderr
    events = pd.read_csv(tmp_path / "events.csv")
    assert set(accented.values()) <= set(events["stage"])
    assert "--stages Prospecção,Qualificação" in result.stdout.replace("'", "")
