"""What changed between two days of the same CRM: the pipeline waterfall and the deals behind it.

The waterfall follows the **live open amount**: the amounts (currency of the log) of the deals
open at the end of a day that have not gone dark. A deal has gone dark when it has sat in its
stage longer than 90% of the stays that moved forward from that stage took (the funnel table's
``dark_candidates`` yardstick, :data:`funnelsim.report.funnel.DARK_QUANTILE`), measured on
today's history for both days so the two are read alike. A deal without an amount counts 0 (or ``deal_value``).

Every deal adds ``amount now`` (0 unless live now) minus ``amount then`` (0 unless live then) and
is put in exactly one step by what happened to it, so the steps add up exactly (to rounding)::

    live open amount then
      + created      deals created since (at their last amount; those also closed since are
                     taken out again under won / lost / went dark)
      - won, - lost  deals live then (at their amount then) that were won / lost since
      - went dark    deals live then that are still open but dark now, net of dark deals that
                     came back to life (+ their amount now)
      +- moved       deals live then and now that changed stage: the amount stays in the
                     pipeline, so this step is 0; their count and amount are shown beside it
      +- amounts     deals live then and now: amount now - amount then
    = live open amount now
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import ibis
import numpy as np
import pandas as pd

from .funnel import DARK_QUANTILE, FORWARD

__all__ = ["PipelineChanges", "pipeline_changes", "dark_thresholds", "STEPS"]

STEPS = ("open then", "created", "won", "lost", "went dark", "moved forward or back", "amount changes", "open now")


@dataclass(frozen=True)
class PipelineChanges:
    """The waterfall between ``then`` and ``now`` (days) and the deals behind it.

    ``steps``: one row per step of :data:`STEPS` (``step``, ``amount`` = the step's signed
    contribution in currency, the first and last rows are the levels; ``deals`` = deals in it;
    ``moved_amount`` = amount carried by deals that changed stage). ``deals``: one row per deal
    that contributes (``deal_id``, ``segment``, ``step``, ``stage_then``, ``stage_now``,
    ``amount_then``, ``amount_now``, ``change``).
    """

    then: pd.Timestamp
    now: pd.Timestamp
    steps: pd.DataFrame
    deals: pd.DataFrame

    @property
    def open_then(self) -> float:
        return float(self.steps["amount"].iloc[0])

    @property
    def open_now(self) -> float:
        return float(self.steps["amount"].iloc[-1])


def dark_thresholds(snapshot) -> dict[str, float]:
    """Per open stage, the days (90% of forward exits) past which an open deal has gone dark,
    from the snapshot's stays; stages with no forward exit have none (never dark)."""
    t = snapshot.spells.table
    moves = t.filter(t.move.isin(list(FORWARD))).select("stage", "days").to_pandas()
    return {str(stage): float(np.quantile(group["days"].to_numpy(float), DARK_QUANTILE, method="inverted_cdf"))
            for stage, group in moves.groupby("stage")}


def _live(open_deals: pd.DataFrame, thresholds: dict[str, float], missing: float) -> pd.DataFrame:
    """Open deals with ``dark`` (bool) and ``value`` (amount, ``missing`` when none), by deal id."""
    limit = open_deals["stage"].astype(str).map(thresholds).astype(float).fillna(np.inf)
    frame = open_deals.assign(dark=open_deals["age_days"].to_numpy(float) > limit.to_numpy(),
                              value=open_deals["amount"].astype(float).fillna(missing))
    return frame.set_index(frame["deal_id"].astype(str))


def _closed_between(snapshot, then_cutoff: pd.Timestamp) -> pd.DataFrame:
    """Deals won or lost between the two cut-offs: deal_id, outcome ("won"/"lost")."""
    t = snapshot.log.table
    funnel = snapshot.funnel
    rows = t.filter(t.stage.isin([*funnel.won, *funnel.lost]) & (t.timestamp >= ibis.timestamp(then_cutoff))
                    & (t.timestamp < ibis.timestamp(snapshot.cutoff))).select("deal_id", "stage").to_pandas()
    outcome = np.where(rows["stage"].isin(list(funnel.won)), "won", "lost")
    return pd.DataFrame({"deal_id": rows["deal_id"].astype(str), "outcome": outcome}).drop_duplicates("deal_id")


def _created_between(snapshot, then_cutoff: pd.Timestamp, missing: float) -> pd.DataFrame:
    """Deals whose first event falls between the two cut-offs: deal_id and ``value`` = their
    last amount before today's cut-off (``missing`` if none)."""
    t = snapshot.log.table
    now = ibis.timestamp(snapshot.cutoff)
    first = t.filter(t.timestamp < now).group_by("deal_id").aggregate(created=t.timestamp.min())
    ids = first.filter(first.created >= ibis.timestamp(then_cutoff)).select("deal_id")
    rows = t.filter(t.timestamp < now).join(ids, "deal_id").select("deal_id", "timestamp", "amount", "stage")
    rows = rows.to_pandas().sort_values(["deal_id", "timestamp"], kind="stable")
    if rows.empty:
        return pd.DataFrame(columns=["deal_id", "value"])
    last = rows.dropna(subset=["amount"]).groupby("deal_id")["amount"].last()
    out = pd.DataFrame({"deal_id": rows["deal_id"].astype(str).unique()})
    out["value"] = out["deal_id"].map(last.rename(index=str)).astype(float).fillna(missing)
    return out


def pipeline_changes(now, then_day, thresholds: dict[str, float] | None = None,
                     deal_value: float | None = None) -> PipelineChanges:
    """The waterfall from the CRM at the end of ``then_day`` to ``now`` (a Snapshot; the
    earlier day must be before ``now.as_of``). See the module doc for the steps. A deal
    without an amount counts ``deal_value`` (currency; default 0)."""
    then = now.at(then_day)
    if then.as_of >= now.as_of:
        raise ValueError(f"compare-to day {then.as_of.date()} must be before as-of {now.as_of.date()}")
    thresholds = dark_thresholds(now) if thresholds is None else thresholds
    missing = 0.0 if deal_value is None else float(deal_value)
    before, after = _live(then.open_deals, thresholds, missing), _live(now.open_deals, thresholds, missing)
    closed = _closed_between(now, then.cutoff).set_index("deal_id")["outcome"]
    created = _created_between(now, then.cutoff, missing).set_index("deal_id")["value"]
    live_then = before.index[~before["dark"]]
    live_now = after.index[~after["dark"]]
    rows = []
    for deal in live_then.union(live_now).union(created.index):
        rows.extend(_deal_rows(deal, before, after, closed, created, live_then, live_now))
    deals = pd.DataFrame(rows, columns=["deal_id", "segment", "step", "stage_then", "stage_now", "amount_then",
                                        "amount_now", "change"])
    return PipelineChanges(then.as_of, now.as_of, _steps(deals, before, after, live_then, live_now), deals)


def _deal_rows(deal, before, after, closed, created, live_then, live_now):
    """The (one or two) waterfall rows of one deal."""
    was, now_live = deal in live_then, deal in live_now
    a = before.loc[deal] if deal in before.index else None
    b = after.loc[deal] if deal in after.index else None
    segment = str((b if b is not None else a)["segment"]) if (a is not None or b is not None) else ""
    stage_then = None if a is None else str(a["stage"])
    stage_now = None if b is None else str(b["stage"])
    then_value = float(a["value"]) if was else 0.0
    now_value = float(b["value"]) if now_live else 0.0

    def row(step, change):
        return [deal, segment, step, stage_then, stage_now, then_value, now_value, change]

    if deal in created.index and not was:
        value = now_value if now_live else float(created[deal])
        if now_live:
            return [row("created", value)]
        gone = closed.get(deal, "went dark")
        return [row("created", value), row(gone, -value)]
    if was and now_live:
        out = [row("amount changes", now_value - then_value)] if now_value != then_value else []
        if stage_then != stage_now:
            out.append(row("moved forward or back", 0.0))
        return out
    if was:
        return [row(closed.get(deal, "went dark"), -then_value)]
    return [row("went dark", now_value)] if now_live else []     # dark then, live again now


def _steps(deals, before, after, live_then, live_now) -> pd.DataFrame:
    open_then = math.fsum(before.loc[live_then, "value"])
    open_now = math.fsum(after.loc[live_now, "value"])
    rows = [{"step": "open then", "amount": open_then, "deals": len(live_then), "moved_amount": 0.0}]
    for step in STEPS[1:-1]:
        mine = deals[deals["step"] == step]
        moved = math.fsum(mine["amount_now"]) if step == "moved forward or back" else 0.0
        rows.append({"step": step, "amount": math.fsum(mine["change"]), "deals": int(mine["deal_id"].nunique()),
                     "moved_amount": moved})
    rows.append({"step": "open now", "amount": open_now, "deals": len(live_now), "moved_amount": 0.0})
    return pd.DataFrame(rows)
