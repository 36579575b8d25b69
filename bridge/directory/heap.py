"""Giving the heap a load left free back to the system (glibc's malloc_trim), where there is one.

Loading and merging a directory makes ~1 KiB of short-lived objects per person. Python frees
them, but glibc keeps the pages in its heaps for reuse: after a 50,000-person load the daemon's
RSS stayed ~20 MiB above what it holds (bench/directory_memory.py). malloc_trim(0) returns the
free pages of every heap; it takes milliseconds and runs once per load, not per lookup. Where
the C library has none (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim  # the process's own C library
    except (OSError, AttributeError):
        return None
    return trim


_MALLOC_TRIM = _find_malloc_trim()


def give_back_free_heap() -> None:
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
