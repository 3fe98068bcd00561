"""Date options read as meant: ISO days, named periods as their last day, day-first only under
--dayfirst, every other form refused naming the option; an as-of after the log is refused."""

import pandas as pd
import pytest

from funnelsim.cli.options import parse_date
from funnelsim.errors import FunnelDataError

from .conftest import write_csv
from .test_cli import FUNNEL, run


@pytest.mark.parametrize(("text", "dayfirst", "day"), [
    ("2025-09-30", False, "2025-09-30"),
    (" 2025-9-3 ", False, "2025-09-03"),
    ("2025Q3", False, "2025-09-30"),      # a quarter is its last day, not 1 July
    ("2025-q1", False, "2025-03-31"),
    ("2025-09", False, "2025-09-30"),     # a month is its last day
    ("2024-02", False, "2024-02-29"),
    ("01/02/2025", True, "2025-02-01"),   # --dayfirst: 1 February
    ("30.09.2025", True, "2025-09-30"),
    ("30-09-2025", True, "2025-09-30"),
    ("2025-09-30", True, "2025-09-30"),   # ISO stays ISO under --dayfirst
])
def test_date_forms_that_parse(text, dayfirst, day):
    assert parse_date(text, "--as-of", dayfirst=dayfirst) == pd.Timestamp(day)


@pytest.mark.parametrize(("text", "dayfirst", "why"), [
    ("30/09/2025", False, "either way round"),
    ("09/30/2025", False, "either way round"),
    ("01/02/2025", False, "either way round"),
    ("09/30/2025", True, "no month 30"),
    ("Sep 30 2025", False, ""),
    ("2025-09-30 10:00", False, ""),
    ("2024-02-30", False, "no day 30"),
    ("2025-13", False, "no month 13"),
    ("2025Q5", False, ""),
    ("yesterday", False, ""),
])
def test_date_forms_that_are_refused(text, dayfirst, why):
    with pytest.raises(FunnelDataError) as caught:
        parse_date(text, "--as-of", dayfirst=dayfirst)
    message = str(caught.value)
    assert message.startswith("option --as-of: ") and repr(text.strip()) in message
    assert why in message and "YYYY-MM-DD" in message and "2025Q3" in message
    assert "column" not in message


def test_as_of_on_the_command_line(tmp_path, small_log):
    path = write_csv(tmp_path, small_log)           # events 2024-01-01 .. 2024-03-01
    dayfirst = run("funnel", path, *FUNNEL, "--as-of", "15/02/2024", "--dayfirst")
    assert dayfirst.returncode == 0, dayfirst.stderr
    assert "Funnel as of 2024-02-15" in dayfirst.stdout
    month = run("funnel", path, *FUNNEL, "--as-of", "2024-02")
    assert month.returncode == 0 and "Funnel as of 2024-02-29" in month.stdout

    ambiguous = run("funnel", path, *FUNNEL, "--as-of", "02/15/2024")
    assert ambiguous.returncode == 2 and "Traceback" not in ambiguous.stderr
    assert "option --as-of" in ambiguous.stderr and "'02/15/2024'" in ambiguous.stderr
    assert "YYYY-MM-DD" in ambiguous.stderr and "column 'as_of'" not in ambiguous.stderr

    late = run("funnel", path, *FUNNEL, "--as-of", "2024Q2")
    assert late.returncode == 2 and "Traceback" not in late.stderr
    assert "option --as-of" in late.stderr and "'2024Q2' (2024-06-30)" in late.stderr
    assert "last event (2024-03-01)" in late.stderr and "--as-of 2024-03-01 or earlier" in late.stderr
    early = run("funnel", path, *FUNNEL, "--as-of", "2023-12")
    assert early.returncode == 2 and "option --as-of: '2023-12' (2023-12-31) is before" in early.stderr


def test_backtest_and_report_dates_share_the_parser(tmp_path, small_log):
    path = write_csv(tmp_path, small_log)
    backtest = run("backtest", path, *FUNNEL, "--every", "1M", "--start", "31/01/2024", "--end", "2024-02")
    assert backtest.returncode == 2 and "option --start: cannot read '31/01/2024'" in backtest.stderr
    report = run("report", path, *FUNNEL, "--out", tmp_path / "r.html", "--compare-to", "Jan 31 2024")
    assert report.returncode == 2 and "option --compare-to: cannot read 'Jan 31 2024'" in report.stderr
    assert not (tmp_path / "r.html").exists()
