"""A database connection lost in the middle of a request (a failover, an administrator,
a network cut): a read is answered from a fresh connection, a write answers 503 with
Retry-After for the client to retry; never a 500."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from storage import recordings
from tests import audiogen
from tests.helpers import Api, bearer
from tests.service.recording_factory import COMPANY, form, metadata


async def _cut_off_while_waiting(db: asyncpg.Connection, request: Any,
                                 hold: Callable[[], Awaitable[object]]) -> Any:
    """Start `request` while `hold` (run in a transaction of the test's own) keeps a lock it
    needs, end the service's backend that waits on the lock, then let go: what the client
    sees of a connection lost mid-query."""
    lock = db.transaction()
    await lock.start()
    await hold()
    task = asyncio.ensure_future(request)
    try:
        deadline = time.monotonic() + 20
        while True:
            waiting = await db.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
            if waiting:
                break
            assert time.monotonic() < deadline, "the request never reached the lock"
            await asyncio.sleep(0.02)
        for row in waiting:
            await db.execute("SELECT pg_terminate_backend($1)", row["pid"])
    finally:
        await lock.rollback()
    return await task


async def test_a_read_that_loses_its_connection_is_answered_from_a_fresh_one(
    api: Api, db: asyncpg.Connection
) -> None:
    ingest = await api.token("ingest", [COMPANY])
    stored = await api.client.post("/api/v1/recordings", headers=bearer(ingest), data=form(
        metadata(), audiogen.make_audio("wav_pcm", 1.0).read_bytes(), filename="call.wav",
        content_type="audio/wav"))
    assert stored.status == 201, await stored.text()
    quality = await api.token("quality", [COMPANY])
    response = await _cut_off_while_waiting(
        db, api.client.get("/api/v1/recordings", headers=bearer(quality)),
        lambda: db.execute("LOCK TABLE recordings IN ACCESS EXCLUSIVE MODE"))
    assert response.status == 200, await response.text()
    assert [item["id"] for item in (await response.json())["items"]] \
        == [(await stored.json())["id"]]


async def test_a_write_that_loses_its_connection_answers_503_with_retry_after(
    api: Api, db: asyncpg.Connection
) -> None:
    ingest = await api.token("ingest", [COMPANY])
    audio = audiogen.make_audio("wav_pcm", 1.0).read_bytes()
    meta = metadata()
    company_id = await db.fetchval("SELECT id FROM companies WHERE code = $1", COMPANY)
    # The call's own ingest lock, taken inside the write's transaction: the upload's reads
    # before it (which a lost connection would only retry) go through.
    response = await _cut_off_while_waiting(db, api.client.post(
        "/api/v1/recordings", headers=bearer(ingest),
        data=form(meta, audio, filename="call.wav", content_type="audio/wav")),
        lambda: recordings.lock_call(db, company_id, meta["external_id"]))
    assert response.status == 503, await response.text()
    assert response.content_type == "application/problem+json"
    assert int(response.headers["Retry-After"]) > 0
    # The client's retry goes through on a fresh connection; the call is stored once.
    again = await api.client.post("/api/v1/recordings", headers=bearer(ingest),
                                  data=form(meta, audio, filename="call.wav",
                                            content_type="audio/wav"))
    assert again.status == 201, await again.text()
    assert await db.fetchval("SELECT count(*) FROM recordings WHERE external_id = $1",
                             meta["external_id"]) == 1
