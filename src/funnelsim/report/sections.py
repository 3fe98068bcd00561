"""The report's sections as plain data (numbers and short strings), in the order a revenue leader
reads them. :mod:`funnelsim.report.html` renders them; nothing here writes HTML, so every value
from the log (deal ids, segments, stages) is escaped in one place, the template.

Amounts are in the currency of the event log, days are days, probabilities shares in 0–1.
"""

from __future__ import annotations

import ibis
import numpy as np
import pandas as pd

from ..data.spells import end_of_day
from ..model.funnel_model import QUANTITIES
from .changes import dark_thresholds, pipeline_changes

__all__ = ["headline", "periods", "segments", "changes", "stages", "losses", "bottleneck_rows", "going_dark",
           "top_deals", "assumptions", "current_period_start", "won_between"]

TOP = 15          # rows of the deal tables


def current_period_start(as_of: pd.Timestamp) -> pd.Timestamp:
    """The first day of the calendar quarter the forecast starts in (the day after as-of)."""
    return pd.Period(end_of_day(as_of), "Q").start_time


def won_between(snapshot, start: pd.Timestamp, deal_value: float | None = None) -> tuple[float, int]:
    """Revenue (won row's amount, else ``deal_value``, else 0) and count of deals won from
    ``start`` to the snapshot's cut-off."""
    t = snapshot.log.table
    rows = t.filter(t.stage.isin(list(snapshot.funnel.won)) & (t.timestamp >= ibis.timestamp(start))
                    & (t.timestamp < ibis.timestamp(snapshot.cutoff))).select("amount").to_pandas()
    value = rows["amount"].astype(float)
    if deal_value is not None:
        value = value.fillna(float(deal_value))
    return float(value.fillna(0.0).sum()), len(rows)


def headline(forecast, snapshot, target: float | None, deal_value: float | None) -> dict:
    """The bands over the horizon, P(hit target) and the revenue already won this quarter."""
    start = current_period_start(snapshot.as_of)
    won, won_deals = won_between(snapshot, start, deal_value)
    ds = forecast.dataset
    out = {"as_of": forecast.as_of, "horizon_days": forecast.horizon_days,
           "horizon_end": str((snapshot.as_of + pd.Timedelta(days=forecast.horizon_days)).date()),
           "pipeline": forecast.pipeline_revenue(), "total": forecast.total_revenue(),
           "target": target, "p_hit": None, "p_hit_total": None,
           "period_start": str(start.date()), "period_label": str(pd.Period(start, "Q")),
           "won_to_date": won, "won_deals_to_date": won_deals,
           "open_deals": int(ds.sizes["deal"]), "open_amount": float(np.nansum(ds["amount"].values)),
           "draws": int(ds.sizes["draw"])}
    if target is not None:
        out["p_hit"] = forecast.p_hit(target)
        if forecast.has_new_deals:
            out["p_hit_total"] = forecast.p_hit(target, total=True)
    return out


def periods(forecast) -> list[dict]:
    """Revenue per period: the open pipeline's band, the new deals' mean and the total's band."""
    rows = []
    for r in forecast.by_period().to_dict(orient="records"):
        rows.append({"period": r["period"], "start": str(pd.Timestamp(r["start"]).date()),
                     "end": str(pd.Timestamp(r["end"]).date()), "mean": r["revenue_mean"], "p10": r["revenue_p10"],
                     "p50": r["revenue_p50"], "p90": r["revenue_p90"], "wins": r["wins_mean"],
                     "new": r.get("new_revenue_mean"), "total": r.get("total_revenue_mean")})
    return rows


def segments(forecast) -> list[dict]:
    """The segment roll-up (:meth:`Forecast.by_segment`) as rows, and the total line."""
    return forecast.by_segment().to_dict(orient="records")


def changes(model, snapshot, forecast, compare_to, thresholds: dict, deal_value: float | None) -> dict:
    """What changed since ``compare_to``: the waterfall, the forecast of the same window made
    from that day's pipeline (with today's model), and the deals behind the largest moves."""
    from ..sim.run import simulate_run

    moved = pipeline_changes(snapshot, compare_to, thresholds, deal_value)
    then = snapshot.at(compare_to)
    gap = int(round((snapshot.cutoff - then.cutoff) / pd.Timedelta(days=1)))
    horizon = forecast.horizon_days
    rerun = forecast._rerun
    period_of_day = np.concatenate([np.zeros(gap, int), np.ones(horizon, int)])
    run = simulate_run(model, then.open_deals, rerun.params, gap + horizon, period_of_day=period_of_day,
                       seed=rerun.seed, deal_value=deal_value, chunk_draws=rerun.chunk_draws)
    sim = run.pipeline
    draws = sim.revenue.shape[0]
    p_window = sim.close_days[:, gap:].sum(axis=1) / draws
    per_win = np.divide(sim.expected_revenue, sim.p_win_horizon, out=np.zeros_like(sim.expected_revenue),
                        where=sim.p_win_horizon > 0)
    exp_then = pd.Series(p_window * per_win, index=then.open_deals["deal_id"].astype(str).to_numpy())
    exp_now = pd.Series(forecast.dataset["expected_revenue"].values, index=forecast.dataset["deal"].values)
    window_then = sim.revenue[:, 1]
    band_then = {"mean": float(window_then.mean()),
                 **dict(zip(("p10", "p50", "p90"), map(float, np.quantile(window_then, (0.1, 0.5, 0.9))), strict=True))}
    return {"then": str(moved.then.date()), "now": str(moved.now.date()),
            "steps": moved.steps.to_dict(orient="records"), "table": moved,
            "forecast_then": band_then, "forecast_now": forecast.pipeline_revenue(),
            "won_between": won_between(snapshot, then.cutoff, deal_value)[0],
            "movers": _movers(exp_then, exp_now, moved.deals, then.open_deals, snapshot.open_deals)}


def _movers(exp_then: pd.Series, exp_now: pd.Series, waterfall: pd.DataFrame, deals_then, deals_now) -> list[dict]:
    """The deals whose expected revenue in the window moved most, and why."""
    delta = exp_now.reindex(exp_now.index.union(exp_then.index), fill_value=0.0) \
        - exp_then.reindex(exp_now.index.union(exp_then.index), fill_value=0.0)
    top = delta.abs().sort_values(ascending=False, kind="stable").head(TOP).index
    steps = waterfall.groupby("deal_id")["step"].agg(lambda s: ", ".join(s))
    before = deals_then.set_index(deals_then["deal_id"].astype(str))
    after = deals_now.set_index(deals_now["deal_id"].astype(str))
    rows = []
    for deal in top:
        a = before.loc[deal] if deal in before.index else None
        b = after.loc[deal] if deal in after.index else None
        rows.append({"deal_id": deal, "segment": str((b if b is not None else a)["segment"]),
                     "stage_then": None if a is None else str(a["stage"]),
                     "stage_now": None if b is None else str(b["stage"]),
                     "then": float(exp_then.get(deal, 0.0)), "now": float(exp_now.get(deal, 0.0)),
                     "change": float(delta[deal]), "why": steps.get(deal, "aged in its stage" if b is not None else "")})
    return rows


def stages(model) -> list[dict]:
    """The stage table (posterior mean and 90% interval per quantity), whole funnel first."""
    table = model.stage_table()
    rows = []
    for r in table.to_dict(orient="records"):
        row = {"stage": r["stage"], "segment": None if pd.isna(r["segment"]) else str(r["segment"]),
               "stays": int(r["stays"])}
        for name in QUANTITIES:
            row[name] = (r[name], r[f"{name}_low"], r[f"{name}_high"])
        rows.append(row)
    return rows


def losses(model) -> list[dict]:
    """Where deals entering the top are eventually lost or go dark, whole funnel, by stage."""
    table = model.where_deals_are_lost()
    whole = table[table["segment"].isna()]
    return [{"stage": r["stage"], "share": r["loss_share"], "low": r["loss_share_low"], "high": r["loss_share_high"]}
            for r in whole.to_dict(orient="records")]


def bottleneck_rows(model, snapshot, horizon_days: int, seed: int, deal_value, new_deals, draws: int | None) -> list[dict]:
    """The levers ranked by revenue gained in the horizon (:func:`funnelsim.sim.scenarios.bottlenecks`)."""
    from ..sim.scenarios import bottlenecks

    table = bottlenecks(model, snapshot.open_deals, horizon_days=horizon_days, seed=seed, deal_value=deal_value,
                        new_deals=new_deals, draws=draws)
    return table.head(8).to_dict(orient="records")


def going_dark(snapshot, thresholds: dict) -> dict:
    """Open deals older in their stage than 90% of forward moves from it, largest amount first."""
    deals = snapshot.open_deals
    limit = deals["stage"].astype(str).map(thresholds).astype(float)
    dark = deals.assign(limit=limit)[deals["age_days"].to_numpy(float) > limit.fillna(np.inf).to_numpy()]
    dark = dark.sort_values(["amount", "age_days"], ascending=False, na_position="last", kind="stable")
    rows = [{"deal_id": str(r["deal_id"]), "segment": str(r["segment"]), "stage": str(r["stage"]),
             "age_days": float(r["age_days"]), "limit": float(r["limit"]), "amount": r["amount"]}
            for r in dark.head(TOP).to_dict(orient="records")]
    return {"count": len(dark), "amount": float(np.nansum(dark["amount"].to_numpy(float))), "rows": rows}


def top_deals(forecast) -> list[dict]:
    """The open deals with the largest expected revenue in the horizon."""
    rows = []
    for r in forecast.deals().head(TOP).to_dict(orient="records"):
        close = r["median_close_date"]
        rows.append({"deal_id": str(r["deal_id"]), "segment": str(r["segment"]), "stage": str(r["stage"]),
                     "amount": r["amount"], "p_win": r["p_win_horizon"], "p_win_ever": r["p_win_ever"],
                     "expected": r["expected_revenue"],
                     "close": None if pd.isna(close) else str(pd.Timestamp(close).date())})
    return rows


def assumptions(snapshot, model, forecast) -> dict:
    """The diagnostics and the plain-word assumptions behind the numbers."""
    t = snapshot.log.table
    first = pd.Timestamp(t.filter(t.timestamp < ibis.timestamp(snapshot.cutoff)).timestamp.min().execute())
    ds = forecast.dataset
    return {"diagnostics": model.diagnostics, "first_event": str(first.date()), "as_of": forecast.as_of,
            "history_days": snapshot.history_days, "segment_by": snapshot.segment_by,
            "source": str(snapshot.log.source), "draws": int(ds.sizes["draw"]), "seed": ds.attrs.get("seed"),
            "new_deals_per_week": ds.attrs.get("new_deals_per_week"),
            "new_deal_weeks": ds.attrs.get("new_deal_history_weeks"),
            "sojourn": getattr(model.sojourn_family, "name", str(model.sojourn_family)),
            "notes": list(snapshot.notes), "capped": int(ds.attrs.get("capped_paths", 0))}


def thresholds_for(snapshot) -> dict:
    """Per stage, the days past which an open deal has gone dark (see :mod:`.changes`)."""
    return dark_thresholds(snapshot)
