"""Where the command line writes: results to stdout (``out``), progress and messages to
stderr (``err``), with a spinner or a progress bar only on a terminal."""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext

from rich.console import Console

__all__ = ["out", "err", "reading", "simulating", "progress", "wrote", "write_outputs", "output_width"]

FILE_WIDTH = 160  # the width of output to a file or pipe when $COLUMNS does not say


def output_width(environ=os.environ, terminal: bool | None = None) -> int | None:
    """The width results are laid out to: ``$COLUMNS`` when set (a terminal, a file or a
    pipe alike), else the terminal's own (None), else :data:`FILE_WIDTH`."""
    columns = environ.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    terminal = Console().is_terminal if terminal is None else terminal
    return None if terminal else FILE_WIDTH


out = Console(width=output_width())  # tables never cut a cell at any width (report/_tables.py)
err = Console(stderr=True)


def reading():
    """A spinner while the log is read (a terminal only)."""
    return err.status("Reading events...", spinner="dots") if err.is_terminal else nullcontext()


@contextmanager
def simulating(what: str, runs: str | None = None):
    """Say what is being simulated, once, on stderr; on a terminal a spinner, or with ``runs``
    (what is counted: "scenarios", "levers") a progress bar whose callback(done, total) is
    yielded. The first run on a machine compiles the simulator (numba, cached on disk
    afterwards): about a minute on 2 cores, so say so rather than sit silent."""
    err.print(f"{what} (the first run after installing funnelsim also compiles the simulator: "
              "about a minute)...", highlight=False)
    if runs is not None:
        with progress(runs, None) as advance:
            yield advance
        return
    with err.status("Simulating...", spinner="dots") if err.is_terminal else nullcontext():
        yield None


@contextmanager
def progress(label: str, total: int | None):
    """A progress bar on a terminal (quiet otherwise); yields a callback(done, total). A
    ``total`` of None is learnt from the first callback."""
    if not err.is_terminal:
        yield None
        return
    from rich.progress import Progress

    with Progress(console=err, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done, of: bar.update(task, completed=done, total=of)


def wrote(path) -> None:
    """Say that a file was written."""
    out.print(f"wrote {path}", highlight=False)


def write_outputs(payload: dict, *, json=None, csv=None, xlsx=None) -> None:
    """Write a command's JSON payload to ``--json`` and its tables (report/export.py) to
    ``--csv DIR`` and ``--xlsx PATH``, all atomically, and say so."""
    if json:
        from .._io import write_json

        write_json(json, payload)
        wrote(json)
    if csv or xlsx:
        from ..report.export import write_tables

        for path in write_tables(payload, csv=csv, xlsx=xlsx):
            wrote(path)
