"""The open pipeline at the as-of date, and what won deals say about amounts.

Two deal-level views of the CRM as it looked at the end of ``as_of`` (no later event is
visible, amounts included), both computed where the events live (Ibis):

- :func:`open_deals`: every deal still in an open stage — its segment, stage, age in the
  stage (days) and last known amount (currency of the log; NaN when the deal never had one).
- :func:`amount_stats`: per segment, the sufficient statistics of log(realised / last open
  amount) over won deals whose won row carries its own amount (``ratio_n``, ``ratio_sum``,
  ``ratio_sum2``), and quantiles of won amounts (the realised value: the won row's amount,
  else the deal's last amount), used to value open deals that have no amount.
"""

from __future__ import annotations

import ibis
import numpy as np
import pandas as pd

from .events import ORDER, ROW, EventLog, FunnelDataError
from .spells import BLANK_SEGMENT, NO_SEGMENT, Spells

__all__ = ["open_deals", "amount_stats", "AMOUNT_QUANTILES"]

AMOUNT_QUANTILES = np.linspace(0.0, 1.0, 51)   # won amounts are kept as these quantiles


def _visible_deals(log: EventLog, spells: Spells) -> ibis.Table:
    """Per deal: segment, last amount on an open-stage row, outcome label and amount."""
    if log.funnel != spells.funnel:
        raise FunnelDataError("the event log and the spells use different funnels",
                              hint="Build both from the same FunnelDefinition.")
    table = log.table
    visible = table.filter(table.timestamp < ibis.timestamp(spells.as_of + pd.Timedelta(days=1)))
    by_deal = ibis.window(group_by="deal_id", order_by=[ORDER, ROW])
    if spells.segment_by:
        first = visible[spells.segment_by].cast("string").first().over(by_deal)
        segment = first.strip().nullif("").fill_null(BLANK_SEGMENT)
    else:
        segment = ibis.literal(NO_SEGMENT)
    outcomes = list(log.funnel.won) + list(log.funnel.lost)
    is_open_row = ~visible.stage.isin(outcomes)
    is_won = visible.stage.isin(list(log.funnel.won))
    events = visible.mutate(segment=segment)
    return events.group_by("deal_id").aggregate(
        segment=events.segment.arbitrary(),
        open_amount=events.amount.last(where=is_open_row & events.amount.notnull(), order_by=[ORDER, ROW]),
        won=is_won.any(),
        won_amount=events.amount.max(where=is_won),
    )


def open_deals(log: EventLog, spells: Spells) -> pd.DataFrame:
    """Deals open at ``spells.as_of``, one row each, ordered by deal id.

    Columns: ``deal_id``, ``segment``, ``stage``, ``stage_index``, ``entered`` (when the
    deal entered its current stage), ``age_days`` (days in the stage at the end of as_of),
    ``amount`` (last known amount, currency; NaN if none).
    """
    stays = spells.table
    current = stays.filter(stays.move == "censored").select("deal_id", "stage", "stage_index", "entered",
                                                            age_days="days")
    deals = _visible_deals(log, spells)
    joined = current.join(deals, "deal_id", how="left").select(
        "deal_id", deals.segment, "stage", "stage_index", "entered", "age_days", amount=deals.open_amount)
    frame = joined.order_by("deal_id").to_pandas()
    frame["amount"] = frame["amount"].astype(float)
    frame["age_days"] = frame["age_days"].astype(float)
    frame.attrs["as_of"] = str(spells.as_of.date())
    return frame


def amount_stats(log: EventLog, spells: Spells) -> pd.DataFrame:
    """Won-deal amount statistics per segment (see module doc), one row per segment seen.

    Columns: ``segment``, ``won_deals``, ``ratio_n``, ``ratio_sum``, ``ratio_sum2`` (log
    ratios of realised to last open amount), ``won_amounts`` (list of the
    :data:`AMOUNT_QUANTILES` of realised amounts, currency; empty if no won deal has one).
    """
    deals = _visible_deals(log, spells)
    realised = deals.won_amount.fill_null(deals.open_amount)
    has_ratio = deals.won & (deals.won_amount > 0) & (deals.open_amount > 0)
    log_ratio = (deals.won_amount / deals.open_amount).ln()
    won = deals.filter(deals.won)
    sums = won.group_by("segment").aggregate(
        won_deals=won.count(),
        ratio_n=has_ratio.cast("int64").sum(),
        ratio_sum=log_ratio.sum(where=has_ratio),
        ratio_sum2=(log_ratio * log_ratio).sum(where=has_ratio),
        **{f"q{i}": realised.quantile(q) for i, q in enumerate(AMOUNT_QUANTILES)},
    ).to_pandas()
    all_segments = deals.select("segment").distinct().to_pandas()
    frame = all_segments.merge(sums, on="segment", how="left").sort_values("segment", ignore_index=True)
    quantile_columns = [f"q{i}" for i in range(len(AMOUNT_QUANTILES))]
    frame["won_amounts"] = [[float(v) for v in row] if np.isfinite(row).all() else []
                            for row in frame[quantile_columns].to_numpy(float)]
    frame = frame.drop(columns=quantile_columns)
    for column in ("won_deals", "ratio_n"):
        frame[column] = frame[column].fillna(0).astype(int)
    for column in ("ratio_sum", "ratio_sum2"):
        frame[column] = frame[column].fillna(0.0).astype(float)
    return frame
