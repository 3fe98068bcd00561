"""``funnel`` and ``stages``: describe the log's funnel, or a saved model's stages."""

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

__all__ = ["funnel", "stages"]


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

    Example: funnelsim funnel crm.csv --stages Lead,Qualified,Proposal --won Won --lost Lost --segment-by region
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
