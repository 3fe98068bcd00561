"""Small Ibis expressions that give the same bits in every database funnelsim runs on
(DuckDB, PostgreSQL, Spark), where the obvious spelling does not.

- A boolean is not an integer everywhere: PostgreSQL refuses ``CAST(bool AS BIGINT)``, so
  counts of rows that meet a condition sum :func:`as_int`.
- ``ROUND`` of a double rounds half away from zero in DuckDB and Spark but half to even in
  PostgreSQL; :func:`rounded` spells half-away-from-zero out with ``FLOOR`` and ``CEIL``.
- Aggregates with an order (``first``/``last``), ``arbitrary`` and hashes of a row are missing
  in some; modules use a window, ``min`` of a value constant per group, or the row itself.
- Interpolated quantiles differ in the last bit between databases (and between builds of one):
  :func:`funnelsim.data.deals.amount_stats` fetches the order statistics and interpolates here.
"""

from __future__ import annotations

from fractions import Fraction

import ibis

__all__ = ["as_int", "rounded", "interpolate"]


def as_int(condition: ibis.BooleanValue) -> ibis.IntegerValue:
    """1 where ``condition`` holds, else 0 (null too): a boolean as an integer in any database."""
    return ibis.ifelse(condition, 1, 0)


def rounded(value: ibis.FloatingValue) -> ibis.IntegerValue:
    """``value`` rounded to the nearest integer, halves away from zero, in any database: the
    bits of DuckDB's ``ROUND`` (for every double but the one just below 0.5)."""
    return ibis.ifelse(value >= 0, (value + 0.5).floor(), (value - 0.5).ceil())


def interpolate(low: float, high: float, fraction: float) -> float:
    """The linear interpolation of a continuous quantile between two order statistics, as
    DuckDB computes it for doubles: ``low * (1 - fraction) + high * fraction`` with the first
    product fused into the addition (one rounding), done exactly here so every machine agrees."""
    return float(Fraction(low) * Fraction(1.0 - fraction) + Fraction(high * fraction))
