"""Keeping a server's resident memory near what it is using (glibc only; a no-op elsewhere).

Decoding a large upload allocates tens to hundreds of MB in Pillow's 16 MB blocks. With glibc's
default *dynamic* mmap threshold, the first such block freed raises the threshold, so later blocks
come from the heap of whichever worker thread decoded them and stay resident after they are freed:
over many requests every thread of the pool keeps its own high-water mark, and the server's memory
grows far past the memory any single request needs. A fixed threshold (`MMAP_THRESHOLD`) makes
every large buffer a separate mapping that is returned to the system as soon as it is freed;
`trim` hands back what small allocations left free at the top of the heaps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3       # glibc mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD = 1 << 20    # allocations of 1 MiB and more get their own mapping

_libc = None


def _glibc():
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim"):
                    _libc = libc
            except OSError:
                pass
    return _libc or None


def release_freed_memory_promptly() -> bool:
    """Fix glibc's mmap threshold for this process; True when it applied."""
    libc = _glibc()
    return bool(libc is not None and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def trim() -> None:
    """Return free heap memory to the system (after a large decode)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
