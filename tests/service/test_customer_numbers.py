"""Customer numbers that change hands, and memberships that end: an earlier holder's records
never follow the number to the next holder; expired former customers are purged."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from tests.helpers import Api, bearer
from tests.service.data_subject_factory import A, personal_id, record, recording_of, report
from tests.service.retention_factory import app_of, purge_job_only

HOLDER = personal_id("131052", "-", 308)
NEXT = personal_id("010203", "A", 456)


async def put(api: Api, number: str, code: str, **changes: Any) -> Any:
    token = await api.token("ingest", [A], name="billing")
    response = await api.client.put(f"/api/v1/customers/{A}/{number}",
                                    json=record(personal_id=code, **changes),
                                    headers=bearer(token))
    assert response.status in (200, 201), await response.text()
    return await response.json()


async def web_event(api: Api, number: str, event: str) -> None:
    token = await api.token("ingest", [A], name="web")
    line = json.dumps({"ts": datetime.now(UTC).isoformat(), "site": "oulun-sahkonmyynti.fi",
                       "event": event, "customer_number": number})
    posted = await api.client.post("/api/v1/web-events", data=line,
                                   headers={**bearer(token),
                                            "Content-Type": "application/x-ndjson"})
    assert (await posted.json())["accepted"] == 1


async def access_report(api: Api, customer_id: str) -> Any:
    dpo = await api.token("dpo", all_companies=True, name="dpo")
    response = await report(api, dpo, customer_id)
    assert response.status == 200, await response.text()
    return await response.json()


async def exported_recordings(api: Api, customer_id: str) -> set[str]:
    dpo = await api.token("dpo", all_companies=True, name="dpo-export")
    # Bulk audio leaves only against a recorded access request, with a reason.
    request_id = (await access_report(api, customer_id))["request"]["id"]
    response = await api.client.get(f"/api/v1/customers/{customer_id}/access-export.zip",
                                    params={"request_id": request_id,
                                            "reason": "access request of the data subject"},
                                    headers=bearer(dpo))
    assert response.status == 200, await response.text()
    archive = zipfile.ZipFile(io.BytesIO(await response.read()))
    manifest = json.loads(archive.read("manifest.json"))
    return {m["recording_id"] for m in manifest["recordings"]}


async def test_a_number_passed_to_a_new_holder_never_brings_the_old_holders_calls(
        api: Api, db: asyncpg.Connection) -> None:
    holder = (await put(api, "7001", HOLDER))["id"]
    old_call, _ = await recording_of(api, A, "7001")
    await web_event(api, "7001", "login-by-holder")
    moved = await put(api, "7001", NEXT, name="Pekka Uusi")
    new_holder = moved["id"]
    assert new_holder != holder
    assert moved["companies"] == [{"company": A, "customer_number": "7001", "ended_at": None}]
    new_call, _ = await recording_of(api, A, "7001")
    await web_event(api, "7001", "login-by-next")

    seen_by_next = await access_report(api, new_holder)
    assert [r["id"] for r in seen_by_next["recordings"]] == [new_call]
    assert [e["event"] for e in seen_by_next["web_events"]["items"]] == ["login-by-next"]
    assert await exported_recordings(api, new_holder) == {new_call}

    seen_by_holder = await access_report(api, holder)
    assert [r["id"] for r in seen_by_holder["recordings"]] == [old_call]
    assert [e["event"] for e in seen_by_holder["web_events"]["items"]] == ["login-by-holder"]
    assert [(m["customer_number"], m["active"]) for m in seen_by_holder["memberships"]] == [
        ("7001", False)]
    assert await exported_recordings(api, holder) == {old_call}
    owners = dict(await db.fetch("SELECT id::text, key_owner_id::text FROM recordings"))
    assert owners == {old_call: holder, new_call: new_holder}

    # Erasing the earlier holder takes their call and leaves the new holder's untouched.
    dpo = await api.token("dpo", all_companies=True, name="eraser")
    erased = await api.client.post(f"/api/v1/customers/{holder}/erasure",
                                   json={"reason": "request"}, headers=bearer(dpo))
    assert erased.status == 200, await erased.text()
    assert await exported_recordings(api, new_holder) == {new_call}
    assert [e["event"] for e in (await access_report(api, new_holder))["web_events"]["items"]] \
        == ["login-by-next"]


async def test_a_number_moving_to_a_known_person_ends_the_old_membership(
        api: Api, db: asyncpg.Connection) -> None:
    holder = (await put(api, "7101", HOLDER))["id"]
    other = (await put(api, "7102", NEXT))["id"]
    old_call, _ = await recording_of(api, A, "7101")
    token = await api.token("ingest", [A], name="billing-2")
    clash = await api.client.put(f"/api/v1/customers/{A}/7101",
                                 json=record(personal_id=NEXT), headers=bearer(token))
    assert clash.status == 409  # NEXT still holds 7102 at this company
    await put(api, "7102", NEXT,
              ended_at=(datetime.now(UTC) - timedelta(minutes=1)).isoformat())
    moved = await put(api, "7101", NEXT)
    assert moved["id"] == other
    assert {m["customer_number"]: m["ended_at"] is None for m in moved["companies"]} == {
        "7101": True}
    assert [r["id"] for r in (await access_report(api, other))["recordings"]] == []
    assert [r["id"] for r in (await access_report(api, holder))["recordings"]] == [old_call]
    changes = {r["change"] for r in await db.fetch(
        "SELECT change FROM customer_history WHERE customer_id = $1::uuid", holder)}
    assert "number_passed_on" in changes


async def test_rectifying_a_holders_own_data_keeps_the_old_values_in_history(
        api: Api, db: asyncpg.Connection) -> None:
    holder = (await put(api, "7201", HOLDER))["id"]
    call, _ = await recording_of(api, A, "7201")
    updated = await put(api, "7201", HOLDER, email="uusi@example.fi")
    assert updated["id"] == holder and updated["email"] == "uusi@example.fi"
    history = await access_report(api, holder)
    assert any("email" in h["changed_fields"] for h in history["history"])
    assert [r["id"] for r in history["recordings"]] == [call]


async def test_a_damaged_history_entry_leaves_the_rest_of_the_access_report_standing(
        api: Api, db: asyncpg.Connection) -> None:
    holder = (await put(api, "7201", HOLDER))["id"]
    await put(api, "7201", HOLDER, email="uusi@example.fi")
    await put(api, "7201", HOLDER, email="uudempi@example.fi")
    damaged = await db.fetchval(
        "UPDATE customer_history SET old_values_enc = set_byte(old_values_enc, 20,"
        " get_byte(old_values_enc, 20) # 1) WHERE id = (SELECT min(id) FROM customer_history"
        " WHERE customer_id = $1::uuid AND old_values_enc IS NOT NULL) RETURNING id", holder)
    assert damaged is not None
    history = (await access_report(api, holder))["history"]
    kept = [h for h in history if h["old_values"] is not None]
    assert kept and len(kept) < len([h for h in history if "email" in h["changed_fields"]])
    assert any(h["old_values"].get("email") == "uusi@example.fi" for h in kept)


async def test_ending_a_membership_starts_the_customer_retention_and_the_purge_takes_them(
        api: Api, db: asyncpg.Connection) -> None:
    customer = (await put(api, "7301", HOLDER))["id"]
    await web_event(api, "7301", "login")
    keep = await put(api, "7302", NEXT)
    app = app_of(api)
    await purge_job_only(app, datetime.now(UTC) + timedelta(days=4000))
    assert await db.fetchval("SELECT erased_at FROM customers WHERE id = $1::uuid",
                             customer) is None, "a current membership keeps the customer"

    ended = datetime.now(UTC) - timedelta(days=2000)
    response = await put(api, "7301", HOLDER, ended_at=ended.isoformat())
    assert response["companies"][0]["ended_at"] is not None
    retain = await db.fetchval("SELECT tallenne_customer_retain_until($1::uuid)", customer)
    assert retain < datetime.now(UTC), "3 years from an end 5 years ago"
    await purge_job_only(app, datetime.now(UTC))
    row = await db.fetchrow("SELECT erased_at, name FROM customers WHERE id = $1::uuid",
                            customer)
    assert row["erased_at"] is not None and row["name"] is None
    assert await db.fetchval("SELECT count(*) FROM customer_keys WHERE customer_id = $1::uuid",
                             customer) == 0
    assert await db.fetchval("SELECT count(*) FROM web_events WHERE customer_number = '7301'"
                             " OR customer_id = $1::uuid", customer) == 0
    assert await db.fetchval("SELECT count(*) FROM purge_log WHERE item_kind = 'customer'"
                             " AND item_id = $1", customer) == 1
    assert await db.fetchval("SELECT count(*) FROM erasure_ledger WHERE customer_id ="
                             " $1::uuid", customer) == 1
    assert await db.fetchval("SELECT erased_at FROM customers WHERE id = $1::uuid",
                             keep["id"]) is None


async def test_a_legal_hold_keeps_an_expired_former_customer(
        api: Api, db: asyncpg.Connection) -> None:
    customer = (await put(api, "7401", HOLDER,
                          ended_at=(datetime.now(UTC) - timedelta(days=2000)).isoformat()))["id"]
    admin = await api.token("admin", all_companies=True, name="legal")
    held = await api.client.post("/api/v1/legal-holds", headers=bearer(admin), json={
        "case": "K-1", "reason": "dispute", "recording_ids": [], "customer_ids": [customer]})
    assert held.status in (200, 201), await held.text()
    await purge_job_only(app_of(api), datetime.now(UTC))
    assert await db.fetchval("SELECT erased_at FROM customers WHERE id = $1::uuid",
                             customer) is None
