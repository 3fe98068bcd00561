"""Olist's one-stage funnel by maximum likelihood: stalls that are final against dormant leads
that revive (docs/revival.md). No PyMC and no statistics table: scipy on each lead's own stay,
an independent check of the model's binned likelihood and of the wins by age it forecasts.

Per origin (notebook 03's 8 month-ends, 60-day horizon) one JSON line: for each model the
negative log-likelihood, P(win), the revival rate (per day) and the wins forecast for the open
leads by age in stage (0-30, 30-90, 90-180, 180+ days), and what those leads won; then the
totals. Same-day wins (instant stays) have their own share h; the rest are LogNormal in
t = days + 0.5 truncated to t >= 1 day.

    python benchmarks/olist_revival.py
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

HORIZON_DAYS = 60
WINDOW_DAYS = 730.0            # revivals within this many days of entry (model_config["revival_days"])
AGE_EDGES = [0, 30, 90, 180, np.inf]
STARTS = ([-2, 0, 3, 0, -7], [-3, -1, 2, 0.5, -8], [-1, 0, 4, 0.3, -6])


def leads() -> pd.DataFrame:
    from funnelsim.data.olist import olist_data_dir, olist_events

    events, _ = olist_events(olist_data_dir())
    when = pd.to_datetime(events["timestamp"], dayfirst=True, format="mixed")
    entry = when[events.stage == "MQL"].set_axis(events.deal_id[events.stage == "MQL"])
    won = when[events.stage == "Won"].set_axis(events.deal_id[events.stage == "Won"])
    return pd.DataFrame({"entry": entry}).join(won.rename("won"))


def unpack(x, revive: bool):
    """P(win), instant share, log-location, sigma and revival rate from the optimiser's x."""
    return special.expit(x[0]), special.expit(x[1]), x[2], np.exp(x[3]), (np.exp(x[4]) if revive else 0.0)


def still_open(p, days):
    """P(open at ``days``) and the LogNormal part's survival there."""
    pi, h, mu, sigma, rate = p
    surv = stats.lognorm.sf(days + 0.5, sigma, scale=np.exp(mu)) / stats.norm.sf(-mu / sigma)
    return (1 - pi) * np.exp(-rate * np.minimum(days, WINDOW_DAYS)) + pi * (1 - h) * surv, surv


def negative_loglik(x, revive, instant, timed_days, open_days):
    pi, h, mu, sigma, rate = p = unpack(x, revive)
    t = timed_days + 0.5
    density = (pi * (1 - h) * stats.lognorm.pdf(t, sigma, scale=np.exp(mu)) / stats.norm.sf(-mu / sigma)
               + (1 - pi) * rate * np.exp(-rate * timed_days) * (timed_days < WINDOW_DAYS))
    return -(instant * np.log(pi * h) + np.log(density).sum() + np.log(still_open(p, open_days)[0]).sum())


def p_win_within(p, days):
    """Each open lead's chance to win within the horizon."""
    now, _ = still_open(p, days)
    later, _ = still_open(p, days + HORIZON_DAYS)
    return (now - later) / now


def origin_row(table: pd.DataFrame, origin: pd.Timestamp) -> dict:
    seen = table[table.entry <= origin]
    won = seen.won.notna() & (seen.won <= origin)
    stay = (seen.won - seen.entry).dt.total_seconds()[won].to_numpy() / 86400
    open_leads = seen[~won]
    open_days = (origin - open_leads.entry).dt.total_seconds().to_numpy() / 86400
    band = np.digitize(open_days, AGE_EDGES) - 1
    row = {"origin": str(origin.date())}
    for revive in (False, True):
        fits = [optimize.minimize(negative_loglik, x0, args=(revive, (stay < 0.5).sum(), stay[stay >= 0.5], open_days),
                                  method="Nelder-Mead", options={"maxiter": 20000, "maxfev": 20000,
                                                                 "xatol": 1e-6, "fatol": 1e-6})
                for x0 in STARTS]
        best = min(fits, key=lambda f: f.fun)
        p = unpack(best.x, revive)
        forecast = np.bincount(band, p_win_within(p, open_days), len(AGE_EDGES) - 1)
        row["revival" if revive else "final"] = {"nll": round(float(best.fun), 1), "p_win": round(float(p[0]), 4),
                                                 "rate_per_day": float(p[4]),
                                                 "forecast_by_age": [round(float(x), 1) for x in forecast]}
    horizon_end = origin + pd.Timedelta(days=HORIZON_DAYS)
    wins = (open_leads.won.notna() & (open_leads.won <= horizon_end)).to_numpy()
    row["won_by_age"] = np.bincount(band, wins, len(AGE_EDGES) - 1).astype(int).tolist()
    return row


def main() -> None:
    import warnings

    warnings.filterwarnings("ignore", category=RuntimeWarning)   # the optimiser's trial points overflow
    table = leads()
    rows = []
    for month_end in pd.date_range("2018-01-31", "2018-08-31", freq="ME"):
        rows.append(origin_row(table, month_end + pd.Timedelta(hours=23, minutes=59)))
        print(json.dumps(rows[-1]), flush=True)
    total = {key: np.sum([r[key]["forecast_by_age"] for r in rows], axis=0).round(1).tolist() for key in ("final", "revival")}
    print(json.dumps({"total": total, "won_by_age": np.sum([r["won_by_age"] for r in rows], axis=0).tolist()}))


if __name__ == "__main__":
    main()
