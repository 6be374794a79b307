"""Right of access: the JSON report across companies, the Finnish letter, the recordings zip."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
import zipfile
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import pytest
from pypdf import PdfReader

from service.rights.letter import controller
from storage.objects import ObjectStore
from tests.helpers import Api, bearer
from tests.service.data_subject_factory import (
    NAME,
    STREET,
    A,
    B,
    C,
    customer,
    personal_id,
    recording_of,
    report,
)


async def test_report_of_a_customer_of_three_companies_covers_all_three(
    api: Api, db: asyncpg.Connection
) -> None:
    customer_id = await customer(api, [A, B, C])
    recording_id, _ = await recording_of(api, B, "50011")
    quality = await api.token("quality", [B])
    scored = await api.client.post(f"/api/v1/recordings/{recording_id}/evaluations",
                                   json={"form": "perus", "scores": {
                                       "greeting": 4, "identification": 5, "solution": 3,
                                       "courtesy": 4}},
                                   headers=bearer(quality))
    assert scored.status == 201, await scored.text()
    dpo = await api.token("dpo", all_companies=True)

    response = await report(api, dpo, customer_id,
                            request_received_at="2026-01-31T10:00:00+02:00")
    assert response.status == 200, await response.text()
    body = await response.json()
    assert {m["company"] for m in body["memberships"]} == {A, B, C}
    assert body["customer"]["name"] == NAME
    assert body["customer"]["personal_id"] == personal_id()  # unmasked for the dpo
    assert [r["id"] for r in body["recordings"]] == [recording_id]
    assert [e["recording_id"] for e in body["evaluations"]] == [recording_id]
    assert body["web_events"]["total"] == 0
    assert {k["kind"] for k in body["data_kinds"]} >= {"customer", "recording", "web_event"}
    recording_kind = next(k for k in body["data_kinds"] if k["kind"] == "recording")
    assert "Puhelinjärjestelmä" in recording_kind["source"]
    assert body["due_at"].startswith("2026-02-28")  # one calendar month, clamped
    stored = await db.fetchrow("SELECT * FROM access_requests WHERE customer_id = $1",
                               customer_id)
    assert stored["verified_by"] == "signed_letter"
    assert stored["due_at"] == datetime(2026, 2, 28, 8, 0, tzinfo=UTC)
    audited = await db.fetchval(
        "SELECT count(*) FROM audit_events WHERE action = 'access_report.read'"
        " AND target_id = $1", customer_id)
    assert audited == 1


async def test_user_of_another_company_gets_404_and_other_roles_403(api: Api) -> None:
    customer_id = await customer(api, [A, B])
    outsider = await api.token("dpo", ["raahen-energia"])
    assert (await report(api, outsider, customer_id)).status == 404
    service = await api.token("customer_service", [A])
    assert (await report(api, service, customer_id)).status == 403
    insider = await api.token("dpo", [B])
    response = await report(api, insider, customer_id)
    assert response.status == 200
    assert [m["company"] for m in (await response.json())["memberships"]] == [B]


async def test_report_needs_how_the_identity_was_verified(api: Api) -> None:
    customer_id = await customer(api, [A])
    dpo = await api.token("dpo", [A])
    response = await api.client.get(f"/api/v1/customers/{customer_id}/access-report",
                                    headers=bearer(dpo))
    assert response.status == 422
    bad = await report(api, dpo, customer_id, verified_by="phone_call")
    assert bad.status == 422


async def test_letter_pdf_is_finnish_with_name_address_and_headings(api: Api) -> None:
    customer_id = await customer(api, [A, B])
    await recording_of(api, A, "50010")
    dpo = await api.token("dpo", all_companies=True)
    response = await report(api, dpo, customer_id, suffix=".pdf", verified_by="in_person")
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "application/pdf"
    pdf = await response.read()
    assert pdf.startswith(b"%PDF")
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    for expected in (NAME, STREET, "90100 Oulu", "Tarkastuspyyntö – rekisteriote",
                     "Oulun Sähkönmyynti Oy", "1703296-5", "Kasarmintie 6, 90130 Oulu",
                     "PL 116, 90101 Oulu", "Asiakastiedot", "Asiakkuudet", "Puhelutallenteet",
                     "Kiellot", "Tietojen luovutukset", "Tallenteiden kopiot",
                     "henkilökohtaisesti", "Kemin Energia Oy"):
        assert expected in text, expected
    assert personal_id() not in text  # the code is never printed on paper in full


async def test_zip_export_holds_the_original_audio_with_manifest_and_sums(
    api: Api, db: asyncpg.Connection
) -> None:
    customer_id = await customer(api, [A, B])
    first, first_path = await recording_of(api, A, "50010", kind="wav_pcm")
    second, second_path = await recording_of(api, B, "50011", kind="mp3")
    dpo = await api.token("dpo", all_companies=True)
    request_id = await _access_request(api, dpo, customer_id)
    response = await _export(api, dpo, customer_id, request_id=request_id,
                             reason="vastaus tarkastuspyyntöön")
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(await response.read()))
    assert archive.testzip() is None
    manifest = json.loads(archive.read("manifest.json"))
    by_id = {m["recording_id"]: m for m in manifest["recordings"]}
    assert set(by_id) == {first, second}
    sums = {name: digest for digest, name in (
        line.split("  ", 1) for line in archive.read("SHA256SUMS").decode().splitlines())}
    for recording_id, path in ((first, first_path), (second, second_path)):
        entry = by_id[recording_id]
        original = hashlib.sha256(path.read_bytes()).hexdigest()
        assert hashlib.sha256(archive.read(entry["file"])).hexdigest() == original
        assert sums[entry["file"]] == original == entry["sha256"]
    event = await db.fetchrow("SELECT * FROM audit_events WHERE action = 'access_report.export'")
    assert event["reason"] == "vastaus tarkastuspyyntöön"
    assert json.loads(event["detail"])["access_request"] == request_id
    assert set(json.loads(event["detail"])["recordings"]) == {first, second}
    assert {str(s) for s in event["subject_ids"]} == {customer_id, first, second}


async def _access_request(api: Api, dpo: str, customer_id: str) -> str:
    response = await report(api, dpo, customer_id)
    assert response.status == 200, await response.text()
    return str((await response.json())["request"]["id"])


async def _export(api: Api, token: str, customer_id: str, **params: str) -> Any:
    return await api.client.get(f"/api/v1/customers/{customer_id}/access-export.zip",
                                params=params, headers=bearer(token))


async def test_zip_export_needs_a_recorded_request_of_that_customer_and_a_reason(
    api: Api, db: asyncpg.Connection
) -> None:
    customer_id = await customer(api, [A])
    other_id = await customer(api, [A], number="5002", personal_id=personal_id("140652"))
    await recording_of(api, A, "50010")
    dpo = await api.token("dpo", all_companies=True)
    theirs = await _access_request(api, dpo, customer_id)
    others = await _access_request(api, dpo, other_id)

    bare = await _export(api, dpo, customer_id)
    assert bare.status == 422
    problem = await bare.json()
    assert {tuple(e["loc"]) for e in problem["errors"]} == {
        ("query", "request_id"), ("query", "reason")}
    no_reason = await _export(api, dpo, customer_id, request_id=theirs)
    assert no_reason.status == 422
    coded = await _export(api, dpo, customer_id, request_id=theirs,
                          reason="pyyntö 131052-308T")
    assert coded.status == 422 and "131052-308T" not in await coded.text()
    wrong = await _export(api, dpo, customer_id, request_id=others, reason="pyyntö")
    unknown = await _export(api, dpo, customer_id, request_id=str(uuid.uuid4()),
                            reason="pyyntö")
    assert wrong.status == unknown.status == 404
    assert (await wrong.json())["detail"] == (await unknown.json())["detail"]
    assert await db.fetchval("SELECT count(*) FROM audit_events"
                             " WHERE action = 'access_report.export'") == 0


async def test_zip_export_integrity_failure_is_audited_and_marks_the_recording(
    api: Api, db: asyncpg.Connection, objects: ObjectStore
) -> None:
    customer_id = await customer(api, [A])
    recording_id, _ = await recording_of(api, A, "50010")
    key = await db.fetchval("SELECT object_key FROM recordings WHERE id = $1",
                            uuid.UUID(recording_id))
    data = bytearray(await objects.get_bytes(key))
    data[len(data) // 2] ^= 0x01
    await objects.put_bytes(key, bytes(data))
    dpo = await api.token("dpo", all_companies=True)
    request_id = await _access_request(api, dpo, customer_id)
    response = await _export(api, dpo, customer_id, request_id=request_id, reason="pyyntö")
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()  # never a complete-looking zip
    assert await db.fetchval("SELECT state FROM recordings WHERE id = $1",
                             uuid.UUID(recording_id)) == "corrupt"
    alarms = await db.fetch("SELECT * FROM audit_events"
                            " WHERE action = 'recording.integrity_alarm' AND target_id = $1",
                            recording_id)
    assert len(alarms) == 1 and alarms[0]["outcome"] == "failure"


async def test_letter_sender_comes_from_controller_environment(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TALLENNE_CONTROLLER_POSTAL_ADDRESS", "PL 999, 94101 Kemi")
    monkeypatch.setenv("TALLENNE_CONTROLLER_CITY", "Kemi")
    controller.cache_clear()
    try:
        customer_id = await customer(api, [A])
        dpo = await api.token("dpo", [A])
        response = await report(api, dpo, customer_id, suffix=".pdf")
        text = PdfReader(io.BytesIO(await response.read())).pages[0].extract_text()
    finally:
        controller.cache_clear()
    assert "PL 999, 94101 Kemi" in text and "Oulun Sähkönmyynti Oy" in text
    assert "PL 116, 90101 Oulu" not in text


async def test_customer_service_takes_an_access_request_that_the_dpo_answers_by_its_id(
        api: Api, db: asyncpg.Connection) -> None:
    customer_id = await customer(api, [A])
    others = await customer(api, [B], number="B-1", personal_id=personal_id(individual=411))
    service = await api.token("customer_service", [A], name="asta")
    received = "2026-03-31T10:00:00+03:00"
    taken = await api.client.post(f"/api/v1/customers/{customer_id}/access-requests",
                                  headers=bearer(service),
                                  json={"verified_by": "signed_letter", "received_at": received})
    assert taken.status == 201, await taken.text()
    request = await taken.json()
    assert (request["verified_by"], request["requested_by"]) == ("signed_letter", "asta")
    # One calendar month from receipt (the last day of a shorter month).
    assert datetime.fromisoformat(request["due_at"]) == datetime(2026, 4, 30, 7, 0, tzinfo=UTC)

    dpo = await api.token("dpo", [A])
    answered = await api.client.get(f"/api/v1/customers/{customer_id}/access-report",
                                    headers=bearer(dpo), params={"request_id": request["id"]})
    assert answered.status == 200, await answered.text()
    assert (await answered.json())["request"]["id"] == request["id"]

    # Another company's customer is as not found; a role without the right is refused.
    elsewhere = await api.client.post(f"/api/v1/customers/{others}/access-requests",
                                      headers=bearer(service), json={"verified_by": "in_person"})
    assert elsewhere.status == 404
    quality = await api.token("quality", [A])
    refused = await api.client.post(f"/api/v1/customers/{customer_id}/access-requests",
                                    headers=bearer(quality), json={"verified_by": "in_person"})
    assert refused.status == 403
    assert await db.fetchval("SELECT count(*) FROM access_requests") == 1
    event = await db.fetchrow("SELECT actor, subject_ids, detail FROM audit_events"
                              " WHERE action = 'access_request.create'")
    assert event["actor"] == "asta" and uuid.UUID(customer_id) in event["subject_ids"]
    assert json.loads(event["detail"])["access_request"] == request["id"]


async def test_notes_on_the_customers_calls_are_in_the_report_without_their_authors(
        api: Api) -> None:
    customer_id = await customer(api, [A])
    recording_id, _ = await recording_of(api, A, "50010", seconds=2.0)
    quality = await api.token("quality", [A], name="laura")
    for text, visibility in (("asiakas pyysi takaisinsoittoa", "team"),
                             ("oma muistiinpano", "private")):
        made = await api.client.post(f"/api/v1/recordings/{recording_id}/annotations",
                                     headers=bearer(quality),
                                     json={"at_s": 1.5, "text": text, "visibility": visibility})
        assert made.status == 201, await made.text()
    dpo = await api.token("dpo", [A])
    response = await report(api, dpo, customer_id)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert sorted(n["text"] for n in body["annotations"]) == [
        "asiakas pyysi takaisinsoittoa", "oma muistiinpano"]
    assert {n["recording_id"] for n in body["annotations"]} == {recording_id}
    assert "laura" not in json.dumps(body["annotations"])
    pdf = await (await report(api, dpo, customer_id, ".pdf")).read()
    letter = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert "takaisinsoittoa" in letter and "oma muistiinpano" in letter
