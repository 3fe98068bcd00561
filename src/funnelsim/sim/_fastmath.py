"""The simulator's numeric building blocks, written so that the kernel's loops over draws
vectorise (numba's np.exp and np.log are libm calls, which stop them; branches are selects):
exp and log from float bits, the standard normal quantile (Acklam) and survival (a table),
and the counter-based random numbers (splitmix64 of a key and a counter).

All are ``inline="always"``: they are compiled into :func:`funnelsim.sim.kernel._simulate_chunk`
and cached with it (``cache=True``). numba's on-disk cache is keyed on the source file of the
cached function only (kernel.py), and it keeps the values of globals as they were at compile
time: after editing this file, or the family codes of :mod:`funnelsim.model.sojourn`, touch
kernel.py (or delete ``src/funnelsim/sim/__pycache__``) or an old compiled kernel is reused.
An installed package is new files, so users never meet this.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic
from scipy import special

# splitmix64 and the keys of the counter-based streams
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_K_DEAL = np.uint64(0xD1B54A32D192ED03)
_K_STEP = np.uint64(0x8CB92BA72F3D8DD7)
_LOW32 = np.uint64(0xFFFFFFFF)
_INV32 = 1.0 / 4294967296.0
_Z_LOW, _Z_HIGH, _Z_STEPS = -9.0, 38.0, 256          # table of P(Z > z), 1/256 apart
_SF_TABLE = special.ndtr(-(_Z_LOW + np.arange(int((_Z_HIGH - _Z_LOW) * _Z_STEPS) + 2) / _Z_STEPS))
_Z_TOP = float(_SF_TABLE.size - 2)                  # last position with a right neighbour


_LOG2E = 1.4426950408889634
_LN2_HIGH, _LN2_LOW = 6.93147180369123816490e-01, 1.90821492927058770002e-10   # ln 2 = high + low


@intrinsic
def _as_float(typingctx, bits):
    """The float64 whose bit pattern is the int64 ``bits``."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


@numba.njit(inline="always")
def _exp(x):
    """exp(x) for loops that vectorise (numba's np.exp is a libm call, which stops them):
    x = n ln 2 + r with |r| <= ln(2)/2, exp(r) by its Taylor series to r**12 (relative error
    below 1e-15, measured 4.4e-16), times 2**n built from its bits. x is clipped to
    [-708, 709], so no overflow and nothing below the smallest normal number."""
    x = min(max(x, -708.0), 709.0)
    n = np.floor(x * _LOG2E + 0.5)
    r = (x - n * _LN2_HIGH) - n * _LN2_LOW
    p = 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p * _as_float((np.int64(n) + 1023) << 52)


@intrinsic
def _as_int(typingctx, x):
    """The int64 with the bit pattern of the float64 ``x``."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.int64(types.float64), codegen


@numba.njit(inline="always")
def _log(x):
    """log(x) for a normal float x > 0, in loops that vectorise (numba's np.log is a libm
    call): x = 2**e * m with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(f), f = (m-1)/(m+1),
    by its series to f**17 (relative error below 1e-15)."""
    bits = _as_int(x)
    e = (bits >> 52) - 1023
    m = _as_float((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)     # in [1, 2)
    big = m > 1.4142135623730951
    m = m * 0.5 if big else m
    e = e + 1 if big else e
    f = (m - 1.0) / (m + 1.0)
    f2 = f * f
    series = 1.0 / 17.0
    series = series * f2 + 1.0 / 15.0
    series = series * f2 + 1.0 / 13.0
    series = series * f2 + 1.0 / 11.0
    series = series * f2 + 1.0 / 9.0
    series = series * f2 + 1.0 / 7.0
    series = series * f2 + 1.0 / 5.0
    series = series * f2 + 1.0 / 3.0
    series = series * f2 + 1.0
    return e * _LN2_HIGH + (e * _LN2_LOW + 2.0 * f * series)


@numba.njit(inline="always")
def _mix(x):
    """splitmix64 finaliser: a bijective 64-bit hash."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


@numba.njit(inline="always")
def _uniforms(key, step):
    """Two independent uniforms in (0, 1) for counter ``step`` of path ``key``."""
    x = _mix(key + np.uint64(step) * _K_STEP)
    return ((x >> np.uint64(32)) + 0.5) * _INV32, ((x & _LOW32) + 0.5) * _INV32


@numba.njit(inline="always")
def _is_central(p):
    """Is p in the central branch of Acklam's inverse normal CDF?"""
    return (p >= 0.02425) & (p <= 1.0 - 0.02425)


@numba.njit(inline="always")
def _ndtri_tail(p):
    """The tail branches of :func:`_normal_quantiles` (p < 0.02425 or p > 0.97575), branch-free; p is
    taken as at least 1e-300 (z > -37.05)."""
    low = p < 0.5
    q = np.sqrt(-2.0 * _log(max(p if low else 1.0 - p, 1e-300)))
    tail = (((((-7.784894002430293e-03 * q - 3.223964580411365e-01) * q - 2.400758277161838e+00) * q
              - 2.549732539343734e+00) * q + 4.374664141464968e+00) * q + 2.938163982698783e+00) / \
        ((((7.784695709041462e-03 * q + 3.224671290700398e-01) * q + 2.445134137142996e+00) * q
          + 3.754408661907416e+00) * q + 1.0)
    return tail if low else -tail


@numba.njit(inline="always")
def _ndtri_central(p):
    """The central branch of :func:`_normal_quantiles` (0.02425 <= p <= 0.97575)."""
    q = p - 0.5
    r = q * q
    return (((((-3.969683028665376e+01 * r + 2.209460984245205e+02) * r - 2.759285104469687e+02) * r
              + 1.383577518672690e+02) * r - 3.066479806614716e+01) * r + 2.506628277459239e+00) * q / \
        (((((-5.447609879822406e+01 * r + 1.615858368580409e+02) * r - 1.556989798598866e+02) * r
           + 6.680131188771972e+01) * r - 1.328068155288572e+01) * r + 1.0)


@numba.njit(inline="always")
def _normal_quantiles(na, prob, z, tails):
    """z[a] = the standard normal quantile of prob[a] for a < na, by Acklam's rational
    approximation (relative error < 1.2e-9): the central formula for all in a loop that
    vectorises, then the tail formula (log, square root: five times the cost) only for the
    values in the tails, listed in ``tails`` (work space, int)."""
    for a in range(na):
        z[a] = _ndtri_central(prob[a])
    nt = 0
    for a in range(na):
        tails[nt] = a
        nt += 0 if _is_central(prob[a]) else 1
    for t in range(nt):
        a = tails[t]
        z[a] = _ndtri_tail(prob[a])


@numba.njit(inline="always")
def _normal_sf(z):
    """P(Z > z), standard normal, interpolated linearly in a table 1/256 apart: relative error
    below 2e-6 for z < 3, below 1e-4 up to z = 8 and 1e-3 up to z = 20 (P < 3e-89). No
    branches (selects instead), so a loop over draws vectorises."""
    x = min(max((z - _Z_LOW) * _Z_STEPS, 0.0), _Z_TOP)
    k = int(x)
    value = _SF_TABLE[k] + (x - k) * (_SF_TABLE[k + 1] - _SF_TABLE[k])
    value = 1.0 if z <= _Z_LOW else value
    return 0.0 if z >= _Z_HIGH else value
