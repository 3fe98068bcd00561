"""What-if scenarios and the bottleneck ranking, as paired comparisons.

A scenario edits the posterior draws and the open pipeline, then reruns the simulator with
the same seed: every deal keeps its random stream (keyed by its id), so the difference from
the baseline in each draw is the effect of the change, not Monte Carlo noise.

Edits, per stage and optionally one segment (``pi`` rows are the destinations out of the
stage: later stages and won are **forward**; earlier stages, lost and stall are not):

- ``conversion_points = p``: P(advance) = sum of the forward destinations becomes
  P(advance) + p/100 (kept in [0.0001, 0.9999]); ``conversion_odds = r``: its odds are
  multiplied by r (a shift of log r on the logit scale). Forward destinations are scaled
  together (their shares among themselves stay), and so are the others.
- ``stall_points = p``: P(stall) + p/100, the other destinations scaled together.
- ``time_factor = f``: the time deals still spend in the stage, from the as-of date on, is
  multiplied by f (the fitted survival, and so which old deals look stalled, is unchanged).
- ``amount_factor = f``: amounts of the deals (and of the won amounts they may borrow) in
  the segment, or all, multiplied by f; no stage.
- ``new_deals_factor = f``: deals created during the horizon (the segment's, or all) are f
  times as many; no stage. Only with new deals in the comparison (``new_deals=``). Counts
  are scaled as floor(count x f + u) with one uniform u per draw and cell shared by every
  scenario, so a scenario with more new deals keeps all the baseline's (same random
  streams) and adds some: the mean is exactly f times the baseline's. Deals created already
  won (see :mod:`funnelsim.sim.inflow`) are scaled in revenue: f times the baseline's, draw by draw.

A scenario may also remove deals (by id) and add deals (id, stage, amount, segment, age in
days). ``segment = "X"`` on the scenario itself restricts the comparison to that segment's
deals (scenario and its baseline alike). A scenario with no change is the baseline.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import json_safe
from .._random import rng as random_stream
from ..data.events import FunnelDataError

__all__ = ["Change", "NewDeal", "Scenario", "read_scenarios", "compare", "comparison_json", "bottlenecks",
           "plot_scenarios", "paired_revenue", "apply_changes", "check_names"]

LIMIT = 1e-4        # probabilities edited by points stay within [LIMIT, 1 - LIMIT]
BAND = (0.1, 0.5, 0.9)
_LEVERS = ("conversion_points", "conversion_odds", "stall_points", "time_factor", "amount_factor", "new_deals_factor")


@dataclass(frozen=True)
class Change:
    """One edit: a lever (see module doc) for a ``stage`` (all stages if None, except for
    ``amount_factor``, which has no stage) and a ``segment`` (all if None)."""

    stage: str | None = None
    segment: str | None = None
    conversion_points: float | None = None
    conversion_odds: float | None = None
    stall_points: float | None = None
    time_factor: float | None = None
    amount_factor: float | None = None
    new_deals_factor: float | None = None


@dataclass(frozen=True)
class NewDeal:
    """A deal to add: it sits in ``stage`` for ``age_days`` already, worth ``amount``."""

    deal_id: str
    stage: str
    amount: float
    segment: str | None = None
    age_days: float = 0.0


@dataclass(frozen=True)
class Scenario:
    name: str
    changes: tuple[Change, ...] = ()
    remove: tuple[str, ...] = ()
    add: tuple[NewDeal, ...] = ()
    segment: str | None = None

    @property
    def is_baseline(self) -> bool:
        return not (self.changes or self.remove or self.add)


# --------------------------------------------------------------------------- reading

def read_scenarios(path) -> list[Scenario]:
    """Scenarios from a TOML file (``[[scenario]]`` tables, see the README); errors name the
    file, the scenario and the key."""
    path = Path(path)
    if not path.exists():
        raise FunnelDataError("no such file", source=str(path), hint="Check the path of --scenarios.")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise FunnelDataError(f"not valid TOML ({exc})", source=str(path),
                              hint="See the README for the [[scenario]] format.") from None
    tables = data.get("scenario")
    if not isinstance(tables, list) or not tables:
        raise FunnelDataError("no [[scenario]] table", source=str(path),
                              hint='Start each scenario with [[scenario]] and name = "...".')
    scenarios = [_scenario(table, i, str(path)) for i, table in enumerate(tables, start=1)]
    names = [s.name for s in scenarios]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise FunnelDataError(f"scenario name {duplicated[0]!r} is used twice", source=str(path),
                              column="name", value=duplicated[0], hint="Give each scenario its own name.")
    return scenarios


def _scenario(table: dict, number: int, source: str) -> Scenario:
    where = f"scenario {number}"
    if not isinstance(table.get("name"), str) or not table["name"].strip():
        raise FunnelDataError(f"{where} has no name", source=source, column="name",
                              hint='Add name = "..." to the scenario.')
    where = f"scenario {table['name']!r}"
    known = {"name", "change", "remove", "add", "segment"}
    _no_unknown_keys(table, known, where, source)
    changes = []
    for entry in table.get("change", []):
        _no_unknown_keys(entry, {"stage", "segment", *_LEVERS}, f"{where}, [[scenario.change]]", source)
        levers = [k for k in _LEVERS if k in entry]
        if len(levers) != 1:
            raise FunnelDataError(f"{where}: each [[scenario.change]] needs exactly one of {', '.join(_LEVERS)} "
                                  f"(found {', '.join(levers) or 'none'})", source=source,
                                  hint="Split several edits into several [[scenario.change]] tables.")
        value = entry[levers[0]]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not np.isfinite(value):
            raise FunnelDataError(f"{where}: {levers[0]} must be a number", source=source, column=levers[0],
                                  value=str(value), hint="For example conversion_points = 5.")
        if levers[0] in ("conversion_odds", "time_factor", "amount_factor") and value <= 0:
            raise FunnelDataError(f"{where}: {levers[0]} must be positive", source=source, column=levers[0],
                                  value=str(value), hint="A factor of 1 changes nothing; 0.8 is 20% less.")
        if levers[0] == "new_deals_factor" and value < 0:
            raise FunnelDataError(f"{where}: new_deals_factor must not be negative", source=source,
                                  column=levers[0], value=str(value), hint="0 means no new deals; 1.2 is 20% more.")
        changes.append(Change(stage=entry.get("stage"), segment=entry.get("segment"), **{levers[0]: float(value)}))
    added = []
    for entry in table.get("add", []):
        _no_unknown_keys(entry, {"deal_id", "stage", "amount", "segment", "age_days"}, f"{where}, [[scenario.add]]",
                         source)
        missing = [k for k in ("deal_id", "stage", "amount") if k not in entry]
        if missing:
            raise FunnelDataError(f"{where}: an added deal lacks {', '.join(missing)}", source=source,
                                  column=missing[0], hint='Write deal_id = "NEW-1", stage = "Proposal", amount = 50000.')
        added.append(NewDeal(str(entry["deal_id"]), entry["stage"], float(entry["amount"]), entry.get("segment"),
                             float(entry.get("age_days", 0.0))))
    remove = table.get("remove", [])
    if not isinstance(remove, list):
        raise FunnelDataError(f"{where}: remove must be a list of deal ids", source=source, column="remove",
                              hint='Write remove = ["D001", "D002"].')
    return Scenario(table["name"], tuple(changes), tuple(str(r) for r in remove), tuple(added), table.get("segment"))


def _no_unknown_keys(table: dict, known: set, where: str, source: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise FunnelDataError(f"{where}: unknown key {unknown[0]!r}", source=source, column=unknown[0],
                              hint=f"Known keys: {', '.join(sorted(known))}.")


# --------------------------------------------------------------------------- applying

def check_names(scenarios, stages, segments=None, deals: pd.DataFrame | None = None, source: str | None = None) -> None:
    """Refuse unknown stages (and, when given, segments and deal ids) with the valid names."""
    for scenario in scenarios:
        _check_names(scenario, list(stages), segments, deals, source)


def _check_names(scenario: Scenario, stages, segments, deals: pd.DataFrame | None, source: str | None = None) -> None:
    def known(kind, value, valid):
        if valid is not None and value is not None and value not in valid:
            raise FunnelDataError(f"scenario {scenario.name!r}: unknown {kind} {value!r}", source=source, column=kind, value=str(value),
                                  hint=f"Valid {kind}s: {', '.join(valid)}.")

    known("segment", scenario.segment, segments)
    for change in scenario.changes:
        known("stage", change.stage, stages)
        known("segment", change.segment, segments)
        for lever in ("amount_factor", "new_deals_factor"):
            if getattr(change, lever) is not None and change.stage is not None:
                raise FunnelDataError(f"scenario {scenario.name!r}: {lever} applies to deals, not to a stage",
                                      source=source, column="stage", value=change.stage,
                                      hint="Drop stage = ... (keep segment if you like).")
    for deal in scenario.add:
        known("stage", deal.stage, stages)
        known("segment", deal.segment, segments)
    if deals is None:
        return
    missing = sorted(set(scenario.remove) - set(deals["deal_id"]))
    if missing:
        raise FunnelDataError(f"scenario {scenario.name!r}: deal {missing[0]!r} is not open at the as-of date",
                              source=source, column="remove", value=missing[0], hint="Remove only deals listed in the forecast's deals.")


def apply_changes(params, changes, stages, segments):
    """A copy of ``params`` (simulate.Parameters) with the stage and segment edits applied."""
    pi, won_amounts = params.pi.copy(), params.won_amounts.copy()
    time_scale = np.ones(pi.shape[1:3]) if params.time_scale is None else params.time_scale.copy()
    S = len(stages)
    forward = np.zeros((S, S + 3), bool)
    for s in range(S):
        forward[s, s + 1:S + 1] = True                  # later stages and won
    for change in changes:
        s_index = [stages.index(change.stage)] if change.stage else list(range(S))
        g_index = [segments.index(change.segment)] if change.segment else list(range(len(segments)))
        for s in s_index:
            rows = pi[:, s][:, g_index]                 # (D, g, S+3), a copy
            if change.conversion_points is not None or change.conversion_odds is not None:
                rows = _rescale(rows, forward[s], change.conversion_points, change.conversion_odds)
            if change.stall_points is not None:
                rows = _rescale(rows, np.arange(S + 3) == S + 2, change.stall_points, None)
            pi[:, s, g_index] = rows
            if change.time_factor is not None:
                time_scale[s, g_index] *= change.time_factor
        if change.amount_factor is not None:
            won_amounts[g_index] *= change.amount_factor
    return replace(params, pi=pi, time_scale=time_scale, won_amounts=won_amounts)


def _rescale(rows, chosen, points, odds):
    """Move the total of the ``chosen`` destinations to its new value and scale the chosen
    and the other destinations, each group keeping its internal shares."""
    old = rows[..., chosen].sum(axis=-1, keepdims=True)
    if points is not None:
        new = np.clip(old + points / 100.0, LIMIT, 1 - LIMIT)
    else:
        logit = np.log(np.clip(old, LIMIT, 1 - LIMIT)) - np.log1p(-np.clip(old, LIMIT, 1 - LIMIT))
        new = 1.0 / (1.0 + np.exp(-(logit + np.log(odds))))
    rest = 1.0 - old
    with np.errstate(invalid="ignore", divide="ignore"):
        up = np.where(old > 0, new / old, 0.0)
        down = np.where(rest > 0, (1.0 - new) / rest, 0.0)
    scaled = np.where(chosen, rows * up, rows * down)
    # a group with nothing in it (e.g. no forward move ever seen) cannot be scaled: keep the row
    empty = (old <= 0) | (rest <= 0)
    return np.where(empty, rows, scaled)


def _scenario_deals(scenario: Scenario, deals: pd.DataFrame, segments) -> pd.DataFrame:
    frame = deals[~deals["deal_id"].isin(scenario.remove)]
    if scenario.add:
        default_segment = segments[0] if len(segments) == 1 else None
        added = pd.DataFrame([{"deal_id": d.deal_id, "segment": d.segment or default_segment, "stage": d.stage,
                               "age_days": d.age_days, "amount": d.amount} for d in scenario.add])
        if added["segment"].isna().any():
            raise FunnelDataError(f"scenario {scenario.name!r}: an added deal needs a segment (the model has several)",
                                  column="segment", hint=f"Valid segments: {', '.join(segments)}.")
        frame = pd.concat([frame, added], ignore_index=True)
    for change in scenario.changes:
        if change.amount_factor is not None:
            mask = frame["segment"].eq(change.segment) if change.segment else np.ones(len(frame), bool)
            frame = frame.assign(amount=np.where(mask, frame["amount"] * change.amount_factor, frame["amount"]))
    if scenario.segment:
        frame = frame[frame["segment"].eq(scenario.segment)]
    frame = frame.reset_index(drop=True)
    frame.attrs = deals.attrs
    return frame


# --------------------------------------------------------------------------- comparing

def _revenue(model, deals, params, horizon_days, seed, deal_value, inflow=None):
    """Revenue per draw within the horizon (currency): the open ``deals``, plus with
    ``inflow`` = (counts, cells) the new deals of :mod:`funnelsim.sim.inflow`."""
    from .forecast import _pipeline_arrays
    from .inflow import new_deal_pipeline
    from .kernel import simulate

    if deal_value is not None:
        deals = deals.assign(amount=deals["amount"].fillna(float(deal_value)))
    every_day = np.zeros(int(horizon_days), int)
    sim = simulate(params, _pipeline_arrays(model, deals), int(horizon_days), period_of_day=every_day, seed=seed)
    revenue = sim.revenue[:, 0]
    if inflow is not None:
        counts, cells = inflow
        fresh = simulate(params, new_deal_pipeline(counts, cells, deal_value), int(horizon_days),
                         period_of_day=every_day, seed=seed, counts=counts)
        revenue = revenue + fresh.revenue[:, 0]
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


def paired_revenue(model, deals: pd.DataFrame, scenarios, *, horizon_days: int = 90, draws: int | None = None,
                   seed: int = 0, deal_value: float | None = None,
                   new_deals=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per scenario name: (baseline, scenario) revenue per draw, simulated with the same
    seed and random streams. With ``new_deals`` (:class:`funnelsim.sim.inflow.NewDeals`), both
    include the deals created during the horizon."""
    from .inflow import new_deal_draws

    stages, segments = list(model.funnel.stages), list(model.data.segments)
    params = model.simulation_parameters(draws=draws, seed=seed)
    inflow = uniforms = None
    created_names = segments                                    # segments of the created-won revenue
    created_won = np.zeros((len(segments), params.draws))        # revenue of deals created already won
    has_inflow = new_deals is not None and not new_deals.empty
    if has_inflow and not new_deals.stats.empty:
        inflow = new_deal_draws(new_deals.stats, segments, len(stages), int(horizon_days), params.draws, seed)
        uniforms = random_stream(seed, "scenario_inflow").random(inflow[0].shape)
    if has_inflow:
        created_names = new_deals.created_won_segments(segments)
        created_won = new_deals.created_won_revenue(segments, int(horizon_days), params.draws,
                                                    np.zeros(int(horizon_days), int), params.won_amounts,
                                                    deal_value, seed)[0, :, :, 0]
    baselines: dict = {}
    result = {}
    for scenario in scenarios:
        _check_names(scenario, stages, segments, deals)
        if not has_inflow and any(c.new_deals_factor is not None for c in scenario.changes):
            raise FunnelDataError(f"scenario {scenario.name!r}: new_deals_factor needs new deals in the comparison",
                                  column="new_deals_factor",
                                  hint="Keep --new-deals on (the default), with at least two weeks of history.")
        if scenario.segment not in baselines:
            base = Scenario("baseline", segment=scenario.segment)
            baselines[scenario.segment] = _revenue(model, _scenario_deals(base, deals, segments), params, horizon_days,
                                                   seed, deal_value, _scenario_inflow(base, inflow, uniforms, segments)) \
                + _segment_factors(base, created_names, _CREATED_WON_LEVERS) @ created_won
        edited = apply_changes(params, scenario.changes, stages, segments)
        revenue = _revenue(model, _scenario_deals(scenario, deals, segments), edited, horizon_days, seed, deal_value,
                           _scenario_inflow(scenario, inflow, uniforms, segments)) \
            + _segment_factors(scenario, created_names, _CREATED_WON_LEVERS) @ created_won
        base = baselines[scenario.segment]
        # removing or adding deals changes the order of the sums: differences of rounding
        # size (1e-9 of the revenue) are no difference
        same = np.abs(revenue - base) <= 1e-9 * np.maximum(np.abs(base), 1.0)
        result[scenario.name] = (base, np.where(same, base, revenue))
    return result


def compare(model, deals: pd.DataFrame, scenarios, *, horizon_days: int = 90, draws: int | None = None,
            seed: int = 0, target: float | None = None, deal_value: float | None = None,
            new_deals=None) -> pd.DataFrame:
    """One row per scenario: revenue within the horizon (mean, P10, P50, P90), the paired
    difference from the baseline (``delta_*``, per draw, then summarised), P(scenario beats
    the baseline) (ties, e.g. a null scenario, count as not better), and with ``target`` the
    chance of reaching it (``p_hit``) beside the baseline's (``baseline_p_hit``). With
    ``new_deals``, revenue includes deals created during the horizon."""
    rows = []
    for name, (base, revenue) in paired_revenue(model, deals, scenarios, horizon_days=horizon_days, draws=draws,
                                                seed=seed, deal_value=deal_value, new_deals=new_deals).items():
        row = {"scenario": name, **{f"revenue_{k}": v for k, v in _band(revenue).items()},
               **{f"delta_{k}": v for k, v in _band(revenue - base).items()},
               **{f"baseline_{k}": v for k, v in _band(base).items()},
               "p_better": float((revenue > base).mean())}
        if target is not None:
            row |= {"p_hit": float((revenue >= target).mean()), "baseline_p_hit": float((base >= target).mean())}
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_json(table: pd.DataFrame, target: float | None = None) -> dict:
    """The DESIGN.md ``whatif`` JSON: ``{"baseline": {...}, "scenarios": [...]}``."""
    first = table.iloc[0] if len(table) else None
    baseline = {} if first is None else {k: first[f"baseline_{k}"] for k in ("mean", "p10", "p50", "p90")}
    if target is not None and first is not None:
        baseline["p_hit"] = first["baseline_p_hit"]
    scenarios = []
    for r in table.to_dict(orient="records"):
        entry = {"name": r["scenario"], "revenue": {k: r[f"revenue_{k}"] for k in ("mean", "p10", "p50", "p90")},
                 "delta": {k: r[f"delta_{k}"] for k in ("mean", "p10", "p50", "p90")}, "p_better": r["p_better"]}
        if target is not None:
            entry |= {"p_hit": r["p_hit"], "p_hit_change": r["p_hit"] - r["baseline_p_hit"]}
        scenarios.append(entry)
    return json_safe({"baseline": baseline, "scenarios": scenarios, **({"target": target} if target else {})})


def bottlenecks(model, deals: pd.DataFrame, *, horizon_days: int = 90, points: float = 5.0, time_factor: float = 0.8,
                by_segment: bool = False, draws: int | None = None, seed: int = 0,
                deal_value: float | None = None, new_deals=None) -> pd.DataFrame:
    """Where to focus: for every stage (and, with ``by_segment``, for each segment beside all
    segments at once, ``segment`` None), the revenue gained
    within the horizon from ``points`` more points of conversion and from time in the stage
    times ``time_factor``, as paired differences (mean, P10, P90, P(gain > 0)), ranked by the
    mean gain (largest first). With ``new_deals`` (:class:`funnelsim.sim.inflow.NewDeals`) the deals
    created during the horizon move through the changed funnel too, which is where a change
    early in the funnel pays within a quarter."""
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
                                                seed=seed, deal_value=deal_value, new_deals=new_deals).items():
        gain = revenue - base
        stage, segment, lever = labels[name]
        p10, p90 = np.quantile(gain, [0.1, 0.9])
        rows.append({"stage": stage, "segment": segment, "lever": lever, "gain_mean": float(gain.mean()),
                     "gain_p10": float(p10), "gain_p90": float(p90), "p_gain": float((gain > 0).mean()),
                     "baseline_mean": float(base.mean())})
    table = pd.DataFrame(rows).sort_values("gain_mean", ascending=False, ignore_index=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def plot_scenarios(model, deals: pd.DataFrame, scenarios, *, horizon_days: int = 90, seed: int = 0,
                   target: float | None = None, ax=None):
    """Revenue bands (10-90% bar, 25-75% box, median) of the baseline and each scenario side
    by side. Returns the matplotlib Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(1.6 * (len(scenarios) + 1) + 2, 4.5))
    paired = paired_revenue(model, deals, scenarios, horizon_days=horizon_days, seed=seed)
    first = next(iter(paired.values()))[0] if paired else np.zeros(1)
    series = [("baseline", first)] + [(name, revenue) for name, (_, revenue) in paired.items()]
    for x, (_, values) in enumerate(series):
        q10, q25, q50, q75, q90 = np.quantile(values, [0.1, 0.25, 0.5, 0.75, 0.9])
        color = "C7" if x == 0 else "C0"
        ax.vlines(x, q10, q90, color=color, lw=2)
        ax.add_patch(plt.Rectangle((x - 0.2, q25), 0.4, q75 - q25, color=color, alpha=0.4))
        ax.hlines(q50, x - 0.25, x + 0.25, color=color, lw=2)
    if target is not None:
        ax.axhline(target, color="C3", ls="--", label="target")
        ax.legend(loc="upper left")
    ax.set_xticks(range(len(series)), [name for name, _ in series], rotation=20, ha="right")
    ax.set_ylabel(f"revenue in {horizon_days} days (currency of the log)")
    ax.set_title("Scenarios: 10-90% line, 25-75% box, median")
    return ax
