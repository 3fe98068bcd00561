"""``synth`` writes a synthetic CRM with known truth; ``demo`` runs the whole job on one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ...defaults import HORIZON_DAYS
from ...model.funnel_model import DEFAULT_DRAWS, DEFAULT_TUNE
from ..console import out
from ..inputs import fit_model, print_losses, read_snapshot
from ..options import OUTPUT, SIMULATING, Chains, Draws, Seed, Tune

__all__ = ["synth", "demo"]


def synth(
    out_path: Annotated[Path, typer.Argument(
        metavar="OUT", help="Where to write the events (.csv or .parquet); the truth goes beside it as "
                            "OUT.truth.json.", show_default=False)],
    deals: Annotated[int, typer.Option("--deals", min=1, help="Number of deals.")] = 5000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same file.")] = 0,
    weeks: Annotated[int, typer.Option(
        "--weeks", min=1, help="Weeks of deal inflow; the log ends (is censored) after them.")] = 104,
    pass_through: Annotated[list[str] | None, typer.Option(
        "--pass-through", metavar="STAGE=SHARE",
        help="That share of the stage's stays lasts 1-120 seconds (an automation moving deals on); 1.0 = every "
             "stay. Repeat or comma-separate: Qualified=1.0,Proposal=0.2.", show_default=False)] = None,
    same_day_jump: Annotated[float, typer.Option(
        "--same-day-jump", min=0.0, max=1.0, metavar="P",
        help="Share of forward moves (next stage, skip, won) made 1-120 seconds after entering (a rep clicking a "
             "deal through stages); a jump through k stages is k such stays.")] = 0.0,
    date_only: Annotated[bool, typer.Option(
        "--date-only", help="Write dates without a time of day (YYYY-MM-DD): same-day stays last 0 days; rows keep "
                            "each deal's true order.")] = False,
    rare: Annotated[list[str] | None, typer.Option(
        "--rare", metavar="FROM:TO[=P][@SEG+SEG]",
        help="Make an exit rare or segment-only: base probability P (Prospecting:Won=0.006) and/or only these "
             "segments have it (Proposal:Qualified@SMB). Repeatable.", show_default=False)] = None,
    drift: Annotated[float, typer.Option(
        "--drift", metavar="SHIFT", help="Conversion drifts: the forward destinations' logit moves by SHIFT per "
                                         "calendar month a stay begins in (-0.05: slowly worse).")] = 0.0,
    jump: Annotated[list[str] | None, typer.Option(
        "--jump", metavar="YYYY-MM=SHIFT", help="From that month on, the forward logit moves by SHIFT more (a new "
                                                "pricing, a team change). Repeatable.", show_default=False)] = None,
    shocks: Annotated[float, typer.Option(
        "--shocks", min=0.0, metavar="SD", help="Each month's stays share a N(0, SD) shock of the forward logit and of "
                                                "log time in stage (a quarter-end push, a lost campaign).")] = 0.0,
) -> None:
    """Write a synthetic CRM event log with known truth (stage conversion, P(win from stage
    entry), median days and instant shares per stage and segment), for demos, tests and
    benchmarks.

    Example: funnelsim synth crm.csv --deals 20000 --seed 1

    Awkward timing: funnelsim synth crm.csv --pass-through Qualified=1.0 --same-day-jump 0.1 --date-only --rare Prospecting:Won=0.006

    A funnel that changes: funnelsim synth crm.csv --drift -0.05 --jump 2025-01=0.5 --shocks 0.15 (the truth JSON
    then has each month's cohort: its shifts and its whole-funnel cells)
    """
    from ...data import synth as synth_module

    try:
        config = synth_module.SynthConfig(
            weeks=weeks, pass_through=synth_module.parse_pass_through(pass_through or []),
            p_same_day_jump=same_day_jump, date_only=date_only, **synth_module.parse_rare(rare or []),
            drift_per_month=drift, drift_jumps=synth_module.parse_jumps(jump or []), shock_sd=shocks,
            shock_speed_sd=shocks)
        truth = synth_module.write(out_path, deals, seed=seed, config=config)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    out.print(f"wrote {out_path} ({deals} deals, as of {truth['as_of']}) and its truth JSON", highlight=False)
    out.print(f"Read it with: --stages {','.join(config.stages)} --won {config.won} "
              f"--lost {config.lost} --segment-by {config.segment_column}", highlight=False, soft_wrap=True)


def demo(
    deals: Annotated[int, typer.Option("--deals", min=100, help="Deals in the synthetic CRM.")] = 20000,
    seed: Seed = 1,
    draws: Draws = DEFAULT_DRAWS,
    tune: Tune = DEFAULT_TUNE,
    chains: Chains = 4,
    # the demo stands --horizon days before its log ends: at least a week, so something happens
    horizon: Annotated[int, typer.Option("--horizon", min=7, help="Days to forecast.",
                                         rich_help_panel=SIMULATING)] = HORIZON_DAYS,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the demo's files.",
                                          rich_help_panel=OUTPUT)] = Path("demo_output"),
) -> None:
    """Run the whole job on a synthetic CRM: generate it, print its funnel, fit the Bayesian
    funnel model as of --horizon days before the log ends, forecast the revenue of the deals
    open then, and compare the forecast with what the synthetic CRM says happened. Files go
    to --out: events.csv, funnel.json, model/, stage_table.csv, forecast.json, deals.csv,
    fan_chart.png and report.html (the forecast report, with what changed in the 30 days before).
    """
    import pandas as pd

    from ..._io import atomic_write
    from ...data import synth as synth_module
    from ...model.funnel_model import FunnelModel
    from ...report.funnel import funnel_table
    from ...report.html import forecast_report
    from ...report.render import deals_rich, diagnostics_panel, periods_rich, stage_table_rich
    from ...sim.forecast import forecast as run_forecast

    config = synth_module.SynthConfig()
    events_path = out_dir / "events.csv"
    truth = synth_module.write(events_path, deals, seed=seed, config=config)
    as_of = (pd.Timestamp(truth["as_of"]) - pd.Timedelta(days=horizon)).date()
    out.print(f"[bold]Synthetic CRM[/]: {deals} deals written to {events_path}; the log ends on {truth['as_of']}, "
              f"we stand on {as_of} and forecast the next {horizon} days.", highlight=False)
    snapshot = read_snapshot(events_path, ",".join(config.stages), config.won, config.lost, as_of=str(as_of),
                             segment_by=config.segment_column)
    table = funnel_table(snapshot)
    out.print(table)
    table.to_json(out_dir / "funnel.json")

    model = FunnelModel.from_snapshot(snapshot)
    fit_model(model, draws, tune, chains, seed)
    stage_rows = model.stage_table()
    out.print(stage_table_rich(stage_rows))
    print_losses(model)
    out.print(diagnostics_panel(model.diagnostics))
    model.save(out_dir / "model")
    atomic_write(out_dir / "stage_table.csv", lambda tmp: stage_rows.to_csv(tmp, index=False))

    result = run_forecast(model, snapshot.open_deals, horizon_days=horizon, as_of=snapshot.as_of, seed=seed)
    out.print(periods_rich(result))
    out.print(deals_rich(result.deals().head(10)))
    result.to_json(out_dir / "forecast.json")
    atomic_write(out_dir / "deals.csv", lambda tmp: result.deals().to_csv(tmp, index=False))
    ax = result.plot_fan()
    atomic_write(out_dir / "fan_chart.png", lambda tmp: ax.figure.savefig(tmp, dpi=120, bbox_inches="tight"))
    forecast_report(model, snapshot, forecast=result, compare_to=snapshot.as_of - pd.Timedelta(days=30),
                    seed=seed).write_html(out_dir / "report.html")

    happened = snapshot.realised(horizon).pipeline   # won by the deals open at the cut-off, in the horizon
    band = result.pipeline_revenue()
    inside = band["p10"] <= happened <= band["p90"]
    whole = stage_rows[stage_rows["segment"].isna()].set_index("stage")
    top = whole.iloc[0]
    out.print(
        f"\n{result.summary()}\n"
        f"What the synthetic CRM says happened: the deals open on {as_of} won {happened:,.0f} in the next "
        f"{horizon} days, {'inside' if inside else 'outside'} the 80% band.\n"
        f"A deal entering {whole.index[0]} is won with probability {top['p_win_from_entry']:.1%} (90% interval "
        f"{top['p_win_from_entry_low']:.1%}–{top['p_win_from_entry_high']:.1%}; synthetic truth "
        f"{_truth_p_win(truth, whole.index[0]):.1%}).\n"
        f"Files in {out_dir}/.",
        highlight=False,
    )


def _truth_p_win(truth: dict, stage: str) -> float:
    return next(c["p_win_from_entry"] for c in truth["cells"] if c["segment"] is None and c["stage"] == stage)
