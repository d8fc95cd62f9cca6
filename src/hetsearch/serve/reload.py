"""A served index that follows its folder: after `index add`, `remove` or `rebuild` the server swaps
in the new version without dropping a request.

Index writes replace the folder atomically (`hetsearch.index.storage`), so a new version shows as
a new ``manifest.json`` (another inode). `LiveIndex` polls that file's identity every ``interval``
seconds; on a change it opens the new version in the background with the same contract check
(and search parameters), warms it up, and then replaces ``current`` with one reference
assignment. A request takes ``current`` once and keeps using that `GalleryIndex` to the end, so
requests in flight finish on the version they started with (its files stay readable: the old
folder's files are still open or memory-mapped). A version that cannot be opened (damaged, or
embedded by another gallery model) is not swapped in: the server keeps the version it has and
reports the reason in ``/health`` warnings.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Optional

from hetsearch.errors import HetsearchError
from hetsearch.index.gallery import GalleryIndex
from hetsearch.index.storage import MANIFEST_NAME

DEFAULT_INTERVAL_S = 1.0


class LiveIndex:
    def __init__(self, gallery: GalleryIndex, *, interval: Optional[float] = DEFAULT_INTERVAL_S,
                 warmup: Optional[Callable[[GalleryIndex], None]] = None, log: Callable[[str], None] = print):
        self.current = gallery
        self.path = Path(gallery.path)
        self.interval = interval
        self.warmup = warmup
        self.log = log
        self.reloads = 0
        self.error: Optional[str] = None   # why the newest version on disk is not served
        self._seen = self._signature()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _signature(self):
        try:
            stat = (self.path / MANIFEST_NAME).stat()
        except OSError:  # between the two renames of a swap, or the folder is gone
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def check(self) -> bool:
        """Swap in a new version when the folder holds one; True when it did."""
        with self._lock:
            signature = self._signature()
            if signature is None or signature == self._seen:
                return False
            try:
                fresh = GalleryIndex.open(self.path, **self.current.open_kwargs)
                if self.warmup is not None:
                    self.warmup(fresh)
            except HetsearchError as exc:
                self._seen = signature  # retried when the folder changes again
                self.error = f"a new version of the index could not be loaded, still serving revision " \
                             f"{self.current.manifest.get('revision')}: {exc}"
                self.log(f"warning: {self.error}")
                return False
            self._seen = signature
            previous = self.current
            self.current = fresh
            self.error = None
            self.reloads += 1
            self.log(f"index {self.path}: loaded revision {fresh.manifest.get('revision')} "
                     f"({len(fresh)} items; was revision {previous.manifest.get('revision')}, {len(previous)} items)")
            return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as exc:  # never let the watcher die silently
                self.error = f"index watcher: {type(exc).__name__}: {exc}"
                self.log(f"warning: {self.error}")

    def start(self) -> None:
        if self.interval and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="hetsearch-index-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
