"""The Olist marketing funnel (real data) end to end: conversion, loading, spells, table.

Every expected number is computed here from the raw CSVs with plain pandas, never with
funnelsim or the conversion in funnelsim.data.olist. The data lives outside the repo
(see /work/shared/data/olist/README.md); the tests skip when it is absent.
"""


import numpy as np
import pandas as pd
import pytest

from funnelsim.data.events import FunnelDataError, FunnelDefinition, read_events
from funnelsim.data.spells import to_spells
from funnelsim.report.funnel import funnel_table

from .olist import ENV_VAR, olist_data_path, olist_events

# $FUNNELSIM_OLIST_DIR, else Path(__file__).resolve().parents[2] / "shared" / "data" / "olist"
DATA = olist_data_path()
MQL_CSV, DEALS_CSV = DATA / "marketing_qualified_leads.csv", DATA / "closed_deals.csv"
if not (MQL_CSV.is_file() and DEALS_CSV.is_file()):
    pytest.skip(f"Olist data not found in {DATA} (set ${ENV_VAR} to the folder holding "
                f"{MQL_CSV.name} and {DEALS_CSV.name})", allow_module_level=True)

FUNNEL = FunnelDefinition(stages=("MQL",), won=("Won",), lost=())
DAY = pd.Timedelta(days=1)
EARLIER = "2018-03-31"


# --------------------------------------------------------------------------- raw truth
@pytest.fixture(scope="module")
def raw():
    """One row per MQL with its origin (blank -> "(blank)", as funnelsim names it),
    contact and won times parsed with explicit day-first formats (won NaT if never won)."""
    mql = pd.read_csv(MQL_CSV, dtype=str, keep_default_na=False)
    deals = pd.read_csv(DEALS_CSV, dtype=str, keep_default_na=False)
    assert mql["mql_id"].is_unique and deals["mql_id"].is_unique
    frame = mql.merge(deals[["mql_id", "won_date"]], on="mql_id", how="left", validate="1:1")
    frame["segment"] = frame["origin"].str.strip().replace("", "(blank)")
    frame["contact"] = pd.to_datetime(frame["first_contact_date"], format="%d-%m-%Y")
    frame["won"] = pd.to_datetime(frame["won_date"], format="%d-%m-%Y %H:%M")  # NaN -> NaT
    frame.attrs["closed_deals"] = len(deals)
    frame.attrs["orphans"] = sorted(set(deals["mql_id"]) - set(mql["mql_id"]))
    return frame


@pytest.fixture(scope="module")
def converted():
    return olist_events(DATA)


@pytest.fixture(scope="module")
def log(converted):
    return read_events(converted[0], FUNNEL, dayfirst=True)


@pytest.fixture(scope="module")
def spells(log):
    return to_spells(log, segment_by="origin")


@pytest.fixture(scope="module")
def table(spells, log):
    return funnel_table(spells, notes=log.notes).table


def stage_row(table, segment=None, stage="MQL"):
    rows = table[(table["stage"] == stage)
                 & (table["segment"].isna() if segment is None else table["segment"] == segment)]
    assert len(rows) == 1, (stage, segment)
    return rows.iloc[0]


# --------------------------------------------------------------------------- tests
def test_raw_files_are_the_documented_ones(raw):
    assert len(raw) == 8000
    assert raw.attrs["closed_deals"] == 842
    assert raw["won"].notna().sum() == 842  # every closed deal matches an MQL
    assert raw.attrs["orphans"] == []
    assert (raw["segment"] == "(blank)").sum() == 60


def test_deals_won_and_open(raw, converted, log, spells, table):
    events, report = converted
    n_mql, n_won = len(raw), int(raw["won"].notna().sum())
    assert (report["mqls"], report["closed_deals"], report["won_events"]) == (n_mql, 842, n_won)
    assert report["won_without_mql"] == []  # nothing dropped: won == all 842 closed deals
    assert len(events) == n_mql + n_won
    assert log.to_pandas()["amount"].isna().all()  # amounts deliberately left empty
    assert spells.counts["deals"] == n_mql == 8000
    assert spells.counts["spells"] == n_mql  # one MQL stay per lead
    assert spells.counts["created_terminal"] == 0
    assert spells.counts["open"] == n_mql - n_won
    mql = stage_row(table)
    assert (mql["entered"], mql["won"], mql["open"]) == (8000, 842, 8000 - 842)
    assert (mql["advanced"], mql["went_back"]) == (0, 0)
    assert stage_row(table, stage="Won")["entered"] == 842


def test_per_origin_counts_match_raw(raw, table):
    expected = raw.groupby("segment").agg(entered=("mql_id", "size"), won=("won", "count"))
    expected["open"] = expected["entered"] - expected["won"]
    got = table[(table["stage"] == "MQL") & table["segment"].notna()].set_index("segment")
    assert sorted(got.index) == sorted(expected.index)
    got = got.loc[expected.index, ["entered", "won", "open"]].astype("int64")
    # the index holds the same labels; its dtype is object or pandas 3's str depending on the path
    pd.testing.assert_frame_equal(got, expected.astype("int64"), check_names=False, check_index_type=False)
    won_rows = table[(table["stage"] == "Won") & table["segment"].notna()].set_index("segment")
    assert won_rows.loc[expected.index, "entered"].tolist() == expected["won"].tolist()


def test_won_before_first_contact_is_reported_and_handled(raw, converted, spells):
    early = raw[raw["won"] < raw["contact"]]
    assert len(early) == 1  # the public file has exactly one such deal
    report = converted[1]
    assert [d["mql_id"] for d in report["won_before_contact"]] == early["mql_id"].tolist()
    [entry] = report["won_before_contact"]
    row = early.iloc[0]
    assert (entry["first_contact_date"], entry["won_date"]) == (row["first_contact_date"], row["won_date"])
    assert entry["days_early"] == pytest.approx((row["contact"] - row["won"]) / DAY, abs=1e-3)
    # handled by moving the win to the contact date: won, after a zero-length MQL stay
    stay = spells.to_pandas().set_index("deal_id").loc[row["mql_id"]]
    assert (stay["move"], stay["days"], stay["entered"]) == ("won", 0.0, row["contact"])
    assert spells.counts["zero_length"] == 1


def test_raw_dates_make_the_loader_complain_naming_the_deal(raw):
    events, report = olist_events(DATA, won_before_contact="keep")
    early_id = raw.loc[raw["won"] < raw["contact"], "mql_id"].iloc[0]
    assert report["won_before_contact"][0]["mql_id"] == early_id
    with pytest.raises(FunnelDataError, match="has an event after it was won or lost") as info:
        read_events(events, FUNNEL, dayfirst=True)
    assert early_id in str(info.value)
    assert info.value.row is not None and events.iloc[info.value.row - 1]["deal_id"] == early_id


def test_dropping_the_early_win_instead_is_accounted_for(raw):
    events, report = olist_events(DATA, won_before_contact="drop")
    n_early = int((raw["won"] < raw["contact"]).sum())
    assert report["won_events"] == 842 - n_early
    counts = to_spells(read_events(events, FUNNEL, dayfirst=True)).counts
    assert counts["deals"] == 8000 and counts["open"] == 8000 - 842 + n_early


def test_no_lost_events(converted, table):
    assert set(converted[0]["stage"]) == {"MQL", "Won"}
    mql = table[table["stage"] == "MQL"]
    assert (mql["lost"] == 0).all()
    assert (mql["p_lost"] == 0).all()


def test_aalen_johansen_conversion_at_least_naive(table):
    mql = table[table["stage"] == "MQL"]
    naive = mql["won"].astype(float) / mql["entered"].astype(float)
    np.testing.assert_allclose(mql["conversion_naive"], naive)
    assert (mql["conversion"] >= mql["conversion_naive"] - 1e-12).all()
    overall = stage_row(table)
    # open leads are censored, not failures: the whole funnel converts strictly better
    assert overall["conversion"] > overall["conversion_naive"] + 0.005


def test_earlier_as_of_sees_fewer_wins_and_ages_to_end_of_day(raw, log, spells, table):
    cut = pd.Timestamp(EARLIER) + DAY  # end of the as_of day
    # the one early win is dated at its first contact (see funnelsim.data.olist)
    won_at = raw["won"].where(~(raw["won"] < raw["contact"]), raw["contact"])
    seen = raw[raw["contact"] < cut]
    n_won = int((won_at[seen.index] < cut).sum())
    early = to_spells(log, as_of=EARLIER, segment_by="origin")
    assert early.as_of == pd.Timestamp(EARLIER)
    assert early.counts["deals"] == len(seen) < 8000
    frame = early.to_pandas()
    assert (frame["move"] == "won").sum() == n_won < spells.counts["deals"] - spells.counts["open"]
    assert early.counts["open"] == len(seen) - n_won
    open_stays = frame[frame["move"] == "censored"]
    np.testing.assert_allclose(open_stays["days"], (cut - open_stays["entered"]) / DAY)
    later = seen.loc[won_at[seen.index] >= cut, "mql_id"]  # won after the cut: still open then
    assert len(later) > 0 and set(later) <= set(open_stays["deal_id"])
    assert stage_row(funnel_table(early).table)["won"] == n_won < stage_row(table)["won"]


@pytest.mark.parametrize("as_of", ["2017-12-31", EARLIER, "2018-06-30"])
def test_as_of_equals_log_cut_at_that_day(converted, log, as_of):
    events = converted[0]
    text = events["timestamp"]  # day-first, with (won) or without (MQL) a time of day
    when = pd.to_datetime(text, format="%d-%m-%Y %H:%M", errors="coerce").fillna(
        pd.to_datetime(text, format="%d-%m-%Y", errors="coerce"))
    assert when.notna().all()
    cut_log = read_events(events[when < pd.Timestamp(as_of) + DAY], FUNNEL, dayfirst=True)
    full = to_spells(log, as_of=as_of, segment_by="origin")
    cut = to_spells(cut_log, as_of=as_of, segment_by="origin")
    pd.testing.assert_frame_equal(full.to_pandas(), cut.to_pandas())
    assert full.counts == cut.counts


@pytest.mark.slow
def test_the_default_fit_converges_at_the_last_month_end_by_origin(converted):
    """Real data keep converging with the default settings (issue 18): Olist as of 2018-08-31,
    by origin, 4 chains x 1,000 draws. Its MQL stays that end within the hour (a won date on
    the first contact's day, just past midnight, and the early win moved to its contact date)
    are instant stays."""
    import warnings

    from funnelsim.data.snapshot import Snapshot
    from funnelsim.model.funnel_model import FunnelModel

    snapshot = Snapshot.read(converted[0], FUNNEL, as_of="2018-08-31", segment_by="origin", dayfirst=True, every=None)
    model = FunnelModel.from_snapshot(snapshot)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(random_seed=1)
    assert model.diagnostics["converged"], model.diagnostics
    print("\nOlist 2018-08-31 by origin:", {k: model.diagnostics[k] for k in
          ("r_hat_max", "ess_bulk_min", "ess_tail_min", "divergences")},
          "instant exits:", snapshot.stage_stats.short_exits)
