"""Ctrl-C stops fit, forecast and backtest within seconds: exit 130, one line on stderr, no
traceback, no output written, no worker process left; in the API (a Jupyter interrupt is a
SIGINT to the kernel) a fit raises KeyboardInterrupt rather than returning the draws made so
far. The CLI tests send a real SIGINT to a subprocess once it is sampling (a thread named
nutpie-worker exists), with draws enough to sample for minutes."""

import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from funnelsim.data.events import FunnelDefinition

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads threads and children in /proc")

STAGES = ("Prospecting", "Qualified", "Proposal", "Negotiation")
FUNNEL = ["--stages", ",".join(STAGES), "--won", "Won", "--lost", "Lost"]
LONG = ["--draws", "200000", "--tune", "100", "--chains", "2"]   # minutes of sampling, without the fix
BOUND = 15          # seconds from SIGINT to exit
STARTUP = 240       # seconds to wait for sampling to begin (a cold compile cache is slow)


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    """One small log, so every test compiles (or loads) the same model shape."""
    path = tmp_path_factory.mktemp("interrupt") / "events.csv"
    subprocess.run([sys.executable, "-m", "funnelsim.cli.app", "synth", str(path), "--deals", "300", "--seed", "1",
                    "--weeks", "30"], check=True, capture_output=True)
    return path


def _thread_names(pid: int) -> list[str]:
    names = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:
            continue
    return names


def _children(pid: int) -> set[int]:
    """Descendants of ``pid`` (from the ppid field of /proc/*/stat)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _sampling(pid: int) -> bool:
    return any(name.startswith("nutpie-worker") for p in {pid} | _children(pid) for name in _thread_names(p))


def interrupt_when_sampling(args, *, group: bool):
    """Start the CLI, send SIGINT (to its process group, as a terminal's Ctrl-C does, or to
    it alone) two seconds after sampling began; returns (exit code, seconds from SIGINT to
    exit, stderr, pids of the children it had)."""
    proc = subprocess.Popen([sys.executable, "-m", "funnelsim.cli.app", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP
        while not _sampling(proc.pid):
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.monotonic() < deadline, "sampling never began"
            time.sleep(0.1)
        time.sleep(2)
        children = _children(proc.pid)
        sent = time.monotonic()
        if group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=BOUND)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {BOUND} s after SIGINT")
        elapsed = time.monotonic() - sent
        stderr = proc.communicate()[1].decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, elapsed, stderr, children


def assert_stopped_cleanly(code, elapsed, stderr, children):
    assert code == 130, stderr
    assert elapsed < BOUND
    assert "Traceback" not in stderr and "Error" not in stderr, stderr
    assert stderr.rstrip().endswith("interrupted"), stderr
    deadline = time.monotonic() + 5            # the resource tracker ends when its parent has
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if _alive(pid)], "a child process outlived the interrupt"


def test_ctrl_c_stops_a_fit_and_saves_nothing(events, tmp_path):
    out = tmp_path / "model"
    result = interrupt_when_sampling(["fit", events, *FUNNEL, *LONG, "--out", out], group=True)
    assert_stopped_cleanly(*result)
    assert list(tmp_path.iterdir()) == []      # no model folder, no staging folder


def test_ctrl_c_stops_a_forecast_and_writes_no_json(events, tmp_path):
    out = tmp_path / "forecast.json"
    result = interrupt_when_sampling(["forecast", events, *FUNNEL, *LONG, "--horizon", 30, "--json", out],
                                     group=True)
    assert_stopped_cleanly(*result)
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_stops_a_backtest_and_its_workers(events, tmp_path):
    """Two workers fitting, a third origin waiting: the workers are terminated (they block
    SIGINT, so they are not stopped by the Ctrl-C they get too, nor print tracebacks; the
    parent alone decides) and the waiting origin never starts."""
    out = tmp_path / "backtest.json"
    code, elapsed, stderr, children = interrupt_when_sampling(
        ["backtest", events, *FUNNEL, *LONG, "--origins", "2024-04-30,2024-05-31,2024-06-30", "--horizon", 30,
         "--workers", 2, "--json", out], group=True)
    assert len(children) >= 2                  # the workers (and multiprocessing's resource tracker)
    assert_stopped_cleanly(code, elapsed, stderr, children)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the API

def _model(events):
    from funnelsim.model.funnel_model import FunnelModel

    return FunnelModel.from_events(events, FunnelDefinition(STAGES, ("Won",), ("Lost",)), every=None)


@pytest.fixture(scope="module")
def two_fits(events):
    """Two short fits of the same statistics (a model saved, then a refit saved over it)."""
    fits = []
    for draws, seed in ((30, 1), (40, 2)):
        model = _model(events)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(draws=draws, tune=30, chains=1, random_seed=seed)
        fits.append(model)
    return fits


def test_an_interrupted_nutpie_fit_raises_and_stops_sampling(events):
    """SIGINT to the main thread (what a Jupyter interrupt is) while nutpie samples: the fit
    raises KeyboardInterrupt at once (nutpie's own blocking wait returns the draws so far)
    and the sampler's threads end."""
    model = _model(events)
    me = os.getpid()
    fired = []

    def interrupt_once_sampling():
        deadline = time.monotonic() + STARTUP
        while not any(n.startswith("nutpie-worker") for n in _thread_names(me)) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1)
        fired.append(time.monotonic())
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    helper = threading.Thread(target=interrupt_once_sampling, daemon=True)
    helper.start()
    with pytest.raises(KeyboardInterrupt):
        model.fit(draws=200_000, tune=100, chains=2, random_seed=1)
    assert fired and time.monotonic() - fired[0] < 5
    assert model.idata is None
    deadline = time.monotonic() + 5
    while any(n.startswith("nutpie-worker") for n in _thread_names(me)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(n.startswith("nutpie-worker") for n in _thread_names(me))


def test_an_interrupted_pymc_fit_raises(events, monkeypatch):
    """PyMC catches KeyboardInterrupt and returns the draws so far; the fit re-raises it."""
    import pymc

    sample = pymc.sample

    def sample_interrupted_at_draw_50(*args, **kwargs):
        def callback(trace, draw):
            if draw.draw_idx == 50:
                os.kill(os.getpid(), signal.SIGINT)
        return sample(*args, callback=callback, **kwargs)

    monkeypatch.setattr(pymc, "sample", sample_interrupted_at_draw_50)
    model = _model(events)
    with pytest.raises(KeyboardInterrupt):
        model.fit(draws=2000, tune=20, chains=1, sampler="pymc", random_seed=1)
    assert model.idata is None


@pytest.mark.parametrize("existing", [False, True], ids=["new-folder", "over-a-saved-model"])
@pytest.mark.parametrize("during", ["posterior.nc", "model.json"])
def test_an_interrupted_save_leaves_no_half_model(two_fits, tmp_path, monkeypatch, existing, during):
    """Ctrl-C while either file is written: no folder (or the model saved before, whole)."""
    import numpy as np

    from funnelsim.model import persist
    from funnelsim.model.funnel_model import FunnelModel

    earlier, model = two_fits
    folder = tmp_path / "model"
    if existing:
        earlier.save(folder)
        (folder / "notes.txt").write_text("mine")
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
    write = persist.atomic_write if during == "posterior.nc" else persist.write_json

    def interrupted(path, *args):
        if Path(path).name == during:
            raise KeyboardInterrupt
        return write(path, *args)

    monkeypatch.setattr(persist, "atomic_write" if during == "posterior.nc" else "write_json", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.save(folder)
    if existing:
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
        assert FunnelModel.load(folder).idata.posterior.sizes["draw"] == 30
    else:
        assert not folder.exists()
    assert [p.name for p in tmp_path.iterdir()] == (["model"] if existing else [])
    monkeypatch.undo()
    model.save(folder)
    assert np.array_equal(FunnelModel.load(folder).idata.posterior["pi"].values, model.idata.posterior["pi"].values)
    assert (folder / "notes.txt").exists() == existing
