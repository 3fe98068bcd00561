"""Event log in PostgreSQL -> stage statistics: wall time and the rows that came back to Python.

A synthetic log (funnelsim.data.synth, ~2.9 events per deal) is loaded into a fresh
PostgreSQL server (tests/servers.py: the Debian package's binaries, COPY; not timed beyond
``load_seconds``), then timed: ``read_events`` on the table (typing and every check in the
database, one temporary table), ``to_spells`` and ``to_stage_stats``, each step's rows fetched
into Python counted at the driver (psycopg cursor fetches). The same log read by DuckDB from
a Parquet file is timed beside it, and the two statistics tables are compared bit for bit.

Prints one JSON line per backend: backend, deals, events, seconds (total), read_seconds,
spells_seconds, stats_seconds, queries and rows_to_python (PostgreSQL), stats_rows, cores;
then one line {"same_bits": true/false}.

    python benchmarks/bench_backends.py [--events 10000000] [--seed 22]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

EVENTS_PER_DEAL = 2.89   # the default synthetic CRM's events per deal


class Fetched:
    """Counts the queries run and the rows psycopg hands to Python."""

    def __init__(self):
        import psycopg

        self.queries = self.rows = 0
        cursor = psycopg.Cursor
        originals = {name: getattr(cursor, name) for name in ("execute", "fetchall", "fetchmany", "fetchone")}
        counter = self

        def execute(self, *args, **kwargs):
            counter.queries += 1
            return originals["execute"](self, *args, **kwargs)

        def fetchall(self):
            rows = originals["fetchall"](self)
            counter.rows += len(rows)
            return rows

        def fetchmany(self, *args, **kwargs):
            rows = originals["fetchmany"](self, *args, **kwargs)
            counter.rows += len(rows)
            return rows

        def fetchone(self):
            row = originals["fetchone"](self)
            counter.rows += row is not None
            return row

        for name, function in (("execute", execute), ("fetchall", fetchall), ("fetchmany", fetchmany),
                               ("fetchone", fetchone)):
            setattr(cursor, name, function)

    def take(self) -> tuple[int, int]:
        seen = (self.queries, self.rows)
        self.queries = self.rows = 0
        return seen


def timed_steps(source, funnel, segment, fetched: Fetched | None = None) -> tuple[dict, object]:
    from funnelsim.data.events import read_events
    from funnelsim.data.spells import to_spells
    from funnelsim.data.stats import to_stage_stats

    result, queries, rows = {}, 0, 0
    start = time.perf_counter()
    log = read_events(source, funnel)
    result["read_seconds"] = round(time.perf_counter() - start, 2)
    if fetched:
        q, r = fetched.take()
        queries, rows = queries + q, rows + r
        result["read_rows_to_python"] = r
    step = time.perf_counter()
    spells = to_spells(log, segment_by=segment)
    result["spells_seconds"] = round(time.perf_counter() - step, 2)
    if fetched:
        q, r = fetched.take()
        queries, rows = queries + q, rows + r
        result["spells_rows_to_python"] = r
    step = time.perf_counter()
    stats = to_stage_stats(spells)
    result["stats_seconds"] = round(time.perf_counter() - step, 2)
    result["seconds"] = round(time.perf_counter() - start, 2)
    if fetched:
        q, r = fetched.take()
        queries, rows = queries + q, rows + r
        result.update(stats_rows_to_python=r, queries=queries, rows_to_python=rows)
    result["stats_rows"] = len(stats.table)
    return result, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="at least this many events")
    parser.add_argument("--seed", type=int, default=22)
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import pandas as pd

    from funnelsim.data import synth
    from funnelsim.data.events import FunnelDefinition
    from tests.servers import copy_frame, start_postgres

    config = synth.SynthConfig()
    funnel = FunnelDefinition(config.stages, config.won, config.lost)
    deals = int(args.events / EVENTS_PER_DEAL) + 1
    events, _ = synth.generate(deals, seed=args.seed)
    common = {"deals": deals, "events": len(events), "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.parquet"
        events.to_parquet(path, index=False)
        duck, duck_stats = timed_steps(str(path), funnel, config.segment_column)
        print(json.dumps({"backend": "duckdb", **common, **duck}), flush=True)

    server = start_postgres()
    try:
        start = time.perf_counter()
        copy_frame(server, "events", events)
        load_seconds = round(time.perf_counter() - start, 2)
        del events
        fetched = Fetched()
        table = server.connect().table("events")
        fetched.take()
        pg, pg_stats = timed_steps(table, funnel, config.segment_column, fetched)
        print(json.dumps({"backend": "postgres", **common, "load_seconds": load_seconds, **pg}), flush=True)
    finally:
        server.stop()
    same = True
    try:
        pd.testing.assert_frame_equal(duck_stats.table, pg_stats.table, check_exact=True)
    except AssertionError:
        same = False
    print(json.dumps({"same_bits": same}), flush=True)


if __name__ == "__main__":
    main()
