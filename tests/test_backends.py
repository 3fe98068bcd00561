"""The same log read where it lives: a real PostgreSQL server and Spark in local mode give the
funnel table, the stage statistics, the won amounts and the open deals DuckDB gives, bit for bit.

The servers are started once per test run (tests/servers.py, fixtures in tests/conftest.py);
the tests skip only when the PostgreSQL server binary or a Java runtime is missing. All of them
share one xdist group, so under ``-n 2`` one worker starts the servers.
"""

from __future__ import annotations

import ibis
import pandas as pd
import pytest

import funnelsim as fs
from funnelsim.data import synth
from funnelsim.errors import FunnelDataError
from funnelsim.report.funnel import funnel_table

from .servers import copy_frame, spark_parquet

pytestmark = [pytest.mark.xdist_group("backends"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]  # pyspark 4.0 on pandas 3

BACKENDS = ("postgres", pytest.param("spark", marks=pytest.mark.slow))   # Spark: a JVM, a second per query


def _sorted(frame: pd.DataFrame, keys) -> pd.DataFrame:
    return frame.sort_values(list(keys), ignore_index=True, kind="stable")


def assert_same(expected: pd.DataFrame, got: pd.DataFrame, keys) -> None:
    """Equal after sorting by ``keys``: same columns, dtypes and every value's bits."""
    pd.testing.assert_frame_equal(_sorted(expected, keys), _sorted(got, keys), check_exact=True)


def results(source, funnel, spells=True, **snapshot):
    """Everything a forecast stands on, from one source (with every stay, for a small log)."""
    snap = fs.Snapshot.read(source, funnel, **snapshot, every=None)
    return {"stats": snap.stage_stats.table, "funnel": funnel_table(snap).table, "amounts": snap.amounts,
            "open": snap.open_deals, "spells": snap.spells.to_pandas() if spells else None,
            "counts": snap.spells.counts, "notes": snap.notes, "realised": snap.realised(30),
            "short_days": snap.stage_stats.short_days}


KEYS = {"stats": ("stage_index", "segment", "destination", "bin"), "funnel": ("stage", "segment"),
        "amounts": ("segment",), "open": ("deal_id",), "spells": ("deal_id", "entered", "stage_index")}


def assert_same_results(expected: dict, got: dict, parts=tuple(KEYS)) -> None:
    for part in parts:
        assert_same(expected[part], got[part], KEYS[part])
    for part in ("counts", "notes", "realised", "short_days"):
        assert expected[part] == got[part], part


def table_in(backend: str, frame: pd.DataFrame, name: str, request, tmp_path) -> ibis.Table:
    """``frame`` as a table of the backend's server."""
    if backend == "postgres":
        server = request.getfixturevalue("postgres_server")
        copy_frame(server, name, frame)
        return server.connect().table(name)
    spark = request.getfixturevalue("spark_session")
    return ibis.pyspark.connect(spark).read_parquet(spark_parquet(frame, tmp_path / f"{name}.parquet"))


@pytest.mark.parametrize("dates_only", [False, True], ids=["times", "dates_only"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_small_log_with_every_edge_case_reads_the_same(backend, dates_only, small_log, funnel, request, tmp_path):
    """Skip, back, repeated stage, created won, zero-length stay, blank segment, missing amounts and
    text timestamps parsed by the database: the same stays and statistics as DuckDB. Without any
    time of day the log's resolution is a day (same-day exits are short stays, bin -1)."""
    if dates_only:
        small_log = small_log.assign(timestamp=small_log["timestamp"].str[:10])
    expected = results(small_log, funnel, as_of="2024-02-15", segment_by="region")
    got = results(table_in(backend, small_log, "small_log", request, tmp_path), funnel, as_of="2024-02-15",
                  segment_by="region")
    assert_same_results(expected, got)
    assert got["short_days"] == (1.0 if dates_only else 1 / 24)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_rows_fail_with_the_same_message_as_duckdb(backend, small_log, funnel, request, tmp_path):
    """Errors are found where the table lives, and name the same row as a DuckDB table does."""
    for name, frame in {
        "unknown_stage": small_log.assign(stage=small_log["stage"].replace({"Proposal": "Propsal"})),
        "after_outcome": pd.concat([small_log, pd.DataFrame([("d1", "Lead", "2024-03-01", 1.0, "EU")],
                                                            columns=small_log.columns)], ignore_index=True),
        "bad_amount": small_log.assign(amount=small_log["amount"].astype(object).where(
            small_log.index != 4, "12k").astype(str).replace({"nan": None})),
    }.items():
        duck = ibis.duckdb.connect().create_table(name, ibis.memtable(frame))
        with pytest.raises(FunnelDataError) as expected:
            fs.read_events(duck, funnel)
        with pytest.raises(FunnelDataError) as got:
            fs.read_events(table_in(backend, frame, name, request, tmp_path), funnel)
        assert str(got.value) == str(expected.value), name


# --------------------------------------------------------------------------- a million events

MILLION_DEALS = 350_000     # 1.01M events with the default synthetic CRM


@pytest.fixture(scope="session")
def million(tmp_path_factory):
    """A synthetic log of over a million events, as a frame and a Parquet file Spark reads."""
    events, _ = synth.generate(MILLION_DEALS, seed=22)
    assert len(events) >= 1_000_000
    path = spark_parquet(events, tmp_path_factory.mktemp("million") / "events.parquet")
    config = synth.SynthConfig()
    return events, path, fs.FunnelDefinition(config.stages, config.won, config.lost), config.segment_column


@pytest.fixture(scope="session")
def million_duckdb(million):
    _, path, funnel, segment = million
    return results(str(path), funnel, spells=False, segment_by=segment)


@pytest.fixture(scope="session")
def million_table(million, request):
    """The log in each backend's server, loaded once: COPY into PostgreSQL, Parquet into Spark."""
    tables = {}

    def table(backend):
        if backend not in tables:
            events, path, _, _ = million
            if backend == "postgres":
                server = request.getfixturevalue("postgres_server")
                copy_frame(server, "million_events", events)
                tables[backend] = server.connect().table("million_events")
            else:
                tables[backend] = ibis.pyspark.connect(request.getfixturevalue("spark_session")).read_parquet(path)
        return tables[backend]

    return table


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_million_events_give_the_same_funnel_and_statistics(backend, million, million_duckdb, million_table):
    _, _, funnel, segment = million
    got = results(million_table(backend), funnel, spells=False, segment_by=segment)
    assert_same_results(million_duckdb, got, parts=("stats", "funnel", "amounts", "open"))
    for part in ("counts", "realised", "short_days"):
        assert got[part] == million_duckdb[part], part


# --------------------------------------------------------------------------- the CLI's --table URL

FUNNEL = ["--stages", "Lead,Qualified,Proposal", "--won", "Won,Closed Won", "--lost", "Lost"]


def cli(*args):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "funnelsim.cli.app", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})


def test_cli_reads_a_postgres_or_duckdb_table_by_url_as_it_reads_the_file(postgres_server, small_log, tmp_path):
    small_log.to_csv(tmp_path / "events.csv", index=False)
    copy_frame(postgres_server, "cli_events", small_log)
    database = tmp_path / "crm.duckdb"
    con = ibis.duckdb.connect(database)
    con.create_table("events", ibis.memtable(small_log))
    con.disconnect()
    outputs = {}
    for name, source in {
        "file": [tmp_path / "events.csv"],
        "postgres": ["--table", f"{postgres_server.url}?table=cli_events"],
        "postgres_schema": ["--table", f"postgresql://funnelsim@127.0.0.1:{postgres_server.port}/postgres"
                                       "?table=public.cli_events"],
        "duckdb": ["--table", f"duckdb://{database}?table=events"],
    }.items():
        done = cli("funnel", *source, *FUNNEL, "--as-of", "2024-02-15", "--segment-by", "region",
                   "--json", tmp_path / f"{name}.json")
        assert done.returncode == 0, (name, done.stderr)
        outputs[name] = (tmp_path / f"{name}.json").read_text()
    assert len(set(outputs.values())) == 1


@pytest.mark.parametrize("table, expected", [
    ("{url}?table=evnts", "there is no table 'evnts'. Did you mean 'cli_events'? Tables there: "),
    ("{url}", "the URL names no table"),
    ("postgres://funnelsim@127.0.0.1:1/postgres?table=cli_events", "cannot connect: connection failed"),
    ("postgres://funnelsim@127.0.0.1:{port}/nodb?table=cli_events", 'database "nodb" does not exist'),
    ("duckdb:///no/such/crm.duckdb?table=events", "no DuckDB database file there"),
    ("nosuchdb://host/db?table=events", "cannot connect"),
    ("events.csv", "--table: this is not a database URL (value 'events.csv')"),
])
def test_cli_bad_table_url_exits_2_naming_the_option_and_the_url(postgres_server, small_log, table, expected):
    copy_frame(postgres_server, "cli_events", small_log)
    table = table.format(url=postgres_server.url, port=postgres_server.port)
    done = cli("funnel", "--table", table, *FUNNEL)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert expected in done.stderr
    if "://" in table:
        assert f"--table {table!r}" in " ".join(done.stderr.split()) or f"--table '{table}'" in done.stderr


def test_cli_table_url_hides_the_password(postgres_server):
    done = cli("funnel", "--table", f"postgres://funnelsim:s3cret@127.0.0.1:{postgres_server.port}/postgres"
                                    "?table=evnts", *FUNNEL)
    assert done.returncode == 2 and "s3cret" not in done.stderr and "funnelsim:***@" in done.stderr
