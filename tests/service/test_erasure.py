"""Erasure of a customer: the key is destroyed so even an earlier copy of the audio cannot
be decrypted, personal fields are blanked, tombstones and the ledger remain, holds refuse,
and re-applying the ledger after a restore erases the person again."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from service.settings import Settings
from storage import erasure as erasure_store
from storage.crypto import SegmentDecryptor, load_master_key, segment_count, unwrap_key
from storage.db import create_pool
from storage.errors import IntegrityError
from storage.keys import company_key_context, customer_key_context, recording_key_context
from tests import audiogen
from tests.helpers import Api, bearer, until_waiting
from tests.service.data_subject_factory import A, B, customer, recording_of
from tests.service.recording_factory import (
    analysed,
    bucket_keys,
    metadata,
    object_store,
    upload,
)

REASON = "customer asked for erasure, ticket 881"


def decrypt_copy(stored: bytes, data_key: bytes, recording_id: uuid.UUID, size: int) -> bytes:
    decryptor = SegmentDecryptor(data_key, recording_id, 0, segment_count(size) - 1)
    return decryptor.update(stored) + decryptor.finalize()


async def erase(api: Api, token: str, customer_id: str) -> tuple[int, dict[str, Any]]:
    response = await api.client.post(f"/api/v1/customers/{customer_id}/erasure",
                                      json={"reason": REASON}, headers=bearer(token))
    return response.status, await response.json()


async def stored_call(api: Api, db: asyncpg.Connection) -> tuple[str, str, Path, asyncpg.Record]:
    customer_id = await customer(api, [A, B])
    recording_id, path = await recording_of(api, A, "50010")
    row = await db.fetchrow("SELECT * FROM recordings WHERE id = $1", uuid.UUID(recording_id))
    assert row["key_owner"] == "customer"
    return customer_id, recording_id, path, row


async def test_copy_taken_before_erasure_cannot_be_decrypted_with_what_remains(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    customer_id, recording_id, path, row = await stored_call(api, db)
    store = object_store(settings)
    try:
        copy = await store.get_bytes(row["object_key"])  # e.g. a backup of the bucket
    finally:
        await store.close()
    assert settings.master_key is not None
    master = load_master_key(settings.master_key.get_secret_value())
    rid, cid = uuid.UUID(recording_id), uuid.UUID(customer_id)
    context = recording_key_context(rid, "customer", cid)
    size = row["size_bytes"]

    # Before: the key chain in PostgreSQL opens the copy.
    wrapped_customer = await db.fetchval(
        "SELECT wrapped_key FROM customer_keys WHERE customer_id = $1", cid)
    customer_key = unwrap_key(master, wrapped_customer, context=customer_key_context(cid))
    data_key = unwrap_key(customer_key, row["wrapped_key"], context=context)
    assert decrypt_copy(copy, data_key, rid, size) == path.read_bytes()

    # The customer is one of A and B: only a dpo of both may erase them.
    dpo = await api.token("dpo", all_companies=True)
    status, body = await erase(api, dpo, customer_id)
    assert status == 200, body
    assert body["recordings_erased"] == 1

    # After: every key left in PostgreSQL, tried against the data key wrapped in the old row.
    assert await db.fetchval(
        "SELECT count(*) FROM customer_keys WHERE customer_id = $1", cid) == 0
    remaining = [
        unwrap_key(master, r["wrapped_key"], context=customer_key_context(r["customer_id"]))
        for r in await db.fetch("SELECT customer_id, wrapped_key FROM customer_keys")
    ] + [
        unwrap_key(master, r["wrapped_key"], context=company_key_context(r["company_id"]))
        for r in await db.fetch("SELECT company_id, wrapped_key FROM company_keys")
    ]
    for candidate in [master, *remaining]:
        with pytest.raises(IntegrityError):
            unwrap_key(candidate, row["wrapped_key"], context=context)
    assert await db.fetchval("SELECT count(*) FROM recordings WHERE id = $1", rid) == 0
    assert await bucket_keys(settings) == []


async def test_erasure_blanks_person_keeps_tombstones_and_ledger(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    customer_id, recording_id, _, row = await stored_call(api, db)
    web = await api.token("ingest", [A], name="web")
    posted = await api.client.post("/api/v1/web-events", json=[{
        "ts": "2026-03-02T10:00:00+02:00", "site": "pohjoistavoimaa.fi", "event": "login",
        "url": "https://pohjoistavoimaa.fi/oma", "session_id": "s-1", "company": A,
        "customer_number": "50010", "ip": "192.0.2.44", "user_agent": "Firefox"}],
        headers=bearer(web))
    assert posted.status == 200, await posted.text()
    admin = await api.token("admin", all_companies=True)
    status, body = await erase(api, admin, customer_id)
    assert status == 200, body
    cid = uuid.UUID(customer_id)
    person = await db.fetchrow("SELECT * FROM customers WHERE id = $1", cid)
    for column in ("name", "personal_id_enc", "personal_id_hash", "email", "phone"):
        assert person[column] is None, column
    assert await db.fetchval(
        "SELECT count(*) FROM customer_keys WHERE customer_id = $1", cid) == 0
    assert person["erased_at"] is not None
    assert await db.fetchval("SELECT count(*) FROM customer_memberships"
                             " WHERE customer_id = $1", cid) == 0
    tombstone = await db.fetchrow("SELECT * FROM recording_tombstones WHERE id = $1",
                                  uuid.UUID(recording_id))
    assert tombstone["reason"] == REASON and tombstone["external_id"] == row["external_id"]
    event = await db.fetchrow("SELECT * FROM web_events")
    assert event["customer_id"] is None and event["customer_number"] is None
    assert event["ip"] is None and event["session_id"] is None
    ledger = await db.fetchrow("SELECT * FROM erasure_ledger WHERE customer_id = $1", cid)
    assert ledger["recording_ids"] == [uuid.UUID(recording_id)]
    assert len(ledger["company_ids"]) == 2
    assert await bucket_keys(settings, erasure_store.LEDGER_PREFIX) == [
        erasure_store.ledger_object_key(cid)]
    audited = await db.fetchrow("SELECT * FROM audit_events WHERE action = 'customer.erase'")
    assert audited["reason"] == REASON and audited["outcome"] == "ok"
    # Gone for every API caller; a second erasure finds nothing.
    dpo = await api.token("dpo", all_companies=True)
    gone = await api.client.get(f"/api/v1/customers/{customer_id}/access-report",
                                params={"verified_by": "in_person"}, headers=bearer(dpo))
    assert gone.status == 404
    assert (await erase(api, admin, customer_id))[0] == 404


async def test_erasure_is_refused_while_under_a_legal_hold(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    customer_id, recording_id, _, _ = await stored_call(api, db)
    await db.execute("UPDATE recordings SET legal_holds = '{case-2026-17}' WHERE id = $1",
                     uuid.UUID(recording_id))
    dpo = await api.token("dpo", [A, B])
    status, _ = await erase(api, dpo, customer_id)
    assert status == 409
    assert await db.fetchval("SELECT count(*) FROM customer_keys WHERE customer_id = $1",
                             uuid.UUID(customer_id)) == 1
    assert len(await bucket_keys(settings)) == 1
    refused = await db.fetchrow("SELECT * FROM audit_events WHERE action = 'customer.erase'")
    assert refused["outcome"] == "refused"


async def test_hold_on_a_call_committed_while_its_customer_is_erased_refuses_the_erasure(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    customer_id, recording_id, _, _ = await stored_call(api, db)
    admin = await api.token("admin", all_companies=True)
    assert (await analysed(api.client, admin, recording_id))["analysis"] is not None
    lock = db.transaction()
    await lock.start()
    try:
        # The hold stops just before its commit, with the call locked; then the erasure
        # starts.
        await db.execute("LOCK TABLE legal_hold_recordings IN ACCESS EXCLUSIVE MODE")
        holding = asyncio.ensure_future(api.client.post(
            "/api/v1/legal-holds", headers=bearer(admin),
            json={"case": "late-1", "reason": "court order", "recording_ids": [recording_id]}))
        await until_waiting(db, 1)
        erasing = asyncio.ensure_future(erase(api, admin, customer_id))
        await until_waiting(db, 2)
    finally:
        await lock.rollback()
    held = await holding
    assert held.status == 201, await held.text()
    status, body = await erasing
    assert status == 409, body
    assert await db.fetchval("SELECT legal_holds FROM recordings WHERE id = $1",
                             uuid.UUID(recording_id)) == ["late-1"]
    assert await db.fetchval("SELECT erased_at FROM customers WHERE id = $1",
                             uuid.UUID(customer_id)) is None
    assert len(await bucket_keys(settings)) == 1


async def test_other_company_and_roles_cannot_erase(api: Api, db: asyncpg.Connection) -> None:
    customer_id = await customer(api, [A])
    outsider = await api.token("dpo", [B])
    assert (await erase(api, outsider, customer_id))[0] == 404
    service = await api.token("customer_service", [A])
    assert (await erase(api, service, customer_id))[0] == 403


async def test_a_shared_customer_is_erased_only_by_a_dpo_of_every_company_holding_them(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    customer_id, recording_id, _, _ = await stored_call(api, db)  # of A and B; a call in A
    one_company = await api.token("dpo", [A])
    status, body = await erase(api, one_company, customer_id)
    assert status == 403, body
    assert body["type"] == "about:blank" and "outside your scope" in body["detail"]
    assert await db.fetchval("SELECT erased_at FROM customers WHERE id = $1",
                             uuid.UUID(customer_id)) is None
    assert await db.fetchval("SELECT count(*) FROM recordings WHERE id = $1",
                             uuid.UUID(recording_id)) == 1
    assert len(await bucket_keys(settings)) == 1
    both = await api.token("dpo", [A, B])
    status, body = await erase(api, both, customer_id)
    assert status == 200, body
    assert body["recordings_erased"] == 1


async def test_restore_from_backup_before_erasure_is_erased_again(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    customer_id, recording_id, _, row = await stored_call(api, db)
    cid = uuid.UUID(customer_id)
    before = await db.fetchrow("SELECT * FROM customers WHERE id = $1", cid)
    key = await db.fetchrow("SELECT * FROM customer_keys WHERE customer_id = $1", cid)
    memberships = await db.fetch("SELECT * FROM customer_memberships WHERE customer_id = $1",
                                 cid)
    dpo = await api.token("dpo", [A, B])
    assert (await erase(api, dpo, customer_id))[0] == 200

    # A restore of a backup taken before the erasure: the person, their memberships and the
    # recording row are back, and the database's own ledger does not know of the erasure.
    await db.execute(
        "UPDATE customers SET name = $2, personal_id_enc = $3, personal_id_hash = $4,"
        " email = $5, erased_at = NULL WHERE id = $1",
        cid, before["name"], before["personal_id_enc"], before["personal_id_hash"],
        before["email"])
    await db.execute("INSERT INTO customer_keys (customer_id, kek_version, wrapped_key)"
                     " VALUES ($1, $2, $3)", cid, key["kek_version"], key["wrapped_key"])
    for m in memberships:
        await db.execute("INSERT INTO customer_memberships (customer_id, company_id,"
                         " customer_number) VALUES ($1, $2, $3)",
                         cid, m["company_id"], m["customer_number"])
    await db.execute("DELETE FROM recording_tombstones")
    columns = list(row.keys())
    await db.execute(
        f"INSERT INTO recordings ({', '.join(columns)}) VALUES"
        f" ({', '.join(f'${i + 1}' for i in range(len(columns)))})", *row.values())
    await db.execute("DELETE FROM erasure_ledger")

    assert settings.database_url is not None
    pool = await create_pool(settings.database_url.get_secret_value(), max_size=1)
    store = object_store(settings)
    try:
        async with pool.acquire() as conn:
            assert await erasure_store.reapply_erasures(conn, store) == \
                erasure_store.Reapplied(customers=1, recordings=0)
            assert await erasure_store.reapply_erasures(conn, store) == \
                erasure_store.Reapplied(customers=0, recordings=0)
    finally:
        await pool.close()
        await store.close()
    person = await db.fetchrow("SELECT * FROM customers WHERE id = $1", cid)
    assert person["name"] is None and person["erased_at"] is not None
    assert await db.fetchval("SELECT count(*) FROM customer_keys") == 0
    assert await db.fetchval("SELECT count(*) FROM recordings") == 0
    assert await db.fetchval("SELECT count(*) FROM erasure_ledger") == 1


async def test_call_stored_before_its_customer_is_shredded_with_the_customer_key(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    token = await api.token("ingest", [A], name="pbx")
    path = audiogen.make_audio("wav_mulaw", 4.0)
    response = await upload(api.client, token, metadata(company=A, customer_number="70010"),
                            path)
    assert response.status == 201, await response.text()
    rid = uuid.UUID((await response.json())["id"])
    before = await db.fetchrow("SELECT * FROM recordings WHERE id = $1", rid)
    assert (before["key_owner"], before["customer_id"]) == ("company", None)

    customer_id = await customer(api, [A], number="7001")  # number 70010 at A
    cid = uuid.UUID(customer_id)
    row = await db.fetchrow("SELECT * FROM recordings WHERE id = $1", rid)
    assert (row["key_owner"], row["key_owner_id"], row["customer_id"]) == ("customer", cid, cid)
    store = object_store(settings)
    try:
        copy = await store.get_bytes(row["object_key"])  # e.g. a backup of the bucket
    finally:
        await store.close()
    assert settings.master_key is not None
    master = load_master_key(settings.master_key.get_secret_value())
    wrapped_customer = await db.fetchval(
        "SELECT wrapped_key FROM customer_keys WHERE customer_id = $1", cid)
    customer_key = unwrap_key(master, wrapped_customer, context=customer_key_context(cid))
    data_key = unwrap_key(customer_key, row["wrapped_key"],
                          context=recording_key_context(rid, "customer", cid))
    assert decrypt_copy(copy, data_key, rid, row["size_bytes"]) == path.read_bytes()

    # The customer is one of A and B: only a dpo of both may erase them.
    dpo = await api.token("dpo", all_companies=True)
    status, body = await erase(api, dpo, customer_id)
    assert status == 200, body
    assert body["recordings_erased"] == 1

    company_id = row["company_id"]
    remaining = [
        unwrap_key(master, r["wrapped_key"], context=customer_key_context(r["customer_id"]))
        for r in await db.fetch("SELECT customer_id, wrapped_key FROM customer_keys")
    ] + [
        unwrap_key(master, r["wrapped_key"], context=company_key_context(r["company_id"]))
        for r in await db.fetch("SELECT company_id, wrapped_key FROM company_keys")
    ]
    contexts = [recording_key_context(rid, "customer", cid),
                recording_key_context(rid, "company", company_id)]
    for candidate in [master, *remaining]:
        for context in contexts:
            with pytest.raises(IntegrityError):
                unwrap_key(candidate, row["wrapped_key"], context=context)
    assert await db.fetchval("SELECT count(*) FROM recordings WHERE id = $1", rid) == 0
    assert await bucket_keys(settings) == []
