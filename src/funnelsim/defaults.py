"""Defaults shared by the Python API and the command line: one home for each."""

from __future__ import annotations

__all__ = ["HORIZON_DAYS", "BAND", "DRAWS", "TUNE", "DRIFT_EVERY"]

HORIZON_DAYS = 90          # days ahead a forecast, what-if or backtest looks by default (a quarter)
BAND = (0.1, 0.5, 0.9)     # the quantiles every revenue band reports: P10, P50, P90
DRAWS = 1000               # draws per chain of every fit by default (fit, forecast, whatif, report, backtest)
TUNE = 300                 # tuning steps per chain of every fit by default
DRIFT_EVERY = "month"      # entry cohorts a fit's conversion and time in stage drift over (None: a funnel that stays
                           # as it is); chosen by the rolling-origin backtests (README, "A funnel that drifts")
