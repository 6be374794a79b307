"""The key snapshot's life in the service: the key bucket's store, the overwrite that follows
each erasure at once, and a background retry for an overwrite that failed (S3 away)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from service.http.keys import RESOURCES
from service.ops.tasks import stop_task
from service.resources import Resources
from storage import key_snapshot

logger = logging.getLogger(__name__)

RETRY_EVERY_S = 60.0


async def follow_erasures(resources: Resources) -> key_snapshot.SnapshotInfo | None:
    """Overwrite the key snapshot if a key left the store since it was written (called right
    after an erasure or a purge commits). A failure is logged and retried in the
    background; the erasure itself stands."""
    try:
        return await key_snapshot.refresh_if_due(resources.pool, resources.key_objects,
                                                 resources.keyring.masters)
    except Exception as exc:
        logger.error("the key snapshot could not be overwritten; retrying in the background",
                     extra={"error": repr(exc)})
        return None


async def _retry_forever(resources: Resources) -> None:
    while True:
        await asyncio.sleep(RETRY_EVERY_S)
        await follow_erasures(resources)


async def key_store_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_retry_forever(app[RESOURCES]), name="key-snapshot")
    yield
    await stop_task(task)
