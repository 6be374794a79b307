"""Where calls are analysed: a few threads of their own that run niced, so that analysis
yields the CPU to ingest and replay. One per process, held by its resources; calls beyond
its threads wait their turn, their audio in their spool files."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from schemas.analysis import ChannelRole
from storage.audio.analysis import Analysed, UndecodableAudio, analyse_file

logger = logging.getLogger(__name__)

ANALYSIS_NICENESS = 10
ANALYSIS_THREADS = 2


def _lower_priority() -> None:
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), ANALYSIS_NICENESS)


class Analyser:
    def __init__(self, threads: int = ANALYSIS_THREADS) -> None:
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="analysis",
                                           initializer=_lower_priority)

    async def analyse(
        self, path: Path, roles: Sequence[ChannelRole] | None, duration_s: float
    ) -> Analysed | None:
        """The call's analysis, or None when its audio cannot be decoded for it (the call
        is stored all the same; `tallenne analyse --missing` tries again)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._threads, analyse_file, path, roles,
                                              duration_s)
        except UndecodableAudio as exc:
            logger.warning("recording not analysed", extra={"error": str(exc)})
        except Exception as exc:
            logger.warning("recording not analysed", extra={"error": exc.__class__.__name__})
        return None

    def close(self) -> None:
        """Stop taking calls; one being analysed finishes in its thread."""
        self._threads.shutdown(wait=False, cancel_futures=True)
