"""``fit``: fit the Bayesian funnel model on the log as of a day and save it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ...model.funnel_model import DEFAULT_DRAWS, DEFAULT_TARGET_ACCEPT, DEFAULT_TUNE
from ..console import err, out
from ..inputs import fit_model, read_snapshot, stage_stats
from ..options import (
    AsOf,
    Chains,
    Columns,
    Dayfirst,
    Decimal,
    Draws,
    Drift,
    DriftPeriod,
    Encoding,
    Events,
    HistoryDays,
    Lost,
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
)

__all__ = ["fit"]


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
    drift: DriftPeriod = Drift.none,
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
    model = FunnelModel.from_snapshot(snapshot, sojourn=sojourn.value)
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
