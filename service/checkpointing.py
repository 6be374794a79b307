"""The background task that writes a checkpoint of the audit head to S3 every few minutes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from service.tasks import stop_task
from service.typedefs import OBJECTS, POOL
from storage.checkpoints import latest_checkpoint_seq, write_checkpoint

logger = logging.getLogger(__name__)

INTERVAL_S = 300.0


async def checkpoint_once(app: web.Application) -> bool:
    """Write a checkpoint when the head moved since the last one; True if one was written."""
    pool = app[POOL]
    async with pool.acquire() as conn:
        head = await conn.fetchval("SELECT seq FROM audit_head")
        last = await latest_checkpoint_seq(conn)
    if head is None or int(head) == 0 or (last is not None and last >= int(head)):
        return False
    checkpoint = await write_checkpoint(pool, app[OBJECTS])
    logger.info("audit checkpoint written",
                extra={"seq": checkpoint.seq, "locked": checkpoint.locked})
    return True


async def _checkpoint_forever(app: web.Application, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await checkpoint_once(app)
        except Exception as exc:  # noqa: BLE001 - a failed round must not end the task
            logger.error("audit checkpoint failed", extra={"error": repr(exc)})


async def checkpoint_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_checkpoint_forever(app, INTERVAL_S), name="audit-checkpoints")
    yield
    await stop_task(task)
