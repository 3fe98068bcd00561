"""``forecast``, ``whatif`` and ``bottlenecks``: push the deals open at --as-of (and, unless
--no-new-deals, the deals created during the horizon) through the fitted funnel.

The three take the same reading, fitting and simulating options; each turns them into a
Snapshot and a model with :func:`read_snapshot` and :func:`model_for`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ...data.events import FunnelDataError
from ...defaults import HORIZON_DAYS
from ...model.funnel_model import DEFAULT_DRAWS, DEFAULT_TUNE
from ..console import out, simulating, write_outputs, wrote
from ..inputs import model_for, new_deal_inflow, read_snapshot
from ..options import (
    OUTPUT,
    SIMULATING,
    AsOf,
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
    Xlsx,
    horizon_days,
    png_file,
)

__all__ = ["forecast", "whatif", "bottlenecks"]

CHECKING = "Track record"
Check = Annotated[int, typer.Option(
    "--check", min=0, metavar="N",
    help="Also replay this forecast at the N past origins one horizon apart before --as-of (one more fit each, "
         "with these settings) and report how often its 80% band held and the PIT values: its track record on "
         "this log.", rich_help_panel=CHECKING)]
Calibrate = Annotated[bool, typer.Option(
    "--calibrate", help="Widen the band by the --check track record (split conformal on the log scale; never "
                        "narrower) and report the calibrated band and chance of the target beside the model's.",
    rich_help_panel=CHECKING)]


def forecast(
    stages: Stages,
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
    check: Check = 0,
    calibrate: Calibrate = False,
    plot: Annotated[Path | None, typer.Option(
        "--plot", metavar="PNG", callback=png_file,
        help="Also save the fan chart (cumulative revenue by period end: median, 50% and 80% bands, the "
             "target) as this PNG.", show_default=False,
        rich_help_panel=OUTPUT)] = None,
    json: Json = None,
    csv: Csv = None,
    xlsx: Xlsx = None,
) -> None:
    """Revenue forecast of the open pipeline: fit the funnel model (or load one), push every
    deal open at --as-of through it thousands of times, and print the revenue band (P10, P50,
    P90) within --horizon days, revenue per period, the chance of reaching --target, the
    stage table, the ten deals with the largest expected revenue and the fit's diagnostics.
    Deals created during the horizon (new deals, at the recent weekly rate) are simulated too
    and reported as total revenue (--no-new-deals: the open pipeline only). Revenue is in the
    currency of the log's amount column.

    --check N replays the same forecast at N past dates one horizon apart and says how often
    its 80% band held (a plain warning when it has been too narrow); --calibrate widens the
    band by that record and reports the calibrated band beside the model's.

    Example: funnelsim forecast crm.csv --stages Prospecting,Qualified,Proposal,Negotiation --won Won --lost Lost --as-of 2024-06-30 --horizon 90 --target 500000 --check 4 --json forecast.json
    """
    from ...report.render import deals_rich, diagnostics_panel, periods_rich, stage_table_rich, track_record_rich
    from ...sim.forecast import forecast as run_forecast

    if calibrate and not check:
        raise FunnelDataError("--calibrate widens the band by the forecast's track record, and there is none",
                              source="--calibrate", hint="Pass --check N too (4 or more past origins).")
    snapshot = read_snapshot(events, stages, won, lost, table=table, as_of=as_of, segment_by=segment_by,
                             history_days=history_days, drift=drift, model_dir=model_dir, dayfirst=dayfirst, decimal=decimal, columns=columns, encoding=encoding, sheet=sheet,
                             segment_from=segment_from.value)
    model = model_for(snapshot, model_dir, draws=draws, tune=tune, chains=chains, seed=seed, strict=strict,
                      revival=revival)
    horizon = horizon_days(horizon, snapshot.as_of)
    deals = snapshot.open_deals
    inflow = new_deal_inflow(snapshot) if new_deals else None
    with simulating(f"Simulating {len(deals):,} open deals"):
        result = run_forecast(model, deals, horizon_days=horizon, as_of=snapshot.as_of, period=period.value,
                              seed=seed, deal_value=deal_value, new_deals=inflow)
    out.print(periods_rich(result))
    out.print(stage_table_rich(model.stage_table()))
    out.print(deals_rich(result.deals().head(10)))
    out.print(diagnostics_panel(model.diagnostics))
    out.print(result.summary(target), highlight=False)
    if check:
        from ...model.likelihood import DEFAULT_CONFIG
        from ...sim.backtest import BacktestSettings

        # the past origins are fitted as this model was (a --model's family, revival, priors)
        changed = {key: value for key, value in model.config.items() if value != DEFAULT_CONFIG.get(key)}
        settings = BacktestSettings(horizon_days=horizon, segment_by=segment_by, draws=draws, tune=tune, chains=chains,
                                    seed=seed, deal_value=deal_value, new_deals=result.has_new_deals,
                                    history_days=history_days, every=snapshot.every, sojourn=model.sojourn,
                                    model_config=changed or None)
        result.track_record = checked_record(events, table, stages, won, lost, snapshot.as_of, check, settings,
                                             columns=columns, dayfirst=dayfirst, decimal=decimal, encoding=encoding,
                                             sheet=sheet, segment_from=segment_from.value)
        out.print(track_record_rich(result.track_record), highlight=False)
        out.print(result.track_record.summary(), highlight=False)
        if calibrate:
            result.calibrate = True
            out.print(result.calibrated_summary(target), highlight=False)
    if plot:
        from ...report.charts import save_png

        save_png(result.plot_fan(target=target).figure, plot)
        wrote(plot)
    if json or csv or xlsx:
        write_outputs(result.to_dict(target), json=json, csv=csv, xlsx=xlsx)


def checked_record(events, table, stages, won, lost, as_of, n, settings, *, columns, dayfirst, decimal, encoding=None,
                   sheet=None, segment_from="first"):
    """The forecast's track record at the ``n`` origins before ``as_of`` (sim.track_record),
    with a progress bar over the past origins' fits."""
    from ...data.events import FunnelDefinition
    from ...sim.track_record import track_record
    from ..console import err, progress
    from ..inputs import event_source
    from ..options import parse_columns

    err.print(f"Checking the forecast at {n} past origin(s), {settings.horizon_days} days apart (one fit each)...",
              highlight=False)
    with progress("past origins", n) as advance:
        return track_record(event_source(events, table), FunnelDefinition(stages, won, lost), as_of, n, settings,
                            columns=parse_columns(columns), dayfirst=dayfirst, decimal=decimal, encoding=encoding,
                            sheet=sheet, segment_from=segment_from, progress=advance)


def whatif(
    stages: Stages,
    scenarios: Annotated[Path, typer.Option(
        "--scenarios", help="TOML file of [[scenario]] tables (see the README).", show_default=False)],
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
    target: Target = None,
    deal_value: DealValue = None,
    new_deals: NewDeals = True,
    json: Json = None,
    csv: Csv = None,
    xlsx: Xlsx = None,
) -> None:
    """What-if scenarios against the baseline forecast: change a stage's conversion, the time
    deals spend in it, the stall share, amounts or the number of new deals, add or remove
    deals; each scenario reruns the simulator with the same random numbers, so the difference
    is the effect of the change. Revenue includes deals created during the horizon unless
    --no-new-deals.
    Prints revenue (mean, P10, P50, P90), the difference from the baseline with its own
    interval, P(better than baseline) and, with --target, the chance of reaching it.

    Example: funnelsim whatif crm.csv --stages Prospecting,Qualified,Proposal,Negotiation --won Won --lost Lost --as-of 2024-06-30 --scenarios scenarios.toml --target 500000
    """
    from ...data.events import FunnelDefinition
    from ...report.render import comparison_rich, diagnostics_panel
    from ...sim.changes import check_segmented
    from ...sim.scenarios import check_names, compare, comparison_json, read_scenarios

    plan = read_scenarios(scenarios)          # bad scenarios fail before the log is read, and before the fit
    check_names(plan, FunnelDefinition(stages, won, lost).stages, source=str(scenarios))
    check_segmented(plan, segment_by, source=str(scenarios))
    if not new_deals and any(c.new_deals_factor is not None for p in plan for c in p.changes):
        raise FunnelDataError("new_deals_factor needs new deals in the comparison", source=str(scenarios),
                              column="new_deals_factor", hint="Drop --no-new-deals, or the new_deals_factor change.")
    snapshot = read_snapshot(events, stages, won, lost, table=table, as_of=as_of, segment_by=segment_by,
                             history_days=history_days, drift=drift, model_dir=model_dir, dayfirst=dayfirst, decimal=decimal, columns=columns, encoding=encoding, sheet=sheet,
                             segment_from=segment_from.value)
    horizon = horizon_days(horizon, snapshot.as_of)
    deals = snapshot.open_deals
    check_names(plan, FunnelDefinition(stages, won, lost).stages, snapshot.stage_stats.segments, deals,
                source=str(scenarios))
    model = model_for(snapshot, model_dir, draws=draws, tune=tune, chains=chains, seed=seed, strict=strict,
                      revival=revival)
    inflow = new_deal_inflow(snapshot) if new_deals else None
    with simulating(f"Simulating {len(deals):,} open deals under {len(plan)} scenario(s)", "scenarios") as advance:
        table = compare(model, deals, plan, horizon_days=horizon, seed=seed, target=target, deal_value=deal_value,
                        new_deals=inflow, progress=advance)
    out.print(comparison_rich(table, horizon))
    out.print(diagnostics_panel(model.diagnostics))
    if json or csv or xlsx:
        write_outputs(comparison_json(table, target), json=json, csv=csv, xlsx=xlsx)


def bottlenecks(
    stages: Stages,
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
    points: Annotated[float, typer.Option(
        "--points", help="Conversion points added to each stage in turn.", rich_help_panel=SIMULATING)] = 5.0,
    time_factor: Annotated[float, typer.Option(
        "--time-factor", min=0.01, help="Factor on the time deals spend in each stage in turn (0.8 = 20% faster).",
        rich_help_panel=SIMULATING)] = 0.8,
    deal_value: DealValue = None,
    new_deals: NewDeals = True,
    json: Json = None,
    csv: Csv = None,
    xlsx: Xlsx = None,
) -> None:
    """Where to focus: for every stage (and segment, with --segment-by), the revenue gained
    within --horizon days from --points more points of conversion and from --time-factor on
    the time deals spend there, as paired differences with an 80% interval, ranked. Deals
    created during the horizon go through the changed funnel too (--no-new-deals: the open
    pipeline only).

    Example: funnelsim bottlenecks crm.csv --stages Prospecting,Qualified,Proposal,Negotiation --won Won --lost Lost --as-of 2024-06-30 --segment-by segment
    """
    from ...report.render import bottlenecks_rich, diagnostics_panel
    from ...sim.scenarios import bottlenecks as rank

    snapshot = read_snapshot(events, stages, won, lost, table=table, as_of=as_of, segment_by=segment_by,
                             history_days=history_days, drift=drift, model_dir=model_dir, dayfirst=dayfirst, decimal=decimal, columns=columns, encoding=encoding, sheet=sheet,
                             segment_from=segment_from.value)
    model = model_for(snapshot, model_dir, draws=draws, tune=tune, chains=chains, seed=seed, strict=strict,
                      revival=revival)
    horizon = horizon_days(horizon, snapshot.as_of)
    deals = snapshot.open_deals
    inflow = new_deal_inflow(snapshot) if new_deals else None
    with simulating(f"Simulating {len(deals):,} open deals under every lever", "levers") as advance:
        table = rank(model, deals, horizon_days=horizon, points=points, time_factor=time_factor,
                     by_segment=bool(segment_by), seed=seed, deal_value=deal_value, new_deals=inflow,
                     progress=advance)
    out.print(bottlenecks_rich(table, horizon))
    out.print(diagnostics_panel(model.diagnostics))
    if json or csv or xlsx:
        write_outputs({"horizon_days": horizon, "bottlenecks": table.to_dict(orient="records")}, json=json, csv=csv,
                      xlsx=xlsx)
