"""Search by telephone number (caller or callee, any written form) and by duration."""

from __future__ import annotations

from typing import Any

import pytest

from tests import audiogen
from tests.helpers import Api, bearer
from tests.service.recording_factory import COMPANY, OTHER_COMPANY, metadata, upload


async def _ingest(api: Api, company: str, seconds: float = 1.0, **meta: Any) -> dict[str, Any]:
    token = await api.token("ingest", [company], name=f"pbx-{company}")
    response = await upload(api.client, token, metadata(company=company, **meta),
                            audiogen.make_audio("wav_pcm", seconds))
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def _found(api: Api, token: str, **params: str) -> list[str]:
    response = await api.client.get("/api/v1/recordings", params=params, headers=bearer(token))
    assert response.status == 200, await response.text()
    return [item["id"] for item in (await response.json())["items"]]


@pytest.mark.parametrize("written", ["040 123 4567", "0401234567", "+358401234567",
                                     "+358 40 123 4567", "00358401234567", "040-1234567"])
async def test_a_call_is_found_by_its_number_in_any_written_form(api: Api, written: str) -> None:
    as_caller = await _ingest(api, COMPANY, caller="040 123 4567", callee="0985584310")
    as_callee = await _ingest(api, COMPANY, direction="outbound", caller="+358985584310",
                              callee="+358 40 1234567", started_at="2026-03-03T10:00:00+02:00",
                              ended_at="2026-03-03T10:04:00+02:00")
    await _ingest(api, COMPANY, caller="0407654321", callee="0985584310")
    theirs = await _ingest(api, OTHER_COMPANY, caller="0401234567")
    token = await api.token("quality", [COMPANY])
    found = await _found(api, token, phone=written)
    assert found == [as_callee["id"], as_caller["id"]]
    assert theirs["id"] not in found
    # The number as pushed is kept as it was.
    assert as_caller["caller"] == "040 123 4567"


async def test_a_number_of_another_company_is_not_found(api: Api) -> None:
    theirs = await _ingest(api, OTHER_COMPANY, caller="0441112233")
    ours = await api.token("quality", [COMPANY])
    assert await _found(api, ours, phone="044 111 2233") == []
    their_token = await api.token("quality", [OTHER_COMPANY])
    assert await _found(api, their_token, phone="044 111 2233") == [theirs["id"]]


async def test_a_phone_that_is_no_number_is_refused_naming_the_parameter(api: Api) -> None:
    token = await api.token("quality", [COMPANY])
    response = await api.client.get("/api/v1/recordings", params={"phone": "anonymous"},
                                    headers=bearer(token))
    assert response.status == 422
    assert response.content_type == "application/problem+json"
    body = await response.json()
    assert "phone" in str(body)


async def test_duration_filters_bound_the_calls_found(api: Api) -> None:
    short = await _ingest(api, COMPANY, seconds=1.0, caller="0501112233")
    long = await _ingest(api, COMPANY, seconds=3.0, caller="0501112233",
                         started_at="2026-03-03T10:00:00+02:00",
                         ended_at="2026-03-03T10:04:00+02:00")
    token = await api.token("quality", [COMPANY])
    assert await _found(api, token, phone="0501112233", min_duration_s="2") == [long["id"]]
    assert await _found(api, token, phone="0501112233", max_duration_s="2") == [short["id"]]
    assert await _found(api, token, phone="0501112233", min_duration_s="0.5",
                        max_duration_s="3.5") == [long["id"], short["id"]]
