"""Event log file -> sufficient statistics: wall time and peak memory.

Prints one JSON line per size: {"deals", "events", "seconds", "peak_mb", ...}.
Each size runs in a fresh process so peak memory is its own. The synthetic log is
written to Parquet first (not timed); the timed part is read + validate + spells +
statistics, i.e. what ``Snapshot.read(path, funnel, segment_by=...).stage_stats`` does.

    python benchmarks/bench_stats.py [--sizes 100000,1000000] [--format parquet|csv]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def measure(path: str, deals: int) -> dict:
    import funnelsim as fs
    from funnelsim.data import synth

    config = synth.SynthConfig()
    funnel = fs.FunnelDefinition(config.stages, config.won, config.lost)
    start = time.perf_counter()
    snap = fs.Snapshot.read(path, funnel, segment_by=config.segment_column)
    stats = snap.stage_stats.table
    seconds = time.perf_counter() - start
    events = int(snap.log.table.count().execute())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"deals": deals, "events": events, "seconds": round(seconds, 3), "peak_mb": round(peak_mb, 1),
            "stats_rows": len(stats), "format": Path(path).suffix[1:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--format", default="parquet", choices=["parquet", "csv"])
    parser.add_argument("--measure", nargs=2, metavar=("PATH", "DEALS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], int(args.measure[1]))), flush=True)
        return
    from funnelsim.data import synth

    with tempfile.TemporaryDirectory() as tmp:
        for deals in (int(s) for s in args.sizes.split(",")):
            path = Path(tmp) / f"crm_{deals}.{args.format}"
            synth.write(path, deals, seed=deals)
            subprocess.run([sys.executable, __file__, "--measure", str(path), str(deals)], check=True)


if __name__ == "__main__":
    main()
