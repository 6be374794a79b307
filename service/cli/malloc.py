"""glibc malloc settings for every tallenne process, applied before any thread starts."""

from __future__ import annotations

import ctypes


def tune_malloc(arenas: int = 2, mmap_threshold: int = 4 * 1024**2) -> None:
    """Cap glibc's malloc arenas and give large buffers back to the system, before any
    thread starts.

    Each S3 worker thread would otherwise get an arena of its own, and freed audio buffers
    stay spread over them: RSS then grows with the thread count instead of the work. Upload
    parts (5 and 16 MiB) are mapped on their own and unmapped when freed, rather than left
    in the heap; the 1 MiB replay chunks stay below the threshold and reuse heap memory.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
        libc.mallopt(m_arena_max, arenas)
        libc.mallopt(m_mmap_threshold, mmap_threshold)
        # Fixing the mmap threshold also fixes the trim threshold (128 KiB by default):
        # keep some free heap so replay's chunks do not fault their pages in again.
        libc.mallopt(m_trim_threshold, 2 * mmap_threshold)
    except OSError:
        pass  # not glibc: nothing to tune
