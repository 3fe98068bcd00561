"""The forecast's own track record on the user's log, and the band it calibrates.

``forecast --check N`` replays the same forecast (the same settings, its own fit at each date)
at the N origins one horizon apart before --as-of, ``as_of - k * horizon_days`` for k = 1..N,
each one's horizon ending by --as-of, so every actual is complete. It scores what the forecast
headlines: the total (open pipeline plus deals created during the horizon) with new deals, the
open pipeline without. It reports how often the 80% band held and the PIT values
(P(forecast < actual): uniform for a calibrated forecast; piled at 1 when the actual keeps
landing above the band), and warns when the band held less often than an 80% band plausibly
would (binomial probability of so few hits below :data:`TOO_NARROW_P`).

``--calibrate`` widens the band by what the record shows: split conformal prediction on the
log scale. Each past origin's score is how far its actual lay from the median in units of
its own band's half-width on that side, on log(x + c) (c a small offset so a zero revenue
has a log, :func:`_offset`): |g(actual) - g(P50)| / (g(P90) - g(P50)) above the median, the
same with P10 below. The widening factor is the ceil((N + 1) * 0.8)-th smallest score (the
largest when there are fewer than 4 origins: the guarantee needs at least 4), at least 1: the
band is never narrowed. Every draw x of today's forecast becomes
g⁻¹(g(P50) + factor * (g(x) - g(P50))): the median stays, the band and every quantile
widen by the factor on the log scale, and P(reaching a target) is read from the widened
draws. If the origins' errors are exchangeable with today's, the widened 80% band covers
with probability at least 80%. The calibrated band is reported beside the model's, never
in its place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..data.events import FunnelDataError, FunnelDefinition
from .backtest import BacktestSettings, backtest

__all__ = ["LEVEL", "TrackRecord", "check_origins", "track_record", "widening_factor", "widen"]

LEVEL = 0.8              # the band the record checks (P10 to P90)
TOO_NARROW_P = 0.10      # warn when P(this few hits | an 80% band) is below this
MIN_HISTORY_DAYS = 28    # an origin needs this much log before it to fit from
MIN_CONFORMAL = 4        # origins needed for the conformal guarantee at 80%: ceil(5 * 0.8) = 4


def _offset(p50: float) -> float:
    """c in g(x) = log(x + c): 1% of the median, at least 1 (currency or deals)."""
    return max(1.0, 0.01 * abs(float(p50)))


def _log(x, c):
    return np.log(np.maximum(np.asarray(x, float), 0.0) + c)


def check_origins(as_of, horizon_days: int, n: int, first_event) -> list[pd.Timestamp]:
    """The N origins one horizon apart before ``as_of`` (newest first), each with at least
    :data:`MIN_HISTORY_DAYS` of log before it; fewer when the log is shorter."""
    as_of, first = pd.Timestamp(as_of).normalize(), pd.Timestamp(first_event).normalize()
    origins = [as_of - pd.Timedelta(days=k * int(horizon_days)) for k in range(1, int(n) + 1)]
    return [o for o in origins if o >= first + pd.Timedelta(days=MIN_HISTORY_DAYS)]


def _scores(table: pd.DataFrame) -> np.ndarray:
    """Each origin's distance from its median in units of its band's half-width on that side
    (log scale, see the module doc); inf where that half-width is 0 and the actual is off it."""
    out = []
    for r in table.itertuples():
        c = _offset(r.p50)
        mid, x = _log(r.p50, c), _log(r.actual, c)
        edge = _log(r.p90 if r.actual >= r.p50 else r.p10, c)
        half = abs(edge - mid)
        out.append(abs(x - mid) / half if half > 0 else (0.0 if x == mid else math.inf))
    return np.asarray(out, float)


def widening_factor(table: pd.DataFrame, level: float = LEVEL) -> float:
    """The conformal widening factor of the band (module doc) from past origins' ``actual``,
    ``p10``, ``p50`` and ``p90``: at least 1; NaN without origins."""
    scores = np.sort(_scores(table))
    if scores.size == 0:
        return float("nan")
    rank = min(math.ceil((scores.size + 1) * level), scores.size)
    return float(max(1.0, scores[rank - 1]))


def widen(samples: np.ndarray, factor: float) -> np.ndarray:
    """The draws widened by ``factor`` around their median on the log scale (module doc)."""
    samples = np.asarray(samples, float)
    if not np.isfinite(factor) or factor <= 1.0 or samples.size == 0:
        return samples.copy()
    p50 = float(np.median(samples))
    c = _offset(p50)
    mid = _log(p50, c)
    return np.exp(mid + factor * (_log(samples, c) - mid)) - c


@dataclass
class TrackRecord:
    """The forecast replayed at past origins: ``origins`` (origin, actual, p10, p50, p90,
    covered, pit, converged; currency), what was scored (``"total"`` or ``"pipeline"``) and
    the horizon in days."""

    origins: pd.DataFrame
    scored: str
    horizon_days: int
    asked: int
    by_age: pd.DataFrame = field(default_factory=pd.DataFrame)   # the open deals' wins by age (Backtest.age_calibration)
    age_misses: list = field(default_factory=list)               # sentences of Backtest.age_misses

    @property
    def checked(self) -> int:
        return len(self.origins)

    @property
    def held(self) -> int:
        return int(self.origins["covered"].sum())

    @property
    def factor(self) -> float:
        return widening_factor(self.origins)

    @property
    def too_narrow(self) -> bool:
        """The band held less often than an 80% band plausibly would (binomial test)."""
        from scipy import stats

        return self.checked > 0 and float(stats.binom.cdf(self.held, self.checked, LEVEL)) < TOO_NARROW_P

    @property
    def warning(self) -> str | None:
        if not self.checked:
            return None
        if self.too_narrow:
            above = int((self.origins["actual"] > self.origins["p90"]).sum())
            below = int((self.origins["actual"] < self.origins["p10"]).sum())
            return (f"the 80% band has been too narrow on this log: it held at {self.held} of {self.checked} "
                    f"past origins (actual above P90 at {above}, below P10 at {below}). Read it as narrower than "
                    f"it should be; --calibrate widens it by this record (x{self.factor:.2f}).")
        if self.checked < MIN_CONFORMAL:
            return f"only {self.checked} past origin(s) could be checked: too few to judge the band (4 or more)."
        return None

    @property
    def warnings(self) -> list[str]:
        """:attr:`warning` (if any) and, at the past origins, the deal ages whose wins missed
        the forecast (old deals that still close, say)."""
        return ([self.warning] if self.warning else []) + list(self.age_misses)

    def calibrated(self, samples: np.ndarray, target: float | None = None) -> dict:
        """Today's draws widened by the record: mean, P10, P50, P90, the factor and, with a
        ``target``, the chance of reaching it."""
        wide = widen(samples, self.factor)     # an infinite factor (a zero-width band that missed): unchanged
        p10, p50, p90 = np.quantile(wide, [0.1, 0.5, 0.9])
        out = {"factor": self.factor, "calibrated": bool(np.isfinite(self.factor)), "mean": float(wide.mean()), "p10": float(p10), "p50": float(p50),
               "p90": float(p90), "rough": self.checked < MIN_CONFORMAL}
        if target is not None:
            out["p_hit"] = float((wide >= target).mean())
        return out

    def to_dict(self, samples: np.ndarray | None = None, target: float | None = None) -> dict:
        """The ``track_record`` of the forecast JSON (docs/json.md); with ``samples``, the
        band they calibrate to as ``calibrated``."""
        rows = [{"origin": r["origin"], "actual": r["actual"], "p10": r["p10"], "p50": r["p50"], "p90": r["p90"],
                 "covered80": bool(r["covered"]), "pit": r["pit"], "converged": bool(r["converged"])}
                for r in self.origins.to_dict(orient="records")]
        out = {"scored": self.scored, "horizon_days": self.horizon_days, "origins_asked": self.asked,
               "origins_checked": self.checked, "held80": self.held, "origins": rows,
               "pit": [r["pit"] for r in rows], "too_narrow": self.too_narrow, "warning": self.warning,
               "widening_factor": self.factor if self.checked else None,
               "by_age": self.by_age.to_dict(orient="records"), "age_warnings": list(self.age_misses)}
        if samples is not None:
            out["calibrated"] = self.calibrated(samples, target)
        return out

    def summary(self) -> str:
        if not self.checked:
            return "Track record: no past origin had enough log before it to check."
        pits = ", ".join(f"{p:.2f}" for p in self.origins["pit"])
        text = (f"Track record ({self.scored} revenue, the same forecast at {self.checked} past origins "
                f"{self.horizon_days} days apart): the 80% band held at {self.held} of {self.checked}; "
                f"PIT values {pits} (spread evenly over 0-1 when calibrated).")
        for warning in self.warnings:
            text += f" WARNING: {warning.rstrip('.')}."
        return text


def track_record(events, funnel: FunnelDefinition, as_of, n: int, settings: BacktestSettings, *,
                 columns: dict | None = None, dayfirst: bool = False, decimal: str = ".",
                 encoding: str | None = None, sheet: str | int | None = None, segment_from: str = "first",
                 workers: int | None = None, progress=None) -> TrackRecord:
    """Replay the forecast ``settings`` describe at the :func:`check_origins` before
    ``as_of`` and score it (module doc)."""
    from ..data.events import read_events

    if int(n) < 1:
        raise FunnelDataError(f"--check needs a number of past origins, not {n}", column="check", value=str(n),
                              hint="Pass --check 4 or more (each is one more fit).")
    log = read_events(events, funnel, columns=columns, dayfirst=dayfirst, decimal=decimal, encoding=encoding,
                      sheet=sheet)
    first = log.table.timestamp.min().execute()
    origins = check_origins(as_of, settings.horizon_days, n, first)
    scored = "total" if settings.new_deals else "pipeline"
    columns_out = ["origin", "actual", "p10", "p50", "p90", "covered", "pit", "converged"]
    if not origins:
        return TrackRecord(pd.DataFrame(columns=columns_out), scored, settings.horizon_days, int(n))
    result = backtest(events, funnel, origins, settings, columns=columns, dayfirst=dayfirst, decimal=decimal,
                      encoding=encoding, sheet=sheet, segment_from=segment_from, workers=workers, progress=progress)
    t = result.table
    prefix = "total_" if settings.new_deals else ""
    table = pd.DataFrame({"origin": t["origin"], **{k: t[f"{prefix}{k}"] for k in ("actual", "p10", "p50", "p90")},
                          "covered": t[f"{prefix}covered80"], "pit": t[f"{prefix}pit"], "converged": t["converged"]})
    return TrackRecord(table.sort_values("origin", ascending=False, ignore_index=True)[columns_out], scored,
                       settings.horizon_days, int(n), result.age_calibration, result.age_misses())
