"""The schedule of housekeeping: ended sessions, old login failures and idempotency keys are
deleted every few minutes, apart from the daily retention purge, and so is what export jobs
that ended without a result to download left in PostgreSQL and in the export bucket."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from service.http.keys import EXPORTS, POOL, SETTINGS
from service.ops.tasks import stop_task
from service.settings import Settings
from storage.db import Scope, scoped
from storage.housekeeping import (
    Housekept,
    clear_ended_exports,
    ended_s3_exports,
    note_s3_export_removed,
    purge_expired_access_rows,
)

if TYPE_CHECKING:
    from service.exports.jobs import ExportContext

logger = logging.getLogger(__name__)

INTERVAL_S = 600.0


async def remove_ended_s3_exports(pool: asyncpg.Pool, exports: ExportContext) -> int:
    """Remove what ended `s3` jobs wrote to the export bucket, a job at a time; a removal
    that fails stops the round and is tried again the next time."""
    async with scoped(pool, Scope.everything()) as conn:
        ended = await ended_s3_exports(conn)
    for job_id, prefix in ended:
        await exports.remove_s3(prefix)
        async with scoped(pool, Scope.everything()) as conn:
            await note_s3_export_removed(conn, job_id)
    return len(ended)


async def housekeep_once(pool: asyncpg.Pool, settings: Settings,
                         exports: ExportContext | None = None) -> Housekept:
    async with pool.acquire() as conn:
        done = await purge_expired_access_rows(
            conn, session_idle=timedelta(minutes=settings.session_idle_minutes),
            session_absolute=timedelta(hours=settings.session_absolute_hours))
    async with scoped(pool, Scope.everything()) as conn:
        done = replace(done, export_contents=await clear_ended_exports(conn))
    if exports is not None:
        done = replace(done, export_prefixes=await remove_ended_s3_exports(pool, exports))
    if done.sessions or done.login_failures or done.idempotency_keys:
        logger.info("expired access rows deleted",
                    extra={"sessions": done.sessions, "login_failures": done.login_failures,
                           "idempotency_keys": done.idempotency_keys})
    if done.export_contents or done.export_prefixes:
        logger.info("leftovers of ended exports removed",
                    extra={"export_files": done.export_contents,
                           "export_prefixes": done.export_prefixes})
    return done


async def _forever(pool: asyncpg.Pool, settings: Settings, exports: ExportContext) -> None:
    while True:
        await asyncio.sleep(INTERVAL_S)
        try:
            await housekeep_once(pool, settings, exports)
        except Exception as exc:
            logger.error("housekeeping failed", extra={"error": repr(exc)})


async def housekeeping_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_forever(app[POOL], app[SETTINGS], app[EXPORTS]),
                               name="housekeeping")
    yield
    await stop_task(task)
