"""The ``funnelsim`` command line: parses arguments, calls the API, prints results.

Exit codes: 0 ok, 2 bad input or usage, 1 anything else.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from .events import FunnelDataError

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

EventsArg = Annotated[Path, typer.Argument(help="Event log: a .csv or .parquet file.", show_default=False)]
StagesOpt = Annotated[str, typer.Option("--stages", help="Open stages in funnel order, comma-separated: Lead,Qualified,Proposal.", show_default=False)]
WonOpt = Annotated[str, typer.Option("--won", help="Label(s) meaning won, comma-separated.")]
LostOpt = Annotated[str, typer.Option("--lost", help="Label(s) meaning lost, comma-separated (may be empty).")]
AsOfOpt = Annotated[Optional[str], typer.Option("--as-of", help="See the CRM as it was at the end of this day (YYYY-MM-DD); later events are hidden. Default: the last event's day.", show_default=False)]
SegmentOpt = Annotated[Optional[str], typer.Option("--segment-by", help="Attribute column that splits deals into segments (region, source...).", show_default=False)]
DayfirstOpt = Annotated[bool, typer.Option("--dayfirst", help="Text dates are day-first (31-01-2024).")]
ColumnsOpt = Annotated[Optional[str], typer.Option("--columns", help="Rename the log's columns: 'Opportunity=deal_id,Stage=stage,Date=timestamp'.", show_default=False)]
JsonOpt = Annotated[Optional[Path], typer.Option("--json", help="Also write the result as JSON to this path (written atomically).", show_default=False)]


def main() -> None:
    """Entry point: bad input exits 2 with a short message and no traceback."""
    try:
        app(standalone_mode=False)
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
        if isinstance(exc, KeyboardInterrupt):
            sys.exit(130)
        err.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False)
        sys.exit(1)


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


def _load_spells(events, stages, won, lost, as_of, segment_by, dayfirst, columns):
    from .events import FunnelDefinition, read_events
    from .spells import to_spells

    funnel = FunnelDefinition(stages, won, lost)
    with err.status("Reading events...", spinner="dots") if err.is_terminal else nullcontext():
        log = read_events(events, funnel, columns=_columns(columns), dayfirst=dayfirst)
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
    from .funnel import funnel_table

    log, spells = _load_spells(events, stages, won, lost, as_of, segment_by, dayfirst, columns)
    table = funnel_table(spells, notes=log.notes)
    out.print(table)
    if json:
        table.to_json(json)
        out.print(f"wrote {json}", highlight=False)


@app.command()
def synth(
    out_path: Annotated[Path, typer.Argument(metavar="OUT", help="Where to write the events (.csv or .parquet); the truth goes beside it as OUT.truth.json.", show_default=False)],
    deals: Annotated[int, typer.Option("--deals", min=1, help="Number of deals.")] = 5000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same file.")] = 0,
    weeks: Annotated[int, typer.Option("--weeks", min=1, help="Weeks of deal inflow; the log ends (is censored) after them.")] = 104,
) -> None:
    """Write a synthetic CRM event log with known truth (stage conversion, P(win from stage
    entry), median days per stage and segment), for demos, tests and benchmarks.

    Example: funnelsim synth crm.csv --deals 20000 --seed 1
    """
    from . import synth as synth_module

    truth = synth_module.write(out_path, deals, seed=seed, config=synth_module.SynthConfig(weeks=weeks))
    out.print(f"wrote {out_path} ({deals} deals, as of {truth['as_of']}) and its truth JSON", highlight=False)


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the demo's files.")] = Path("demo_output"),
    deals: Annotated[int, typer.Option("--deals", min=100, help="Deals in the synthetic CRM.")] = 20000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 1,
) -> None:
    """Run the whole job on a synthetic CRM: generate it, read it back, and print its funnel
    by segment (the model and forecast steps join as they land).
    """
    from . import synth as synth_module
    from .funnel import funnel_table

    config = synth_module.SynthConfig()
    events_path = out_dir / "events.csv"
    truth = synth_module.write(events_path, deals, seed=seed, config=config)
    out.print(f"[bold]Synthetic CRM[/]: {deals} deals written to {events_path} (as of {truth['as_of']})", highlight=False)
    log, spells = _load_spells(events_path, ",".join(config.stages), config.won, config.lost,
                               None, config.segment_column, False, None)
    table = funnel_table(spells, notes=log.notes)
    out.print(table)
    table.to_json(out_dir / "funnel.json")
    whole = table.table[table.table["segment"].isna()].set_index("stage")
    top = config.stages[0]
    out.print(
        f"\nOf deals entering {top}, {whole.loc[config.won, 'through_conversion']:.1%} end up won "
        f"(a spreadsheet that counts open deals as lost would say "
        f"{whole.loc[config.won, 'through_conversion_naive']:.1%}). Files in {out_dir}/.",
        highlight=False,
    )


if __name__ == "__main__":
    main()
