"""Backtests: replay history at rolling origins and score the forecasts against what happened.

At each origin date the CRM is rebuilt exactly as it was at the end of that day (no later
event, amount or stage change is visible), the model is fitted, the open pipeline is
forecast for ``horizon_days``, and the forecast is scored against the revenue those open
deals actually brought in the horizon:

- **CRPS** of the forecast samples (``scoringrules.crps_ensemble``) and CRPS relative to the
  actual; the CRPS of a point forecast is its absolute error, so it compares directly with
  the baselines' errors (``skill_*`` = 1 - CRPS / baseline absolute error);
- coverage of the central 50/80/90% bands, absolute % error of the median;
- the **PIT** value P(forecast < actual) + U * P(forecast = actual), U uniform (seeded), which
  is uniform over origins for a calibrated forecast.

Baselines from the same cut data (amounts in the log's currency):

- ``weighted``: each open deal's amount times its stage's historical win rate (won / closed
  among deals that reached the stage; won / reached when the funnel has no lost label);
- ``coverage``: open amount times the share of the open amount one horizon earlier that was
  won within the horizon;
- ``last_period``: the revenue won in the horizon before the origin by the deals open at its
  start.

**By age** (``Backtest.by_age``, :attr:`Backtest.age_calibration`): the open deals are split by
their age in stage at the origin (:data:`AGE_BANDS`: 0-30, 30-90, 90-180, 180+ days) and each
band's forecast wins (the sum of the deals' chances of winning in the horizon) and revenue are
set beside what those deals won. Pooled over origins, z = (wins - forecast) / sqrt(sum p (1 - p))
(the deals' own Bernoulli noise only, so approximate: a deal open at several origins counts at
each) says whether the model's time in stage misses, say, old deals that still close.

Realised revenue of a won deal: its won row's amount, else its last amount at the origin,
else ``deal_value`` (else 0).

With ``BacktestSettings(new_deals=True)`` the forecast also simulates deals created during the
horizon (:mod:`funnelsim.sim.inflow`), and the **total** is scored too (``total_*`` columns)
against all revenue won in the horizon by deals open at the origin or created after it,
beside a ``run_rate`` baseline: all revenue won in the horizon before the origin.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from .._io import json_safe, write_json
from .._signals import sigint_blocked
from ..data.events import FunnelDataError, FunnelDefinition
from ..data.snapshot import Snapshot
from ..defaults import DRAWS, DRIFT_EVERY, HORIZON_DAYS, TUNE

__all__ = ["BacktestSettings", "Backtest", "backtest", "origin_dates", "origin_inputs", "score", "baselines",
           "age_rows", "AGE_BANDS"]

BANDS = (0.5, 0.8, 0.9)
# the open deals' age at the origin (days since they entered their stage) the wins are compared by:
# a forecast right on average can still miss the old deals' late closes, or the young deals' fast ones
AGE_BANDS = (0.0, 30.0, 90.0, 180.0)
LATE_CLOSE_Z = 3.0      # |z| of a band's wins against its forecast (pooled over origins) that is warned of
_FREQUENCIES = {"D": "D", "W": "W-SUN", "M": "ME", "Q": "QE"}


BASELINE_DRAWS = 1000   # samples of each baseline's band of the total

@dataclass(frozen=True)
class BacktestSettings:
    """How each origin is fitted and forecast (see :func:`backtest`)."""

    horizon_days: int = HORIZON_DAYS
    segment_by: str | None = None
    draws: int = DRAWS                   # the fit's defaults: the backtest scores the forecast users run
    tune: int = TUNE
    chains: int = 4
    seed: int = 0
    deal_value: float | None = None
    model_config: dict | None = None     # merged over the model's defaults (e.g. a fixed pooling)
    new_deals: bool = False              # also forecast and score total revenue (with new deals)
    history_days: float | None = None    # learn from the stays that began in these days before each origin
    every: str | None = DRIFT_EVERY      # a drifting funnel over entry cohorts of this period (None: stationary)
    sojourn: str = "lognormal"           # the time-in-stage family (funnelsim.model.sojourn)


def origin_dates(every: str, start, end) -> list[pd.Timestamp]:
    """Origins from ``start`` to ``end`` (inclusive): ``every`` is a count and a unit, D, W
    (Sundays), M (month ends) or Q (quarter ends), e.g. "1M", "2W", "7D"."""
    match = re.fullmatch(r"\s*(\d*)\s*([DWMQ])\s*", str(every).upper())
    if not match:
        raise FunnelDataError(f"cannot read --every {every!r}", column="every", value=str(every),
                              hint="Write a count and a unit: 7D, 2W, 1M or 1Q.")
    count = int(match.group(1) or 1)
    dates = pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq=f"{count}{_FREQUENCIES[match.group(2)]}")
    if not len(dates):
        raise FunnelDataError(f"no origin between {start} and {end} every {every}", column="every",
                              hint="Widen --start/--end or shorten --every.")
    return [d.normalize() for d in dates]


# --------------------------------------------------------------------------- one origin

def _stage_win_rates(spells) -> pd.Series:
    """Historical win rate per stage from the cut data (see module doc)."""
    stays = spells.table
    outcome = stays.group_by("deal_id").aggregate(won=(stays.move == "won").any(),
                                                  closed=stays.move.isin(["won", "lost"]).any())
    reached = stays.select("deal_id", "stage").distinct().join(outcome, "deal_id")
    if spells.funnel.lost:
        reached = reached.filter(reached.closed)
    rates = reached.group_by("stage").aggregate(rate=reached.won.cast("float64").mean()).to_pandas()
    return rates.set_index("stage")["rate"]


def _amounts(deals: pd.DataFrame, deal_value: float | None) -> pd.Series:
    amount = deals["amount"].astype(float)
    return amount.fillna(float(deal_value)) if deal_value is not None else amount.fillna(0.0)


def baselines(snapshot: Snapshot, horizon_days: int, deal_value: float | None = None) -> dict:
    """The baselines of the module doc, from data visible at the snapshot's cut-off only:
    ``weighted``, ``coverage``, ``last_period`` and ``run_rate``."""
    deals = snapshot.open_deals
    amount = _amounts(deals, deal_value)
    rates = _stage_win_rates(snapshot.spells)
    weighted = math.fsum(amount * deals["stage"].map(rates).fillna(0.0))
    earlier = snapshot.at(snapshot.as_of - pd.Timedelta(days=horizon_days))
    try:
        before = earlier.open_deals
    except FunnelDataError:            # the log starts after one horizon earlier
        before = deals.iloc[:0]
    last_period = earlier.won_revenue(before, horizon_days, deal_value)
    open_before = math.fsum(_amounts(before, deal_value))
    coverage = math.fsum(amount) * last_period / open_before if open_before > 0 else float("nan")
    run_rate = earlier.realised(horizon_days, deal_value).all
    return {"weighted": weighted, "coverage": coverage, "last_period": last_period, "run_rate": run_rate}


def origin_inputs(log, origin, settings: BacktestSettings) -> dict:
    """Everything the forecast at ``origin`` is built from, all from the CRM as it was at the
    end of that day: its :class:`Snapshot`, stage statistics, amount statistics, open deals,
    the new-deal inflow (with ``settings.new_deals``) and the baselines."""
    snapshot = Snapshot(log, origin, segment_by=settings.segment_by, history_days=settings.history_days,
                        every=settings.every)
    snapshot.drift_or_none()      # an origin with too short a history for a drift is fitted without one
    found = baselines(snapshot, settings.horizon_days, settings.deal_value)
    if not settings.new_deals:
        found.pop("run_rate")
    inputs = {"snapshot": snapshot, "as_of": snapshot.as_of, "stats": snapshot.stage_stats,
              "amounts": snapshot.amounts, "deals": snapshot.open_deals, "baselines": found}
    if settings.new_deals:
        inputs["new_deals"] = snapshot.new_deals
        inputs["baseline_samples"] = total_baseline_samples(snapshot, settings)
    return inputs


def total_baseline_samples(snapshot: Snapshot, settings: BacktestSettings) -> dict:
    """Samples of the total revenue of the horizon by the run rate and by ETS
    (:mod:`funnelsim.sim.revenue_baselines`; ETS None on a short history), from the revenue
    won before the snapshot's cut-off."""
    from .revenue_baselines import daily_won_revenue, ets_samples, run_rate_samples

    daily = daily_won_revenue(snapshot, settings.deal_value)
    return {"run_rate": run_rate_samples(daily, settings.horizon_days, BASELINE_DRAWS, settings.seed),
            "ets": ets_samples(daily, settings.horizon_days, BASELINE_DRAWS, settings.seed)}


def run_origin(log, origin, settings: BacktestSettings) -> dict:
    """Fit and forecast as of ``origin`` (a date), and measure what happened after it."""
    from ..model.funnel_model import FunnelModel
    from .forecast import forecast

    inputs = origin_inputs(log, origin, settings)
    snapshot = inputs["snapshot"]
    model = FunnelModel(inputs["stats"], amounts=inputs["amounts"], sojourn=settings.sojourn,
                        model_config=settings.model_config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(draws=settings.draws, tune=settings.tune, chains=settings.chains, random_seed=settings.seed)
    deals, as_of = inputs["deals"], inputs["as_of"]
    result = forecast(model, deals, horizon_days=settings.horizon_days, as_of=as_of, seed=settings.seed,
                      deal_value=settings.deal_value, new_deals=inputs.get("new_deals"))
    realised = snapshot.realised(settings.horizon_days, settings.deal_value)
    ds = result.dataset
    # what each open deal won, valued as the actual is (not with the forecast's filled-in amounts)
    won = snapshot.won_by_deal(deals, settings.horizon_days, settings.deal_value).set_index("deal_id").reindex(
        ds["deal"].values.astype(str))
    out = {"origin": str(as_of.date()), "open_deals": len(deals), "actual": realised.pipeline,
           "samples": ds["pipeline_revenue"].values, "baselines": inputs["baselines"],
           "converged": bool(model.diagnostics["converged"]), "fit_s": model.timings.get("seconds"),
           "by_age": age_rows(ds["age_days"].values, ds["p_win_horizon"].values, ds["expected_revenue"].values,
                              won["won"].to_numpy(), won["revenue"].to_numpy())}
    if settings.new_deals:
        total = result.dataset["total_revenue"].values if result.has_new_deals else out["samples"]
        out["total_samples"] = total
        out["total_actual"] = realised.total
        out["baseline_samples"] = inputs["baseline_samples"]
    return out


def age_rows(age_days, p_win, expected_revenue, won, revenue) -> list[dict]:
    """Per age band (:data:`AGE_BANDS`) of open deals: ``deals``, ``forecast_wins`` (sum of the
    deals' chances of winning in the horizon), ``wins_variance`` (sum of p (1 - p)), ``wins``
    (how many did), ``forecast_revenue`` and ``revenue`` (currency). Bands without deals are
    kept (zeros), so origins add up band by band."""
    p_win, won = np.asarray(p_win, float), np.asarray(won, bool)
    expected_revenue, revenue = np.asarray(expected_revenue, float), np.asarray(revenue, float)
    band = np.searchsorted(np.asarray(AGE_BANDS[1:]), np.asarray(age_days, float), side="right")
    rows = []
    for i, label in enumerate(age_band_labels()):
        pick = band == i
        p = p_win[pick]
        rows.append({"age": label, "deals": int(pick.sum()), "forecast_wins": math.fsum(p),
                     "wins_variance": math.fsum(p * (1.0 - p)), "wins": int(won[pick].sum()),
                     "forecast_revenue": math.fsum(expected_revenue[pick]), "revenue": math.fsum(revenue[pick])})
    return rows


def age_band_labels() -> list[str]:
    """"0-30 days", "30-90 days", ..., "180+ days": the labels of :data:`AGE_BANDS`."""
    edges = [f"{e:g}" for e in AGE_BANDS]
    return [f"{a}-{b} days" for a, b in itertools.pairwise(edges)] + [f"{edges[-1]}+ days"]


# --------------------------------------------------------------------------- scores

def score(samples: np.ndarray, actual: float, seed: int = 0) -> dict:
    """Scores of one forecast (samples of revenue) against the actual revenue."""
    import scoringrules

    samples = np.asarray(samples, float)
    crps = float(scoringrules.crps_ensemble(float(actual), samples))
    p10, p50, p90 = np.quantile(samples, [0.1, 0.5, 0.9])
    row = {"actual": float(actual), "mean": float(samples.mean()), "p10": float(p10), "p50": float(p50),
           "p90": float(p90), "crps": crps, "crps_rel": crps / actual if actual > 0 else float("nan"),
           "ape_median": abs(p50 - actual) / actual if actual > 0 else float("nan")}
    for band in BANDS:
        low, high = np.quantile(samples, [(1 - band) / 2, (1 + band) / 2])
        row[f"covered{round(band * 100)}"] = bool(low <= actual <= high)
    below, tied = (samples < actual).mean(), (samples == actual).mean()
    row["pit"] = float(below + np.random.default_rng(seed).uniform() * tied)
    return row


@dataclass
class Backtest:
    """Per-origin scores (``table``) and their ``summary``."""

    table: pd.DataFrame
    settings: BacktestSettings
    samples: dict
    skipped: list = field(default_factory=list)   # origins not scored: their horizon is not over in the log
    by_age: pd.DataFrame = field(default_factory=pd.DataFrame)   # per (origin, age band): see age_rows

    @property
    def age_calibration(self) -> pd.DataFrame:
        """Per age band, pooled over the origins: deals, forecast and actual wins, their ratio,
        z = (wins - forecast) / sqrt(sum p (1 - p)), forecast and actual revenue (see module doc)."""
        if self.by_age.empty:
            return self.by_age
        t = self.by_age.groupby("age", sort=False)[["deals", "forecast_wins", "wins_variance", "wins",
                                                     "forecast_revenue", "revenue"]].sum().reset_index()
        t["wins_ratio"] = t["wins"] / t["forecast_wins"].where(t["forecast_wins"] > 0)
        t["z"] = (t["wins"] - t["forecast_wins"]) / np.sqrt(t["wins_variance"].where(t["wins_variance"] > 0))
        return t[["age", "deals", "forecast_wins", "wins", "wins_ratio", "z", "forecast_revenue", "revenue"]]

    def age_misses(self) -> list[str]:
        """A sentence per age band whose wins missed the forecast by more than :data:`LATE_CLOSE_Z`."""
        t = self.age_calibration
        if t.empty:
            return []
        revival = bool((self.settings.model_config or {}).get("revival"))
        late = "misses late closes of old deals; the band is too low for them" + (
            "" if revival else " (--revival lets deals that went dark still close: docs/revival.md)")
        return [f"open deals aged {r.age} at the origins won {r.wins:,} times against {r.forecast_wins:,.1f} forecast "
                f"({r.wins_ratio:.1f}x, z = {r.z:+.1f}): the model's time in stage "
                + (late if r.wins > r.forecast_wins else "expects more of them to close than did")
                for r in t.itertuples() if abs(r.z) > LATE_CLOSE_Z]

    @property
    def summary(self) -> dict:
        from scipy import stats

        t = self.table
        out = {f"coverage{round(b * 100)}": float(t[f"covered{round(b * 100)}"].mean()) for b in BANDS}
        out |= {"origins": len(t), "mean_crps": float(t["crps"].mean()), "mean_crps_rel": float(t["crps_rel"].mean()),
                "mean_ape_median": float(t["ape_median"].mean())}
        for name in ("weighted", "coverage", "last_period"):
            error = (t[name] - t["actual"]).abs()
            out[f"mean_ape_{name}"] = float((error / t["actual"].where(t["actual"] > 0)).mean())
            out[f"crps_skill_{name}"] = float(1 - t["crps"].mean() / error.mean()) if error.mean() > 0 else float("nan")
        out["pit_ks_p"] = float(stats.kstest(t["pit"], "uniform").pvalue) if len(t) > 1 else float("nan")
        if "total_actual" in t:
            out |= {f"total_coverage{round(b * 100)}": float(t[f"total_covered{round(b * 100)}"].mean()) for b in BANDS}
            out["total_mean_crps"] = float(t["total_crps"].mean())
            out["total_mean_ape_median"] = float(t["total_ape_median"].mean())
            error = (t["run_rate"] - t["total_actual"]).abs()
            out["total_mean_ape_run_rate"] = float((error / t["total_actual"].where(t["total_actual"] > 0)).mean())
            # skill against each baseline's own band: 1 - mean CRPS / the baseline's mean CRPS
            for name in ("run_rate", "ets"):
                if f"total_{name}_crps" not in t:
                    continue
                crps = t[f"total_{name}_crps"]
                scored = crps.notna()
                out[f"total_{name}_mean_crps"] = float(crps.mean())
                out[f"total_{name}_coverage80"] = float(t.loc[scored, f"total_{name}_covered80"].astype(float).mean())
                out[f"total_crps_skill_{name}"] = (float(1 - t.loc[scored, "total_crps"].mean() / crps[scored].mean())
                                                   if scored.any() and crps[scored].mean() > 0 else float("nan"))
            out["total_pit_ks_p"] = (float(stats.kstest(t["total_pit"], "uniform").pvalue) if len(t) > 1
                                     else float("nan"))
        out["converged_fits"] = int(t["converged"].sum())
        return out

    def to_dict(self) -> dict:
        origins = [{**{k: r[k] for k in ("origin", "open_deals", "actual", "mean", "p10", "p50", "p90", "crps",
                                         "crps_rel", "covered50", "covered80", "covered90", "pit", "ape_median",
                                         "converged")},
                    "baselines": {k: r[k] for k in ("weighted", "coverage", "last_period", "run_rate") if k in r},
                    **({"total": {k: r[f"total_{k}"] for k in ("actual", "mean", "p10", "p50", "p90", "crps",
                                                                "covered80", "pit", "ape_median")},
                        "total_baselines": {name: {k: r[f"total_{name}_{k}"] for k in ("p10", "p50", "p90", "crps",
                                                                                      "covered80")}
                                            for name in ("run_rate", "ets") if f"total_{name}_crps" in r}}
                       if "total_actual" in r else {})}
                   for r in self.table.to_dict(orient="records")]
        return json_safe({"settings": asdict(self.settings), "origins": origins, "skipped_origins": self.skipped,
                          "summary": self.summary, "by_age": self.age_calibration.to_dict(orient="records"),
                          "by_age_origins": self.by_age.drop(columns="wins_variance", errors="ignore").to_dict(
                              orient="records")})

    def to_json(self, path) -> None:
        write_json(path, self.to_dict())

    def plot_bands(self, ax=None):
        """Actual revenue against the forecast's 10-90% band and median per origin, with the
        baselines. Returns the Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(9, 4.5))
        t = self.table
        x = pd.to_datetime(t["origin"])
        ax.fill_between(x, t["p10"], t["p90"], alpha=0.3, color="C0", lw=0, label="forecast 10-90%")
        ax.plot(x, t["p50"], color="C0", marker="o", label="forecast median")
        ax.plot(x, t["actual"], color="k", marker="s", lw=2, label="actual")
        for name, color in (("weighted", "C3"), ("coverage", "C2"), ("last_period", "C1")):
            ax.plot(x, t[name], color=color, ls="--", marker=".", label=name.replace("_", " "))
        ax.set_ylabel(f"revenue in the next {self.settings.horizon_days} days")
        from ..report.charts import currency_axis

        currency_axis(ax.yaxis)
        ax.set_title("Backtest: forecast band vs actual, by origin")
        ax.legend(fontsize="small", ncols=2)
        ax.figure.autofmt_xdate()
        return ax

    def plot_pit(self, ax=None, bins: int = 5):
        """Histogram of PIT values (flat for a calibrated forecast). Returns the Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3.5))
        ax.hist(self.table["pit"], bins=np.linspace(0, 1, bins + 1), color="C0", edgecolor="white")
        ax.axhline(len(self.table) / bins, color="k", ls="--", label="uniform")
        ax.set_xlabel("PIT: share of forecast samples below the actual")
        ax.set_ylabel("origins")
        ax.legend()
        return ax


# --------------------------------------------------------------------------- driver

_WORKER_LOG = None


def _init_worker(source, funnel_dict, reading: dict):
    global _WORKER_LOG
    from ..data.events import read_events

    _WORKER_LOG = read_events(source, FunnelDefinition(**funnel_dict), **reading)


def _worker_origin(origin, settings):
    return run_origin(_WORKER_LOG, origin, settings)


def _stop_workers(pool) -> None:
    """Cancel the origins not started and terminate the worker processes: shutdown() alone
    would wait for the running fits to end. Python before 3.14 has no public way to reach the
    workers (ProcessPoolExecutor.terminate_workers), hence ``_processes``."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join(5)


def backtest(events, funnel: FunnelDefinition, origins, settings: BacktestSettings | None = None, *,
             columns: dict | None = None, dayfirst: bool = False, decimal: str = ".", encoding: str | None = None,
             sheet: str | int | None = None, segment_from: str = "first", workers: int | None = None,
             progress=None) -> Backtest:
    """Run the forecast at every origin and score it (see module doc).

    ``events``: a path or DataFrame (read once per worker process; ``columns``, ``dayfirst``,
    ``decimal``, ``encoding``, ``sheet`` and ``segment_from`` as for
    :func:`funnelsim.data.events.read_events`). ``workers``: processes
    running origins in parallel (default: the number of cores, at most the origins); each
    compiles the model once and reuses it. ``progress``: called with (done, total) after
    each origin.
    """
    from ..data.events import read_events

    settings = settings or BacktestSettings()
    origins = sorted(pd.Timestamp(o).normalize() for o in origins)
    reading = dict(columns=columns, dayfirst=dayfirst, decimal=decimal, encoding=encoding, sheet=sheet,
                   segment_from=segment_from)
    log = read_events(events, funnel, **reading)   # bad input fails here, once
    span = log.table.aggregate(first=log.table.timestamp.min(), last=log.table.timestamp.max()).to_pandas().iloc[0]
    first, last = (pd.Timestamp(span[k]).normalize() for k in ("first", "last"))
    early = [o for o in origins if o < first]
    if early:
        raise FunnelDataError(f"origin {early[0].date()} is before the first event ({first.date()})",
                              source=log.source, column="origins", value=str(early[0].date()),
                              hint="Choose origins inside the log.")
    origins, skipped = unfinished_horizons(origins, last, settings.horizon_days)
    if not origins:
        raise FunnelDataError(f"every origin's {settings.horizon_days}-day horizon runs past the log's last event "
                              f"({last.date()}): nothing that happened after them is complete enough to score",
                              source=log.source, column="origins", value=skipped[0]["origin"],
                              hint=f"Choose origins on or before {(last - pd.Timedelta(days=settings.horizon_days)).date()}, "
                                   "or a shorter --horizon.")
    workers = max(1, min(workers or os.cpu_count() or 1, len(origins)))
    results = []
    if workers == 1:
        for i, origin in enumerate(origins, start=1):
            results.append(run_origin(log, origin, settings))
            if progress:
                progress(i, len(origins))
    else:
        import multiprocessing

        source = events if not hasattr(events, "to_pandas") else events.to_pandas()
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                                 initargs=(source, funnel.to_dict(), reading)) as pool:
            try:
                with sigint_blocked():      # the workers start now, and keep SIGINT blocked
                    futures = [pool.submit(_worker_origin, origin, settings) for origin in origins]
                for i, future in enumerate(as_completed(futures), start=1):
                    results.append(future.result())
                    if progress:
                        progress(i, len(origins))
            except BaseException:            # KeyboardInterrupt, or an origin that failed
                _stop_workers(pool)
                raise
    results.sort(key=lambda r: r["origin"])
    rows = [{"origin": r["origin"], "open_deals": r["open_deals"],
             **score(r["samples"], r["actual"], seed=settings.seed + i), **r["baselines"],
             **({f"total_{k}": v for k, v in score(r["total_samples"], r["total_actual"],
                                                     seed=settings.seed + 10_000 + i).items()}
                if "total_samples" in r else {}),
             **(_baseline_scores(r["baseline_samples"], r["total_actual"]) if "baseline_samples" in r else {}),
             "converged": r["converged"], "fit_s": r["fit_s"]} for i, r in enumerate(results)]
    by_age = pd.DataFrame([{"origin": r["origin"], **row} for r in results for row in r["by_age"]])
    return Backtest(pd.DataFrame(rows), settings, {r["origin"]: r["samples"] for r in results}, skipped, by_age)


def _baseline_scores(samples: dict, actual: float) -> dict:
    """``total_<baseline>_<score>`` of each baseline's samples against the total (NaN for a
    baseline the history was too short for)."""
    scores = {}
    for name, values in samples.items():
        found = score(values, actual) if values is not None else {}
        for key in ("p10", "p50", "p90", "crps", "covered80"):
            scores[f"total_{name}_{key}"] = found.get(key, float("nan"))
    return scores


def unfinished_horizons(origins, last_event: pd.Timestamp, horizon_days: int) -> tuple[list, list[dict]]:
    """(origins whose horizon the log covers, the others as ``{"origin", "horizon_end",
    "reason"}``): an origin whose horizon ends after the log's last event would be scored
    against actuals that are not all in yet."""
    kept, skipped = [], []
    for origin in origins:
        end = origin + pd.Timedelta(days=horizon_days)
        if end > last_event:
            skipped.append({"origin": str(origin.date()), "horizon_end": str(end.date()),
                            "reason": f"its horizon ends after the log's last event ({last_event.date()})"})
        else:
            kept.append(origin)
    return kept, skipped
