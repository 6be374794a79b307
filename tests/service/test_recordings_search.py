"""Search, one recording, erasure and evaluations through the API."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import datetime

import asyncpg

from service.settings import Settings
from tests import audiogen
from tests.helpers import Api, bearer
from tests.service.recording_factory import (
    COMPANY,
    OTHER_COMPANY,
    bucket_keys,
    metadata,
    upload,
)


async def ingest_calls(api: Api, count: int, company: str = COMPANY) -> list[dict[str, object]]:
    token = await api.token("ingest", [company], name=f"pbx-{company}")
    bodies = []
    for i in range(count):
        meta = metadata(company=company, started_at=f"2026-03-{i + 1:02d}T10:00:00+02:00",
                        ended_at=f"2026-03-{i + 1:02d}T10:05:00+02:00",
                        agent="anna" if i % 2 else "bertta",
                        direction="outbound" if i % 3 == 0 else "inbound",
                        tags=["even"] if i % 2 == 0 else ["odd"])
        response = await upload(api.client, token, meta,
                                audiogen.make_audio("wav_mulaw", 1.0, tone_hz=300.0 + i))
        assert response.status == 201, await response.text()
        bodies.append(await response.json())
    return bodies


async def test_search_pages_newest_first_with_filters(api: Api, db: asyncpg.Connection) -> None:
    calls = await ingest_calls(api, 7)
    await ingest_calls(api, 2, OTHER_COMPANY)
    token = await api.token("quality", [COMPANY])
    ids: list[str] = []
    cursor = None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        response = await api.client.get("/api/v1/recordings", params=params,
                                        headers=bearer(token))
        assert response.status == 200
        page = await response.json()
        ids += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert ids == [c["id"] for c in reversed(calls)]

    async def found(**params: str) -> list[str]:
        response = await api.client.get("/api/v1/recordings", params=params,
                                        headers=bearer(token))
        assert response.status == 200, await response.text()
        return [item["id"] for item in (await response.json())["items"]]

    assert await found(agent="anna") == [c["id"] for c in reversed(calls) if c["agent"] == "anna"]
    assert await found(tag="odd") == [c["id"] for c in reversed(calls) if c["tags"] == ["odd"]]
    assert await found(direction="outbound") == [
        c["id"] for c in reversed(calls) if c["direction"] == "outbound"]
    assert await found(**{"from": "2026-03-03T00:00:00+02:00",
                          "to": "2026-03-05T00:00:00+02:00"}) == [calls[3]["id"], calls[2]["id"]]
    assert await found(external_id=str(calls[0]["external_id"])) == [calls[0]["id"]]
    assert await found(company=OTHER_COMPANY) == []
    await asyncio.sleep(0.1)
    assert await db.fetchval(
        "SELECT count(*) FROM audit_events WHERE action = 'recording.search'") >= 4


async def test_user_of_two_companies_pages_through_both_newest_first(api: Api) -> None:
    # Each company's calls start at the same times, so pages interleave the companies.
    ours = await ingest_calls(api, 5)
    theirs = await ingest_calls(api, 4, OTHER_COMPANY)
    await ingest_calls(api, 3, "tenergia")
    token = await api.token("quality", [COMPANY, OTHER_COMPANY])

    def newest_first(calls: list[dict[str, object]]) -> list[str]:
        return [str(c["id"]) for c in sorted(
            calls, key=lambda c: (datetime.fromisoformat(str(c["started_at"])),
                                  uuid.UUID(str(c["id"]))), reverse=True)]

    async def found(**params: str) -> list[str]:
        ids: list[str] = []
        cursor = None
        while True:
            query = {**params, "limit": "2", **({"cursor": cursor} if cursor else {})}
            response = await api.client.get("/api/v1/recordings", params=query,
                                            headers=bearer(token))
            assert response.status == 200, await response.text()
            page = await response.json()
            ids += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                return ids

    assert await found() == newest_first(ours + theirs)
    assert await found(tag="odd") == newest_first(
        [c for c in ours + theirs if c["tags"] == ["odd"]])
    assert await found(tag="even", company=OTHER_COMPANY) == newest_first(
        [c for c in theirs if c["tags"] == ["even"]])
    assert await found(tag="even", agent="bertta", direction="outbound") == newest_first(
        [c for c in ours + theirs if c["agent"] == "bertta" and c["direction"] == "outbound"])
    assert await found(company="tenergia") == []


async def test_tampered_cursor_is_400(api: Api) -> None:
    await ingest_calls(api, 3)
    token = await api.token("quality", [COMPANY])
    page = await (await api.client.get("/api/v1/recordings", params={"limit": "1"},
                                       headers=bearer(token))).json()
    raw = bytearray(base64.urlsafe_b64decode(page["next_cursor"] + "=="))
    raw[5] ^= 0x01
    tampered = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    for cursor in (tampered, "garbage", page["next_cursor"] + "x"):
        response = await api.client.get("/api/v1/recordings", params={"cursor": cursor},
                                        headers=bearer(token))
        assert response.status == 400, cursor
    too_many = await api.client.get("/api/v1/recordings", params={"limit": "1001"},
                                    headers=bearer(token))
    assert too_many.status == 422


async def test_erasure_leaves_a_tombstone_only(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    (call,) = await ingest_calls(api, 1)
    dpo = await api.token("dpo", [COMPANY])
    quality = await api.token("quality", [COMPANY])
    path = f"/api/v1/recordings/{call['id']}"
    assert (await api.client.delete(path, json={"reason": "x"},
                                    headers=bearer(quality))).status == 403
    assert (await api.client.delete(path, json={}, headers=bearer(dpo))).status == 422
    response = await api.client.delete(path, json={"reason": "customer request 12"},
                                       headers=bearer(dpo))
    assert response.status == 200, await response.text()
    assert (await api.client.get(path, headers=bearer(quality))).status == 404
    assert await db.fetchval("SELECT count(*) FROM recordings") == 0
    tomb = await db.fetchrow("SELECT * FROM recording_tombstones")
    assert tomb["id"] == uuid.UUID(str(call["id"])) and tomb["reason"] == "customer request 12"
    assert await bucket_keys(settings) == []
    ingest = await api.token("ingest", [COMPANY])
    retry = await upload(api.client, ingest, {k: call[k] for k in (
        "company", "external_id", "started_at", "ended_at", "direction", "purpose")},
        audiogen.make_audio("wav_mulaw", 1.0, tone_hz=300.0))
    assert retry.status == 409


async def test_legal_hold_blocks_erasure(api: Api, db: asyncpg.Connection) -> None:
    (call,) = await ingest_calls(api, 1)
    await db.execute("UPDATE recordings SET legal_holds = '{case-1}'")
    dpo = await api.token("dpo", [COMPANY])
    response = await api.client.delete(f"/api/v1/recordings/{call['id']}",
                                       json={"reason": "x"}, headers=bearer(dpo))
    assert response.status == 409
    assert await db.fetchval("SELECT count(*) FROM recordings") == 1


async def test_evaluations_are_stored_per_evaluator(api: Api) -> None:
    (call,) = await ingest_calls(api, 1)
    path = f"/api/v1/recordings/{call['id']}/evaluations"
    first = await api.token("quality", [COMPANY], name="eva")
    second = await api.token("quality", [COMPANY], name="otto")
    scores = {"greeting": 3, "identification": 5, "solution": 4, "courtesy": 5}
    body = {"form": "perus", "scores": scores, "comment": "<b>ok</b>"}
    assert (await api.client.post(path, json=body, headers=bearer(first))).status == 201
    body["scores"] = {**scores, "greeting": 4}
    assert (await api.client.post(path, json=body, headers=bearer(first))).status == 200
    assert (await api.client.post(path, json=body, headers=bearer(second))).status == 201
    bad = await api.client.post(path, json={"form": "perus", "scores": {"x": -1}},
                                headers=bearer(first))
    assert bad.status == 422
    listed = await (await api.client.get(path, headers=bearer(second))).json()
    assert sorted((e["evaluator"], e["scores"]["greeting"]) for e in listed["items"]) == [
        ("eva", 4), ("otto", 4)]
    outsider = await api.token("quality", [OTHER_COMPANY])
    assert (await api.client.get(path, headers=bearer(outsider))).status == 404
    assert (await api.client.post(path, json=body, headers=bearer(outsider))).status == 404
