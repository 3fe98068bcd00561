"""The Olist dataset for the tests: :mod:`funnelsim.data.olist`, found beside this clone
(``<repo>/../shared/data/olist``) or, for a clone elsewhere (CI), in the team's shared folder."""

from __future__ import annotations

import os
from pathlib import Path

from funnelsim.data.olist import ENV_VAR, MQL_FILE, holds_olist, olist_events
from funnelsim.data.olist import olist_data_path as _found

__all__ = ["ENV_VAR", "olist_data_path", "olist_data_dir", "olist_events"]

SHARED = Path("/work/shared/data/olist")  # the team's shared data, wherever the clone is


def olist_data_path() -> Path:
    """``$FUNNELSIM_OLIST_DIR`` if set, else the data beside this clone, else the shared folder."""
    if os.environ.get(ENV_VAR):
        return _found()
    beside = _found(Path(__file__).resolve().parents[1])
    return beside if (beside / MQL_FILE).is_file() or not SHARED.is_dir() else SHARED


def olist_data_dir() -> Path | None:
    """:func:`olist_data_path` if both CSVs are there, else None."""
    folder = olist_data_path()
    return folder if holds_olist(folder) else None
