"""CRM exports in, the canonical event log out: ``funnelsim convert FORMAT ...`` in Python.

Each ``from_<format>(...)`` returns a :class:`funnelsim.adapters.Converted`: ``events`` (the
canonical log: deal_id, stage, timestamp, amount, optional close_date, deal attributes),
``funnel`` (stage order, won and lost labels, the CRM's own labels) and ``notes``; its
``options()`` are the ``--stages/--won/--lost`` options that read it, and ``write(path)``
saves it as .csv or .parquet.

Formats (one module each, loaded on first use): ``salesforce``, ``hubspot``, ``pipedrive``,
``bitrix24``, ``snapshots`` and ``wide``.
"""

from __future__ import annotations

import importlib

from ._common import Converted

FORMATS = ("salesforce", "hubspot", "pipedrive", "bitrix24", "snapshots", "wide")

__all__ = ["Converted", "FORMATS", *(f"from_{name}" for name in FORMATS)]


def __getattr__(name: str):
    format_name = name.removeprefix("from_")
    if name.startswith("from_") and format_name in FORMATS:
        return getattr(importlib.import_module(f"{__name__}.{format_name}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
