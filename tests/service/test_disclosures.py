"""Disclosures: prohibitions exclude silently per purpose, the log says exactly who was sent,
recipients outside the EU/EEA are refused, and each disclosure shows in the access report."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg

from tests.conftest import Stack
from tests.helpers import Api, bearer
from tests.service.data_subject_factory import A, customer, personal_id, report


def disclosure(purpose: str = "marketing_register", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "recipient": "Pohjoisen Markkinointi Oy",
        "recipient_country": "FI",
        "purpose": purpose,
        "legal_basis": "register statement section 6; customer relationship",
        "company": A,
        "fields": ["name", "address", "customer_number"],
    }
    body.update(changes)
    return body


async def disclose(api: Api, token: str, body: dict[str, Any]) -> tuple[int, list[Any]]:
    response = await api.client.post("/api/v1/disclosures", json=body, headers=bearer(token))
    text = await response.text()
    if response.status != 200:
        return response.status, [json.loads(text)]
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    return 200, [json.loads(line) for line in text.splitlines() if line]


async def two_customers(api: Api) -> tuple[str, str]:
    first = await customer(api, [A], number="7001", name="Aino Äkäslompolo")
    second = await customer(api, [A], number="7002", name="Örjan Öystilä",
                            personal_id=personal_id("020304", "A", 123))
    return first, second


async def test_direct_marketing_prohibition_excludes_from_marketing_not_debt_collection(
    api: Api,
) -> None:
    first, second = await two_customers(api)
    service = await api.token("customer_service", [A])
    banned = await api.client.post(f"/api/v1/customers/{first}/prohibitions",
                                   json={"use": "direct_marketing", "channel": "phone"},
                                   headers=bearer(service))
    assert banned.status == 201
    dpo = await api.token("dpo", [A])

    for purpose in ("marketing_register", "distance_selling"):
        status, lines = await disclose(api, dpo, disclosure(purpose))
        assert status == 200
        assert [line["name"] for line in lines] == ["Örjan Öystilä"], purpose
    status, lines = await disclose(api, dpo, disclosure("market_research"))
    assert {line["name"] for line in lines} == {"Aino Äkäslompolo", "Örjan Öystilä"}

    status, lines = await disclose(api, dpo, disclosure(
        "debt_collection", recipient="Perintä Oy", customer_ids=[first],
        fields=["name", "address", "personal_id", "customer_number"]))
    assert status == 200
    assert lines == [{"name": "Aino Äkäslompolo", "address": lines[0]["address"],
                      "personal_id": personal_id(), "customer_number": "70010"}]

    withdrawn = await api.client.delete(f"/api/v1/customers/{first}/prohibitions/direct_marketing",
                                        headers=bearer(service))
    assert withdrawn.status == 200
    status, lines = await disclose(api, dpo, disclosure())
    assert {line["name"] for line in lines} == {"Aino Äkäslompolo", "Örjan Öystilä"}


async def test_disclosure_log_lists_exactly_who_was_sent(api: Api, db: asyncpg.Connection) -> None:
    first, second = await two_customers(api)
    service = await api.token("customer_service", [A])
    await api.client.post(f"/api/v1/customers/{second}/prohibitions",
                          json={"use": "opinion_polls", "channel": "email"},
                          headers=bearer(service))
    dpo = await api.token("dpo", [A])
    status, lines = await disclose(api, dpo, disclosure("opinion_polls", fields=["name"]))
    assert status == 200 and lines == [{"name": "Aino Äkäslompolo"}]

    log = await api.client.get("/api/v1/disclosures", headers=bearer(dpo))
    assert log.status == 200
    items = (await log.json())["items"]
    assert len(items) == 1
    entry = items[0]
    assert entry["customer_ids"] == [first] and entry["customer_count"] == 1
    assert entry["purpose"] == "opinion_polls" and entry["recipient_country"] == "FI"
    assert entry["fields"] == ["name"] and entry["company"] == A
    assert entry["disclosed_by"] == "test-dpo"

    shown = await (await report(api, dpo, first)).json()
    assert [d["id"] for d in shown["disclosures"]] == [entry["id"]]
    hidden = await (await report(api, dpo, second)).json()
    assert hidden["disclosures"] == []


async def test_recipient_outside_eu_eea_is_refused_and_audited(
    api: Api, db: asyncpg.Connection
) -> None:
    await two_customers(api)
    dpo = await api.token("dpo", [A])
    status, body = await disclose(api, dpo, disclosure(recipient="Data Brokers Inc.",
                                                      recipient_country="US"))
    assert status == 422
    assert body[0]["errors"][0]["loc"] == ["body", "recipient_country"]
    assert "Aino" not in json.dumps(body)
    assert await db.fetchval("SELECT count(*) FROM disclosures") == 0
    event = await db.fetchrow("SELECT * FROM audit_events WHERE action = 'disclosure.create'")
    assert event["outcome"] == "refused"
    assert json.loads(event["detail"])["recipient_country"] == "US"
    status, _ = await disclose(api, dpo, disclosure(recipient_country="NO"))
    assert status == 200  # Norway is in the EEA


async def test_purpose_rules_and_scope(api: Api) -> None:
    first, _ = await two_customers(api)
    dpo = await api.token("dpo", [A])
    status, _ = await disclose(api, dpo, disclosure(fields=["name", "personal_id"]))
    assert status == 422
    status, _ = await disclose(api, dpo, disclosure("debt_collection"))
    assert status == 422  # a single customer only
    # The recipient and the legal basis go to the disclosure log and the audit trail for
    # good: an identity code typed into them is refused.
    for field in ("recipient", "legal_basis"):
        status, _ = await disclose(api, dpo, disclosure(**{field: "asiakas 131052-308T"}))
        assert status == 422, field
    outsider = await api.token("dpo", ["kemin-energia"])
    status, _ = await disclose(api, outsider, disclosure())
    assert status == 404
    service = await api.token("customer_service", [A])
    status, _ = await disclose(api, service, disclosure())
    assert status == 403


async def test_other_direct_marketing_prohibition_excludes_from_the_marketing_register_only(
    api: Api,
) -> None:
    first, _ = await two_customers(api)
    service = await api.token("customer_service", [A])
    banned = await api.client.post(f"/api/v1/customers/{first}/prohibitions",
                                   json={"use": "other_direct_marketing", "channel": "email"},
                                   headers=bearer(service))
    assert banned.status == 201
    dpo = await api.token("dpo", [A])
    status, lines = await disclose(api, dpo, disclosure("marketing_register"))
    assert status == 200 and [line["name"] for line in lines] == ["Örjan Öystilä"]
    for purpose in ("distance_selling", "market_research", "opinion_polls"):
        status, lines = await disclose(api, dpo, disclosure(purpose))
        assert {line["name"] for line in lines} == {"Aino Äkäslompolo", "Örjan Öystilä"}, \
            purpose


async def test_prohibition_check_and_streamed_rows_come_from_one_snapshot(
    api: Api, db: asyncpg.Connection, stack: Stack, database: str,
) -> None:
    first, second = await two_customers(api)
    dpo = await api.token("dpo", [A])
    locker = await asyncpg.connect(stack.superuser_url(database))
    try:
        # Hold the disclosure log: the request has chosen its customers and waits to log.
        held = locker.transaction()
        await held.start()
        await locker.execute("LOCK TABLE disclosures IN EXCLUSIVE MODE")
        request = asyncio.create_task(disclose(api, dpo, disclosure("marketing_register")))
        for _ in range(300):
            waiting = await db.fetchval(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
                " WHERE c.relname = 'disclosures' AND NOT l.granted")
            if waiting:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the disclosure never reached its log")
        # Meanwhile a prohibition and a rename commit.
        await db.execute("INSERT INTO customer_prohibitions (customer_id, use, channel,"
                         " received_at, recorded_by) VALUES ($1::uuid, 'direct_marketing',"
                         " 'phone', now(), 'test')", first)
        await db.execute("UPDATE customers SET name = 'Uusi Nimi' WHERE id = $1::uuid", second)
        await held.commit()
        status, lines = await request
    finally:
        await locker.close()
    assert status == 200
    # What was checked is what was sent: both as they were when the disclosure began.
    assert sorted(line["name"] for line in lines) == ["Aino Äkäslompolo", "Örjan Öystilä"]
