"""Every notebook in notebooks/ runs top to bottom without an error (as CI runs them).

The kernel is this interpreter (the project's venv): a temporary ``python3`` kernelspec
whose argv names ``sys.executable`` comes first on ``JUPYTER_PATH``, and
``test_kernel_is_this_python`` checks it. The kernel's scratch files (matplotlib and
IPython caches, connection files, bytecode) go to a temporary folder, and the test checks
the notebook leaves the notebooks folder as it found it.

A notebook that needs a dataset outside the repository says so in its metadata
(``"funnelsim": {"needs_data": ["olist"]}``) and is skipped when the data is absent.
"""

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from .olist import ENV_VAR, olist_data_dir, olist_data_path  # noqa: E402

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
TIMEOUT = 600  # seconds per cell
DATASETS = {"olist": (olist_data_dir, lambda: f"Olist data not found in {olist_data_path()} (set ${ENV_VAR})")}


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """Environment for the kernel; also points this process's Jupyter paths at tmp_path."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (funnelsim tests)",
        "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))  # searched before user/system dirs
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))  # connection files
    scratch = {
        "MPLCONFIGDIR": tmp_path / "matplotlib",
        "IPYTHONDIR": tmp_path / "ipython",
        "TMPDIR": tmp_path / "tmp",
    }
    for folder in scratch.values():
        folder.mkdir()
    # the notebooks find the data by $FUNNELSIM_OLIST_DIR or beside the working folder; a clone
    # elsewhere (CI) is told where the tests found it
    return {**os.environ, **{k: str(v) for k, v in scratch.items()},
            "PYTHONDONTWRITEBYTECODE": "1", ENV_VAR: str(olist_data_path())}


def run(nb, cwd: Path, env: dict):
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=TIMEOUT,
                                     resources={"metadata": {"path": str(cwd)}})
    return client.execute(env=env, cwd=str(cwd))


def files_under(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.mark.slow
def test_kernel_is_this_python(kernel_env, tmp_path):
    probe = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import json, sys; print(json.dumps([sys.executable, sys.prefix]))")])
    out = run(probe, tmp_path, kernel_env)
    executable, prefix = json.loads(out.cells[0].outputs[0]["text"])
    assert (executable, prefix) == (sys.executable, sys.prefix)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_env):
    nb = nbformat.read(path, as_version=4)
    for dataset in nb.metadata.get("funnelsim", {}).get("needs_data", []):
        present, why = DATASETS[dataset]
        if present() is None:
            pytest.skip(f"{path.name}: {why()}")
    before = files_under(NOTEBOOK_DIR)
    run(nb, NOTEBOOK_DIR, kernel_env)  # raises CellExecutionError (cell + traceback) on any error
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    assert files_under(NOTEBOOK_DIR) == before, "the notebook wrote to notebooks/"


def test_committed_notebooks_have_no_outputs():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
                 and (c.get("outputs") or c.get("execution_count") is not None)]
        assert not dirty, f"{path.name}: clear the outputs of cell(s) {dirty} before committing"
