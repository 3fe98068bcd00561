"""Pipedrive, Bitrix24 and snapshot exports to the canonical log (issue 22).

Each format: a small export written by hand from the documented columns, converted, its
per-deal stage paths compared with the log it encodes (back-moves included), the result read by
``read_events``, and the clear errors (unknown deal, unknown stage id: file, row, column). Then
the statistical test: a synthetic log -> weekly snapshots -> ``from_snapshots`` recovers every
visible stage path and every time in stage within a week.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from funnelsim.adapters import from_bitrix24, from_pipedrive, from_snapshots
from funnelsim.data.events import read_events
from funnelsim.data.synth import generate
from funnelsim.errors import FunnelDataError

DAY = pd.Timedelta(days=1)


def write(path, text: str):
    path.write_text(text.strip() + "\n", encoding="utf-8")
    return path


def paths(events: pd.DataFrame) -> dict[str, list[str]]:
    return {deal: list(group) for deal, group in events.groupby("deal_id", sort=True)["stage"]}


def times(events: pd.DataFrame, deal: str) -> list[str]:
    return [f"{t:%Y-%m-%d %H:%M}" for t in events.loc[events["deal_id"] == deal, "timestamp"]]


def reads(result):
    log = read_events(result.events, result.funnel)
    assert len(log.to_pandas()) == len(result.events)
    return log


# --------------------------------------------------------------------------- Pipedrive

FLOW = """
id,item_id,field_key,old_value,new_value,log_time,old_value_formatted,new_value_formatted
1,101,stage_id,1,2,2024-01-05 10:00:00,Lead,Qualified
2,101,value,1000,1500,2024-01-06 09:00:00,,
3,101,stage_id,2,3,2024-01-10 11:00:00,Qualified,Proposal
4,101,stage_id,3,2,2024-01-12 11:00:00,Proposal,Qualified
5,101,stage_id,2,3,2024-01-15 11:00:00,Qualified,Proposal
6,101,status,open,won,2024-01-20 16:00:00,,
7,102,stage_id,1,2,2024-01-08 10:00:00,Lead,Qualified
8,102,status,open,lost,2024-01-09 10:00:00,,
9,102,owner_id,5,6,2024-01-09 11:00:00,,
10,103,stage_id,1,3,2024-01-11 09:30:00,Lead,Proposal
11,103,expected_close_date,2024-02-01,2024-03-01,2024-01-12 09:00:00,,
12,105,status,open,won,2024-01-09 12:00:00,,
13,105,status,won,open,2024-01-10 12:00:00,,
14,105,stage_id,1,2,2024-01-11 12:00:00,Lead,Qualified
15,105,status,open,lost,2024-01-12 12:00:00,,
"""
DEALS = """
Deal - ID,Deal - Title,Deal - Stage,Deal - Status,Deal - Value,Deal - Currency,Deal - Deal created,Deal - Won time,Deal - Lost time,Deal - Expected close date,Deal - Source
101,Acme,Proposal,won,1500,EUR,2024-01-02 09:00:00,2024-01-20 16:00:00,,2024-01-31,Web
102,Beta,Qualified,lost,800,EUR,2024-01-03 09:00:00,,2024-01-09 10:00:00,,Referral
103,Gamma,Proposal,open,2000,EUR,2024-01-04 09:00:00,,,2024-03-01,Web
104,Delta,Lead,open,300,EUR,2024-01-05 09:00:00,,,,Web
105,Eps,Qualified,lost,700,EUR,2024-01-06 09:00:00,,2024-01-12 12:00:00,,Web
106,Zeta,Lead,deleted,100,EUR,2024-01-06 10:00:00,,,,Web
"""


def test_pipedrive_paths_amounts_and_notes(tmp_path):
    result = from_pipedrive(write(tmp_path / "flow.csv", FLOW), deals=write(tmp_path / "deals.csv", DEALS))
    assert paths(result.events) == {
        "101": ["Lead", "Qualified", "Proposal", "Qualified", "Proposal", "Won"],  # the back-move kept
        "102": ["Lead", "Qualified", "Lost"],
        "103": ["Lead", "Proposal"],
        "104": ["Lead"],
        "105": ["Lead", "Qualified", "Lost"],  # won, reopened, lost: only the final status counts
    }
    assert times(result.events, "101") == ["2024-01-02 09:00", "2024-01-05 10:00", "2024-01-10 11:00",
                                           "2024-01-12 11:00", "2024-01-15 11:00", "2024-01-20 16:00"]
    assert result.funnel.stages == ("Lead", "Qualified", "Proposal")
    assert (result.funnel.won, result.funnel.lost) == (("Won",), ("Lost",))
    deal = result.events[result.events["deal_id"] == "101"]
    assert list(deal["amount"]) == [1000, 1000, 1500, 1500, 1500, 1500]  # the value change on 6 January
    gamma = result.events[result.events["deal_id"] == "103"]
    assert list(gamma["close_date"]) == [pd.Timestamp("2024-02-01")] * 2  # changed to 1 March only later
    assert set(result.events.columns) >= {"Title", "Source", "close_date"}
    notes = " | ".join(result.notes)
    assert "deleted" in notes and "reopened" in notes and "owner_id: 1" in notes and "ties broken by stage id" in notes
    assert result.options() == "--stages Lead,Qualified,Proposal --won Won --lost Lost"
    log = reads(result)
    assert "Source" in log.attributes


def test_pipedrive_unknown_deal_and_unknown_stage_id(tmp_path):
    deals = write(tmp_path / "deals.csv", DEALS)
    flow = write(tmp_path / "flow.csv", FLOW + "16,999,stage_id,1,2,2024-01-13 12:00:00,Lead,Qualified")
    with pytest.raises(FunnelDataError) as error:
        from_pipedrive(flow, deals=deals)
    assert (error.value.source, error.value.row, error.value.column, error.value.value) == (str(flow), 17, "item_id",
                                                                                           "999")
    assert "not in the deals export" in str(error.value)
    # without the formatted names, stage 1 (Lead) is named by no deal: every deal has left it
    bare = pd.read_csv(tmp_path / "flow.csv", dtype=str).iloc[:-1, :6]
    bare_flow = tmp_path / "bare.csv"
    bare.to_csv(bare_flow, index=False)
    with pytest.raises(FunnelDataError) as error:
        from_pipedrive(bare_flow, deals=deals)
    assert (error.value.row, error.value.column, error.value.value) == (2, "old_value", "1")
    assert "unknown stage id" in str(error.value) and "new_value_formatted" in str(error.value)


def test_pipedrive_names_from_deals_and_several_currencies(tmp_path):
    flow = write(tmp_path / "flow.csv", """
item_id,field_key,old_value,new_value,log_time
1,stage_id,7,8,2024-02-01 10:00:00
2,stage_id,7,8,2024-02-02 10:00:00
2,stage_id,8,7,2024-02-03 10:00:00
""")
    deals = """
Deal - ID,Deal - Stage,Deal - Status,Deal - Value,Deal - Currency,Deal - Deal created
1,Demo,open,10,USD,2024-01-30 10:00:00
2,Intro,open,20,USD,2024-01-31 10:00:00
"""
    result = from_pipedrive(flow, deals=write(tmp_path / "deals.csv", deals))
    assert paths(result.events) == {"1": ["Intro", "Demo"], "2": ["Intro", "Demo", "Intro"]}
    assert result.funnel.stages == ("Intro", "Demo")
    with pytest.raises(FunnelDataError, match="several currencies: USD"):
        from_pipedrive(flow, deals=write(tmp_path / "mixed.csv", deals.replace("20,USD", "20,EUR")))


# --------------------------------------------------------------------------- Bitrix24

HISTORY = """
ID,TYPE_ID,OWNER_ID,CREATED_TIME,CATEGORY_ID,STAGE_SEMANTIC_ID,STAGE_ID
1,1,10,2024-01-02T09:00:00+03:00,0,P,NEW
2,1,11,2024-01-03T10:00:00+03:00,0,P,NEW
3,2,10,2024-01-05T12:00:00+03:00,0,P,PREPARATION
4,2,10,2024-01-08T12:00:00+03:00,0,P,EXECUTING
5,2,10,2024-01-09T12:00:00+03:00,0,P,PREPARATION
6,2,10,2024-01-10T12:00:00+03:00,0,P,EXECUTING
7,3,10,2024-01-15T18:00:00+03:00,0,S,WON
8,2,11,2024-01-06T10:00:00+03:00,0,P,PREPARATION
9,3,11,2024-01-07T10:00:00+03:00,0,F,LOSE
10,1,12,2024-01-04T09:00:00+03:00,0,P,NEW
11,2,12,2024-01-11T09:00:00+03:00,0,P,PREPARATION
12,3,13,2024-01-05T09:00:00+03:00,0,F,APOLOGY
13,2,13,2024-01-06T09:00:00+03:00,0,P,EXECUTING
14,1,20,2024-01-04T09:00:00+03:00,1,P,C1:NEW
"""
BITRIX_DEALS = """
ID,TITLE,STAGE_ID,OPPORTUNITY,CURRENCY_ID,BEGINDATE,CLOSEDATE,SOURCE_ID
10,Roga,WON,150000,RUB,2024-01-02,2024-01-31,WEB
11,Kopyta,LOSE,90000,RUB,2024-01-03,2024-02-15,CALL
12,Romashka,PREPARATION,40000,RUB,2024-01-04,2024-03-01,WEB
13,Vasilek,EXECUTING,5000,RUB,2024-01-05,2024-03-01,CALL
14,Oduvanchik,NEW,1000,RUB,2024-01-05,2024-03-01,CALL
"""


def test_bitrix24_paths_outcomes_and_amounts(tmp_path):
    history = write(tmp_path / "history.csv", HISTORY)
    result = from_bitrix24(history, deals=write(tmp_path / "deals.csv", BITRIX_DEALS), category=0)
    assert paths(result.events) == {
        "10": ["NEW", "PREPARATION", "EXECUTING", "PREPARATION", "EXECUTING", "WON"],
        "11": ["NEW", "PREPARATION", "LOSE"],
        "12": ["NEW", "PREPARATION"],
        "13": ["EXECUTING"],  # closed as APOLOGY, then reopened: no creation row, outcome dropped
    }
    assert times(result.events, "10")[0] == "2024-01-02 06:00"  # +03:00 -> UTC
    assert result.funnel.stages == ("NEW", "PREPARATION", "EXECUTING")
    assert (result.funnel.won, result.funnel.lost) == (("WON",), ("LOSE", "APOLOGY"))
    assert set(result.events.loc[result.events["deal_id"] == "10", "amount"]) == {150000}
    assert result.events.loc[result.events["deal_id"] == "11", "close_date"].iloc[0] == pd.Timestamp("2024-02-15")
    notes = " | ".join(result.notes)
    assert "reopened" in notes and "no creation row" in notes and "in RUB" in notes and "no stage history" in notes
    assert "SOURCE_ID" in reads(result).attributes


def test_bitrix24_categories(tmp_path):
    history = write(tmp_path / "history.csv", HISTORY)
    with pytest.raises(FunnelDataError, match=r"several pipelines \(CATEGORY_ID\): 0 \(4 deals\), 1 \(1 deals\)"):
        from_bitrix24(history)
    one = from_bitrix24(history, category="1")
    assert paths(one.events) == {"20": ["C1:NEW"]} and one.funnel.won == ("C1:WON",)
    with pytest.raises(FunnelDataError, match="Pipelines in the history: 0"):
        from_bitrix24(history, category=7)


def test_bitrix24_errors_name_file_row_column(tmp_path):
    history = write(tmp_path / "history.csv", HISTORY)
    deals = write(tmp_path / "deals.csv", BITRIX_DEALS.replace("12,Romashka,PREPARATION", "12,Romashka,PREPAYMENT"))
    with pytest.raises(FunnelDataError) as error:
        from_bitrix24(history, deals=deals, category=0)
    assert (error.value.source, error.value.row, error.value.column, error.value.value) == (
        str(deals), 4, "STAGE_ID", "PREPAYMENT")
    assert "unknown stage id" in str(error.value)
    missing = write(tmp_path / "missing.csv", "\n".join(BITRIX_DEALS.strip().splitlines()[:-2]))  # no deal 13
    with pytest.raises(FunnelDataError) as error:
        from_bitrix24(history, deals=missing, category=0)
    assert (error.value.source, error.value.row, error.value.column, error.value.value) == (
        str(history), 13, "OWNER_ID", "13")
    mixed = write(tmp_path / "mixed.csv", BITRIX_DEALS.replace("40000,RUB", "400,USD"))
    with pytest.raises(FunnelDataError, match="several currencies"):
        from_bitrix24(history, deals=mixed, category=0)
    accounted = pd.read_csv(mixed, dtype=str).assign(OPPORTUNITY_ACCOUNT=["150000", "90000", "36000", "5000", "1"])
    result = from_bitrix24(history, deals=accounted, category=0)
    assert set(result.events.loc[result.events["deal_id"] == "12", "amount"]) == {36000}


# --------------------------------------------------------------------------- snapshots

SNAPSHOTS = """
Snapshot Date,Opportunity ID,Stage,Amount,Close Date,Region
2024-01-07,A,Lead,100,2024-02-01,EU
2024-01-07,B,Lead,200,2024-03-01,US
2024-01-14,A,Qualified,110,2024-02-01,EU
2024-01-14,B,Lead,200,2024-03-01,US
2024-01-21,A,Closed Won,120,2024-01-20,EU
2024-01-21,B,Qualified,210,2024-03-01,US
2024-01-21,C,Lead,50,2024-04-01,EU
2024-01-28,A,Closed Won,120,2024-01-20,EU
2024-01-28,B,Lead,220,2024-03-01,US
2024-01-28,D,Closed Lost,10,2024-01-25,US
"""


def test_snapshots_midpoint_dating(tmp_path):
    result = from_snapshots(write(tmp_path / "snapshots.csv", SNAPSHOTS))
    assert paths(result.events) == {"A": ["Lead", "Qualified", "Closed Won"], "B": ["Lead", "Qualified", "Lead"],
                                    "C": ["Lead"], "D": ["Closed Lost"]}
    # a date-only snapshot is the end of its day; entries at the midpoint between two snapshots
    assert times(result.events, "A") == ["2024-01-08 00:00", "2024-01-11 12:00", "2024-01-18 12:00"]
    assert times(result.events, "B") == ["2024-01-08 00:00", "2024-01-18 12:00", "2024-01-25 12:00"]
    assert times(result.events, "C") == ["2024-01-18 12:00"]
    assert result.funnel.stages == ("Lead", "Qualified")
    assert (result.funnel.won, result.funnel.lost) == (("Closed Won",), ("Closed Lost",))
    assert list(result.events.loc[result.events["deal_id"] == "B", "amount"]) == [200, 210, 220]
    assert result.events.loc[result.events["deal_id"] == "A", "close_date"].iloc[-1] == pd.Timestamp("2024-01-20")
    notes = " | ".join(result.notes)
    assert "± 3.5 days" in notes and "2 deal(s) were already in the first snapshot" in notes
    assert "1 deal(s) disappear" in notes  # C: kept open
    assert "Region" in reads(result).attributes


def test_snapshots_given_labels_and_errors(tmp_path):
    snapshots = write(tmp_path / "snapshots.csv", SNAPSHOTS)
    result = from_snapshots(snapshots, stages=["Lead", "Qualified", "Demo"], won=["Closed Won"], lost=["Closed Lost"])
    assert result.funnel.stages == ("Lead", "Qualified", "Demo")
    with pytest.raises(FunnelDataError) as error:
        from_snapshots(snapshots, stages=["Lead"], won=["Closed Won"], lost=["Closed Lost"])
    assert (error.value.row, error.value.column, error.value.value) == (4, "Stage", "Qualified")
    clash = write(tmp_path / "clash.csv", SNAPSHOTS + "2024-01-28,B,Qualified,220,2024-03-01,US")
    with pytest.raises(FunnelDataError, match="twice in one snapshot") as error:
        from_snapshots(clash)
    assert error.value.row == 12
    with pytest.raises(FunnelDataError, match="there is no column 'deal_id'"):
        from_snapshots(pd.read_csv(snapshots).drop(columns="Opportunity ID"))
    reopened = write(tmp_path / "reopened.csv", SNAPSHOTS + "2024-02-04,A,Qualified,120,2024-03-20,EU")
    result = from_snapshots(reopened)
    assert paths(result.events)["A"] == ["Lead", "Qualified"]  # the outcome was dropped
    assert any("reopened" in note for note in result.notes)


def weekly_snapshots(events: pd.DataFrame, first: pd.Timestamp, weeks: int) -> pd.DataFrame:
    """The pipeline at the end of every 7th day from ``first``: each deal's last event so far."""
    frames = []
    for k in range(weeks + 1):
        day = first + 7 * k * DAY
        shown = events[events["timestamp"] < day + DAY].groupby("deal_id", sort=False).tail(1)
        frames.append(shown.assign(snapshot_date=f"{day:%Y-%m-%d}"))
    return pd.concat(frames, ignore_index=True)[["snapshot_date", "deal_id", "stage", "amount", "segment"]]


def test_weekly_snapshots_recover_paths_and_times_in_stage():
    events, truth = generate(2000, seed=11)
    first = events["timestamp"].min().normalize() - DAY  # the day before the first deal
    weeks = int((events["timestamp"].max() - first) / (7 * DAY)) + 1
    snapshots = weekly_snapshots(events, first, weeks)
    cutoffs = np.array([first + (7 * k + 1) * DAY for k in range(weeks + 1)], dtype="datetime64[ns]")
    result = from_snapshots(snapshots)
    assert result.funnel.stages == tuple(truth["stages"])
    assert (result.funnel.won, result.funnel.lost) == ((truth["won"],), (truth["lost"],))
    reads(result)

    # the truth: each stay, and whether a snapshot saw it (entered before a cutoff, left at or after it)
    stays = events.assign(left=events.groupby("deal_id")["timestamp"].shift(-1).fillna(pd.Timestamp(cutoffs[-1])))
    seen_at = np.searchsorted(cutoffs, stays["timestamp"].to_numpy(), side="right")
    stays["seen"] = (seen_at < len(cutoffs)) & (cutoffs[np.minimum(seen_at, len(cutoffs) - 1)] <= stays["left"])
    unseen = stays[~stays["seen"]]
    visible = {}
    for deal, group in stays[stays["seen"]].groupby("deal_id"):
        stages = list(group["stage"])
        visible[deal] = [s for i, s in enumerate(stages) if i == 0 or s != stages[i - 1]]
    recovered = paths(result.events)
    assert recovered == visible  # every stay a snapshot saw, in order
    true_paths = paths(events)
    exact = [d for d in true_paths if recovered.get(d) == true_paths[d]]
    hidden_deals = unseen["deal_id"].nunique()
    assert len(exact) + hidden_deals == len(true_paths) == 2000  # the rest lost only stays no snapshot saw
    assert (len(unseen), hidden_deals) == (264, 261)  # stays entered and left between two snapshots
    assert len(unseen) < 0.05 * len(stays)

    # times in stage: each seen stay that is not merged with another, against its true length
    seen_count = stays[stays["seen"]].groupby("deal_id").size()
    merged = {d for d, n in seen_count.items() if len(visible[d]) < n}  # A, unseen B, A again: one stay
    truth_stays = stays[stays["seen"] & ~stays["deal_id"].isin(merged)].copy()
    got = result.events[~result.events["deal_id"].isin(merged)].copy()
    got["left"] = got.groupby("deal_id")["timestamp"].shift(-1).fillna(pd.Timestamp(cutoffs[-1]))
    truth_stays = truth_stays.sort_values(["deal_id", "timestamp"], kind="stable").reset_index(drop=True)
    got = got.sort_values(["deal_id", "timestamp"], kind="stable").reset_index(drop=True)
    assert (truth_stays["stage"] == got["stage"]).all()
    open_stays = ~truth_stays["stage"].isin([truth["won"], truth["lost"]])
    # deals already in the file's first snapshot (the one before is empty, so not in the file)
    truncated = truth_stays["timestamp"] < pd.Timestamp(cutoffs[1])
    assert f"{truncated.sum()} deal(s) were already in the first snapshot" in " | ".join(result.notes)
    check = open_stays & ~truncated
    error = ((got["left"] - got["timestamp"]) - (truth_stays["left"] - truth_stays["timestamp"]))[check] / DAY
    assert error.abs().max() <= 7  # every time in stage within a week
    entry_error = (got["timestamp"] - truth_stays["timestamp"])[~truncated] / DAY
    assert entry_error.abs().max() <= 3.5  # every entry within half a week
    completed = check & (truth_stays["left"] < pd.Timestamp(cutoffs[-1]))
    assert abs(error[completed].mean()) < 0.25  # unbiased
    assert 2.0 < error[completed].std() < 3.5  # about 7 / sqrt(6) = 2.9 days
