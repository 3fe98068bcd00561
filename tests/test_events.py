"""Reading and validating event logs: each bad input names file, row, column, value."""

import ibis
import pandas as pd
import pytest

from funnelsim.events import FunnelDataError, FunnelDefinition, read_events

from .conftest import write_csv


def _error(source, funnel, **kwargs) -> FunnelDataError:
    with pytest.raises(FunnelDataError) as info:
        read_events(source, funnel, **kwargs)
    return info.value


def test_reads_csv_with_types_and_row_numbers(tmp_path, funnel, small_log):
    log = read_events(write_csv(tmp_path, small_log), funnel)
    frame = log.to_pandas()
    assert len(frame) == len(small_log)
    assert str(frame["timestamp"].dtype).startswith("datetime64")
    assert frame["amount"].dtype == "float64"
    assert log.attributes == ("region",)
    d4 = frame[frame.deal_id == "d4"].iloc[0]
    assert d4["timestamp"] == pd.Timestamp("2024-02-01 09:00")
    assert d4["_row"] == 11  # header is row 1, d4 is the 10th event


def test_same_log_from_csv_parquet_dataframe_and_ibis(tmp_path, funnel, small_log):
    csv = read_events(write_csv(tmp_path, small_log), funnel).to_pandas().drop(columns="_row")
    frame = small_log.assign(timestamp=pd.to_datetime(small_log.timestamp, format="mixed"))
    parquet_path = tmp_path / "events.parquet"
    frame.to_parquet(parquet_path)
    for source in (parquet_path, frame, ibis.memtable(frame)):
        other = read_events(source, funnel).to_pandas().drop(columns="_row")
        pd.testing.assert_frame_equal(csv, other, check_dtype=False)


def test_column_mapping_and_dayfirst(tmp_path, funnel):
    frame = pd.DataFrame({"Opportunity": ["a", "a"], "Stage": ["Lead", "Won"],
                          "Entered": ["02-03-2024", "5/4/2024 14:30"], "region": ["x", "x"]})
    log = read_events(write_csv(tmp_path, frame), funnel, dayfirst=True,
                      columns={"Opportunity": "deal_id", "Stage": "stage", "Entered": "timestamp"})
    times = log.to_pandas()["timestamp"].tolist()
    assert times == [pd.Timestamp("2024-03-02"), pd.Timestamp("2024-04-05 14:30")]
    error = _error(write_csv(tmp_path, frame), funnel,
                   columns={"Opportunity": "deal_id", "Stage": "stage", "Entered": "timestamp"})
    assert error.row == 2 and error.column == "timestamp" and "--dayfirst" in str(error)


def test_missing_file(tmp_path, funnel):
    error = _error(tmp_path / "nope.csv", funnel)
    assert "nope.csv" in str(error) and "not found" in str(error)


def test_empty_file_and_header_only(tmp_path, funnel):
    (tmp_path / "empty.csv").write_text("")
    assert "empty" in str(_error(tmp_path / "empty.csv", funnel))
    (tmp_path / "header.csv").write_text("deal_id,stage,timestamp\n")
    assert "no rows" in str(_error(tmp_path / "header.csv", funnel))


def test_missing_required_column_suggests(tmp_path, funnel, small_log):
    error = _error(write_csv(tmp_path, small_log.rename(columns={"timestamp": "timestamps"})), funnel)
    assert error.column is None and "'timestamp'" in str(error) and "Did you mean 'timestamps'" in str(error)


@pytest.mark.parametrize(
    ("column", "bad", "problem"),
    [("timestamp", "2024-13-45", "cannot read this as a date"),
     ("timestamp", "last tuesday", "cannot read this as a date"),
     ("amount", "-5", "negative"),
     ("amount", "12k", "not a number")],
)
def test_bad_values_name_row_column_value(tmp_path, funnel, small_log, column, bad, problem):
    frame = small_log.astype({"amount": "object"})
    frame.loc[4, column] = bad  # the 5th event: spreadsheet row 6
    error = _error(write_csv(tmp_path, frame), funnel)
    assert (error.row, error.column, str(error.value)) == (6, column, bad)
    assert problem in str(error) and "events.csv" in str(error)


def test_unknown_stage_suggests_closest(tmp_path, funnel, small_log):
    frame = small_log.copy()
    frame.loc[7, "stage"] = "Qualifed"
    error = _error(write_csv(tmp_path, frame), funnel)
    assert (error.row, error.column, error.value) == (9, "stage", "Qualifed")
    assert "Did you mean 'Qualified'" in str(error)


def test_event_after_terminal(tmp_path, funnel, small_log):
    extra = pd.DataFrame([("d1", "Proposal", "2024-03-01", 1.0, "EU")], columns=small_log.columns)
    error = _error(write_csv(tmp_path, pd.concat([small_log, extra])), funnel)
    assert error.row == 15 and "after it was won or lost" in str(error) and "d1" in str(error)


def test_two_terminal_events(tmp_path, funnel, small_log):
    extra = pd.DataFrame([("d3", "Lost", "2024-03-01", 1.0, "EU")], columns=small_log.columns)
    error = _error(write_csv(tmp_path, pd.concat([small_log, extra])), funnel)
    assert error.row == 15 and "second won/lost" in str(error)


def test_exact_duplicates_dropped_with_note(tmp_path, funnel, small_log):
    doubled = pd.concat([small_log, small_log.iloc[[0, 3]]])
    log = read_events(write_csv(tmp_path, doubled), funnel)
    assert len(log.to_pandas()) == len(small_log)
    assert log.notes == ["dropped 2 exact duplicate row(s) from " + str(tmp_path / "events.csv")]


def test_funnel_definition_from_strings():
    funnel = FunnelDefinition("A, B ,C", "Won,Closed Won", "Lost")
    assert funnel.stages == ("A", "B", "C") and funnel.won == ("Won", "Closed Won")
    with pytest.raises(FunnelDataError, match="appears twice"):
        FunnelDefinition("A,B", "B")


def test_corrupt_parquet_is_a_clear_error(tmp_path, funnel):
    (tmp_path / "bad.parquet").write_text("deal_id,stage\nnot,parquet\n")
    error = _error(tmp_path / "bad.parquet", funnel)
    assert "cannot read Parquet" in str(error) and "bad.parquet" in str(error)
