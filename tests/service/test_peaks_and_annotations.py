"""Waveform peaks (reasoned and audited as replay) and annotations on a call."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from tests import audiogen
from tests.helpers import Api, bearer
from tests.service.recording_factory import (
    COMPANY,
    OTHER_COMPANY,
    analysed,
    metadata,
    upload,
)


async def _call(api: Api, company: str = COMPANY) -> dict[str, Any]:
    token = await api.token("ingest", [company], name=f"pbx-{company}")
    response = await upload(api.client, token,
                            metadata(company=company, channel_roles=["agent", "customer"]),
                            audiogen.make_call("wav_mulaw", "clean"))
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    reader = await api.token("quality", [company], name=f"qa-{company}")
    return await analysed(api.client, reader, created["id"])


async def test_peaks_are_drawn_per_channel_and_audited_in_the_replay_window(
    api: Api, db: asyncpg.Connection
) -> None:
    call = await _call(api)
    token = await api.token("quality", [COMPANY])
    url = f"/api/v1/recordings/{call['id']}"
    response = await api.client.get(f"{url}/peaks", params={"reason": "QA review"},
                                    headers=bearer(token))
    assert response.status == 200, await response.text()
    peaks = await response.json()
    assert peaks["interval_ms"] == 10
    left, right = peaks["channels"]
    assert (left["role"], right["role"]) == ("agent", "customer")
    assert len(left["min"]) == len(right["max"]) == 2600
    assert max(left["max"][:1000]) > 0.3 and max(left["max"][1100:]) < 0.01
    assert min(right["min"][850:1950]) < -0.3 and max(right["max"][:750]) < 0.01
    # The audio of the same listening session joins the same window: one audit event.
    audio = await api.client.get(f"{url}/audio", params={"reason": "QA review"},
                                 headers={**bearer(token), "Range": "bytes=0-99"})
    assert audio.status == 206
    await asyncio.sleep(0.5)
    assert await db.fetchval(
        "SELECT count(*) FROM audit_events WHERE action = 'recording.replay'"
        " AND target_id = $1", call["id"]) == 1
    ranges = await db.fetchval(
        "SELECT ranges FROM recording_replay_windows WHERE recording_id = $1", call["id"])
    assert ranges[0] == "peaks"


async def test_peaks_need_a_reason_the_right_role_and_the_company(api: Api) -> None:
    call = await _call(api, OTHER_COMPANY)
    url = f"/api/v1/recordings/{call['id']}/peaks"
    theirs = await api.token("quality", [OTHER_COMPANY])
    no_reason = await api.client.get(url, headers=bearer(theirs))
    assert no_reason.status == 400
    assert "reason" in await no_reason.text()
    ours = await api.token("quality", [COMPANY])
    assert (await api.client.get(url, params={"reason": "x"}, headers=bearer(ours))).status \
        == 404
    service = await api.token("customer_service", [OTHER_COMPANY])
    assert (await api.client.get(url, params={"reason": "x"},
                                 headers=bearer(service))).status == 403


async def test_annotations_are_listed_by_visibility_and_deleted_by_author_or_admin(
    api: Api, db: asyncpg.Connection
) -> None:
    call = await _call(api)
    url = f"/api/v1/recordings/{call['id']}/annotations"
    anna = await api.token("quality", [COMPANY], name="anna")
    bertta = await api.token("quality", [COMPANY], name="bertta")
    shared = await api.client.post(url, json={"at_s": 93.5, "end_s": 97, "text": "hyvä",
                                              "visibility": "team"}, headers=bearer(anna))
    assert shared.status == 201, await shared.text()
    mine = await api.client.post(url, json={"at_s": 12, "text": "oma huomio",
                                            "visibility": "private"}, headers=bearer(anna))
    assert mine.status == 201

    async def seen(token: str) -> list[str]:
        response = await api.client.get(url, headers=bearer(token))
        assert response.status == 200
        return [n["text"] for n in (await response.json())["items"]]

    assert await seen(anna) == ["oma huomio", "hyvä"]
    assert await seen(bertta) == ["hyvä"]
    shared_id = (await shared.json())["id"]
    # Bertta sees Anna's team note but may not delete it; Anna's private note is not there
    # for her at all.
    refused = await api.client.delete(f"{url}/{shared_id}", headers=bearer(bertta))
    assert refused.status == 403 and refused.content_type == "application/problem+json"
    hidden = await api.client.delete(f"{url}/{(await mine.json())['id']}",
                                     headers=bearer(bertta))
    assert hidden.status == 404
    assert await seen(anna) == ["oma huomio", "hyvä"]
    admin = await api.token("admin", [COMPANY])
    assert (await api.client.delete(f"{url}/{shared_id}", headers=bearer(admin))).status \
        == 200
    assert await seen(bertta) == []
    outsider = await api.token("quality", [OTHER_COMPANY])
    assert (await api.client.get(url, headers=bearer(outsider))).status == 404
    await asyncio.sleep(0.3)
    assert await db.fetchval(
        "SELECT count(*) FROM audit_events WHERE action LIKE 'annotation.%'") >= 5


async def test_a_personal_token_named_after_a_colleague_still_acts_as_its_owner(
    api: Api, db: asyncpg.Connection
) -> None:
    """A token's name is its owner's label: a person cannot borrow a colleague's name by
    naming a token after them (read their private notes, delete or overwrite their work, or
    appear as them in the audit trail)."""
    call = await _call(api)
    url = f"/api/v1/recordings/{call['id']}/annotations"
    await api.user("alice", "quality", [COMPANY])
    await api.user("mallory", "quality", [COMPANY])
    csrf = await api.login("alice")
    alices = await api.client.post("/api/v1/tokens", json={"name": "alice-laptop"},
                                   headers={"X-CSRF-Token": csrf})
    alice = (await alices.json())["token"]
    note = await api.client.post(url, json={"at_s": 3, "text": "vain minulle",
                                            "visibility": "private"}, headers=bearer(alice))
    assert note.status == 201, await note.text()
    api.client.session.cookie_jar.clear()
    csrf = await api.login("mallory")
    made = await api.client.post("/api/v1/tokens", json={"name": "alice"},
                                 headers={"X-CSRF-Token": csrf})
    assert made.status == 201, await made.text()
    api.client.session.cookie_jar.clear()
    mallory = (await made.json())["token"]

    seen = await api.client.get(url, headers=bearer(mallory))
    assert seen.status == 200
    assert "vain minulle" not in await seen.text()
    gone = await api.client.delete(f"{url}/{(await note.json())['id']}",
                                   headers=bearer(mallory))
    assert gone.status == 404
    me = await (await api.client.get("/api/v1/me", headers=bearer(mallory))).json()
    assert me["name"] == "mallory", me
    actors = {r["actor"] for r in await db.fetch(
        "SELECT actor FROM audit_events WHERE action = 'annotation.read'")}
    assert actors == {"mallory"}


@pytest.mark.parametrize("text", ["asiakas 131052-308T soitti", "010101A1234"])
async def test_an_identity_code_in_a_note_is_refused_naming_the_field(
    api: Api, db: asyncpg.Connection, text: str
) -> None:
    call = await _call(api)
    token = await api.token("quality", [COMPANY])
    response = await api.client.post(f"/api/v1/recordings/{call['id']}/annotations",
                                     json={"at_s": 1, "text": text}, headers=bearer(token))
    assert response.status == 422
    assert response.content_type == "application/problem+json"
    body = await response.text()
    assert "text" in body and text not in body and "131052" not in body
    assert await db.fetchval("SELECT count(*) FROM recording_annotations") == 0
