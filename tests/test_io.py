"""Tests for funnelsim._io: one atomic writer, ordinary permissions, nothing half-written."""

import json
import os
import stat

import pytest

from funnelsim._io import atomic_write, write_json
from funnelsim.data import synth


@pytest.fixture
def umask():
    """Set the process umask for one test and put the old one back."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    write_json(tmp_path / "out.json", {"a": 1})
    atomic_write(tmp_path / "plain.txt", lambda tmp: tmp.write_text("x"))
    assert mode(tmp_path / "out.json") == expected
    assert mode(tmp_path / "plain.txt") == expected


def test_synth_writes_through_the_same_writer(tmp_path, umask):
    umask(0o022)
    synth.write(tmp_path / "events.csv", 30, seed=1)
    for name in ("events.csv", "events.truth.json"):
        assert mode(tmp_path / name) == 0o644
    assert json.loads((tmp_path / "events.truth.json").read_text())["as_of"]


def test_a_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.png"

    def half(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half)
    assert list(tmp_path.iterdir()) == []


def test_replacing_keeps_readers_safe_and_the_extension(tmp_path):
    seen = []
    target = tmp_path / "chart.png"
    target.write_text("old")
    atomic_write(target, lambda tmp: (seen.append(tmp.suffix), tmp.write_text("new")))
    assert seen == [".png"]     # matplotlib picks the format from it
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["chart.png"]
