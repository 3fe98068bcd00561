"""Wall time of ``convert salesforce``: a synthetic log of N deals written as a Salesforce
OpportunityHistory CSV (with amount-only changes, probability-only changes and deleted rows),
then ``from_salesforce`` (reading the CSV included) and writing the canonical log as Parquet.

Prints one JSON line with keys deals, events, history_rows, convert_seconds, write_seconds,
seconds, rows_out, cores. Default: 1,000,000 deals (the issue asks for at most 30 s on 2 cores).

    python benchmarks/bench_convert.py [--deals 1000000] [--seed 1] [--keep DIR]

:func:`salesforce_history` is the encoder (canonical log -> OpportunityHistory, stage table
and Opportunity export); tests/test_adapters_salesforce_hubspot_wide.py uses it for its round trip.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

# the synth log's outcome labels as a Salesforce org names them
SALESFORCE_LABELS = {"Won": "Closed Won", "Lost": "Closed Lost"}


def salesforce_history(events: pd.DataFrame, stages, won: str = "Won", lost: str = "Lost", *, seed: int = 0,
                       p_amount_change: float = 0.2, p_probability_change: float = 0.1, p_deleted: float = 0.02,
                       segment_column: str | None = "segment"):
    """Encode a canonical log as Salesforce exports: (history, stage_table, opportunities).

    ``history`` has one row per event (the outcome labels renamed "Closed Won" / "Closed Lost"),
    plus, between an open-stage event and the deal's next one, a share of rows that change only
    the amount (x1.1), only the probability, or are deleted (IsDeleted true, a wrong stage).
    Timestamps are written as Salesforce does (``2024-01-01T17:33:00.000Z``). Vectorised."""
    rng = np.random.default_rng(seed)
    events = events.sort_values(["deal_id", "timestamp"], kind="stable").reset_index(drop=True)
    labels = [*stages, SALESFORCE_LABELS.get(won, won), SALESFORCE_LABELS.get(lost, lost)]
    stage = events["stage"].replace({won: labels[-2], lost: labels[-1]}).to_numpy(dtype=object)
    index = {label: i for i, label in enumerate(labels)}
    code = pd.Series(stage).map(index).to_numpy()
    n_open = len(stages)
    probability = np.r_[np.linspace(10, 90, n_open).round(), 100, 0][code]
    forecast = np.array(["Pipeline"] * n_open + ["Closed", "Omitted"], dtype=object)[code]
    t = events["timestamp"].to_numpy(dtype="datetime64[ns]")
    deal = events["deal_id"].to_numpy(dtype=object)
    amount = events["amount"].to_numpy(dtype="float64")
    close = (t + np.timedelta64(60, "D")).astype("datetime64[D]")
    is_open = code < n_open
    close[~is_open] = t[~is_open].astype("datetime64[D]")
    same_deal_next = np.r_[deal[1:] == deal[:-1], False]
    gap_end = np.r_[t[1:], t[-1:]]
    gap_end = np.where(same_deal_next, gap_end, t + np.timedelta64(1, "h"))
    base = pd.DataFrame({"OpportunityId": deal, "CreatedDate": t, "StageName": stage, "Amount": amount,
                         "CloseDate": close, "Probability": probability, "ForecastCategory": forecast,
                         "IsDeleted": False, "_seq": np.arange(len(deal)) * 4})
    extras = []
    for kind, share in (("amount", p_amount_change), ("probability", p_probability_change), ("deleted", p_deleted)):
        pick = is_open & (rng.random(len(deal)) < share) & (gap_end > t)
        extra = base[pick].copy()
        # strictly inside the stay: a third of the way to the deal's next event (or an hour on)
        extra["CreatedDate"] = t[pick] + (gap_end[pick] - t[pick]) // 3
        extra["_seq"] += {"amount": 1, "probability": 2, "deleted": 3}[kind]
        if kind == "amount":
            extra["Amount"] = np.round(extra["Amount"].to_numpy() * 1.1, 2)
        elif kind == "probability":
            extra["Probability"] = extra["Probability"] + 5
        else:
            extra["IsDeleted"] = True
            extra["StageName"] = labels[-1]
        extras.append(extra)
    history = pd.concat([base, *extras], ignore_index=True).sort_values("_seq", kind="stable")
    history = history.drop(columns="_seq").reset_index(drop=True)
    history["CreatedDate"] = np.char.add(np.datetime_as_string(history["CreatedDate"].to_numpy(
        dtype="datetime64[ms]"), unit="ms"), "Z")
    history.insert(0, "Id", "008" + pd.Series(np.arange(len(history))).astype(str).str.zfill(12))
    stage_table = pd.DataFrame({"ApiName": labels, "MasterLabel": labels, "SortOrder": np.arange(1, len(labels) + 1),
                                "IsClosed": [False] * n_open + [True, True],
                                "IsWon": [False] * n_open + [True, False], "IsActive": True})
    last = events.groupby("deal_id", sort=False).tail(1)
    first = events.groupby("deal_id", sort=False).head(1)
    last_stage = last["stage"].replace({won: labels[-2], lost: labels[-1]})
    opportunities = pd.DataFrame({
        "Id": last["deal_id"].to_numpy(), "CreatedDate": first["timestamp"].to_numpy(),
        "StageName": last_stage.to_numpy(), "IsClosed": last_stage.isin(labels[-2:]).to_numpy(),
        "IsWon": (last_stage == labels[-2]).to_numpy(), "Amount": last["amount"].to_numpy(),
    })
    if segment_column and segment_column in events.columns:
        opportunities["Segment"] = last[segment_column].to_numpy()
    return history, stage_table, opportunities


def main() -> None:
    from funnelsim.adapters import from_salesforce
    from funnelsim.data import synth

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None, help="Write the exports and the log here.")
    args = parser.parse_args()

    config = synth.SynthConfig()
    events, _ = synth.generate(args.deals, seed=args.seed, config=config)
    history, stage_table, _ = salesforce_history(events, config.stages, config.won, config.lost, seed=args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        history_path, stages_path = folder / "OpportunityHistory.csv", folder / "OpportunityStage.csv"
        history.to_csv(history_path, index=False)
        stage_table.to_csv(stages_path, index=False)
        began = time.perf_counter()
        converted = from_salesforce(history_path, stage_table=stages_path)
        converted_at = time.perf_counter()
        converted.write(folder / "events.parquet")
        done = time.perf_counter()
    print(json.dumps({
        "deals": args.deals, "events": len(events), "history_rows": len(history),
        "convert_seconds": round(converted_at - began, 2), "write_seconds": round(done - converted_at, 2),
        "seconds": round(done - began, 2), "rows_out": len(converted.events), "cores": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
