"""GET /api/v1/recordings/{id}/audio against a real stored (encrypted) recording: full and
ranged reads, conditional requests, scope, corruption detection and grouped audit events."""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from service.settings import Settings
from storage.crypto import SEGMENT_SIZE
from tests import audiogen
from tests.helpers import Api, bearer
from tests.service.recording_factory import (
    COMPANY,
    OTHER_COMPANY,
    bucket_keys,
    metadata,
    object_store,
    upload,
)

REASON = "quality review of ticket 4711"


async def stored(api: Api, kind: str = "wav_pcm", seconds: float = 20.0) -> tuple[str, Path]:
    """A recording of `kind` stored through the API; (id, original file)."""
    token = await api.token("ingest", [COMPANY], name="pbx")
    path = audiogen.make_audio(kind, seconds)
    response = await upload(api.client, token, metadata(), path)
    assert response.status == 201, await response.text()
    return (await response.json())["id"], path


async def eventually(db: asyncpg.Connection, query: str, *args: Any) -> asyncpg.Record:
    """The first row of `query` once there is one (within five seconds)."""
    for _ in range(100):
        row = await db.fetchrow(query, *args)
        if row is not None:
            return row
        await asyncio.sleep(0.05)
    raise AssertionError(f"no row for {query!r} within five seconds")


async def replay(api: Api, token: str, recording_id: str, reason: str | None = REASON,
                 headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
    params = {"reason": reason} if reason is not None else {}
    return await api.client.get(f"/api/v1/recordings/{recording_id}/audio", params=params,
                                headers={**bearer(token), **(headers or {})})


async def test_full_replay_is_byte_identical_with_headers(api: Api) -> None:
    recording_id, path = await stored(api)
    token = await api.token("quality", [COMPANY])
    response = await replay(api, token, recording_id)
    assert response.status == 200
    body = await response.read()
    assert body == path.read_bytes()
    assert response.headers["Content-Type"] == "audio/wav"
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["ETag"].strip('"') == (await (await api.client.get(
        f"/api/v1/recordings/{recording_id}", headers=bearer(token))).json())["sha256"]
    assert f"recording-{recording_id}.wav" in response.headers["Content-Disposition"]


@pytest.mark.parametrize("kind", ["mp3", "ogg_opus", "m4a_aac"])
async def test_content_type_follows_the_format(api: Api, kind: str) -> None:
    recording_id, path = await stored(api, kind, 2.0)
    token = await api.token("quality", [COMPANY])
    response = await replay(api, token, recording_id)
    assert response.status == 200
    assert await response.read() == path.read_bytes()
    fmt = audiogen.EXPECTED[kind][0]
    assert response.headers["Content-Type"] == {
        "mp3": "audio/mpeg", "ogg": "audio/ogg", "m4a": "audio/mp4"}[fmt]


async def test_ranges_are_byte_identical_slices(api: Api) -> None:
    recording_id, path = await stored(api)
    original = path.read_bytes()
    size = len(original)
    token = await api.token("quality", [COMPANY])
    rng = random.Random(7)
    cases: list[tuple[str, int, int]] = [
        ("bytes=0-0", 0, 0),
        (f"bytes={SEGMENT_SIZE - 1}-{SEGMENT_SIZE}", SEGMENT_SIZE - 1, SEGMENT_SIZE),
        (f"bytes={SEGMENT_SIZE}-{3 * SEGMENT_SIZE - 1}", SEGMENT_SIZE, 3 * SEGMENT_SIZE - 1),
        (f"bytes={size - 10}-", size - 10, size - 1),
        ("bytes=-1000", size - 1000, size - 1),
        (f"bytes=100-{size * 2}", 100, size - 1),
        (f"bytes=-{size * 2}", 0, size - 1),
    ]
    for _ in range(12):
        a = rng.randrange(size)
        b = rng.randrange(a, size)
        cases.append((f"bytes={a}-{b}", a, b))
    for header, start, end in cases:
        response = await replay(api, token, recording_id, headers={"Range": header})
        assert response.status == 206, header
        assert response.headers["Content-Range"] == f"bytes {start}-{end}/{size}"
        assert await response.read() == original[start : end + 1], header


async def test_unsatisfiable_range_is_416(api: Api) -> None:
    recording_id, path = await stored(api, seconds=2.0)
    size = path.stat().st_size
    token = await api.token("quality", [COMPANY])
    for header in (f"bytes={size}-", f"bytes={size + 5}-{size + 10}", "bytes=-0"):
        response = await replay(api, token, recording_id, headers={"Range": header})
        assert response.status == 416, header
        assert response.headers["Content-Range"] == f"bytes */{size}"


async def test_conditional_requests(api: Api) -> None:
    recording_id, path = await stored(api, seconds=2.0)
    token = await api.token("quality", [COMPANY])
    etag = (await replay(api, token, recording_id)).headers["ETag"]
    not_modified = await replay(api, token, recording_id, headers={"If-None-Match": etag})
    assert not_modified.status == 304
    same = await replay(api, token, recording_id,
                        headers={"Range": "bytes=0-99", "If-Range": etag})
    assert same.status == 206 and len(await same.read()) == 100
    stale = await replay(api, token, recording_id,
                         headers={"Range": "bytes=0-99", "If-Range": '"other"'})
    assert stale.status == 200 and await stale.read() == path.read_bytes()


async def test_replay_needs_a_reason(api: Api) -> None:
    recording_id, _ = await stored(api, seconds=2.0)
    token = await api.token("quality", [COMPANY])
    for reason in (None, "", "   "):
        response = await replay(api, token, recording_id, reason=reason)
        assert response.status == 400
        assert response.content_type == "application/problem+json"


async def test_other_company_and_unknown_ids_are_404(api: Api) -> None:
    recording_id, _ = await stored(api, seconds=2.0)
    outsider = await api.token("quality", [OTHER_COMPANY])
    insider = await api.token("quality", [COMPANY])
    assert (await replay(api, outsider, recording_id)).status == 404
    assert (await api.client.get(f"/api/v1/recordings/{recording_id}",
                                 headers=bearer(outsider))).status == 404
    assert (await replay(api, insider, str(uuid.uuid4()))).status == 404
    assert (await replay(api, insider, "not-a-uuid")).status == 404
    ingest_only = await api.token("ingest", [COMPANY])
    assert (await replay(api, ingest_only, recording_id)).status == 403


async def flip_a_byte(settings: Settings, offset: int) -> None:
    (key,) = await bucket_keys(settings)
    store = object_store(settings)
    try:
        data = bytearray(await store.get_bytes(key))
        data[offset] ^= 0x01
        await store.put_bytes(key, bytes(data))
    finally:
        await store.close()


async def test_flipped_byte_in_s3_fails_a_full_read_and_marks_corrupt(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    recording_id, _ = await stored(api, seconds=120.0)
    # Past the first two chunks the service reads, so the damage shows mid-stream.
    await flip_a_byte(settings, 20 * SEGMENT_SIZE + 100)
    token = await api.token("quality", [COMPANY])
    response = await replay(api, token, recording_id)
    assert response.status == 200  # headers went out before the damage was found
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    state = await db.fetchval("SELECT state FROM recordings WHERE id = $1",
                              uuid.UUID(recording_id))
    assert state == "corrupt"
    await asyncio.sleep(0.1)
    assert await db.fetchval(
        "SELECT count(*) FROM audit_events WHERE action = 'recording.integrity_alarm'"
        " AND target_id = $1", recording_id) == 1
    again = await replay(api, token, recording_id)
    assert again.status == 409


async def test_damage_in_the_first_segment_is_refused_before_any_byte_leaves(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    recording_id, _ = await stored(api)
    await flip_a_byte(settings, 100)
    token = await api.token("quality", [COMPANY])
    response = await replay(api, token, recording_id, headers={"Range": "bytes=0-99"})
    assert response.status == 409
    assert response.content_type == "application/problem+json"
    assert "failed verification" in (await response.json())["detail"]
    assert await db.fetchval("SELECT state FROM recordings WHERE id = $1",
                             uuid.UUID(recording_id)) == "corrupt"


async def test_a_window_closed_elsewhere_opens_a_new_audit_event(
    api: Api, db: asyncpg.Connection
) -> None:
    """This process remembers open windows; if the database no longer has one (closed,
    purged), the next request still ends up with an audit event of its own."""
    recording_id, _ = await stored(api)
    token = await api.token("quality", [COMPANY], name="listener")
    first = await replay(api, token, recording_id, headers={"Range": "bytes=0-9"})
    await first.read()
    await db.execute("DELETE FROM recording_replay_windows")
    again = await replay(api, token, recording_id, headers={"Range": "bytes=10-19"})
    assert again.status == 206 and len(await again.read()) == 10
    # The range is noted beside the stream, so the new window appears a moment later.
    window = await eventually(db, "SELECT requests, ranges FROM recording_replay_windows")
    assert window["requests"] == 1 and window["ranges"][0].startswith("bytes 10-19/")
    events = await db.fetch(
        "SELECT detail FROM audit_events WHERE action = 'recording.replay'"
        " AND target_id = $1 ORDER BY seq", recording_id)
    assert [e["detail"].find("bytes 10-19/") >= 0 for e in events] == [False, True]


async def test_replays_are_audited_with_reason_and_grouped(
    api: Api, db: asyncpg.Connection
) -> None:
    recording_id, _ = await stored(api)
    token = await api.token("quality", [COMPANY], name="listener")
    for header in ("bytes=0-999", "bytes=1000-1999", "bytes=-500"):
        response = await replay(api, token, recording_id, headers={"Range": header})
        assert response.status == 206
        await response.read()
    other_reason = await replay(api, token, recording_id, reason="complaint 99",
                                headers={"Range": "bytes=0-9"})
    await other_reason.read()
    window = await eventually(
        db, "SELECT requests, ranges FROM recording_replay_windows WHERE reason = $1"
        " AND requests = 3", REASON)
    events: list[Any] = await db.fetch(
        "SELECT reason, detail FROM audit_events WHERE action = 'recording.replay'"
        " AND target_id = $1 ORDER BY seq", recording_id)
    assert [e["reason"] for e in events] == [REASON, "complaint 99"]
    assert events[0]["detail"].find("bytes 0-999/") >= 0
    assert window["ranges"][0].startswith("bytes 0-999/") and len(window["ranges"]) == 3


async def test_linking_a_customer_later_rewraps_the_key_and_replay_still_works(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    from storage import recordings as store
    from storage.crypto import load_master_key
    from storage.db import Scope, create_pool, scoped
    from storage.keys import MasterKeys

    token = await api.token("ingest", [COMPANY])
    path = audiogen.make_audio("wav_alaw", 3.0)
    response = await upload(api.client, token, metadata(customer_number="C-5"), path)
    recording_id = (await response.json())["id"]
    customer_id = uuid.uuid4()
    await db.execute("INSERT INTO customers (id, name) VALUES ($1, 'Myöhemmin Tullut')",
                     customer_id)
    company_id = await db.fetchval("SELECT id FROM companies WHERE code = $1", COMPANY)
    await db.execute("INSERT INTO customer_memberships (customer_id, company_id,"
                     " customer_number) VALUES ($1, $2, 'C-5')", customer_id, company_id)
    assert settings.database_url is not None and settings.master_key is not None
    pool = await create_pool(settings.database_url.get_secret_value(), max_size=1)
    try:
        async with scoped(pool, Scope.everything()) as conn:
            moved = await store.rewrap_for_customer(
                conn, MasterKeys.single(load_master_key(settings.master_key.get_secret_value())),
                company_id=company_id, customer_number="C-5", customer_id=customer_id)
    finally:
        await pool.close()
    assert moved == 1
    row = await db.fetchrow("SELECT key_owner, key_owner_id, customer_id FROM recordings")
    assert tuple(row) == ("customer", customer_id, customer_id)
    quality = await api.token("quality", [COMPANY])
    replayed = await replay(api, quality, recording_id)
    assert await replayed.read() == path.read_bytes()


async def test_the_replay_row_is_read_in_the_callers_scope_only(
    api: Api, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """Replay reads its row with one statement that scopes itself: the scope covers that
    statement and is gone after it, on a connection outside any transaction."""
    from storage import recordings as store
    from storage.db import Scope
    from storage.errors import NotFound

    recording_id, _ = await stored(api, seconds=2.0)
    wanted = uuid.UUID(recording_id)
    company, other = [r["id"] for r in await db.fetch(
        "SELECT id FROM companies WHERE code = ANY($1) ORDER BY code = $2 DESC",
        [COMPANY, OTHER_COMPANY], COMPANY)]
    async with pool.acquire() as conn:
        recording, version, owner_key = await store.get_for_replay(
            conn, Scope.of([company]), wanted)
        assert recording.id == wanted and recording.company == COMPANY
        assert owner_key is not None and version == 1
        with pytest.raises(NotFound):
            await store.get_for_replay(conn, Scope.of([other]), wanted)
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT count(*) FROM recordings") == 0  # no scope left
        assert (await store.get_for_replay(conn, Scope.everything(), wanted))[0].id == wanted


async def listened(api: Api, recording_id: str, path: Path) -> str:
    """A token that has just replayed the recording's first bytes (so its next request of
    that recording starts its S3 read ahead of the checks)."""
    token = await api.token("quality", [COMPANY], name="listener")
    first = await replay(api, token, recording_id, headers={"Range": "bytes=0-99"})
    assert first.status == 206 and await first.read() == path.read_bytes()[:100]
    return token


async def test_a_token_revoked_mid_session_gets_nothing_more(
    api: Api, db: asyncpg.Connection
) -> None:
    recording_id, path = await stored(api)
    token = await listened(api, recording_id, path)
    await db.execute("UPDATE api_tokens SET revoked_at = now() WHERE name = 'listener'")
    again = await replay(api, token, recording_id, headers={"Range": "bytes=0-99"})
    assert again.status == 401
    assert again.content_type == "application/problem+json"
    assert b"RIFF" not in await again.read()


async def test_a_recording_erased_mid_session_is_404(api: Api, db: asyncpg.Connection) -> None:
    recording_id, path = await stored(api)
    token = await listened(api, recording_id, path)
    await db.execute("DELETE FROM recordings WHERE id = $1", uuid.UUID(recording_id))
    again = await replay(api, token, recording_id, headers={"Range": "bytes=0-99"})
    assert again.status == 404
    assert again.content_type == "application/problem+json"


async def test_a_recording_whose_object_moved_is_read_from_its_new_place(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    """A read started ahead from where the recording lay is dropped when the row says
    otherwise; the audio comes from where the row points."""
    recording_id, path = await stored(api)
    token = await listened(api, recording_id, path)
    (old_key,) = await bucket_keys(settings)
    objects = object_store(settings)
    try:
        await objects.put_bytes(old_key + "-moved", await objects.get_bytes(old_key))
        await db.execute("UPDATE recordings SET object_key = $1 WHERE id = $2",
                         old_key + "-moved", uuid.UUID(recording_id))
        await objects.delete([old_key])
    finally:
        await objects.close()
    again = await replay(api, token, recording_id, headers={"Range": "bytes=100-4099"})
    assert again.status == 206
    assert await again.read() == path.read_bytes()[100:4100]
