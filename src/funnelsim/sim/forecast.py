"""Revenue forecast of the open pipeline: bands, target odds, per-deal win chances.

:func:`forecast` takes a fitted :class:`funnelsim.model.funnel_model.FunnelModel` and the deals open at the
as-of date (:func:`funnelsim.data.deals.open_deals`), runs :func:`funnelsim.sim.kernel.simulate`
and returns a :class:`Forecast`: an xarray Dataset with named dims ``draw``, ``period`` and
``deal``. Revenue is in the currency of the event log (whatever its ``amount`` column holds);
periods are calendar weeks, months or quarters from the day after as-of to the end of the
horizon (the first and last may be partial).

``pipeline_revenue`` counts revenue from deals open at as-of that are won within the horizon.
With ``new_deals`` (:class:`funnelsim.sim.inflow.NewDeals`), deals created during the horizon are
simulated too (``new_revenue``, ``new_wins``; ``created_won_revenue`` per draw is the part of
deals created already won) and ``total_revenue`` adds them up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from .._io import json_safe, write_json
from ..data.events import FunnelDataError
from ..data.spells import end_of_day
from ..defaults import BAND, HORIZON_DAYS
from .run import check_run_settings, new_deal_draws_for, simulate_run

__all__ = ["Forecast", "forecast", "PERIODS"]

PERIODS = {"day": "D", "week": "W", "month": "M", "quarter": "Q"}


def forecast(model, deals, *, horizon_days: int = HORIZON_DAYS, as_of=None, period: str = "month",
             draws: int | None = None, seed: int = 0, deal_value: float | None = None,
             chunk_draws: int | None = None, new_deals=None) -> Forecast:
    """Simulate the open deals through the fitted ``model`` for ``horizon_days`` days.

    ``deals``: a :class:`funnelsim.Snapshot` (its open deals, its as-of day and, unless
    ``new_deals=False``, its new-deal inflow), or a DataFrame of open deals
    (:attr:`funnelsim.Snapshot.open_deals`: deal_id, segment, stage, age_days, amount), whose
    ``as_of`` defaults to ``deals.attrs["as_of"]``, else the model's.
    ``period``: "day", "week", "month" or "quarter". ``draws``: posterior draws to use
    (evenly spaced; all by default). The same ``seed`` gives the same numbers.
    ``deal_value``: the amount (currency) of open deals that have none, e.g. for a log with
    no amounts; by default they take one from their segment's won amounts (0 if none).
    ``new_deals``: a :class:`funnelsim.sim.inflow.NewDeals` (or True / False with a
    snapshot); deals created during the horizon are then simulated as well (valued like open
    deals without an amount) and reported apart.
    """
    deals, as_of, new_deals = _inputs(deals, as_of, new_deals)
    if period not in PERIODS:
        raise FunnelDataError(f"unknown period {period!r}", column="period", value=period,
                              hint=f"Use one of {', '.join(PERIODS)}.")
    check_run_settings(horizon_days, deal_value)
    as_of = pd.Timestamp(as_of or deals.attrs.get("as_of") or model.stats.as_of).normalize()
    days = pd.date_range(end_of_day(as_of), periods=int(horizon_days), freq="D")
    periods = days.to_period(PERIODS[period])
    period_of_day, labels = pd.factorize(periods)
    if deal_value is not None:
        deals = deals.assign(amount=deals["amount"].fillna(float(deal_value)))
    params = model.simulation_parameters(draws=draws, seed=seed, horizon_days=horizon_days)
    fresh = new_deal_draws_for(model, new_deals, params, horizon_days, period_of_day, seed, deal_value)
    run = simulate_run(model, deals, params, horizon_days, period_of_day=period_of_day, seed=seed,
                       deal_value=deal_value, chunk_draws=chunk_draws,
                       inflow=None if fresh is None else fresh.inflow,
                       created_won=None if fresh is None else fresh.created_won)
    sim = run.pipeline
    close_day = sim.median_close_day()
    close_date = np.where(np.isnan(close_day), np.datetime64("NaT"),
                          end_of_day(as_of).to_datetime64() + np.nan_to_num(close_day).astype("timedelta64[D]"))
    dataset = xr.Dataset(
        {
            "revenue": (("draw", "period"), sim.revenue),
            "wins": (("draw", "period"), sim.wins),
            "cumulative_revenue": (("draw", "period"), np.cumsum(sim.revenue, axis=1)),
            "pipeline_revenue": (("draw",), run.pipeline_revenue),
            "stage": (("deal",), deals["stage"].to_numpy(str)),
            "segment": (("deal",), deals["segment"].to_numpy(str)),
            "age_days": (("deal",), deals["age_days"].to_numpy(float)),
            "amount": (("deal",), deals["amount"].to_numpy(float)),
            "p_win_horizon": (("deal",), sim.p_win_horizon),
            "p_win_ever": (("deal",), sim.p_win_ever),
            "expected_revenue": (("deal",), sim.expected_revenue),
            "median_close_date": (("deal",), close_date.astype("datetime64[ns]")),
        },
        coords={
            "draw": np.arange(params.draws),
            "period": [str(p) for p in labels],
            "period_start": ("period", [max(p.start_time, days[0]) for p in labels]),
            "period_end": ("period", [min(p.end_time.normalize(), days[-1]) for p in labels]),
            "deal": deals["deal_id"].to_numpy(str),
        },
        attrs={"as_of": str(as_of.date()), "horizon_days": int(horizon_days), "period": period, "seed": seed,
               "currency": "as in the event log's amount column", "capped_paths": sim.capped,
               "created_by": "funnelsim"},
    )
    if run.new_revenue is not None:
        dataset["new_revenue"] = (("draw", "period"), run.new_revenue)
        dataset["new_wins"] = (("draw", "period"), run.new_wins)
        dataset["total_revenue"] = (("draw",), run.total_revenue)
        dataset["created_won_revenue"] = (("draw",), run.created_won_revenue)     # part of new_revenue
        dataset.attrs["new_deals_per_week"] = float(new_deals.per_week.sum())
        dataset.attrs["created_won_per_week"] = float(new_deals.created_won_per_week)
        dataset.attrs["new_deal_history_weeks"] = new_deals.weeks
        # the weekly level's discounts and their weights (sim/inflow.py): 1 is a level that does not move
        dataset.attrs["new_deal_level_discounts"] = (dict(fresh.inflow[1].attrs.get("discounts", {}))
                                                     if fresh is not None and fresh.inflow is not None else {})
    result = Forecast(dataset, model)
    result._rerun = _Rerun(deals, params, int(horizon_days), seed, deal_value, chunk_draws)
    return result


@dataclass(frozen=True)
class _Rerun:
    """What :meth:`Forecast.segment_revenue` needs to simulate the open deals again, one
    segment at a time, with the run's posterior draws and seed (so each deal draws the same
    numbers as in the forecast)."""

    deals: pd.DataFrame
    params: object
    horizon_days: int
    seed: int
    deal_value: float | None
    chunk_draws: int | None


def _inputs(deals, as_of, new_deals):
    """(open deals, as-of, new deals) from a Snapshot or from the deals themselves."""
    from ..data.snapshot import Snapshot

    if isinstance(deals, Snapshot):
        snapshot = deals
        if new_deals is True or new_deals is None:
            new_deals = snapshot.new_deals
        elif new_deals is False:
            new_deals = None
        return snapshot.open_deals, as_of or snapshot.as_of, new_deals
    if new_deals is False:
        return deals, as_of, None
    if new_deals is True:
        raise FunnelDataError("new_deals=True needs a Snapshot to learn the inflow from",
                              hint="Pass forecast(model, snapshot, ...) or new_deals=snapshot.new_deals.")
    return deals, as_of, new_deals


def _band(samples: np.ndarray) -> dict:
    p10, p50, p90 = np.quantile(samples, BAND) if samples.size else (np.nan,) * 3
    return {"mean": float(samples.mean()), "p10": float(p10), "p50": float(p50), "p90": float(p90)}


class Forecast:
    """A revenue forecast: ``dataset`` (xarray, dims draw / period / deal) plus the model it
    came from. Revenue in the event log's currency; dates are calendar days."""

    def __init__(self, dataset: xr.Dataset, model):
        self.dataset = dataset
        self.model = model
        self._rerun: _Rerun | None = None            # set by forecast(); needed by segment_revenue()
        self._segment_revenue: xr.DataArray | None = None
        self.track_record = None      # a funnelsim.sim.track_record.TrackRecord, set by forecast --check
        self.calibrate = False        # with a track record: also report the band it calibrates

    @property
    def headline_samples(self) -> np.ndarray:
        """The draws of the revenue the forecast headlines: the total with new deals, else the
        open pipeline's (what a track record scores)."""
        return self.dataset["total_revenue" if self.has_new_deals else "pipeline_revenue"].values

    def calibrated_summary(self, target: float | None = None) -> str:
        """A sentence on the band the track record calibrates (``track_record.calibrated``)."""
        c = self.track_record.calibrated(self.headline_samples, target)
        what = "total revenue" if self.has_new_deals else "revenue from the open pipeline"
        if not np.isfinite(c["factor"]):
            return ("The band cannot be calibrated by this track record: at a past origin it had no width "
                    "(P10 = P90) and missed the actual, so no widening would have covered it; the model's band "
                    "stands, uncalibrated. Check fewer origins, or later ones.")
        text = (f"Calibrated by the track record, {what} is {c['p50']:,.0f} at the median with an 80% band of "
                f"{c['p10']:,.0f} to {c['p90']:,.0f} (the model's band widened x{c['factor']:.2f} on the log scale)")
        if target is not None:
            text += f"; the chance of reaching {target:,.0f} is {c['p_hit']:.0%}"
        text += "."
        if c["rough"]:
            text += f" Rough: {self.track_record.checked} past origin(s); 4 or more give the 80% guarantee."
        return text

    @property
    def as_of(self) -> str:
        return self.dataset.attrs["as_of"]

    @property
    def horizon_days(self) -> int:
        return self.dataset.attrs["horizon_days"]

    def pipeline_revenue(self) -> dict:
        """Revenue within the horizon from deals open at as-of: mean, P10, P50, P90."""
        return _band(self.dataset["pipeline_revenue"].values)

    @property
    def has_new_deals(self) -> bool:
        return "total_revenue" in self.dataset

    def total_revenue(self) -> dict | None:
        """Revenue within the horizon from open deals plus deals created during it: mean, P10,
        P50, P90 (None without ``new_deals``)."""
        if not self.has_new_deals:
            return None
        return _band(self.dataset["total_revenue"].values)

    def p_hit(self, target: float, total: bool = False) -> float:
        """Chance that pipeline revenue (``total``: pipeline plus new deals) within the horizon
        reaches ``target`` (currency)."""
        name = "total_revenue" if total else "pipeline_revenue"
        if name not in self.dataset:
            raise ValueError("this forecast has no new deals: pass new_deals= to forecast()")
        return float((self.dataset[name].values >= target).mean())

    def by_period(self) -> pd.DataFrame:
        """Per period: start, end, revenue and cumulative revenue (mean, P10, P50, P90) and
        expected wins; with new deals also their revenue and wins (means) and the total
        revenue (mean, P10, P50, P90)."""
        ds = self.dataset
        table = pd.DataFrame({"period": ds["period"].values, "start": ds["period_start"].values,
                              "end": ds["period_end"].values})
        for name in ("revenue", "cumulative_revenue"):
            values = ds[name].values
            table[f"{name}_mean"] = values.mean(axis=0)
            for q, row in zip(BAND, np.quantile(values, BAND, axis=0), strict=True):
                table[f"{name}_p{round(q * 100)}"] = row
        table["wins_mean"] = ds["wins"].values.mean(axis=0)
        if self.has_new_deals:
            table["new_revenue_mean"] = ds["new_revenue"].values.mean(axis=0)
            table["new_wins_mean"] = ds["new_wins"].values.mean(axis=0)
            total = ds["revenue"].values + ds["new_revenue"].values
            table["total_revenue_mean"] = total.mean(axis=0)
            for q, row in zip(BAND, np.quantile(total, BAND, axis=0), strict=True):
                table[f"total_revenue_p{round(q * 100)}"] = row
        return table

    def deals(self) -> pd.DataFrame:
        """Per open deal, sorted by expected revenue within the horizon (largest first)."""
        ds = self.dataset
        table = ds[["stage", "segment", "age_days", "amount", "p_win_horizon", "p_win_ever", "expected_revenue",
                    "median_close_date"]].to_dataframe().rename_axis("deal_id").reset_index()
        return table.sort_values(["expected_revenue", "deal_id"], ascending=[False, True], ignore_index=True)

    def segment_revenue(self) -> xr.DataArray:
        """Pipeline revenue within the horizon per draw and segment (currency), dims
        (``draw``, ``segment``), segments in the model's order (those with open deals).

        Each segment's deals are simulated again with the forecast's posterior draws and seed;
        a deal's random numbers depend only on its own id, so every deal brings exactly what it
        brought in the forecast, and in every draw the segments add up to
        ``dataset["pipeline_revenue"]`` (up to floating-point rounding of the sum, about 1e-12
        relative). Computed once, on first call; the forecast's own numbers are untouched.
        """
        if self._segment_revenue is None:
            self._segment_revenue = self._simulate_segments()
        return self._segment_revenue

    def _simulate_segments(self) -> xr.DataArray:
        if self._rerun is None:
            raise ValueError("this Forecast was not made by funnelsim.forecast(): it cannot be split by segment")
        r = self._rerun
        present = set(r.deals["segment"].astype(str))
        segments = [g for g in self.model.data.segments if g in present]
        values = np.zeros((r.params.draws, len(segments)))
        for i, segment in enumerate(segments):
            part = r.deals[r.deals["segment"].astype(str) == segment]
            run = simulate_run(self.model, part, r.params, r.horizon_days, period_of_day=np.zeros(r.horizon_days, int),
                               seed=r.seed, deal_value=r.deal_value, chunk_draws=r.chunk_draws)
            values[:, i] = run.pipeline_revenue
        return xr.DataArray(values, dims=("draw", "segment"),
                            coords={"draw": self.dataset["draw"].values, "segment": segments},
                            name="segment_revenue", attrs={"units": "currency of the event log"})

    def by_segment(self) -> pd.DataFrame:
        """Per segment with open deals: ``deals`` (count), ``open_amount`` (sum of known
        amounts, currency) and the pipeline revenue within the horizon: ``mean``, ``p10``,
        ``p50``, ``p90`` and ``share`` of the total mean. The bands come from per-draw sums
        (:meth:`segment_revenue`), so the segments add up to the total in every draw; their
        P10s do not add up to the total's P10 (nor should they)."""
        draws = self.segment_revenue()
        ds = self.dataset
        segment_of_deal = pd.Series(ds["segment"].values)
        amount = pd.Series(ds["amount"].values)
        total = float(ds["pipeline_revenue"].values.mean())
        rows = []
        for segment in draws["segment"].values:
            band = _band(draws.sel(segment=segment).values)
            mine = segment_of_deal == segment
            rows.append({"segment": str(segment), "deals": int(mine.sum()), "open_amount": float(amount[mine].sum()),
                         **band, "share": band["mean"] / total if total else np.nan})
        return pd.DataFrame(rows, columns=["segment", "deals", "open_amount", "mean", "p10", "p50", "p90", "share"])

    def to_dict(self, target: float | None = None) -> dict:
        """The forecast JSON contract (docs/architecture.md; plus a few more keys). ``segments``
        (per-segment bands of the open pipeline's revenue) is there once :meth:`by_segment`
        or :meth:`segment_revenue` has been called (``funnelsim report --json`` does)."""
        revenue = self.pipeline_revenue()
        revenue["samples"] = self.dataset["pipeline_revenue"].values.tolist()
        model_dict = self.model.to_dict()
        deals = self.deals()
        result = {
            "as_of": self.as_of, "horizon_days": self.horizon_days,
            "currency": self.dataset.attrs["currency"],
            "pipeline_revenue": revenue,
            "periods": [{"period": r["period"], "start": str(pd.Timestamp(r["start"]).date()),
                         "end": str(pd.Timestamp(r["end"]).date()), "mean": r["revenue_mean"],
                         "p10": r["revenue_p10"], "p50": r["revenue_p50"], "p90": r["revenue_p90"],
                         "cumulative_p50": r["cumulative_revenue_p50"], "wins_mean": r["wins_mean"]}
                        for r in self.by_period().to_dict(orient="records")],
            "deals": [{"deal_id": r["deal_id"], "stage": r["stage"], "segment": r["segment"],
                       "age_days": r["age_days"], "amount": r["amount"], "p_win_horizon": r["p_win_horizon"],
                       "p_win_ever": r["p_win_ever"], "expected_revenue": r["expected_revenue"],
                       "median_close_date": None if pd.isna(r["median_close_date"])
                       else str(pd.Timestamp(r["median_close_date"]).date())}
                      for r in deals.to_dict(orient="records")],
            "stages": model_dict["stages"],
            "diagnostics": model_dict["diagnostics"],
            "drift": self.model.drift_summary(self.horizon_days),
        }
        if self._segment_revenue is not None:
            result["segments"] = [{k: r[k] for k in ("segment", "mean", "p10", "p50", "p90")}
                                  for r in self.by_segment().to_dict(orient="records")]
        if self.has_new_deals:
            total = self.total_revenue()
            total["samples"] = self.dataset["total_revenue"].values.tolist()
            result["total_revenue"] = total
            result["new_deals"] = {"per_week": self.dataset.attrs["new_deals_per_week"],
                                   "created_won_per_week": self.dataset.attrs.get("created_won_per_week", 0.0),
                                   "created_won_revenue_mean": float(self.dataset["created_won_revenue"].mean())
                                   if "created_won_revenue" in self.dataset else 0.0,
                                   "history_weeks": self.dataset.attrs["new_deal_history_weeks"],
                                   "level_discounts": [{"discount": d, "weight": w} for d, w in
                                                       self.dataset.attrs.get("new_deal_level_discounts", {}).items()],
                                   "wins_mean": float(self.dataset["new_wins"].values.sum(axis=1).mean())}
            for row, period in zip(result["periods"], self.by_period().to_dict(orient="records"), strict=True):
                row |= {"new_mean": period["new_revenue_mean"], "total_mean": period["total_revenue_mean"],
                        "total_p10": period["total_revenue_p10"], "total_p50": period["total_revenue_p50"],
                        "total_p90": period["total_revenue_p90"]}
        if target is not None:
            result["target"] = {"amount": float(target), "p_hit": self.p_hit(target)}
            if self.has_new_deals:
                result["target"]["p_hit_total"] = self.p_hit(target, total=True)
        if self.track_record is not None:
            result["track_record"] = self.track_record.to_dict(self.headline_samples if self.calibrate else None,
                                                               target)
        return json_safe(result)

    def to_json(self, path=None, target: float | None = None) -> str:
        """The JSON text; with ``path``, also written atomically (temp file, then rename)."""
        data = self.to_dict(target)
        if path is not None:
            write_json(path, data)
        return json.dumps(data)

    def plot_fan(self, ax=None, bands=(0.5, 0.8), target: float | None = None):
        """Fan chart of cumulative pipeline revenue by period end: median and the ``bands``
        (central intervals). Returns the matplotlib Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(8, 4.5))
        ds = self.dataset
        values = np.concatenate([np.zeros((ds.sizes["draw"], 1)), ds["cumulative_revenue"].values], axis=1)
        ends = [pd.Timestamp(self.as_of)] + [pd.Timestamp(e) for e in ds["period_end"].values]
        for band in sorted(bands, reverse=True):
            low, high = np.quantile(values, [(1 - band) / 2, (1 + band) / 2], axis=0)
            ax.fill_between(ends, low, high, alpha=0.25, color="C0", lw=0, label=f"{band:.0%} band")
        ax.plot(ends, np.median(values, axis=0), color="C0", marker="o", label="median")
        if self.has_new_deals:
            total = np.cumsum(ds["revenue"].values + ds["new_revenue"].values, axis=1)
            ax.plot(ends, np.concatenate([[0.0], np.median(total, axis=0)]), color="C2", ls="--", marker=".",
                    label="median with new deals")
        if target is not None:
            ax.axhline(target, color="C3", ls="--", label=f"target (P(hit) {self.p_hit(target):.0%})")
        ax.set_title(f"Cumulative revenue from the open pipeline, as of {self.as_of}")
        ax.set_ylabel("revenue (currency of the event log)")
        from ..report.charts import currency_axis

        currency_axis(ax.yaxis)
        ax.legend(loc="upper left")
        ax.figure.autofmt_xdate()
        return ax

    def _level_note(self) -> str:
        """", the weekly level moving (...)" when the inflow's level most likely moves."""
        weights = self.dataset.attrs.get("new_deal_level_discounts", {})
        moving = sum(w for d, w in weights.items() if d < 1.0)
        return (f"; its weekly level moves (P = {moving:.0%}), so recent weeks weigh more and the band widens "
                "with the horizon" if moving > 0.5 else "")

    def summary(self, target: float | None = None) -> str:
        """A few plain sentences for the revenue team."""
        r = self.pipeline_revenue()
        deals = self.deals()
        text = (f"As of {self.as_of}, the {len(deals):,} open deals are expected to bring {r['mean']:,.0f} "
                f"in the next {self.horizon_days} days: 80% band {r['p10']:,.0f} to {r['p90']:,.0f} "
                f"(median {r['p50']:,.0f}).")
        wins = self.dataset["wins"].values.sum(axis=1)
        w10, w90 = np.quantile(wins, [0.1, 0.9]) if wins.size else (0.0, 0.0)
        text += f" Deals won in that time: {wins.mean():,.1f} expected (80% band {w10:,.0f} to {w90:,.0f})."
        if target is not None:
            text += f" The chance of reaching {target:,.0f} is {self.p_hit(target):.0%}."
        if self.has_new_deals:
            t = self.total_revenue()
            new_wins = self.dataset["new_wins"].values.sum(axis=1).mean()
            created_won = self.dataset.attrs.get("created_won_per_week", 0.0)
            text += (f" Deals created during the horizon (about {self.dataset.attrs['new_deals_per_week']:,.1f} a week"
                     + (f", plus {created_won:,.1f} created already won, worth "
                        f"{float(self.dataset['created_won_revenue'].mean()):,.0f} in all" if created_won else "")
                     + f", on average over the last {self.dataset.attrs['new_deal_history_weeks']} weeks"
                     + self._level_note() + f") add {new_wins:,.1f} "
                     f"expected wins; with them revenue is expected at {t['mean']:,.0f} "
                     f"(80% band {t['p10']:,.0f} to {t['p90']:,.0f})")
            text += (f", and the chance of reaching {target:,.0f} is {self.p_hit(target, total=True):.0%}."
                     if target is not None else ".")
        drift = self.model.drift_summary(self.horizon_days)
        if drift:
            text += (f" Conversion and days in stage drift over {drift['every']}ly entry cohorts ({drift['cohorts']} "
                     f"learnt from): open deals follow their own cohort, and stays begun during the horizon a cohort "
                     f"projected {drift['projected_cohorts']:.1f} {drift['every']}s ahead, so the band carries the drift.")
        if len(deals) and deals["amount"].isna().all() and r["p90"] == 0:
            text += (" The log has no amounts and no won amounts to borrow, so revenue is 0: read the deal "
                     "counts, or pass a value per deal (--deal-value).")
        if len(deals):
            top = deals.head(10)["expected_revenue"].sum()
            share = top / deals["expected_revenue"].sum() if deals["expected_revenue"].sum() else 0.0
            text += (f" The ten deals with the largest expected revenue carry {share:.0%} of it; "
                     f"{(deals['p_win_horizon'] >= 0.5).sum():,} deals are more likely than not to close in the horizon.")
        if not self.model.diagnostics["converged"]:
            text += " WARNING: the model fit failed its convergence checks; treat these numbers as unreliable."
        return text

    def _repr_html_(self) -> str:
        r = self.pipeline_revenue()
        periods = self.by_period()[["period", "revenue_mean", "revenue_p10", "revenue_p50", "revenue_p90"]]
        top = self.deals().head(10)
        return (f"<h4>Pipeline forecast as of {self.as_of}, next {self.horizon_days} days</h4>"
                f"<p>Revenue: mean {r['mean']:,.0f}; 80% band {r['p10']:,.0f} – {r['p90']:,.0f} "
                f"(median {r['p50']:,.0f}); {self.dataset.sizes['deal']:,} open deals, "
                f"{self.dataset.sizes['draw']:,} posterior draws.</p>"
                + (f"<p>With deals created during the horizon: mean {self.total_revenue()['mean']:,.0f}; "
                   f"80% band {self.total_revenue()['p10']:,.0f} – {self.total_revenue()['p90']:,.0f}.</p>"
                   if self.has_new_deals else "")
                + periods.to_html(index=False, float_format=lambda v: f"{v:,.0f}")
                + "<p>Ten deals with the largest expected revenue:</p>"
                + top.to_html(index=False, float_format=lambda v: f"{v:,.2f}"))

    def __repr__(self) -> str:
        return self.summary()
