"""The key snapshot's life in the service: the key bucket's store, the overwrite that follows
each erasure at once, and a background retry for an overwrite that failed (S3 away)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from service.http.keys import KEY_OBJECTS, KEYRING, POOL, SETTINGS
from service.ops.tasks import stop_task
from service.settings import Settings
from storage import key_snapshot
from storage.objects import ObjectStore

logger = logging.getLogger(__name__)

RETRY_EVERY_S = 60.0


def key_object_store(settings: Settings) -> ObjectStore:
    """A client of the key bucket (created on the first snapshot written)."""
    assert settings.s3_endpoint and settings.s3_access_key and settings.s3_secret_key
    return ObjectStore(
        settings.s3_endpoint, settings.s3_access_key.get_secret_value(),
        settings.s3_secret_key.get_secret_value(), settings.key_bucket,
        region=settings.s3_region, secure=settings.s3_secure, threads=2,
        timeout_s=settings.s3_timeout_s,
    )


async def follow_erasures(app: web.Application) -> key_snapshot.SnapshotInfo | None:
    """Overwrite the key snapshot if a key left the store since it was written (called right
    after an erasure or a purge commits). A failure is logged and retried in the
    background; the erasure itself stands."""
    try:
        return await key_snapshot.refresh_if_due(app[POOL], app[KEY_OBJECTS],
                                                 app[KEYRING].masters)
    except Exception as exc:  # noqa: BLE001 - the background task retries
        logger.error("the key snapshot could not be overwritten; retrying in the background",
                     extra={"error": repr(exc)})
        return None


async def _retry_forever(app: web.Application) -> None:
    while True:
        await asyncio.sleep(RETRY_EVERY_S)
        await follow_erasures(app)


async def key_store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = key_object_store(app[SETTINGS])
    app[KEY_OBJECTS] = store
    task = asyncio.create_task(_retry_forever(app), name="key-snapshot")
    yield
    await stop_task(task)
    await store.close()
