"""A served index (and query model) that follows its files: after `index add`, `remove` or
`rebuild`, or a refreshed query model installed over the served file (`hetsearch refresh
--install`), the server swaps in the new version without dropping a request.

Index writes replace the folder atomically (`hetsearch.index.storage`), so a new version shows as
a new ``manifest.json`` (another inode). `LiveIndex` polls that file's identity every ``interval``
seconds; on a change it opens the new version in the background with the same contract check
(and search parameters), warms it up, and then replaces ``current`` with one reference
assignment. A request takes ``current`` once and keeps using that `GalleryIndex` to the end, so
requests in flight finish on the version they started with (its files stay readable: the old
folder's files are still open or memory-mapped). A version that cannot be opened (damaged, or
embedded by another gallery model) is not swapped in: the server keeps the version it has and
reports the reason in ``/health`` warnings.

The query model is followed the same way when `LiveIndex` is given its file and a loader: a new
file (another inode, size or mtime) is loaded, checked against the served index (the declared
contract, and with ``verify`` warn/refuse the measured M(q, g) of `hetsearch.index.verify`),
warmed up, and swapped in together with the index it was checked against: a request reads one
`Served` pair (index, encoder) and uses it to the end, so no request mixes two query models.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from hetsearch.errors import HetsearchError
from hetsearch.index.gallery import GalleryIndex
from hetsearch.index.storage import MANIFEST_NAME
from hetsearch.index.verify import run_verification

DEFAULT_INTERVAL_S = 1.0


def _file_signature(path: Path):
    try:
        stat = path.stat()
    except OSError:  # between the two renames of a swap, or the file is gone
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


@dataclass(frozen=True)
class Served:
    """What one request uses from start to end: one index version and the query model checked against it."""

    gallery: GalleryIndex
    encoder: Any = None      # a hetsearch.export.encoders.QueryEncoder (None: index only)


class LiveIndex:
    def __init__(self, gallery: GalleryIndex, *, interval: Optional[float] = DEFAULT_INTERVAL_S,
                 warmup: Optional[Callable[..., None]] = None, log: Callable[[str], None] = print,
                 encoder=None, model_path: str | Path | None = None,
                 load_encoder: Optional[Callable[[Path], Any]] = None, verify: str = "off"):
        self.state = Served(gallery, encoder)
        self.path = Path(gallery.path)
        self.model_path = Path(model_path) if model_path is not None and load_encoder is not None else None
        self.load_encoder, self.verify = load_encoder, verify
        self.interval = interval
        self.warmup = warmup     # warmup(gallery, encoder)
        self.log = log
        self.reloads = 0
        self.model_reloads = 0
        self.error: Optional[str] = None   # why the newest version on disk is not served
        self._seen = self._signature()
        self._seen_model = _file_signature(self.model_path) if self.model_path else None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def current(self) -> GalleryIndex:
        return self.state.gallery

    @property
    def encoder(self):
        return self.state.encoder

    def _signature(self):
        return _file_signature(self.path / MANIFEST_NAME)

    def serve_with(self, encoder) -> None:
        """The query model served with the index, when the watcher was made without one."""
        if self.state.encoder is None:
            self.state = Served(self.state.gallery, encoder)

    def check(self) -> bool:
        """Swap in a new index version or query model when the files hold one; True when it did."""
        with self._lock:
            swapped = self._check_index()
            return self._check_model() or swapped

    def _warm(self, gallery: GalleryIndex, encoder) -> None:
        if self.warmup is not None:
            self.warmup(gallery, encoder)

    def _check_index(self) -> bool:
        signature = self._signature()
        if signature is None or signature == self._seen:
            return False
        try:
            fresh = GalleryIndex.open(self.path, **self.current.open_kwargs)
            self._warm(fresh, self.encoder)
        except HetsearchError as exc:
            self._seen = signature  # retried when the folder changes again
            self.error = f"a new version of the index could not be loaded, still serving revision " \
                         f"{self.current.manifest.get('revision')}: {exc}"
            self.log(f"warning: {self.error}")
            return False
        self._seen = signature
        previous = self.current
        self.state = Served(fresh, self.encoder)
        self.error = None
        self.reloads += 1
        self.log(f"index {self.path}: loaded revision {fresh.manifest.get('revision')} "
                 f"({len(fresh)} items; was revision {previous.manifest.get('revision')}, {len(previous)} items)")
        return True

    def _check_model(self) -> bool:
        if self.model_path is None:
            return False
        signature = _file_signature(self.model_path)
        if signature is None or signature == self._seen_model:
            return False
        self._seen_model = signature  # a file that fails is retried when it changes again
        try:
            encoder = self.load_encoder(self.model_path)
            kwargs = {**self.current.open_kwargs, "query_meta": encoder.meta}
            gallery = GalleryIndex.open(self.path, **kwargs)   # the declared contract, for the new model
            gallery.warnings += run_verification(gallery, encoder, self.verify)
            self._warm(gallery, encoder)
        except HetsearchError as exc:
            self.error = (f"the query model at {self.model_path} could not be swapped in, still serving "
                          f"{self.encoder.meta.model_id if self.encoder is not None else 'the previous one'}: {exc}")
            self.log(f"warning: {self.error}")
            return False
        previous = self.encoder
        self.state = Served(gallery, encoder)
        self._seen = self._signature()
        self.error = None
        self.model_reloads += 1
        self.log(f"query model {self.model_path}: now {encoder.meta.model_id} (was "
                 f"{previous.meta.model_id if previous is not None else 'none'})")
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
