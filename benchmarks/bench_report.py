"""Time to build the forecast report after the fit, on the demo's synthetic CRM.

As ``funnelsim demo`` does: a 20,000-deal synthetic log (the default SynthConfig, segmented), the
model fitted as of 90 days before the log ends (4 chains x 1000 draws), then, timed, the report
as ``funnelsim report`` builds it: the forecast (open pipeline and new deals), the segment roll-up,
what changed in the 30 days before, the bottlenecks, the pictures and the HTML; then the PDF.

Prints one JSON line: deals, open_deals, draws, fit_s, report_s (forecast to HTML string),
write_s, html_bytes, converged, pdf_s and pdf_bytes.

    python benchmarks/bench_report.py [--deals 20000] [--draws 1000] [--chains 4] [--out /tmp/report.html]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=20000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("/tmp/funnelsim-bench-report.html"))
    parser.add_argument("--no-pdf", action="store_true")
    args = parser.parse_args()

    import pandas as pd

    import funnelsim as fs
    from funnelsim.data import synth
    from funnelsim.report.html import find_browser, forecast_report

    cfg = synth.SynthConfig()
    events, truth = synth.generate(args.deals, seed=1, config=cfg)
    as_of = pd.Timestamp(truth["as_of"]) - pd.Timedelta(days=90)
    snap = fs.Snapshot.read(events, fs.FunnelDefinition(",".join(cfg.stages), cfg.won, cfg.lost), as_of=as_of,
                            segment_by=cfg.segment_column)
    model = fs.FunnelModel.from_snapshot(snap)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(draws=args.draws, chains=args.chains, random_seed=1, progressbar=False)
    fit_s = time.perf_counter() - start

    fs.forecast(model, snap, horizon_days=7, draws=8, seed=1)      # load the compiled simulator first
    start = time.perf_counter()
    report = forecast_report(model, snap, horizon_days=90, target=5_000_000, compare_to=as_of - pd.Timedelta(days=30),
                             seed=1)
    page = report.html()
    report_s = time.perf_counter() - start
    start = time.perf_counter()
    report.write_html(args.out)
    write_s = time.perf_counter() - start
    row = {"deals": args.deals, "open_deals": report.forecast.dataset.sizes["deal"],
           "draws": report.forecast.dataset.sizes["draw"], "fit_s": round(fit_s, 2), "report_s": round(report_s, 2),
           "write_s": round(write_s, 3), "html_bytes": len(page.encode()), "converged": model.diagnostics["converged"]}
    if not args.no_pdf:
        find_browser()
        start = time.perf_counter()
        pdf = report.write_pdf(args.out.with_suffix(".pdf"))
        row |= {"pdf_s": round(time.perf_counter() - start, 2), "pdf_bytes": pdf.stat().st_size}
    print(json.dumps(row))


if __name__ == "__main__":
    main()
