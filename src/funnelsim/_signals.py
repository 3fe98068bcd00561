"""Ctrl-C (SIGINT) around the long steps, in one place: a fit must raise KeyboardInterrupt, not
return the draws made so far; backtest workers must leave the interrupt to their parent; a
model save must not be cut between its two files.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

__all__ = ["sigint_blocked", "interrupts_raised", "sigint_deferred"]


@contextmanager
def sigint_blocked():
    """Block SIGINT in this thread inside, so that processes it starts (spawned workers
    inherit the mask) never receive it: a Ctrl-C at the terminal goes to the whole process
    group, and a worker would print its own traceback, or (nutpie) stop its fit early and
    carry on. The parent stops the workers (``backtest._stop_workers``). A SIGINT arriving
    inside is delivered when this ends, or at once to another of the parent's threads."""
    if not hasattr(signal, "pthread_sigmask"):        # Windows: no signal masks
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def interrupts_raised():
    """Raise KeyboardInterrupt on leaving if SIGINT arrived inside, even when the code inside
    caught it: PyMC's samplers catch it and return the draws made so far as if sampling had
    ended. Only the main thread receives signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:              # e.g. a backtest worker: its parent stops it
        yield
        return
    arrived = []

    def handler(signum, frame):
        try:
            if callable(previous):
                previous(signum, frame)         # Python's default raises KeyboardInterrupt
            else:                               # SIG_DFL, or a handler set outside Python
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            arrived.append(signum)
            raise

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if arrived:
        raise KeyboardInterrupt


@contextmanager
def sigint_deferred():
    """Hold a SIGINT (Ctrl-C) arriving inside until the end, then handle it as usual (main
    thread only: the others never run signal handlers)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield                            # (None: a handler set outside Python, which we could not put back)
        return
    arrived = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: arrived.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if arrived and callable(previous):
            previous(signal.SIGINT, arrived[0])
        elif arrived and previous is not signal.SIG_IGN:
            raise KeyboardInterrupt
