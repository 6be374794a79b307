"""GET /api/v1/recordings/{id}/vcon: a valid vCon of the call, by reference or with the audio
inline, reasoned and audited as a replay, scoped like every read of a call."""

from __future__ import annotations

import base64
import hashlib
import json

import asyncpg

from tests import audiogen
from tests.helpers import Api, bearer
from tests.schemas.vcon_support import decode_content_hash, schema_errors
from tests.service.export_factory import reads_left_open
from tests.service.recording_factory import COMPANY, OTHER_COMPANY, metadata, upload


async def stored_call(api: Api) -> tuple[str, bytes]:
    audio = audiogen.make_audio("wav_pcm", 1.0, tone_hz=510.0)
    token = await api.token("ingest", [COMPANY])
    response = await upload(api.client, token, metadata(caller="040 123 4567"), audio)
    assert response.status == 201, await response.text()
    return str((await response.json())["id"]), audio.read_bytes()


async def test_vcon_references_the_audited_audio_and_validates_against_the_draft(
        api: Api, db: asyncpg.Connection) -> None:
    recording_id, audio = await stored_call(api)
    token = await api.token("quality", [COMPANY])
    url = f"/api/v1/recordings/{recording_id}/vcon"

    response = await api.client.get(url, headers=bearer(token))
    assert response.status == 400
    assert response.content_type == "application/problem+json"

    response = await api.client.get(url, params={"reason": "siirto laatujärjestelmään"},
                                    headers=bearer(token))
    assert response.status == 200, await response.text()
    document = json.loads(await response.read())
    assert schema_errors(document) == []
    assert document["vcon"] == "0.4.0"
    assert document["parties"][0]["tel"] == "tel:+358401234567"
    dialog = document["dialog"][0]
    assert dialog["url"] == f"https://localhost:8080/api/v1/recordings/{recording_id}/audio"
    assert decode_content_hash(dialog["content_hash"]) == ("sha256",
                                                           hashlib.sha256(audio).digest())
    event = await db.fetchrow("SELECT action, reason, detail FROM audit_events"
                              " WHERE target_id = $1 AND action = 'recording.replay'",
                              recording_id)
    assert event is not None
    assert event["reason"] == "siirto laatujärjestelmään"
    assert json.loads(event["detail"])["inline"] is False


async def test_inline_vcon_carries_the_original_bytes_as_base64url(api: Api) -> None:
    recording_id, audio = await stored_call(api)
    token = await api.token("quality", [COMPANY])
    response = await api.client.get(f"/api/v1/recordings/{recording_id}/vcon",
                                    params={"reason": "luovutus", "inline": "true"},
                                    headers=bearer(token))
    assert response.status == 200, await response.text()
    body = await response.read()
    assert response.content_length == len(body)
    document = json.loads(body)
    assert schema_errors(document) == []
    dialog = document["dialog"][0]
    assert dialog["encoding"] == "base64url"
    encoded = dialog["body"]
    assert base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)) == audio
    hashes = dict(decode_content_hash(h) for h in dialog["content_hash"])
    assert hashes["sha256"] == hashlib.sha256(audio).digest()


async def test_vcon_of_another_companys_call_is_not_found(api: Api) -> None:
    recording_id, _ = await stored_call(api)
    outsider = await api.token("quality", [OTHER_COMPANY])
    response = await api.client.get(f"/api/v1/recordings/{recording_id}/vcon",
                                    params={"reason": "uteliaisuus"}, headers=bearer(outsider))
    assert response.status == 404


async def test_a_client_leaving_an_inline_vcon_early_leaves_no_s3_read_open(api: Api) -> None:
    ingest = await api.token("ingest", [COMPANY])
    response = await upload(api.client, ingest, metadata(), audiogen.make_large_wav(32 << 20))
    assert response.status == 201, await response.text()
    recording_id = (await response.json())["id"]
    token = await api.token("quality", [COMPANY])
    while_read, at_end = await reads_left_open(
        api, f"/api/v1/recordings/{recording_id}/vcon", token,
        params={"reason": "luovutus", "inline": "true"})
    assert while_read > 0
    assert at_end == 0
