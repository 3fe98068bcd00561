"""The ``funnelsim`` command line: the typer app, its entry point and exit codes.

Exit codes: 0 ok, 2 bad input or usage, 3 a fit that failed its diagnostics under
``--strict``, 130 interrupted (Ctrl-C; nothing written), 1 anything else.

The commands live in :mod:`funnelsim.cli.commands`, the options they share in
:mod:`funnelsim.cli.options`; this module registers them, in the order ``--help`` lists them.
"""

from __future__ import annotations

import signal
import sys

import typer

from ..data.events import FunnelDataError
from .commands import backtest, convert, describe, fit, report, simulate, synthetic
from .console import err

__all__ = ["app", "main", "INTERRUPTED"]

INTERRUPTED = 130   # exit code of a command stopped by SIGINT (128 + 2, as shells report it)

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

# the commands in the order --help lists them, each with its line there (its docstring is its own --help)
COMMANDS = (
    (convert.convert, "Convert a CRM export (Salesforce, HubSpot, Pipedrive, ...) to the event log."),
    (describe.inspect, "A first look at a log: columns, stage labels, dates, the options to read it."),
    (describe.funnel, "Funnel table of the log: conversion, days in stage, going-dark deals."),
    (fit.fit, "Fit the Bayesian funnel model and save it."),
    (describe.stages, "A saved model's stage table and diagnostics."),
    (fit.drift, "The funnel over time: conversion and days in stage by entry cohort."),
    (simulate.forecast, "Revenue forecast: the band, revenue per period, the chance of reaching a target."),
    (simulate.whatif, "What-if scenarios against the baseline forecast, as paired differences."),
    (simulate.bottlenecks, "Where to focus: the revenue each stage's conversion or speed is worth."),
    (report.report, "The quarterly forecast report: one self-contained HTML file (and PDF)."),
    (backtest.backtest, "Replay history at past dates, forecast and score against what happened."),
    (synthetic.synth, "Write a synthetic CRM event log with known truth."),
    (synthetic.demo, "The whole job on a synthetic CRM: funnel, fit, forecast, what happened."),
)
for command, line in COMMANDS:
    app.command(short_help=line)(command)


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
            # typer 0.29 checks choices with pydantic, whose message starts "Value error, "
            message = exc.format_message().replace(": Value error, ", ": ")
            err.print(f"[bold red]usage error:[/] {message}", highlight=False, soft_wrap=True)
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


if __name__ == "__main__":
    main()
