"""funnelsim: sales-funnel conversion, time in stage and revenue forecasts from a CRM event log.

The everyday names, in the order of the data flow::

    import funnelsim as fs

    funnel = fs.FunnelDefinition("Lead,Qualified,Proposal", won="Won", lost="Lost")
    snap = fs.Snapshot.read("crm.csv", funnel, as_of="2024-06-30", segment_by="region")
    fs.funnel_table(snap.spells)                     # what the CRM shows
    model = fs.FunnelModel.from_snapshot(snap)
    model.fit(random_seed=1)
    model.stage_table()                              # conversion and days in stage, with intervals
    result = fs.forecast(model, snap, horizon_days=90, seed=1)
    result.by_period()                               # revenue per month: P10, P50, P90
    whatif = fs.compare(model, snap, [fs.Scenario("Proposal +5 pts", (fs.Change("Proposal", conversion_points=5),))])
    fs.bottlenecks(model, snap)                      # where a change pays most
    fs.backtest("crm.csv", funnel, fs.origin_dates("1M", "2024-01-31", "2024-06-30"))
    fs.forecast_report(model, snap, target=500_000).write_html("report.html")   # the quarterly report
    events, truth = fs.synth.generate(5000, seed=1)  # a synthetic CRM with known truth

Revenue is in the currency of the log's amount column; durations in days. Names load on
first use, so ``import funnelsim`` is quick (the command line starts fast).
"""

from __future__ import annotations

import importlib

__all__ = [
    "FunnelDataError", "FunnelDefinition", "read_events", "Snapshot", "funnel_table",
    "FunnelModel", "compare_sojourn",
    "forecast", "Forecast", "Scenario", "Change", "NewDeal", "read_scenarios", "compare", "WhatIf", "bottlenecks",
    "backtest", "BacktestSettings", "origin_dates",
    "forecast_report", "Report",
    "synth",
]

# name -> module that defines it
_HOMES = {
    "FunnelDataError": "funnelsim.data.events", "FunnelDefinition": "funnelsim.data.events",
    "read_events": "funnelsim.data.events", "Snapshot": "funnelsim.data.snapshot",
    "funnel_table": "funnelsim.report.funnel",
    "FunnelModel": "funnelsim.model.funnel_model", "compare_sojourn": "funnelsim.model.funnel_model",
    "forecast": "funnelsim.sim.forecast", "Forecast": "funnelsim.sim.forecast",
    "Scenario": "funnelsim.sim.scenarios", "Change": "funnelsim.sim.scenarios", "NewDeal": "funnelsim.sim.scenarios",
    "read_scenarios": "funnelsim.sim.scenarios", "compare": "funnelsim.sim.scenarios",
    "WhatIf": "funnelsim.sim.scenarios", "bottlenecks": "funnelsim.sim.scenarios",
    "backtest": "funnelsim.sim.backtest", "BacktestSettings": "funnelsim.sim.backtest",
    "origin_dates": "funnelsim.sim.backtest",
    "forecast_report": "funnelsim.report.html", "Report": "funnelsim.report.html",
}


def __getattr__(name: str):
    if name == "synth":
        return importlib.import_module("funnelsim.data.synth")
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'funnelsim' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value          # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
