"""``inspect``, ``funnel`` and ``stages``: a first look at a log, the log's funnel, or a saved
model's stages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..console import out, write_outputs, wrote
from ..inputs import print_losses, read_snapshot
from ..options import (
    AsOf,
    Columns,
    Csv,
    Dayfirst,
    Decimal,
    Encoding,
    Events,
    Json,
    Lost,
    SegmentBy,
    SegmentFrom,
    SegmentRow,
    Sheet,
    Stages,
    Table,
    Won,
    Xlsx,
)

__all__ = ["inspect", "funnel", "stages"]


def inspect(
    events: Events = None,
    table: Table = None,
    dayfirst: Dayfirst = False,
    columns: Columns = None,
    encoding: Encoding = None,
    sheet: Sheet = None,
    json: Json = None,
) -> None:
    """A first look at an event log, before naming its stages: its columns (rows filled,
    distinct values, the most frequent ones), the days it covers, every stage label with its
    rows and deals in the order deals first enter them, and the --stages, --won and --lost
    options that would read it (guessed from the names and that order: check them), with
    the columns --segment-by could split by.

    Example: funnelsim inspect crm.csv
    """
    from ..._io import json_safe, write_json
    from ...data.overview import overview
    from ...report.render import overview_rich
    from ..console import err, reading
    from ..inputs import event_source
    from ..options import parse_columns

    with reading():
        found = overview(event_source(events, table), columns=parse_columns(columns), dayfirst=dayfirst,
                         encoding=encoding, sheet=sheet)
    span = "no readable timestamp" if found.first_event is None else \
        f"events from {found.first_event.date()} to {found.last_event.date()}"
    out.print(f"{found.source}: {found.rows:,} rows, {found.deals:,} deals, {span}", highlight=False, markup=False)
    if found.unreadable_timestamps:
        err.print(f"note: {found.unreadable_timestamps:,} row(s) have a timestamp that does not read as a date"
                  + ("" if dayfirst else " (day-first dates such as 31/01/2024 need --dayfirst)"), highlight=False)
    for part in overview_rich(found):
        out.print(part)
    suggested = found.suggested
    if not suggested["won"]:
        err.print("note: no label reads as won by its name: name the one that means a won deal with --won.",
                  highlight=False)
    if not suggested["lost"]:
        err.print('note: no label reads as lost by its name: pass the one that means lost with --lost, or --lost "" '
                  "when deals are never marked lost (they stay open or go dark).", highlight=False)
    options = found.options().replace('--lost ...', '--lost ""')
    out.print(f"Suggested options (check the stage order): {options}", highlight=False, markup=False, soft_wrap=True)
    if json:
        write_json(json, json_safe(found.to_dict()))
        wrote(json)


def funnel(
    stages: Stages,
    events: Events = None,
    table: Table = None,
    won: Won = "Won",
    lost: Lost = "Lost",
    as_of: AsOf = None,
    segment_by: SegmentBy = None,
    dayfirst: Dayfirst = False,
    decimal: Decimal = ".",
    columns: Columns = None,
    encoding: Encoding = None,
    sheet: Sheet = None,
    segment_from: SegmentFrom = SegmentRow.first,
    json: Json = None,
) -> None:
    """Funnel table: per stage, how many deals entered, advanced, skipped ahead, went back,
    were won, lost or are still open; stage conversion and conversion from the top of the
    funnel (naive and censoring-correct, so open deals are not counted as lost); median days
    in stage (Kaplan-Meier); and open deals older than 90% of those that advanced
    (going-dark candidates).

    Example: funnelsim funnel crm.csv --stages Prospecting,Qualified,Proposal,Negotiation --won Won --lost Lost --segment-by segment
    """
    from ...report.funnel import funnel_table

    snapshot = read_snapshot(events, stages, won, lost, table=table, as_of=as_of, segment_by=segment_by,
                             dayfirst=dayfirst, decimal=decimal, columns=columns, encoding=encoding, sheet=sheet,
                             segment_from=segment_from.value)
    table = funnel_table(snapshot)
    out.print(table)
    if json:
        table.to_json(json)
        wrote(json)


def stages(
    model_dir: Annotated[Path, typer.Argument(metavar="MODEL", help="A folder written by funnelsim fit.",
                                              show_default=False)],
    json: Json = None,
    csv: Csv = None,
    xlsx: Xlsx = None,
) -> None:
    """Print a saved model's stage table: P(advance), P(lost), P(stall), P(win from stage
    entry), median days in stage and expected days to close, each with a 90% interval, plus
    where deals are lost and the fit's diagnostics.

    Example: funnelsim stages models/crm --json stages.json
    """
    from ...model.funnel_model import FunnelModel
    from ...report.render import diagnostics_panel, stage_table_rich

    model = FunnelModel.load(model_dir)
    out.print(stage_table_rich(model.stage_table()))
    print_losses(model)
    out.print(diagnostics_panel(model.diagnostics))
    if json or csv or xlsx:
        write_outputs(model.to_dict(), json=json, csv=csv, xlsx=xlsx)
