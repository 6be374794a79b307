"""The reconciler's bucket walk: paged, and one instance at a time."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg

from service.recordings.ingest import object_key_for
from service.recordings.reconciler import RECONCILE_LOCK, reconcile
from service.settings import Settings
from storage.db import create_pool
from storage.objects import ObjectStore


async def test_the_bucket_is_listed_a_page_at_a_time(objects: ObjectStore) -> None:
    keys = sorted(f"pages/{i:02d}" for i in range(5))
    for key in keys:
        await objects.put_bytes(key, b"x")
    pages = [page async for page in objects.iter_keys("pages/", page=2)]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert sorted(k for p in pages for k in p) == keys


async def test_a_background_pass_skips_while_another_instance_reconciles(
    pool: asyncpg.Pool, objects: ObjectStore, db: asyncpg.Connection
) -> None:
    orphan = object_key_for(uuid.uuid4(), datetime.now(UTC))
    await objects.put_bytes(orphan, b"ciphertext")
    await db.execute("SELECT pg_advisory_lock($1)", RECONCILE_LOCK)
    try:
        skipped = await reconcile(pool, objects, wait=False)
        assert skipped.skipped and not skipped.changed
        assert await objects.exists(orphan)
    finally:
        await db.execute("SELECT pg_advisory_unlock($1)", RECONCILE_LOCK)
    done = await reconcile(pool, objects, wait=False)
    assert not done.skipped and done.orphan_objects == [orphan]
    assert not await objects.exists(orphan)


async def test_a_pass_needs_one_connection(
    settings: Settings, objects: ObjectStore, db: asyncpg.Connection
) -> None:
    """The pass works on the connection that holds its lock: even a pool of one connection
    (every other one busy) cannot leave it waiting on itself."""
    orphan = object_key_for(uuid.uuid4(), datetime.now(UTC))
    await objects.put_bytes(orphan, b"ciphertext")
    assert settings.database_url is not None
    single = await create_pool(settings.database_url.get_secret_value(), max_size=1)
    try:
        done = await asyncio.wait_for(reconcile(single, objects), 30)
    finally:
        await single.close()
    assert done.orphan_objects == [orphan] and not await objects.exists(orphan)
    assert await db.fetchval(
        "SELECT count(*) FROM audit_events WHERE action = 'recording.reconcile'") == 1
