"""The service's analysis worker: a call is analysed right after its upload is acknowledged,
from the spool file the upload left (no second read of S3), at a lower CPU priority than
ingest and replay, so it is searchable by its analysis seconds after its 201.

The queue is bounded: a full queue makes the next upload wait for room. Calls whose analysis
was lost (a crash, a shutdown with work queued) are left without one, for `tallenne analyse
--missing`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from service.http.keys import ANALYSIS_QUEUE, RESOURCES
from service.recordings.analysis import analyse_spooled, analyse_stored
from service.resources import Resources

logger = logging.getLogger(__name__)

QUEUE_LIMIT = 64


@dataclass(frozen=True)
class Job:
    recording_id: uuid.UUID
    spool: Path | None  # the call's audio, owned by the job; None to read it from S3


class AnalysisQueue:
    def __init__(self, resources: Resources) -> None:
        self._resources = resources
        self._jobs: asyncio.Queue[Job] = asyncio.Queue(QUEUE_LIMIT)
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._worker = asyncio.create_task(self._run())

    async def submit(self, recording_id: uuid.UUID, spool: Path | None) -> None:
        """Queue a stored call; the queue now owns (and removes) `spool`."""
        await self._jobs.put(Job(recording_id, spool))

    async def idle(self) -> None:
        """Wait until every queued call is analysed."""
        await self._jobs.join()

    async def _run(self) -> None:
        while True:
            job = await self._jobs.get()
            try:
                await self._analyse(job)
            except Exception as exc:
                logger.warning("recording not analysed", extra={
                    "recording_id": str(job.recording_id), "error": exc.__class__.__name__})
            finally:
                if job.spool is not None:
                    await asyncio.to_thread(job.spool.unlink, True)
                self._jobs.task_done()

    async def _analyse(self, job: Job) -> None:
        if job.spool is None:
            await analyse_stored(self._resources, job.recording_id)
        else:
            await analyse_spooled(self._resources, job.recording_id, job.spool)

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        while not self._jobs.empty():
            job = self._jobs.get_nowait()
            if job.spool is not None:
                await asyncio.to_thread(job.spool.unlink, True)


async def analysis_queue_ctx(app: web.Application) -> AsyncIterator[None]:
    queue = AnalysisQueue(app[RESOURCES])
    queue.start()
    app[ANALYSIS_QUEUE] = queue
    yield
    await queue.stop()
