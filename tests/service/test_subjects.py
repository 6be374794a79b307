"""The DPO's subject search: a person found by phone number or identity code, with every
call (by linked customer and by number as a party), web event, disclosure and audited read,
across the caller's companies only."""

from __future__ import annotations

import json

import asyncpg

from tests import audiogen
from tests.helpers import Api, bearer
from tests.service.data_subject_factory import A, B, C, customer, personal_id, recording_of
from tests.service.recording_factory import metadata, upload


async def call_from(api: Api, company: str, caller: str) -> str:
    token = await api.token("ingest", [company], name=f"pbx-{company}")
    audio = audiogen.make_audio("wav_pcm", 1.0, tone_hz=610.0)
    response = await upload(api.client, token, metadata(company=company, caller=caller), audio)
    assert response.status == 201, await response.text()
    return str((await response.json())["id"])


async def test_phone_search_finds_a_call_only_by_the_number_in_any_written_form(
        api: Api, db: asyncpg.Connection) -> None:
    national = await call_from(api, A, "040 765 4321")
    international = await call_from(api, B, "00358-40-7654321")
    elsewhere = await call_from(api, C, "+358407654321")
    stranger = await call_from(api, A, "+358409999999")
    dpo = await api.token("dpo", [A, B], name="tietosuojavastaava")

    response = await api.client.get("/api/v1/subjects", params={"phone": "+358 40 765 4321"},
                                    headers=bearer(dpo))
    assert response.status == 200, await response.text()
    found = await response.json()
    assert found["phone"] == "+358407654321"
    assert found["customers"] == []
    assert {r["id"]: r["matched_by"] for r in found["recordings"]} == {
        national: ["phone"], international: ["phone"]}
    assert elsewhere not in json.dumps(found) and stranger not in json.dumps(found)
    assert await db.fetchval("SELECT count(*) FROM audit_events WHERE action = 'subject.search'"
                             ) == 1

    response = await api.client.get("/api/v1/subjects", params={"phone": "not a number"},
                                    headers=bearer(dpo))
    assert response.status == 422
    quality = await api.token("quality", [A], name="laatu")
    response = await api.client.get("/api/v1/subjects", params={"phone": "0407654321"},
                                    headers=bearer(quality))
    assert response.status == 403


async def test_identity_code_search_gathers_the_persons_records_without_the_code_in_a_url(
        api: Api, db: asyncpg.Connection) -> None:
    customer_id = await customer(api, [A], number="7001")
    linked, _ = await recording_of(api, A, "70010", seconds=1.0)
    by_phone = await call_from(api, A, "0401112223")  # the customer's own phone number
    dpo = await api.token("dpo", [A], name="tietosuojavastaava")
    await api.client.get(f"/api/v1/customers/{customer_id}", headers=bearer(dpo))
    # A list that showed the call among others is a read of it too.
    quality = await api.token("quality", [A], name="laatu")
    listed = await api.client.get("/api/v1/recordings", params={"customer_id": customer_id},
                                  headers=bearer(quality))
    assert linked in await listed.text()

    response = await api.client.post("/api/v1/subjects/search", headers=bearer(dpo),
                                     json={"personal_id": personal_id()})
    assert response.status == 200, await response.text()
    found = await response.json()
    assert [c["id"] for c in found["customers"]] == [customer_id]
    assert found["customers"][0]["personal_id"] == personal_id()
    assert {r["id"]: r["matched_by"] for r in found["recordings"]} == {linked: ["customer"]}
    assert by_phone not in json.dumps(found)
    assert any(r["target_id"] == customer_id for r in found["reads"])
    assert any(r["action"] == "recording.search" and r["actor"] == "laatu"
               for r in found["reads"]), found["reads"]
    assert found["links"]["access_reports"] == [f"/api/v1/customers/{customer_id}/access-report"]
    logged = await db.fetch("SELECT detail::text AS detail, subject_ids FROM audit_events"
                            " WHERE action = 'subject.search'")
    assert personal_id() not in logged[0]["detail"]
    # The search itself read the person's data: it shows up under their ids.
    assert {str(i) for i in logged[0]["subject_ids"]} == {customer_id, linked}


async def test_subject_page_posts_the_identity_code_and_starts_an_export_of_the_calls(
        api: Api) -> None:
    customer_id = await customer(api, [A], number="8001")
    linked, _ = await recording_of(api, A, "80010", seconds=1.0)
    await api.user("dpo-person", "dpo", [A])
    csrf = await api.login("dpo-person")

    page = await api.client.get("/subjects")
    assert page.status == 200
    assert 'method="post" action="/subjects"' in await page.text()
    response = await api.client.post("/subjects", data={
        "csrf_token": csrf, "personal_id": personal_id(), "phone": ""})
    assert response.status == 200
    assert personal_id() not in str(response.url)
    text = await response.text()
    assert f'data-customer="{customer_id}"' in text
    assert f'data-recording="{linked}"' in text

    response = await api.client.post("/subjects", data={
        "csrf_token": csrf, "personal_id": "131052-308X"})
    assert response.status == 422
    assert "131052-308X" not in await response.text()

    response = await api.client.post("/subjects/export", data={
        "csrf_token": csrf, "customer_id": customer_id, "reason": "tarkastuspyyntö"})
    assert response.status == 200, await response.text()
    text = await response.text()
    export_id = text.split("/api/v1/exports/", 1)[1].split('"', 1)[0]
    progress = await api.client.get(f"/api/v1/exports/{export_id}")
    assert progress.status == 200
    assert (await progress.json())["format"] == "zip"
