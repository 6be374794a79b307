"""Factories of data-subject-rights tests: a person who is a customer of several companies,
a recording of their call, and access-report requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from schemas.personal_id import CHECK_CHARACTERS
from tests import audiogen
from tests.helpers import Api, bearer
from tests.service.recording_factory import metadata, upload

A = "oulun-sahkonmyynti"
B = "kemin-energia"
C = "tornion-energia"
NAME = "Äijö Öhman-Määttä"
STREET = "Kesäkatu 3 B 12"


def personal_id(ddmmyy: str = "131052", sign: str = "-", individual: int = 308) -> str:
    number = int(f"{ddmmyy}{individual:03d}")
    return f"{ddmmyy}{sign}{individual:03d}{CHECK_CHARACTERS[number % 31]}"


def record(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": NAME,
        "personal_id": personal_id(),
        "address": {"street": STREET, "postal_code": "90100", "city": "Oulu", "country": "FI"},
        "email": "aijo@example.fi",
        "phone": "+358401112223",
    }
    body.update(changes)
    return body


async def customer(api: Api, companies: list[str], *, number: str = "5001",
                   **changes: Any) -> str:
    """A person who is a customer of every company in `companies`; returns their id."""
    token = await api.token("ingest", companies, name="billing")
    found = ""
    for i, company in enumerate(companies):
        response = await api.client.put(f"/api/v1/customers/{company}/{number}{i}",
                                        json=record(**changes), headers=bearer(token))
        assert response.status in (200, 201), await response.text()
        found = (await response.json())["id"]
    return found


async def recording_of(api: Api, company: str, customer_number: str,
                       kind: str = "wav_pcm", seconds: float = 6.0) -> tuple[str, Path]:
    """A call of the customer stored through the API; (recording id, original file)."""
    token = await api.token("ingest", [company], name="pbx")
    path = audiogen.make_audio(kind, seconds)
    response = await upload(api.client, token,
                            metadata(company=company, customer_number=customer_number), path)
    assert response.status == 201, await response.text()
    body = await response.json()
    assert body["customer_id"] is not None
    return body["id"], path


async def report(api: Api, token: str, customer_id: str, suffix: str = "",
                 **params: str) -> Any:
    query = {"verified_by": "signed_letter", **params}
    return await api.client.get(f"/api/v1/customers/{customer_id}/access-report{suffix}",
                                params=query, headers=bearer(token))
