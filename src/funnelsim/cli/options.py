"""Every option more than one command takes, declared once, in the groups ``--help`` shows.

A command lists the ones it takes in its signature (``as_of: AsOf = None``), group by group:
reading the log, fitting, simulating, output; the default sits there, the name, checks, help
text and ``--help`` panel here. Options only one command has are declared with
that command. Choice options are Enums, so ``--help`` lists the choices and a bad value is a
usage error (exit 2) that names them; commands pass ``.value`` on to the library.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ..data.events import FunnelDataError

__all__ = [
    "FITTING", "SIMULATING", "OUTPUT",
    "Period", "Sojourn", "Sampler",
    "Events", "Table", "Stages", "Won", "Lost", "AsOf", "SegmentBy", "Dayfirst", "Decimal", "Columns", "HistoryDays",
    "Draws", "Tune", "Chains", "Seed", "Strict", "SojournFamily", "SamplerName", "TargetAccept", "ModelDir",
    "Horizon", "ReportPeriod", "DealValue", "NewDeals", "Target",
    "Json",
    "parse_columns", "parse_date",
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


class Sojourn(Enum):
    """The time-in-stage families the model knows."""

    lognormal = "lognormal"
    weibull = "weibull"


class Sampler(Enum):
    """The MCMC samplers a fit can run on."""

    nutpie = "nutpie"
    pymc = "pymc"
    numpyro = "numpyro"


# --------------------------------------------------------------------------- reading the log

Events = Annotated[Path | None, typer.Argument(
    metavar="EVENTS", help="Event log: a .csv or .parquet file (or read a database table with --table).",
    show_default=False)]
Table = Annotated[str | None, typer.Option(
    "--table", metavar="URL",
    help="Read the log from a database table instead of a file: 'postgres://user@host:5432/db?table=events', "
         "'duckdb:///path/crm.duckdb?table=events' (read-only), or any Ibis backend's URL with ?table=NAME "
         "(table=schema.NAME for another schema). Checks and statistics run in the database.",
    show_default=False)]
Stages = Annotated[str, typer.Option(
    "--stages", help="Open stages in funnel order, comma-separated: Lead,Qualified,Proposal.",
    show_default=False)]
Won = Annotated[str, typer.Option("--won", help="Label(s) meaning won, comma-separated.")]
Lost = Annotated[str, typer.Option(
    "--lost", help="Label(s) meaning lost, comma-separated (may be empty).")]
AsOf = Annotated[str | None, typer.Option(
    "--as-of", help="See the CRM as it was at the end of this day (YYYY-MM-DD); later events are hidden. "
                    "Default: the last event's day.", show_default=False)]
SegmentBy = Annotated[str | None, typer.Option(
    "--segment-by", help="Attribute column that splits deals into segments (region, source...).",
    show_default=False)]
Dayfirst = Annotated[bool, typer.Option(
    "--dayfirst", help="Text dates are day-first (31-01-2024).")]
Decimal = Annotated[str, typer.Option(
    "--decimal", help="Decimal mark of amounts: '.' or ',' (1234,50; with ',' a dot or space may group "
                      "thousands: 1.234,50).")]
Columns = Annotated[str | None, typer.Option(
    "--columns", help="Rename the log's columns: 'Opportunity=deal_id,Stage=stage,Date=timestamp'.",
    show_default=False)]
HistoryDays = Annotated[float | None, typer.Option(
    "--history-days", min=1, help="Learn conversion and time in stage only from stays that began in the last "
                                  "DAYS days before --as-of (a funnel that changes over time). Default: all history.",
    show_default=False)]

# --------------------------------------------------------------------------- fitting

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
SamplerName = Annotated[Sampler, typer.Option("--sampler", help="MCMC sampler.", rich_help_panel=FITTING)]
TargetAccept = Annotated[float, typer.Option(
    "--target-accept", min=0.5, max=0.999,
    help="The sampler's target acceptance rate: raise it (e.g. 0.95) when a fit reports divergent transitions; "
         "smaller steps, slower sampling.", rich_help_panel=FITTING)]
ModelDir = Annotated[Path | None, typer.Option(
    "--model", help="Use this saved model (funnelsim fit --out) instead of fitting; it must have been fitted on "
                    "this log with the same --as-of, --segment-by and --history-days.",
    show_default=False, rich_help_panel=FITTING)]

# --------------------------------------------------------------------------- simulating

Horizon = Annotated[int, typer.Option("--horizon", min=1, help="Days ahead to forecast.", rich_help_panel=SIMULATING)]
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


def parse_date(text: str, column: str):
    """An ISO date given to option ``column``, as a midnight timestamp."""
    import pandas as pd

    try:
        return pd.Timestamp(text.strip()).normalize()
    except (ValueError, TypeError):
        raise FunnelDataError(f"cannot read {text!r} as a date", column=column, value=text,
                              hint="Use ISO dates: 2024-03-31.") from None
