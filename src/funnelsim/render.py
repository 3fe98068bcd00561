"""Terminal rendering of model results with Rich: the stage table and the diagnostics block."""

from __future__ import annotations

import pandas as pd
from rich.panel import Panel
from rich.table import Table

__all__ = ["stage_table_rich", "diagnostics_panel"]

PERCENT = ("p_advance", "p_lost", "p_stall", "p_win_from_entry")
DAYS = ("median_days", "expected_days_to_close")
HEADERS = {"p_advance": "advance %", "p_lost": "lost %", "p_stall": "stall %",
           "p_win_from_entry": "win from entry %", "median_days": "median days",
           "expected_days_to_close": "days to close"}


def _cell(row, name) -> str:
    mean, low, high = row[name], row[f"{name}_low"], row[f"{name}_high"]
    if pd.isna(mean):
        return "—"
    if name in PERCENT:
        return f"{100 * mean:.1f} [dim]{100 * low:.1f}–{100 * high:.1f}[/]"
    return f"{mean:.1f} [dim]{low:.1f}–{high:.1f}[/]"


def stage_table_rich(table: pd.DataFrame, title: str = "Stage table: posterior mean, then 90% interval") -> Table:
    """A Rich table of :meth:`funnelsim.model.FunnelModel.stage_table`."""
    segmented = table["segment"].notna().any()
    out = Table(title=title)
    out.add_column("stage")
    if segmented:
        out.add_column("segment")
    out.add_column("stays", justify="right")
    for name in (*PERCENT, *DAYS):
        out.add_column(HEADERS[name], justify="right")
    previous = object()
    for row in table.to_dict(orient="records"):
        if segmented and row["segment"] != previous and previous is not object():
            out.add_section()
        previous = row["segment"]
        cells = [row["stage"], *([row["segment"] or "(all)"] if segmented else []), f"{row['stays']:,}"]
        out.add_row(*cells, *(_cell(row, name) for name in (*PERCENT, *DAYS)))
    return out


def diagnostics_panel(diagnostics: dict) -> Panel:
    """Green when the fit passed its checks, a loud red block when it did not."""
    d = diagnostics
    line = (f"R-hat max {d['r_hat_max']:.3f} · ESS bulk min {d['ess_bulk_min']:.0f} · "
            f"ESS tail min {d['ess_tail_min']:.0f} · divergences {d['divergences']} · sampler {d['sampler']}")
    if d["converged"]:
        return Panel(line, title="diagnostics: converged", border_style="green")
    body = (line + "\n[bold]NOT CONVERGED[/]: " + "; ".join(d["problems"])
            + "\nDo not forecast from this fit: sample longer (--tune, --draws) or simplify the segments.")
    return Panel(body, title="diagnostics: FAILED", border_style="bold red")
