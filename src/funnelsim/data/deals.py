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

import math

import ibis
import numpy as np
import pandas as pd

from .._random import rng as random_stream
from ._portable import as_int, interpolate
from .events import ORDER, ROW, EventLog, FunnelDataError
from .spells import Spells, deal_segment
from .stats import FIXED_POINT, _fixed

__all__ = ["open_deals", "amount_stats", "AMOUNT_QUANTILES"]

AMOUNT_QUANTILES = np.linspace(0.0, 1.0, 51)   # won amounts are kept as these quantiles


def _visible_deals(log: EventLog, spells: Spells) -> ibis.Table:
    """Per deal: segment, last amount on an open-stage row, outcome label and amount."""
    if log.funnel != spells.funnel:
        raise FunnelDataError("the event log and the spells use different funnels",
                              hint="Build both from the same FunnelDefinition.")
    table = log.table
    visible = table.filter(table.timestamp < ibis.timestamp(spells.cutoff))
    segment = deal_segment(visible, spells.segment_by, spells.segment_from)
    outcomes = list(log.funnel.won) + list(log.funnel.lost)
    is_open_row = ~visible.stage.isin(outcomes)
    is_won = visible.stage.isin(list(log.funnel.won))
    events = visible.mutate(segment=segment)
    deals = events.group_by("deal_id").aggregate(
        segment=events.segment.min(),  # one value per deal; min() is in every database
        won=is_won.any(),
        won_amount=events.amount.max(where=is_won),
    )
    # the last amount on an open-stage row, by event order: a window, as an ordered last() is not portable
    amounts = events.filter(is_open_row & events.amount.notnull())
    latest = ibis.window(group_by="deal_id", order_by=[ibis.desc(ORDER), ibis.desc(ROW)])
    last = (amounts.mutate(_latest=ibis.row_number().over(latest)).filter(lambda t: t._latest == 0)
            .select("deal_id", open_amount="amount"))
    return deals.left_join(last, "deal_id").select("deal_id", "segment", "open_amount", "won", "won_amount")


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
    frame["entered"] = frame["entered"].astype("datetime64[us]")  # Spark returns ns, the others us
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
        ratio_n=as_int(has_ratio).sum(),
        ratio_sum=_fixed(log_ratio).sum(where=has_ratio),          # exact integer sums: same bits in any row order
        ratio_sum2=_fixed(log_ratio * log_ratio).sum(where=has_ratio),
    ).to_pandas()
    all_segments = deals.select("segment").distinct().to_pandas()
    frame = all_segments.merge(sums, on="segment", how="left").sort_values("segment", ignore_index=True)
    quantiles = _quantiles(won.select("segment", realised=realised))
    frame["won_amounts"] = [quantiles.get(segment, []) for segment in frame["segment"]]
    for column in ("won_deals", "ratio_n"):
        frame[column] = frame[column].fillna(0).astype(int)
    for column in ("ratio_sum", "ratio_sum2"):
        frame[column] = frame[column].fillna(0).astype(float) / FIXED_POINT
    return frame


def _quantiles(values: ibis.Table) -> dict[str, list[float]]:
    """The :data:`AMOUNT_QUANTILES` of ``realised`` per ``segment`` (continuous, as DuckDB's
    ``quantile_cont``; segments without a value are left out). Only the order statistics the
    quantiles interpolate between come back (at most two per quantile and segment); the
    interpolation is done here, so every database gives the same bits."""
    known = values.filter(values.realised.notnull())
    by_segment = ibis.window(group_by="segment", order_by="realised")
    ranked = known.mutate(_rank=ibis.row_number().over(by_segment),
                          _n=known.realised.count().over(ibis.window(group_by="segment")))
    # the database's (n - 1) q may round to the other side of an integer than Python's float
    # (DuckDB reads the literal as a decimal): fetch a rank either side of the two that are used
    floors = [((ranked._n - 1) * float(q)).floor() for q in AMOUNT_QUANTILES]
    ranks = [rank + shift for rank in floors for shift in (-1, 0, 1, 2)]
    needed = ranked.filter(ibis.or_(*[ranked._rank == rank for rank in ranks]))
    rows = needed.select("segment", "realised", "_rank", "_n").to_pandas()
    result = {}
    for segment, group in rows.groupby("segment", sort=False):
        at = dict(zip(group["_rank"].astype(int), group["realised"].astype(float), strict=True))
        n = int(group["_n"].iloc[0])
        result[str(segment)] = [_quantile(at, n, float(q)) for q in AMOUNT_QUANTILES]
    return result


def _quantile(at: dict[int, float], n: int, q: float) -> float:
    position = (n - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return at[low] if low == high else interpolate(at[low], at[high], position - low)


# Conjugate Normal-Inverse-Gamma prior of the log ratio (realised / last open amount) per
# segment: sd^2 ~ InvGamma(2, 0.02) (prior mean sd ~0.14), mean | sd ~ Normal(0, sd^2 / 1).
RATIO_PRIOR = {"kappa": 1.0, "alpha": 2.0, "beta": 0.02}


def ratio_draws(amounts: pd.DataFrame | None, segments, draws: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Posterior draws of the mean and sd of log(realised / last open amount) of won deals,
    (draws, G) each, per segment in ``segments`` order; exact conjugate draws from the
    sufficient statistics of :func:`amount_stats` (segments without data get the prior)."""
    stats = _by_segment(amounts, segments)
    n, total, total2 = (stats[c].to_numpy(float) for c in ("ratio_n", "ratio_sum", "ratio_sum2"))
    k0, a0, b0 = RATIO_PRIOR["kappa"], RATIO_PRIOR["alpha"], RATIO_PRIOR["beta"]
    mean = np.divide(total, n, out=np.zeros_like(total), where=n > 0)
    spread = np.maximum(total2 - n * mean**2, 0.0)
    kn, an = k0 + n, a0 + n / 2
    bn = b0 + 0.5 * spread + k0 * n * mean**2 / (2 * kn)
    rng = random_stream(seed, "amount_ratio")
    variance = bn / rng.gamma(an, 1.0, size=(draws, len(n)))
    centre = n * mean / kn
    return centre + np.sqrt(variance / kn) * rng.standard_normal((draws, len(n))), np.sqrt(variance)


def won_amount_quantiles(amounts: pd.DataFrame | None, segments) -> np.ndarray:
    """(G, Q) quantiles of won amounts per segment; a segment with no won amount borrows the
    average of the others' quantiles (weighted by won deals); NaN rows if no segment has any."""
    stats = _by_segment(amounts, segments)
    table = np.full((len(segments), len(AMOUNT_QUANTILES)), np.nan)
    have = np.array([len(q) == len(AMOUNT_QUANTILES) for q in stats["won_amounts"]])
    if have.any():
        rows = np.array([q for q, h in zip(stats["won_amounts"], have, strict=True) if h], float)
        table[have] = rows
        weights = stats["won_deals"].to_numpy(float)[have]
        table[~have] = np.average(rows, axis=0, weights=weights if weights.sum() else None)
    return table


def _by_segment(amounts: pd.DataFrame | None, segments) -> pd.DataFrame:
    empty = {"won_deals": 0, "ratio_n": 0, "ratio_sum": 0.0, "ratio_sum2": 0.0, "won_amounts": []}
    rows = {} if amounts is None else {r["segment"]: r for r in amounts.to_dict(orient="records")}
    return pd.DataFrame([{**empty, **rows.get(g, {}), "segment": g} for g in segments])
