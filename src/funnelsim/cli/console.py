"""Where the command line writes: results to stdout (``out``), progress and messages to
stderr (``err``), with a spinner or a progress bar only on a terminal."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

from rich.console import Console

__all__ = ["out", "err", "reading", "simulating", "progress", "wrote"]

out = Console(width=None if Console().is_terminal else 160)  # files and pipes get the whole table
err = Console(stderr=True)


def reading():
    """A spinner while the log is read (a terminal only)."""
    return err.status("Reading events...", spinner="dots") if err.is_terminal else nullcontext()


@contextmanager
def simulating(what: str):
    """Say what is being simulated, once, on stderr; a spinner on a terminal. The first run on
    a machine compiles the simulator (numba, cached on disk afterwards): about a minute on 2
    cores, so say so rather than sit silent."""
    err.print(f"{what} (the first run after installing funnelsim also compiles the simulator: "
              "about a minute)...", highlight=False)
    with err.status("Simulating...", spinner="dots") if err.is_terminal else nullcontext():
        yield


@contextmanager
def progress(label: str, total: int):
    """A progress bar on a terminal (quiet otherwise); yields a callback(done, total)."""
    if not err.is_terminal:
        yield None
        return
    from rich.progress import Progress

    with Progress(console=err, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done, _total: bar.update(task, completed=done)


def wrote(path) -> None:
    """Say that a file was written."""
    out.print(f"wrote {path}", highlight=False)
