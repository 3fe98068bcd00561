"""Messy CRM exports: random logs written as CSV either read as a valid EventLog or fail
with exactly one FunnelDataError that names the row and the column, never anything else;
the command line exits 0 or 2 and leaves no half-written file."""

import csv
import io
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funnelsim.data.events import FunnelDataError, FunnelDefinition, read_events

FUNNEL = FunnelDefinition(("Lead", "Qualified", "Proposal"), ("Won", "Closed Won"), ("Lost",))
CLI_FUNNEL = ["--stages", "Lead,Qualified,Proposal", "--won", "Won,Closed Won", "--lost", "Lost"]
HEADER = ["deal_id", "stage", "timestamp", "amount", "note"]
CHECKED = ("deal_id", "stage", "timestamp", "amount")
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

# label variants that must read as the funnel's label, and ones that must not
BENIGN_STAGES = {"Lead": [" lead", "LEAD"], "Qualified": ["qualified ", "\u00a0Qualified"],
                 "Proposal": ["PROPOSAL"], "Won": ["won", " WON "], "Closed Won": ["closed won"],
                 "Lost": ["LOST", "lost\t"]}
BAD_STAGES = ["Qualifed", "", "Неизвестно", "Won!", "Closed  Won", "🙂", "N/A"]
BAD_DEALS = ["", "N/A", "дело №7", "x" * 2000, 'a,b;c"d\te', "d1\nd2"]
BAD_TIMES = ["", "last tuesday", "2024-13-45", "31/31/2024", "0001-01-01", "9999-12-31", "2030-06-01",
             "2024-02-30", "2024-01-01T25:00", "2024-01-01 10:00+99:99", "١٢-٠١-٢٠٢٤", "2024-01-01 10:00 +02:00 x"]
BAD_AMOUNTS = ["-5", "12k", "1e400", "inf", "€100", "1,2,3", "1.2.3", "١٢٣", "--1", "9" * 400, "-0.5e3"]
NOTES = st.one_of(st.sampled_from(["", "EU", 'say "hi", then; go\tnow', "line1\nline2", "ünïcødé ✓", "x" * 5000]),
                  st.text(max_size=40))


def _amount_text(value: float, decimal: str, style: int) -> str:
    if decimal == ".":
        return [f"{value:.2f}", f"{value:g}", f"{value:.0f}"][style % 3]
    grouped = f"{value:,.2f}"  # 1,234.50
    return [f"{value:.2f}".replace(".", ","),
            grouped.replace(",", "\x00").replace(".", ",").replace("\x00", "."),  # 1.234,50
            grouped.replace(",", "\x00").replace(".", ",").replace("\x00", "\u00a0")][style % 3]


def _time_text(moment: pd.Timestamp, dayfirst: bool, style: int) -> str:
    if dayfirst:
        return [f"{moment:%d.%m.%Y}", f"{moment.day}.{moment.month}.{moment.year} {moment:%H:%M}",
                f"{moment:%d/%m/%Y %H:%M}", f"{moment:%d-%m-%Y}"][style % 4]
    local = moment + pd.Timedelta(hours=2)
    return [f"{moment:%Y-%m-%d}", f"{moment:%Y-%m-%dT%H:%M:%S}", f"{moment:%Y-%m-%dT%H:%M:%S}Z",
            f"{local:%Y-%m-%dT%H:%M:%S}+02:00", f"{moment - pd.Timedelta(hours=5):%Y-%m-%d %H:%M}-05:00"][style % 5]


@st.composite
def messy_logs(draw):
    """(csv text, number of data rows, dayfirst, decimal): deals with plausible histories,
    then shuffled, duplicated, relabelled and, unless the log is meant to be clean, with
    some cells replaced by bad values."""
    delimiter = draw(st.sampled_from([",", ";", "\t"]))
    decimal = draw(st.sampled_from([".", ","]))
    dayfirst = draw(st.booleans())
    rows = []
    for deal in range(draw(st.integers(1, 6))):
        moment = pd.Timestamp("2023-01-01") + pd.Timedelta(minutes=draw(st.integers(0, 900_000)))
        path = draw(st.lists(st.sampled_from(FUNNEL.stages), min_size=0, max_size=4))
        outcome = draw(st.sampled_from([None, *FUNNEL.won, *FUNNEL.lost]))
        path = path + [outcome] if outcome else path or ["Lead"]
        for stage in path:
            moment += pd.Timedelta(minutes=draw(st.integers(0, 60 * 24 * 40)))
            label = draw(st.sampled_from([stage, stage, *BENIGN_STAGES[stage]]))
            amount = draw(st.one_of(st.none(), st.floats(0, 1e7, allow_nan=False)))
            rows.append([f"d{deal}", label, _time_text(moment, dayfirst, draw(st.integers(0, 4))),
                         "" if amount is None else _amount_text(amount, decimal, draw(st.integers(0, 2))),
                         draw(NOTES)])
    rows += [list(rows[i]) for i in draw(st.lists(st.integers(0, len(rows) - 1), max_size=3))]  # duplicates
    random.Random(draw(st.integers(0, 2**16))).shuffle(rows)
    for _ in range(draw(st.sampled_from([0, 0, 1, 2, 4]))):  # bad cells
        row, column = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, 3))
        pool = [BAD_DEALS, BAD_STAGES, BAD_TIMES, BAD_AMOUNTS][column]
        rows[row][column] = draw(st.one_of(st.sampled_from(pool), st.text(max_size=12)))
    buffer = io.StringIO()
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    if newline == "\n":  # the writer quotes only the line terminator's characters: a bare \r would break rows
        rows = [[cell.replace("\r", "") for cell in row] for row in rows]
    csv.writer(buffer, delimiter=delimiter, lineterminator=newline).writerows([HEADER, *rows])
    return buffer.getvalue(), len(rows), dayfirst, decimal


def _write(folder: Path, text: str) -> Path:
    path = folder / "messy.csv"
    path.write_text(text, encoding="utf-8", newline="")
    return path


@settings(max_examples=80, **SETTINGS)
@given(messy_logs())
def test_messy_log_reads_or_fails_with_one_located_error(case):
    text, n_rows, dayfirst, decimal = case
    with tempfile.TemporaryDirectory() as folder:
        try:
            log = read_events(_write(Path(folder), text), FUNNEL, dayfirst=dayfirst, decimal=decimal)
        except FunnelDataError as error:
            assert error.column in CHECKED, str(error)
            assert error.row is not None and 2 <= error.row <= n_rows + 1, str(error)
            assert "messy.csv" in str(error)
            return
        frame = log.to_pandas()
    assert set(frame["stage"]) <= set(FUNNEL.labels)
    assert frame["timestamp"].notna().all() and frame["deal_id"].str.strip().ne("").all()
    amounts = frame["amount"].dropna()
    assert (amounts >= 0).all() and amounts.map(float).map(abs).lt(float("inf")).all()
    assert 1 <= len(frame) <= n_rows and frame["_row"].between(2, n_rows + 1).all()
    assert all(isinstance(note, str) for note in log.notes)


# --------------------------------------------------------------------------- the command line

def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "funnelsim.cli.app", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


@settings(max_examples=3, **SETTINGS)
@given(messy_logs())
def test_messy_log_through_the_cli_exits_0_or_2_cleanly(case):
    text, _, dayfirst, decimal = case
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        path = _write(folder, text)
        out = folder / "out.json"
        args = ["funnel", path, *CLI_FUNNEL, "--decimal", decimal, "--json", out] + (["--dayfirst"] if dayfirst else [])
        result = _cli(*args, cwd=folder)
        assert "Traceback" not in result.stderr + result.stdout
        if result.returncode == 0:
            assert json.loads(out.read_text())["stages"]
        else:
            assert result.returncode == 2, result.stderr
            assert "error:" in result.stderr
            assert sorted(p.name for p in folder.iterdir()) == ["messy.csv"]  # no out.json, no temp file


EUROPEAN = ("deal_id;stage;timestamp;amount\n"
            "a;Lead;31.01.2024;1.234,50\n"
            "a;Won;14.02.2024 10:30;1 234,50\n"
            "b;lead;01.02.2024;\n")


def test_cli_decimal_and_dayfirst_read_a_european_export(tmp_path):
    path = tmp_path / "eu.csv"
    path.write_text(EUROPEAN, encoding="utf-8")
    result = _cli("funnel", path, *CLI_FUNNEL, "--dayfirst", "--decimal", ",", "--json", tmp_path / "f.json",
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "f.json").read_text())
    assert data["as_of"] == "2024-02-14" and any("case or surrounding spaces" in n for n in data["notes"])
    result = _cli("funnel", path, *CLI_FUNNEL, "--dayfirst", cwd=tmp_path)  # decimal point by default
    assert result.returncode == 2 and "row 2, column 'amount'" in result.stderr and "--decimal ," in result.stderr


def test_cli_refuses_a_future_event_unless_as_of_is_given(tmp_path):
    path = tmp_path / "future.csv"
    path.write_text("deal_id,stage,timestamp\na,Lead,2024-01-01\nb,Lead,2199-12-31\n")
    result = _cli("funnel", path, *CLI_FUNNEL, cwd=tmp_path)
    assert result.returncode == 2 and "row 3, column 'timestamp'" in result.stderr and "--as-of" in result.stderr
    assert _cli("funnel", path, *CLI_FUNNEL, "--as-of", "2024-06-30", cwd=tmp_path).returncode == 0


def test_backtest_reads_with_the_decimal_mark(tmp_path):
    from funnelsim.sim.backtest import backtest

    path = tmp_path / "eu.csv"
    path.write_text(EUROPEAN, encoding="utf-8")
    with pytest.raises(FunnelDataError) as info:  # reading succeeds, so the early origin is the error
        backtest(path, FUNNEL, ["2023-12-31"], columns=None, dayfirst=True, decimal=",")
    assert info.value.column == "origins"
