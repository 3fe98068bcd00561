"""Pipedrive's deal flow (or changelog) and deals export in, the canonical event log out
(``funnelsim convert pipedrive FLOW.csv --deals DEALS.csv``).

The flow has one row per field change of a deal: the deal id (``item_id`` or ``deal_id``),
``field_key``, ``old_value``, ``new_value``, ``log_time``, and, where the API's
``additional_data`` was kept, ``old_value_formatted`` / ``new_value_formatted`` (for a
``stage_id`` change these are the stage names). The deals export has ``Deal - ID``,
``Deal - Stage`` (the stage's name), ``Deal - Status`` (open, won, lost, deleted),
``Deal - Value``, ``Deal - Deal created``, ``Deal - Won time``, ``Deal - Lost time``,
``Deal - Expected close date`` and other ``Deal - X`` columns, which become attributes ``X``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..data.events import FunnelDefinition
from ..errors import FunnelDataError
from ._common import Converted
from ._read import ROW, parse_datetime, parse_text, raise_at, require
from .snapshots import find_column, finish, load, order_note, parse_amount, stage_order

__all__ = ["from_pipedrive", "FLOW_ALIASES"]

FLOW_ALIASES = {
    "deal_id": ("item_id", "deal_id", "Deal - ID"),
    "field_key": ("field_key", "field"),
    "old_value": ("old_value",),
    "new_value": ("new_value",),
    "log_time": ("log_time", "time", "timestamp"),
    "old_name": ("old_value_formatted", "additional_data.old_value_formatted"),
    "new_name": ("new_value_formatted", "additional_data.new_value_formatted"),
}
ID, STAGE, STATUS, CREATED = "Deal - ID", "Deal - Stage", "Deal - Status", "Deal - Deal created"
VALUE, WON_TIME, LOST_TIME = "Deal - Value", "Deal - Won time", "Deal - Lost time"
CLOSE, CURRENCY, PIPELINE = "Deal - Expected close date", "Deal - Currency", "Deal - Pipeline"
USED = (ID, STAGE, STATUS, CREATED, VALUE, WON_TIME, LOST_TIME, CLOSE)
WON, LOST = "Won", "Lost"
STATUSES = ("open", "won", "lost", "deleted")


def from_pipedrive(flow, *, deals, encoding: str | None = None) -> Converted:
    """Convert a Pipedrive deal flow and deals export to the canonical event log.

    Each deal enters its first stage at ``Deal - Deal created`` (the ``old_value`` of its first
    ``stage_id`` change, or its current stage if it never moved) and each later stage at the
    ``log_time`` of the ``stage_id`` change; back-moves are kept. A won or lost deal (``Deal -
    Status``) ends with a ``Won`` / ``Lost`` event at ``Deal - Won time`` / ``Deal - Lost time``
    (or the flow's last ``status`` change to it); stage changes logged after it are dropped, and a
    deal won or lost and then reopened counts only its final status (notes). Deleted deals are
    dropped. ``value`` changes set the amount from their time on (the won event carries the final
    ``Deal - Value``) and ``expected_close_date`` changes the ``close_date``; other fields are
    ignored, with a note.

    Stage names: Pipedrive logs stage ids. They are named from ``new_value_formatted`` /
    ``old_value_formatted`` when the flow has them, and from the deals export (a deal's last
    ``stage_id`` is the stage ``Deal - Stage`` names). An id no source names is an error; if the
    deals export itself gives ids, the ids are the labels. Stage order: the order deals enter the
    stages, ties by stage id (a note says which, and whether the ids agree).

    Deals in several pipelines (``Deal - Pipeline``) or currencies (``Deal - Currency``) are an
    error: pass a DataFrame of one pipeline, in one currency.
    """
    fname, f = load(flow, "deal flow", FLOW_ALIASES, encoding)
    dname, d = load(deals, "deals", {"deals": USED}, encoding)
    notes: list[str] = []
    deal_table = _deals(d, dname, notes)
    fc = {key: find_column(f, fname, names, required=key not in ("old_value", "old_name", "new_name"), canonical=key)
          for key, names in FLOW_ALIASES.items()}
    f = f.assign(_deal=parse_text(f, fc["deal_id"], fname).map(_id), _time=parse_datetime(f, fc["log_time"], fname),
                 _key=parse_text(f, fc["field_key"], fname).str.lower(),
                 _new=parse_text(f, fc["new_value"], fname, required=False),
                 _old=parse_text(f, fc["old_value"], fname, required=False) if fc["old_value"] else None)
    raise_at(f, ~f["_deal"].isin(deal_table.index), fname, fc["deal_id"], "this deal is not in the deals export",
             f"Export the flow and {dname} together (same filter, same moment), or remove the deal's rows.")
    deleted = deal_table.index[deal_table["status"] == "deleted"]
    if len(deleted):
        notes.append(f"dropped {len(deleted)} deleted deal(s)")
        deal_table = deal_table.drop(deleted)
        f = f[~f["_deal"].isin(deleted)]
    f = f.sort_values(["_deal", "_time", ROW], kind="stable")
    moves = f[f["_key"] == "stage_id"]
    names = _stage_names(moves, fc, fname, deal_table, dname, notes)
    events = _stage_events(moves, deal_table, names, fc, fname)
    events = _outcomes(events, f, deal_table, dname, notes)
    events = _amounts(events, f, fc, fname, deal_table)
    ignored = f.loc[~f["_key"].isin(("stage_id", "status", "value", "expected_close_date")), "_key"].value_counts()
    if len(ignored):
        notes.append(f"ignored {int(ignored.sum())} flow row(s) of other fields ("
                     + ", ".join(f"{k}: {n}" for k, n in ignored.items()) + ")")
    open_stages = sorted(set(events["stage"]) - {WON, LOST}, key=lambda s: (names.rank.get(s, np.inf), s))
    order, forward, n_moves = stage_order(events, open_stages)
    by_id = ("" if not names.rank else "; ties broken by stage id, whose order agrees" if order == open_stages
             else f"; ties broken by stage id, whose order differs: {' > '.join(open_stages)}")
    notes.append(order_note(order, forward, n_moves, "the flow", by_id))
    funnel = FunnelDefinition(tuple(order), (WON,), (LOST,))
    return finish(events, funnel, notes, _attributes(d, deal_table))


def _id(value) -> str:
    """A Pipedrive id as text: ``7`` and ``7.0`` are the same id."""
    text = str(value).strip()
    return text[:-2] if text.endswith(".0") and text[:-2].isdigit() else text


def _deals(d: pd.DataFrame, name: str, notes: list[str]) -> pd.DataFrame:
    require(d, (ID, STAGE, STATUS, CREATED), name, "Pipedrive deals export")
    ids = parse_text(d, ID, name).map(_id)
    raise_at(d, ids.duplicated().to_numpy(), name, ID, "this deal id appears twice",
             "Export each deal once.")
    status = parse_text(d, STATUS, name).str.lower()
    raise_at(d, ~status.isin(STATUSES), name, STATUS, "unknown deal status",
             "Pipedrive's statuses are open, won, lost and deleted.")
    for column, what in ((PIPELINE, "pipelines"), (CURRENCY, "currencies")):
        if column in d.columns:
            seen = parse_text(d, column, name, required=False).value_counts()
            if len(seen) > 1:
                listed = ", ".join(f"{k} ({n} deals)" for k, n in seen.items())
                raise FunnelDataError(f"the deals are in several {what}: {listed}", source=name, column=column,
                                      hint="Convert one pipeline at a time, in one currency: filter the export "
                                           "(or pass a DataFrame) to one "
                                           + ("pipeline." if column == PIPELINE else "currency, or convert the values."))
    def optional_date(column):
        if column not in d.columns:
            return np.full(len(d), np.datetime64("NaT"), dtype="datetime64[ns]")
        return parse_datetime(d, column, name, required=False).to_numpy()

    table = pd.DataFrame({
        "row": d[ROW].to_numpy(), "status": status.to_numpy(),
        "stage": parse_text(d, STAGE, name).to_numpy(),
        "created": parse_datetime(d, CREATED, name).to_numpy(),
        "value": (parse_amount(d, VALUE, name) if VALUE in d.columns else pd.Series(np.nan, index=d.index)).to_numpy(),
        "won_time": optional_date(WON_TIME), "lost_time": optional_date(LOST_TIME),
        "close_date": optional_date(CLOSE),
    }, index=pd.Index(ids.to_numpy(), name="deal_id"))
    return table


class _Names(dict):
    """Stage id -> name, and ``rank``: name -> smallest id, for breaking order ties."""

    rank: dict


def _stage_names(moves, fc, fname, deal_table, dname, notes) -> _Names:
    names = _Names()
    values = pd.concat([moves["_new"], moves["_old"]]).dropna()
    if values.empty or not values.map(_id).str.fullmatch(r"\d+").all():
        names.rank = {}
        if not values.empty:
            notes.append("the flow names stages rather than giving their ids; stage order ties keep first appearance")
        return names  # names already, or no moves
    by_deal = deal_table["stage"]
    if by_deal.map(_id).str.fullmatch(r"\d+").all():
        notes.append("the deals export gives stage ids, not names: the ids are the stage labels")
        for value in values.map(_id):
            names[value] = value
    else:
        sources = []  # (id, name, source, row, column)
        for side in ("new", "old"):
            if fc[f"{side}_name"] and fc[f"{side}_value"]:
                named = moves[[f"_{side}", fc[f"{side}_name"], ROW]].dropna()
                sources += [(_id(i), str(n).strip(), fname, r, fc[f"{side}_name"]) for i, n, r in named.to_numpy()]
        last = moves.groupby("_deal").tail(1)
        sources += [(_id(i), by_deal[deal], dname, int(deal_table.at[deal, "row"]), "Deal - Stage")
                    for deal, i in zip(last["_deal"], last["_new"], strict=True) if i is not None]
        for stage_id, name, source, row, column in sources:
            known = names.setdefault(stage_id, name)
            if known != name:
                raise FunnelDataError(f"stage id {stage_id} has two names, {known!r} and {name!r}", source=source,
                                      row=row, column=column, value=name,
                                      hint="Export the flow and the deals together, after the last stage rename.")
        for side in ("new", "old"):
            if fc[f"{side}_value"]:
                column = moves[f"_{side}"]
                unknown = column.notna() & ~column.map(lambda v: _id(v) in names)
                raise_at(moves, unknown.to_numpy(), fname, fc[f"{side}_value"], "unknown stage id",
                         "No deal in the deals export is in this stage now and the flow does not name it: "
                         "export the flow with new_value_formatted/old_value_formatted (the names in the API's "
                         "additional_data), or export the deals after checking the stage still exists.")
    names.rank = {}
    for stage_id, name in names.items():
        names.rank[name] = min(names.rank.get(name, np.inf), int(stage_id))
    return names


def _stage_events(moves, deal_table, names, fc, fname) -> pd.DataFrame:
    def name_of(value):
        return names.get(_id(value), value)

    first = moves.groupby("_deal").head(1).set_index("_deal")
    start = deal_table["stage"].copy()
    has_old = first["_old"].notna()
    start[first.index[has_old]] = first.loc[has_old, "_old"].map(name_of)
    early = moves["_time"].to_numpy() < deal_table.loc[moves["_deal"], "created"].to_numpy()
    raise_at(moves, early, fname, fc["log_time"], "this stage change is logged before the deal was created",
             "Check the deal's 'Deal - Deal created' and this row's time (same time zone?).")
    created = pd.DataFrame({"deal_id": deal_table.index, "stage": start.to_numpy(),
                            "timestamp": deal_table["created"].to_numpy()})
    moved = pd.DataFrame({"deal_id": moves["_deal"].to_numpy(), "stage": moves["_new"].map(name_of).to_numpy(),
                          "timestamp": moves["_time"].to_numpy()})
    return pd.concat([created, moved], ignore_index=True)


def _outcomes(events, f, deal_table, dname, notes) -> pd.DataFrame:
    status_rows = f[f["_key"] == "status"]
    flow_time = {s: status_rows[status_rows["_new"].str.lower() == s].groupby("_deal")["_time"].max()
                 for s in ("won", "lost")}
    reopened = status_rows[status_rows["_old"].fillna("").str.lower().isin(("won", "lost"))
                           & (status_rows["_new"].str.lower() == "open")]["_deal"].nunique()
    if reopened:
        notes.append(f"{reopened} deal(s) were won or lost and then reopened: only their final status counts")
    outcome_rows = []
    for status, label, column in (("won", WON, WON_TIME), ("lost", LOST, LOST_TIME)):
        closed = deal_table[deal_table["status"] == status]
        when = closed[f"{status}_time"].fillna(flow_time[status].reindex(closed.index).astype("datetime64[ns]"))
        missing = when.isna()
        if missing.any():
            row = int(closed.loc[missing, "row"].min())
            raise FunnelDataError(f"the deal is {status} but has no {status} time", source=dname, row=row,
                                  column=column, hint=f"Export '{column}' (or the flow's status changes).")
        outcome_rows.append(pd.DataFrame({"deal_id": closed.index, "stage": label, "timestamp": when.to_numpy()}))
    outcomes = pd.concat(outcome_rows, ignore_index=True)
    end = outcomes.set_index("deal_id")["timestamp"].astype("datetime64[ns]")
    after = events["timestamp"].to_numpy() > end.reindex(events["deal_id"]).to_numpy()  # NaT (open): False
    if after.any():
        notes.append(f"dropped {int(after.sum())} stage change(s) logged after the deal was won or lost")
    return pd.concat([events[~after], outcomes], ignore_index=True)


def _asof(events: pd.DataFrame, changes: pd.DataFrame, initial: pd.Series) -> np.ndarray:
    """The value in force at each event: the last change at or before it, else ``initial``."""
    keyed = events.assign(_i=np.arange(len(events))).sort_values("timestamp", kind="stable")
    values = initial.reindex(keyed["deal_id"]).to_numpy().copy()
    if len(changes):
        keyed = pd.merge_asof(keyed, changes.sort_values("timestamp"), on="timestamp", by="deal_id",
                              direction="backward")
        changed = keyed["value"].notna().to_numpy()
        values[changed] = keyed["value"].to_numpy()[changed]
    return values[np.argsort(keyed["_i"].to_numpy(), kind="stable")]


def _amounts(events, f, fc, fname, deal_table) -> pd.DataFrame:
    events = events.assign(deal_id=events["deal_id"].astype(str))
    for key, column, parse in (("value", "amount", parse_amount), ("expected_close_date", "close_date", None)):
        rows = f[f["_key"] == key]
        if parse is None:
            new = parse_datetime(rows, fc["new_value"], fname, required=False)
            old = parse_datetime(rows, fc["old_value"], fname, required=False) if fc["old_value"] else None
        else:
            new = parse(rows, fc["new_value"], fname)
            old = parse(rows, fc["old_value"], fname) if fc["old_value"] else None
        final = deal_table["value" if key == "value" else "close_date"]
        first_old = old.groupby(rows["_deal"]).first() if old is not None else pd.Series(dtype=float)
        initial = first_old.reindex(final.index).fillna(final) if len(first_old) else final
        changes = pd.DataFrame({"deal_id": rows["_deal"].astype(str).to_numpy(), "timestamp": rows["_time"].to_numpy(),
                                "value": new.to_numpy()})
        values = _asof(events, changes, initial)
        if key == "value":  # a won deal's value is its final value
            values = np.where(events["stage"] == WON, events["deal_id"].map(final), values)
        events[column] = values
    events["close_date"] = pd.to_datetime(events["close_date"])
    return events


def _attributes(d: pd.DataFrame, deal_table: pd.DataFrame) -> pd.DataFrame | None:
    columns = [c for c in d.columns if c not in (*USED, ROW)]
    attributes = d[columns].rename(columns=lambda c: c.removeprefix("Deal - "))
    attributes["deal_id"] = parse_text(d, ID, "deals").map(_id).to_numpy()
    return attributes[attributes["deal_id"].isin(deal_table.index)]
