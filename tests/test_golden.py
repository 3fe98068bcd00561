"""Golden outputs: today's numbers, pinned bit for bit, as the gate for restructuring the package.

On one small synthetic log (``funnelsim synth``, 1,500 deals, 40 weeks, a segment column) with
fixed seeds, the command line is run as a user runs it (a subprocess per command) for:

- ``synth``: the log's sha256 (every other output depends on it, so a change here explains them);
- ``funnel --json``;
- ``fit`` (2 chains x 150 tune x 150 draws, nutpie): per posterior variable its dims, shape, the
  element-wise mean over chains and draws and the sha256 of the draws' bytes, plus the
  diagnostics of ``model.json``;
- ``forecast --model --json`` and ``whatif --model --scenarios --json`` from that saved fit;
- ``backtest --json`` (two origins, ``--new-deals``, ``--workers 1``, its own tiny fits).

Each output is compared with its file in ``tests/golden/`` exactly: same keys, same types and
every float with the same ``repr`` (so the same bits). Only volatile keys are removed first
(``VOLATILE``: the fit's wall-clock timings); the outputs hold no paths or dates of today. A
mismatch names the golden file and the first differing key path with both values.

Stability (checked when these files were written, on x86-64 Linux): bit-identical across separate
pytest runs, with an empty PyTensor compile cache (``PYTENSOR_FLAGS=base_compiledir=...``) and an
empty numba cache (``NUMBA_CACHE_DIR=...``), under ``pytest -n 2`` as well as without, and with
numba compiling for another CPU (``NUMBA_CPU_NAME=haswell``). Another CPU's OpenBLAS kernel or
numpy SIMD loops do change the numbers, so the commands run with those pinned (``PINNED_CPU``).
Nothing is compared at a tolerance and nothing else is excluded.

Regenerating: ``FUNNELSIM_REGOLD=1 pytest tests/test_golden.py`` writes the files instead of
comparing them. Do it only when a change of numbers is intended, and say in the commit which
change and why; a restructure that promises "no number changes" must pass without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

pytestmark = pytest.mark.slow  # about 40 s warm on 2 cores (3-4 min with cold caches): one fit, three forecasts, a backtest of two fits

GOLDEN = Path(__file__).parent / "golden"
REGOLD = os.environ.get("FUNNELSIM_REGOLD") == "1"
VOLATILE = frozenset({"timings", "fit_s", "compile_s", "sample_s", "seconds"})  # wall-clock only

# The same kernels on every x86-64 machine. Without these, a CPU without AVX-512 (the golden files were
# written on one with it; emulated with these variables) changes the numbers: OpenBLAS's Haswell
# kernel moves a funnel ratio by one ulp, and the fit, started from that, ends with posterior means
# 2% apart, so every forecast moves by about 1%; numpy's AVX2 exp/log moves five values of the
# forecast's stage table by 1-2 ulp. Haswell/AVX2 is what both pick on AVX2 machines without AVX-512
# (Zen included). numba's target was checked not to matter (NUMBA_CPU_NAME=haswell: identical).
PINNED_CPU = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_NUM_THREADS": "1",
              "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}

FUNNEL = ["--stages", "Prospecting,Qualified,Proposal,Negotiation", "--won", "Won", "--lost", "Lost",
          "--segment-by", "segment"]
AS_OF = ["--as-of", "2024-09-15"]  # the log ends on 2024-10-06

SCENARIOS = """\
[[scenario]]
name = "baseline"

[[scenario]]
name = "proposal+5"
[[scenario.change]]
stage = "Proposal"
conversion_points = 5

[[scenario]]
name = "smb-faster-negotiation"
segment = "SMB"
[[scenario.change]]
stage = "Negotiation"
segment = "SMB"
time_factor = 0.8

[[scenario]]
name = "more-and-bigger"
remove = ["D0000328"]
[[scenario.change]]
amount_factor = 1.1
[[scenario.change]]
new_deals_factor = 1.2
[[scenario.add]]
deal_id = "NEW-1"
stage = "Negotiation"
amount = 250000
segment = "Enterprise"
"""

# the golden numbers are the stationary model's (the drifting one is tested in tests/test_drift.py)
STATIONARY = ["--drift", "none"]


def run(*args):
    result = subprocess.run([sys.executable, "-m", "funnelsim.cli.app", *map(str, args)],
                            capture_output=True, text=True, timeout=600, env={**os.environ, **PINNED_CPU})
    assert result.returncode == 0, f"funnelsim {args[0]} exited {result.returncode}:\n{result.stderr}"
    return result


# --------------------------------------------------------------------------- comparison

def strip_volatile(value):
    if isinstance(value, dict):
        return {k: strip_volatile(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [strip_volatile(v) for v in value]
    return value


def first_difference(golden, now, path="$"):
    """The first key path where ``now`` differs from ``golden`` and both values, or None."""
    if type(golden) is not type(now):
        return f"{path}: golden {golden!r} ({type(golden).__name__}), now {now!r} ({type(now).__name__})"
    if isinstance(golden, dict):
        if list(golden) != list(now):
            missing, extra = [k for k in golden if k not in now], [k for k in now if k not in golden]
            return f"{path}: keys differ (missing {missing}, new {extra}, or another order)"
        for key in golden:
            found = first_difference(golden[key], now[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(golden, list):
        for i, (g, n) in enumerate(zip(golden, now, strict=False)):
            found = first_difference(g, n, f"{path}[{i}]")
            if found:
                return found
        if len(golden) != len(now):
            return f"{path}: golden has {len(golden)} items, now {len(now)}"
        return None
    same = repr(golden) == repr(now) if isinstance(golden, float) else golden == now  # repr: same bits, NaN too
    return None if same else f"{path}: golden {golden!r}, now {now!r}"


def check_golden(name, output):
    """Compare ``output`` (JSON-able) with tests/golden/NAME, or write it there with FUNNELSIM_REGOLD=1."""
    path = GOLDEN / name
    now = json.loads(json.dumps(strip_volatile(output)))  # the types a JSON file gives back
    if REGOLD:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(now, indent=1) + "\n")
        return
    assert path.exists(), f"no golden file {path}: create it with FUNNELSIM_REGOLD=1 (see this module's docstring)"
    found = first_difference(json.loads(path.read_text()), now)
    assert found is None, (f"tests/golden/{name} differs at {found}. If this change of numbers is intended, "
                           "regenerate with FUNNELSIM_REGOLD=1 and say why in the commit.")


def read_json(path):
    return json.loads(Path(path).read_text())


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def events(tmp_path_factory):
    path = tmp_path_factory.mktemp("golden") / "crm.csv"
    run("synth", path, "--deals", 1500, "--weeks", 40, "--seed", 7)
    return path


@pytest.fixture(scope="module")
def model(events):
    folder = events.parent / "model"
    run("fit", events, *FUNNEL, *STATIONARY, *AS_OF, "--draws", 150, "--tune", 150, "--chains", 2, "--seed", 11,
        "--out", folder)
    return folder


# --------------------------------------------------------------------------- the outputs

def test_synth_log(events):
    data = events.read_bytes()
    check_golden("synth.json", {"sha256": hashlib.sha256(data).hexdigest(), "lines": data.count(b"\n")})


def test_funnel(events):
    out = events.parent / "funnel.json"
    run("funnel", events, *FUNNEL, *AS_OF, "--json", out)
    check_golden("funnel.json", read_json(out))


def test_fit_posterior(model):
    posterior = xr.open_datatree(model / "posterior.nc")["posterior"].to_dataset().load()
    variables = {}
    for name in sorted(posterior.data_vars):
        var = posterior[name]
        draws = np.ascontiguousarray(var.values, dtype=np.float64)
        variables[name] = {
            "mean": draws.mean(axis=(0, 1)).tolist(),  # over chain and draw: element-wise posterior mean
            "dims": list(var.dims),
            "shape": list(draws.shape),
            "sha256": hashlib.sha256(draws.tobytes()).hexdigest(),
        }
    check_golden("fit.json", {"posterior": variables, "diagnostics": read_json(model / "model.json")["diagnostics"]})


def test_forecast(events, model):
    out = events.parent / "forecast.json"
    run("forecast", events, *FUNNEL, *STATIONARY, *AS_OF, "--model", model, "--horizon", 30, "--period", "week",
        "--target", 500000, "--seed", 3, "--json", out)
    check_golden("forecast.json", read_json(out))


def test_whatif(events, model):
    scenarios = events.parent / "scenarios.toml"
    scenarios.write_text(SCENARIOS)
    out = events.parent / "whatif.json"
    run("whatif", events, *FUNNEL, *STATIONARY, *AS_OF, "--model", model, "--horizon", 30, "--target", 500000,
        "--seed", 3, "--scenarios", scenarios, "--json", out)
    check_golden("whatif.json", read_json(out))


def test_backtest(events):
    out = events.parent / "backtest.json"
    run("backtest", events, *FUNNEL, *STATIONARY, "--origins", "2024-07-31,2024-08-31", "--horizon", 30, "--new-deals",
        "--draws", 100, "--tune", 100, "--chains", 2, "--seed", 5, "--workers", 1, "--json", out)
    check_golden("backtest.json", read_json(out))


# --------------------------------------------------------------------------- the comparison itself

def test_first_difference_names_the_path_and_both_values():
    golden = {"a": [1.0, {"b": 0.1 + 0.2}], "c": "x"}
    assert first_difference(golden, json.loads(json.dumps(golden))) is None
    assert first_difference(golden, {"a": [1.0, {"b": 0.3}], "c": "x"}) == \
        "$.a[1].b: golden 0.30000000000000004, now 0.3"
    assert first_difference({"a": 1.0}, {"a": 1}) == "$.a: golden 1.0 (float), now 1 (int)"
    assert first_difference({"a": [1, 2]}, {"a": [1]}) == "$.a: golden has 2 items, now 1"
    assert "missing ['c']" in first_difference(golden, {"a": golden["a"]})
    assert first_difference({"a": 0.0}, {"a": -0.0}) == "$.a: golden 0.0, now -0.0"
    assert first_difference([float("nan")], [float("nan")]) is None
