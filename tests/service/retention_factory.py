"""Factories of retention tests: expired recordings written straight into PostgreSQL and S3
(fast, many), the app behind the test client, purge processes against the test stack."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from service.retention.scheduler import PurgeContext, purge_context
from service.settings import Settings
from storage import purge
from tests.helpers import Api, settings_env
from tests.service.recording_factory import object_store

FUTURE = datetime(2040, 1, 1, tzinfo=UTC)  # every default policy has run out by then
ROOT = Path(__file__).resolve().parents[2]


def app_of(api: Api) -> web.Application:
    app: web.Application = api.client.server.app  # type: ignore[attr-defined]
    return app


def purge_context_of(api: Api) -> PurgeContext:
    """What a purge run of the test's application works with."""
    return purge_context(app_of(api))


async def expired_recordings(
    db: asyncpg.Connection, settings: Settings, n: int, *, company: str = "oulun-sahkonmyynti",
    object_size: int = 64,
) -> list[uuid.UUID]:
    """`n` stored recordings (rows plus small objects) whose policy ran out long ago."""
    company_id = await db.fetchval("SELECT id FROM companies WHERE code = $1", company)
    ids = [uuid.uuid4() for _ in range(n)]
    rows: list[tuple[Any, ...]] = [
        (rid, company_id, f"old-{rid.hex[:12]}", datetime(2020, 1, 1, tzinfo=UTC),
         "quality", object_size, f"recordings/2020/01/01/{rid}", bytes(40))
        for rid in ids
    ]
    await db.executemany(
        "INSERT INTO recordings (id, company_id, external_id, state, started_at, ended_at,"
        " direction, purpose, format, codec, duration_s, sample_rate, channels, size_bytes,"
        " sha256, object_key, key_owner, wrapped_key) VALUES ($1, $2, $3, 'stored', $4, $4,"
        " 'inbound', $5, 'wav', 'pcm_s16le', 1.0, 8000, 1, $6, repeat('0', 64), $7,"
        " 'company', $8)",
        rows,
    )
    store = object_store(settings)
    try:
        await store.ensure_bucket()
        payload = os.urandom(object_size)
        await asyncio.gather(*(store.put_bytes(r[6], payload) for r in rows))
    finally:
        await store.close()
    return ids


def purge_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLENNE_")}
    env.update(settings_env(settings))
    env.update(extra)
    return env


def purge_process(settings: Settings, *args: str, **extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", "purge", "--now", FUTURE.isoformat(), *args],
        cwd=ROOT, env=purge_env(settings, **extra),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


@asynccontextmanager
async def purge_run(
    app: web.Application, as_of: datetime = FUTURE, *, pool: asyncpg.Pool | None = None
) -> AsyncIterator[purge.PurgeJob]:
    """A real run, recorded as started and then finished, whose job a test runs whole or a
    step at a time (on `pool` when given, else the application's)."""
    from service.http.keys import OBJECTS, POOL

    run_id = uuid.uuid4()
    async with app[POOL].acquire() as conn:
        await purge.start_run(conn, run_id, as_of=as_of, started_by="test", dry_run=False)
        yield purge.PurgeJob(pool or app[POOL], app[OBJECTS], run_id, as_of)
        await purge.finish_run(conn, run_id, state="finished", counts={})


async def purge_job_only(app: web.Application, as_of: datetime = FUTURE) -> int:
    """The purge's work without its audit event and S3 checkpoint (which a bucket with object
    lock would keep for ten years, so the test could not drop its bucket)."""
    async with purge_run(app, as_of) as job:
        tally = await job.run()
    return tally.total
