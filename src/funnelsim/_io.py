"""Writing outputs atomically: a temp file in the same folder, then a rename."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "write_json", "json_safe"]


def atomic_write(path, write) -> Path:
    """Call ``write(tmp_path)`` then move the result onto ``path``.

    Nothing is left at ``path`` if ``write`` fails, and a reader never sees a
    half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def json_safe(value):
    """Recursively turn numpy scalars into Python ones and NaN/inf into None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path, data) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    text = json.dumps(json_safe(data), indent=2) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
