"""Turn the raw Olist marketing-funnel CSVs into a funnelsim event log.

The public Olist marketing-funnel dataset (Brazil, 2017-2018; CC BY-NC-SA 4.0, from Kaggle:
``marketing_qualified_leads.csv`` and ``closed_deals.csv``) is a real funnel to try funnelsim
on. The data are not shipped: download the two CSVs into a folder and pass it, or set
``$FUNNELSIM_OLIST_DIR``. The notebooks and the tests use this one copy of the conversion::

    from funnelsim.data.olist import FUNNEL_KWARGS, olist_events
    events, report = olist_events("data/olist")
    log = fs.read_events(events, fs.FunnelDefinition(**FUNNEL_KWARGS), dayfirst=True)

The funnel has one open stage and one outcome::

    MQL (first_contact_date) --> Won (won_date)

There are no lost events: a lead that never closed is open (right-censored) or dark.

Choices, made once here:

- **Dates** stay as the day-first text of the raw files (``08-03-2018``,
  ``06-03-2018 19:38``); read the result with ``read_events(..., dayfirst=True)``.
  pandas parses them (with an explicit format) only to compare a won date with its
  first contact date.
- **Amounts** are left empty (no ``amount`` column). ``declared_monthly_revenue`` is 0
  for ~95% of won deals, ranges up to 50,000,000 otherwise, and is the seller's own
  guess of *monthly revenue*, not a deal value; the funnel here counts deals.
- **Origin** is the only segment column, on every row of a deal; a blank origin stays
  blank (funnelsim shows it as the segment ``"(blank)"``).
- **Won before first contact** (negative durations; one deal in the public file):
  by default (``won_before_contact="move"``) the Won event is moved to the deal's
  first-contact date, so the deal is won with a zero-length MQL stay. Reason: the
  closed-deals file is the record that the seller signed, so the deal *was* won;
  dropping its Won row would turn a known win into an open lead (lowering conversion
  and making it look like it went dark), and dropping the deal would change the MQL
  count. Moving the date changes one duration by under two days, and funnelsim
  counts the zero-length stay visibly (``spells.counts["zero_length"]``).
  ``"drop"`` removes the Won row instead (the deal stays an open MQL);
  ``"keep"`` leaves the raw dates so ``read_events`` refuses the log.
- **Closed deals with no MQL row** (none in the public file) are left out: without a
  first contact they have no stay in the funnel. They are listed in the report.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

__all__ = ["olist_data_path", "olist_data_dir", "holds_olist", "olist_events", "read_raw", "FUNNEL_KWARGS", "MQL_FILE", "DEALS_FILE",
           "CONTACT_FORMAT", "WON_FORMAT", "ENV_VAR"]

MQL_FILE = "marketing_qualified_leads.csv"
DEALS_FILE = "closed_deals.csv"
CONTACT_FORMAT = "%d-%m-%Y"  # first_contact_date, e.g. 08-03-2018
WON_FORMAT = "%d-%m-%Y %H:%M"  # won_date, e.g. 06-03-2018 19:38
FUNNEL_KWARGS = {"stages": ("MQL",), "won": ("Won",), "lost": ()}  # FunnelDefinition(**FUNNEL_KWARGS)
ENV_VAR = "FUNNELSIM_OLIST_DIR"


def olist_data_path(start=None) -> Path:
    """Where the two Olist CSVs should be: ``$FUNNELSIM_OLIST_DIR`` if set, else the first
    ``data/olist`` or ``shared/data/olist`` folder in ``start`` (default: the working
    directory) or a folder above it, else ``data/olist`` under ``start``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    start = Path.cwd() if start is None else Path(start)
    for folder in (start, *start.resolve().parents):
        for candidate in (folder / "data" / "olist", folder / "shared" / "data" / "olist"):
            if (candidate / MQL_FILE).is_file():
                return candidate
    return start / "data" / "olist"


def olist_data_dir(start=None) -> Path | None:
    """:func:`olist_data_path` if both CSVs are there, else None."""
    folder = olist_data_path(start)
    return folder if holds_olist(folder) else None


def holds_olist(folder) -> bool:
    """Whether ``folder`` has both Olist CSVs."""
    return all((Path(folder) / name).is_file() for name in (MQL_FILE, DEALS_FILE))


def read_raw(data_dir) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both CSVs as text, blanks kept as empty strings (not NaN)."""
    data_dir = Path(data_dir)
    return tuple(pd.read_csv(data_dir / name, dtype=str, keep_default_na=False) for name in (MQL_FILE, DEALS_FILE))


def olist_events(data_dir, *, won_before_contact: str = "move") -> tuple[pd.DataFrame, dict]:
    """Canonical event log (``deal_id, stage, timestamp, origin``) and a report of quirks.

    One ``MQL`` row per lead at ``first_contact_date`` and one ``Won`` row per closed
    deal at ``won_date`` (text, day-first). ``won_before_contact`` is ``"move"``
    (default), ``"drop"`` or ``"keep"``; see the module docstring.

    The report has: ``mqls``, ``closed_deals``, ``won_events`` (Won rows written),
    ``blank_origin`` (MQLs with an empty origin), ``won_before_contact`` (list of
    ``{"mql_id", "first_contact_date", "won_date", "days_early"}``), its
    ``won_before_contact_handling``, ``won_without_mql`` (list of
    ``{"mql_id", "won_date"}``, left out), ``won_on_contact_day`` (count) and
    ``declared_revenue_zero`` (won deals declaring 0 monthly revenue).
    """
    if won_before_contact not in ("move", "drop", "keep"):
        raise ValueError(f"won_before_contact must be 'move', 'drop' or 'keep', got {won_before_contact!r}")
    mql, deals = read_raw(data_dir)
    for frame, name in ((mql, MQL_FILE), (deals, DEALS_FILE)):
        if frame["mql_id"].duplicated().any():
            raise ValueError(f"{name}: mql_id {frame.loc[frame['mql_id'].duplicated(), 'mql_id'].iloc[0]!r} "
                             "appears twice; expected one row per lead")

    contact = mql.set_index("mql_id")["first_contact_date"]
    origin = mql.set_index("mql_id")["origin"]
    known = deals["mql_id"].isin(contact.index)
    orphans = deals[~known]
    won = deals[known].copy()

    contact_at = pd.to_datetime(won["mql_id"].map(contact), format=CONTACT_FORMAT)
    won_at = pd.to_datetime(won["won_date"], format=WON_FORMAT)
    early = won_at < contact_at  # won before first contact: the loader would refuse it
    early_list = [
        {"mql_id": r.mql_id, "first_contact_date": contact[r.mql_id], "won_date": r.won_date,
         "days_early": round((c - w) / pd.Timedelta(days=1), 3)}
        for r, c, w in zip(won[early].itertuples(), contact_at[early], won_at[early], strict=True)
    ]
    if won_before_contact == "move":
        # The deal was won (it is in closed_deals) but the dates contradict each other;
        # keep the win and date it at first contact: a zero-length MQL stay, see module doc.
        won.loc[early, "won_date"] = won.loc[early, "mql_id"].map(contact)
    elif won_before_contact == "drop":
        won = won[~early]

    mql_rows = pd.DataFrame({"deal_id": mql["mql_id"], "stage": "MQL",
                             "timestamp": mql["first_contact_date"], "origin": mql["origin"]})
    won_rows = pd.DataFrame({"deal_id": won["mql_id"], "stage": "Won",
                             "timestamp": won["won_date"], "origin": won["mql_id"].map(origin)})
    events = pd.concat([mql_rows, won_rows], ignore_index=True)

    report = {
        "mqls": len(mql),
        "closed_deals": len(deals),
        "won_events": len(won_rows),
        "blank_origin": int((mql["origin"].str.strip() == "").sum()),
        "won_before_contact": early_list,
        "won_before_contact_handling": {
            "move": "Won date moved to the first-contact date (won, zero-length MQL stay)",
            "drop": "Won row dropped (the deal stays an open MQL)",
            "keep": "left as is (read_events will refuse the log)",
        }[won_before_contact],
        "won_without_mql": [{"mql_id": r.mql_id, "won_date": r.won_date} for r in orphans.itertuples()],
        "won_on_contact_day": int(((won_at >= contact_at) & (won_at.dt.normalize() == contact_at)).sum()),
        "declared_revenue_zero": int((pd.to_numeric(deals["declared_monthly_revenue"], errors="coerce") == 0).sum()),
    }
    return events, report
