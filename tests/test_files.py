"""Files as they come: Excel workbooks, encodings other than UTF-8, and a deal's segment read
from its first or its last row."""

import codecs
import json

import pandas as pd
import pytest

from funnelsim.data.events import FunnelDataError, read_events
from funnelsim.data.snapshot import Snapshot
from funnelsim.report.funnel import funnel_table

from .conftest import write_csv
from .test_cli import FUNNEL, run

AS_OF = "2024-02-15"


def _brazil(small_log):
    """The hand-built log with a region that needs more than ASCII."""
    return small_log.assign(region=small_log.region.replace("US", "São Paulo"))


def _funnel_rows(source, funnel, **reading):
    snap = Snapshot(read_events(source, funnel, **reading), AS_OF, segment_by="region", every=None)
    return funnel_table(snap).to_dict()


def _workbook(path, sheets: dict[str, pd.DataFrame]):
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        for name, frame in sheets.items():
            frame.to_excel(writer, sheet_name=name, index=False)
    return path


def _typed(frame):
    """As Excel holds it: dates as date cells, amounts as numbers."""
    return frame.assign(timestamp=pd.to_datetime(frame.timestamp, format="ISO8601"))


# --------------------------------------------------------------------------- workbooks

def test_an_xlsx_log_gives_the_funnel_of_the_csv(tmp_path, funnel, small_log):
    frame = _brazil(small_log)
    expected = _funnel_rows(write_csv(tmp_path, frame), funnel)
    book = _workbook(tmp_path / "crm.xlsx", {"Events": _typed(frame)})
    assert _funnel_rows(book, funnel) == expected
    assert any(r["segment"] == "São Paulo" for r in expected["stages"])


def test_sheet_picks_the_sheet_by_name_or_position(tmp_path, funnel, small_log):
    cover = pd.DataFrame({"about": ["exported from the CRM"]})
    book = _workbook(tmp_path / "crm.xlsx", {"Cover": cover, "Events": _typed(small_log)})
    expected = _funnel_rows(write_csv(tmp_path, small_log), funnel)
    by_name = read_events(book, funnel, sheet="Events")
    assert by_name.source.endswith("crm.xlsx, sheet 'Events'")
    assert _funnel_rows(book, funnel, sheet="Events") == expected
    assert _funnel_rows(book, funnel, sheet=2) == expected
    with pytest.raises(FunnelDataError, match="Did you mean 'Events'") as wrong:
        read_events(book, funnel, sheet="Evnts")
    assert "option --sheet" in str(wrong.value) and "'Cover', 'Events'" in str(wrong.value)
    with pytest.raises(FunnelDataError, match="none of the columns deal_id") as first:
        read_events(book, funnel)          # the first sheet is not the log: say which to pick
    assert "--sheet" in str(first.value) and "'Events'" in str(first.value)


def test_the_first_sheet_by_default_with_a_note(tmp_path, funnel, small_log):
    book = _workbook(tmp_path / "crm.xlsx", {"Events": _typed(small_log), "Lookups": pd.DataFrame({"a": [1]})})
    log = read_events(book, funnel)
    assert any("read sheet 'Events', the first of 2 sheets" in n for n in log.notes)
    assert not read_events(book, funnel, sheet="Events").notes


def test_workbook_rows_are_numbered_as_excel_shows_them(tmp_path, funnel, small_log):
    frame = _typed(small_log).astype({"timestamp": object})
    frame.loc[5, "timestamp"] = "2024-31-01"             # Excel row 7 (header = row 1)
    blank = pd.DataFrame([[None] * len(frame.columns)], columns=frame.columns)
    frame = pd.concat([frame.iloc[:2], blank, frame.iloc[2:]], ignore_index=True)   # an empty row 4
    book = _workbook(tmp_path / "crm.xlsx", {"Events": frame})
    with pytest.raises(FunnelDataError) as error:
        read_events(book, funnel)
    assert (error.value.row, error.value.column, error.value.value) == (8, "timestamp", "2024-31-01")
    assert "crm.xlsx, sheet 'Events', row 8" in str(error.value)


def test_a_broken_or_old_workbook_is_a_clear_error(tmp_path, funnel):
    broken = tmp_path / "crm.xlsx"
    broken.write_bytes(b"not a zip file at all")
    with pytest.raises(FunnelDataError, match="cannot read this Excel workbook"):
        read_events(broken, funnel)
    old = tmp_path / "crm.xls"
    old.write_bytes(b"\xd0\xcf\x11\xe0 legacy")
    with pytest.raises(FunnelDataError, match=r"cannot read \.xls workbooks.*\.xlsx"):
        read_events(old, funnel)


# --------------------------------------------------------------------------- encodings

def test_a_latin1_csv_reads_with_encoding(tmp_path, funnel, small_log):
    frame = _brazil(small_log)
    expected = _funnel_rows(write_csv(tmp_path, frame), funnel)
    latin = tmp_path / "latin.csv"
    frame.to_csv(latin, index=False, encoding="latin-1")
    assert _funnel_rows(latin, funnel, encoding="latin-1") == expected
    assert _funnel_rows(latin, funnel, encoding="cp1252") == expected
    bom = tmp_path / "bom.csv"                       # Excel's "CSV UTF-8" starts with a byte-order mark
    bom.write_bytes(codecs.BOM_UTF8 + write_csv(tmp_path, frame).read_bytes())
    assert _funnel_rows(bom, funnel) == expected
    utf16 = tmp_path / "utf16.csv"                   # Excel's "Unicode text": UTF-16 with its mark, tabs
    frame.to_csv(utf16, index=False, sep="\t", encoding="utf-16")
    assert _funnel_rows(utf16, funnel) == expected


def test_a_latin1_csv_without_encoding_names_row_column_byte_and_the_fix(tmp_path, funnel, small_log):
    latin = tmp_path / "latin.csv"
    _brazil(small_log).to_csv(latin, index=False, encoding="latin-1")
    with pytest.raises(FunnelDataError) as error:
        read_events(latin, funnel)
    e = error.value
    assert (e.row, e.column, e.value) == (5, "region", "São Paulo")     # d2's first row
    text = str(e)
    assert "not UTF-8" in text and "byte 0xe3 at byte offset" in text and "--encoding latin-1" in text
    offset = int(text.split("byte offset ")[1].split(")")[0])
    assert latin.read_bytes()[offset] == 0xE3


def test_an_unknown_or_wrong_encoding_is_a_clear_error(tmp_path, funnel, small_log):
    latin = tmp_path / "latin.csv"
    _brazil(small_log).to_csv(latin, index=False, encoding="latin-1")
    with pytest.raises(FunnelDataError, match="option --encoding: unknown text encoding"):
        read_events(latin, funnel, encoding="latin-9x")
    with pytest.raises(FunnelDataError, match="not ascii text") as wrong:
        read_events(latin, funnel, encoding="ascii")
    assert wrong.value.row == 5 and wrong.value.column == "region"
    with pytest.raises(FunnelDataError, match="--sheet applies to Excel workbooks"):
        read_events(latin, funnel, encoding="latin-1", sheet="Events")
    with pytest.raises(FunnelDataError, match="--encoding .* applies to files"):
        read_events(small_log, funnel, encoding="latin-1")


# --------------------------------------------------------------------------- segment from first or last row

def _filled_later(small_log):
    """d2's region is blank on its first row and 'US' later (as Olist's business_segment is
    only on won rows); d1's changes from EU to APAC when it is qualified."""
    frame = small_log.copy()
    frame.loc[frame.deal_id == "d2", "region"] = [None, None, "US", "US", None]
    frame.loc[(frame.deal_id == "d1") & (frame.stage != "Lead"), "region"] = "APAC"
    return frame


def _segments(snap):
    return dict(snap.spells.to_pandas().groupby("deal_id")["segment"].first())


def test_segment_from_last_takes_the_latest_value_and_first_says_so(funnel, small_log):
    frame = _filled_later(small_log)
    first = Snapshot(read_events(frame, funnel), AS_OF, segment_by="region", every=None)
    assert _segments(first) == {"d1": "EU", "d2": "(blank)", "d4": "(blank)", "d5": "US"}
    assert first.spells.filled_later == 1
    assert any("1 deal(s) have no 'region' on their first row" in n and "--segment-from last" in n
               for n in first.notes)
    last = Snapshot(read_events(frame, funnel, segment_from="last"), AS_OF, segment_by="region", every=None)
    assert _segments(last) == {"d1": "APAC", "d2": "US", "d4": "(blank)", "d5": "US"}
    assert not any("segment-from" in n for n in last.notes)
    # only rows visible at the as-of count: before d1 reached Qualified, it is still EU
    early = Snapshot(read_events(frame, funnel, segment_from="last"), "2024-01-05", segment_by="region", every=None)
    assert _segments(early)["d1"] == "EU"
    # the open pipeline and won amounts name segments the same way
    assert set(last.open_deals["segment"]) <= set(_segments(last).values())
    assert "APAC" in set(last.amounts["segment"])
    with pytest.raises(FunnelDataError, match="first or its last row"):
        read_events(frame, funnel, segment_from="latest")


# --------------------------------------------------------------------------- the command line

def test_the_command_line_reads_workbooks_and_encodings(tmp_path, small_log):
    frame = _filled_later(_brazil(small_log))
    utf8 = tmp_path / "utf8.json"
    assert run("funnel", write_csv(tmp_path, frame), *FUNNEL, "--as-of", AS_OF, "--segment-by", "region",
               "--json", utf8).returncode == 0
    latin = tmp_path / "latin.csv"
    frame.to_csv(latin, index=False, encoding="latin-1")

    refused = run("funnel", latin, *FUNNEL, "--as-of", AS_OF)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr + refused.stdout
    assert "latin.csv, row" in refused.stderr and "--encoding latin-1" in refused.stderr

    read = tmp_path / "latin.json"
    result = run("funnel", latin, *FUNNEL, "--as-of", AS_OF, "--segment-by", "region", "--encoding", "latin-1",
                 "--json", read)
    assert result.returncode == 0, result.stderr
    assert json.loads(read.read_text()) == json.loads(utf8.read_text())
    assert "note: 1 deal(s) have no 'region' on their first row" in result.stderr

    book = _workbook(tmp_path / "crm.xlsx", {"Cover": pd.DataFrame({"a": [1]}), "Events": _typed(frame)})
    workbook = tmp_path / "book.json"
    last = run("funnel", book, *FUNNEL, "--as-of", AS_OF, "--segment-by", "region", "--sheet", "Events",
               "--segment-from", "last", "--json", workbook)
    assert last.returncode == 0, last.stderr
    segments = {r["segment"] for r in json.loads(workbook.read_text())["stages"]}
    assert {"APAC", "São Paulo"} <= segments and "segment-from" not in last.stderr


def test_every_command_that_reads_a_log_takes_the_file_options():
    import typer.main

    from funnelsim.cli import app

    commands = typer.main.get_command(app).commands
    readers = ("funnel", "fit", "forecast", "whatif", "bottlenecks", "backtest", "report")
    declared = {}
    for name in readers:
        params = {p.name: p for p in commands[name].params}
        for option in ("encoding", "sheet", "segment_from"):
            p = params[option]
            declared.setdefault(option, set()).add((tuple(p.opts), getattr(p.default, "value", p.default), p.help))
    assert {option: len(found) for option, found in declared.items()} == {"encoding": 1, "sheet": 1,
                                                                            "segment_from": 1}
