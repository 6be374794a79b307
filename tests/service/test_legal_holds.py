"""Legal holds: a held record never expires and cannot be erased; releasing one of two
cases keeps it; a held customer's future calls are held too."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from minio import Minio
from minio.error import S3Error

from service.retention import scheduler as purge_scheduler
from service.settings import Settings
from tests import audiogen
from tests.helpers import Api, bearer, until_waiting
from tests.service.data_subject_factory import A, customer, recording_of
from tests.service.recording_factory import COMPANY, analysed, bucket_keys, metadata, upload
from tests.service.retention_factory import FUTURE, app_of, purge_context_of, purge_job_only


async def stored_id(api: Api) -> str:
    token = await api.token("ingest", [COMPANY], name="pbx")
    response = await upload(api.client, token, metadata(), audiogen.make_audio("wav_pcm", 1.0))
    assert response.status == 201
    return str((await response.json())["id"])


async def hold(api: Api, admin: str, case: str, **records: list[str]) -> dict[str, object]:
    response = await api.client.post("/api/v1/legal-holds", headers=bearer(admin),
                                     json={"case": case, "reason": "court order", **records})
    assert response.status == 201, await response.text()
    body: dict[str, object] = await response.json()
    return body


async def release(api: Api, admin: str, case: str) -> int:
    response = await api.client.delete(f"/api/v1/legal-holds/{case}", headers=bearer(admin))
    return response.status


async def purge(api: Api) -> None:
    report = await purge_scheduler.run_now(purge_context_of(api), FUTURE, actor="test")
    assert report.state == "finished", report.error


async def test_expired_held_recording_survives_until_both_cases_are_released(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    admin = await api.token("admin", all_companies=True)
    recording_id = await stored_id(api)
    await hold(api, admin, "KKO-2026-1", recording_ids=[recording_id])
    await hold(api, admin, "HO-2026-7", recording_ids=[recording_id])
    shown = await api.client.get(f"/api/v1/recordings/{recording_id}", headers=bearer(admin))
    assert (await shown.json())["legal_holds"] == ["HO-2026-7", "KKO-2026-1"]

    await purge(api)
    assert len(await bucket_keys(settings)) == 1

    assert await release(api, admin, "KKO-2026-1") == 200
    assert await release(api, admin, "KKO-2026-1") == 404  # released once
    shown = await api.client.get(f"/api/v1/recordings/{recording_id}", headers=bearer(admin))
    assert (await shown.json())["legal_holds"] == ["HO-2026-7"]
    await purge(api)
    assert len(await bucket_keys(settings)) == 1

    assert await release(api, admin, "HO-2026-7") == 200
    await purge(api)
    assert await bucket_keys(settings) == []
    assert await db.fetchval("SELECT count(*) FROM recordings") == 0
    listed = await api.client.get("/api/v1/legal-holds", headers=bearer(admin))
    assert (await listed.json())["items"] == []
    everything = await api.client.get("/api/v1/legal-holds?released=true",
                                      headers=bearer(admin))
    assert {h["case"] for h in (await everything.json())["items"]} == {"KKO-2026-1",
                                                                       "HO-2026-7"}


async def test_held_recording_cannot_be_erased(api: Api) -> None:
    admin = await api.token("admin", all_companies=True)
    recording_id = await stored_id(api)
    await hold(api, admin, "case-1", recording_ids=[recording_id])
    refused = await api.client.delete(f"/api/v1/recordings/{recording_id}",
                                      json={"reason": "asked"}, headers=bearer(admin))
    assert refused.status == 409
    await release(api, admin, "case-1")
    erased = await api.client.delete(f"/api/v1/recordings/{recording_id}",
                                     json={"reason": "asked"}, headers=bearer(admin))
    assert erased.status == 200


async def test_customer_hold_covers_later_calls_and_refuses_erasure(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    admin = await api.token("admin", all_companies=True)
    customer_id = await customer(api, [A])
    await hold(api, admin, "dispute-9", customer_ids=[customer_id])
    recording_id, _ = await recording_of(api, A, "50010")  # stored after the hold
    shown = await api.client.get(f"/api/v1/recordings/{recording_id}", headers=bearer(admin))
    assert (await shown.json())["legal_holds"] == ["dispute-9"]

    erasure = await api.client.post(f"/api/v1/customers/{customer_id}/erasure",
                                    json={"reason": "asked"}, headers=bearer(admin))
    assert erasure.status == 409
    await purge(api)
    assert await db.fetchval("SELECT count(*) FROM recordings") == 1
    assert await db.fetchval("SELECT erased_at FROM customers WHERE id = $1",
                             uuid.UUID(customer_id)) is None

    assert await release(api, admin, "dispute-9") == 200
    erasure = await api.client.post(f"/api/v1/customers/{customer_id}/erasure",
                                    json={"reason": "asked"}, headers=bearer(admin))
    assert erasure.status == 200


async def test_unknown_records_and_roles(api: Api) -> None:
    admin = await api.token("admin", all_companies=True)
    missing = await api.client.post(
        "/api/v1/legal-holds", headers=bearer(admin),
        json={"case": "c-1", "reason": "court order", "recording_ids": [str(uuid.uuid4())]})
    assert missing.status == 422
    dpo = await api.token("dpo", all_companies=True)
    refused = await api.client.post("/api/v1/legal-holds", headers=bearer(dpo),
                                    json={"case": "c-2", "reason": "court order"})
    assert refused.status == 403


async def test_two_requests_opening_the_same_case_at_once_both_succeed(
    api: Api, db: asyncpg.Connection
) -> None:
    admin = await api.token("admin", all_companies=True)
    recording_id = await stored_id(api)
    assert (await analysed(api.client, admin, recording_id))["analysis"] is not None
    body = {"case": "same-1", "reason": "court order", "recording_ids": [recording_id]}
    lock = db.transaction()
    await lock.start()
    try:
        # The first request waits on the recording with the new case inserted; the second
        # reaches the same case id meanwhile.
        await db.execute("SELECT 1 FROM recordings WHERE id = $1 FOR UPDATE",
                         uuid.UUID(recording_id))
        first = asyncio.ensure_future(
            api.client.post("/api/v1/legal-holds", headers=bearer(admin), json=body))
        await until_waiting(db, 1)
        second = asyncio.ensure_future(
            api.client.post("/api/v1/legal-holds", headers=bearer(admin), json=body))
        await until_waiting(db, 2)
    finally:
        await lock.rollback()
    answers = [await first, await second]
    assert [a.status for a in answers] == [201, 201], [await a.text() for a in answers]
    listed = await api.client.get("/api/v1/legal-holds", headers=bearer(admin))
    assert [(h["case"], h["recording_ids"]) for h in (await listed.json())["items"]] \
        == [("same-1", [recording_id])]


async def test_hold_and_erasure_of_one_customer_at_once_do_not_deadlock(
    api: Api, db: asyncpg.Connection
) -> None:
    admin = await api.token("admin", all_companies=True)
    customer_id = await customer(api, [A])
    recording_id, _ = await recording_of(api, A, "50010")
    assert (await analysed(api.client, admin, recording_id))["analysis"] is not None
    lock = db.transaction()
    await lock.start()
    try:
        # The erasure is held where it reads the holds, with the customer locked; the hold
        # then asks for the same customer and call.
        await db.execute("LOCK TABLE legal_hold_customers IN ACCESS EXCLUSIVE MODE")
        erasing = asyncio.ensure_future(api.client.post(
            f"/api/v1/customers/{customer_id}/erasure", json={"reason": "asked"},
            headers=bearer(admin)))
        await until_waiting(db, 1)
        holding = asyncio.ensure_future(api.client.post(
            "/api/v1/legal-holds", headers=bearer(admin),
            json={"case": "both-1", "reason": "court order", "customer_ids": [customer_id],
                  "recording_ids": [recording_id]}))
        await until_waiting(db, 2)
    finally:
        await lock.rollback()
    erased, held = await erasing, await holding
    # One of them goes first and the other sees it: never both, never a server error.
    assert (erased.status, held.status) in ((200, 422), (409, 201)), \
        (await erased.text(), await held.text())
    for answer in (erased, held):
        assert answer.status < 300 or answer.content_type == "application/problem+json"
    assert await db.fetchval("SELECT count(*) FROM recordings") \
        == (0 if erased.status == 200 else 1)


async def test_a_request_chosen_as_deadlock_victim_answers_503_with_retry_after(
    api: Api, db: asyncpg.Connection
) -> None:
    admin = await api.token("admin", all_companies=True)
    recording_id = await stored_id(api)
    assert (await analysed(api.client, admin, recording_id))["analysis"] is not None
    await hold(api, admin, "open-1", recording_ids=[recording_id])
    body = {"case": "open-1", "reason": "court order", "recording_ids": [recording_id]}
    lock = db.transaction()
    await lock.start()
    try:
        # Another session takes the call, then the case: the opposite order of the request,
        # which PostgreSQL rolls back to break the cycle (it waited first).
        await db.execute("SELECT 1 FROM recordings WHERE id = $1 FOR UPDATE",
                         uuid.UUID(recording_id))
        adding = asyncio.ensure_future(
            api.client.post("/api/v1/legal-holds", headers=bearer(admin), json=body))
        await until_waiting(db, 1)
        await db.execute("SELECT 1 FROM legal_holds WHERE case_id = 'open-1' FOR UPDATE")
    finally:
        await lock.rollback()
    refused = await adding
    assert refused.status == 503, await refused.text()
    assert refused.content_type == "application/problem+json"
    assert refused.headers["Retry-After"] == "1"
    assert (await refused.json())["status"] == 503
    again = await api.client.post("/api/v1/legal-holds", headers=bearer(admin), json=body)
    assert again.status == 201, await again.text()


@pytest.fixture
def locked_bucket(settings: Settings) -> Iterator[Minio]:
    """The test's bucket created with object lock (hence versioning) before the app starts."""
    assert settings.s3_endpoint and settings.s3_access_key and settings.s3_secret_key
    client = Minio(settings.s3_endpoint, access_key=settings.s3_access_key.get_secret_value(),
                   secret_key=settings.s3_secret_key.get_secret_value(), secure=False,
                   region=settings.s3_region)
    client.make_bucket(settings.s3_bucket, settings.s3_region, object_lock=True)
    yield client
    for version in client.list_objects(settings.s3_bucket, recursive=True,
                                       include_version=True):
        assert version.object_name is not None
        with contextlib.suppress(S3Error):
            client.disable_object_legal_hold(settings.s3_bucket, version.object_name,
                                             version.version_id)
        with contextlib.suppress(S3Error):
            client.remove_object(settings.s3_bucket, version.object_name, version.version_id)


def versions(client: Minio, bucket: str) -> list[tuple[str, str | None]]:
    return [(str(v.object_name), v.version_id) for v in
            client.list_objects(bucket, prefix="recordings/", recursive=True,
                                include_version=True)]


async def test_hold_is_mirrored_onto_the_object_where_the_bucket_has_object_lock(
    locked_bucket: Minio, api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    admin = await api.token("admin", all_companies=True)
    recording_id = await stored_id(api)
    key = await db.fetchval("SELECT object_key FROM recordings WHERE id = $1",
                            uuid.UUID(recording_id))
    await hold(api, admin, "locked-1", recording_ids=[recording_id])
    assert locked_bucket.is_object_legal_hold_enabled(settings.s3_bucket, key)
    [(_, version)] = versions(locked_bucket, settings.s3_bucket)
    # Even someone with the S3 keys cannot remove the held audio behind tallenne's back.
    with pytest.raises(S3Error):
        locked_bucket.remove_object(settings.s3_bucket, key, version)

    assert await release(api, admin, "locked-1") == 200
    assert not locked_bucket.is_object_legal_hold_enabled(settings.s3_bucket, key)
    assert await purge_job_only(app_of(api)) == 1
    # A versioned bucket: the purge removed every version, not just the latest.
    assert versions(locked_bucket, settings.s3_bucket) == []


async def test_without_object_lock_the_database_hold_alone_protects(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    admin = await api.token("admin", all_companies=True)
    recording_id = await stored_id(api)
    placed = await hold(api, admin, "plain-1", recording_ids=[recording_id])
    assert placed["recording_ids"] == [recording_id]
    event = await db.fetchrow("SELECT detail FROM audit_events WHERE action = 'legal_hold.place'")
    assert json.loads(event["detail"])["objects_locked"] == 0
    await purge(api)
    assert len(await bucket_keys(settings)) == 1  # held in PostgreSQL, kept in S3
