"""Atomic, crash-safe writes of an index folder.

An index folder is never modified in place. A writer builds the new version in a temporary
folder next to the target (``.NAME.tmp-*``; for updates it first copies the current files there),
flushes every file to disk and then swaps: ``target -> .NAME.old``, ``tmp -> target``, delete
``.NAME.old``. Whatever point a crash hits, one complete version survives:

* during the build: the target is untouched; the stale temporary folder is removed by the next
  writer;
* after ``target -> .NAME.old``: the target is missing; `recover` (run by every open and every
  write) renames the backup back;
* after ``tmp -> target``: the new version is complete; the leftover backup is removed later.

Writers hold an exclusive lock (``.NAME.write.lock``) for the whole write, so concurrent writers
queue instead of losing updates. Readers hold a shared ``.NAME.swap.lock`` while they load the
files, and the writer holds it exclusively only for the two renames, so a reader never mixes files
of two versions. Readers load everything they need into memory (or keep already-open files), so
the swap never disturbs a running server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from hetsearch.errors import HetsearchError

try:  # POSIX advisory locks; on other systems writes are still atomic, just not serialised
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

MANIFEST_NAME = "manifest.json"
# Test hook: when this environment variable names a write phase, the writer prints
# "PAUSED <phase>" and sleeps there, so a test can kill it at exactly that point.
PAUSE_ENV = "HETSEARCH_INDEX_PAUSE_AT"


class IndexWriteError(HetsearchError):
    """An index folder cannot be written (target exists, no permission, ...)."""


def _sidecar(target: Path, suffix: str) -> Path:
    return target.parent / f".{target.name}.{suffix}"


def backup_path(target: Path) -> Path:
    return _sidecar(target, "old")


def pause_point(phase: str) -> None:
    if os.environ.get(PAUSE_ENV) == phase:
        sys.stdout.flush()
        os.write(sys.stdout.fileno(), f"PAUSED {phase}\n".encode())  # one write: atomic on a pipe
        while True:
            time.sleep(3600)


@contextlib.contextmanager
def _lock(path: Path, exclusive: bool) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        if exclusive:
            raise IndexWriteError(f"{path}: cannot create the lock file (is the folder writable?)") from None
        yield  # read-only location: nobody can write there either
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def read_lock(target: Path):
    """Shared lock held by readers while they load an index's files."""
    return _lock(_sidecar(target, "swap.lock"), exclusive=False)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for item in folder.iterdir():
        if item.is_file():
            with open(item, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(folder)


def recover(target: Path) -> bool:
    """Repair the state a crashed writer may leave; returns True when something was restored.

    Target missing but backup present: the crash hit between the two renames, so the backup is
    the last complete version and becomes the target again.
    """
    target = Path(target)
    backup = backup_path(target)
    if target.exists() or not backup.exists():
        return False
    with _lock(_sidecar(target, "swap.lock"), exclusive=True):
        if target.exists() or not backup.exists():  # a writer finished its swap meanwhile
            return False
        os.rename(backup, target)
        _fsync_dir(target.parent)
        return True


def _remove_leftovers(target: Path) -> None:
    """Called with the write lock held: every temporary folder belongs to a dead writer."""
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    backup = backup_path(target)
    if backup.exists() and target.exists():
        shutil.rmtree(backup, ignore_errors=True)


@contextlib.contextmanager
def write_transaction(target: str | os.PathLike, *, copy_existing: bool) -> Iterator[Path]:
    """Yield a temporary folder holding a copy of the current version (``copy_existing``) or
    nothing; when the block finishes without an exception its content replaces ``target``
    atomically. On an exception the target is left as it was."""
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(_sidecar(target, "write.lock"), exclusive=True):
        recover(target)
        _remove_leftovers(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes a private (0700) folder
            if copy_existing:
                for item in target.iterdir():
                    if item.is_file():
                        shutil.copy2(item, tmp / item.name)
            pause_point("copied")
            yield tmp
            _fsync_tree(tmp)
            pause_point("before_swap")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        backup = backup_path(target)
        with _lock(_sidecar(target, "swap.lock"), exclusive=True):
            if target.exists():
                os.rename(target, backup)
                pause_point("after_backup")
            os.rename(tmp, target)
            _fsync_dir(target.parent)
        pause_point("after_swap")
        shutil.rmtree(backup, ignore_errors=True)
