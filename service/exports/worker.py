"""The export worker each replica runs (one replica at a time per job, by lease), and the
export context it and a one-off CLI export carry jobs out with."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from aiohttp import web

from service.exports import jobs as export_jobs
from service.exports.jobs import ExportContext, worker_name
from service.http.keys import EXPORT_WAKE, EXPORT_WORKER, EXPORTS, RESOURCES, SETTINGS
from service.ops.tasks import stop_task
from service.resources import Resources, object_store
from storage.objects import ObjectStore

logger = logging.getLogger(__name__)


@asynccontextmanager
async def export_context(resources: Resources) -> AsyncIterator[ExportContext]:
    """The context jobs run in; the export bucket's client is made when a job first needs
    it and closed on the way out."""
    settings = resources.settings
    targets: list[ObjectStore] = []

    def target() -> ObjectStore:
        if not targets:
            targets.append(object_store(settings, settings.export_target_bucket, threads=4))
        return targets[0]

    try:
        yield ExportContext(
            pool=resources.pool, objects=resources.objects, target=target,
            masters=resources.keyring.masters, audit=resources.audit,
            public_url=settings.public_url, lease=timedelta(seconds=settings.export_lease_s),
        )
    finally:
        for store in targets:
            await store.close()


async def work_exports(ctx: ExportContext, wake: asyncio.Event, owner: str,
                       poll_s: float) -> None:
    """Run jobs while there are any; then wait to be woken or for the next look."""
    while True:
        wake.clear()
        try:
            while await export_jobs.run_next(ctx, owner):
                pass
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("export worker failed; trying again")
        try:
            await asyncio.wait_for(wake.wait(), poll_s)
        except TimeoutError:
            pass


async def export_worker_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with export_context(app[RESOURCES]) as ctx:
        app[EXPORTS] = ctx
        wake = app[EXPORT_WAKE] = asyncio.Event()
        if settings.export_enabled:
            app[EXPORT_WORKER] = asyncio.create_task(
                work_exports(ctx, wake, worker_name(), settings.export_poll_s),
                name="export-worker")
        yield
        await stop_task(app.get(EXPORT_WORKER))
