"""The bad-input corpus (tests/corpus): broken audio, lying headers, JSON and gzip bombs,
invalid UTF-8, huge lines and malformed Range headers. Each gets a clear 4xx
application/problem+json (never a 5xx) and leaves nothing in PostgreSQL or S3."""

from __future__ import annotations

import io
import json
from typing import Any

import aiohttp
import asyncpg
import pytest

from service.settings import Settings
from tests import audiogen, corpus
from tests.helpers import Api, bearer
from tests.service.recording_factory import COMPANY, bucket_keys, form, metadata, upload

NDJSON = {"Content-Type": "application/x-ndjson"}


async def assert_problem(response: aiohttp.ClientResponse, *statuses: int) -> dict[str, Any]:
    text = await response.text()
    assert response.status in statuses, (response.status, text[:300])
    assert response.content_type == "application/problem+json", text[:300]
    body = json.loads(text)
    assert body["status"] == response.status
    assert body["title"] and body["detail"]
    return dict(body)


async def assert_nothing_stored(db: asyncpg.Connection, settings: Settings) -> None:
    assert await db.fetchval("SELECT count(*) FROM recordings") == 0
    assert await db.fetchval("SELECT count(*) FROM web_events") == 0
    assert await bucket_keys(settings) == []


@pytest.mark.parametrize("case", corpus.AUDIO_CASES, ids=lambda c: c.name)
async def test_broken_audio_is_refused_with_422_and_nothing_is_stored(
    case: corpus.AudioCase, api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    token = await api.token("ingest", [COMPANY])
    response = await upload(api.client, token, metadata(), case.make(),
                            filename=case.filename, content_type=case.content_type)
    await assert_problem(response, 422)
    await assert_nothing_stored(db, settings)


@pytest.mark.parametrize("bad_metadata,statuses", [
    (corpus.json_bomb(), (400,)),
    (corpus.nested_object_bomb(), (400,)),
    (json.dumps(metadata(agent="a" * 1_000_000)), (413,)),
    (json.dumps(metadata(agent="a" * 50_000)), (422,)),
    (json.dumps(metadata(tags=["t"] * 5000)), (422,)),
    (b'{"company": "oulun-sahkonmyynti", "agent": "\xff\xfe"}', (400, 422)),
    ("", (400, 422)),
    ("null", (422,)),
], ids=["array_bomb", "object_bomb", "huge_field_1mb", "long_field", "many_tags",
        "invalid_utf8", "empty", "null"])
async def test_bad_metadata_is_refused_and_nothing_is_stored(
    bad_metadata: str | bytes, statuses: tuple[int, ...], api: Api, db: asyncpg.Connection,
    settings: Settings,
) -> None:
    token = await api.token("ingest", [COMPANY])
    data = aiohttp.FormData()
    # Bytes (not valid UTF-8) go as a file-like part, as aiohttp asks.
    metadata_part = io.BytesIO(bad_metadata) if isinstance(bad_metadata, bytes) else bad_metadata
    data.add_field("metadata", metadata_part, content_type="application/json")
    data.add_field("audio", audiogen.make_audio("wav_mulaw", 1.0).read_bytes(),
                   filename="call.wav", content_type="audio/wav")
    response = await api.client.post("/api/v1/recordings", data=data, headers=bearer(token))
    await assert_problem(response, *statuses)
    await assert_nothing_stored(db, settings)


async def test_audio_part_before_metadata_and_non_multipart_bodies_are_refused(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    token = await api.token("ingest", [COMPANY])
    audio = audiogen.make_audio("wav_pcm", 1.0).read_bytes()
    data = aiohttp.FormData()
    data.add_field("audio", audio, filename="call.wav", content_type="audio/wav")
    data.add_field("metadata", json.dumps(metadata()), content_type="application/json")
    response = await api.client.post("/api/v1/recordings", data=data, headers=bearer(token))
    await assert_problem(response, 422)
    response = await api.client.post("/api/v1/recordings", data=audio,
                                     headers={**bearer(token), "Content-Type": "audio/wav"})
    await assert_problem(response, 415)  # as every endpoint answers a body type it cannot read
    response = await api.client.post(
        "/api/v1/recordings", data=b"--x\r\nnot really multipart",
        headers={**bearer(token), "Content-Type": "multipart/form-data; boundary=x"})
    await assert_problem(response, 400, 422)
    for content_type, body in (("multipart/form-data", b"--x\r\n"),
                               ("multipart/form-data; boundary=x", b"hello"),
                               ("multipart/form-data; boundary=", b"--\r\n")):
        response = await api.client.post("/api/v1/recordings", data=body, headers={
            **bearer(token), "Content-Type": content_type})
        await assert_problem(response, 400, 422)
    await assert_nothing_stored(db, settings)


@pytest.mark.parametrize("body", [
    corpus.json_bomb(), corpus.nested_object_bomb(), b'{"personal_id": "\xff\xfe"}', b"{",
    b"[1, 2", "x" * 2_000_000,
    # Valid JSON, but no text PostgreSQL can store: an unpaired surrogate.
    b'{"company": "oulun-sahkonmyynti", "customer_number": "\\ud800"}',
], ids=["array_bomb", "object_bomb", "invalid_utf8", "unclosed", "unclosed_array", "2mb",
        "lone_surrogate"])
async def test_bad_json_bodies_answer_4xx(body: str | bytes, api: Api) -> None:
    token = await api.token("admin", all_companies=True)
    response = await api.client.post(
        "/api/v1/customers/lookup", data=body,
        headers={**bearer(token), "Content-Type": "application/json"})
    await assert_problem(response, 400, 413, 422)
    response = await api.client.put(
        "/api/v1/retention-policies", data=body,
        headers={**bearer(token), "Content-Type": "application/json"})
    await assert_problem(response, 400, 413, 422)


async def test_gzip_bomb_is_refused_with_413_and_nothing_is_stored(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    token = await api.token("ingest", [COMPANY])
    response = await api.client.post(
        "/api/v1/web-events", data=corpus.gzip_bomb(),
        headers={**bearer(token), **NDJSON, "Content-Encoding": "gzip"})
    await assert_problem(response, 413)
    await assert_nothing_stored(db, settings)


async def test_corrupt_gzip_is_refused_with_4xx(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    token = await api.token("ingest", [COMPANY])
    response = await api.client.post(
        "/api/v1/web-events", data=corpus.corrupt_gzip(),
        headers={**bearer(token), **NDJSON, "Content-Encoding": "gzip"})
    await assert_problem(response, 400, 422)
    await assert_nothing_stored(db, settings)


async def _post_events(api: Api, body: bytes, **headers: str) -> aiohttp.ClientResponse:
    token = await api.token("ingest", [COMPANY])
    return await api.client.post("/api/v1/web-events", data=body,
                                 headers={**bearer(token), **NDJSON, **headers})


async def test_ndjson_line_of_one_megabyte_is_rejected_and_not_stored(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    response = await _post_events(api, corpus.ndjson_line(1024 * 1024))
    if response.status == 200:
        # The batch format reports bad lines one by one; the line must be among them.
        report = await response.json()
        assert report["accepted"] == 0 and [r["line"] for r in report["rejected"]] == [1]
    else:
        await assert_problem(response, 413, 422)
    await assert_nothing_stored(db, settings)


@pytest.mark.parametrize("body", [
    corpus.invalid_utf8_line(), corpus.json_bomb(5000).encode() + b"\n", b"\x00\x01\x02\n",
    b'"just a string"\n', b"[1,2,3]\n",
], ids=["invalid_utf8", "deep_line", "binary", "string", "array_in_line"])
async def test_bad_ndjson_lines_are_rejected_line_by_line_and_not_stored(
    body: bytes, api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    response = await _post_events(api, body)
    if response.status == 200:
        report = await response.json()
        assert report["accepted"] == 0 and report["rejected"], report
        assert all("\\x" not in r["error"] or len(r["error"]) < 500 for r in report["rejected"])
    else:
        await assert_problem(response, 400, 413, 422)
    await assert_nothing_stored(db, settings)


async def test_a_nul_in_one_ndjson_line_fails_that_line_only(
    api: Api, db: asyncpg.Connection
) -> None:
    good = {"ts": "2026-03-02T10:00:00+02:00", "site": "www.example.fi", "event": "page_view",
            "company": COMPANY}
    lines = [json.dumps(good), json.dumps({**good, "event": "a\u0000b"}),
             json.dumps({**good, "attributes": {"k": "v\u0000"}}), json.dumps(good)]
    response = await _post_events(api, "\n".join(lines).encode() + b"\n")
    assert response.status == 200, await response.text()
    report = await response.json()
    assert report["accepted"] == 2, report
    assert [r["line"] for r in report["rejected"]] == [2, 3], report
    assert all("NUL" in r["error"] for r in report["rejected"]), report
    assert await db.fetchval("SELECT count(*) FROM web_events") == 2


async def test_json_array_bomb_body_is_refused_with_400(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    response = await _post_events(api, corpus.json_bomb().encode(),
                                  **{"Content-Type": "application/json"})
    await assert_problem(response, 400, 422)
    await assert_nothing_stored(db, settings)


@pytest.mark.parametrize("header", [
    "bytes=abc", "bytes=5-2", "bytes=0-1,5-9", "bytes=0-1, 3-4, 7-", "items=0-10", "bytes",
    "bytes=", "bytes=--5", "bytes=1-2-3", "bytes=99999999999999999999999-",
    "bytes=\u00e4-1", "bytes=-abc",
])
async def test_malformed_range_headers_are_ignored_or_refused_cleanly(
    header: str, api: Api, db: asyncpg.Connection
) -> None:
    """RFC 9110 lets a server ignore a Range it cannot use: such a request gets the whole
    file (200); one it understands but cannot satisfy gets 416 problem+json. Never a 5xx."""
    token = await api.token("ingest", [COMPANY])
    path = audiogen.make_audio("wav_mulaw", 1.0)
    created = await upload(api.client, token, metadata(), path)
    assert created.status == 201
    recording_id = (await created.json())["id"]
    quality = await api.token("quality", [COMPANY])
    response = await api.client.get(
        f"/api/v1/recordings/{recording_id}/audio", params={"reason": "corpus"},
        headers={**bearer(quality), "Range": header.encode("utf-8").decode("latin-1")})
    if response.status == 200:
        assert await response.read() == path.read_bytes()
    else:
        body = await assert_problem(response, 416)
        assert response.headers["Content-Range"].startswith("bytes */"), body
    assert await db.fetchval("SELECT count(*) FROM recordings") == 1


async def test_opening_a_call_without_reason_or_with_an_absurd_one_answers_400(
    api: Api
) -> None:
    """Audio, peaks and vCon open a call alike: the same answer, and the served OpenAPI says
    the reason is required."""
    token = await api.token("ingest", [COMPANY])
    created = await upload(api.client, token, metadata(), audiogen.make_audio("wav_pcm", 1.0))
    recording_id = (await created.json())["id"]
    quality = await api.token("quality", [COMPANY])
    spec = await (await api.client.get("/api/v1/openapi.json")).json()
    for part in ("audio", "peaks", "vcon"):
        for params in ({}, {"reason": ""}, {"reason": "  "}, {"reason": "x" * 501}):
            response = await api.client.get(f"/api/v1/recordings/{recording_id}/{part}",
                                            params=params, headers=bearer(quality))
            await assert_problem(response, 400)
        stated = {p["name"]: p for p in spec["paths"][f"/api/v1/recordings/{{id}}/{part}"]
                  ["get"]["parameters"]}
        assert stated["reason"]["required"] is True, part


def test_corpus_generators_produce_what_they_name() -> None:
    assert corpus.wav_lying_sizes()[:4] == b"RIFF"
    assert corpus.AUDIO_CASES[0].make()
    assert len(corpus.gzip_bomb(8 * 1024**2)) < 64 * 1024
    assert len(corpus.ndjson_line(1024 * 1024)) > 1024 * 1024
    assert form(metadata(), b"") is not None


@pytest.mark.parametrize("url", [
    "/api/v1/legal-holds/case%00b",
    "/api/v1/recordings?agent=anna%00",
    "/api/v1/recordings?ag%00ent=anna",
])
async def test_a_nul_character_in_the_url_is_refused_before_any_query(
    url: str, api: Api
) -> None:
    admin = await api.token("admin", all_companies=True)
    method = "DELETE" if "legal-holds" in url else "GET"
    response = await api.client.request(method, url, headers=bearer(admin))
    assert response.status == 422
    assert response.content_type == "application/problem+json"
    assert "NUL character" in (await response.json())["detail"]


@pytest.mark.parametrize("path,role", [
    ("/api/v1/audit", "admin"), ("/api/v1/web-events", "dpo"), ("/api/v1/recordings", "dpo"),
])
@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
async def test_a_date_beyond_the_databases_range_answers_422(
    path: str, role: str, moment: str, api: Api
) -> None:
    token = await api.token(role, all_companies=True)
    response = await api.client.get(path, params={"from": moment}, headers=bearer(token))
    await assert_problem(response, 422)
    assert moment not in await response.text()


async def test_a_time_without_a_utc_offset_is_refused_wherever_a_client_gives_one(
    api: Api, db: asyncpg.Connection
) -> None:
    """Read as the server's local time it would mean another moment; compared with an aware
    time it was a 500."""
    naive = "2030-01-01T00:00:00"
    await api.user("aika-admin", "admin", all_companies=True)
    session = {"X-CSRF-Token": await api.login("aika-admin")}
    made = await api.client.post("/api/v1/tokens", headers=session, json={
        "name": "naive", "role": "ingest", "companies": [COMPANY], "expires_at": naive})
    body = await assert_problem(made, 422)
    assert "expires_at" in json.dumps(body)
    admin = await api.token("admin", all_companies=True)
    for path in ("/api/v1/audit", "/api/v1/web-events"):
        response = await api.client.get(path, params={"from": naive}, headers=bearer(admin))
        await assert_problem(response, 422)
    ingest = await api.token("ingest", [COMPANY])
    put = await api.client.put(f"/api/v1/customers/{COMPANY}/7001", headers=bearer(ingest),
                               json={"name": "Aika Asiakas", "personal_id": "131052-308T"})
    assert put.status == 201, await put.text()
    customer = (await put.json())["id"]
    dpo = await api.token("dpo", [COMPANY])
    banned = await api.client.post(
        f"/api/v1/customers/{customer}/prohibitions", headers=bearer(dpo),
        json={"use": "direct_marketing", "channel": "phone", "received_at": naive})
    await assert_problem(banned, 422)
    assert await db.fetchval("SELECT count(*) FROM customer_prohibitions") == 0
    report = await api.client.get(
        f"/api/v1/customers/{customer}/access-report", headers=bearer(dpo),
        params={"verified_by": "passport", "request_received_at": naive})
    await assert_problem(report, 422)
