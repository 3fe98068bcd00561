"""Bitrix24's deal stage history in, the canonical event log out
(``funnelsim convert bitrix24 HISTORY.csv [--deals DEALS.csv] [--category N]``).

The history is ``crm.stagehistory.list`` for deals: ``ID``, ``TYPE_ID`` (1 created, 2 moved,
3 closed), ``OWNER_ID`` (the deal), ``CREATED_TIME``, ``CATEGORY_ID`` (the pipeline),
``STAGE_SEMANTIC_ID`` (P in process, S won, F lost) and ``STAGE_ID`` (``NEW``, ``PREPARATION``,
``WON``, ``LOSE``; ``C1:NEW`` in category 1). The optional deal list (``crm.deal.list``) has
``ID``, ``TITLE``, ``STAGE_ID``, ``OPPORTUNITY``, ``CURRENCY_ID``, ``BEGINDATE``, ``CLOSEDATE``
and attributes (``SOURCE_ID``, ``ASSIGNED_BY_ID``, ``TYPE_ID``, custom ``UF_CRM_...`` fields).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..data.events import FunnelDefinition
from ..errors import FunnelDataError
from ._common import Converted
from ._read import ROW, parse_datetime, parse_text, raise_at, require
from .snapshots import finish, load, order_note, parse_amount, stage_order

__all__ = ["from_bitrix24", "STANDARD_STAGES"]

HISTORY = ("OWNER_ID", "CREATED_TIME", "STAGE_SEMANTIC_ID", "STAGE_ID")
# the default pipeline's process stages, in Bitrix24's order: the tie-break of the inferred order
STANDARD_STAGES = ("NEW", "PREPARATION", "PREPAYMENT_INVOICE", "EXECUTING", "FINAL_INVOICE")
# deal-list columns that are not attributes
NOT_ATTRIBUTES = ("ID", "STAGE_ID", "OPPORTUNITY", "CURRENCY_ID", "OPPORTUNITY_ACCOUNT", "ACCOUNT_CURRENCY_ID",
                  "BEGINDATE", "CLOSEDATE", "CATEGORY_ID", "STAGE_SEMANTIC_ID", "CLOSED", "DATE_CREATE",
                  "DATE_MODIFY", "IS_NEW", "IS_RECURRING", "IS_RETURN_CUSTOMER", "IS_REPEATED_APPROACH")


def from_bitrix24(history, *, deals=None, category=None, encoding: str | None = None) -> Converted:
    """Convert Bitrix24 deal stage history (and the deal list) to the canonical event log.

    One pipeline (``CATEGORY_ID``) at a time: with several in the history, ``category`` must name
    one (the error lists them). Each history row is an entry into its ``STAGE_ID`` at
    ``CREATED_TIME`` (an offset such as +03:00 is converted to UTC), in the order of time, then
    ``ID``; back-moves are kept, a row repeating the deal's stage is dropped. ``STAGE_SEMANTIC_ID``
    says which stages are won (S) and lost (F); a deal closed and then moved on again was reopened,
    and its earlier outcome is dropped (note). A deal whose history has no creation row
    (``TYPE_ID`` 1; history older than the feature was not kept) starts at its first recorded
    stage (note). Stage labels are Bitrix24's ``STAGE_ID`` s; the order is the order deals enter
    them, ties in Bitrix24's default order (``NEW``, ``PREPARATION``, ...), then first appearance.

    With ``deals``: every history deal must be in it (else an error naming the history row), its
    ``STAGE_ID`` must be a stage of the pipeline (else an error naming the deal-list row);
    ``OPPORTUNITY`` is the amount of every event (the history has no amounts: a note says so),
    ``CLOSEDATE`` the ``close_date``, other columns attributes. Amounts in several currencies are
    not added up silently: ``OPPORTUNITY_ACCOUNT`` (the amount in the account currency) is used if
    the list has it, otherwise it is an error. Deals of the list without history are dropped (note).
    """
    name, h = load(history, "stage history", {"history": ("ID", "TYPE_ID", *HISTORY, "CATEGORY_ID")}, encoding)
    require(h, HISTORY, name, "Bitrix24 stage history (crm.stagehistory.list)")
    notes: list[str] = []
    stage = parse_text(h, "STAGE_ID", name)
    h = h.assign(_deal=parse_text(h, "OWNER_ID", name).map(_id), _stage=stage,
                 _time=parse_datetime(h, "CREATED_TIME", name),
                 _semantic=parse_text(h, "STAGE_SEMANTIC_ID", name).str.upper(),
                 _category=(parse_text(h, "CATEGORY_ID", name, required=False).map(_id, na_action="ignore")
                            if "CATEGORY_ID" in h.columns else None),
                 _n=pd.to_numeric(h["ID"], errors="coerce") if "ID" in h.columns else h[ROW])
    h["_category"] = h["_category"].fillna(stage.str.extract(r"^C(\d+):", expand=False).fillna("0"))
    raise_at(h, ~h["_semantic"].isin(("P", "S", "F")), name, "STAGE_SEMANTIC_ID", "unknown stage semantics",
             "Bitrix24 writes P (in process), S (won) or F (lost).")
    if "TYPE_ID" in h.columns:
        h["_type"] = parse_text(h, "TYPE_ID", name).map(_id)
        raise_at(h, ~h["_type"].isin(("1", "2", "3")), name, "TYPE_ID", "unknown history type",
                 "Bitrix24 writes 1 (created), 2 (moved) or 3 (closed).")
    h = _one_category(h, name, category)
    prefix = stage.str.extract(r"^C(\d+):", expand=False).reindex(h.index).fillna("0")
    raise_at(h, (prefix != h["_category"]).to_numpy(), name, "STAGE_ID",
             f"this stage does not belong to pipeline {h['_category'].iloc[0]}",
             "Stages of pipeline N are written CN:STAGE (the default pipeline 0 has no prefix); check CATEGORY_ID.")
    semantic = h.groupby("_stage")["_semantic"].nunique()
    raise_at(h, h["_stage"].isin(semantic.index[semantic > 1]).to_numpy(), name, "STAGE_SEMANTIC_ID",
             "this stage has two different semantics", "Each STAGE_ID is either P, S or F; export the history again.")
    h = h.sort_values(["_deal", "_time", "_n", ROW], kind="stable")
    events = _events(h, notes)
    semantic_of = h.drop_duplicates("_stage").set_index("_stage")["_semantic"]
    won = tuple(s for s in dict.fromkeys(h["_stage"]) if semantic_of[s] == "S")
    lost = tuple(s for s in dict.fromkeys(h["_stage"]) if semantic_of[s] == "F")
    if not won:
        won = (f"C{h['_category'].iloc[0]}:WON" if h["_category"].iloc[0] != "0" else "WON",)
        notes.append(f"no deal was won in this pipeline; {won[0]} is the won label")
    attributes = None
    if deals is not None:
        events, attributes = _with_deals(events, h, name, deals, set(semantic_of.index), notes, encoding)
    else:
        events["amount"] = np.nan
        notes.append("no deal list: the events have no amounts (pass deals= with OPPORTUNITY)")
    open_stages = [s for s in dict.fromkeys(h["_stage"]) if semantic_of[s] == "P"]
    standard = {s: i for i, s in enumerate(STANDARD_STAGES)}
    open_stages.sort(key=lambda s: standard.get(s.split(":")[-1], len(standard)))
    order, forward, moves = stage_order(events, open_stages)
    notes.append(order_note(order, forward, moves, "the history", "; ties in Bitrix24's default order"))
    if h["CREATED_TIME"].astype("string").str.strip().str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", na=False).any():
        notes.append("CREATED_TIME values with a UTC offset (Bitrix24 writes the portal's zone) were converted to UTC")
    return finish(events, FunnelDefinition(tuple(order), won, lost), notes, attributes)


def _id(value) -> str:
    text = str(value).strip()
    return text[:-2] if text.endswith(".0") and text[:-2].isdigit() else text


def _one_category(h: pd.DataFrame, name: str, category) -> pd.DataFrame:
    per = h.groupby("_category")["_deal"].nunique().sort_index()
    listed = ", ".join(f"{c} ({n} deals)" for c, n in per.items())
    if category is None:
        if len(per) > 1:
            raise FunnelDataError(f"the history holds several pipelines (CATEGORY_ID): {listed}", source=name,
                                  column="CATEGORY_ID", hint=f"Convert one at a time: category={per.index[0]} "
                                                             f"(--category {per.index[0]}).")
        return h
    chosen = _id(category)
    if chosen not in per.index:
        raise FunnelDataError("no history rows in this pipeline", source=name, column="CATEGORY_ID", value=chosen,
                              hint=f"Pipelines in the history: {listed}.")
    return h[h["_category"] == chosen]


def _events(h: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    repeat = h["_stage"] == h.groupby("_deal", sort=False)["_stage"].shift()
    h = h[~repeat]
    terminal = h["_semantic"] != "P"
    followed = h.groupby("_deal", sort=False).cumcount(ascending=False) > 0
    reopened = terminal & followed
    if reopened.any():
        notes.append(f"{h.loc[reopened, '_deal'].nunique()} deal(s) were closed and then moved on again "
                     f"(reopened): their earlier outcome was dropped")
    h = h[~reopened]
    h = h[h["_stage"] != h.groupby("_deal", sort=False)["_stage"].shift()]  # A, closed, reopened in A: one stay
    if "_type" in h.columns:
        no_start = h.groupby("_deal", sort=False)["_type"].apply(lambda t: "1" not in set(t))
        if no_start.any():
            notes.append(f"{int(no_start.sum())} deal(s) have no creation row (TYPE_ID 1) in the history: they "
                         f"start at their first recorded stage")
    return pd.DataFrame({"deal_id": h["_deal"].to_numpy(), "stage": h["_stage"].to_numpy(),
                         "timestamp": h["_time"].to_numpy()})


def _with_deals(events, h, history_name, deals, stages, notes, encoding=None):
    name, d = load(deals, "deals", {"deals": ("ID", "STAGE_ID", "OPPORTUNITY", "CURRENCY_ID")}, encoding)
    require(d, ("ID",), name, "Bitrix24 deal list (crm.deal.list)")
    ids = parse_text(d, "ID", name).map(_id)
    raise_at(d, ids.duplicated().to_numpy(), name, "ID", "this deal id appears twice", "List each deal once.")
    raise_at(h, ~h["_deal"].isin(ids).to_numpy(), history_name, "OWNER_ID", "this deal is not in the deal list",
             f"Export the history and {name} together (same pipeline and filter), or remove the deal's rows.")
    in_history = ids.isin(events["deal_id"])
    if (~in_history).any():
        notes.append(f"dropped {int((~in_history).sum())} deal(s) of {name} with no stage history")
    d, ids = d[in_history.to_numpy()], ids[in_history.to_numpy()]
    if "STAGE_ID" in d.columns:
        current = parse_text(d, "STAGE_ID", name, required=False)
        raise_at(d, (current.notna() & ~current.isin(stages)).to_numpy(), name, "STAGE_ID", "unknown stage id",
                 f"The history of this pipeline has the stages {', '.join(sorted(stages))}; is the deal in "
                 f"another pipeline (CATEGORY_ID), or the history incomplete?")
        last = events.groupby("deal_id", sort=False)["stage"].last()
        differs = int((current.notna() & (current.to_numpy() != last.reindex(ids).to_numpy())).sum())
        if differs:
            notes.append(f"{differs} deal(s) are in another stage in the deal list than their history's last; "
                         f"the history is kept")
    amount = np.full(len(d), np.nan)
    if "OPPORTUNITY" in d.columns:
        amount = parse_amount(d, "OPPORTUNITY", name).to_numpy()
        notes.append("Bitrix24's stage history has no amounts: every event carries the deal's current OPPORTUNITY")
    if "CURRENCY_ID" in d.columns:
        currencies = parse_text(d, "CURRENCY_ID", name, required=False).value_counts()
        if len(currencies) > 1:
            listed = ", ".join(f"{c} ({n} deals)" for c, n in currencies.items())
            if "OPPORTUNITY_ACCOUNT" not in d.columns:
                raise FunnelDataError(f"the deals are in several currencies: {listed}", source=name,
                                      column="CURRENCY_ID",
                                      hint="Amounts in different currencies cannot be added up. Export "
                                           "OPPORTUNITY_ACCOUNT (the amount in the account currency), or "
                                           "convert OPPORTUNITY to one currency.")
            amount = parse_amount(d, "OPPORTUNITY_ACCOUNT", name).to_numpy()
            notes.append(f"deals in several currencies ({listed}): amounts are OPPORTUNITY_ACCOUNT, in the account "
                         f"currency")
        elif len(currencies) == 1:
            notes.append(f"amounts are in {currencies.index[0]}")
    by_deal = pd.DataFrame({"amount": amount}, index=ids.to_numpy())
    if "CLOSEDATE" in d.columns:
        by_deal["close_date"] = parse_datetime(d, "CLOSEDATE", name, required=False).to_numpy()
    events = events.join(by_deal, on="deal_id")
    columns = [c for c in d.columns if c not in (*NOT_ATTRIBUTES, ROW)]
    attributes = d[columns].assign(deal_id=ids.to_numpy())
    return events, attributes

