"""What every CRM adapter returns: the canonical event log and the funnel that reads it.

A :class:`Converted` holds ``events`` (one row per stage a deal entered: ``deal_id``,
``stage``, ``timestamp``, ``amount`` (currency, may be NaN), optional ``close_date`` (the
CRM's expected close date as it stood at that event) and deal attributes usable as
segments), the ``funnel`` (open stages in order, won and lost labels, the CRM's own labels)
and ``notes`` for the user (what was dropped, merged or could not be known).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .._io import atomic_write
from ..data.events import FunnelDefinition
from ..errors import FunnelDataError

__all__ = ["Converted", "CANONICAL_COLUMNS"]

CANONICAL_COLUMNS = ("deal_id", "stage", "timestamp", "amount")


@dataclass
class Converted:
    """A converted export: the canonical ``events``, the ``funnel`` to read them with, and
    ``notes`` (see module doc)."""

    events: pd.DataFrame
    funnel: FunnelDefinition
    notes: list[str] = field(default_factory=list)

    def options(self) -> str:
        """The command-line options that read this log: ``--stages ... --won ... --lost ...``,
        quoted for a shell."""
        parts = ["--stages", ",".join(self.funnel.stages), "--won", ",".join(self.funnel.won)]
        if self.funnel.lost:
            parts += ["--lost", ",".join(self.funnel.lost)]
        return " ".join(shlex.quote(p) for p in parts)

    def write(self, path) -> Path:
        """Write the events to ``path`` (.csv or .parquet), atomically (temp file, then rename)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            return atomic_write(path, lambda tmp: self.events.to_parquet(tmp, index=False))
        if suffix == ".csv":
            return atomic_write(path, lambda tmp: self.events.to_csv(tmp, index=False))
        raise FunnelDataError("the output must be a .csv or .parquet file", source=str(path),
                              hint="Name it events.csv or events.parquet.")
