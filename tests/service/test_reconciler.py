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
from tests import audiogen
from tests.helpers import Api, until_waiting
from tests.service.recording_factory import COMPANY, metadata, upload


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


async def test_an_upload_completing_during_the_pass_keeps_its_audio(
    api: Api, db: asyncpg.Connection
) -> None:
    """An upload older than the grace (a very long one) is completed while the pass walks
    the bucket: its row is stored by the time the pass reaches it, and its audio stays."""
    from service.http.keys import OBJECTS, POOL

    token = await api.token("ingest", [COMPANY])
    response = await upload(api.client, token, metadata(), audiogen.make_audio("wav_pcm", 1.0))
    assert response.status == 201, await response.text()
    recording_id = uuid.UUID((await response.json())["id"])
    key = await db.fetchval("SELECT object_key FROM recordings WHERE id = $1", recording_id)
    await db.execute("UPDATE recordings SET state = 'pending', created_at = now() -"
                     " interval '1 hour' WHERE id = $1", recording_id)
    app = api.client.app
    completing = db.transaction()
    await completing.start()
    try:
        # The upload's own commit, under way: the pass saw the row pending.
        await db.execute("UPDATE recordings SET state = 'stored' WHERE id = $1", recording_id)
        passing = asyncio.ensure_future(reconcile(app[POOL], app[OBJECTS]))
        await until_waiting(db, 1, unless=passing)
    finally:
        await completing.commit()
    report = await asyncio.wait_for(passing, 30)
    assert report.stale_pending_rows == []
    assert await app[OBJECTS].exists(key)
