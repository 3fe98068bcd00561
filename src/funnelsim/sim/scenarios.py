"""What-if scenarios and the bottleneck ranking, as paired comparisons.

A scenario (:mod:`funnelsim.sim.changes`: what it is, how it reads from TOML and edits the
posterior draws and the pipeline) reruns the simulator with the same seed: every deal keeps
its random stream (keyed by its id), so the difference from the baseline in each draw is the
effect of the change, not Monte Carlo noise. Each run is :func:`funnelsim.sim.run.simulate_run`,
the same run a forecast makes.

:func:`compare` returns a :class:`WhatIf`: the comparison table and the revenue draws behind
it, so plotting or re-summarising does not simulate again. Revenue is in the currency of the
event log, within ``horizon_days`` days after as-of.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._io import json_safe, write_json
from .._random import rng as random_stream
from ..data.events import FunnelDataError
from ..defaults import BAND, HORIZON_DAYS
from .changes import (
    Change,
    NewDeal,
    Scenario,
    _check_names,
    apply_changes,
    check_names,
    read_scenarios,
    scenario_deals,
)
from .run import simulate_run

__all__ = ["Change", "NewDeal", "Scenario", "read_scenarios", "check_names", "apply_changes", "compare", "WhatIf",
           "comparison_json", "bottlenecks", "plot_scenarios", "paired_revenue"]


# --------------------------------------------------------------------------- comparing

def _revenue(model, deals, params, horizon_days, seed, deal_value, inflow=None):
    """Revenue per draw within the horizon (currency): the open ``deals``, plus with
    ``inflow`` = (counts, cells) the new deals of :mod:`funnelsim.sim.inflow`."""
    every_day = np.zeros(int(horizon_days), int)
    run = simulate_run(model, deals, params, horizon_days, period_of_day=every_day, seed=seed,
                       deal_value=deal_value, inflow=inflow)
    revenue = run.pipeline.revenue[:, 0]
    if run.new_revenue is not None:
        revenue = revenue + run.new_revenue[:, 0]
    return revenue


# deals created already won take no path to pair: these levers scale their revenue, draw by draw
_CREATED_WON_LEVERS = ("new_deals_factor", "amount_factor")


def _segment_factors(scenario: Scenario, segments, levers) -> np.ndarray:
    """Per segment, the product of ``scenario``'s changes of the given ``levers`` that apply to
    it (a change without a segment applies to all), and 0 outside the scenario's own segment."""
    factor = np.ones(len(segments))
    for change in scenario.changes:
        for value in (getattr(change, lever) for lever in levers):
            if value is not None:
                factor[[change.segment is None or g == change.segment for g in segments]] *= value
    if scenario.segment is not None:
        factor[[g != scenario.segment for g in segments]] = 0.0
    return factor


def _scenario_inflow(scenario: Scenario, inflow, uniforms, segments):
    """The new-deal counts of ``scenario``: only its segment's cells when it has one, each
    cell's counts times the product of the matching new_deals_factor changes (paired, see
    the module doc)."""
    if inflow is None:
        return None
    counts, cells = inflow
    factor = _segment_factors(scenario, segments, ("new_deals_factor",))[cells["segment_index"].to_numpy(int)]
    if (factor == 1.0).all():
        return counts, cells
    return np.floor(counts * factor[None, :] + uniforms).astype(np.int64), cells


def _band(values) -> dict:
    p10, p50, p90 = np.quantile(values, BAND)
    return {"mean": float(values.mean()), "p10": float(p10), "p50": float(p50), "p90": float(p90)}


def _deals_and_inflow(deals, new_deals):
    """(open deals, new deals) from a Snapshot (new deals unless ``new_deals`` is False) or
    from the deals themselves."""
    from ..data.snapshot import Snapshot

    if isinstance(deals, Snapshot):
        if new_deals is True or new_deals is None:
            new_deals = deals.new_deals
        elif new_deals is False:
            new_deals = None
        return deals.open_deals, new_deals
    if isinstance(new_deals, bool):
        raise FunnelDataError("new_deals=True needs a Snapshot to learn the inflow from",
                              hint="Pass the snapshot instead of its open deals, or new_deals=snapshot.new_deals.")
    return deals, new_deals


def paired_revenue(model, deals, scenarios, *, horizon_days: int = HORIZON_DAYS, draws: int | None = None,
                   seed: int = 0, deal_value: float | None = None, new_deals=None,
                   progress=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per scenario name: (baseline, scenario) revenue per draw, simulated with the same
    seed and random streams. ``deals``: a :class:`funnelsim.Snapshot` or its open deals. With
    ``new_deals`` (:class:`funnelsim.sim.inflow.NewDeals`; by default a snapshot's), both
    include the deals created during the horizon. ``progress``: called with (done, total)
    after each scenario."""
    from .run import new_deal_draws_for

    deals, new_deals = _deals_and_inflow(deals, new_deals)
    stages, segments = list(model.funnel.stages), list(model.data.segments)
    params = model.simulation_parameters(draws=draws, seed=seed, horizon_days=horizon_days)
    every_day = np.zeros(int(horizon_days), int)
    fresh = new_deal_draws_for(model, new_deals, params, horizon_days, every_day, seed, deal_value)
    inflow = uniforms = None
    created_names = segments                                    # segments of the created-won revenue
    created_won = np.zeros((len(segments), params.draws))        # revenue of deals created already won
    if fresh is not None:
        inflow = fresh.inflow
        if inflow is not None:
            uniforms = random_stream(seed, "scenario_inflow").random(inflow[0].shape)
        created_names, created_won = fresh.segments, fresh.created_won[0, :, :, 0]
    baselines: dict = {}
    result = {}
    for scenario in scenarios:
        _check_names(scenario, stages, segments, deals)
        if fresh is None and any(c.new_deals_factor is not None for c in scenario.changes):
            raise FunnelDataError(f"scenario {scenario.name!r}: new_deals_factor needs new deals in the comparison",
                                  column="new_deals_factor",
                                  hint="Keep --new-deals on (the default), with at least two weeks of history.")
        if scenario.segment not in baselines:
            base = Scenario("baseline", segment=scenario.segment)
            baselines[scenario.segment] = _revenue(model, scenario_deals(base, deals, segments), params, horizon_days,
                                                   seed, deal_value, _scenario_inflow(base, inflow, uniforms, segments)) \
                + _segment_factors(base, created_names, _CREATED_WON_LEVERS) @ created_won
        edited = apply_changes(params, scenario.changes, stages, segments)
        revenue = _revenue(model, scenario_deals(scenario, deals, segments), edited, horizon_days, seed, deal_value,
                           _scenario_inflow(scenario, inflow, uniforms, segments)) \
            + _segment_factors(scenario, created_names, _CREATED_WON_LEVERS) @ created_won
        base = baselines[scenario.segment]
        # removing or adding deals changes the order of the sums: differences of rounding
        # size (1e-9 of the revenue) are no difference
        same = np.abs(revenue - base) <= 1e-9 * np.maximum(np.abs(base), 1.0)
        result[scenario.name] = (base, np.where(same, base, revenue))
        if progress:
            progress(len(result), len(scenarios))
    return result


@dataclass
class WhatIf:
    """The result of :func:`compare`: ``table`` (one row per scenario, see :func:`compare`) and
    ``draws``, per scenario name the (baseline, scenario) revenue per posterior draw
    (currency, within ``horizon_days``), which the table summarises and :meth:`plot` draws."""

    table: pd.DataFrame
    draws: dict[str, tuple[np.ndarray, np.ndarray]]
    horizon_days: int
    target: float | None = None

    def to_dict(self) -> dict:
        """The ``whatif`` JSON contract: ``{"baseline": {...}, "scenarios": [...]}``."""
        return comparison_json(self.table, self.target)

    def to_json(self, path) -> None:
        """Write :meth:`to_dict` atomically."""
        write_json(path, self.to_dict())

    def plot(self, ax=None):
        """Revenue bands (10-90% line, 25-75% box, median) of the baseline and each scenario
        side by side, from the kept draws. Returns the matplotlib Axes."""
        return plot_scenarios(self, ax=ax)


def compare(model, deals, scenarios, *, horizon_days: int = HORIZON_DAYS, draws: int | None = None,
            seed: int = 0, target: float | None = None, deal_value: float | None = None,
            new_deals=None, progress=None) -> WhatIf:
    """Compare ``scenarios`` with the baseline forecast of ``deals`` (a :class:`funnelsim.Snapshot`,
    whose new deals then count unless ``new_deals=False``, or its open deals).

    Returns a :class:`WhatIf` whose ``table`` has one row per scenario: revenue within the
    horizon (mean, P10, P50, P90), the paired difference from the baseline (``delta_*``, per
    draw, then summarised), P(scenario beats the baseline) (ties, e.g. a null scenario, count
    as not better), and with ``target`` the chance of reaching it (``p_hit``) beside the
    baseline's (``baseline_p_hit``). With ``new_deals``, revenue includes deals created
    during the horizon. ``progress``: called with (done, total) after each scenario."""
    paired = paired_revenue(model, deals, scenarios, horizon_days=horizon_days, draws=draws, seed=seed,
                            deal_value=deal_value, new_deals=new_deals, progress=progress)
    by_name = {scenario.name: scenario for scenario in scenarios}
    rows = []
    for name, (base, revenue) in paired.items():
        scenario = by_name[name]
        row = {"scenario": name, "segment": scenario.segment, "is_baseline": scenario.is_baseline,
               **{f"revenue_{k}": v for k, v in _band(revenue).items()},
               **{f"delta_{k}": v for k, v in _band(revenue - base).items()},
               **{f"baseline_{k}": v for k, v in _band(base).items()},
               "p_better": float((revenue > base).mean())}
        if target is not None:
            # the target is the whole funnel's: a scenario of one segment's deals is not held to it
            whole = scenario.segment is None
            row |= {"p_hit": float((revenue >= target).mean()) if whole else np.nan,
                    "baseline_p_hit": float((base >= target).mean()) if whole else np.nan}
        rows.append(row)
    return WhatIf(pd.DataFrame(rows), paired, int(horizon_days), target)


def comparison_json(table, target: float | None = None) -> dict:
    """The ``whatif`` JSON contract (docs/architecture.md): ``{"baseline": {...}, "scenarios":
    [...]}`` from a :class:`WhatIf` or its table."""
    table = getattr(table, "table", table)
    band = ("mean", "p10", "p50", "p90")

    def baseline_of(r):
        own = {k: r[f"baseline_{k}"] for k in band}
        return own | ({"p_hit": r["baseline_p_hit"]} if target is not None else {})

    records = table.to_dict(orient="records")
    # the whole funnel's baseline (the first scenario's when every scenario has a segment)
    whole = next((r for r in records if pd.isna(r.get("segment"))), records[0] if records else None)
    scenarios = []
    for r in records:
        entry = {"name": r["scenario"], "segment": None if pd.isna(r.get("segment")) else r["segment"],
                 "revenue": {k: r[f"revenue_{k}"] for k in band}, "delta": {k: r[f"delta_{k}"] for k in band},
                 "p_better": r["p_better"], "baseline": baseline_of(r)}
        if target is not None:
            entry |= {"p_hit": r["p_hit"], "p_hit_change": r["p_hit"] - r["baseline_p_hit"]}
        scenarios.append(entry)
    baseline = {} if whole is None else baseline_of(whole)
    return json_safe({"baseline": baseline, "scenarios": scenarios, **({"target": target} if target else {})})


def bottlenecks(model, deals, *, horizon_days: int = HORIZON_DAYS, points: float = 5.0, time_factor: float = 0.8,
                by_segment: bool = False, draws: int | None = None, seed: int = 0,
                deal_value: float | None = None, new_deals=None, progress=None) -> pd.DataFrame:
    """Where to focus: for every stage (and, with ``by_segment``, for each segment beside all
    segments at once, ``segment`` None), the revenue gained
    within the horizon from ``points`` more points of conversion and from time in the stage
    times ``time_factor``, as paired differences (mean, P10, P90, P(gain > 0)), ranked by the
    mean gain (largest first). With ``new_deals`` (:class:`funnelsim.sim.inflow.NewDeals`) the deals
    created during the horizon move through the changed funnel too, which is where a change
    early in the funnel pays within a quarter. ``progress``: called with (done, total) after
    each lever."""
    segments = [None, *model.data.segments] if by_segment else [None]      # None: every segment at once
    scenarios, labels = [], {}
    for stage in model.funnel.stages:
        for segment in segments:
            for lever, change in ((f"conversion +{points:g} pts", Change(stage, segment, conversion_points=points)),
                                  (f"time x{time_factor:g}", Change(stage, segment, time_factor=time_factor))):
                name = f"{stage}|{segment}|{lever}"
                scenarios.append(Scenario(name, (change,)))
                labels[name] = (stage, segment, lever)
    rows = []
    for name, (base, revenue) in paired_revenue(model, deals, scenarios, horizon_days=horizon_days, draws=draws,
                                                seed=seed, deal_value=deal_value, new_deals=new_deals,
                                                progress=progress).items():
        gain = revenue - base
        stage, segment, lever = labels[name]
        p10, p90 = np.quantile(gain, [0.1, 0.9])
        rows.append({"stage": stage, "segment": segment, "lever": lever, "gain_mean": float(gain.mean()),
                     "gain_p10": float(p10), "gain_p90": float(p90), "p_gain": float((gain > 0).mean()),
                     "baseline_mean": float(base.mean())})
    table = pd.DataFrame(rows).sort_values("gain_mean", ascending=False, ignore_index=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def plot_scenarios(result: WhatIf, *, ax=None):
    """Revenue bands (10-90% line, 25-75% box, median) of the baseline and each scenario of a
    :class:`WhatIf` side by side, with its target if it has one. Returns the matplotlib Axes."""
    import matplotlib.pyplot as plt

    from ..report.charts import currency_axis

    paired = result.draws
    if ax is None:
        _, ax = plt.subplots(figsize=(1.6 * (len(paired) + 1) + 2, 4.5))
    first = next(iter(paired.values()))[0] if paired else np.zeros(1)
    series = [("baseline", first)] + [(name, revenue) for name, (_, revenue) in paired.items()]
    for x, (_, values) in enumerate(series):
        q10, q25, q50, q75, q90 = np.quantile(values, [0.1, 0.25, 0.5, 0.75, 0.9])
        color = "C7" if x == 0 else "C0"
        ax.vlines(x, q10, q90, color=color, lw=2)
        ax.add_patch(plt.Rectangle((x - 0.2, q25), 0.4, q75 - q25, color=color, alpha=0.4))
        ax.hlines(q50, x - 0.25, x + 0.25, color=color, lw=2)
    if result.target is not None:
        ax.axhline(result.target, color="C3", ls="--", label="target")
        ax.legend(loc="upper left")
    ax.set_xticks(range(len(series)), [name for name, _ in series], rotation=20, ha="right")
    ax.set_ylabel(f"revenue in {result.horizon_days} days (currency of the log)")
    currency_axis(ax.yaxis)
    ax.set_title("Scenarios: 10-90% line, 25-75% box, median")
    return ax
