"""Reading and validating event logs: each bad input names file, row, column, value."""

import ibis
import pandas as pd
import pytest

from funnelsim.data.events import FunnelDataError, FunnelDefinition, read_events

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


# --------------------------------------------------------------------------- messy exports

def _lines(tmp_path, text, name="events.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("sep", [";", "\t"])
def test_delimiter_is_detected_and_quoted_delimiters_kept(tmp_path, funnel, small_log, sep):
    frame = small_log.assign(region=small_log.region.replace("EU", f"EU{sep} west,north"))
    expected = read_events(write_csv(tmp_path, frame), funnel).to_pandas()
    path = tmp_path / "other.csv"
    frame.to_csv(path, index=False, sep=sep)
    assert f'"EU{sep} west,north"' in path.read_text()  # the delimiter sits inside a quoted field
    pd.testing.assert_frame_equal(read_events(path, funnel).to_pandas(), expected)


def test_ragged_row_names_its_row_and_the_delimiter(tmp_path, funnel):
    path = _lines(tmp_path, "deal_id;stage;timestamp\na;Lead;2024-01-01\nb;Lead;2024-01-02;extra\n")
    error = _error(path, funnel)
    assert error.row == 3 and "semicolon" in str(error)


def test_decimal_comma_with_thousands_separators(tmp_path, funnel):
    amounts = ["1234,50", "1.234,50", "1 234,5", "\u00a01\u00a0234,50", "7", "", "-0,0"]
    rows = "".join(f"d{i};Lead;2024-01-0{i + 1};{a}\n" for i, a in enumerate(amounts))
    path = _lines(tmp_path, "deal_id;stage;timestamp;amount\n" + rows)
    got = read_events(path, funnel, decimal=",").to_pandas()["amount"].tolist()
    assert got[:5] == [1234.5] * 4 + [7.0] and pd.isna(got[5]) and got[6] == 0
    error = _error(path, funnel)  # the default decimal point
    assert (error.row, error.column, error.value) == (2, "amount", "1234,50") and "--decimal ," in str(error)


@pytest.mark.parametrize("bad", ["1234.50", "1.23,4", "12 34,5", "1,234.50", "inf", "12,5 EUR"])
def test_decimal_comma_refuses_a_stray_point(tmp_path, funnel, bad):
    path = _lines(tmp_path, f"deal_id;stage;timestamp;amount\na;Lead;2024-01-01;1,5\na;Won;2024-01-02;{bad}\n")
    error = _error(path, funnel, decimal=",")
    assert (error.row, error.column, error.value) == (3, "amount", bad) and "not a number" in str(error)


def test_decimal_must_be_point_or_comma(funnel, small_log):
    assert _error(small_log, funnel, decimal=";").column == "decimal"


@pytest.mark.parametrize("bad", ["1e400", "inf", "-inf"])
def test_non_finite_amounts_are_errors(tmp_path, funnel, small_log, bad):
    frame = small_log.astype({"amount": "object"})
    frame.loc[4, "amount"] = bad
    error = _error(write_csv(tmp_path, frame), funnel)
    assert (error.row, error.column, error.value) == (6, "amount", bad)
    numeric = small_log.assign(amount=small_log.amount.where(small_log.index != 4, float(bad)))
    assert _error(numeric, funnel).row == 5 and "finite" in str(_error(numeric, funnel))


def test_dayfirst_reads_dotted_dates(tmp_path, funnel):
    path = _lines(tmp_path, "deal_id;stage;timestamp\na;Lead;31.01.2024\na;Qualified;1.2.2024\n"
                            "a;Won;01.03.2024 14:05\n")
    times = read_events(path, funnel, dayfirst=True).to_pandas()["timestamp"].tolist()
    assert times == [pd.Timestamp("2024-01-31"), pd.Timestamp("2024-02-01"), pd.Timestamp("2024-03-01 14:05")]
    error = _error(path, funnel)
    assert (error.row, error.column, error.value) == (2, "timestamp", "31.01.2024") and "31.03.2024" in str(error)


def test_stage_labels_match_ignoring_case_and_spaces_with_one_note(tmp_path, funnel, small_log):
    messy = small_log.assign(stage=small_log.stage.replace({"Qualified": " qualified ", "Won": "WON"}))
    messy.loc[0, "stage"] = "lead\u00a0"
    log = read_events(write_csv(tmp_path, messy), funnel)
    pd.testing.assert_frame_equal(log.to_pandas(), read_events(write_csv(tmp_path, small_log, "clean.csv"),
                                                               funnel).to_pandas())
    assert log.notes == ["6 row(s) had a stage label differing from the funnel's only by case or surrounding "
                         "spaces; read as the funnel's label"]
    assert read_events(small_log, funnel).notes == []


def test_labels_differing_only_by_case_are_refused():
    with pytest.raises(FunnelDataError, match="'Won' and 'won' differ only by case"):
        FunnelDefinition("Lead", "Won", "won")
    with pytest.raises(FunnelDataError, match="differ only by case"):
        FunnelDefinition(("Lead", " lead"), ("Won",))


def test_future_event_is_not_the_default_as_of(monkeypatch, funnel, small_log):
    from funnelsim.data import events
    from funnelsim.data.spells import to_spells

    log = read_events(small_log, funnel)  # its last event is on 2024-03-01, row 14 of a sheet
    monkeypatch.setattr(events, "_today", lambda: pd.Timestamp("2024-02-29"))
    with pytest.raises(FunnelDataError) as info:
        to_spells(log)
    error = info.value
    assert (error.row, error.column, error.value) == (13, "timestamp", "2024-03-01 00:00:00")
    assert "after today (2024-02-29)" in str(error) and "--as-of" in str(error) and "DataFrame" in str(error)
    assert to_spells(log, as_of="2024-02-15").as_of == pd.Timestamp("2024-02-15")  # hidden: no error
    monkeypatch.setattr(events, "_today", lambda: pd.Timestamp("2024-03-01"))
    assert to_spells(log).as_of == pd.Timestamp("2024-03-01")  # an event today is fine


def test_utc_offsets_are_converted_to_utc_with_a_note(tmp_path, funnel):
    path = _lines(tmp_path, "deal_id,stage,timestamp\na,Lead,2024-01-01T10:00:00+02:00\na,Won,2024-01-02T10:00Z\n"
                            "b,Lead,2024-01-01 10:00:00-05:00\nc,Lead,2024-01-01T23:30+0530\n")
    log = read_events(path, funnel)
    assert log.to_pandas()["timestamp"].tolist() == [pd.Timestamp(t) for t in (
        "2024-01-01 08:00", "2024-01-02 10:00", "2024-01-01 15:00", "2024-01-01 18:00")]
    assert log.notes == ["timestamps carried UTC offsets (+02:00, +0530, -05:00, Z); converted to UTC"]
    path = _lines(tmp_path, "deal_id,stage,timestamp\na,Lead,2024-01-01T10:00:00+02:00\nb,Lead,2024-01-01 10:00\n")
    assert read_events(path, funnel).notes == ["timestamps carried UTC offsets (+02:00); converted to UTC; "
                                               "1 timestamp(s) without an offset were kept as written (taken as UTC)"]


@pytest.mark.parametrize("bad", ["2024-01-01 10:00+99:99", "2024-01-01 10:00+15", "2024-01-01 10:00-05:60"])
def test_impossible_offsets_are_errors(tmp_path, funnel, bad):
    error = _error(_lines(tmp_path, f"deal_id,stage,timestamp\na,Lead,2024-01-01\na,Won,{bad}\n"), funnel)
    assert (error.row, error.column, error.value) == (3, "timestamp", bad)


def test_zone_aware_column_becomes_utc_with_a_note(funnel, small_log):
    local = pd.to_datetime(small_log.timestamp, format="mixed").dt.tz_localize("Europe/Berlin")
    log = read_events(small_log.assign(timestamp=local), funnel)
    d4 = log.to_pandas().query("deal_id == 'd4'").iloc[0]
    assert d4["timestamp"] == pd.Timestamp("2024-02-01 08:00")  # 09:00 in Berlin in winter
    assert log.notes == ["timestamps were in time zone Europe/Berlin; converted to UTC"]


def test_implausible_years_are_errors(tmp_path, funnel, small_log):
    for bad in ("0001-01-01", "9999-12-31"):
        frame = small_log.copy()
        frame.loc[4, "timestamp"] = bad
        error = _error(write_csv(tmp_path, frame), funnel)
        assert (error.row, error.column, error.value) == (6, "timestamp", bad) and "year" in str(error)


def test_dataframe_with_a_mixed_type_column(funnel, small_log):
    frame = small_log.astype({"amount": "object"})
    frame.loc[4, "amount"] = "12k"
    error = _error(frame, funnel)
    assert (error.row, error.column, error.value) == (5, "amount", "12k")


def test_non_utf8_file_names_its_row(tmp_path, funnel):
    path = tmp_path / "cp1251.csv"
    path.write_bytes("deal_id;stage;timestamp\na;Lead;2024-01-01\nб;Lead;2024-01-02\n".encode("cp1251"))
    error = _error(path, funnel)
    assert error.row == 3 and "UTF-8" in str(error)


def test_only_an_empty_cell_is_missing_but_na_amounts_are_blank(tmp_path, funnel):
    path = _lines(tmp_path, "deal_id,stage,timestamp,amount,region\nNA,Lead,2024-01-01,#N/A,NA\n"
                            "NA,Won,2024-01-02,nan,null\nb,Lead,2024-01-03,,\n")
    frame = read_events(path, funnel).to_pandas()
    assert frame["deal_id"].tolist() == ["NA", "NA", "b"] and frame["amount"].isna().all()
    assert frame["region"].tolist()[:2] == ["NA", "null"] and pd.isna(frame["region"].iloc[2])
    error = _error(_lines(tmp_path, "deal_id,stage,timestamp\na,Lead,N/A\n", "na.csv"), funnel)
    assert (error.row, error.column, error.value) == (2, "timestamp", "N/A")
