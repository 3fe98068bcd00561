"""Writing outputs atomically: a temp file in the same folder, then a rename."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "write_json", "json_safe", "ordinary_mode"]


def atomic_write(path, write) -> Path:
    """Call ``write(tmp_path)`` then move the result onto ``path``.

    Nothing is left at ``path`` if ``write`` fails (or is interrupted), and a reader never
    sees a half-written file. The file gets the permissions any new file gets (0644 under
    the usual 022 umask), not the 0600 of a temp file. Every file funnelsim writes goes
    through here.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the suffix keeps the extension, for writers that choose a format by it (matplotlib)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, ordinary_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def ordinary_mode(directory: bool = False) -> int:
    """The mode a new file (or folder) gets under the process's umask: 0644 (0755) under the
    usual 022. Reading the umask means setting it, so it is set straight back."""
    mask = os.umask(0o022)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


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
