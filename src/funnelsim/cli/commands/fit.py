"""``fit``: fit the Bayesian funnel model on the log as of a day and save it."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ...model.funnel_model import DEFAULT_DRAWS, DEFAULT_TARGET_ACCEPT, DEFAULT_TUNE
from ..console import err, out, write_outputs, wrote
from ..inputs import fit_model, model_for, read_snapshot, stage_stats
from ..options import (
    OUTPUT,
    AsOf,
    Chains,
    Columns,
    Csv,
    Dayfirst,
    Decimal,
    Draws,
    DriftPeriod,
    Encoding,
    Events,
    HistoryDays,
    Json,
    Lost,
    ModelDir,
    Revival,
    Sampler,
    SamplerName,
    Seed,
    SegmentBy,
    SegmentFrom,
    SegmentRow,
    Sheet,
    Sojourn,
    SojournFamily,
    Stages,
    Strict,
    Table,
    TargetAccept,
    Tune,
    Won,
    Xlsx,
    png_file,
)

__all__ = ["fit", "drift"]


def fit(
    stages: Stages,
    out_dir: Annotated[Path, typer.Option(
        "--out", help="Folder to save the fitted model in (netCDF + JSON), e.g. models/q3.", show_default=False)],
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
    draws: Draws = DEFAULT_DRAWS,
    tune: Tune = DEFAULT_TUNE,
    chains: Chains = 4,
    seed: Seed = 0,
    sojourn: SojournFamily = Sojourn.lognormal,
    revival: Revival = None,
    sampler: SamplerName = Sampler.nutpie,
    target_accept: TargetAccept = DEFAULT_TARGET_ACCEPT,
    strict: Strict = False,
) -> None:
    """Fit the Bayesian funnel model (conversion and time in stage per stage and segment,
    open deals censored, stalled deals modelled) and save it.

    Example: funnelsim fit crm.csv --stages Prospecting,Qualified,Proposal,Negotiation --won Won --lost Lost --segment-by segment --out models/crm
    """
    from ...model.funnel_model import FunnelModel
    from ...report.render import diagnostics_panel, stage_table_rich

    snapshot = read_snapshot(events, stages, won, lost, table=table, as_of=as_of, segment_by=segment_by,
                             history_days=history_days, drift=drift, dayfirst=dayfirst, decimal=decimal, columns=columns, encoding=encoding, sheet=sheet,
                             segment_from=segment_from.value)
    stage_stats(snapshot)  # says how much of the history a --history-days window keeps
    model = FunnelModel.from_snapshot(snapshot, sojourn=sojourn.value,
                                      model_config=None if revival is None else {"revival": revival})
    fit_model(model, draws, tune, chains, seed, sampler.value, target_accept)
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


class Every(Enum):
    """The entry cohorts the funnel is followed over."""

    week = "week"
    month = "month"
    quarter = "quarter"


Quantity = Enum("Quantity", {name: name for name in ("p_advance", "p_win_from_entry", "median_days")})


def drift(
    stages: Stages,
    events: Events = None,
    table: Table = None,
    won: Won = "Won",
    lost: Lost = "Lost",
    as_of: AsOf = None,
    segment_by: SegmentBy = None,
    every: Annotated[Every, typer.Option(
        "--every", help="The entry cohorts: the week, month or quarter a stay begins in.")] = Every.month,
    history_days: HistoryDays = None,
    dayfirst: Dayfirst = False,
    decimal: Decimal = ".",
    columns: Columns = None,
    encoding: Encoding = None,
    sheet: Sheet = None,
    segment_from: SegmentFrom = SegmentRow.first,
    draws: Draws = DEFAULT_DRAWS,
    tune: Tune = DEFAULT_TUNE,
    chains: Chains = 4,
    seed: Seed = 0,
    model_dir: ModelDir = None,
    strict: Strict = False,
    revival: Revival = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", metavar="PNG", callback=png_file,
        help="Also save the chart of --quantity by cohort, a line and its 90% band per stage, as this PNG.",
        show_default=False, rich_help_panel=OUTPUT)] = None,
    quantity: Annotated[Quantity, typer.Option(
        "--quantity", help="What --plot shows.", rich_help_panel=OUTPUT)] = Quantity.p_advance,
    json: Json = None,
    csv: Csv = None,
    xlsx: Xlsx = None,
) -> None:
    """The funnel over time: per stage and entry cohort (the period a stay begins in), the stays
    that entered and P(advance), P(win from entry) and median days in stage with 90% intervals,
    from the model whose conversion and time in stage drift over cohorts (--drift). The whole
    funnel is printed; --json, --csv and --xlsx hold every segment too.

    Example: funnelsim drift crm.csv --stages Prospecting,Qualified,Proposal,Negotiation --won Won --lost Lost --segment-by segment --every month --json drift.json
    """
    from ...report.render import cohorts_rich, diagnostics_panel

    snapshot = read_snapshot(events, stages, won, lost, table=table, as_of=as_of, segment_by=segment_by,
                             history_days=history_days, drift=every.value, dayfirst=dayfirst, decimal=decimal,
                             columns=columns, encoding=encoding, sheet=sheet, segment_from=segment_from.value)
    model = model_for(snapshot, model_dir, draws=draws, tune=tune, chains=chains, seed=seed, strict=strict,
                      revival=revival)
    found = model.cohort_table()
    for part in cohorts_rich(found):
        out.print(part)
    out.print(diagnostics_panel(model.diagnostics))
    if plot:
        from ...report.charts import plot_drift, save_png

        save_png(plot_drift(found, quantity.value).figure, plot)
        wrote(plot)
    if json or csv or xlsx:
        write_outputs(cohorts_payload(model, found), json=json, csv=csv, xlsx=xlsx)


def cohorts_payload(model, found) -> dict:
    """The drift command's JSON (docs/json.md): as_of, every, and a row per cohort, stage and
    segment (null: the whole funnel), each quantity as {mean, low, high}."""
    from ...model.drift import COHORT_QUANTITIES

    rows = [{"cohort": r["cohort"], "stage": r["stage"], "segment": None if r["segment"] is None else r["segment"],
             "entered": int(r["entered"]),
             **{q: {"mean": r[q], "low": r[f"{q}_low"], "high": r[f"{q}_high"]} for q in COHORT_QUANTITIES}}
            for r in found.astype(object).where(found.notna(), None).to_dict(orient="records")]
    diag = model.diagnostics
    return {"as_of": str(model.stats.as_of.date()), "every": model.cohorts.every, "cohorts": rows,
            "diagnostics": {k: diag[k] for k in ("r_hat_max", "ess_bulk_min", "ess_tail_min", "divergences",
                                                 "converged", "problems")}}
