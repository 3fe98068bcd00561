"""Terminal rendering of model results with Rich: the stage table and the diagnostics block.

Every table is a :class:`funnelsim.report._tables.FitTable`: at any console width no number and
no name is cut; a table too wide for the console is split into parts that repeat its key
columns, or stacked."""

from __future__ import annotations

import pandas as pd
from rich.panel import Panel

from ._tables import FitTable

__all__ = ["stage_table_rich", "diagnostics_panel", "periods_rich", "deals_rich", "comparison_rich",
           "bottlenecks_rich", "backtest_rich", "track_record_rich", "overview_rich", "cohorts_rich"]

PERCENT = ("p_advance", "p_back", "p_lost", "p_stall", "p_win_from_entry")
DAYS = ("median_days", "expected_days_to_close")
HEADERS = {"p_advance": "advance %", "p_back": "back %", "p_lost": "lost %", "p_stall": "stall %",
           "p_win_from_entry": "win from entry %", "median_days": "model median days",
           "expected_days_to_close": "days to close"}
STAGE_TABLE_NOTE = ("advance + back + lost + stall = 100% of the deals entering the stage (advance: to a later stage "
                    "or won; back: to an earlier stage; stall: never leaves). model median days: the model's median "
                    "time in the stage of deals that leave it (the funnel table's median days is Kaplan-Meier on the "
                    "observed stays). days to close: expected days from entering the stage to won or lost, for deals "
                    "that close. win from entry: P(won, eventually) from entering the stage.")


def _segment(value) -> str:
    """A segment label for a table cell: the whole funnel's rows have none (None under
    pandas 2, NaN under pandas 3)."""
    return "(all)" if value is None or pd.isna(value) else str(value)


def _cell(row, name) -> str:
    mean, low, high = row[name], row[f"{name}_low"], row[f"{name}_high"]
    if pd.isna(mean):
        return "—"
    if name in PERCENT:
        return f"{100 * mean:.1f} [dim]{100 * low:.1f}–{100 * high:.1f}[/]"
    return f"{mean:.1f} [dim]{low:.1f}–{high:.1f}[/]"


def stage_table_rich(table: pd.DataFrame, title: str = "Stage table: posterior mean, then 90% interval") -> FitTable:
    """A Rich table of :meth:`funnelsim.model.funnel_model.FunnelModel.stage_table`."""
    segmented = table["segment"].notna().any()
    out = FitTable(title=title, caption=STAGE_TABLE_NOTE, caption_justify="left")
    out.add_column("stage", key=True)
    if segmented:
        out.add_column("segment", key=True)
    out.add_column("stays", justify="right")
    for name in (*PERCENT, *DAYS):
        out.add_column(HEADERS[name], justify="right")
    previous = None
    for row in table.to_dict(orient="records"):
        segment = _segment(row["segment"])
        if segmented and previous is not None and segment != previous:
            out.add_section()
        previous = segment
        cells = [str(row["stage"]), *([segment] if segmented else []), f"{row['stays']:,}"]
        out.add_row(*cells, *(_cell(row, name) for name in (*PERCENT, *DAYS)))
    return out


COHORT_NOTE = ("Each entry cohort (the period a stay began in) under its own parameters: the random walk over "
               "cohorts fitted with --drift. Recent cohorts, still mostly open, are wide: the walk, not the few "
               "stays that closed, sets them.")


def cohorts_rich(table: pd.DataFrame) -> list[FitTable]:
    """One Rich table per stage of :meth:`funnelsim.model.funnel_model.FunnelModel.cohort_table`'s
    whole-funnel rows: entered, P(advance), P(win from entry) and median days per cohort."""
    whole = table[table["segment"].isna()]
    tables = []
    for stage, rows in whole.groupby("stage", sort=False):
        out = FitTable(title=f"{stage} by entry cohort: posterior mean, then 90% interval",
                       caption=COHORT_NOTE if not tables else None, caption_justify="left")
        out.add_column("cohort", key=True)
        out.add_column("entered", justify="right")
        for name in ("p_advance", "p_win_from_entry", "median_days"):
            out.add_column(HEADERS[name], justify="right")
        for row in rows.to_dict(orient="records"):
            out.add_row(str(row["cohort"]), f"{row['entered']:,}",
                        *(_cell(row, name) for name in ("p_advance", "p_win_from_entry", "median_days")))
        tables.append(out)
    return tables


def diagnostics_panel(diagnostics: dict) -> Panel:
    """Green when the fit passed its checks, a loud red block when it did not."""
    d = diagnostics
    line = (f"R-hat max {d['r_hat_max']:.3f} · ESS bulk min {d['ess_bulk_min']:.0f} · "
            f"ESS tail min {d['ess_tail_min']:.0f} · divergences {d['divergences']} · sampler {d['sampler']}")
    if d["converged"]:
        return Panel(line, title="diagnostics: converged", border_style="green")
    worst = "".join(f"\n  {w['parameter']}: {w['meaning']} (R-hat {w['r_hat']:.2f}, ESS {w['ess_bulk']:.0f})"
                    for w in d.get("worst", []))
    body = (line + "\n[bold]NOT CONVERGED[/]: " + "; ".join(d["problems"])
            + (f"\nMixing worst:{worst}" if worst else "")
            + f"\nDo not forecast from this fit: {d.get('advice') or 'sample longer'} "
            "(funnelsim fit --tune, --draws, --target-accept), or simplify the segments.")
    return Panel(body, title="diagnostics: FAILED", border_style="bold red")


def periods_rich(forecast) -> FitTable:
    """Revenue per period and cumulative, P10 / P50 / P90 and mean, with the horizon total."""
    r = forecast.pipeline_revenue()
    out = FitTable(title=f"Revenue from the open pipeline, as of {forecast.as_of} (log currency)",
                caption=f"next {forecast.horizon_days} days: mean {r['mean']:,.0f}, "
                        f"80% band {r['p10']:,.0f} – {r['p90']:,.0f}, median {r['p50']:,.0f}")
    for name in ("period", "from", "to", "pipeline wins, mean", "revenue mean", "P10", "P50", "P90",
                 "cumulative P50"):
        out.add_column(name, justify="left" if name in ("period", "from", "to") else "right", key=name == "period")
    new = forecast.has_new_deals
    if new:
        t = forecast.total_revenue()
        out.add_column("new-deal revenue, mean", justify="right")
        out.add_column("total revenue P50", justify="right")
        out.caption += (f"; with new deals: mean {t['mean']:,.0f}, 80% band {t['p10']:,.0f} – {t['p90']:,.0f}")
    for row in forecast.by_period().to_dict(orient="records"):
        extra = (f"{row['new_revenue_mean']:,.0f}", f"{row['total_revenue_p50']:,.0f}") if new else ()
        out.add_row(row["period"], f"{pd.Timestamp(row['start']).date()}", f"{pd.Timestamp(row['end']).date()}",
                    f"{row['wins_mean']:,.1f}", *(f"{row[k]:,.0f}" for k in ("revenue_mean", "revenue_p10",
                    "revenue_p50", "revenue_p90", "cumulative_revenue_p50")), *extra)
    return out


def deals_rich(deals: pd.DataFrame, title: str = "Deals with the largest expected revenue in the horizon") -> FitTable:
    """Per-deal odds: stage, age, amount, P(win in horizon), P(win ever), expected revenue."""
    out = FitTable(title=title)
    for name in ("deal", "stage", "segment", "age (days)", "amount", "P(win, horizon)", "P(win, ever)",
                 "expected revenue", "median close"):
        out.add_column(name, justify="left" if name in ("deal", "stage", "segment", "median close") else "right",
                       key=name == "deal")
    for r in deals.to_dict(orient="records"):
        close = "—" if pd.isna(r["median_close_date"]) else str(pd.Timestamp(r["median_close_date"]).date())
        amount = "—" if pd.isna(r["amount"]) else f"{r['amount']:,.0f}"
        out.add_row(str(r["deal_id"]), str(r["stage"]), _segment(r["segment"]), f"{r['age_days']:.0f}", amount,
                    f"{r['p_win_horizon']:.0%}", f"{r['p_win_ever']:.0%}", f"{r['expected_revenue']:,.0f}", close)
    return out


def comparison_rich(table, horizon_days: int) -> FitTable:
    """What-if scenarios (a :class:`funnelsim.sim.scenarios.WhatIf` or its table): revenue
    band, the baseline it is compared with (its own segment's for a one-segment scenario),
    paired difference, P(better); "—" where a number does not apply (a baseline row's
    difference, a one-segment scenario's chance of the whole funnel's target)."""
    table = getattr(table, "table", table)
    targeted = "p_hit" in table.columns
    out = FitTable(title=f"What-if scenarios: revenue in the next {horizon_days} days (currency of the log)",
                   caption="difference = scenario minus its baseline in each draw (same random numbers); a scenario "
                           "of one segment is compared with that segment's own baseline, and P(hit target) is "
                           "given only for the whole funnel")
    for name in ("scenario", "segment", "revenue mean", "revenue P10 – P90", "baseline mean", "difference (mean)",
                 "difference P10 – P90", "P(better)", *(["P(hit target)", "baseline P(hit)"] if targeted else [])):
        out.add_column(name, justify="left" if name in ("scenario", "segment") else "right", key=name == "scenario")
    dash = "—"
    for r in table.to_dict(orient="records"):
        segment = r.get("segment")
        own = r.get("is_baseline", False)
        hit = [dash, dash] if not targeted or pd.isna(r["p_hit"]) else [f"{r['p_hit']:.0%}", f"{r['baseline_p_hit']:.0%}"]
        out.add_row(str(r["scenario"]), "(all)" if segment is None or pd.isna(segment) else str(segment),
                    f"{r['revenue_mean']:,.0f}", f"{r['revenue_p10']:,.0f} – {r['revenue_p90']:,.0f}",
                    f"{r['baseline_mean']:,.0f}",
                    dash if own else f"{r['delta_mean']:+,.0f}",
                    dash if own else f"{r['delta_p10']:+,.0f} – {r['delta_p90']:+,.0f}",
                    dash if own else f"{r['p_better']:.0%}", *(hit if targeted else []))
    return out


def bottlenecks_rich(table: pd.DataFrame, horizon_days: int) -> FitTable:
    """The bottleneck ranking: revenue gained per lever, stage and segment."""
    segmented = table["segment"].notna().any()
    out = FitTable(title=f"Where to focus: revenue gained in the next {horizon_days} days",
                caption="paired with the baseline (same random numbers); 80% interval")
    for name in ("rank", "stage", *(["segment"] if segmented else []), "lever", "gain (mean)", "gain P10 – P90",
                 "P(gain)"):
        out.add_column(name, justify="left" if name in ("stage", "segment", "lever") else "right",
                       key=name in ("rank", "stage", "segment"))
    for r in table.to_dict(orient="records"):
        out.add_row(str(r["rank"]), str(r["stage"]), *([_segment(r["segment"])] if segmented else []), str(r["lever"]),
                    f"{r['gain_mean']:+,.0f}", f"{r['gain_p10']:+,.0f} – {r['gain_p90']:+,.0f}", f"{r['p_gain']:.0%}")
    return out


def backtest_rich(backtest) -> FitTable:
    """One row per origin: actual against the band, scores and the baselines; the summary
    in the caption."""
    t, s = backtest.table, backtest.summary
    out = FitTable(title=f"Backtest: revenue in the {backtest.settings.horizon_days} days after each origin",
                caption=(f"80% band held {s['coverage80']:.0%} of actuals (50%: {s['coverage50']:.0%}, 90%: "
                         f"{s['coverage90']:.0%}); mean error of the median {s['mean_ape_median']:.1%} vs weighted "
                         f"pipeline {s['mean_ape_weighted']:.1%}, coverage {s['mean_ape_coverage']:.1%}, last period "
                         f"{s['mean_ape_last_period']:.1%}; CRPS skill vs weighted {s['crps_skill_weighted']:.2f}; "
                         f"PIT uniformity (KS) p = {s['pit_ks_p']:.2f}; converged fits {s['converged_fits']}/{s['origins']}"))
    for name in ("origin", "open deals", "actual", "P10", "P50", "P90", "in 80%", "CRPS / actual", "PIT",
                 "fit checks", "weighted", "coverage", "last period"):
        out.add_column(name, justify="left" if name == "origin" else "right", key=name == "origin")
    total = "total_actual" in t
    bands = [name for name in ("run_rate", "ets") if f"total_{name}_p50" in t]
    if total:
        for name in ("total actual", "total P10", "total P90", "run rate",
                     *({"run_rate": "run rate P10 – P90", "ets": "ETS P10 – P90"}[b] for b in bands)):
            out.add_column(name, justify="right")
        out.caption += (f". With new deals: 80% band held {s['total_coverage80']:.0%} of total actuals; mean error "
                        f"of the median {s['total_mean_ape_median']:.1%} vs run rate {s['total_mean_ape_run_rate']:.1%}")
        for b in bands:
            label = {"run_rate": "run rate", "ets": "ETS"}[b]
            out.caption += (f"; {label}: band held {s[f'total_{b}_coverage80']:.0%}, CRPS skill against it "
                            f"{s[f'total_crps_skill_{b}']:.2f}")

    def band(r, b):
        low, high = r[f"total_{b}_p10"], r[f"total_{b}_p90"]
        return "—" if pd.isna(low) else f"{low:,.0f} – {high:,.0f}"

    for r in t.to_dict(orient="records"):
        extra = (*(f"{r[k]:,.0f}" for k in ("total_actual", "total_p10", "total_p90", "run_rate")),
                 *(band(r, b) for b in bands)) if total else ()
        out.add_row(r["origin"], f"{r['open_deals']:,}", *(f"{r[k]:,.0f}" for k in ("actual", "p10", "p50", "p90")),
                    "yes" if r["covered80"] else "[red]no[/]", f"{r['crps_rel']:.3f}", f"{r['pit']:.2f}",
                    "passed" if r["converged"] else "[red]failed[/]",
                    *(f"{r[k]:,.0f}" for k in ("weighted", "coverage", "last_period")), *extra)
    return out


def backtest_age_rich(backtest) -> FitTable:
    """The open deals' wins by their age in stage at the origins, pooled over the origins:
    forecast against actual (:attr:`funnelsim.sim.backtest.Backtest.age_calibration`)."""
    from ..sim.backtest import LATE_CLOSE_Z

    out = FitTable(title="Wins by the open deals' age in stage at the origins (all origins)",
                   caption=f"z: (wins - forecast) / the deals' own spread; beyond ±{LATE_CLOSE_Z:g} the model's time in "
                           "stage misses deals of that age")
    for name in ("age in stage", "open deals", "forecast wins", "wins", "wins / forecast", "z", "forecast revenue",
                 "revenue"):
        out.add_column(name, justify="left" if name == "age in stage" else "right", key=name == "age in stage")
    for r in backtest.age_calibration.to_dict(orient="records"):
        z = "—" if pd.isna(r["z"]) else f"{r['z']:+.1f}"
        out.add_row(r["age"], f"{r['deals']:,}", f"{r['forecast_wins']:,.1f}", f"{r['wins']:,}",
                    "—" if pd.isna(r["wins_ratio"]) else f"{r['wins_ratio']:.2f}",
                    f"[red]{z}[/]" if not pd.isna(r["z"]) and abs(r["z"]) > LATE_CLOSE_Z else z,
                    f"{r['forecast_revenue']:,.0f}", f"{r['revenue']:,.0f}")
    return out


def track_record_rich(record) -> FitTable:
    """The forecast's track record (:class:`funnelsim.sim.track_record.TrackRecord`): one row
    per past origin, its band against what happened."""
    out = FitTable(title=f"Track record: the same forecast at past origins ({record.scored} revenue in the "
                         f"{record.horizon_days} days after each)",
                   caption=f"80% band held at {record.held} of {record.checked}")
    for name in ("origin", "actual", "P10", "P50", "P90", "in 80%", "PIT", "converged"):
        out.add_column(name, justify="left" if name == "origin" else "right", key=name == "origin")
    for r in record.origins.to_dict(orient="records"):
        out.add_row(r["origin"], *(f"{r[k]:,.0f}" for k in ("actual", "p10", "p50", "p90")),
                    "yes" if r["covered"] else "[red]no[/]", f"{r['pit']:.2f}", "yes" if r["converged"] else "[red]no[/]")
    return out


def overview_rich(found) -> list[FitTable]:
    """The tables of ``funnelsim inspect`` (:class:`funnelsim.data.overview.LogOverview`): the
    columns with examples, then the stage labels with their counts and guessed roles. Every
    value from the log is escaped (a label "[red]" prints as written)."""
    from rich.markup import escape

    columns = FitTable(title=f"Columns of {escape(found.source)}")
    for name in ("column", "rows filled", "distinct", "most frequent values"):
        columns.add_column(name, justify="right" if name in ("rows filled", "distinct") else "left",
                           key=name == "column")
    for r in found.columns.to_dict(orient="records"):
        shown = ", ".join(escape(str(v)) for v in r["examples"])
        columns.add_row(escape(r["column"]), f"{r['filled']:,}", f"{r['distinct']:,}", shown)
    stages = FitTable(title="Stage labels, in the order deals first enter them",
                      caption="order: mean position of the label in its deals' order of first entry (1 = first); "
                              "ends: share of its deals whose last label it is; read as: guessed from the name")
    for name in ("label", "rows", "deals", "order", "ends %", "read as"):
        stages.add_column(name, justify="left" if name in ("label", "read as") else "right", key=name == "label")
    for r in found.stages.to_dict(orient="records"):
        stages.add_row(escape(r["label"]) or "(blank)", f"{r['rows']:,}", f"{r['deals']:,}", f"{r['position']:.2f}",
                       f"{100 * r['ends_deals']:.0f}", {"open": "open stage"}.get(r["kind"], r["kind"]))
    return [columns, stages]
