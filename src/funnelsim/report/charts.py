"""Shared pieces of the charts: axes a person reads at a glance."""

from __future__ import annotations

__all__ = ["compact_amount", "currency_axis", "save_png"]


def compact_amount(value: float) -> str:
    """An amount (currency) in a few characters: 950, 12.6k, 3.4M, 1.2B."""
    size = abs(value)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if size >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}" if size < 100 else f"{value:,.0f}"


def currency_axis(axis) -> None:
    """Label a matplotlib axis (``ax.yaxis``) in compact amounts instead of "1e7" offsets."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda value, _pos: compact_amount(value)))


def save_png(figure, path, dpi: int = 120):
    """Write a matplotlib Figure as a PNG (matplotlib renders PNGs with Agg whatever the
    session's backend), atomically (temp file, then rename), and close it."""
    import matplotlib.pyplot as plt

    from .._io import atomic_write

    try:
        return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))
    finally:
        plt.close(figure)


def plot_drift(table, quantity: str = "p_advance", segment: str | None = None, ax=None):
    """One line per stage of ``quantity`` ("p_advance", "p_win_from_entry", "median_days") by
    entry cohort, with its interval as a band, from
    :meth:`funnelsim.model.funnel_model.FunnelModel.cohort_table` (``segment`` None: the whole
    funnel). Probabilities on a percent axis, days in days. Returns the Axes."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 4.5))
    rows = table[table["segment"].isna()] if segment is None else table[table["segment"].eq(segment)]
    if rows.empty:
        raise ValueError(f"no rows for segment {segment!r}")
    cohorts = list(dict.fromkeys(rows["cohort"]))
    x = range(len(cohorts))
    for stage, line in rows.groupby("stage", sort=False):
        line = line.set_index("cohort").loc[cohorts]
        drawn = ax.plot(x, line[quantity], marker=".", label=str(stage).replace("$", r"\$"))
        ax.fill_between(x, line[f"{quantity}_low"], line[f"{quantity}_high"], alpha=0.2, lw=0,
                        color=drawn[0].get_color())
    ax.set_xticks(list(x), cohorts, rotation=90 if len(cohorts) > 12 else 0)
    ax.set_xlabel("entry cohort")
    names = {"p_advance": "P(advance)", "p_win_from_entry": "P(win from entry)", "median_days": "median days in stage"}
    ax.set_ylabel(names.get(quantity, quantity))
    if quantity.startswith("p_"):
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_title(f"{names.get(quantity, quantity)} by entry cohort" + ("" if segment is None else f", {segment}"))
    ax.legend(fontsize="small")
    return ax
