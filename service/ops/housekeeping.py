"""The schedule of housekeeping: ended sessions, old login failures and idempotency keys are
deleted every few minutes, apart from the daily retention purge."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
from aiohttp import web

from service.http.keys import POOL, SETTINGS
from service.ops.tasks import stop_task
from service.settings import Settings
from storage.housekeeping import Housekept, purge_expired_access_rows

logger = logging.getLogger(__name__)

INTERVAL_S = 600.0


async def housekeep_once(pool: asyncpg.Pool, settings: Settings) -> Housekept:
    async with pool.acquire() as conn:
        done = await purge_expired_access_rows(
            conn, session_idle=timedelta(minutes=settings.session_idle_minutes),
            session_absolute=timedelta(hours=settings.session_absolute_hours))
    if done.sessions or done.login_failures or done.idempotency_keys:
        logger.info("expired access rows deleted",
                    extra={"sessions": done.sessions, "login_failures": done.login_failures,
                           "idempotency_keys": done.idempotency_keys})
    return done


async def _forever(pool: asyncpg.Pool, settings: Settings) -> None:
    while True:
        await asyncio.sleep(INTERVAL_S)
        try:
            await housekeep_once(pool, settings)
        except Exception as exc:
            logger.error("housekeeping failed", extra={"error": repr(exc)})


async def housekeeping_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_forever(app[POOL], app[SETTINGS]), name="housekeeping")
    yield
    await stop_task(task)
