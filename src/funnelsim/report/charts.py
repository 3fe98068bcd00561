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
