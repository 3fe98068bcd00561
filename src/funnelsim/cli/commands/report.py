"""``report``: the quarterly forecast report, one self-contained HTML file (and a PDF)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ...defaults import HORIZON_DAYS
from ...model.funnel_model import DEFAULT_DRAWS, DEFAULT_TUNE
from ..console import err, out, simulating, wrote
from ..inputs import model_for, read_snapshot
from ..options import (
    OUTPUT,
    SIMULATING,
    AsOf,
    Chains,
    Columns,
    Dayfirst,
    DealValue,
    Decimal,
    Draws,
    DriftPeriod,
    Encoding,
    Events,
    HistoryDays,
    Horizon,
    Json,
    Lost,
    ModelDir,
    NewDeals,
    Period,
    ReportPeriod,
    Revival,
    Seed,
    SegmentBy,
    SegmentFrom,
    SegmentRow,
    Sheet,
    Stages,
    Strict,
    Table,
    Target,
    Tune,
    Won,
    horizon_days,
    parse_date,
)

__all__ = ["report", "Paper"]


class Paper(Enum):
    """The page size of the printed PDF."""

    a4 = "a4"
    letter = "letter"


def report(
    stages: Stages,
    out_path: Annotated[Path, typer.Option(
        "--out", help="Where to write the report (.html, one self-contained file).", show_default=False,
        rich_help_panel=OUTPUT)],
    events: Events = None,
    table: Table = None,
    won: Won = "Won",
    lost: Lost = "Lost",
    as_of: AsOf = None,
    segment_by: SegmentBy = None,
    history_days: HistoryDays = None,
    drift: DriftPeriod = None,
    dayfirst: Dayfirst = False,
    decimal: Decimal = ".",
    columns: Columns = None,
    encoding: Encoding = None,
    sheet: Sheet = None,
    segment_from: SegmentFrom = SegmentRow.first,
    model_dir: ModelDir = None,
    draws: Draws = DEFAULT_DRAWS,
    tune: Tune = DEFAULT_TUNE,
    chains: Chains = 4,
    seed: Seed = 0,
    strict: Strict = False,
    revival: Revival = None,
    horizon: Horizon = HORIZON_DAYS,
    period: ReportPeriod = Period.month,
    target: Target = None,
    deal_value: DealValue = None,
    new_deals: NewDeals = True,
    compare_to: Annotated[str | None, typer.Option(
        "--compare-to", help="An earlier day (YYYY-MM-DD): add what changed since then (the pipeline waterfall, "
                             "how the forecast moved and the deals behind it).", show_default=False,
        rich_help_panel=SIMULATING)] = None,
    pdf: Annotated[Path | None, typer.Option(
        "--pdf", help="Also print the report to this PDF with headless Chromium.", show_default=False,
        rich_help_panel=OUTPUT)] = None,
    paper: Annotated[Paper, typer.Option("--paper", help="Page size of the PDF.", rich_help_panel=OUTPUT)] = Paper.a4,
    json: Json = None,
) -> None:
    """The quarterly forecast report as one self-contained HTML file (no network needed; prints
    on A4 and Letter): the revenue band, median and chance of reaching --target beside what is
    already won this quarter, the fan chart, revenue by period, the roll-up by segment, what
    changed since --compare-to, the stage table, where deals are lost, the top bottlenecks, the
    deals going dark, the top deals and the fit's diagnostics. --pdf prints it with headless
    Chromium; --json writes the forecast JSON with its segment roll-up.

    Example: funnelsim report crm.csv --stages Prospecting,Qualified,Proposal,Negotiation --won Won --lost Lost --as-of 2024-06-30 --horizon 90 --segment-by segment --target 500000 --compare-to 2024-05-31 --out report.html --pdf report.pdf
    """
    from ...report.html import find_browser, forecast_report

    browser = find_browser() if pdf else None          # a missing browser fails before the fit
    earlier = None if compare_to is None else parse_date(compare_to, "--compare-to", dayfirst=dayfirst)
    snapshot = read_snapshot(events, stages, won, lost, table=table, as_of=as_of, segment_by=segment_by,
                             history_days=history_days, drift=drift, model_dir=model_dir, dayfirst=dayfirst, decimal=decimal, columns=columns, encoding=encoding, sheet=sheet,
                             segment_from=segment_from.value)
    model = model_for(snapshot, model_dir, draws=draws, tune=tune, chains=chains, seed=seed, strict=strict,
                      revival=revival)
    horizon = horizon_days(horizon, snapshot.as_of)
    with simulating(f"Building the report of {len(snapshot.open_deals):,} open deals"):
        result = forecast_report(model, snapshot, horizon_days=horizon, target=target, compare_to=earlier,
                                 seed=seed, period=period.value, deal_value=deal_value, new_deals=new_deals)
    result.write_html(out_path)
    wrote(out_path)
    if json:
        result.write_json(json)
        wrote(json)
    if pdf:
        err.print(f"Printing the PDF with {browser}...", highlight=False)
        result.write_pdf(pdf, paper=paper.value, browser=browser)
        wrote(pdf)
    out.print(result.forecast.summary(target), highlight=False)
