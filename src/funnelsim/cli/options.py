"""Every option more than one command takes, declared once, in the groups ``--help`` shows.

A command lists the ones it takes in its signature (``as_of: AsOf = None``), group by group:
reading the log, fitting, simulating, output; the default sits there, the name, checks, help
text and ``--help`` panel here. Options only one command has are declared with
that command. Choice options are Enums, so ``--help`` lists the choices and a bad value is a
usage error (exit 2) that names them; commands pass ``.value`` on to the library.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ..data.events import FunnelDataError

__all__ = [
    "FITTING", "SIMULATING", "OUTPUT",
    "Period", "Sojourn", "Sampler", "SegmentRow",
    "Events", "Table", "Stages", "Won", "Lost", "AsOf", "SegmentBy", "SegmentFrom", "Dayfirst", "Decimal", "Columns",
    "Encoding", "Sheet", "HistoryDays", "Drift", "DriftPeriod",
    "Draws", "Tune", "Chains", "Seed", "Strict", "SojournFamily", "SamplerName", "TargetAccept", "ModelDir",
    "Horizon", "ReportPeriod", "DealValue", "NewDeals", "Target",
    "Json", "Csv", "Xlsx", "png_file",
    "parse_columns", "parse_date", "parse_horizon", "horizon_days",
]

# The panels of --help, in this order: the options for reading the log share the first one,
# "Options", with --help (typer lists that panel first, whatever the order of the parameters).
FITTING = "Fitting"
SIMULATING = "Simulating"
OUTPUT = "Output"


class Period(Enum):
    """The periods a forecast reports revenue per."""

    day = "day"
    week = "week"
    month = "month"
    quarter = "quarter"


class Drift(Enum):
    """How the funnel may change over time: not at all, or over entry cohorts of a period."""

    none = "none"
    week = "week"
    month = "month"
    quarter = "quarter"

    @property
    def every(self) -> str | None:
        """The cohort period (None: a funnel that stays as it is)."""
        return None if self is Drift.none else self.value


class Sojourn(Enum):
    """The time-in-stage families the model knows."""

    lognormal = "lognormal"
    weibull = "weibull"


class Sampler(Enum):
    """The MCMC samplers a fit can run on."""

    nutpie = "nutpie"
    pymc = "pymc"
    numpyro = "numpyro"


class SegmentRow(Enum):
    """Which of a deal's rows its segment is read from."""

    first = "first"
    last = "last"


# --------------------------------------------------------------------------- reading the log

Events = Annotated[Path | None, typer.Argument(
    metavar="EVENTS", help="Event log: a .csv, .xlsx or .parquet file (or read a database table with --table).",
    show_default=False)]
Table = Annotated[str | None, typer.Option(
    "--table", metavar="URL",
    help="Read the log from a database table instead of a file: 'postgres://user@host:5432/db?table=events', "
         "'duckdb:///path/crm.duckdb?table=events' (read-only), or any Ibis backend's URL with ?table=NAME "
         "(table=schema.NAME for another schema). Checks and statistics run in the database.",
    show_default=False)]
Stages = Annotated[str, typer.Option(
    "--stages", help="Open stages in funnel order, comma-separated: Prospecting,Qualified,Proposal (`funnelsim inspect EVENTS` suggests them).",
    show_default=False)]
Won = Annotated[str, typer.Option("--won", help="Label(s) meaning won, comma-separated.")]
Lost = Annotated[str, typer.Option(
    "--lost", help="Label(s) meaning lost, comma-separated (may be empty).")]
AsOf = Annotated[str | None, typer.Option(
    "--as-of", help="See the CRM as it was at the end of this day (YYYY-MM-DD; 2025Q3 or 2025-09 mean the "
                    "period's last day); later events are hidden. Default: the last event's day.",
    show_default=False)]
SegmentBy = Annotated[str | None, typer.Option(
    "--segment-by", help="Attribute column that splits deals into segments (region, source...).",
    show_default=False)]
SegmentFrom = Annotated[SegmentRow, typer.Option(
    "--segment-from", help="Read a deal's --segment-by value from its first row, or from its latest row with a "
                           "value (for a CRM that fills the column later, e.g. only on won rows).")]
Dayfirst = Annotated[bool, typer.Option(
    "--dayfirst", help="Text dates are day-first (31-01-2024), in the log and in date options (--as-of 31/01/2024).")]
Decimal = Annotated[str, typer.Option(
    "--decimal", help="Decimal mark of amounts: '.' or ',' (1234,50; with ',' a dot or space may group "
                      "thousands: 1.234,50).")]
Columns = Annotated[str | None, typer.Option(
    "--columns", help="Rename the log's columns: 'Opportunity=deal_id,Stage=stage,Date=timestamp'.",
    show_default=False)]
Encoding = Annotated[str | None, typer.Option(
    "--encoding", help="Text encoding of a CSV log: latin-1, cp1252 (Excel on Windows), cp1251, utf-16... "
                       "Default: UTF-8 (with or without a byte-order mark); another is an error saying which to pass.",
    show_default=False)]
Sheet = Annotated[str | None, typer.Option(
    "--sheet", metavar="NAME|N", help="The sheet of a .xlsx log to read, by name or position (1 = the first). "
                                      "Default: the first sheet.", show_default=False)]
HistoryDays = Annotated[float | None, typer.Option(
    "--history-days", min=1, help="Learn conversion and time in stage only from stays that began in the last "
                                  "DAYS days before --as-of (a funnel that changes over time). Default: all history.",
    show_default=False)]

# --------------------------------------------------------------------------- fitting

DriftPeriod = Annotated[Drift | None, typer.Option(
    "--drift", help="Let conversion and time in stage drift over entry cohorts (the week, month or quarter a stay "
                    "begins in): a random walk per stage, so recent cohorts and the horizon carry the uncertainty a "
                    "changing funnel brings; the default, as rolling-origin backtests scored it better (README, "
                    "'Drift'). 'none': a funnel that stays as it is. A history under 3 periods is fitted without "
                    "drift, with a note. Default: month, or with --model the model's own.", show_default=False,
    rich_help_panel=FITTING)]

Draws = Annotated[int, typer.Option(
    "--draws", min=10, help="Posterior draws per chain when fitting.", rich_help_panel=FITTING)]
Tune = Annotated[int, typer.Option(
    "--tune", min=10, help="Tuning steps per chain when fitting.", rich_help_panel=FITTING)]
Chains = Annotated[int, typer.Option("--chains", min=1, help="Markov chains when fitting.", rich_help_panel=FITTING)]
Seed = Annotated[int, typer.Option(
    "--seed", help="Random seed: the same seed gives the same results.", rich_help_panel=FITTING)]
Strict = Annotated[bool, typer.Option(
    "--strict", help="Exit 3 and write nothing if the fit fails its diagnostics.", rich_help_panel=FITTING)]
SojournFamily = Annotated[Sojourn, typer.Option(
    "--sojourn", help="Time-in-stage family.", rich_help_panel=FITTING)]
Revival = Annotated[bool | None, typer.Option(
    "--revival/--no-revival", help="Let dormant deals revive: a stalled deal still closes, at a rate per stage "
                                   "fitted from the log, within 730 days of entering its stage (README, 'Dormant "
                                   "deals'). Old open deals then keep a small chance of closing instead of almost "
                                   "none. Default: the model's default.", show_default=False,
    rich_help_panel=FITTING)]
SamplerName = Annotated[Sampler, typer.Option("--sampler", help="MCMC sampler.", rich_help_panel=FITTING)]
TargetAccept = Annotated[float, typer.Option(
    "--target-accept", min=0.5, max=0.999,
    help="The sampler's target acceptance rate: raise it (e.g. 0.95) when a fit reports divergent transitions; "
         "smaller steps, slower sampling.", rich_help_panel=FITTING)]
ModelDir = Annotated[Path | None, typer.Option(
    "--model", help="Use this saved model (funnelsim fit --out) instead of fitting; it must have been fitted on "
                    "this log with the same --as-of, --segment-by, --history-days and --drift.",
    show_default=False, rich_help_panel=FITTING)]

# --------------------------------------------------------------------------- simulating

Horizon = Annotated[int, typer.Option(
    "--horizon", metavar="DAYS|quarter", parser=lambda text: parse_horizon(text),   # defined below
    help="Days ahead to forecast, or 'quarter': to the end of --as-of's quarter (from its last day: the whole "
         "next quarter).", rich_help_panel=SIMULATING)]
ReportPeriod = Annotated[Period, typer.Option("--period", help="Report revenue per period.", rich_help_panel=SIMULATING)]
DealValue = Annotated[float | None, typer.Option(
    "--deal-value", help="Amount (currency) for open deals with none, e.g. when the log has no amount column. "
                         "Default: drawn from the segment's won amounts.", show_default=False,
    rich_help_panel=SIMULATING)]
NewDeals = Annotated[bool, typer.Option(
    "--new-deals/--no-new-deals", help="Also simulate deals created during the horizon (in a stage, or already won), "
                                       "at the weekly rate of the last 26 weeks per segment, and report total "
                                       "revenue beside the open pipeline's.", rich_help_panel=SIMULATING)]
Target = Annotated[float | None, typer.Option(
    "--target", help="Revenue target (currency of the log): print the chance of reaching it.", show_default=False,
    rich_help_panel=SIMULATING)]

# --------------------------------------------------------------------------- output

Json = Annotated[Path | None, typer.Option(
    "--json", help="Also write the result as JSON to this path (written atomically).", show_default=False,
    rich_help_panel=OUTPUT)]
def _folder(path: Path | None) -> Path | None:
    if path is not None and path.exists() and not path.is_dir():
        raise typer.BadParameter(f"{path} is a file; give a folder (made if missing) for the CSV files.")
    return path


def _suffix(suffix: str):
    def check(path: Path | None) -> Path | None:
        if path is not None and path.suffix.lower() != suffix:
            raise typer.BadParameter(f"{path} does not end in {suffix}: the file written is a {suffix} file.")
        return path
    return check


# checked when the options are read, so a bad path fails before any fit
Csv = Annotated[Path | None, typer.Option(
    "--csv", metavar="DIR", callback=_folder, help="Also write each table of the result as a CSV in this folder (summary.csv, then "
                                 "periods, deals, stages, scenarios, origins... as the command has them; the same "
                                 "numbers as --json). Text from the log that a spreadsheet would run as a formula "
                                 "is written as text.", show_default=False, rich_help_panel=OUTPUT)]
Xlsx = Annotated[Path | None, typer.Option(
    "--xlsx", metavar="PATH", callback=_suffix(".xlsx"),
    help="Also write the tables of --csv as the sheets of one Excel workbook (.xlsx).", show_default=False, rich_help_panel=OUTPUT)]
png_file = _suffix(".png")   # the callback of each command's own --plot (their help differs)


# --------------------------------------------------------------------------- reading option text

def parse_columns(spec: str | None) -> dict[str, str] | None:
    """``--columns 'Opportunity=deal_id,Stage=stage'`` as {theirs: canonical}."""
    if not spec:
        return None
    mapping = {}
    for part in spec.split(","):
        theirs, sep, canonical = part.partition("=")
        if not sep or not theirs.strip() or not canonical.strip():
            raise FunnelDataError(f"cannot read --columns entry {part!r}",
                                  hint="Write it as theirs=canonical, e.g. 'Opportunity=deal_id'.")
        mapping[theirs.strip()] = canonical.strip()
    return mapping


def parse_horizon(text) -> int | str:
    """``--horizon``: a number of days (1 or more) or ``"quarter"`` (see :func:`horizon_days`)."""
    given = str(text).strip()
    if given.lower() == "quarter":
        return "quarter"
    if given.isdigit() and int(given) >= 1:
        return int(given)
    raise typer.BadParameter(f"{given!r} is neither a number of days (1 or more) nor 'quarter'.")


def horizon_days(horizon: int | str, as_of) -> int:
    """The days a ``--horizon`` covers after the end of ``as_of``: a number as given; ``"quarter"``
    up to the last day of the as-of's quarter (2024-08-15: 46 days, to 2024-09-30), or, from a
    quarter's last day, to the next quarter's last day (2024-09-30: 92 days, to 2024-12-31)."""
    if horizon != "quarter":
        return int(horizon)
    from ..data.spells import end_of_day

    first = end_of_day(as_of)                     # the horizon's first day
    last = first.to_period("Q").end_time.normalize()
    return (last - first).days + 1


# The forms a date option takes, besides YYYY-MM-DD: a named period stands for its last day
# (what an analyst means by "as of 2025Q3"); day-first dates only under --dayfirst.
_ISO = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_QUARTER = re.compile(r"(\d{4})-?Q([1-4])", re.IGNORECASE)
_MONTH = re.compile(r"(\d{4})-(\d{1,2})")
_DAYFIRST = re.compile(r"(\d{1,2})([./-])(\d{1,2})\2(\d{4})")
DATE_FORMS = "YYYY-MM-DD (2025-09-30), a quarter (2025Q3: its last day) or a month (2025-09: its last day)"


def parse_date(text: str, option: str = "--as-of", *, dayfirst: bool = False):
    """The day a date option (``--as-of``, ``--compare-to``, ``--start``...) names, as a
    midnight timestamp: an ISO date, a quarter (``2025Q3``) or month (``2025-09``) read as its
    last day, or with ``dayfirst`` a day-first date (``30/09/2025``, ``30.09.2025``). Any other
    form (``09/30/2025``, ``Sep 30 2025``, a time of day) is refused, never guessed."""
    import pandas as pd

    given = str(text).strip()
    forms = DATE_FORMS + (", or day-first: 30/09/2025" if dayfirst else
                          "; or pass --dayfirst to write day-first dates (30/09/2025)")

    def refuse(why: str) -> FunnelDataError:
        return FunnelDataError(f"cannot read {given!r} as a date{why}", source=f"option {option}",
                               hint=f"Write {forms}.")

    day = None
    if m := _ISO.fullmatch(given):
        year, month, day = (int(g) for g in m.groups())
    elif m := _QUARTER.fullmatch(given):
        year, month = int(m[1]), 3 * int(m[2])
    elif m := _MONTH.fullmatch(given):
        year, month = int(m[1]), int(m[2])
    elif dayfirst and (m := _DAYFIRST.fullmatch(given)):
        day, month, year = int(m[1]), int(m[3]), int(m[4])
    elif _DAYFIRST.fullmatch(given):
        raise refuse(": the day and the month could be either way round")
    else:
        raise refuse("")
    if not 1 <= month <= 12:
        raise refuse(f": there is no month {month}")
    if day is None:
        return pd.Period(year=year, month=month, freq="M").to_timestamp(how="end").normalize()
    try:
        return pd.Timestamp(year=year, month=month, day=day)
    except ValueError:
        raise refuse(f": {year}-{month:02d} has no day {day}") from None
