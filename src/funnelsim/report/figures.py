"""The report's pictures as inline SVG: matplotlib figures without pyplot (no GUI backend, no
global state), currency ticks in k/M (never a "1e7" offset), labelled axes and the Okabe–Ito
colour-blind-safe palette. Text stays text in the SVG (``svg.fonttype = none``): the browser
draws it with its own sans-serif font, so the file needs no font and no network.

Every function takes results (a :class:`funnelsim.sim.forecast.Forecast`, tables) and returns
the SVG markup (a string); amounts are in the currency of the event log.
"""

from __future__ import annotations

import hashlib
import io
import re
from contextlib import contextmanager

import numpy as np
import pandas as pd

from .charts import compact_amount, currency_axis

__all__ = ["OKABE_ITO", "fan_svg", "periods_svg", "waterfall_svg", "segments_svg", "label"]

# Okabe & Ito (2008): distinguishable under the common colour-vision deficiencies
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
BLUE, ORANGE, GREEN, VERMILION, PURPLE, SKY = OKABE_ITO[:6]

_STYLE = {"svg.fonttype": "none", "font.family": "sans-serif", "font.size": 9,
          "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
          "axes.titlesize": 10, "legend.fontsize": 8, "legend.frameon": False}


def label(text) -> str:
    """A value from the log as plain chart text: ``$`` would start matplotlib's mathtext."""
    return str(text).replace("$", r"\$")


@contextmanager
def _figure(width: float = 7.2, height: float = 3.4):
    """A pyplot-free Figure (inches) under the report's style."""
    from cycler import cycler
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with rc_context({**_STYLE, "axes.prop_cycle": cycler(color=OKABE_ITO)}):
        fig = Figure(figsize=(width, height), layout="constrained")
        yield fig


def _svg(fig) -> str:
    """The figure as SVG markup without the XML prolog, ids made unique to this picture."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)     # RDF boilerplate, no content
    prefix = "f" + hashlib.sha1(text.encode()).hexdigest()[:8]   # several pictures in one page: ids must not clash
    text = re.sub(r'id="([^"]+)"', lambda m: f'id="{prefix}{m.group(1)}"', text)
    text = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}{m.group(1)})", text)
    text = re.sub(r'xlink:href="#([^"]+)"', lambda m: f'xlink:href="#{prefix}{m.group(1)}"', text)
    return text.replace("<svg ", '<svg role="img" ', 1)


def fan_svg(forecast, target: float | None = None) -> str:
    """Cumulative revenue of the open pipeline by period end: median, 50% and 80% bands, the
    median with new deals, and the target line."""
    with _figure() as fig:
        ax = fig.add_subplot()
        forecast.plot_fan(ax=ax, target=target)
        ax.set_title("Cumulative revenue by the end of each period")
        ax.set_xlabel("end of period")
        ax.set_ylabel("revenue (log's currency)")
        from matplotlib import dates

        ticks = dates.AutoDateLocator(minticks=3, maxticks=7)
        ax.xaxis.set_major_locator(ticks)
        ax.xaxis.set_major_formatter(dates.ConciseDateFormatter(ticks))
        for tick in ax.get_xticklabels():
            tick.set_rotation(0)
            tick.set_horizontalalignment("center")
        return _svg(fig)


def periods_svg(forecast) -> str:
    """Revenue per period: the open pipeline's mean (bar) with its P10–P90 (whisker), and the
    new deals' mean stacked on it."""
    table = forecast.by_period()
    x = np.arange(len(table))
    with _figure(height=3.0) as fig:
        ax = fig.add_subplot()
        mean = table["revenue_mean"].to_numpy(float)
        ax.bar(x, mean, color=BLUE, label="open pipeline (mean)")
        ax.errorbar(x, mean, yerr=[mean - table["revenue_p10"], table["revenue_p90"] - mean], fmt="none",
                    ecolor="#333333", capsize=3, lw=1, label="open pipeline P10–P90")
        if forecast.has_new_deals:
            ax.bar(x, table["new_revenue_mean"], bottom=mean, color=ORANGE, label="new deals (mean)")
        ax.set_xticks(x, [label(p) for p in table["period"]])
        ax.set_xlabel("period")
        ax.set_ylabel("revenue (log's currency)")
        ax.set_title("Revenue won per period")
        currency_axis(ax.yaxis)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
        return _svg(fig)


def waterfall_svg(steps: pd.DataFrame, then: str, now: str) -> str:
    """The pipeline waterfall: the open amount then, each step's signed change, the open amount
    now (``steps`` as :class:`funnelsim.report.changes.PipelineChanges` holds them)."""
    amounts = steps["amount"].to_numpy(float)
    levels = np.concatenate([[amounts[0]], amounts[0] + np.cumsum(amounts[1:-1])])
    with _figure(height=3.2) as fig:
        ax = fig.add_subplot()
        n = len(steps)
        for i, amount in enumerate(amounts):
            if i in (0, n - 1):
                bottom, height, colour = 0.0, amount, BLUE
            else:
                start = levels[i - 1]
                bottom, height = min(start, start + amount), abs(amount)
                colour = GREEN if amount > 0 else VERMILION if amount < 0 else "#999999"
            ax.bar(i, height, bottom=bottom, color=colour, width=0.7)
            text = compact_amount(amount) if i in (0, n - 1) else f"{'+' if amount >= 0 else '−'}{compact_amount(abs(amount))}"
            ax.annotate(text, (i, bottom + height), xytext=(0, 2), textcoords="offset points", ha="center",
                        fontsize=8)
        names = [f"open\n{then}", "+ created", "− won", "− lost", "− went dark", "± moved", "± amounts", f"open\n{now}"]
        ax.set_xticks(np.arange(n), names[:n])
        ax.set_ylabel("open amount (log's currency)")
        ax.set_title("Live open pipeline: what changed")
        currency_axis(ax.yaxis)
        return _svg(fig)


def segments_svg(table: pd.DataFrame) -> str:
    """Per segment, the open pipeline's revenue within the horizon: mean (dot) and P10–P90
    (line), largest first (``table`` from :meth:`Forecast.by_segment`)."""
    table = table.sort_values("mean", ascending=True)
    y = np.arange(len(table))
    with _figure(height=max(1.6, 0.35 * len(table) + 0.9)) as fig:
        ax = fig.add_subplot()
        ax.hlines(y, table["p10"], table["p90"], color=BLUE, lw=3, alpha=0.5, label="P10–P90")
        ax.plot(table["mean"], y, "o", color=BLUE, label="mean")
        ax.set_yticks(y, [label(s) for s in table["segment"]])
        ax.set_xlabel("revenue within the horizon (log's currency)")
        ax.set_ylabel("segment")
        ax.set_title("Open pipeline revenue by segment")
        currency_axis(ax.xaxis)
        ax.legend(loc="lower right")
        return _svg(fig)
