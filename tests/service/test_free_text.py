"""No identity code in URLs or free text: reasons, comments and the customer search form."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from pydantic import BaseModel, ValidationError

from schemas.free_text import FreeText, contains_personal_id
from tests import audiogen
from tests.helpers import Api, bearer
from tests.service.data_subject_factory import customer, personal_id
from tests.service.recording_factory import COMPANY, metadata, upload

CODE = personal_id()  # 131052-308T, a valid code
MISTYPED = CODE[:-1] + ("A" if CODE[-1] != "A" else "B")


@pytest.mark.parametrize("text", [
    CODE, f"asiakas {CODE} soitti", CODE.lower(), MISTYPED, "010101A123B", "311299Y9999",
    "called about 131052+308T.", "(010203-0101)",
])
def test_code_shaped_text_is_found(text: str) -> None:
    assert contains_personal_id(text)


@pytest.mark.parametrize("text", [
    "laskun tarkistus", "puhelu 040-1234567", "2024-01-01 12:00", "ref 991399-123A",
    "order 123456-7890123", "x131052-308Tx", "invoice 310299-123A",
])
def test_ordinary_text_passes(text: str) -> None:
    assert not contains_personal_id(text)


def test_the_type_refuses_without_echoing_the_code() -> None:
    class Note(BaseModel):
        text: FreeText

    with pytest.raises(ValidationError) as caught:
        Note(text=f"asiakas {CODE}")
    errors = caught.value.errors(include_input=False)
    assert errors[0]["loc"] == ("text",)
    assert errors[0]["msg"] == "Value error, must not contain a personal identity code"
    assert CODE not in str(errors)


def _refused(body: dict[str, Any], loc: list[str]) -> None:
    assert body["status"] == 422
    assert {"loc": loc, "msg": "Value error, must not contain a personal identity code"} \
        in body["errors"], body
    assert CODE not in str(body) and CODE[:6] not in str(body)


async def stored_call(api: Api) -> str:
    token = await api.token("ingest", [COMPANY], name="pbx")
    response = await upload(api.client, token, metadata(), audiogen.make_audio("wav_pcm", 1.0))
    assert response.status == 201, await response.text()
    return str((await response.json())["id"])


async def test_replay_reason_with_an_identity_code_is_refused(
        api: Api, db: asyncpg.Connection) -> None:
    recording_id = await stored_call(api)
    quality = await api.token("quality", [COMPANY])
    response = await api.client.get(f"/api/v1/recordings/{recording_id}/audio",
                                    params={"reason": f"asiakas {CODE} pyysi"},
                                    headers=bearer(quality))
    assert response.status == 422
    _refused(await response.json(), ["query", "reason"])
    assert await db.fetchval("SELECT count(*) FROM audit_events WHERE action LIKE '%replay%'"
                             " OR reason LIKE '%131052%'") == 0
    fine = await api.client.get(f"/api/v1/recordings/{recording_id}/audio",
                                params={"reason": "laadunvarmistus"}, headers=bearer(quality))
    assert fine.status == 200


async def test_legal_hold_reason_with_an_identity_code_is_refused(
        api: Api, db: asyncpg.Connection) -> None:
    admin = await api.token("admin", all_companies=True, name="legal")
    response = await api.client.post("/api/v1/legal-holds", headers=bearer(admin), json={
        "case": "KO-2026-1", "reason": f"court order concerning {CODE}"})
    assert response.status == 422
    _refused(await response.json(), ["body", "reason"])
    assert await db.fetchval("SELECT count(*) FROM legal_holds") == 0


async def test_evaluation_comment_with_an_identity_code_is_refused(
        api: Api, db: asyncpg.Connection) -> None:
    recording_id = await stored_call(api)
    quality = await api.token("quality", [COMPANY])
    response = await api.client.post(
        f"/api/v1/recordings/{recording_id}/evaluations", headers=bearer(quality),
        json={"form": "perus", "comment": f"asiakas kertoi tunnuksensa {MISTYPED}",
              "scores": {"greeting": 3, "identification": 4, "solution": 5, "courtesy": 2}})
    assert response.status == 422
    _refused(await response.json(), ["body", "comment"])
    assert await db.fetchval("SELECT count(*) FROM recording_evaluations") == 0


async def test_erasure_reasons_with_an_identity_code_are_refused(api: Api) -> None:
    recording_id = await stored_call(api)
    dpo = await api.token("dpo", [COMPANY])
    response = await api.client.delete(f"/api/v1/recordings/{recording_id}",
                                       headers=bearer(dpo), json={"reason": f"pyyntö {CODE}"})
    assert response.status == 422
    _refused(await response.json(), ["body", "reason"])
    customer_id = await customer(api, [COMPANY])
    response = await api.client.post(f"/api/v1/customers/{customer_id}/erasure",
                                     headers=bearer(dpo), json={"reason": f"pyyntö {CODE}"})
    assert response.status == 422
    _refused(await response.json(), ["body", "reason"])


async def test_customer_search_form_posts_and_never_falls_back_to_get(
        api: Api, db: asyncpg.Connection) -> None:
    await api.user("aino", "customer_service", [COMPANY])
    await api.login("aino")
    page = await (await api.client.get("/customers")).text()
    form = page[page.index('<form id="lookup-form"'):]
    form = form[:form.index(">")]
    assert 'method="post"' in form and 'action="/api/v1/customers/lookup"' in form
    assert 'method="get"' not in page.lower()
    # Without the script the browser posts the form as it is: refused, nothing looked up.
    response = await api.client.post("/api/v1/customers/lookup",
                                     data={"personal_id": CODE, "company": COMPANY})
    assert response.status == 415
    assert CODE not in await response.text()
    assert await db.fetchval("SELECT count(*) FROM audit_events WHERE action LIKE 'customer%'") \
        == 0
