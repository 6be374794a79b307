"""POST /api/v1/recordings against real PostgreSQL and S3: formats, refusals, idempotency,
encryption at rest, the size limit and flat memory."""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import uuid
from typing import Any

import aiohttp
import asyncpg
import psutil
import pytest
from aiohttp.test_utils import TestClient, TestServer

from service.app import create_app
from service.settings import Settings
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

KEY_PATTERN = re.compile(r"^recordings/\d{4}/\d{2}/[0-9a-f-]{36}$")


async def nothing_stored(db: asyncpg.Connection, settings: Settings) -> None:
    assert await db.fetchval("SELECT count(*) FROM recordings") == 0
    assert await bucket_keys(settings) == []


@pytest.mark.parametrize("kind", audiogen.KINDS)
async def test_every_accepted_format_is_stored_with_its_real_format(
    api: Api, db: asyncpg.Connection, settings: Settings, kind: str
) -> None:
    token = await api.token("ingest", [COMPANY])
    path = audiogen.make_audio(kind, 2.0)
    response = await upload(api.client, token, metadata(), path)
    assert response.status == 201, await response.text()
    body = await response.json()
    fmt, codec = audiogen.EXPECTED[kind]
    assert (body["format"], body["codec"]) == (fmt, codec)
    assert body["duration_s"] == pytest.approx(2.0, rel=0.05)
    assert body["sample_rate"] == audiogen.effective_rate(kind, 8000)
    assert body["channels"] == 1
    assert body["size_bytes"] == path.stat().st_size
    assert body["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert body["legal_holds"] == []
    # A quality call is kept for the default 183 days from its start.
    assert body["retain_until"] == "2026-09-01T08:00:00Z"
    row = await db.fetchrow("SELECT state, object_key FROM recordings WHERE id = $1",
                            uuid.UUID(body["id"]))
    assert row["state"] == "stored"
    assert KEY_PATTERN.match(row["object_key"])
    assert await bucket_keys(settings) == [row["object_key"]]


async def test_object_in_s3_is_ciphertext_under_a_key_without_personal_data(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    token = await api.token("ingest", [COMPANY])
    path = audiogen.make_audio("wav_pcm", 3.0)
    meta = metadata(customer_number="C-1001")
    response = await upload(api.client, token, meta, path)
    assert response.status == 201
    (key,) = await bucket_keys(settings)
    for personal in (meta["caller"], meta["callee"], meta["external_id"], "C-1001", COMPANY):
        assert personal not in key
    store = object_store(settings)
    try:
        stored = await store.get_bytes(key)
        stat = await store.run(store.client.stat_object, settings.s3_bucket, key)
    finally:
        await store.close()
    plain = path.read_bytes()
    assert b"RIFF" not in stored[:64] and b"WAVE" not in stored
    assert plain[1000:1064] not in stored
    assert len(stored) > len(plain)
    for value in (stat.metadata or {}).values():
        assert meta["caller"] not in str(value) and "C-1001" not in str(value)


@pytest.mark.parametrize(
    ("overrides", "loc"),
    [
        ({"ended_at": "2026-03-02T09:00:00+02:00"}, ["metadata", "ended_at"]),
        ({"purpose": "marketing"}, ["metadata", "purpose"]),
        ({"direction": "sideways"}, ["metadata", "direction"]),
        ({"company": "no-such-company"}, ["metadata", "company"]),
        ({"company": OTHER_COMPANY}, ["metadata", "company"]),
        ({"started_at": "2026-03-02T10:00:00"}, ["metadata", "started_at"]),
        ({"sha256": "xyz"}, ["metadata", "sha256"]),
    ],
)
async def test_invalid_metadata_is_refused_before_audio_and_nothing_is_stored(
    api: Api, db: asyncpg.Connection, settings: Settings, overrides: dict[str, Any],
    loc: list[str],
) -> None:
    token = await api.token("ingest", [COMPANY])
    response = await upload(api.client, token, metadata(**overrides),
                            audiogen.make_audio("wav_pcm"))
    assert response.status == 422
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert [e["loc"][:2] for e in problem["errors"]] == [loc]
    await nothing_stored(db, settings)


async def test_metadata_part_must_come_first(api: Api, db: asyncpg.Connection,
                                             settings: Settings) -> None:
    token = await api.token("ingest", [COMPANY])
    data = aiohttp.FormData()
    data.add_field("audio", audiogen.make_audio("wav_pcm").read_bytes(), filename="a.wav")
    response = await api.client.post("/api/v1/recordings", data=data, headers=bearer(token))
    assert response.status == 422
    await nothing_stored(db, settings)


@pytest.mark.parametrize(
    "case", ["not_audio", "truncated", "lying_content_type", "lying_extension", "wrong_sha256"]
)
async def test_bad_audio_is_refused_and_nothing_is_stored(
    api: Api, db: asyncpg.Connection, settings: Settings, case: str
) -> None:
    token = await api.token("ingest", [COMPANY])
    wav = audiogen.make_audio("wav_pcm")
    meta = metadata()
    kwargs: dict[str, Any] = {}
    audio: Any = wav
    if case == "not_audio":
        audio = b"%PDF-1.7\n" + bytes(range(256)) * 64
    elif case == "truncated":
        audio = audiogen.truncate_copy(wav, 0.5)
    elif case == "lying_content_type":
        kwargs["content_type"] = "audio/mpeg"
    elif case == "lying_extension":
        kwargs["filename"] = "call.mp3"
    else:
        meta["sha256"] = "0" * 64
    response = await upload(api.client, token, meta, audio, **kwargs)
    assert response.status == 422, await response.text()
    assert (await response.json())["detail"]
    await nothing_stored(db, settings)


async def test_upload_over_the_size_limit_is_refused_while_streaming(
    settings: Settings, stack: Any, database: str, db: asyncpg.Connection
) -> None:
    small = settings.model_copy(update={"max_recording_bytes": 256 * 1024})
    app = create_app(small)
    async with TestClient(TestServer(app)) as client:
        token = await Api(client, stack.superuser_url(database)).token("ingest", [COMPANY])
        big = audiogen.make_large_wav(2 * 1024 * 1024)

        async def chunks() -> Any:
            # No Content-Length: the limit must be found while streaming.
            with big.open("rb") as f:
                while block := f.read(64 * 1024):
                    yield block

        writer = aiohttp.MultipartWriter("form-data")
        part = writer.append_json(metadata())
        part.set_content_disposition("form-data", name="metadata")
        part = writer.append(chunks(), {"Content-Type": "audio/wav"})
        part.set_content_disposition("form-data", name="audio", filename="big.wav")
        response = await client.post("/api/v1/recordings", data=writer, headers=bearer(token))
        assert response.status == 413
        with_length = await client.post(
            "/api/v1/recordings", data=aiohttp.FormData(
                {"metadata": "{}", "audio": io.BytesIO(big.read_bytes())}),
            headers=bearer(token))
        assert with_length.status == 413
    await nothing_stored(db, small)


async def test_retry_with_same_audio_returns_existing_recording(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    token = await api.token("ingest", [COMPANY])
    meta = metadata()
    path = audiogen.make_audio("flac")
    first = await upload(api.client, token, meta, path)
    again = await upload(api.client, token, meta, path)
    assert first.status == 201 and again.status == 200
    assert (await first.json())["id"] == (await again.json())["id"]
    assert await db.fetchval("SELECT count(*) FROM recordings") == 1
    assert len(await bucket_keys(settings)) == 1


async def test_same_call_with_different_audio_is_a_conflict(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    token = await api.token("ingest", [COMPANY])
    meta = metadata()
    assert (await upload(api.client, token, meta, audiogen.make_audio("flac"))).status == 201
    other = audiogen.make_audio("flac", tone_hz=660.0)
    response = await upload(api.client, token, meta, other)
    assert response.status == 409
    assert await db.fetchval("SELECT count(*) FROM recordings") == 1
    assert len(await bucket_keys(settings)) == 1


async def test_an_upload_of_a_call_whose_earlier_upload_crashed_takes_its_place(
    api: Api, db: asyncpg.Connection
) -> None:
    token = await api.token("ingest", [COMPANY])
    meta, path = metadata(), audiogen.make_audio("flac")
    crashed = uuid.UUID((await (await upload(api.client, token, meta, path)).json())["id"])
    # As a replica that died between its pending row and its S3 PUT leaves the call.
    await db.execute("UPDATE recordings SET state = 'pending',"
                     " created_at = now() - interval '1 hour' WHERE id = $1", crashed)
    again = await upload(api.client, token, meta, path)
    assert again.status == 201
    stored = await db.fetch("SELECT id, state FROM recordings")
    assert [(r["id"], r["state"]) for r in stored] == [(uuid.UUID((await again.json())["id"]),
                                                        "stored")]
    assert crashed not in {r["id"] for r in stored}


async def test_concurrent_uploads_of_one_call_store_it_once(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    token = await api.token("ingest", [COMPANY])
    meta = metadata()
    path = audiogen.make_audio("wav_pcm", 20.0)
    responses = await asyncio.gather(*(upload(api.client, token, meta, path) for _ in range(6)))
    statuses = sorted(r.status for r in responses)
    assert statuses.count(201) == 1
    assert set(statuses) <= {200, 201, 409}
    assert await db.fetchval("SELECT count(*) FROM recordings") == 1
    assert len(await bucket_keys(settings)) == 1


async def test_customer_number_links_a_known_customer_and_accepts_an_unknown_one(
    api: Api, db: asyncpg.Connection
) -> None:
    token = await api.token("ingest", [COMPANY])
    customer_id = uuid.uuid4()
    await db.execute("INSERT INTO customers (id, name) VALUES ($1, 'Testi Asiakas')", customer_id)
    await db.execute(
        "INSERT INTO customer_memberships (customer_id, company_id, customer_number)"
        " SELECT $1, id, 'C-77' FROM companies WHERE code = $2", customer_id, COMPANY)
    known = await upload(api.client, token, metadata(customer_number="C-77"),
                         audiogen.make_audio("mp3"))
    unknown = await upload(api.client, token, metadata(customer_number="C-404"),
                           audiogen.make_audio("mp3"))
    assert known.status == 201 and unknown.status == 201
    assert (await known.json())["customer_id"] == str(customer_id)
    assert (await unknown.json())["customer_id"] is None
    owners = await db.fetch("SELECT customer_number, key_owner FROM recordings ORDER BY 1")
    assert [(r["customer_number"], r["key_owner"]) for r in owners] == [
        ("C-404", "company"), ("C-77", "customer")]
    assert await db.fetchval("SELECT count(*) FROM customer_keys") == 1


async def test_ingest_is_audited_without_personal_data(api: Api, db: asyncpg.Connection) -> None:
    token = await api.token("ingest", [COMPANY])
    meta = metadata()
    response = await upload(api.client, token, meta, audiogen.make_audio("ogg_opus"))
    body = await response.json()
    await asyncio.sleep(0.1)
    event = await db.fetchrow(
        "SELECT * FROM audit_events WHERE action = 'recording.ingest' AND target_id = $1",
        body["id"])
    assert event is not None and event["company"] == COMPANY
    assert meta["caller"] not in str(dict(event))


async def test_quality_role_may_not_ingest(api: Api) -> None:
    token = await api.token("quality", [COMPANY])
    response = await upload(api.client, token, metadata(), audiogen.make_audio("wav_pcm"))
    assert response.status == 403


async def test_large_upload_keeps_memory_flat(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    token = await api.token("ingest", [COMPANY])
    big = audiogen.make_large_wav(200 * 1024 * 1024)
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = baseline
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    with big.open("rb") as f:
        data = aiohttp.FormData()
        data.add_field("metadata", __import__("json").dumps(metadata()),
                       content_type="application/json")
        data.add_field("audio", f, filename="big.wav", content_type="audio/wav")
        response = await api.client.post("/api/v1/recordings", data=data, headers=bearer(token))
    done.set()
    await sampler
    assert response.status == 201, await response.text()
    assert (await response.json())["size_bytes"] == big.stat().st_size
    growth_mb = (peak - baseline) / 1024**2
    print(f"RSS growth during a 200 MB upload: {growth_mb:.0f} MB")
    assert growth_mb < 50, f"RSS grew by {growth_mb:.0f} MB"


async def test_s3_failing_mid_upload_answers_503_and_leaves_nothing(
    api: Api, db: asyncpg.Connection, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from storage.errors import Unavailable
    from storage.objects import ObjectStore

    async def dies_midway(self: ObjectStore, key: str, stream: Any, length: int,
                          **kwargs: Any) -> str:
        await self.put_bytes(key, stream.read(1000))  # a partial object, then S3 goes away
        raise Unavailable("the object store is not reachable")

    monkeypatch.setattr(ObjectStore, "put_long_stream", dies_midway)
    token = await api.token("ingest", [COMPANY])
    response = await upload(api.client, token, metadata(), audiogen.make_audio("wav_pcm"))
    assert response.status == 503
    assert "Retry-After" in response.headers
    await nothing_stored(db, settings)
