"""Salesforce: OpportunityHistory (+ Opportunity, + OpportunityStage) to the canonical log.

Inputs (paths to .csv/.parquet, or DataFrames):

- ``history``: the OpportunityHistory export. Required ``OpportunityId``, ``CreatedDate`` (when
  the change happened) and ``StageName``; used when present: ``Amount``, ``CloseDate``,
  ``Probability``, ``IsDeleted``. Salesforce writes a row when an opportunity is created and
  whenever its stage, amount, probability, close date or forecast category changes; every row
  holds all the values after the change.
- ``opportunities`` (optional): the Opportunity export, ``Id`` and ``CreatedDate``, ``StageName``,
  ``IsClosed``, ``IsWon``, ``Amount``, ``CloseDate`` and attributes (``LeadSource``, ``Type``,
  ``OwnerId``, ...). Its other columns (not the system fields in :data:`NOT_ATTRIBUTES`) become
  deal attribute columns, usable with ``--segment-by``. Every history row must belong to one of
  its opportunities.
- ``stage_table`` (optional): the OpportunityStage export, ``ApiName``, ``SortOrder``,
  ``IsClosed``, ``IsWon`` (``MasterLabel``, ``IsActive`` used when present): the order of the
  open stages and which closed stages are won or lost. Every StageName must be one of them.

How the history becomes the log (rows of a deal in time order; equal times keep file order):

- rows with ``IsDeleted`` true are dropped (a note counts them);
- a row whose stage differs from the deal's previous row is a stage entry, carrying that row's
  amount and close date;
- a row that keeps the stage and changes only the amount or the close date becomes a row
  *repeating the current stage* with the new values: funnelsim's reader treats a repeated stage
  as no new stay (the stay continues from its first entry), and the last amount of a deal is
  its latest. Rows changing only the probability or forecast category are dropped;
- once a deal is won or lost, later amount / close-date changes update the outcome row itself
  (the realised value is the final one) rather than adding rows after the outcome;
- a deal reopened after closing (Closed Lost, then an open stage again), or whose outcome was
  changed, keeps only its final outcome: the earlier closed rows are dropped (a note counts
  the deals);
- an opportunity in ``opportunities`` without any history row enters its current stage at its
  CreatedDate (a note counts them).

Without a stage table the order of open stages is inferred: by their median ``Probability``
when the history has one (ties by the order deals move through them), else by the order deals
move through them; won and lost stages come from the Opportunity export's ``IsClosed`` /
``IsWon`` of deals now in them, else from the label ("Closed Won", "Closed Lost"). A note says
which. Stage labels are the CRM's own: the stage table's ``MasterLabel`` when given, else
``StageName`` as written.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..data.events import FunnelDefinition
from ..errors import FunnelDataError
from ._common import Converted
from ._read import (
    ROW,
    canonical,
    flow_order,
    outcome_of_label,
    parse_datetime,
    parse_flag,
    parse_number,
    parse_text,
    raise_at,
    read_frame,
    require,
)

__all__ = ["from_salesforce", "HISTORY_COLUMNS", "NOT_ATTRIBUTES"]

HISTORY_COLUMNS = ("OpportunityId", "CreatedDate", "StageName", "Amount", "CloseDate", "Probability",
                   "ForecastCategory", "IsDeleted")
OPPORTUNITY_COLUMNS = ("Id", "CreatedDate", "StageName", "IsClosed", "IsWon", "Amount", "CloseDate")
STAGE_COLUMNS = ("ApiName", "MasterLabel", "SortOrder", "IsClosed", "IsWon", "IsActive")
# Opportunity fields that are state or bookkeeping, not attributes to segment by
NOT_ATTRIBUTES = frozenset({
    *OPPORTUNITY_COLUMNS, "IsDeleted", "Name", "Description", "Probability", "ExpectedRevenue", "TotalOpportunityQuantity",
    "ForecastCategory", "ForecastCategoryName", "NextStep", "HasOpportunityLineItem", "LastModifiedDate",
    "LastModifiedById", "SystemModstamp", "CreatedById", "LastActivityDate", "LastStageChangeDate",
    "LastViewedDate", "LastReferencedDate", "FiscalYear", "FiscalQuarter", "Fiscal", "HasOpenActivity",
    "HasOverdueTask", "PushCount", "LastAmountChangedHistoryId", "LastCloseDateChangedHistoryId", ROW,
})


def from_salesforce(history, *, opportunities=None, stage_table=None, encoding: str | None = None) -> Converted:
    """Convert a Salesforce OpportunityHistory export (see the module doc for the columns and
    the rules) to the canonical event log, its funnel and notes."""
    name, raw = read_frame(history, HISTORY_COLUMNS, encoding)
    require(raw, ("OpportunityId", "CreatedDate", "StageName"), name, "OpportunityHistory export")
    notes: list[str] = []
    if "IsDeleted" in raw.columns:
        deleted = parse_flag(raw, "IsDeleted", name).to_numpy()
        if deleted.any():
            raw = raw.loc[~deleted].reset_index(drop=True)
            notes.append(f"dropped {int(deleted.sum())} deleted history row(s) (IsDeleted true) from {name}")
        if raw.empty:
            raise FunnelDataError("every history row is deleted", source=name, column="IsDeleted",
                                  hint="Export the rows with IsDeleted false.")
    hist = pd.DataFrame({
        "deal_id": parse_text(raw, "OpportunityId", name),
        "stage": parse_text(raw, "StageName", name),
        "timestamp": parse_datetime(raw, "CreatedDate", name),
        "amount": parse_number(raw, "Amount", name) if "Amount" in raw.columns else np.nan,
        ROW: raw[ROW].to_numpy(),
    })
    has_close = "CloseDate" in raw.columns
    if has_close:
        hist["close_date"] = parse_datetime(raw, "CloseDate", name, required=False).dt.normalize()
    probability = parse_number(raw, "Probability", name) if "Probability" in raw.columns else None

    opps = attributes = None
    if opportunities is not None:
        opps, attributes = _opportunities(opportunities, encoding)
        raise_at(raw, ~hist["deal_id"].isin(opps["deal_id"]).to_numpy(), name, "OpportunityId",
                 "this history row's opportunity is not in the Opportunity export",
                 f"Export the Opportunity table with every opportunity in the history (Id = OpportunityId), "
                 f"or drop the rows of deleted opportunities ({opps.attrs['source']}).")
        missing = opps[~opps["deal_id"].isin(hist["deal_id"]) & opps["stage"].notna() & opps["timestamp"].notna()]
        if len(missing):
            extra = missing[["deal_id", "stage", "timestamp", "amount", ROW]].assign(**{ROW: -1})
            if has_close:
                extra["close_date"] = missing["close_date"].to_numpy()
            hist = pd.concat([hist, extra], ignore_index=True)
            notes.append(f"{len(missing)} opportunit(y/ies) had no history row; each enters its current stage at "
                         f"its CreatedDate")

    if stage_table is not None:
        funnel, labels, how = _stage_table(stage_table, hist, raw, name, opps, encoding)
        hist["stage"] = hist["stage"].map(labels)
    else:
        funnel, how = _infer_funnel(hist, probability, opps)
    notes.append(how)
    events, counts = _events(hist, funnel)
    if counts["reopened"]:
        notes.append(f"{counts['reopened']} deal(s) were reopened or changed outcome after closing; only their "
                     f"final outcome is kept (earlier closed rows dropped)")
    if counts["repeated"]:
        notes.append(f"{counts['repeated']} history row(s) changed only the amount or close date of an open stage; "
                     f"each is a row repeating the current stage with the new values (not a new stay)")
    if counts["after_close"]:
        notes.append(f"{counts['after_close']} change(s) after a deal was won or lost updated its outcome row's "
                     f"amount / close date")
    if counts["silent"]:
        notes.append(f"dropped {counts['silent']} history row(s) that changed neither stage, amount nor close date "
                     f"(probability or forecast category only)")
    return Converted(canonical(events, attributes), funnel, notes)


def _events(hist: pd.DataFrame, funnel: FunnelDefinition) -> tuple[pd.DataFrame, dict[str, int]]:
    """The canonical rows from the typed history (labels already the funnel's), vectorised."""
    codes, _ = pd.factorize(hist["deal_id"])
    order = np.lexsort((hist[ROW].to_numpy(), hist["timestamp"].to_numpy(), codes))
    hist = hist.iloc[order].reset_index(drop=True)
    deal = codes[order]
    stage_code, _ = pd.factorize(hist["stage"])
    closed = hist["stage"].isin(funnel.won + funnel.lost).to_numpy()
    n = len(hist)
    index = np.arange(n)

    first, change = _changes(deal, stage_code)
    run_start = np.maximum.accumulate(np.where(change, index, 0))
    last_row = _last_of_group(deal)
    final_run = run_start == run_start[last_row]
    stale = closed & ~final_run  # a close that a later stage (reopening, changed outcome) undid
    reopened = int(np.unique(deal[stale]).size)
    if stale.any():
        keep = ~stale
        hist, deal, stage_code, closed = hist[keep].reset_index(drop=True), deal[keep], stage_code[keep], closed[keep]
        n = len(hist)
        index = np.arange(n)
        first, change = _changes(deal, stage_code)
        last_row = _last_of_group(deal)

    amount = hist["amount"].to_numpy(dtype="float64")
    has_close = "close_date" in hist.columns
    close = hist["close_date"].to_numpy(dtype="datetime64[ns]") if has_close else None
    prev = np.r_[0, index[:-1]]
    changed = ~first & ~_same(amount, amount[prev])
    if has_close:
        days = np.where(np.isnat(close), np.nan, close.astype("int64").astype("float64"))
        changed |= ~first & ~_same(days, days[prev])
    repeated = ~change & ~closed & changed
    after_close = ~change & closed
    keep = change | repeated
    # the outcome row carries the deal's final amount and close date
    outcome_entry = change & closed
    amount = amount.copy()
    amount[outcome_entry] = amount[last_row[outcome_entry]]
    out = pd.DataFrame({"deal_id": hist["deal_id"].to_numpy(), "stage": hist["stage"].to_numpy(),
                        "timestamp": hist["timestamp"].to_numpy(), "amount": amount})
    if has_close:
        close = close.copy()
        close[outcome_entry] = close[last_row[outcome_entry]]
        out["close_date"] = close
    counts = {"reopened": reopened, "repeated": int(repeated.sum()), "after_close": int(after_close.sum()),
              "silent": int((~change & ~closed & ~changed).sum())}
    return out[keep].reset_index(drop=True), counts


def _changes(deal: np.ndarray, stage_code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first row of its deal, first row of a run of one stage) for rows sorted by deal."""
    first = np.r_[True, deal[1:] != deal[:-1]]
    return first, first | np.r_[True, stage_code[1:] != stage_code[:-1]]


def _last_of_group(deal: np.ndarray) -> np.ndarray:
    """For each row (sorted by deal), the index of its deal's last row."""
    ends = np.flatnonzero(np.r_[deal[1:] != deal[:-1], True])
    return np.repeat(ends, np.diff(np.r_[-1, ends]))


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a == b) | (np.isnan(a) & np.isnan(b))


def _opportunities(source, encoding: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(typed opportunities: deal_id, stage, timestamp, amount, close_date, closed, won, _row;
    attributes: deal_id and the attribute columns)."""
    name, raw = read_frame(source, OPPORTUNITY_COLUMNS, encoding)
    require(raw, ("Id",), name, "Opportunity export")
    deal = parse_text(raw, "Id", name)
    raise_at(raw, deal.duplicated().to_numpy(), name, "Id", "this opportunity appears twice",
             "Export each opportunity once.")
    opps = pd.DataFrame({"deal_id": deal, ROW: raw[ROW].to_numpy()})
    for column, target, parse in (("StageName", "stage", parse_text), ("CreatedDate", "timestamp", parse_datetime)):
        opps[target] = parse(raw, column, name, required=False) if column in raw.columns else None
    opps["amount"] = parse_number(raw, "Amount", name) if "Amount" in raw.columns else np.nan
    opps["close_date"] = (parse_datetime(raw, "CloseDate", name, required=False).dt.normalize()
                          if "CloseDate" in raw.columns else pd.NaT)
    for column, target in (("IsClosed", "closed"), ("IsWon", "won")):
        opps[target] = parse_flag(raw, column, name) if column in raw.columns else pd.NA
    opps.attrs["source"] = name
    kept = [c for c in raw.columns if c not in NOT_ATTRIBUTES]
    attributes = pd.concat([deal.rename("deal_id"), raw[kept]], axis=1)
    return opps, attributes


def _check_opportunity_stages(opps: pd.DataFrame, known) -> None:
    """Opportunities without history enter their current stage: it must be a known one."""
    if opps is None:
        return
    bad = opps["stage"].notna() & ~opps["stage"].isin(known)
    if bad.any():
        source = opps.attrs["source"]
        frame = opps.assign(**{"StageName": opps["stage"]})
        raise_at(frame, bad.to_numpy(), source, "StageName", "unknown stage",
                 f"Known stages: {', '.join(map(str, known))}. Add it to the OpportunityStage export.")


def _stage_table(source, hist: pd.DataFrame, raw: pd.DataFrame, history_name: str,
                 opps: pd.DataFrame | None, encoding: str | None = None) -> tuple[FunnelDefinition, dict, str]:
    """(funnel, map from StageName as written to the stage's label, note) from OpportunityStage."""
    name, table = read_frame(source, STAGE_COLUMNS, encoding)
    require(table, ("ApiName", "SortOrder", "IsClosed", "IsWon"), name, "OpportunityStage export")
    api = parse_text(table, "ApiName", name)
    label = parse_text(table, "MasterLabel", name, required=False).fillna(api) if "MasterLabel" in table else api
    order = parse_number(table, "SortOrder", name)
    closed, won = parse_flag(table, "IsClosed", name), parse_flag(table, "IsWon", name)
    active = parse_flag(table, "IsActive", name) if "IsActive" in table.columns else pd.Series(True, index=table.index)
    raise_at(table, api.duplicated().to_numpy(), name, "ApiName", "this stage appears twice",
             "Export each stage once.")
    labels = {**dict(zip(label, label, strict=True)), **dict(zip(api, label, strict=True))}
    rows = np.arange(len(hist))
    in_history = hist[ROW].to_numpy() >= 0
    unknown = ~hist["stage"].isin(list(labels)).to_numpy() & in_history
    if unknown.any():
        first = rows[unknown][np.argmin(hist[ROW].to_numpy()[unknown])]
        raise FunnelDataError("unknown stage: not an ApiName of the OpportunityStage export", source=history_name,
                              row=int(hist[ROW].iloc[first]), column="StageName", value=hist["stage"].iloc[first],
                              hint=f"Stages in {name}: {', '.join(api)}. Export the full OpportunityStage table.")
    if opps is not None:
        _check_opportunity_stages(opps[~opps["deal_id"].isin(hist["deal_id"][in_history])], list(labels))
    used = set(hist["stage"].map(labels))
    frame = pd.DataFrame({"label": label, "order": order, "closed": closed, "won": won,
                          "keep": active | label.isin(used)}).sort_values("order", kind="stable")
    frame = frame[frame["keep"]]
    funnel = FunnelDefinition(stages=tuple(frame.loc[~frame["closed"], "label"]),
                              won=tuple(frame.loc[frame["closed"] & frame["won"], "label"]),
                              lost=tuple(frame.loc[frame["closed"] & ~frame["won"], "label"]))
    return funnel, labels, f"stage order and outcomes from {name} (SortOrder, IsClosed, IsWon)"


def _infer_funnel(hist: pd.DataFrame, probability: pd.Series | None,
                  opps: pd.DataFrame | None) -> tuple[FunnelDefinition, str]:
    labels = list(pd.unique(hist["stage"]))
    outcome: dict[str, str | None] = {label: outcome_of_label(label) for label in labels}
    how_outcome = "from the labels (Won / Lost in the name)"
    if opps is not None and opps["closed"].notna().any():
        flags = opps[opps["stage"].notna()].groupby("stage")[["closed", "won"]].agg(
            lambda s: s.astype(bool).mean() >= 0.5)
        for label, row in flags.iterrows():
            if label in outcome:
                outcome[label] = ("won" if row["won"] else "lost") if row["closed"] else None
        how_outcome = ("from the Opportunity export's IsClosed / IsWon of the deals now in them "
                       "(stages no deal is in now: from the labels)")
    won = [s for s in labels if outcome[s] == "won"]
    lost = [s for s in labels if outcome[s] == "lost"]
    open_ = [s for s in labels if outcome[s] is None]
    if not won:
        raise FunnelDataError("cannot tell which stage means won: no stage label says Won and no closed-won "
                              "opportunity was given", source="StageName", value=", ".join(labels),
                              hint="Pass the OpportunityStage export (--stage-table) or the Opportunity export "
                                   "(--opportunities) with IsClosed and IsWon.")
    if not open_:
        raise FunnelDataError("every stage in the history is a closed one", value=", ".join(labels),
                              hint="Pass the OpportunityStage export (--stage-table).")
    by_flow = flow_order(hist["deal_id"].to_numpy(), hist["stage"].to_numpy(), hist["timestamp"].to_numpy(), open_)
    stage_probability = None
    if probability is not None:
        keyed = pd.DataFrame({"stage": hist["stage"].iloc[:len(probability)].to_numpy(),
                              "p": probability.to_numpy()})
        stage_probability = keyed.groupby("stage")["p"].median()
    if stage_probability is not None and stage_probability.reindex(open_).notna().all():
        flow_rank = {s: i for i, s in enumerate(by_flow)}
        ordered = sorted(open_, key=lambda s: (stage_probability[s], flow_rank[s]))
        how_order = "by their median Probability (ties: the order deals move through them)"
    else:
        ordered = by_flow
        how_order = "in the order deals move through them"
    funnel = FunnelDefinition(stages=tuple(ordered), won=tuple(won), lost=tuple(lost))
    return funnel, (f"no stage table: open stages ordered {how_order}; won and lost stages {how_outcome}. "
                    f"Check the order, or pass the OpportunityStage export (--stage-table)")
