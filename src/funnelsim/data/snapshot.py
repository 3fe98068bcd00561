"""The CRM as it was at the end of a day: the one backbone every command, backtest and
notebook starts from.

A :class:`Snapshot` holds an event log, the as-of day, the segment column and the history
window, and builds on first use (then keeps) everything the model and the simulator take:

- ``spells``: each deal's stays in stages (:mod:`funnelsim.data.spells`);
- ``stage_stats``: the sufficient statistics the model fits (:mod:`funnelsim.data.stats`);
- ``amounts``: won-amount statistics per segment (:mod:`funnelsim.data.deals`);
- ``open_deals``: the open pipeline, one row per deal;
- ``new_deals``: the weekly inflow of new deals (:mod:`funnelsim.sim.inflow`).

"As of a day" means the end of that day: events earlier than ``cutoff`` (midnight after
``as_of``) are visible, later ones hidden. For backtests and the demo, :meth:`Snapshot.realised`
says what actually happened in the days after the cut-off, read from the same log.

    snap = Snapshot.read("crm.csv", FunnelDefinition("Lead,Qualified,Proposal", "Won", "Lost"),
                         as_of="2024-06-30", segment_by="region")
    model = FunnelModel.from_snapshot(snap)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import ibis
import numpy as np
import pandas as pd

from ..defaults import DRIFT_EVERY
from .events import EventLog, FunnelDefinition, read_events
from .spells import Spells, end_of_day, resolve_as_of, to_spells

__all__ = ["Snapshot", "Realised"]


@dataclass(frozen=True)
class Realised:
    """Revenue won (currency of the log) in ``days`` days after a snapshot's cut-off.

    ``pipeline``: by the deals open at the cut-off (a won deal is worth its won row's amount,
    else its last amount at the cut-off, else ``deal_value``, else 0); ``new``: by deals created
    in those days (created won included; won row's amount, else ``deal_value``, else 0);
    ``all``: by every deal won in those days (won row's amount, else ``deal_value``, else 0).
    """

    days: int
    pipeline: float
    new: float
    all: float

    @property
    def total(self) -> float:
        """The open pipeline's and the new deals' revenue: what a forecast with new deals
        forecasts."""
        return self.pipeline + self.new


class Snapshot:
    """The CRM as it was at the end of ``as_of`` (a day; default: the last event's day).

    Parameters
    ----------
    log : EventLog
        From :func:`funnelsim.data.events.read_events` (or use :meth:`read`).
    as_of : date-like, optional
        The day to stand on. Default: the day of the log's last event (an error if that is
        after today).
    segment_by : str, optional
        Attribute column whose value on a deal's first event (or latest with a value, when the
        log was read with ``segment_from="last"``) names its segment.
    history_days : float, optional
        Learn conversion and time in stage only from stays that began in these days before
        the cut-off (a funnel that changes over time). Default: all history.
    every : "week", "month", "quarter" or None
        Split the statistics by entry cohort, the calendar period a stay begins in, for a
        model whose conversion and time in stage drift over cohorts. Default
        :data:`funnelsim.defaults.DRIFT_EVERY` ("month", as the command line's ``--drift``);
        None: a funnel that stays as it is. A history of fewer cohorts than a drift can be
        learnt from is fitted without one, with a warning (:meth:`drift_or_none`).
    """

    def __init__(self, log: EventLog, as_of=None, *, segment_by: str | None = None,
                 history_days: float | None = None, every: str | None = DRIFT_EVERY):
        from .stats import cohort_of

        log.check_segment(segment_by)
        self.log = log
        self.as_of: pd.Timestamp = resolve_as_of(log, as_of)
        self.segment_by = segment_by
        self.history_days = None if history_days is None else float(history_days)
        self.every = cohort_of(every)

    @classmethod
    def read(cls, events, funnel: FunnelDefinition, *, as_of=None, segment_by: str | None = None,
             history_days: float | None = None, columns: dict[str, str] | None = None, dayfirst: bool = False,
             decimal: str = ".", encoding: str | None = None, sheet: str | int | None = None,
             segment_from: str = "first", every: str | None = DRIFT_EVERY) -> Snapshot:
        """Read an event log (path, DataFrame or Ibis table; see
        :func:`funnelsim.data.events.read_events` for ``columns``, ``dayfirst``, ``decimal``,
        ``encoding``, ``sheet`` and ``segment_from``) and stand on ``as_of``."""
        log = read_events(events, funnel, columns=columns, dayfirst=dayfirst, decimal=decimal, encoding=encoding,
                          sheet=sheet, segment_from=segment_from)
        return cls(log, as_of, segment_by=segment_by, history_days=history_days, every=every)

    def drift_or_none(self) -> str | None:
        """With ``every`` set, a history of fewer entry cohorts than a drift can be learnt from
        (:data:`funnelsim.model.drift.MIN_COHORTS`) makes this a funnel that stays as it is
        (``every`` None); returns a note saying so, else None. Call before ``stage_stats``."""
        from ..model.drift import MIN_COHORTS
        from .stats import COHORT_PERIODS

        if self.every is None:
            return None
        t = self.spells.table
        if self.history_start is not None:
            t = t.filter(t.entered >= ibis.timestamp(self.history_start))
        first = t.entered.min().execute()
        if first is None or pd.isna(first):
            return None
        periods = len(pd.period_range(pd.Period(first, COHORT_PERIODS[self.every]),
                                      pd.Period(self.as_of, COHORT_PERIODS[self.every])))
        if periods >= MIN_COHORTS:
            return None
        every, self.every = self.every, None
        return (f"the history holds stays begun in {periods} {every}(s); a drifting funnel needs {MIN_COHORTS}, so "
                f"this fit is of a funnel that stays as it is (--drift none)")

    def at(self, as_of) -> Snapshot:
        """The same log, segments and history window, standing on another day."""
        return Snapshot(self.log, as_of, segment_by=self.segment_by, history_days=self.history_days, every=self.every)

    def __repr__(self) -> str:
        window = "" if self.history_days is None else f", history_days={self.history_days:g}"
        return (f"Snapshot({self.log.source!r}, as_of={self.as_of.date()}, segment_by={self.segment_by!r}"
                f"{window})")

    # ------------------------------------------------------------------ what the CRM showed

    @property
    def funnel(self) -> FunnelDefinition:
        return self.log.funnel

    @property
    def cutoff(self) -> pd.Timestamp:
        """Midnight after ``as_of``: events earlier than this are visible."""
        return end_of_day(self.as_of)

    @property
    def history_start(self) -> pd.Timestamp | None:
        """The earliest entry time of a stay the model learns from (None: all history)."""
        return None if self.history_days is None else self.cutoff - pd.Timedelta(days=self.history_days)

    @property
    def notes(self) -> list[str]:
        """What reading the log and building the stays changed or counted, for the user."""
        return [*self.log.notes, *self.spells.notes]

    @cached_property
    def spells(self) -> Spells:
        return to_spells(self.log, as_of=self.as_of, segment_by=self.segment_by)

    @cached_property
    def stage_stats(self):
        """:class:`funnelsim.data.stats.StageStats` of the stays in the history window, by entry
        cohort with ``every`` (none when the history is too short for a drift: a warning says so)."""
        import warnings

        from .stats import to_stage_stats

        short = self.drift_or_none()
        if short:
            warnings.warn(short, UserWarning, stacklevel=2)
        return to_stage_stats(self.spells, self.history_days, self.every)

    @cached_property
    def amounts(self) -> pd.DataFrame:
        """Won-amount statistics per segment (:func:`funnelsim.data.deals.amount_stats`)."""
        from .deals import amount_stats

        return amount_stats(self.log, self.spells)

    @cached_property
    def open_deals(self) -> pd.DataFrame:
        """Deals open at the cut-off (:func:`funnelsim.data.deals.open_deals`)."""
        from .deals import open_deals

        return open_deals(self.log, self.spells)

    @cached_property
    def new_deals(self):
        """The weekly inflow of new deals as of the cut-off
        (:class:`funnelsim.sim.inflow.NewDeals`; ``.empty`` when the log covers under two weeks)."""
        from ..sim.inflow import NewDeals

        return NewDeals.from_log(self.log, self.spells)

    # ------------------------------------------------------------------ what happened after

    def realised(self, days: int, deal_value: float | None = None) -> Realised:
        """Revenue won in the ``days`` days after the cut-off (see :class:`Realised`): the
        truth a forecast made from this snapshot is scored against."""
        return Realised(int(days), pipeline=self.won_revenue(self.open_deals, days, deal_value),
                        new=self._new_deal_revenue(days, deal_value), all=self._all_won_revenue(days, deal_value))

    def won_revenue(self, deals: pd.DataFrame, days: int, deal_value: float | None = None) -> float:
        """Revenue of ``deals`` (rows with ``deal_id`` and ``amount``, the amount to fall back
        on) won in the ``days`` days after the cut-off: the won row's amount, else the deal's
        ``amount``, else ``deal_value``, else 0."""
        return math.fsum(self._won_values(deals, days, deal_value)["revenue"])   # exactly rounded, whatever the order

    def won_by_deal(self, deals: pd.DataFrame, days: int, deal_value: float | None = None) -> pd.DataFrame:
        """Per deal of ``deals`` (as :meth:`won_revenue`), in their order: ``won`` (a won event in
        the ``days`` days after the cut-off) and ``revenue`` (currency; 0 if not won)."""
        rows = self._won_values(deals, days, deal_value)
        ids = deals["deal_id"].astype(str)
        revenue = rows.groupby("deal_id")["revenue"].sum()
        return pd.DataFrame({"deal_id": ids.to_numpy(), "won": ids.isin(rows["deal_id"]).to_numpy(),
                             "revenue": ids.map(revenue).fillna(0.0).to_numpy()})

    def _won_values(self, deals: pd.DataFrame, days: int, deal_value: float | None) -> pd.DataFrame:
        """The won rows (``deal_id``, ``revenue``) of ``deals`` in the ``days`` days after the cut-off."""
        if deals.empty:
            return pd.DataFrame({"deal_id": pd.Series(dtype=str), "revenue": pd.Series(dtype=float)})
        ids = ibis.memtable(pd.DataFrame({"deal_id": deals["deal_id"].astype(str)}))
        rows = self._won_rows(days).join(ids, "deal_id").select("deal_id", "amount").to_pandas()
        last = deals.assign(deal_id=deals["deal_id"].astype(str)).set_index("deal_id")["amount"]
        value = rows["amount"].astype(float).fillna(rows["deal_id"].map(last))
        if deal_value is not None:
            value = value.fillna(float(deal_value))
        return pd.DataFrame({"deal_id": rows["deal_id"].astype(str), "revenue": value.fillna(0.0).astype(float)})

    def _won_rows(self, days: int):
        """Won events in the ``days`` days after the cut-off (an Ibis table)."""
        t = self.log.table
        begin = self.cutoff
        return t.filter(t.stage.isin(list(self.funnel.won)) & (t.timestamp >= ibis.timestamp(begin))
                        & (t.timestamp < ibis.timestamp(begin + pd.Timedelta(days=days))))

    def _all_won_revenue(self, days: int, deal_value: float | None) -> float:
        value = self._won_rows(days).select("amount").to_pandas()["amount"].astype(float)
        if deal_value is not None:
            value = value.fillna(float(deal_value))
        return math.fsum(value.fillna(0.0))

    def _new_deal_revenue(self, days: int, deal_value: float | None) -> float:
        """Won by deals whose first event falls in the ``days`` days after the cut-off."""
        t = self.log.table
        begin, end = self.cutoff, self.cutoff + pd.Timedelta(days=days)
        created = t.group_by("deal_id").aggregate(created=t.timestamp.min())
        new_ids = created.filter((created.created >= ibis.timestamp(begin)) & (created.created < ibis.timestamp(end)))
        ids = new_ids.select("deal_id").to_pandas()
        return self.won_revenue(ids.assign(amount=np.nan), days, deal_value)
