"""Saving and loading fitted funnel models: netCDF plus JSON, never pickle.

A model folder holds ``posterior.nc`` (the ArviZ DataTree: posterior, sample stats, and a
``training_stats`` group with the statistics table) and ``model.json`` (funnel definition,
model config, time-in-stage family, a sha256 of the training statistics, diagnostics and
package versions). Both are written in a staging folder beside it and moved in together
(an interrupt waits for the move), so a folder never holds half a model: an error or a
Ctrl-C while saving leaves no folder, or the one saved before.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import pandas as pd

from .._io import atomic_write, ordinary_mode, write_json
from .._signals import sigint_deferred
from ..data.events import FunnelDataError
from ..data.stats import StageStats
from .likelihood import stats_hash

__all__ = ["save_model", "load_model"]

FORMAT = 1
PACKAGES = ("funnelsim", "pymc", "pytensor", "arviz", "nutpie", "numpy", "pandas")


def _versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def save_model(model, folder: Path) -> Path:
    """Write the model folder (see module doc); returns it."""
    import xarray as xr

    idata = model._require_fit()
    tree = xr.DataTree.from_dict({name: idata[name].to_dataset() for name in ("posterior", "sample_stats")
                                  if name in idata.children})
    stats = model.stats.table.reset_index(drop=True)
    tree["training_stats"] = xr.Dataset.from_dataframe(stats.rename_axis("row"))
    tree.attrs = {k: str(v) for k, v in idata.attrs.items()}
    meta = {
        "format": FORMAT,
        "funnel": model.funnel.to_dict(),
        "sojourn": model.sojourn,
        "config": model.config,
        "stats_hash": stats_hash(model.stats),
        "stats_metadata": model.stats.metadata(),
        "diagnostics": {k: v for k, v in model.diagnostics.items() if k != "thresholds"},
        "timings": model.timings,
        "amounts": None if model.amounts is None else model.amounts.to_dict(orient="records"),
        "versions": _versions(),
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        atomic_write(staging / "posterior.nc", lambda tmp: tree.to_netcdf(tmp))
        write_json(staging / "model.json", meta)
        with sigint_deferred():
            if folder.exists():          # a model saved before, perhaps beside other files: keep those
                for name in ("posterior.nc", "model.json"):
                    os.replace(staging / name, folder / name)
            else:
                os.chmod(staging, ordinary_mode(directory=True))     # not mkdtemp's 0700
                os.rename(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def load_model(cls, folder: Path, stats: StageStats | None = None):
    """Rebuild a saved model (see :meth:`funnelsim.model.funnel_model.FunnelModel.load`)."""
    import xarray as xr

    meta_path, nc_path = folder / "model.json", folder / "posterior.nc"
    for path in (meta_path, nc_path):
        if not path.exists():
            raise FunnelDataError("not a saved funnel model (missing file)", source=str(path),
                                  hint="Fit one with `funnelsim fit ... --out FOLDER`.")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise FunnelDataError(f"saved with model format {meta.get('format')}, this version reads {FORMAT}",
                              source=str(meta_path), hint="Refit the model with this version.")
    tree = xr.open_datatree(nc_path).load()
    table = tree["training_stats"].to_dataset().to_dataframe().reset_index(drop=True)
    # "stats_attrs": models saved before the statistics had their own type (same fields)
    saved = StageStats.from_metadata(table, meta.get("stats_metadata") or meta["stats_attrs"])
    if stats_hash(saved) != meta["stats_hash"]:
        raise FunnelDataError("posterior.nc and model.json do not belong together (statistics hash differs)",
                              source=str(folder), hint="Refit and save the model again.")
    if stats is not None:
        _check_fits(folder, saved.metadata(), stats.metadata(), same_stays=stats_hash(stats) == meta["stats_hash"])
    amounts = None if meta.get("amounts") is None else pd.DataFrame(meta["amounts"])
    model = cls(saved, amounts=amounts, sojourn=meta["sojourn"], model_config=meta["config"])
    model.idata = xr.DataTree.from_dict({name: tree[name].to_dataset() for name in ("posterior", "sample_stats")
                                         if name in tree.children})
    model.idata.attrs = dict(tree.attrs)
    model.timings = meta.get("timings", {})
    return model


# the settings a model is fitted with, as the options that set them
_SETTINGS = (("stages", "--stages"), ("won", "--won"), ("lost", "--lost"), ("segment_by", "--segment-by"),
             ("history_days", "--history-days"), ("every", "--drift"), ("as_of", "--as-of"))


def _check_fits(folder: Path, saved: dict, given: dict, *, same_stays: bool) -> None:
    """Refuse a saved model for statistics of other settings or other stays, naming the first
    setting that differs (saved value against given value). The stage order counts although
    the stays' counts do not depend on it: it decides which moves are forward."""
    def value(meta, key):
        return meta["funnel"][key] if key in meta["funnel"] else meta.get(key)

    def shown(v):
        if isinstance(v, list):
            return ",".join(v)
        return "none" if v is None else f"{v:g}" if isinstance(v, float) else str(v)

    for key, option in _SETTINGS:
        was, now = value(saved, key), value(given, key)
        if was != now:
            also = " (the same stages in another order)" if key == "stages" and sorted(was) == sorted(now) else ""
            raise FunnelDataError(f"the model was fitted with {option} {shown(was)}, not {shown(now)}{also}",
                                  source=str(folder), value=shown(now),
                                  hint=f"Pass {option} {shown(was)} to use this model, or refit it on these settings "
                                       "(drop --model).")
    if saved.get("segments") != given.get("segments"):
        raise FunnelDataError(f"the model was fitted on segments {shown(saved.get('segments'))}; this log has "
                              f"{shown(given.get('segments'))}", source=str(folder),
                              hint="Refit on this log (drop --model), or pass the log the model was fitted on.")
    if not same_stays:
        raise FunnelDataError("the model was fitted on other data (same settings, other stays: another log, or the "
                              "log has changed since)", source=str(folder),
                              hint="Refit on this log (drop --model), or pass the log the model was fitted on.")
