"""Customers pushed by billing systems: identity codes, matching, scoping, linking, bans."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from schemas.personal_id import CHECK_CHARACTERS
from service.resources import open_resources
from service.settings import Settings
from storage.crypto import load_master_key
from tests.helpers import Api, bearer, until_waiting

A = "kemin-energia"
B = "tornion-energia"


def code(ddmmyy: str, sign: str, individual: int) -> str:
    number = int(f"{ddmmyy}{individual:03d}")
    return f"{ddmmyy}{sign}{individual:03d}{CHECK_CHARACTERS[number % 31]}"


PERSON = code("131052", "-", 308)  # 131052-308T
OTHER = code("010203", "A", 456)


def record(personal_id: str = PERSON, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Maija Meikäläinen",
        "personal_id": personal_id,
        "address": {"street": "Kauppakatu 1", "postal_code": "94100", "city": "Kemi",
                    "country": "FI"},
        "email": "maija@example.fi",
        "phone": "+358401234567",
    }
    body.update(changes)
    return body


async def put(api: Api, token: str, company: str, number: str, body: dict[str, Any]) -> Any:
    return await api.client.put(f"/api/v1/customers/{company}/{number}", json=body,
                                headers=bearer(token))


async def all_rows_as_text(db: asyncpg.Connection) -> str:
    tables = await db.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
    )
    dump = []
    for t in tables:
        for row in await db.fetch(f'SELECT t::text AS line FROM "{t["relname"]}" t'):
            dump.append(row["line"])
    return "\n".join(dump)


async def pg_dump(api: Api) -> str:
    import asyncio

    from devstack.embedded import _pg_bin

    process = await asyncio.create_subprocess_exec(
        str(_pg_bin("pg_dump")), "--data-only", api.superuser_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert "COPY public.customers" in out.decode()
    return out.decode()


async def test_create_then_update_returns_201_then_200_with_masked_code(api: Api) -> None:
    ingest = await api.token("ingest", [A])
    first = await put(api, ingest, A, "1001", record())
    assert first.status == 201, await first.text()
    body = await first.json()
    assert body["personal_id"] == "131052-****"
    assert body["companies"] == [{"company": A, "customer_number": "1001", "ended_at": None}]
    second = await put(api, ingest, A, "1001", record(email="uusi@example.fi"))
    assert second.status == 200
    assert (await second.json())["email"] == "uusi@example.fi"


async def test_invalid_identity_code_is_422_without_the_code(api: Api) -> None:
    ingest = await api.token("ingest", [A])
    bad = PERSON[:-1] + ("A" if PERSON[-1] != "A" else "B")
    response = await put(api, ingest, A, "1001", record(personal_id=bad))
    assert response.status == 422
    text = await response.text()
    assert bad not in text and bad.lower() not in text
    assert "personal_id" in text


async def test_identity_code_never_stored_or_logged_in_plain_text(
    api: Api, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ingest = await api.token("ingest", [A])
    admin = await api.token("admin", all_companies=True)
    assert (await put(api, ingest, A, "1001", record())).status == 201
    # Another identity code under the number: it passed to another person (a new customer).
    assert (await put(api, ingest, A, "1001", record(personal_id=OTHER))).status == 201
    lookup = await api.client.post("/api/v1/customers/lookup", json={"personal_id": OTHER},
                                   headers=bearer(admin))
    assert (await lookup.json())["items"][0]["personal_id"] == OTHER
    dump = await all_rows_as_text(db) + await pg_dump(api)
    for known in (PERSON, OTHER):
        assert known not in dump
        assert known not in caplog.text
    history = await db.fetch("SELECT change, changed_fields FROM customer_history ORDER BY id")
    assert [h["change"] for h in history] == ["created", "number_passed_on", "created"]
    assert history[1]["changed_fields"] == ["ended_at"]
    audit = await db.fetch("SELECT detail::text AS d FROM audit_events WHERE action = $1",
                           "customer.write")
    assert len(audit) == 2 and all(PERSON not in a["d"] for a in audit)


async def test_dpo_and_admin_see_the_code_others_masked(api: Api) -> None:
    ingest = await api.token("ingest", [A])
    created = await (await put(api, ingest, A, "1001", record())).json()
    for role, expected in (("dpo", PERSON), ("admin", PERSON),
                           ("customer_service", "131052-****")):
        token = await api.token(role, [A])
        response = await api.client.get(f"/api/v1/customers/{created['id']}",
                                        headers=bearer(token))
        assert response.status == 200
        assert (await response.json())["personal_id"] == expected, role


async def test_person_of_two_companies_is_one_customer_with_two_memberships(
    api: Api, db: asyncpg.Connection
) -> None:
    ingest_a = await api.token("ingest", [A])
    ingest_b = await api.token("ingest", [B])
    first = await (await put(api, ingest_b, B, "B-7", record())).json()
    response = await put(api, ingest_a, A, "A-1", record())
    assert response.status == 201
    second = await response.json()
    assert second["id"] == first["id"]
    # A's caller learns nothing of B: only its own membership is shown.
    assert second["companies"] == [{"company": A, "customer_number": "A-1", "ended_at": None}]
    assert await db.fetchval("SELECT count(*) FROM customers") == 1
    assert await db.fetchval("SELECT count(*) FROM customer_memberships") == 2
    admin = await api.token("admin", all_companies=True)
    both = await (await api.client.get(f"/api/v1/customers/{first['id']}",
                                       headers=bearer(admin))).json()
    assert {m["company"] for m in both["companies"]} == {A, B}


async def test_user_of_a_cannot_see_customer_of_only_b(api: Api) -> None:
    ingest_b = await api.token("ingest", [B])
    created = await (await put(api, ingest_b, B, "B-7", record())).json()
    service_a = await api.token("customer_service", [A])
    missing = await api.client.get(f"/api/v1/customers/{created['id']}",
                                   headers=bearer(service_a))
    nowhere = await api.client.get("/api/v1/customers/00000000-0000-0000-0000-000000000000",
                                   headers=bearer(service_a))
    assert missing.status == nowhere.status == 404
    assert (await missing.json())["detail"] == (await nowhere.json())["detail"]
    for query in ({"personal_id": PERSON}, {"company": B, "customer_number": "B-7"}):
        found = await api.client.post("/api/v1/customers/lookup", json=query,
                                      headers=bearer(service_a))
        assert found.status == 200
        assert (await found.json())["items"] == []
    ingest_a = await api.token("ingest", [A])
    assert (await put(api, ingest_a, B, "B-7", record())).status == 404


async def test_lookup_by_number_finds_and_is_audited(api: Api, db: asyncpg.Connection) -> None:
    ingest = await api.token("ingest", [A])
    await put(api, ingest, A, "1001", record())
    service = await api.token("customer_service", [A])
    found = await api.client.post("/api/v1/customers/lookup",
                                  json={"company": A, "customer_number": "1001"},
                                  headers=bearer(service))
    items = (await found.json())["items"]
    assert len(items) == 1 and items[0]["name"] == "Maija Meikäläinen"
    assert await db.fetchval(
        "SELECT count(*) FROM audit_events WHERE action = 'customer.search'") == 1
    neither = await api.client.post("/api/v1/customers/lookup", json={"company": A},
                                    headers=bearer(service))
    assert neither.status == 422


async def test_events_before_customer_are_linked_when_it_arrives(
    api: Api, db: asyncpg.Connection
) -> None:
    ingest = await api.token("ingest", [A])
    line = ('{"ts":"2026-01-05T10:00:00+02:00","site":"kemin-energia.fi","event":"login",'
            '"customer_number":"1001"}')
    posted = await api.client.post("/api/v1/web-events", data=line,
                                   headers={**bearer(ingest),
                                            "Content-Type": "application/x-ndjson"})
    assert (await posted.json())["accepted"] == 1
    assert await db.fetchval("SELECT customer_id FROM web_events") is None
    created = await (await put(api, ingest, A, "1001", record())).json()
    assert str(await db.fetchval("SELECT customer_id FROM web_events")) == created["id"]
    # And the other order: the customer exists, the event is linked on arrival.
    posted = await api.client.post("/api/v1/web-events", data=line.replace("login", "view"),
                                   headers={**bearer(ingest),
                                            "Content-Type": "application/x-ndjson"})
    assert (await posted.json())["accepted"] == 1
    linked = await db.fetchval(
        "SELECT count(*) FROM web_events WHERE customer_id = $1::uuid", created["id"])
    assert linked == 2
    service = await api.token("customer_service", [A])
    detail = await (await api.client.get(f"/api/v1/customers/{created['id']}",
                                         headers=bearer(service))).json()
    assert detail["counts"]["web_events"] == 2


async def test_prohibition_recorded_withdrawn_and_kept_in_history(
    api: Api, db: asyncpg.Connection
) -> None:
    ingest = await api.token("ingest", [A])
    created = await (await put(api, ingest, A, "1001", record())).json()
    service = await api.token("customer_service", [A])
    url = f"/api/v1/customers/{created['id']}/prohibitions"
    added = await api.client.post(url, json={"use": "direct_marketing", "channel": "phone",
                                             "received_at": "2026-01-02T09:00:00+02:00"},
                                  headers=bearer(service))
    assert added.status == 201, await added.text()
    bans = (await added.json())["prohibitions"]
    assert bans[0]["use"] == "direct_marketing" and bans[0]["withdrawn_at"] is None
    again = await api.client.post(url, json={"use": "direct_marketing", "channel": "post"},
                                  headers=bearer(service))
    assert again.status == 200
    withdrawn = await api.client.delete(f"{url}/direct_marketing", headers=bearer(service))
    assert withdrawn.status == 200
    assert (await withdrawn.json())["prohibitions"][0]["withdrawn_at"] is not None
    gone = await api.client.delete(f"{url}/direct_marketing", headers=bearer(service))
    assert gone.status == 404
    events = [(r["action"], r["again"]) for r in await db.fetch(
        "SELECT action, detail->>'already_in_force' AS again FROM audit_events"
        " WHERE action LIKE 'prohibition.%' ORDER BY seq")]
    # The repeat changed nothing but still showed the customer's data: audited as well.
    assert events == [("prohibition.add", None), ("prohibition.add", "true"),
                      ("prohibition.withdraw", None)]
    other = await api.token("customer_service", [B])
    hidden = await api.client.post(url, json={"use": "genealogy", "channel": "post"},
                                   headers=bearer(other))
    assert hidden.status == 404


async def insert_recording(db: asyncpg.Connection, settings: Settings, company: str,
                           number: str) -> Any:
    """A stored call with no known customer: its data key wrapped by the company's key."""
    import uuid

    from storage import keys
    from storage.crypto import load_master_key, new_key

    assert settings.master_key is not None
    master = keys.MasterKeys.single(load_master_key(settings.master_key.get_secret_value()))
    recording_id = uuid.uuid4()
    company_id = await db.fetchval("SELECT id FROM companies WHERE code = $1", company)
    owner = await keys.company_key(db, master, company_id)
    await db.execute(
        "INSERT INTO recordings (id, company_id, external_id, started_at, ended_at, direction,"
        " customer_number, purpose, format, codec, duration_s, sample_rate, channels,"
        " size_bytes, sha256, object_key, key_owner, key_owner_id, wrapped_key)"
        " VALUES ($1, $2, $4, now() - interval '1 minute', now(), 'inbound', $3,"
        " 'quality', 'wav', 'pcm_s16le', 60, 8000, 1, 960000, repeat('0', 64), $4,"
        " 'company', $2, $5)",
        recording_id, company_id, number, str(recording_id),
        keys.wrap_data_key(owner, recording_id, new_key()),
    )
    return recording_id


async def test_recordings_before_customer_are_linked_only_in_their_company(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    ours = await insert_recording(db, settings, A, "1001")
    theirs = await insert_recording(db, settings, B, "1001")
    ingest = await api.token("ingest", [A])
    created = await (await put(api, ingest, A, "1001", record())).json()
    linked = {r["id"]: r["customer_id"] for r in await db.fetch(
        "SELECT id, customer_id FROM recordings")}
    assert str(linked[ours]) == created["id"]
    assert linked[theirs] is None
    service = await api.token("customer_service", [A])
    detail = await (await api.client.get(f"/api/v1/customers/{created['id']}",
                                         headers=bearer(service))).json()
    assert detail["counts"] == {"recordings": 1, "web_events": 0}


async def test_an_identity_code_moved_to_another_customers_row_is_never_shown_as_theirs(
    api: Api, db: asyncpg.Connection
) -> None:
    """Someone who can write to the database swaps two people's sealed codes: each code is
    bound to its customer, so neither opens as the other's."""
    ingest = await api.token("ingest", [A])
    dpo = await api.token("dpo", [A])
    first = (await (await put(api, ingest, A, "1001", record())).json())["id"]
    second = (await (await put(api, ingest, A, "1002", record(personal_id=OTHER))).json())["id"]
    await db.execute(
        "UPDATE customers c SET personal_id_enc = o.personal_id_enc FROM customers o"
        " WHERE (c.id, o.id) IN (($1::uuid, $2::uuid), ($2::uuid, $1::uuid))", first, second)
    for customer in (first, second):
        response = await api.client.get(f"/api/v1/customers/{customer}", headers=bearer(dpo))
        text = await response.text()
        assert response.status == 500, text
        assert response.content_type == "application/problem+json"
        assert PERSON not in text and OTHER not in text


async def test_codes_sealed_before_they_were_bound_are_sealed_again_when_the_service_starts(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    ingest = await api.token("ingest", [A])
    dpo = await api.token("dpo", [A])
    customer = (await (await put(api, ingest, A, "1001", record())).json())["id"]
    # The form an earlier version stored: nonce, then the code sealed without its customer.
    assert settings.personal_id_key is not None
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"tallenne personal-id encryption").derive(
        load_master_key(settings.personal_id_key.get_secret_value()))
    nonce = os.urandom(12)
    unbound = nonce + AESGCM(key).encrypt(nonce, PERSON.encode(), None)
    await db.execute("UPDATE customers SET personal_id_enc = $2 WHERE id = $1::uuid",
                     customer, unbound)
    refused = await api.client.get(f"/api/v1/customers/{customer}", headers=bearer(dpo))
    assert refused.status == 500 and PERSON not in await refused.text()

    async with open_resources(settings):
        pass

    stored = await db.fetchval("SELECT personal_id_enc FROM customers WHERE id = $1::uuid",
                               customer)
    assert stored.startswith(b"PID2") and PERSON.encode() not in stored
    shown = await api.client.get(f"/api/v1/customers/{customer}", headers=bearer(dpo))
    assert shown.status == 200 and (await shown.json())["personal_id"] == PERSON
    async with open_resources(settings):
        pass
    assert await db.fetchval("SELECT personal_id_enc FROM customers WHERE id = $1::uuid",
                             customer) == stored


async def test_two_companies_sending_one_new_person_at_once_make_one_customer(
    api: Api, db: asyncpg.Connection
) -> None:
    """Kemi's and Tornio's billing systems send the same new person at the same moment: the
    second to create them finds the code taken and joins the person the first created."""
    kemi = await api.token("ingest", [A], name="kemi-billing")
    tornio = await api.token("ingest", [B], name="tornio-billing")
    lock = db.transaction()
    await lock.start()
    try:
        # The first holds where it stores the new person's key, the person not yet committed.
        await db.execute("LOCK TABLE customer_keys IN EXCLUSIVE MODE")
        first = asyncio.ensure_future(put(api, kemi, A, "1001", record()))
        await until_waiting(db, 1)
        # The second cannot see them yet and waits on the identity code's index.
        second = asyncio.ensure_future(put(api, tornio, B, "T-77", record()))
        await until_waiting(db, 2)
    finally:
        await lock.rollback()
    answers = [await first, await second]
    assert [a.status for a in answers] == [201, 201], [await a.text() for a in answers]
    ids = {(await a.json())["id"] for a in answers}
    assert len(ids) == 1
    assert await db.fetchval("SELECT count(*) FROM customers") == 1
    assert sorted(r["customer_number"] for r in await db.fetch(
        "SELECT customer_number FROM customer_memberships")) == ["1001", "T-77"]
