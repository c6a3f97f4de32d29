"""Atomic file writes: a temporary file in the destination's directory, then one rename.

Every file diffsolve writes (checkpoints, training state, tables, figures, samples) goes through
`atomic_write`, so a reader never sees a half-written file and a killed run leaves the previous
version in place.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_bytes"]


def atomic_write(
    path: str | os.PathLike, write: Callable[[Path], None], *, keep_suffix: bool = False
) -> Path:
    """Call `write(tmp)` on a temporary path beside `path`, flush it to disk, then rename it to `path`.

    Args:
        path: The destination; its directory must exist.
        write: Writes the whole file to the path it is given.
        keep_suffix: Give the temporary file `path`'s suffix (for writers that pick a format from it,
            like matplotlib's `savefig`); otherwise it ends in `.tmp`.

    Returns:
        The path written.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix if keep_suffix else ".tmp"
    )
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (see `atomic_write`).

    Args:
        path: The destination; its directory must exist.
        data: The bytes to write.

    Returns:
        The path written.
    """
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))
