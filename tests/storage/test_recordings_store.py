"""storage.recordings, storage.keys, storage.sealed_audio and the reconciler against real
PostgreSQL and S3."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO, cast

import asyncpg
import pytest

from schemas.recordings import RecordingMetadata
from service.recordings.ingest import object_key_for
from service.recordings.reconciler import reconcile
from storage import keys, purge
from storage import recordings as store
from storage.audio import AudioInfo
from storage.crypto import SEGMENT_SIZE, new_key, stored_size
from storage.db import Scope, scoped
from storage.errors import IntegrityError
from storage.objects import ObjectStore
from storage.recordings import NewRecording, SearchFilter
from storage.sealed_audio import EncryptingReader, iter_plaintext
from tests.service.recording_factory import COMPANY

MASTER = keys.MasterKeys.single(b"m" * 32)
EVERYTHING = Scope.everything()


async def company_id(pool: asyncpg.Pool, code: str = COMPANY) -> uuid.UUID:
    async with scoped(pool, EVERYTHING) as conn:
        found = await store.company_id_by_code(conn, code)
    assert found is not None
    return found


async def insert(pool: asyncpg.Pool, company: uuid.UUID, *, started_at: datetime,
                 state: str = "stored", age: timedelta = timedelta(),
                 tags: tuple[str, ...] = ()) -> NewRecording:
    recording_id = uuid.uuid4()
    meta = RecordingMetadata(
        company=COMPANY, external_id=f"x-{recording_id.hex[:8]}", started_at=started_at,
        ended_at=started_at + timedelta(minutes=2), direction="inbound", purpose="quality",
        agent="a1" if recording_id.int % 2 else "a2", tags=list(tags),
    )
    new = NewRecording(
        id=recording_id, company_id=company, customer_id=None, metadata=meta,
        audio=AudioInfo(format="wav", codec="pcm_s16le", duration_s=120.0, sample_rate=8000,
                        channels=1),
        size_bytes=10,
        sha256="0" * 64, object_key=object_key_for(recording_id, datetime.now(UTC)),
        key_owner="company", key_owner_id=company, wrapped_key=b"\x00" * 60,
    )
    async with scoped(pool, EVERYTHING) as conn:
        await store.insert_pending(conn, new)
        await conn.execute(
            "UPDATE recordings SET state = $2, created_at = now() - $3::interval WHERE id = $1",
            recording_id, state, age,
        )
    return new


async def test_reconciler_removes_stale_pending_rows_and_orphan_objects(
    pool: asyncpg.Pool, objects: ObjectStore, db: asyncpg.Connection
) -> None:
    company = await company_id(pool)
    now = datetime.now(UTC)
    # Crash after the row, before the upload finished: no object at all.
    crashed_before_upload = await insert(pool, company, started_at=now, state="pending",
                                         age=timedelta(hours=1))
    # Crash after the upload, before the flip to stored.
    crashed_before_flip = await insert(pool, company, started_at=now, state="pending",
                                       age=timedelta(hours=1))
    await objects.put_bytes(crashed_before_flip.object_key, b"ciphertext")
    # An upload still running: young pending row, its object, both kept.
    running = await insert(pool, company, started_at=now, state="pending")
    await objects.put_bytes(running.object_key, b"ciphertext")
    # A healthy recording.
    healthy = await insert(pool, company, started_at=now)
    await objects.put_bytes(healthy.object_key, b"ciphertext")
    # Crash during erasure, after the row went: the object has no row.
    orphan = object_key_for(uuid.uuid4(), now)
    await objects.put_bytes(orphan, b"ciphertext")

    report = await reconcile(pool, objects)

    assert sorted(report.stale_pending_rows) == sorted(
        [str(crashed_before_upload.id), str(crashed_before_flip.id)])
    assert report.orphan_objects == [orphan]
    remaining = {r["id"] for r in await db.fetch("SELECT id FROM recordings")}
    assert remaining == {running.id, healthy.id}
    assert sorted(await objects.list_keys("recordings/")) == sorted(
        [running.object_key, healthy.object_key])
    assert await db.fetchval(
        "SELECT count(*) FROM audit_events WHERE action = 'recording.reconcile'") == 1
    again = await reconcile(pool, objects)
    assert not again.changed


async def test_sealed_audio_round_trips_any_range(objects: ObjectStore, tmp_path: Path) -> None:
    plain = bytes((i * 7919) % 251 for i in range(3 * SEGMENT_SIZE + 1234))
    spool = tmp_path / "spool"
    spool.write_bytes(plain)
    data_key, object_id = new_key(), uuid.uuid4()
    reader = cast(BinaryIO, EncryptingReader(spool, data_key, object_id))
    await objects.put_long_stream("recordings/test/x", reader, stored_size(len(plain)))
    reader.close()
    stored = await objects.get_bytes("recordings/test/x")
    assert len(stored) == stored_size(len(plain)) and plain[:4096] not in stored
    for start, end in [(0, len(plain) - 1), (SEGMENT_SIZE - 3, SEGMENT_SIZE + 3),
                       (len(plain) - 1, len(plain) - 1), (5, 5)]:
        got = b"".join([p async for p in iter_plaintext(
            objects, "recordings/test/x", data_key=data_key, object_id=object_id,
            size=len(plain), start=start, end_inclusive=end)])
        assert got == plain[start : end + 1]
    with pytest.raises(IntegrityError):
        async for _ in iter_plaintext(objects, "recordings/test/x", data_key=data_key,
                                      object_id=uuid.uuid4(), size=len(plain), start=0,
                                      end_inclusive=10):
            pass


async def test_data_key_is_bound_to_its_recording_and_owner(pool: asyncpg.Pool) -> None:
    company = await company_id(pool)
    async with scoped(pool, EVERYTHING) as conn:
        owner = await keys.company_key(conn, MASTER, company)
        same = await keys.company_key(conn, MASTER, company, create=False)
    assert owner.key == same.key
    recording_id, data_key = uuid.uuid4(), new_key()
    wrapped = keys.wrap_data_key(owner, recording_id, data_key)
    assert keys.unwrap_data_key(owner, recording_id, wrapped) == data_key
    with pytest.raises(IntegrityError):
        keys.unwrap_data_key(owner, uuid.uuid4(), wrapped)
    with pytest.raises(IntegrityError):
        async with scoped(pool, EVERYTHING) as conn:
            await keys.company_key(conn, keys.MasterKeys.single(b"x" * 32), company,
                                   create=False)


async def test_search_pages_newest_first_without_gaps_or_duplicates(pool: asyncpg.Pool) -> None:
    company = await company_id(pool)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    # Many rows share a start time, so the id must break ties in the keyset.
    for i in range(120):
        await insert(pool, company, started_at=base + timedelta(minutes=i // 4))
    seen: list[uuid.UUID] = []
    after = None
    async with scoped(pool, Scope.of([company])) as conn:
        while True:
            page = await store.search(conn, SearchFilter(), after=after, limit=7)
            if not page:
                break
            seen += [r.id for r in page]
            after = (page[-1].started_at, page[-1].id)
        agents = await store.search(conn, SearchFilter(agent="a1"), after=None, limit=1000)
    assert len(seen) == len(set(seen)) == 120
    async with scoped(pool, EVERYTHING) as conn:
        expected = [r["id"] for r in await conn.fetch(
            "SELECT id FROM recordings ORDER BY started_at DESC, id DESC")]
    assert seen == expected
    assert agents and all(r.agent == "a1" for r in agents)
    other = await company_id(pool, "kemin-energia")
    async with scoped(pool, Scope.of([other])) as conn:
        assert await store.search(conn, SearchFilter(), after=None, limit=10) == []


async def test_tag_and_company_filters_find_exactly_the_matching_calls_after_erasure_and_purge(
    pool: asyncpg.Pool, objects: ObjectStore
) -> None:
    ours, theirs, outside = [await company_id(pool, code) for code in (
        COMPANY, "kemin-energia", "tenergia")]
    base = datetime(2026, 1, 1, tzinfo=UTC)
    tag_sets = [("billing",), ("billing", "complaint"), (), ("complaint",)]
    calls = [
        # Calls of different companies share start times, so the merge must break ties by id.
        await insert(pool, (ours, theirs, outside)[i % 3], started_at=base + timedelta(
            minutes=i // 3), tags=tag_sets[i % 4])
        for i in range(72)
    ]
    scope = Scope.of([ours, theirs])

    def expected(where: SearchFilter) -> list[uuid.UUID]:
        newest_first = sorted(calls, key=lambda c: (c.metadata.started_at, c.id), reverse=True)
        return [c.id for c in newest_first if c.id not in gone and scope.allows(c.company_id)
                and (where.tag is None or where.tag in c.metadata.tags)
                and (where.company_id is None or c.company_id == where.company_id)
                and (where.agent is None or c.metadata.agent == where.agent)
                and (where.started_from is None or c.metadata.started_at >= where.started_from)
                and (where.started_before is None
                     or c.metadata.started_at < where.started_before)]

    async def found(where: SearchFilter) -> list[uuid.UUID]:
        seen: list[uuid.UUID] = []
        after = None
        async with scoped(pool, scope) as conn:
            while page := await store.search(conn, where, after=after, limit=5):
                seen += [r.id for r in page]
                after = (page[-1].started_at, page[-1].id)
        return seen

    filters = [
        SearchFilter(tag="complaint"),
        SearchFilter(tag="billing", company_id=theirs),
        SearchFilter(company_id=ours),
        SearchFilter(tag="complaint", agent="a1"),
        SearchFilter(tag="billing", started_from=base + timedelta(minutes=5),
                     started_before=base + timedelta(minutes=17)),
        SearchFilter(tag="nothing"),
        SearchFilter(tag="complaint", company_id=outside),
    ]
    gone: set[uuid.UUID] = set()
    for where in filters:
        assert await found(where) == expected(where), where
    assert await found(SearchFilter(tag="complaint", company_id=outside)) == []

    erased = next(c for c in calls if c.company_id == ours and "complaint" in c.metadata.tags)
    async with scoped(pool, EVERYTHING) as conn:
        await store.erase(conn, erased.id, erased_by="test", reason="customer request")
    purged = next(c for c in calls if c.company_id == theirs and "complaint" in c.metadata.tags)
    async with scoped(pool, EVERYTHING) as conn:
        await conn.execute("UPDATE recordings SET retain_until = $2 WHERE id = $1",
                           purged.id, datetime(2020, 1, 1, tzinfo=UTC))
        # Judged as of 2021 so that only this call has expired.
        run_id, as_of = uuid.uuid4(), datetime(2021, 1, 1, tzinfo=UTC)
        await purge.start_run(conn, run_id, as_of=as_of, started_by="test", dry_run=False)
    job = purge.PurgeJob(pool, objects, run_id, as_of)
    assert await job.recording_batch(versioned=False) == 1
    gone = {erased.id, purged.id}
    for where in filters:
        assert await found(where) == expected(where), where
    async with scoped(pool, EVERYTHING) as conn:
        assert await conn.fetchval(
            "SELECT count(*) FROM recording_tags WHERE recording_id = ANY($1::uuid[])",
            list(gone)) == 0
        assert await conn.fetchval("SELECT count(*) FROM recording_tags") == sum(
            len(c.metadata.tags) for c in calls if c.id not in gone)


async def test_reconciler_runs_in_the_background_from_start_up(
    pool: asyncpg.Pool, objects: ObjectStore
) -> None:
    from aiohttp import web

    from service.http.keys import OBJECTS, POOL
    from service.recordings.reconciler import reconciler_ctx

    orphan = object_key_for(uuid.uuid4(), datetime.now(UTC))
    await objects.put_bytes(orphan, b"ciphertext")
    app = web.Application()
    app[POOL] = pool
    app[OBJECTS] = objects
    running = reconciler_ctx(app)
    await running.__anext__()
    try:
        for _ in range(100):
            if not await objects.exists(orphan):
                break
            await asyncio.sleep(0.05)
        assert not await objects.exists(orphan)
    finally:
        with pytest.raises(StopAsyncIteration):
            await running.__anext__()
