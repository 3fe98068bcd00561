"""The time-in-stage (sojourn) families, each defined once: LogNormal and Weibull.

Time in stage given the destination is t = days + OFFSET_DAYS (see :mod:`funnelsim.data.stats`).
Each family has two parameters, a location per (stage, segment, exit) and a shape per
(stage, exit), in two parametrisations:

- **posterior** (the PyMC model, the saved posterior, the pointwise likelihood): the names in
  :attr:`SojournFamily.params`, LogNormal ``mu`` (mean of log t) and ``sigma``, Weibull
  ``log_scale`` (log lambda) and ``shape_k`` (k). The location is pooled across segments on
  the log-t scale in both;
- **natural** (:mod:`funnelsim.model.derived` and the simulator kernel, see :meth:`SojournFamily.natural`):
  LogNormal (mu, sigma), Weibull (lambda = exp(log_scale), k).

One object per family (:data:`LOGNORMAL`, :data:`WEIBULL`, looked up by name with
:func:`family`) gives the PyMC prior of its shape, the log-density of exits from their
sufficient statistics and the survival of open stays (PyMC graph and numpy), the numpy maths
of :class:`funnelsim.model.derived.Sojourn` (cdf, survival, density, median, mean) and the
arrays and integer code the simulator kernel (:mod:`funnelsim.sim.kernel`) reads. A new family
is a subclass here plus its branch in the kernel.

The arithmetic of each formula is written exactly once and in one order: the forecasts and
fits are compared bit for bit (tests/test_golden.py).
"""

from __future__ import annotations

import numpy as np
from scipy import special

from ..data.events import FunnelDataError

__all__ = ["SojournFamily", "LOGNORMAL", "WEIBULL", "FAMILIES", "family", "PRIORS"]

_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


class SojournFamily:
    """One time-in-stage family. Subclasses set the class attributes and the maths.

    Attributes
    ----------
    name : the user-facing name (``--sojourn``, ``FunnelModel(sojourn=...)``).
    code : the integer the simulator kernel branches on.
    params : posterior names of (location (stage, segment, exit), shape (stage, exit)).
    shape_variable : the free PyMC variable behind the shape, and ``shape_meaning`` what it
        means (for the message of a fit that fails its checks).
    prior_key, prior : the model_config entry of the shape's prior and its default.
    binned : whether the exits' likelihood needs the per-duration-bin statistics (the
        Weibull's does; the LogNormal's is exact from n, Σ log t and Σ (log t)²).
    """

    name: str
    code: int
    params: tuple[str, str]
    shape_variable: str
    shape_meaning: str
    prior_key: str
    prior: object
    binned: bool

    def __repr__(self) -> str:
        return f"<sojourn family {self.name}>"

    # ------------------------------------------------------------------ parametrisations

    def natural(self, loc, shape) -> tuple[np.ndarray, np.ndarray]:
        """Posterior draws (``params``) -> the natural parameters of derived and the kernel."""
        raise NotImplementedError

    def kernel_arrays(self, loc, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """From natural ``loc`` (D, S, G, S+2) and ``shape`` (D, S, S+2): the simulator's
        location, shape and first-stay shape (what its survival at the deal's age reads); the
        kernel branches on :attr:`code`."""
        raise NotImplementedError

    # ------------------------------------------------------------------ likelihood

    def pymc_shape(self, config: dict):
        """The shape per pair (PyMC, dims "pair"), with its prior from ``config``."""
        raise NotImplementedError

    @staticmethod
    def exit_terms(xp, n, sum_log_t, sum_log_t2, mean_log_t, loc, scale):
        """Σ log f(t) over n exits, in posterior parameters, from their statistics (Σ log t
        and Σ (log t)², or their mean log t); ``xp`` is numpy or pytensor.tensor."""
        raise NotImplementedError

    def pymc_exit_terms(self, d: dict, loc, scale):
        """:meth:`exit_terms` over the model's dense exit statistics ``d`` (see
        :func:`funnelsim.model.likelihood._unpacked`): loc (S, G, E), scale (S, E) tensors;
        the caller sums them."""
        raise NotImplementedError

    def pymc_survival(self, log_t, loc, scale):
        """S(t) at log t, posterior parameters, as a PyMC tensor (open stays)."""
        raise NotImplementedError

    def pymc_log_sf(self, log_t, loc, scale):
        """log S(t) at log t, posterior parameters, as a PyMC tensor, accurate far into the
        upper tail: the timed part of a pair with instant stays is truncated to t >= the log's
        resolution (see :mod:`funnelsim.model.likelihood`)."""
        raise NotImplementedError

    def log_sf(self, log_t, loc, scale) -> np.ndarray:
        """log S(t) at log t, posterior parameters, numpy (the pointwise likelihood)."""
        raise NotImplementedError

    def survival(self, log_t, loc, scale) -> np.ndarray:
        """S(t) at log t, posterior parameters, numpy (the pointwise likelihood)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ derived quantities (natural parameters)

    def z(self, t, loc, shape) -> np.ndarray:
        """The standardised time the cdf, sf and pdf read (t > 0)."""
        raise NotImplementedError

    def cdf(self, z) -> np.ndarray:
        raise NotImplementedError

    def sf(self, z) -> np.ndarray:
        raise NotImplementedError

    def pdf(self, t, z, shape) -> np.ndarray:
        raise NotImplementedError

    def log_median(self, loc, shape) -> np.ndarray:
        raise NotImplementedError

    def mean(self, loc, shape) -> np.ndarray:
        """E[T] (t = days + OFFSET_DAYS)."""
        raise NotImplementedError

    def truncated_mean(self, loc, shape, t_low) -> np.ndarray:
        """E[T | T >= t_low] (t = days + OFFSET_DAYS)."""
        raise NotImplementedError


class LogNormalFamily(SojournFamily):
    """log t ~ Normal(mu, sigma)."""

    name, code = "lognormal", 0
    params = ("mu", "sigma")
    shape_variable, shape_meaning = "sigma_t", "LogNormal scale of days in stage before {pair}"
    # LogNormal sigma of log t: HalfNormal(scale)
    prior_key, prior = "log_days_sigma", 1.0
    binned = False

    def natural(self, loc, shape):
        return loc, shape

    def kernel_arrays(self, loc, shape):
        return loc, shape, 1.0 / shape          # the survival at the age reads 1 / sigma

    def pymc_shape(self, config):
        import pymc as pm

        return pm.HalfNormal(self.shape_variable, config[self.prior_key], dims="pair")

    @staticmethod
    def exit_terms(xp, n, sum_log_t, sum_log_t2, mean_log_t, loc, scale):
        # exact from n, Σ log t, Σ (log t)²
        return (-n * (xp.log(scale) + _LOG_SQRT_2PI) - sum_log_t
                - (sum_log_t2 - 2 * loc * sum_log_t + n * loc**2) / (2 * scale**2))

    def pymc_exit_terms(self, d, loc, scale):
        import pytensor.tensor as pt

        return self.exit_terms(pt, d["exit_n"], d["exit_sum_log_t"], d["exit_sum_log_t2"], None, loc,
                               scale[:, None, :])

    def pymc_survival(self, log_t, loc, scale):
        import pytensor.tensor as pt

        return 0.5 * pt.erfc((log_t - loc) / (scale * np.sqrt(2.0)))

    def survival(self, log_t, loc, scale):
        return special.ndtr(-(log_t - loc) / scale)

    def pymc_log_sf(self, log_t, loc, scale):
        from pymc.distributions.dist_math import normal_lccdf

        return normal_lccdf(loc, scale, log_t)

    def log_sf(self, log_t, loc, scale):
        return special.log_ndtr(-(log_t - loc) / scale)

    def z(self, t, loc, shape):
        return (np.log(t) - loc) / shape

    def cdf(self, z):
        return special.ndtr(z)

    def sf(self, z):
        return special.ndtr(-z)

    def pdf(self, t, z, shape):
        return np.exp(-0.5 * z**2) / (np.sqrt(2 * np.pi) * shape * t)

    def log_median(self, loc, shape):
        return loc

    def mean(self, loc, shape):
        return np.exp(loc + 0.5 * shape**2)

    def truncated_mean(self, loc, shape, t_low):
        a = (np.log(t_low) - loc) / shape
        # exp(mu + sigma^2 / 2) Phi(sigma - a) / Phi(-a), in logs: finite far into the tail
        return np.exp(loc + 0.5 * shape**2 + special.log_ndtr(shape - a) - special.log_ndtr(-a))


class WeibullFamily(SojournFamily):
    """t ~ Weibull(shape k, scale lambda); the posterior holds log lambda."""

    name, code = "weibull", 1
    params = ("log_scale", "shape_k")
    shape_variable, shape_meaning = "log_shape", "Weibull log shape of days in stage before {pair}"
    # Weibull log shape: Normal(mu, sigma)
    prior_key, prior = "weibull_log_shape", {"mu": 0.0, "sigma": 0.5}
    binned = True

    def natural(self, loc, shape):
        return np.exp(loc), shape

    def kernel_arrays(self, loc, shape):
        return loc, shape, shape

    def pymc_shape(self, config):
        import pymc as pm
        import pytensor.tensor as pt

        return pm.Deterministic(
            "shape", pt.exp(pm.Normal(self.shape_variable, **config[self.prior_key], dims="pair")), dims="pair")

    @staticmethod
    def exit_terms(xp, n, sum_log_t, sum_log_t2, mean_log_t, loc, scale):
        # Σ (t/λ)^k taken at the mean log t of the exits (per duration bin in the model)
        return n * (xp.log(scale) - scale * loc + (scale - 1) * mean_log_t - xp.exp(scale * (mean_log_t - loc)))

    def pymc_exit_terms(self, d, loc, scale):
        import pytensor.tensor as pt

        return self.exit_terms(pt, d["bin_exit_n"], None, None, d["bin_exit_log_t"], loc[:, :, None, :],
                               scale[:, None, None, :])

    def pymc_survival(self, log_t, loc, scale):
        import pytensor.tensor as pt

        return self._survival(pt, log_t, loc, scale)

    def survival(self, log_t, loc, scale):
        return self._survival(np, log_t, loc, scale)

    def pymc_log_sf(self, log_t, loc, scale):
        import pytensor.tensor as pt

        return -pt.exp(scale * (log_t - loc))                          # log S, S = exp(-(t/λ)^k)

    def log_sf(self, log_t, loc, scale):
        return -np.exp(scale * (log_t - loc))

    @staticmethod
    def _survival(xp, log_t, loc, scale):
        return xp.exp(-xp.exp(scale * (log_t - loc)))

    def z(self, t, loc, shape):
        return (t / loc) ** shape

    def cdf(self, z):
        return -np.expm1(-z)

    def sf(self, z):
        return np.exp(-z)

    def pdf(self, t, z, shape):
        return shape / t * z * np.exp(-z)

    def log_median(self, loc, shape):
        return np.log(loc) + np.log(np.log(2.0)) / shape

    def mean(self, loc, shape):
        return loc * special.gamma(1.0 + 1.0 / shape)

    def truncated_mean(self, loc, shape, t_low):
        # lambda Gamma(1 + 1/k) Q(1 + 1/k, x) / exp(-x), x = (t_low / lambda)^k (Q: upper regularised)
        x = (t_low / loc) ** shape
        a = 1.0 + 1.0 / shape
        return loc * special.gamma(a) * special.gammaincc(a, x) * np.exp(x)


LOGNORMAL = LogNormalFamily()
WEIBULL = WeibullFamily()
FAMILIES: dict[str, SojournFamily] = {f.name: f for f in (LOGNORMAL, WEIBULL)}
# the shape priors' defaults, by model_config key (see funnelsim.model.likelihood.DEFAULT_CONFIG)
PRIORS = {f.prior_key: f.prior for f in FAMILIES.values()}


def family(name) -> SojournFamily:
    """The family called ``name`` (a family passes through); FunnelDataError (a ValueError)
    naming the known ones otherwise."""
    if isinstance(name, SojournFamily):
        return name
    found = FAMILIES.get(name) if isinstance(name, str) else None
    if found is None:
        known = " or ".join(repr(n) for n in FAMILIES)
        raise FunnelDataError(f"unknown sojourn family {name!r}", hint=f"Use {known}.")
    return found
