"""``convert``: a CRM export in, the canonical event log out, and the options that read it."""

from __future__ import annotations

import shlex
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ...errors import FunnelDataError
from ..console import err, out, wrote
from ..options import Encoding

__all__ = ["convert", "Format"]


class Format(Enum):
    """The exports ``convert`` reads."""

    salesforce = "salesforce"
    hubspot = "hubspot"
    pipedrive = "pipedrive"
    bitrix24 = "bitrix24"
    snapshots = "snapshots"
    wide = "wide"


# the options each format takes (besides INPUT and --out)
TAKES = {
    Format.salesforce: {"opportunities", "stage_table"},
    Format.hubspot: {"pipeline"},
    Format.pipedrive: {"deals"},
    Format.bitrix24: {"deals"},
    Format.snapshots: set(),
    Format.wide: {"stage_dates", "outcome", "outcome_date", "won", "lost", "deal_id", "amount", "close_date"},
}

def convert(
    format: Annotated[Format, typer.Argument(metavar="FORMAT", help="The export's format.", show_default=False)],
    input: Annotated[Path, typer.Argument(
        metavar="INPUT", help="The export: salesforce OpportunityHistory, hubspot deals, pipedrive deal flow, "
                              "bitrix24 stage history, snapshots, or the wide sheet (.csv or .parquet).",
        show_default=False)],
    out_path: Annotated[Path, typer.Option(
        "--out", help="Write the event log here: a .csv or .parquet file (written atomically).",
        show_default=False)],
    opportunities: Annotated[Path | None, typer.Option(
        "--opportunities", help="salesforce: the Opportunity export (Id, IsClosed, IsWon, attributes such as "
                                "LeadSource, Type, OwnerId).", show_default=False)] = None,
    stage_table: Annotated[Path | None, typer.Option(
        "--stage-table", help="salesforce: the OpportunityStage export (ApiName, MasterLabel, SortOrder, IsClosed, "
                              "IsWon): stage order and outcomes. Without it they are inferred (a note says how).",
        show_default=False)] = None,
    pipeline: Annotated[str | None, typer.Option(
        "--pipeline", help="hubspot: the pipeline to convert (required when the export holds several).",
        show_default=False)] = None,
    deals: Annotated[Path | None, typer.Option(
        "--deals", help="pipedrive (required), bitrix24: the deals export.", show_default=False)] = None,
    stage_dates: Annotated[str | None, typer.Option(
        "--stage-dates", help="wide: open stages in funnel order with their date columns, 'Lead=lead_date,"
                              "Qualified=qualified_date'; may add Won=won_date,Lost=lost_date.",
        show_default=False)] = None,
    outcome: Annotated[str | None, typer.Option(
        "--outcome", help="wide: the column holding Won / Lost (blank or 'open': still open).",
        show_default=False)] = None,
    outcome_date: Annotated[str | None, typer.Option(
        "--outcome-date", help="wide: the column holding the date of the outcome in --outcome.",
        show_default=False)] = None,
    won: Annotated[str | None, typer.Option(
        "--won", help="wide: label(s) meaning won, comma-separated. Default: Won.", show_default=False)] = None,
    lost: Annotated[str | None, typer.Option(
        "--lost", help="wide: label(s) meaning lost, comma-separated. Default: Lost.", show_default=False)] = None,
    deal_id: Annotated[str | None, typer.Option(
        "--deal-id", help="wide: the deal id column. Default: deal_id.", show_default=False)] = None,
    amount: Annotated[str | None, typer.Option(
        "--amount", help="wide: the amount column. Default: amount, if present.", show_default=False)] = None,
    close_date: Annotated[str | None, typer.Option(
        "--close-date", help="wide: the expected close date column (optional).", show_default=False)] = None,
    encoding: Encoding = None,
) -> None:
    """Convert a CRM export to funnelsim's event log, and print the --stages/--won/--lost
    options that read it. The CRM's stage labels are kept, its expected close date becomes a
    close_date column, and deal attributes become columns usable with --segment-by. The notes
    say what was dropped, merged, inferred or cannot be known from the export.

    Examples:

      funnelsim convert salesforce OpportunityHistory.csv --opportunities Opportunity.csv --stage-table OpportunityStage.csv --out events.parquet

      funnelsim convert hubspot deals.csv --pipeline 'Sales Pipeline' --out events.csv

      funnelsim convert wide deals.csv --stage-dates 'Lead=lead_date,Demo=demo_date' --outcome status --outcome-date closed_on --out events.csv
    """
    import funnelsim.adapters as adapters

    given = {"opportunities": opportunities, "stage_table": stage_table, "pipeline": pipeline, "deals": deals,
             "stage_dates": stage_dates, "outcome": outcome, "outcome_date": outcome_date, "won": won,
             "lost": lost, "deal_id": deal_id, "amount": amount, "close_date": close_date}
    stray = [key for key, value in given.items() if value is not None and key not in TAKES[format]]
    if stray:
        flag = "--" + stray[0].replace("_", "-")
        takers = [f.value for f, keys in TAKES.items() if stray[0] in keys]
        raise FunnelDataError(f"{flag} does not apply to {format.value} exports", column=flag,
                              hint=f"It is an option of: {', '.join(takers)}.")
    if out_path.suffix.lower() not in (".csv", ".parquet"):
        raise FunnelDataError("the output must be a .csv or .parquet file", source=str(out_path),
                              hint="Name it events.csv or events.parquet.")
    try:
        convert_with = getattr(adapters, f"from_{format.value}")
    except (ImportError, AttributeError):
        raise FunnelDataError(f"the {format.value} converter is not available in this version of funnelsim",
                              hint="Convert the export to the event log yourself (deal_id, stage, timestamp, "
                                   "amount), or use another format.") from None
    if format is Format.salesforce:
        converted = convert_with(input, opportunities=opportunities, stage_table=stage_table, encoding=encoding)
    elif format is Format.hubspot:
        converted = convert_with(input, pipeline=pipeline, encoding=encoding)
    elif format is Format.pipedrive:
        if deals is None:
            raise FunnelDataError("pipedrive needs the deals export", column="--deals",
                                  hint="Pass --deals DEALS.csv (Deal - ID, Deal - Stage, Deal - Status, ...).")
        converted = convert_with(input, deals=deals, encoding=encoding)
    elif format is Format.bitrix24:
        converted = convert_with(input, deals=deals, encoding=encoding)
    elif format is Format.snapshots:
        converted = convert_with(input, encoding=encoding)
    else:
        if not stage_dates:
            raise FunnelDataError("wide needs the stages and their date columns", column="--stage-dates",
                                  hint="Pass --stage-dates 'Lead=lead_date,Qualified=qualified_date,...'.")
        options = {key: given[key] for key in ("outcome", "outcome_date", "won", "lost", "deal_id", "amount",
                                               "close_date") if given[key] is not None}
        converted = convert_with(input, stage_dates=stage_dates, encoding=encoding, **options)
    for note in converted.notes:
        err.print(f"note: {note}", highlight=False, soft_wrap=True)
    converted.write(out_path)
    deals_count = converted.events["deal_id"].nunique()
    wrote(f"{out_path} ({len(converted.events)} events, {deals_count} deals)")
    out.print(f"funnelsim funnel {shlex.quote(str(out_path))} {converted.options()}", highlight=False,
              soft_wrap=True, markup=False)
