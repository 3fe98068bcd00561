"""Stays in stages, worked out by hand on tests/conftest.py's small log."""

import numpy as np
import pandas as pd
import pytest

from funnelsim.data.events import FunnelDataError, read_events
from funnelsim.data.spells import to_spells

EXPECTED = [  # deal, segment, stage, move, destination, days
    ("d1", "EU", "Lead", "next", "Qualified", 10.0),
    ("d1", "EU", "Qualified", "won", "Won", 30.0),
    ("d2", "US", "Lead", "skip", "Proposal", 2.0),
    ("d2", "US", "Proposal", "back", "Qualified", 2.0),
    ("d2", "US", "Qualified", "lost", "Lost", 11.0),   # repeated Qualified row on 01-10 ignored
    ("d4", "(blank)", "Lead", "censored", None, 14.625),  # 02-01 09:00 to the end of 02-15
    ("d5", "US", "Lead", "next", "Qualified", 0.0),
    ("d5", "US", "Qualified", "censored", None, 27.0),    # its move on 03-01 is hidden
]


def test_spells_by_hand(funnel, small_log):
    spells = to_spells(read_events(small_log, funnel), as_of="2024-02-15", segment_by="region")
    got = spells.to_pandas()
    # a censored stay has no destination: None under pandas 2, NaN in pandas 3's string dtype
    got = [(r.deal_id, r.segment, r.stage, r.move, None if pd.isna(r.destination) else r.destination, r.days)
           for r in got.itertuples()]
    assert got == EXPECTED
    assert spells.counts == {"deals": 5, "created_terminal": 1, "repeated_stage": 1, "spells": 8,
                             "open": 2, "went_back": 1, "zero_length": 1}
    assert len(spells.notes) == 4


def test_default_as_of_is_last_event_day(funnel, small_log):
    spells = to_spells(read_events(small_log, funnel))
    assert spells.as_of == pd.Timestamp("2024-03-01")
    frame = spells.to_pandas()
    assert set(frame["segment"]) == {"all"}
    d5 = frame[frame.deal_id == "d5"]
    assert d5["move"].tolist() == ["next", "next", "censored"]
    assert d5["days"].tolist() == [0.0, 41.0, 1.0]


def random_log(seed, n_deals=300):
    """A messy random log: skips, backward moves, repeats, ties, outcomes."""
    rng = np.random.default_rng(seed)
    stages = ["Lead", "Qualified", "Proposal"]
    rows = []
    for d in range(n_deals):
        t = pd.Timestamp("2024-01-01") + pd.Timedelta(hours=int(rng.integers(0, 24 * 200)))
        for _ in range(int(rng.integers(1, 6))):
            u = rng.random()
            stage = "Won" if u < 0.12 else "Lost" if u < 0.2 else stages[int(rng.integers(0, 3))]
            rows.append((f"d{d}", stage, t, float(rng.integers(1, 100)), "ab"[d % 2]))
            if stage in ("Won", "Lost"):
                break
            t += pd.Timedelta(hours=int(rng.integers(0, 24 * 30)))
    return pd.DataFrame(rows, columns=["deal_id", "stage", "timestamp", "amount", "region"])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_as_of_hides_the_future_exactly(funnel, seed):
    """The full log seen as of T gives exactly the spells of the log cut at T."""
    events = random_log(seed)
    full = read_events(events, funnel)
    for as_of in ("2024-02-01", "2024-04-15", "2024-07-01"):
        cut = events[events.timestamp < pd.Timestamp(as_of) + pd.Timedelta(days=1)]
        a = to_spells(full, as_of=as_of, segment_by="region").to_pandas()
        b = to_spells(read_events(cut, funnel), as_of=as_of, segment_by="region").to_pandas()
        assert len(a) > 20
        pd.testing.assert_frame_equal(a, b)


def test_every_stay_accounted_for(funnel):
    """Each non-repeated open-stage event starts exactly one spell."""
    events = random_log(7)
    spells = to_spells(read_events(events, funnel), segment_by="region")
    events = events.sort_values(["deal_id", "timestamp"], kind="stable")
    repeated = events.groupby("deal_id").stage.shift() == events.stage
    open_rows = events.stage.isin(funnel.stages) & ~repeated
    assert spells.counts["spells"] == int(open_rows.sum())
    assert spells.counts["repeated_stage"] == int(repeated.sum())
    assert spells.counts["open"] == int(events.groupby("deal_id").stage.last().isin(funnel.stages).sum())


def test_unknown_segment_column(funnel, small_log):
    with pytest.raises(FunnelDataError, match="no column 'regoin'.*Did you mean 'region'"):
        to_spells(read_events(small_log, funnel), segment_by="regoin")


def test_as_of_before_the_log_is_a_clear_error(funnel, small_log):
    with pytest.raises(FunnelDataError, match="no event on or before the as-of date 2023-12-31.*starts on 2024-01-01"):
        to_spells(read_events(small_log, funnel), as_of="2023-12-31")
