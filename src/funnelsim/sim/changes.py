"""What-if scenarios: what a scenario is, how it is read from TOML and how it edits the
posterior draws and the open pipeline. :mod:`funnelsim.sim.scenarios` runs them.

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

from ..data.events import FunnelDataError

__all__ = ["Change", "NewDeal", "Scenario", "read_scenarios", "apply_changes", "check_names", "check_segmented",
           "scenario_deals"]

LIMIT = 1e-4        # probabilities edited by points stay within [LIMIT, 1 - LIMIT]
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


def named_segments(scenario: Scenario) -> list[str]:
    """The segments ``scenario`` names: its own, its changes' and its added deals'."""
    named = [scenario.segment, *(c.segment for c in scenario.changes), *(d.segment for d in scenario.add)]
    return [g for g in named if g is not None]


def check_segmented(scenarios, segment_by: str | None, source: str | None = None) -> None:
    """A scenario that names a segment needs the log split by segment (``--segment-by``):
    refuse it before anything is read or fitted, saying what to pass."""
    if segment_by is not None:
        return
    for scenario in scenarios:
        named = named_segments(scenario)
        if named:
            raise FunnelDataError(f"scenario {scenario.name!r} names segment {named[0]!r}, but the log is not split "
                                  "by segment", source=source, column="segment", value=named[0],
                                  hint=f"Pass --segment-by COLUMN, the event log's column that holds {named[0]!r} "
                                       "(for example --segment-by region), or drop segment = ... from the scenario.")


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
        if deal.segment is None and segments is not None and len(segments) > 1:
            raise FunnelDataError(f"scenario {scenario.name!r}: added deal {deal.deal_id!r} needs a segment (the log "
                                  "has several)", source=source, column="segment",
                                  hint=f"Add segment = ... to the deal; valid segments: {', '.join(segments)}.")
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
        if params.segment_of is not None:        # a drifting model: every parameter set of those segments
            g_index = list(np.flatnonzero(np.isin(params.segment_of, g_index)))
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


def scenario_deals(scenario: Scenario, deals: pd.DataFrame, segments) -> pd.DataFrame:
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
    return frame
