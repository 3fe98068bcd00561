"""The ``funnelsim`` command line: parses arguments, calls the API, prints results.

Exit codes: 0 ok, 2 bad input or usage, 3 a fit that failed its diagnostics under
``--strict``, 130 interrupted (Ctrl-C; nothing written), 1 anything else.
"""

from __future__ import annotations

import signal
import sys
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..data.events import FunnelDataError
from ..model.funnel_model import DEFAULT_TARGET_ACCEPT, DEFAULT_TUNE

app = typer.Typer(
    name="funnelsim",
    help="Sales-funnel conversion, time in stage and revenue forecasts from a CRM event log.\n\n"
         "An event log has one row per stage a deal entered: deal_id, stage, timestamp "
         "[, amount, segment columns...]. Name the open stages in order with --stages and the "
         "outcome labels with --won and --lost.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(width=None if Console().is_terminal else 160)  # files and pipes get the whole table
err = Console(stderr=True)
INTERRUPTED = 130   # exit code of a command stopped by SIGINT (128 + 2, as shells report it)

EventsArg = Annotated[Path, typer.Argument(help="Event log: a .csv or .parquet file.", show_default=False)]
StagesOpt = Annotated[str, typer.Option("--stages", help="Open stages in funnel order, comma-separated: Lead,Qualified,Proposal.", show_default=False)]
WonOpt = Annotated[str, typer.Option("--won", help="Label(s) meaning won, comma-separated.")]
LostOpt = Annotated[str, typer.Option("--lost", help="Label(s) meaning lost, comma-separated (may be empty).")]
AsOfOpt = Annotated[str | None, typer.Option("--as-of", help="See the CRM as it was at the end of this day (YYYY-MM-DD); later events are hidden. Default: the last event's day.", show_default=False)]
SegmentOpt = Annotated[str | None, typer.Option("--segment-by", help="Attribute column that splits deals into segments (region, source...).", show_default=False)]
DayfirstOpt = Annotated[bool, typer.Option("--dayfirst", help="Text dates are day-first (31-01-2024).")]
DecimalOpt = Annotated[str, typer.Option("--decimal", help="Decimal mark of amounts: '.' or ',' (1234,50; with ',' a dot or space may group thousands: 1.234,50).")]
ColumnsOpt = Annotated[str | None, typer.Option("--columns", help="Rename the log's columns: 'Opportunity=deal_id,Stage=stage,Date=timestamp'.", show_default=False)]
HorizonOpt = Annotated[int, typer.Option("--horizon", min=1, help="Days ahead to forecast (90 for a quarter).")]
TargetOpt = Annotated[float | None, typer.Option("--target", help="Revenue target (currency of the log): print the chance of reaching it.", show_default=False)]
ModelOpt = Annotated[Path | None, typer.Option("--model", help="Use this saved model (funnelsim fit --out) instead of fitting; it must have been fitted on this log with the same --as-of, --segment-by and --history-days.", show_default=False)]
DealValueOpt = Annotated[float | None, typer.Option("--deal-value", help="Amount (currency) for open deals with none, e.g. when the log has no amount column. Default: drawn from the segment's won amounts.", show_default=False)]
NewDealsOpt = Annotated[bool, typer.Option("--new-deals/--no-new-deals", help="Also simulate deals created during the horizon (in a stage, or already won), at the weekly rate of the last 26 weeks per segment, and report total revenue beside the open pipeline's.")]
FitDrawsOpt = Annotated[int, typer.Option("--draws", min=10, help="Posterior draws per chain when fitting.")]
FitTuneOpt = Annotated[int, typer.Option("--tune", min=10, help="Tuning steps per chain when fitting.")]
FitChainsOpt = Annotated[int, typer.Option("--chains", min=1, help="Markov chains when fitting.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed: same seed, same forecast.")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Exit 3 and write nothing if the fit fails its diagnostics.")]
HistoryOpt = Annotated[float | None, typer.Option("--history-days", min=1, help="Learn conversion and time in stage only from stays that began in the last DAYS days before --as-of (a funnel that changes over time). Default: all history.", show_default=False)]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Also write the result as JSON to this path (written atomically).", show_default=False)]


def main() -> None:
    """Entry point: bad input exits 2 with a short message and no traceback; an interrupt
    (Ctrl-C) exits 130 with one line."""
    try:
        # a typer.Exit inside a command comes back as its code, and so does a KeyboardInterrupt:
        # typer turns it into exit code 130
        code = app(standalone_mode=False)
    except KeyboardInterrupt:               # one raised outside the command, as typer starts or ends
        code = INTERRUPTED
    except FunnelDataError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click/typer usage errors carry their own exit code
        code = getattr(exc, "exit_code", None)
        if code is not None and hasattr(exc, "format_message"):
            err.print(f"[bold red]usage error:[/] {exc.format_message()}", highlight=False)
            err.print("Run with --help for the options.", highlight=False)
            sys.exit(2)
        err.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False)
        sys.exit(1)
    if code == INTERRUPTED:
        # the command has stopped (fits cancelled, backtest workers terminated) and written
        # nothing; a second Ctrl-C while Python shuts down would only print a traceback
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        err.print("interrupted", highlight=False)
    sys.exit(code if isinstance(code, int) else 0)


def _columns(spec: str | None) -> dict[str, str] | None:
    if not spec:
        return None
    mapping = {}
    for part in spec.split(","):
        theirs, sep, canonical = part.partition("=")
        if not sep or not theirs.strip() or not canonical.strip():
            raise FunnelDataError(f"cannot read --columns entry {part!r}", hint="Write it as theirs=canonical, e.g. 'Opportunity=deal_id'.")
        mapping[theirs.strip()] = canonical.strip()
    return mapping


def _load_spells(events, stages, won, lost, as_of, segment_by, dayfirst, columns, decimal="."):
    from ..data.events import FunnelDefinition, read_events
    from ..data.spells import to_spells

    funnel = FunnelDefinition(stages, won, lost)
    with err.status("Reading events...", spinner="dots") if err.is_terminal else nullcontext():
        log = read_events(events, funnel, columns=_columns(columns), dayfirst=dayfirst, decimal=decimal)
        spells = to_spells(log, as_of=as_of, segment_by=segment_by)
    return log, spells


@app.command()
def funnel(
    events: EventsArg,
    stages: StagesOpt,
    won: WonOpt = "Won",
    lost: LostOpt = "Lost",
    as_of: AsOfOpt = None,
    segment_by: SegmentOpt = None,
    dayfirst: DayfirstOpt = False,
    decimal: DecimalOpt = ".",
    columns: ColumnsOpt = None,
    json: JsonOpt = None,
) -> None:
    """Funnel table: per stage, how many deals entered, advanced, skipped ahead, went back,
    were won, lost or are still open; stage conversion and conversion from the top of the
    funnel (naive and censoring-correct, so open deals are not counted as lost); median days
    in stage (Kaplan-Meier); and open deals older than 90% of those that advanced
    (going-dark candidates).

    Example: funnelsim funnel crm.csv --stages Lead,Qualified,Proposal --won Won --lost Lost --segment-by region
    """
    from ..report.funnel import funnel_table

    log, spells = _load_spells(events, stages, won, lost, as_of, segment_by, dayfirst, columns, decimal)
    table = funnel_table(spells, notes=log.notes)
    out.print(table)
    if json:
        table.to_json(json)
        out.print(f"wrote {json}", highlight=False)


@app.command()
def fit(
    events: EventsArg,
    stages: StagesOpt,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to save the fitted model in (netCDF + JSON), e.g. models/q3.", show_default=False)],
    won: WonOpt = "Won",
    lost: LostOpt = "Lost",
    as_of: AsOfOpt = None,
    segment_by: SegmentOpt = None,
    dayfirst: DayfirstOpt = False,
    decimal: DecimalOpt = ".",
    columns: ColumnsOpt = None,
    draws: Annotated[int, typer.Option("--draws", min=10, help="Posterior draws per chain.")] = 1000,
    tune: Annotated[int, typer.Option("--tune", min=10, help="Tuning steps per chain.")] = DEFAULT_TUNE,
    chains: Annotated[int, typer.Option("--chains", min=1, help="Markov chains.")] = 4,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same posterior.")] = 0,
    sojourn: Annotated[str, typer.Option("--sojourn", help="Time-in-stage family: lognormal or weibull.")] = "lognormal",
    sampler: Annotated[str, typer.Option("--sampler", help="nutpie (default), pymc or numpyro.")] = "nutpie",
    target_accept: Annotated[float, typer.Option(
        "--target-accept", min=0.5, max=0.999,
        help="The sampler's target acceptance rate: raise it (e.g. 0.95) when a fit reports divergent transitions; "
             "smaller steps, slower sampling.")] = DEFAULT_TARGET_ACCEPT,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 3 and save nothing if the fit fails its diagnostics.")] = False,
    history_days: HistoryOpt = None,
) -> None:
    """Fit the Bayesian funnel model (conversion and time in stage per stage and segment,
    open deals censored, stalled deals modelled) and save it.

    Example: funnelsim fit crm.csv --stages Lead,Qualified,Proposal --won Won --lost Lost --segment-by region --out models/crm
    """
    from ..data.deals import amount_stats
    from ..model.funnel_model import FunnelModel
    from ..report.render import diagnostics_panel, stage_table_rich

    log, spells = _load_spells(events, stages, won, lost, as_of, segment_by, dayfirst, columns, decimal)
    model = FunnelModel(_stage_stats(spells, history_days), amounts=amount_stats(log, spells), sojourn=sojourn)
    _fit(model, draws, tune, chains, seed, sampler, target_accept)
    out.print(stage_table_rich(model.stage_table()))
    diagnostics = model.diagnostics
    out.print(diagnostics_panel(diagnostics))
    timings = model.timings
    out.print(f"compile {timings['compile_s']:.1f} s, sampling {timings['sample_s']:.1f} s", highlight=False)
    if strict and not diagnostics["converged"]:
        err.print("--strict: the fit failed its diagnostics; nothing saved.", highlight=False)
        raise typer.Exit(3)
    model.save(out_dir)
    out.print(f"saved {out_dir}", highlight=False)


@app.command()
def stages(
    model_dir: Annotated[Path, typer.Argument(metavar="MODEL", help="A folder written by funnelsim fit.", show_default=False)],
    json: JsonOpt = None,
) -> None:
    """Print a saved model's stage table: P(advance), P(lost), P(stall), P(win from stage
    entry), median days in stage and expected days to close, each with a 90% interval, plus
    where deals are lost and the fit's diagnostics.

    Example: funnelsim stages models/crm --json stages.json
    """
    from .._io import write_json
    from ..model.funnel_model import FunnelModel
    from ..report.render import diagnostics_panel, stage_table_rich

    model = FunnelModel.load(model_dir)
    out.print(stage_table_rich(model.stage_table()))
    _print_losses(model)
    out.print(diagnostics_panel(model.diagnostics))
    if json:
        write_json(json, model.to_dict())
        out.print(f"wrote {json}", highlight=False)


def _print_losses(model) -> None:
    losses = model.where_deals_are_lost()
    whole = losses[losses["segment"].isna()]
    ranked = ", ".join(f"{r.stage} {r.loss_share:.0%}" for r in whole.itertuples())
    out.print(f"Where deals are lost or go dark (share of eventual losses): {ranked}", highlight=False)


@contextmanager
def _simulating(what: str):
    """Say what is being simulated, once, on stderr; a spinner on a terminal. The first run on
    a machine compiles the simulator (numba, cached on disk afterwards): about a minute on 2
    cores, so say so rather than sit silent."""
    err.print(f"{what} (the first run after installing funnelsim also compiles the simulator: "
              "about a minute)...", highlight=False)
    with err.status("Simulating...", spinner="dots") if err.is_terminal else nullcontext():
        yield


def _fit(model, draws, tune, chains, seed, sampler="nutpie", target_accept=DEFAULT_TARGET_ACCEPT) -> None:
    """Fit with a progress bar on a terminal; the diagnostics panel, not a warning, reports
    a failed fit."""
    err.print(f"Fitting {len(model.data.stages)} stages x {len(model.data.segments)} segment(s), "
              f"{chains} chains x {draws} draws (compiling a model of a new shape first takes 10-25 s; later fits load it in seconds)...", highlight=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(draws=draws, tune=tune, chains=chains, sampler=sampler, random_seed=seed,
                  target_accept=target_accept, progressbar=err.is_terminal)


def _model_and_deals(events, stages, won, lost, as_of, segment_by, dayfirst, columns, model_dir, draws, tune,
                     chains, seed, strict, history_days=None, decimal="."):
    """Read the log as of the date, fit the model (or load a matching saved one), check it
    (exit 3 under --strict when it failed), and list the open deals."""
    from ..data.deals import amount_stats, open_deals
    from ..model.funnel_model import FunnelModel
    from ..report.render import diagnostics_panel

    log, spells = _load_spells(events, stages, won, lost, as_of, segment_by, dayfirst, columns, decimal)
    stats = _stage_stats(spells, history_days)
    if model_dir:
        model = FunnelModel.load(model_dir, stats)
    else:
        model = FunnelModel(stats, amounts=amount_stats(log, spells))
        _fit(model, draws, tune, chains, seed)
    if strict and not model.diagnostics["converged"]:
        out.print(diagnostics_panel(model.diagnostics))
        err.print("--strict: the fit failed its diagnostics; nothing written.", highlight=False)
        raise typer.Exit(3)
    return model, open_deals(log, spells), spells, log


def _stage_stats(spells, history_days):
    """The statistics the model learns from; with a history window, say how much of the
    history it keeps."""
    import pandas as pd

    from ..data.stats import to_stage_stats

    stats = to_stage_stats(spells, history_days)
    if history_days is not None:
        since = (spells.as_of + pd.Timedelta(days=1) - pd.Timedelta(days=history_days)).date()
        err.print(f"Learning from the {stats.stays:,} of {spells.counts.get('spells', 0):,} stays that "
                  f"began on or after {since} (--history-days {history_days:g}).", highlight=False)
    return stats


def _new_deals(log, spells):
    """The weekly inflow of new deals (entering open stages, or created already won) as of the
    spells' date (None, with a note, when the log covers under two weeks)."""
    from ..sim.inflow import NewDeals

    inflow = NewDeals.from_log(log, spells)
    if inflow.empty:
        err.print("The log covers under two weeks before --as-of: new deals are not simulated.", highlight=False)
        return None
    return inflow


@app.command()
def forecast(
    events: EventsArg,
    stages: StagesOpt,
    won: WonOpt = "Won",
    lost: LostOpt = "Lost",
    as_of: AsOfOpt = None,
    horizon: HorizonOpt = 90,
    segment_by: SegmentOpt = None,
    target: TargetOpt = None,
    model_dir: ModelOpt = None,
    period: Annotated[str, typer.Option("--period", help="Report revenue per day, week, month or quarter.")] = "month",
    deal_value: DealValueOpt = None,
    draws: FitDrawsOpt = 1000,
    tune: FitTuneOpt = DEFAULT_TUNE,
    chains: FitChainsOpt = 4,
    seed: SeedOpt = 0,
    dayfirst: DayfirstOpt = False,
    decimal: DecimalOpt = ".",
    columns: ColumnsOpt = None,
    strict: StrictOpt = False,
    history_days: HistoryOpt = None,
    new_deals: NewDealsOpt = True,
    json: JsonOpt = None,
) -> None:
    """Revenue forecast of the open pipeline: fit the funnel model (or load one), push every
    deal open at --as-of through it thousands of times, and print the revenue band (P10, P50,
    P90) within --horizon days, revenue per period, the chance of reaching --target, the
    stage table, the ten deals with the largest expected revenue and the fit's diagnostics.
    Deals created during the horizon (new deals, at the recent weekly rate) are simulated too
    and reported as total revenue (--no-new-deals: the open pipeline only). Revenue is in the
    currency of the log's amount column.

    Example: funnelsim forecast crm.csv --stages Lead,Qualified,Proposal --won Won --lost Lost --as-of 2024-06-30 --horizon 90 --target 500000 --json forecast.json
    """
    from ..report.render import deals_rich, diagnostics_panel, periods_rich, stage_table_rich
    from ..sim.forecast import forecast as run_forecast

    model, deals, spells, log = _model_and_deals(events, stages, won, lost, as_of, segment_by, dayfirst, columns,
                                            model_dir, draws, tune, chains, seed, strict, history_days,
                                            decimal=decimal)
    diagnostics = model.diagnostics
    inflow = _new_deals(log, spells) if new_deals else None
    with _simulating(f"Simulating {len(deals):,} open deals"):
        result = run_forecast(model, deals, horizon_days=horizon, as_of=spells.as_of, period=period, seed=seed,
                              deal_value=deal_value, new_deals=inflow)
    out.print(periods_rich(result))
    out.print(stage_table_rich(model.stage_table()))
    out.print(deals_rich(result.deals().head(10)))
    out.print(diagnostics_panel(diagnostics))
    out.print(result.summary(target), highlight=False)
    if json:
        result.to_json(json, target=target)
        out.print(f"wrote {json}", highlight=False)


@app.command()
def whatif(
    events: EventsArg,
    stages: StagesOpt,
    scenarios: Annotated[Path, typer.Option("--scenarios", help="TOML file of [[scenario]] tables (see the README).", show_default=False)],
    won: WonOpt = "Won",
    lost: LostOpt = "Lost",
    as_of: AsOfOpt = None,
    horizon: HorizonOpt = 90,
    segment_by: SegmentOpt = None,
    target: TargetOpt = None,
    model_dir: ModelOpt = None,
    deal_value: DealValueOpt = None,
    draws: FitDrawsOpt = 1000,
    tune: FitTuneOpt = DEFAULT_TUNE,
    chains: FitChainsOpt = 4,
    seed: SeedOpt = 0,
    dayfirst: DayfirstOpt = False,
    decimal: DecimalOpt = ".",
    columns: ColumnsOpt = None,
    strict: StrictOpt = False,
    history_days: HistoryOpt = None,
    new_deals: NewDealsOpt = True,
    json: JsonOpt = None,
) -> None:
    """What-if scenarios against the baseline forecast: change a stage's conversion, the time
    deals spend in it, the stall share, amounts or the number of new deals, add or remove
    deals; each scenario reruns the simulator with the same random numbers, so the difference
    is the effect of the change. Revenue includes deals created during the horizon unless
    --no-new-deals.
    Prints revenue (mean, P10, P50, P90), the difference from the baseline with its own
    interval, P(better than baseline) and, with --target, the chance of reaching it.

    Example: funnelsim whatif crm.csv --stages Lead,Qualified,Proposal --won Won --lost Lost --as-of 2024-06-30 --scenarios scenarios.toml --target 500000
    """
    from ..data.events import FunnelDefinition
    from ..report.render import comparison_rich, diagnostics_panel
    from ..sim.scenarios import check_names, compare, comparison_json, read_scenarios

    plan = read_scenarios(scenarios)          # bad scenarios fail before the fit
    check_names(plan, FunnelDefinition(stages, won, lost).stages, source=str(scenarios))
    if not new_deals and any(c.new_deals_factor is not None for p in plan for c in p.changes):
        raise FunnelDataError("new_deals_factor needs new deals in the comparison", source=str(scenarios),
                              column="new_deals_factor", hint="Drop --no-new-deals, or the new_deals_factor change.")
    model, deals, spells, log = _model_and_deals(events, stages, won, lost, as_of, segment_by, dayfirst, columns,
                                            model_dir, draws, tune, chains, seed, strict, history_days,
                                            decimal=decimal)
    with _simulating(f"Simulating {len(deals):,} open deals under {len(plan)} scenario(s)"):
        table = compare(model, deals, plan, horizon_days=horizon, seed=seed, target=target, deal_value=deal_value,
                        new_deals=_new_deals(log, spells) if new_deals else None)
    out.print(comparison_rich(table, horizon))
    out.print(diagnostics_panel(model.diagnostics))
    if json:
        from .._io import write_json

        write_json(json, comparison_json(table, target))
        out.print(f"wrote {json}", highlight=False)


@app.command()
def bottlenecks(
    events: EventsArg,
    stages: StagesOpt,
    won: WonOpt = "Won",
    lost: LostOpt = "Lost",
    as_of: AsOfOpt = None,
    horizon: HorizonOpt = 90,
    segment_by: SegmentOpt = None,
    points: Annotated[float, typer.Option("--points", help="Conversion points added to each stage in turn.")] = 5.0,
    time_factor: Annotated[float, typer.Option("--time-factor", min=0.01, help="Factor on the time deals spend in each stage in turn (0.8 = 20% faster).")] = 0.8,
    model_dir: ModelOpt = None,
    deal_value: DealValueOpt = None,
    draws: FitDrawsOpt = 1000,
    tune: FitTuneOpt = DEFAULT_TUNE,
    chains: FitChainsOpt = 4,
    seed: SeedOpt = 0,
    dayfirst: DayfirstOpt = False,
    decimal: DecimalOpt = ".",
    columns: ColumnsOpt = None,
    strict: StrictOpt = False,
    history_days: HistoryOpt = None,
    new_deals: NewDealsOpt = True,
    json: JsonOpt = None,
) -> None:
    """Where to focus: for every stage (and segment, with --segment-by), the revenue gained
    within --horizon days from --points more points of conversion and from --time-factor on
    the time deals spend there, as paired differences with an 80% interval, ranked. Deals
    created during the horizon go through the changed funnel too (--no-new-deals: the open
    pipeline only).

    Example: funnelsim bottlenecks crm.csv --stages Lead,Qualified,Proposal --won Won --lost Lost --as-of 2024-06-30 --segment-by region
    """
    from ..report.render import bottlenecks_rich, diagnostics_panel
    from ..sim.scenarios import bottlenecks as rank

    model, deals, spells, log = _model_and_deals(events, stages, won, lost, as_of, segment_by, dayfirst, columns,
                                                 model_dir, draws, tune, chains, seed, strict, history_days,
                                                 decimal=decimal)
    with _simulating(f"Simulating {len(deals):,} open deals under every lever"):
        table = rank(model, deals, horizon_days=horizon, points=points, time_factor=time_factor,
                     by_segment=bool(segment_by), seed=seed, deal_value=deal_value,
                     new_deals=_new_deals(log, spells) if new_deals else None)
    out.print(bottlenecks_rich(table, horizon))
    out.print(diagnostics_panel(model.diagnostics))
    if json:
        from .._io import json_safe, write_json

        write_json(json, json_safe({"horizon_days": horizon, "bottlenecks": table.to_dict(orient="records")}))
        out.print(f"wrote {json}", highlight=False)


@app.command()
def backtest(
    events: EventsArg,
    stages: StagesOpt,
    won: WonOpt = "Won",
    lost: LostOpt = "Lost",
    horizon: HorizonOpt = 90,
    origins: Annotated[str | None, typer.Option("--origins", help="Origin dates, comma-separated (YYYY-MM-DD,...).", show_default=False)] = None,
    every: Annotated[str | None, typer.Option("--every", help="Instead of --origins: one origin every 7D, 2W, 1M or 1Q between --start and --end.", show_default=False)] = None,
    start: Annotated[str | None, typer.Option("--start", help="First origin date with --every.", show_default=False)] = None,
    end: Annotated[str | None, typer.Option("--end", help="Last origin date with --every.", show_default=False)] = None,
    segment_by: SegmentOpt = None,
    deal_value: DealValueOpt = None,
    draws: Annotated[int, typer.Option("--draws", min=10, help="Posterior draws per chain at each origin.")] = 500,
    tune: Annotated[int, typer.Option("--tune", min=10, help="Tuning steps per chain at each origin.")] = 500,
    chains: FitChainsOpt = 4,
    seed: SeedOpt = 0,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Origins run in parallel processes (default: the number of cores).", show_default=False)] = None,
    dayfirst: DayfirstOpt = False,
    decimal: DecimalOpt = ".",
    columns: ColumnsOpt = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also save the band-vs-actual chart as this PNG.", show_default=False)] = None,
    new_deals: Annotated[bool, typer.Option("--new-deals", help="Also forecast deals created during the horizon and score the total against all revenue won in it (beside a run-rate baseline: the previous horizon's revenue).")] = False,
    history_days: HistoryOpt = None,
    json: JsonOpt = None,
) -> None:
    """Backtest: replay history at each origin (the CRM exactly as it was then), fit,
    forecast the open pipeline for --horizon days, and score against what happened: CRPS,
    coverage of the 50/80/90% bands, error of the median, PIT, beside three baselines
    (weighted pipeline, pipeline coverage, last period's revenue). With --new-deals, the
    total (pipeline plus deals created in the horizon) is scored too.

    Example: funnelsim backtest crm.csv --stages Lead,Qualified,Proposal --won Won --lost Lost --horizon 90 --every 1M --start 2024-01-31 --end 2024-12-31 --json backtest.json
    """
    from ..data.events import FunnelDefinition
    from ..report.render import backtest_rich
    from ..sim.backtest import BacktestSettings, origin_dates
    from ..sim.backtest import backtest as run_backtest

    if bool(origins) == bool(every):
        raise FunnelDataError("give either --origins or --every (with --start and --end)", column="origins",
                              hint="For example --origins 2024-03-31,2024-06-30 or --every 1M --start 2024-01-31 --end 2024-12-31.")
    if every:
        if not (start and end):
            raise FunnelDataError("--every needs --start and --end", column="every", hint="Add --start DATE --end DATE.")
        dates = origin_dates(every, _date(start, "start"), _date(end, "end"))
    else:
        dates = [_date(text, "origins") for text in origins.split(",") if text.strip()]
    settings = BacktestSettings(horizon_days=horizon, segment_by=segment_by, draws=draws, tune=tune, chains=chains,
                                seed=seed, deal_value=deal_value, new_deals=new_deals, history_days=history_days)
    err.print(f"Backtesting {len(dates)} origin(s), {horizon}-day horizon...", highlight=False)
    with _progress("origins", len(dates)) as advance:
        result = run_backtest(events, FunnelDefinition(stages, won, lost), dates, settings, columns=_columns(columns),
                              dayfirst=dayfirst, decimal=decimal, workers=workers, progress=advance)
    out.print(backtest_rich(result))
    if plot:
        from .._io import atomic_write

        figure = result.plot_bands().figure
        atomic_write(plot, lambda tmp: figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
        out.print(f"wrote {plot}", highlight=False)
    if json:
        result.to_json(json)
        out.print(f"wrote {json}", highlight=False)


@contextmanager
def _progress(label: str, total: int):
    """A progress bar on a terminal (quiet otherwise); yields a callback(done, total)."""
    if not err.is_terminal:
        yield None
        return
    from rich.progress import Progress

    with Progress(console=err, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done, _total: bar.update(task, completed=done)


def _date(text: str, column: str):
    import pandas as pd

    try:
        return pd.Timestamp(text.strip()).normalize()
    except (ValueError, TypeError):
        raise FunnelDataError(f"cannot read {text!r} as a date", column=column, value=text,
                              hint="Use ISO dates: 2024-03-31.") from None


@app.command()
def synth(
    out_path: Annotated[Path, typer.Argument(metavar="OUT", help="Where to write the events (.csv or .parquet); the truth goes beside it as OUT.truth.json.", show_default=False)],
    deals: Annotated[int, typer.Option("--deals", min=1, help="Number of deals.")] = 5000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same file.")] = 0,
    weeks: Annotated[int, typer.Option("--weeks", min=1, help="Weeks of deal inflow; the log ends (is censored) after them.")] = 104,
    pass_through: Annotated[list[str] | None, typer.Option("--pass-through", metavar="STAGE=SHARE", help="That share of the stage's stays lasts 1-120 seconds (an automation moving deals on); 1.0 = every stay. Repeat or comma-separate: Qualified=1.0,Proposal=0.2.", show_default=False)] = None,
    same_day_jump: Annotated[float, typer.Option("--same-day-jump", min=0.0, max=1.0, metavar="P", help="Share of forward moves (next stage, skip, won) made 1-120 seconds after entering (a rep clicking a deal through stages); a jump through k stages is k such stays.")] = 0.0,
    date_only: Annotated[bool, typer.Option("--date-only", help="Write dates without a time of day (YYYY-MM-DD): same-day stays last 0 days; rows keep each deal's true order.")] = False,
    rare: Annotated[list[str] | None, typer.Option("--rare", metavar="FROM:TO[=P][@SEG+SEG]", help="Make an exit rare or segment-only: base probability P (Prospecting:Won=0.006) and/or only these segments have it (Proposal:Qualified@SMB). Repeatable.", show_default=False)] = None,
) -> None:
    """Write a synthetic CRM event log with known truth (stage conversion, P(win from stage
    entry), median days and instant shares per stage and segment), for demos, tests and
    benchmarks.

    Example: funnelsim synth crm.csv --deals 20000 --seed 1

    Awkward timing: funnelsim synth crm.csv --pass-through Qualified=1.0 --same-day-jump 0.1 --date-only --rare Prospecting:Won=0.006
    """
    from ..data import synth as synth_module

    try:
        config = synth_module.SynthConfig(
            weeks=weeks, pass_through=synth_module.parse_pass_through(pass_through or []),
            p_same_day_jump=same_day_jump, date_only=date_only, **synth_module.parse_rare(rare or []))
        truth = synth_module.write(out_path, deals, seed=seed, config=config)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    out.print(f"wrote {out_path} ({deals} deals, as of {truth['as_of']}) and its truth JSON", highlight=False)


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the demo's files.")] = Path("demo_output"),
    deals: Annotated[int, typer.Option("--deals", min=100, help="Deals in the synthetic CRM.")] = 20000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 1,
    horizon: Annotated[int, typer.Option("--horizon", min=7, help="Days to forecast.")] = 90,
    draws: Annotated[int, typer.Option("--draws", min=10, help="Posterior draws per chain.")] = 1000,
    tune: Annotated[int, typer.Option("--tune", min=10, help="Tuning steps per chain.")] = DEFAULT_TUNE,
    chains: Annotated[int, typer.Option("--chains", min=1, help="Markov chains.")] = 4,
) -> None:
    """Run the whole job on a synthetic CRM: generate it, print its funnel, fit the Bayesian
    funnel model as of --horizon days before the log ends, forecast the revenue of the deals
    open then, and compare the forecast with what the synthetic CRM says happened. Files go
    to --out: events.csv, funnel.json, model/, stage_table.csv, forecast.json, deals.csv and
    fan_chart.png.
    """
    import pandas as pd

    from .._io import atomic_write
    from ..data import synth as synth_module
    from ..data.deals import amount_stats, open_deals
    from ..data.stats import to_stage_stats
    from ..model.funnel_model import FunnelModel
    from ..report.funnel import funnel_table
    from ..report.render import deals_rich, diagnostics_panel, periods_rich, stage_table_rich
    from ..sim.forecast import forecast as run_forecast

    config = synth_module.SynthConfig()
    events_path = out_dir / "events.csv"
    truth = synth_module.write(events_path, deals, seed=seed, config=config)
    as_of = (pd.Timestamp(truth["as_of"]) - pd.Timedelta(days=horizon)).date()
    out.print(f"[bold]Synthetic CRM[/]: {deals} deals written to {events_path}; the log ends on {truth['as_of']}, "
              f"we stand on {as_of} and forecast the next {horizon} days.", highlight=False)
    log, spells = _load_spells(events_path, ",".join(config.stages), config.won, config.lost,
                               str(as_of), config.segment_column, False, None)
    table = funnel_table(spells, notes=log.notes)
    out.print(table)
    table.to_json(out_dir / "funnel.json")

    model = FunnelModel(to_stage_stats(spells), amounts=amount_stats(log, spells))
    _fit(model, draws, tune, chains, seed)
    stage_rows = model.stage_table()
    out.print(stage_table_rich(stage_rows))
    _print_losses(model)
    out.print(diagnostics_panel(model.diagnostics))
    model.save(out_dir / "model")
    atomic_write(out_dir / "stage_table.csv", lambda tmp: stage_rows.to_csv(tmp, index=False))

    pipeline = open_deals(log, spells)
    result = run_forecast(model, pipeline, horizon_days=horizon, as_of=spells.as_of, seed=seed)
    out.print(periods_rich(result))
    out.print(deals_rich(result.deals().head(10)))
    result.to_json(out_dir / "forecast.json")
    atomic_write(out_dir / "deals.csv", lambda tmp: result.deals().to_csv(tmp, index=False))
    ax = result.plot_fan()
    atomic_write(out_dir / "fan_chart.png", lambda tmp: ax.figure.savefig(tmp, dpi=120, bbox_inches="tight"))

    events = log.to_pandas()
    start = pd.Timestamp(as_of) + pd.Timedelta(days=1)
    won = events[events["stage"].eq(config.won)
                 & (events["timestamp"] >= start) & (events["timestamp"] < start + pd.Timedelta(days=horizon))
                 & events["deal_id"].isin(pipeline["deal_id"])]
    band = result.pipeline_revenue()
    inside = band["p10"] <= won["amount"].sum() <= band["p90"]
    whole = stage_rows[stage_rows["segment"].isna()].set_index("stage")
    top = whole.iloc[0]
    out.print(
        f"\n{result.summary()}\nWhat the synthetic CRM says happened: {won['amount'].sum():,.0f} from {len(won):,} "
        f"deals won, {'inside' if inside else 'outside'} the 80% band. A deal entering {whole.index[0]} is won "
        f"with probability {top['p_win_from_entry']:.1%} (90% interval {top['p_win_from_entry_low']:.1%}–"
        f"{top['p_win_from_entry_high']:.1%}; synthetic truth {_truth_p_win(truth, whole.index[0]):.1%}). "
        f"Files in {out_dir}/.",
        highlight=False,
    )


def _truth_p_win(truth: dict, stage: str) -> float:
    return next(c["p_win_from_entry"] for c in truth["cells"] if c["segment"] is None and c["stage"] == stage)


if __name__ == "__main__":
    main()
