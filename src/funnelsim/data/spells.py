"""Turn an event log into stays in stages ("spells").

A spell is one stay of one deal in one open stage: when it entered, when it left,
where it went, and how many days it stayed. Where it went (``move``) is one of

- ``next``     the next open stage,
- ``skip``     a later open stage, skipping at least one,
- ``back``     an earlier open stage,
- ``won`` / ``lost``  an outcome,
- ``censored`` nothing yet: the deal is still in the stage at ``as_of``; ``days``
  is then its age in the stage.

``as_of`` is a date and means *the end of that day*: every event after it is hidden
(so the log cut at ``as_of`` gives exactly the same spells), and open stays are aged
up to midnight after it. Durations are in days (fractions kept when the log has
times of day). Edge cases are kept and counted, never silently dropped:

- a deal created directly as won or lost has no stay (counted as
  ``created_terminal``);
- a row that repeats the stage the deal is already in does not start a new stay
  (counted as ``repeated_stage``; the stay continues from the first entry);
- a deal that comes back to a stage later starts a new stay there (a ``back`` move);
- a stay of zero days (two events with the same time) is kept (``zero_length``).

Everything here is an Ibis expression; it runs where the events live.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ibis
import pandas as pd

from ._portable import as_int, rounded
from .events import EventLog, FunnelDefinition, _materialise, event_order

__all__ = ["Spells", "to_spells", "resolve_as_of", "end_of_day", "deal_segment", "segment_note", "MOVES",
           "NO_SEGMENT"]

MOVES = ("next", "skip", "back", "won", "lost", "censored")
NO_SEGMENT = "all"
BLANK_SEGMENT = "(blank)"
SECONDS_PER_DAY = 86_400.0


@dataclass
class Spells:
    """Stays in stages as an Ibis table, with the cut date and edge-case counts.

    ``table`` columns: ``deal_id``, ``segment``, ``stage``, ``stage_index``,
    ``entered``, ``left`` (null if censored), ``destination`` (stage, won or lost
    label; null if censored), ``move`` (see module doc), ``days`` (float, days).
    """

    table: ibis.Table
    funnel: FunnelDefinition
    as_of: pd.Timestamp
    segment_by: str | None
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    segment_from: str = "first"  # the deal's row its segment is read from (EventLog.segment_from)
    filled_later: int = 0        # deals whose segment is blank on their first row but not on a later one

    @property
    def cutoff(self) -> pd.Timestamp:
        """The end of the as-of day: events before it are visible."""
        return end_of_day(self.as_of)

    def to_pandas(self) -> pd.DataFrame:
        """All spells as a DataFrame ordered by deal and entry (small logs only)."""
        frame = self.table.order_by(["deal_id", "entered", "stage_index"]).to_pandas()
        # Ibis returns a timestamp column with nulls at another resolution, and Spark ns: keep both in us
        for column in ("entered", "left"):
            frame[column] = frame[column].astype("datetime64[us]")
        return frame

    def duration_counts(self, resolution_days: float = 1 / 24) -> pd.DataFrame:
        """Spells grouped by (stage, segment, move, destination, days rounded to
        ``resolution_days``): the small table the funnel estimators need."""
        t = self.table
        days = rounded(t.days / resolution_days).cast("float64") * resolution_days
        grouped = (t.mutate(days=days)
                   .group_by(["stage", "stage_index", "segment", "move", "destination", "days"])
                   .agg(n=ibis._.count()))
        return grouped.to_pandas().sort_values(["stage_index", "segment", "move", "days"],
                                               ignore_index=True)


def end_of_day(day) -> pd.Timestamp:
    """Midnight after ``day``: "as of a date" means the end of that day, so an event is
    visible when it is earlier than this. The one place that adds the day."""
    return pd.Timestamp(day).normalize() + pd.Timedelta(days=1)


def resolve_as_of(log: EventLog, as_of=None) -> pd.Timestamp:
    """The cut date: ``as_of`` as a date, or the date of the log's last event."""
    if as_of is None:
        from .events import refuse_future_events

        last = log.table.timestamp.max().execute()
        refuse_future_events(log, last)  # an event dated after today must not become the default
        return pd.Timestamp(last).normalize()
    try:
        return pd.Timestamp(as_of).normalize()
    except (ValueError, TypeError):
        from .events import FunnelDataError

        raise FunnelDataError("cannot read the as-of date", column="as_of", value=str(as_of),
                              hint="Give it as YYYY-MM-DD.") from None


def to_spells(log: EventLog, as_of=None, segment_by: str | None = None) -> Spells:
    """Each deal's history as stays in stages, as the CRM looked at the end of ``as_of``.

    Parameters
    ----------
    log : EventLog
        From :func:`funnelsim.data.events.read_events`.
    as_of : date-like, optional
        Hide every event after this day; open stays are aged to its end. Default:
        the day of the last event in the log (a FunnelDataError if that is after today).
    segment_by : str, optional
        Attribute column whose value on a deal's first event (or latest with a value, with the
        log's ``segment_from="last"``) names its segment (blank values become ``"(blank)"``).
        Without it every deal is in ``"all"``. Reading from the first row, the deals whose
        first row is blank but a later visible row is not are counted (``filled_later``) and
        named in a note suggesting ``segment_from="last"``.
    """
    log.check_segment(segment_by)
    as_of = resolve_as_of(log, as_of)
    cutoff = ibis.timestamp(end_of_day(as_of))
    funnel = log.funnel
    visible = log.table.filter(log.table.timestamp < cutoff)
    if not int(visible.count().execute()):
        from .events import FunnelDataError

        first = pd.Timestamp(log.table.timestamp.min().execute())
        raise FunnelDataError(f"no event on or before the as-of date {as_of.date()}", source=log.source,
                              column="as_of", hint=f"The log starts on {first.date()}; choose a later date.")

    by_deal = ibis.window(group_by="deal_id", order_by=event_order())
    segment_from = log.segment_from
    events = visible.mutate(segment=deal_segment(visible, segment_by, segment_from), _previous=visible.stage.lag().over(by_deal),
                            _position=ibis.row_number().over(by_deal))
    kept = events.filter(events._previous.isnull() | (events._previous != events.stage))
    by_deal = ibis.window(group_by="deal_id", order_by=event_order())
    kept = kept.mutate(_next=kept.stage.lead().over(by_deal), left=kept.timestamp.lead().over(by_deal))
    kept = _materialise(kept.select("deal_id", "segment", "stage", "timestamp", "_position", "_next", "left"))

    stays = _classify(kept.filter(kept.stage.isin(list(funnel.stages))), funnel, cutoff)
    spells = Spells(stays, funnel, as_of, segment_by, segment_from=segment_from)
    spells.counts = _edge_counts(visible, kept, stays, funnel)
    spells.notes = _notes(spells.counts)
    if segment_by and segment_from == "first":
        spells.filled_later = _filled_later(events, segment_by)
        if spells.filled_later:
            spells.notes.append(segment_note(spells.filled_later, segment_by))
    return spells


def deal_segment(events: ibis.Table, segment_by: str | None, segment_from: str = "first") -> ibis.Value:
    """Each event's deal segment: the ``segment_by`` value on the deal's first event, or with
    ``segment_from="last"`` its latest non-blank value among ``events`` (blank: ``"(blank)"``),
    or ``"all"`` without ``segment_by``. Every module names segments this way."""
    if not segment_by:
        return ibis.literal(NO_SEGMENT)
    if segment_from == "last":  # non-blank rows first, the latest of them first: a window, in any database
        value = _segment_value(events, segment_by)
        order = [as_int(value.isnull()), *(ibis.desc(events[key]) for key in event_order())]
        return value.first().over(ibis.window(group_by="deal_id", order_by=order)).fill_null(BLANK_SEGMENT)
    by_deal = ibis.window(group_by="deal_id", order_by=event_order())
    first_value = events[segment_by].cast("string").first().over(by_deal)
    return first_value.strip().nullif("").fill_null(BLANK_SEGMENT)


def _segment_value(events: ibis.Table, segment_by: str) -> ibis.StringValue:
    """The segment column of each event as text, null when blank."""
    return events[segment_by].cast("string").strip().nullif("")


def _filled_later(events: ibis.Table, segment_by: str) -> int:
    """Deals whose segment (read from the first row) is blank though a later row has a value."""
    filled = as_int(_segment_value(events, segment_by).notnull())
    deals = events.group_by("deal_id").aggregate(blank=as_int(events.segment == BLANK_SEGMENT).min(),
                                                 filled=filled.max())
    found = deals.aggregate(n=as_int((deals.blank == 1) & (deals.filled == 1)).sum()).to_pandas()["n"].iloc[0]
    return int(0 if pd.isna(found) else found)


def segment_note(deals: int, segment_by: str) -> str:
    """The note for deals whose ``segment_by`` is blank on their first row but filled later."""
    return (f"{deals:,} deal(s) have no {segment_by!r} on their first row but do on a later one; their segment "
            f"is '{BLANK_SEGMENT}'. To read it from a deal's latest row with a value, pass --segment-from last "
            "(segment_from='last')")


def _classify(stays: ibis.Table, funnel: FunnelDefinition, cutoff) -> ibis.Table:
    index = {stage: i for i, stage in enumerate(funnel.stages)}
    stage_index = stays.stage.cases(*index.items(), else_=ibis.null("int64")).cast("int64")
    next_index = stays._next.cases(*index.items(), else_=ibis.null("int64")).cast("int64")
    won, lost = list(funnel.won), list(funnel.lost)
    destination = (ibis.cases((stays._next.isin(won), funnel.won_name),
                              (stays._next.isin(lost) if lost else ibis.literal(False), funnel.lost_name),
                              else_=stays._next))
    move = ibis.cases(
        (stays._next.isnull(), "censored"),
        (stays._next.isin(won), "won"),
        (stays._next.isin(lost) if lost else ibis.literal(False), "lost"),
        (next_index == stage_index + 1, "next"),
        (next_index > stage_index + 1, "skip"),
        else_="back",
    )
    end = stays.left.fill_null(cutoff)
    days = (end.epoch_seconds() - stays.timestamp.epoch_seconds()).cast("float64") / SECONDS_PER_DAY
    return stays.select(
        "deal_id", "segment", "stage", stage_index=stage_index, entered=stays.timestamp,
        left=stays.left, destination=destination, move=move, days=days,
    )


def _edge_counts(visible: ibis.Table, kept: ibis.Table, stays: ibis.Table,
                 funnel: FunnelDefinition) -> dict[str, int]:
    terminal = kept.stage.isin(list(funnel.won + funnel.lost))
    deal_level = kept.aggregate(
        deals=as_int(kept._position == 0).sum(),
        created_terminal=as_int((kept._position == 0) & terminal).sum(),
        events=kept.count(),
    ).to_pandas().iloc[0]
    deal_level["repeated_stage"] = int(visible.count().execute()) - int(deal_level.pop("events"))
    spell_level = stays.aggregate(
        spells=stays.count(),
        open=as_int(stays.move == "censored").sum(),
        went_back=as_int(stays.move == "back").sum(),
        zero_length=as_int((stays.days == 0) & (stays.move != "censored")).sum(),
    ).to_pandas().iloc[0]
    merged = {**deal_level.to_dict(), **spell_level.to_dict()}
    return {k: int(0 if pd.isna(v) else v) for k, v in merged.items()}


def _notes(counts: dict[str, int]) -> list[str]:
    notes = []
    if counts["created_terminal"]:
        notes.append(f"{counts['created_terminal']} deal(s) were created directly as won or lost "
                     "(no stay in any stage; they count in no stage's conversion)")
    if counts["repeated_stage"]:
        notes.append(f"{counts['repeated_stage']} row(s) repeat the stage the deal was already in; "
                     "the stay continues from the first entry")
    if counts["zero_length"]:
        notes.append(f"{counts['zero_length']} stay(s) lasted zero time (two events at the same moment)")
    if counts["went_back"]:
        notes.append(f"{counts['went_back']} stay(s) ended by going back to an earlier stage")
    return notes
