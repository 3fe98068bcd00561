"""From the shared options to what every command computes on: the :class:`Snapshot` of the
log as of a day and the funnel model fitted (or loaded) on it."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ..errors import FunnelDataError
from ..model.funnel_model import DEFAULT_TARGET_ACCEPT
from .console import err, out, reading
from .options import parse_columns, parse_date

if TYPE_CHECKING:
    from ..data.snapshot import Snapshot
    from ..model.funnel_model import FunnelModel

__all__ = ["event_source", "read_snapshot", "refuse_as_of_outside_log", "stage_stats", "fit_model", "model_for", "new_deal_inflow", "print_losses"]


def event_source(events: Path | None, table: str | None):
    """What to read: the EVENTS file or the ``--table`` URL, exactly one of them."""
    from ..data._files import TableURL, is_table_url

    if events is not None and table:
        raise FunnelDataError("give the event log as a file or as --table URL, not both", source="--table",
                              value=table, hint="Drop the file argument to read the table, or --table to read the file.")
    if table:
        if not is_table_url(table):
            raise FunnelDataError("this is not a database URL", source="--table", value=table,
                                  hint="For example --table 'postgres://user@host:5432/db?table=events'; give a .csv or "
                                       ".parquet file as the first argument instead of --table.")
        return TableURL(table, option="--table")
    if events is None:
        raise FunnelDataError("no event log given", hint="Give a .csv or .parquet file as the first argument, or a "
                                                         "database table with --table URL.")
    return events


def drift_every(drift, model_dir=None) -> str | None:
    """The entry cohorts to fit over: ``--drift`` when given (a :class:`Drift`, or a period's
    name), else a ``--model``'s own setting, else :data:`funnelsim.defaults.DRIFT_EVERY` (the
    default the backtests chose)."""
    import json

    if isinstance(drift, str):
        return drift
    if drift is not None:
        return drift.every
    if model_dir is not None:
        try:
            return json.loads((Path(model_dir) / "model.json").read_text())["stats_metadata"].get("every")
        except (OSError, ValueError, KeyError):
            pass                 # loading the model says what is wrong with it
    from ..defaults import DRIFT_EVERY

    return DRIFT_EVERY


def read_snapshot(events, stages: str, won: str, lost: str, *, table: str | None = None, as_of: str | None = None,
                  segment_by: str | None = None, history_days: float | None = None, drift=None, model_dir=None,
                  dayfirst: bool = False,
                  decimal: str = ".", columns: str | None = None, encoding: str | None = None,
                  sheet: str | None = None, segment_from: str = "first") -> Snapshot:
    """Read the log (the file ``events`` or the ``table`` URL, with the reading options as given)
    and stand on ``as_of``; its stays are built here, so a log that cannot be read fails before
    anything is fitted. What the user must know about how the file was read (which sheet, deals
    whose segment is filled only after their first row) is printed on stderr."""
    from ..data._files import SHEET_NOTE
    from ..data.events import FunnelDefinition, read_events
    from ..data.snapshot import Snapshot
    from ..data.spells import segment_note

    funnel = FunnelDefinition(stages, won, lost)
    source = event_source(events, table)
    day = None if as_of is None else parse_date(as_of, "--as-of", dayfirst=dayfirst)
    with reading():
        log = read_events(source, funnel, columns=parse_columns(columns), dayfirst=dayfirst, decimal=decimal,
                          encoding=encoding, sheet=sheet, segment_from=segment_from)
        if day is not None:
            refuse_as_of_outside_log(log, day, as_of)
        snapshot = Snapshot(log, day, segment_by=segment_by, history_days=history_days,
                            every=drift_every(drift, model_dir))
        snapshot.spells  # noqa: B018 - built now, under the spinner
        short = snapshot.drift_or_none()
    told = [n for n in log.notes if n.startswith(SHEET_NOTE)]
    if short:
        told.append(short)
    if snapshot.spells.filled_later:
        told.append(segment_note(snapshot.spells.filled_later, segment_by))
    for note in told:
        err.print(f"note: {note}", highlight=False, soft_wrap=True, markup=False)
    return snapshot


def refuse_as_of_outside_log(log, day, given: str) -> None:
    """An as-of after the log's last event would age every open deal past what the log
    knows (they all turn "dark"), one before its first event sees nothing: refuse both,
    saying the days the log covers."""
    import pandas as pd

    span = log.table.aggregate(first=log.table.timestamp.min(), last=log.table.timestamp.max()).to_pandas().iloc[0]
    first, last = (pd.Timestamp(span[k]).normalize() for k in ("first", "last"))
    shown = f"{given.strip()!r}" + ("" if given.strip() == str(day.date()) else f" ({day.date()})")
    if day > last:
        raise FunnelDataError(f"{shown} is after the log's last event ({last.date()}), so every open deal "
                              "would be aged past what the log knows", source="option --as-of",
                              hint=f"Give --as-of {last.date()} or earlier (or leave it out: the last event's day).")
    if day < first:
        raise FunnelDataError(f"{shown} is before the log's first event ({first.date()}): no deal is visible",
                              source="option --as-of", hint=f"Give a day from {first.date()} to {last.date()}.")


def stage_stats(snapshot: Snapshot):
    """The statistics the model learns from; with a history window, say how much of the
    history it keeps."""
    stats = snapshot.stage_stats
    if snapshot.history_days is not None:
        err.print(f"Learning from the {stats.stays:,} of {snapshot.spells.counts.get('spells', 0):,} stays that "
                  f"began on or after {snapshot.history_start.date()} (--history-days {snapshot.history_days:g}).",
                  highlight=False)
    return stats


def fit_model(model: FunnelModel, draws: int, tune: int, chains: int, seed: int, sampler: str = "nutpie",
              target_accept: float = DEFAULT_TARGET_ACCEPT) -> None:
    """Fit with a progress bar on a terminal; the diagnostics panel, not a warning, reports
    a failed fit."""
    err.print(f"Fitting {len(model.data.stages)} stages x {len(model.data.segments)} segment(s), "
              f"{chains} chains x {draws} draws (compiling a model of a new shape first takes 10-25 s; later fits "
              "load it in seconds)...", highlight=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(draws=draws, tune=tune, chains=chains, sampler=sampler, random_seed=seed,
                  target_accept=target_accept, progressbar=err.is_terminal)
    print_absent(model)


def print_absent(model: FunnelModel) -> None:
    """A note per destination the model treats as impossible in a segment (ModelData.absent)."""
    for cell in model.data.absent_cells:
        err.print(f"Note: {cell['stage']} -> {cell['destination']} is treated as impossible in segment "
                  f"{cell['segment']!r}: none of its {cell['exits']:,} exits from {cell['stage']} went there, "
                  f"against {cell['expected']:.0f} expected from the other segments.", highlight=False)


def model_for(snapshot: Snapshot, model_dir: Path | None, *, draws: int, tune: int, chains: int, seed: int,
              strict: bool, revival: bool | None = None) -> FunnelModel:
    """The model of the snapshot: the saved one in ``model_dir`` (refused unless fitted on
    these statistics, or with another ``revival`` than it was fitted with), else fitted now
    with the default family and sampler and ``revival`` (None: the model's default); under
    ``strict`` a model that failed its diagnostics exits 3."""
    from ..model.funnel_model import FunnelModel
    from ..report.render import diagnostics_panel

    stats = stage_stats(snapshot)
    if model_dir:
        model = FunnelModel.load(model_dir, stats)
        if revival is not None and bool(model.config["revival"]) != revival:
            fitted = "--revival" if model.config["revival"] else "--no-revival"
            raise FunnelDataError(f"the saved model was fitted with {fitted}", source=str(model_dir),
                                  column="--revival", value="--revival" if revival else "--no-revival",
                                  hint=f"Leave the option out to use the model as it is, or fit again: "
                                       f"funnelsim fit ... {'--revival' if revival else '--no-revival'} --out DIR.")
    else:
        model = FunnelModel.from_snapshot(snapshot, model_config=None if revival is None else {"revival": revival})
        fit_model(model, draws, tune, chains, seed)
    if strict and not model.diagnostics["converged"]:
        out.print(diagnostics_panel(model.diagnostics))
        err.print("--strict: the fit failed its diagnostics; nothing written.", highlight=False)
        raise typer.Exit(3)
    return model


def new_deal_inflow(snapshot: Snapshot):
    """The weekly inflow of new deals as of the snapshot (None, with a note, when the log
    covers under two weeks)."""
    inflow = snapshot.new_deals
    if inflow.empty:
        err.print("The log covers under two weeks before --as-of: new deals are not simulated.", highlight=False)
        return None
    return inflow


def print_losses(model: FunnelModel) -> None:
    """One line: where deals are lost or go dark, as shares of eventual losses."""
    losses = model.where_deals_are_lost()
    whole = losses[losses["segment"].isna()]
    ranked = ", ".join(f"{r.stage} {r.loss_share:.0%}" for r in whole.itertuples())
    out.print(f"Where deals are lost or go dark (share of eventual losses): {ranked}", highlight=False)
