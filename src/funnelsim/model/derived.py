"""Quantities derived from posterior draws of the funnel model: win odds, losses, timing.

Pure numpy/scipy (no PyMC), vectorised over draws and segments. Shapes, with S open stages,
G segments and D posterior draws:

- ``pi``  (D, S, G, S+3): destination probabilities out of stage s for segment g. Destinations
  are the S open stages, then won (index S), lost (S+1) and stall (S+2). Each row sums to 1;
  destinations never seen from a stage are exactly 0 (and so is a stage's move to itself).
- ``Sojourn``: time in stage given a non-stall destination j, for t = days + OFFSET_DAYS;
  parameters (D, S, G, S+2) and (D, S, S+2).

The open stages are the transient states of an absorbing Markov chain with transitions
Q = pi[..., :S]; won, lost and stall absorb. Every result is in days where it is a time.
I - Q is singular only if some open stages form a loop that no deal can leave (no stall, won or
lost anywhere in it); the model's softmax keeps pi_stall > 0, so that cannot happen there
(np.linalg.solve would raise LinAlgError). Draws must be one axis: stack (chain, draw) first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data.stats import OFFSET_DAYS
from .sojourn import LOGNORMAL, WEIBULL, SojournFamily
from .sojourn import family as sojourn_family

__all__ = [
    "Sojourn",
    "eventual_pi",
    "p_win_from_entry",
    "p_close_from_entry",
    "visits_from_top",
    "loss_shares",
    "median_days",
    "expected_days_to_close",
    "mix_segments",
    "whole_funnel_median_days",
    "interval",
]

_LOG_T_LOW, _LOG_T_HIGH = np.log(1e-3), np.log(1e5)  # median bracket for t (days + offset)
_TOLERANCE = 1e-13  # in log t
_MAX_STEPS = 100  # pure bisection of the 18.4 log-unit bracket reaches 1e-13 in 48 steps


@dataclass(frozen=True, eq=False)
class Sojourn:
    """Time in stage given the destination, t = days + OFFSET_DAYS, in the natural parameters
    of its family (:mod:`funnelsim.model.sojourn`, whose maths it applies).

    ``family``: the family's name, "lognormal" or "weibull" (a family object is taken too).
    ``loc_or_scale`` (D, S, G, S+2): LogNormal log-location mu, or Weibull scale lambda (in t).
    ``shape_or_sigma`` (D, S, S+2): LogNormal log-scale sigma, or Weibull shape k.
    ``cdf``, ``sf``, ``pdf`` (t broadcastable), ``log_median`` and ``mean`` return arrays
    broadcast to (D, S, G, S+2); ``mean`` is in t (subtract OFFSET_DAYS for days).

    With ``instant`` (instant stays, :mod:`funnelsim.model.likelihood`), a pair with h > 0 is the
    mixture of an instant stay (0 days, t = OFFSET_DAYS) with probability h and the family
    truncated to t >= ``short_t``: cdf(t) = h for OFFSET_DAYS <= t < short_t and
    h + (1 - h) (1 - S(t) / S(short_t)) above; ``pdf`` is the density of the timed part.
    """

    family: str
    loc_or_scale: np.ndarray
    shape_or_sigma: np.ndarray
    instant: np.ndarray | None = None      # (D, S, S+2) instant share h (0: none), see below
    short_t: float = 0.0                   # the resolution r in t: instant stays have t < r
    kind: SojournFamily = field(init=False, repr=False)   # the family object of ``family``

    def __post_init__(self):
        kind = sojourn_family(self.family)
        loc, shape = np.asarray(self.loc_or_scale, float), np.asarray(self.shape_or_sigma, float)
        if loc.ndim != 4 or shape.shape != (loc.shape[0], loc.shape[1], loc.shape[3]):
            raise ValueError(f"Sojourn parameters need shapes (D, S, G, S+2) and (D, S, S+2); "
                             f"got {loc.shape} and {shape.shape}")
        object.__setattr__(self, "family", kind.name)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "loc_or_scale", loc)
        object.__setattr__(self, "shape_or_sigma", shape)
        if self.instant is not None:
            instant = np.asarray(self.instant, float)
            if instant.shape != shape.shape:
                raise ValueError(f"Sojourn instant shares need shape {shape.shape}; got {instant.shape}")
            object.__setattr__(self, "instant", instant if (instant > 0).any() else None)

    @classmethod
    def lognormal(cls, mu, sigma) -> Sojourn:
        """t ~ LogNormal(mu, sigma): mu (D, S, G, S+2), sigma (D, S, S+2)."""
        return cls(LOGNORMAL.name, mu, sigma)

    @classmethod
    def weibull(cls, shape, scale) -> Sojourn:
        """t ~ Weibull(k=shape, lambda=scale): shape (D, S, S+2), scale (D, S, G, S+2)."""
        return cls(WEIBULL.name, scale, shape)

    @classmethod
    def from_posterior(cls, family, arrays: dict[str, np.ndarray], short_t: float = 0.0) -> Sojourn:
        """From posterior draws by name (``arrays`` holds the family's ``params``, and
        ``instant`` where the model has instant stays)."""
        kind = sojourn_family(family)
        return cls(kind.name, *kind.natural(*(arrays[name] for name in kind.params)),
                   arrays.get("instant"), float(short_t))

    def _instant(self):
        """(h, S(r)) broadcast like loc_or_scale, for the pairs with instant stays."""
        h = self.instant[:, :, None, :]
        return h, self.kind.sf(self._z(self.short_t))

    @property
    def _shape(self) -> np.ndarray:  # (D, S, 1, S+2), broadcasts against loc_or_scale
        return self.shape_or_sigma[:, :, None, :]

    def _z(self, t):
        """Standardised log time (lognormal) or (t / lambda)^k (weibull)."""
        t = np.asarray(t, float)
        with np.errstate(divide="ignore", over="ignore"):
            return self.kind.z(t, self.loc_or_scale, self._shape)

    def cdf(self, t) -> np.ndarray:
        """P(T <= t), t in days + OFFSET_DAYS."""
        if self.instant is not None:
            return 1.0 - self.sf(t)
        return self.kind.cdf(self._z(t))

    def sf(self, t) -> np.ndarray:
        """P(T > t), t in days + OFFSET_DAYS."""
        plain = self.kind.sf(self._z(t))
        if self.instant is None:
            return plain
        h, sf_r = self._instant()
        t = np.asarray(t, float)
        with np.errstate(invalid="ignore", divide="ignore"):
            timed = (1.0 - h) * np.where(t >= self.short_t, np.minimum(plain / sf_r, 1.0), 1.0)
            mixed = np.where(t >= OFFSET_DAYS, timed, 1.0)
        return np.where(h > 0, np.nan_to_num(mixed), plain)

    def pdf(self, t) -> np.ndarray:
        """Density of T at t > 0 (per day), t in days + OFFSET_DAYS (of the timed part where
        there are instant stays)."""
        t = np.asarray(t, float)
        plain = self.kind.pdf(t, self._z(t), self._shape)
        if self.instant is None:
            return plain
        h, sf_r = self._instant()
        with np.errstate(invalid="ignore", divide="ignore"):
            timed = np.where(t >= self.short_t, (1.0 - h) * plain / sf_r, 0.0)
        return np.where(h > 0, np.nan_to_num(timed), plain)

    def log_median(self) -> np.ndarray:
        """log of the median of T (t in days + OFFSET_DAYS), shape (D, S, G, S+2)."""
        return self.kind.log_median(self.loc_or_scale, self._shape)

    def mean(self) -> np.ndarray:
        """E[T] in days + OFFSET_DAYS, shape (D, S, G, S+2)."""
        plain = self.kind.mean(self.loc_or_scale, self._shape)
        if self.instant is None:
            return plain
        h = self.instant[:, :, None, :]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            timed = self.kind.truncated_mean(self.loc_or_scale, self._shape, self.short_t)
            mixed = h * OFFSET_DAYS + (1.0 - h) * np.where(np.isfinite(timed), np.maximum(timed, self.short_t),
                                                            self.short_t)
        return np.where(h > 0, mixed, plain)


def _stages(pi) -> tuple[np.ndarray, int]:
    pi = np.asarray(pi, float)
    if pi.ndim != 4 or pi.shape[3] != pi.shape[1] + 3:
        raise ValueError(f"pi needs shape (draw, S, G, S+3); got {pi.shape}")
    return pi, pi.shape[1]


def _solve_chain(pi, rhs) -> np.ndarray:
    """Solve (I - Q) x = rhs per draw and segment; rhs (D, S, G) -> x (D, S, G)."""
    pi, S = _stages(pi)
    a = np.eye(S) - np.moveaxis(pi[..., :S], 2, 1)  # (D, G, S, S)
    x = np.linalg.solve(a, np.moveaxis(rhs, 2, 1)[..., None])[..., 0]
    return np.moveaxis(x, 1, 2)


def eventual_pi(pi, revival_rate=None, revival_days: float = 0.0) -> np.ndarray:
    """``pi`` with dormant deals' revivals (docs/revival.md) counted where they end: a stay
    that stalls revives with probability w = 1 - exp(-r x revival_days) and then moves to j with
    the stage's shares pi_j / (1 - pi_stall), so j gets pi_j (1 + w pi_stall / (1 - pi_stall))
    and stall keeps pi_stall (1 - w). ``revival_rate`` (D, S) per day; None returns ``pi``."""
    if revival_rate is None:
        return pi
    pi = np.asarray(pi, float)
    stall = pi[..., -1:]
    w = -np.expm1(-np.asarray(revival_rate, float) * revival_days)[:, :, None, None]     # (D, S, 1, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        boost = np.where(stall < 1.0, 1.0 + w * stall / (1.0 - stall), 1.0)
    return np.concatenate([pi[..., :-1] * boost, stall * (1.0 - w)], axis=-1)


def p_win_from_entry(pi) -> np.ndarray:
    """P(eventually won | deal enters stage s), (D, S, G); skips and back moves count."""
    pi, S = _stages(pi)
    return _solve_chain(pi, pi[..., S])


def p_close_from_entry(pi) -> np.ndarray:
    """P(eventually won or lost, i.e. not stalled | deal enters stage s), (D, S, G)."""
    pi, S = _stages(pi)
    return _solve_chain(pi, pi[..., S] + pi[..., S + 1])


def visits_from_top(pi) -> np.ndarray:
    """Expected entries into stage s for a deal entering stage 0, (D, S, G).

    Row 0 of the fundamental matrix N = (I - Q)^-1, from (I - Q)^T x = e_0. Stage 0 counts its
    first entry, so visits[:, 0] >= 1.
    """
    pi, S = _stages(pi)
    a = np.eye(S) - np.moveaxis(pi[..., :S], 2, 1).swapaxes(-1, -2)  # (I - Q)^T, (D, G, S, S)
    e0 = np.zeros(a.shape[:-1] + (1,))
    e0[..., 0, 0] = 1.0
    return np.moveaxis(np.linalg.solve(a, e0)[..., 0], 1, 2)


def loss_shares(pi) -> np.ndarray:
    """Of the deals entering stage 0 that end lost or stalled, the share lost/stalled in stage s.

    (D, S, G), sums to 1 over stages; NaN if no deal from the top is ever lost or stalled.
    """
    pi, S = _stages(pi)
    lost_here = visits_from_top(pi) * (pi[..., S + 1] + pi[..., S + 2])
    total = lost_here.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, lost_here / total, np.nan)


def _mixture_median_days(weights, sojourn: Sojourn, axis) -> np.ndarray:
    """Median in days of the mixture sum(weights * sojourn.cdf) over ``axis``.

    Safeguarded Newton on x = log t (t = days + OFFSET_DAYS), started at the weighted mean of the
    components' log medians, inside a bracket that starts at t in [1e-3, 1e5] and shrinks with
    every step; a Newton step that would leave the bracket is replaced by bisection. It usually
    converges (|dx| < 1e-13) in 6-7 steps, against ~48 for plain bisection. A median beyond the
    bracket comes back clipped to it; the result is floored at 0 days and NaN where the weights
    sum to 0. Destinations with zero weight are ignored, whatever their parameters (even NaN).
    """
    total = weights.sum(axis=axis, keepdims=True)
    used = weights > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(used, weights / total, 0.0)
    lo = np.full(total.shape, _LOG_T_LOW)
    hi = np.full(total.shape, _LOG_T_HIGH)
    x = np.clip(np.where(used, w * sojourn.log_median(), 0.0).sum(axis=axis, keepdims=True), lo, hi)
    done = ~(total > 0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # bad steps -> bisection
        for _ in range(_MAX_STEPS):
            t = np.exp(x)
            cdf = np.where(used, w * sojourn.cdf(t), 0.0).sum(axis=axis, keepdims=True)
            slope = np.where(used, w * t * sojourn.pdf(t), 0.0).sum(axis=axis, keepdims=True)
            # slope is dF/dx, the density on the log t scale
            below = cdf < 0.5
            lo, hi = np.where(below, x, lo), np.where(below, hi, x)
            newton = x - (cdf - 0.5) / slope
            step_ok = (newton >= lo) & (newton <= hi)  # False for NaN/inf steps too
            x_new = np.where(step_ok, newton, 0.5 * (lo + hi))
            converged = np.abs(x_new - x) < _TOLERANCE
            x = np.where(done, x, x_new)  # converged cells stay put
            done |= converged
            if done.all():
                break
    days = np.maximum(np.exp(x) - OFFSET_DAYS, 0.0)
    return np.where(total > 0, days, np.nan).squeeze(axis=axis)


def median_days(pi, sojourn: Sojourn) -> np.ndarray:
    """Median days in stage s given the deal leaves it (does not stall), (D, S, G).

    The time is the mixture over non-stall destinations j with weights pi_j / (1 - pi_stall).
    NaN where pi_stall == 1 or the stage has no exits at all.
    """
    pi, S = _stages(pi)
    return _mixture_median_days(pi[..., : S + 2], sojourn, axis=-1)


def whole_funnel_median_days(pi, sojourn: Sojourn, weights) -> np.ndarray:
    """Median days in stage s over all segments, given the deal leaves it, (D, S).

    ``weights`` (S, G), e.g. observed entries per stage and segment (normalised per stage).
    Among w_g entries, w_g * (1 - pi_stall) leave, so destination j of segment g carries
    weight w_g * pi[g, j] in the mixture. NaN where no weighted deal ever leaves.
    """
    pi, S = _stages(pi)
    w = np.broadcast_to(np.asarray(weights, float), pi.shape[1:3])
    return _mixture_median_days(w[None, :, :, None] * pi[..., : S + 2], sojourn, axis=(-2, -1))


def expected_days_to_close(pi, sojourn: Sojourn) -> np.ndarray:
    """Expected days from entry into stage s until won or lost, given it closes, (D, S, G).

    Doob h-transform with h = c = p_close_from_entry (c = 1 at won and lost): conditioned moves
    Q*[s, s'] = Q[s, s'] c[s'] / c[s] and per-stage mean stay b[s] = sum_j pi[s, j] c_j m_j / c[s],
    with m_j = E[T | j] - OFFSET_DAYS, solve (I - Q*) E = b. Multiplying row s by c[s] gives the
    same system as (I - Q) u = c * b with u = c * E, which is what is solved (no division until
    the end). NaN where c[s] == 0.
    """
    pi, S = _stages(pi)
    c = p_close_from_entry(pi)  # (D, S, G)
    c_next = np.broadcast_to(c.swapaxes(1, 2)[:, None], pi.shape[:3] + (S,))  # c[d, s', g]
    c_dest = np.concatenate([c_next, np.ones(pi.shape[:3] + (2,))], axis=-1)  # c_j, j < S+2
    days = sojourn.mean() - OFFSET_DAYS
    contrib = np.where(pi[..., : S + 2] > 0, pi[..., : S + 2] * c_dest * days, 0.0)
    u = _solve_chain(pi, contrib.sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, u / c, np.nan)


def mix_segments(values, weights) -> np.ndarray:
    """Weighted average over segments: values (D, S, G), weights (S, G) >= 0 -> (D, S).

    Weights are normalised per stage; segments with weight 0 are ignored (even if NaN), a NaN
    value with positive weight gives NaN, and a stage with no weight gives NaN.
    """
    values = np.asarray(values, float)
    w = np.broadcast_to(np.asarray(weights, float), values.shape[1:])
    total = w.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(w > 0, w * values, 0.0).sum(axis=-1) / np.where(total > 0, total, np.nan)


def interval(values, prob: float = 0.9, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posterior mean and equal-tailed ``prob`` interval over the draw axis: (mean, low, high)."""
    values = np.asarray(values, float)
    low, high = np.quantile(values, [(1 - prob) / 2, (1 + prob) / 2], axis=axis)
    return values.mean(axis=axis), low, high
