"""``backtest``: replay history at each origin, fit, forecast and score against what happened."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ...data.events import FunnelDataError
from ...defaults import HORIZON_DAYS
from ...model.funnel_model import DEFAULT_DRAWS, DEFAULT_TUNE
from ..console import err, out, progress, write_outputs, wrote
from ..inputs import drift_every, event_source
from ..options import (
    FITTING,
    OUTPUT,
    SIMULATING,
    Chains,
    Columns,
    Csv,
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
    Revival,
    Seed,
    SegmentBy,
    SegmentFrom,
    SegmentRow,
    Sheet,
    Sojourn,
    SojournFamily,
    Stages,
    Table,
    Tune,
    Won,
    Xlsx,
    parse_columns,
    parse_date,
    png_file,
)

__all__ = ["backtest"]

ORIGINS = "Origins"  # the --help panel of the options that say where to stand


def backtest(
    stages: Stages,
    events: Events = None,
    table: Table = None,
    won: Won = "Won",
    lost: Lost = "Lost",
    segment_by: SegmentBy = None,
    history_days: HistoryDays = None,
    drift: DriftPeriod = None,
    sojourn: SojournFamily = Sojourn.lognormal,
    revival: Revival = None,
    dayfirst: Dayfirst = False,
    decimal: Decimal = ".",
    columns: Columns = None,
    encoding: Encoding = None,
    sheet: Sheet = None,
    segment_from: SegmentFrom = SegmentRow.first,
    origins: Annotated[str | None, typer.Option(
        "--origins", help="Origin dates, comma-separated (YYYY-MM-DD,...).", show_default=False,
        rich_help_panel=ORIGINS)] = None,
    every: Annotated[str | None, typer.Option(
        "--every", help="Instead of --origins: one origin every 7D, 2W, 1M or 1Q between --start and --end.",
        show_default=False, rich_help_panel=ORIGINS)] = None,
    start: Annotated[str | None, typer.Option(
        "--start", help="First origin date with --every.", show_default=False, rich_help_panel=ORIGINS)] = None,
    end: Annotated[str | None, typer.Option(
        "--end", help="Last origin date with --every.", show_default=False, rich_help_panel=ORIGINS)] = None,
    draws: Draws = DEFAULT_DRAWS,
    tune: Tune = DEFAULT_TUNE,
    chains: Chains = 4,
    seed: Seed = 0,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="Origins run in parallel processes (default: the number of cores).",
        show_default=False, rich_help_panel=FITTING)] = None,
    horizon: Horizon = HORIZON_DAYS,
    deal_value: DealValue = None,
    new_deals: Annotated[bool, typer.Option(
        "--new-deals", help="Also forecast deals created during the horizon and score the total against all revenue "
                            "won in it (beside a run-rate baseline: the previous horizon's revenue).",
        rich_help_panel=SIMULATING)] = False,
    plot: Annotated[Path | None, typer.Option(
        "--plot", callback=png_file,
        help="Also save the band-vs-actual chart as this PNG.", show_default=False,
        rich_help_panel=OUTPUT)] = None,
    json: Json = None,
    csv: Csv = None,
    xlsx: Xlsx = None,
) -> None:
    """Backtest: replay history at each origin (the CRM exactly as it was then), fit,
    forecast the open pipeline for --horizon days, and score against what happened: CRPS,
    coverage of the 50/80/90% bands, error of the median, PIT, beside three baselines
    (weighted pipeline, pipeline coverage, last period's revenue). With --new-deals, the
    total (pipeline plus deals created in the horizon) is scored too. A second table sets the
    open deals' wins by age in stage (0-30, 30-90, 90-180, 180+ days) against the forecast's,
    and warns where they differ (say, old deals that still close).

    Example: funnelsim backtest crm.csv --stages Prospecting,Qualified,Proposal,Negotiation --won Won --lost Lost --horizon 90 --every 1M --start 2024-01-31 --end 2024-12-31 --json backtest.json
    """
    from ...data.events import FunnelDefinition
    from ...report.render import backtest_age_rich, backtest_rich
    from ...sim.backtest import BacktestSettings, origin_dates
    from ...sim.backtest import backtest as run_backtest

    if horizon == "quarter":
        raise FunnelDataError("a backtest scores the same horizon at every origin, and 'quarter' is a different "
                              "number of days at each", source="option --horizon", value="quarter",
                              hint="Pass the days, e.g. --horizon 91, with quarter-end origins (--every 1Q).")
    if bool(origins) == bool(every):
        raise FunnelDataError("give either --origins or --every (with --start and --end)", column="origins",
                              hint="For example --origins 2024-03-31,2024-06-30 or --every 1M --start 2024-01-31 "
                                   "--end 2024-12-31.")
    if every:
        if not (start and end):
            raise FunnelDataError("--every needs --start and --end", column="every", hint="Add --start DATE --end DATE.")
        dates = origin_dates(every, parse_date(start, "--start", dayfirst=dayfirst),
                             parse_date(end, "--end", dayfirst=dayfirst))
    else:
        dates = [parse_date(text, "--origins", dayfirst=dayfirst) for text in origins.split(",") if text.strip()]
    settings = BacktestSettings(horizon_days=horizon, segment_by=segment_by, draws=draws, tune=tune, chains=chains,
                                seed=seed, deal_value=deal_value, new_deals=new_deals, history_days=history_days,
                                every=drift_every(drift), sojourn=sojourn.value,
                                model_config=None if revival is None else {"revival": revival})
    err.print(f"Backtesting {len(dates)} origin(s), {horizon}-day horizon...", highlight=False)
    with progress("origins", len(dates)) as advance:
        result = run_backtest(event_source(events, table), FunnelDefinition(stages, won, lost), dates, settings,
                              columns=parse_columns(columns), dayfirst=dayfirst, decimal=decimal, encoding=encoding,
                              sheet=sheet, segment_from=segment_from.value, workers=workers,
                              progress=advance)
    out.print(backtest_rich(result))
    out.print(backtest_age_rich(result))
    warn_about(result)
    if plot:
        from ...report.charts import save_png

        save_png(result.plot_bands().figure, plot)
        wrote(plot)
    if json or csv or xlsx:
        write_outputs(result.to_dict(), json=json, csv=csv, xlsx=xlsx)


def warn_about(result) -> None:
    """Plain warnings under the tables: origins left out because their horizon is not over in
    the log, fits that failed their checks (their scores are of a fit not to be trusted), and
    deal ages whose wins missed the forecast (Backtest.age_misses)."""
    for skipped in result.skipped:
        err.print(f"WARNING: origin {skipped['origin']} not scored: {skipped['reason']} (horizon to "
                  f"{skipped['horizon_end']}).", highlight=False, soft_wrap=True)
    failed = result.table.loc[~result.table["converged"].astype(bool), "origin"].tolist()
    if failed:
        err.print(f"WARNING: the fit failed its checks (R-hat, ESS or divergences) at {len(failed)} of "
                  f"{len(result.table)} origin(s): {', '.join(failed)}. Try more --draws and --tune, or fewer "
                  "segments.", highlight=False, soft_wrap=True)
    for miss in result.age_misses():
        err.print(f"WARNING: {miss}.", highlight=False, soft_wrap=True)
