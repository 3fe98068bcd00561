"""The quarterly forecast report: one self-contained HTML file (and a PDF printed from it).

:func:`forecast_report` runs the forecast (or takes one), gathers the sections of
:mod:`funnelsim.report.sections` and returns a :class:`Report`, which shows itself inline in
Jupyter (``_repr_html_``) and writes ``write_html`` / ``write_pdf`` / ``write_json``::

    report = fs.forecast_report(model, snap, horizon_days=90, target=500_000, compare_to="2024-05-31")
    report                       # in Jupyter: the report itself
    report.write_html("report.html"); report.write_pdf("report.pdf")

The page has no script, no external font and no network reference: its pictures are inline SVG
(:mod:`funnelsim.report.figures`). Every value from the log goes through Jinja2's autoescape,
so a segment called ``<script>...`` is shown as text. Amounts are in the log's currency.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import atomic_write, write_json
from ..data.events import FunnelDataError
from ..defaults import HORIZON_DAYS
from . import figures, sections
from ._template import BODY, CSS, DOCUMENT

__all__ = ["Report", "forecast_report", "find_browser", "print_pdf", "BROWSER_FLAGS", "PAPERS"]

BROWSER = "/usr/bin/chromium"
# what headless Chromium needs here: no sandbox (root, containers), no GPU, nothing phoning home
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")
PAPERS = {"a4": "A4", "letter": "letter"}
PDF_TIMEOUT_S = 120


@dataclass
class Report:
    """A rendered forecast report: ``forecast`` (:class:`funnelsim.sim.forecast.Forecast`, its
    segment roll-up computed), ``target`` (currency or None) and ``context``, the sections as
    plain data (see :mod:`funnelsim.report.sections`)."""

    forecast: object
    target: float | None
    context: dict = field(repr=False)

    def body(self) -> str:
        """The report's markup (a ``<div class="fsr">``), without the page around it."""
        return _environment().from_string(BODY).render(**self.context)

    def html(self, paper: str | None = None) -> str:
        """The whole page: one self-contained HTML document. ``paper`` ("a4" or "letter")
        fixes the printed page size; by default the printer's paper is used."""
        page = "" if paper is None else f"@page {{ size: {PAPERS[paper.lower()]}; }}"
        return _environment().from_string(DOCUMENT).render(css=CSS, page_css=page, body=self.body(), **self.context)

    def _repr_html_(self) -> str:
        return f"<style>{CSS}</style>{self.body()}"

    def to_dict(self) -> dict:
        """The forecast JSON (``Forecast.to_dict``, with ``segments`` and, with a target, ``target``)."""
        return self.forecast.to_dict(self.target)

    def write_html(self, path, paper: str | None = None) -> Path:
        """Write the page atomically (UTF-8)."""
        text = self.html(paper)
        return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def write_json(self, path) -> Path:
        return write_json(path, self.to_dict())

    def write_pdf(self, path, paper: str = "a4", browser: str | None = None) -> Path:
        """Print the page to a PDF with headless Chromium (``browser``: its path; default
        /usr/bin/chromium or ``chromium`` on the PATH); a missing browser is a
        :class:`FunnelDataError`."""
        exe = find_browser(browser)
        with tempfile.TemporaryDirectory(prefix="funnelsim-report-") as folder:
            page = Path(folder) / "report.html"
            page.write_text(self.html(paper), encoding="utf-8")
            return atomic_write(path, lambda tmp: print_pdf(exe, page, tmp))


def find_browser(browser: str | None = None) -> str:
    """The Chromium executable to print with, or a FunnelDataError saying how to get one."""
    for candidate in ([browser] if browser else [BROWSER, "chromium", "chromium-browser", "google-chrome"]):
        found = shutil.which(candidate)
        if found:
            return found
    raise FunnelDataError("no headless browser to print the PDF with", column="pdf", value=str(browser or BROWSER),
                          hint="Install Chromium (Debian/Ubuntu: apt-get install chromium), or leave out --pdf "
                               "and print the HTML report from any browser.")


def print_pdf(browser: str, page: Path, out: Path) -> None:
    """Print ``page`` (an HTML file) to ``out`` with headless Chromium, in a fresh profile."""
    with tempfile.TemporaryDirectory(prefix="funnelsim-chromium-") as profile:
        command = [browser, *BROWSER_FLAGS, f"--user-data-dir={profile}", "--no-pdf-header-footer",
                   f"--print-to-pdf={out}", page.resolve().as_uri()]
        result = subprocess.run(command, capture_output=True, text=True, timeout=PDF_TIMEOUT_S)
    if result.returncode != 0 or not out.exists() or out.stat().st_size == 0:
        raise FunnelDataError(f"the browser could not print the PDF (exit {result.returncode})", column="pdf",
                              value=browser, hint=(result.stderr.strip().splitlines() or ["no message"])[-1])


def forecast_report(model, snapshot, *, horizon_days: int = HORIZON_DAYS, target: float | None = None,
                    compare_to=None, seed: int = 0, period: str = "month", deal_value: float | None = None,
                    new_deals: bool = True, bottleneck_draws: int | None = 400, forecast=None) -> Report:
    """Build the report of ``snapshot`` (a :class:`funnelsim.Snapshot`) with the fitted ``model``.

    ``forecast``: a :class:`funnelsim.sim.forecast.Forecast` made from this snapshot (else one
    is made with ``horizon_days``, ``period``, ``seed``, ``deal_value``, ``new_deals``).
    ``compare_to``: an earlier day; adds what changed since then. ``bottleneck_draws``: the
    posterior draws the bottleneck ranking uses (None: all; fewer is faster).
    """
    from ..sim.forecast import forecast as run_forecast

    if forecast is None:
        forecast = run_forecast(model, snapshot, horizon_days=horizon_days, period=period, seed=seed,
                                deal_value=deal_value, new_deals=new_deals)
    if compare_to is not None and snapshot.at(compare_to).as_of >= snapshot.as_of:
        raise FunnelDataError("--compare-to must be a day before --as-of", column="compare_to",
                              value=str(pd.Timestamp(compare_to).date()), hint=f"Pass a day before {snapshot.as_of.date()}.")
    seed = forecast.dataset.attrs.get("seed", seed)
    inflow = snapshot.new_deals if forecast.has_new_deals else None
    thresholds = sections.thresholds_for(snapshot)
    ctx = {
        "h": sections.headline(forecast, snapshot, target, deal_value),
        "periods": sections.periods(forecast),
        "segments": sections.segments(forecast),
        "c": None if compare_to is None else sections.changes(model, snapshot, forecast, compare_to, thresholds,
                                                              deal_value),
        "stages": sections.stages(model),
        "losses": sections.losses(model),
        "bottlenecks": sections.bottleneck_rows(model, snapshot, forecast.horizon_days, seed, deal_value,
                                                None if inflow is None or inflow.empty else inflow,
                                                _draws(forecast, bottleneck_draws)),
        "bottleneck_draws": _draws(forecast, bottleneck_draws),
        "dark": sections.going_dark(snapshot, thresholds),
        "deals": sections.top_deals(forecast),
        "a": sections.assumptions(snapshot, model, forecast),
    }
    ctx |= _pictures(forecast, target, ctx)
    return Report(forecast, target, ctx)


def _draws(forecast, wanted: int | None) -> int | None:
    """``wanted`` draws, or None when the forecast has no more than that (then all are used)."""
    return None if wanted is None or forecast.dataset.sizes["draw"] <= wanted else int(wanted)


def _pictures(forecast, target, ctx) -> dict:
    seg = ctx["segments"]
    out = {"fan": figures.fan_svg(forecast, target), "periods_svg": figures.periods_svg(forecast),
           "segments_svg": figures.segments_svg(_frame(seg)) if len(seg) > 1 else ""}
    if ctx["c"] is not None:
        out["waterfall"] = figures.waterfall_svg(ctx["c"]["table"].steps, ctx["c"]["then"], ctx["c"]["now"])
    return out


def _frame(rows):
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- formatting

def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def money(value) -> str:
    """An amount with thousands separators, no decimals ("—" when missing)."""
    v = _number(value)
    return "—" if v is None else f"{v:,.0f}"


def compact(value) -> str:
    """An amount in a few characters: 950, 12.6k, 3.4M ("—" when missing)."""
    from .charts import compact_amount

    v = _number(value)
    return "—" if v is None else compact_amount(v)


def signed(value) -> str:
    """A change of amount: +1,234 or −1,234."""
    v = _number(value)
    if v is None:
        return "—"
    return f"+{v:,.0f}" if v >= 0.5 else f"−{-v:,.0f}" if v <= -0.5 else "0"


def pct(value) -> str:
    v = _number(value)
    return "—" if v is None else f"{100 * v:.0f}%" if abs(v) >= 0.1 or v == 0 else f"{100 * v:.1f}%"


def days(value) -> str:
    v = _number(value)
    return "—" if v is None else f"{v:,.0f}" if abs(v) >= 10 else f"{v:.1f}"


def count(value) -> str:
    v = _number(value)
    return "—" if v is None else f"{v:,.0f}"


def _environment():
    from jinja2 import Environment, StrictUndefined

    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=False)
    env.filters |= {"money": money, "compact": compact, "signed": signed, "pct": pct, "days": days, "count": count}
    return env
