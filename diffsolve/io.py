"""Atomic file writes: a temporary file in the destination's directory, then one rename.

Every file diffsolve writes (checkpoints, training state, tables, figures, samples) goes through
`atomic_write`, so a reader never sees a half-written file and a killed run leaves the previous
version in place. `directory_lock` keeps two runs from writing to one directory at once, and
`remove_stale_temporaries` clears what a killed writer left behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "directory_lock",
    "DirectoryInUseError",
    "remove_stale_temporaries",
]


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
        # mkstemp creates the file 0600; give it the mode open() would have (0666 less the umask), so
        # results and checkpoints stay readable to a group on a shared machine.
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    """The process's umask (read by setting it, then restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (see `atomic_write`).

    Args:
        path: The destination; its directory must exist.
        data: The bytes to write.

    Returns:
        The path written.
    """
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


class DirectoryInUseError(RuntimeError):
    """Another process holds the lock of a directory diffsolve writes to (e.g. a training run's `--out`)."""


LOCK_FILE = ".diffsolve.lock"


@contextlib.contextmanager
def directory_lock(directory: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold an exclusive lock on `directory` (created if needed) while the block runs.

    The lock is an `flock` on `directory/.diffsolve.lock`, which the operating system releases when
    the process exits, however it exits: a killed run never leaves a stale lock behind. The file
    records the holder's pid for the error message. Where `fcntl` does not exist (Windows) no lock
    is taken.

    Args:
        directory: The directory to lock.
        what: The argument that named it, for the error message (e.g. `"checkpoint_dir"`).

    Raises:
        DirectoryInUseError: If another process (or another open of the lock here) holds it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield directory
        return
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise DirectoryInUseError(
                f"{what} {str(directory)!r} is in use by another run (pid {holder}); wait for it to finish "
                "or choose another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield directory
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def remove_stale_temporaries(directory: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """Delete the temporary files `atomic_write` leaves when a process is killed mid-write.

    Call it only while holding the directory's lock (`directory_lock`), so no live writer's file is
    touched.

    Args:
        directory: The directory.
        names: The file names whose temporaries (`.NAME.*.tmp`) to remove.

    Returns:
        The paths removed.
    """
    removed = []
    for name in names:
        for tmp in Path(directory).glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
