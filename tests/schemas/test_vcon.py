"""A call as a vCon: valid against draft-ietf-vcon-vcon-core-04's JSON schema, parties in
E.164 with roles, the recording's SHA-256 in the draft's ContentHash form, no identity code."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.recordings import EvaluationOut
from schemas.vcon import (
    VCON_SYNTAX,
    CallAnnotation,
    VconIds,
    VconRecording,
    build_vcon,
    new_vcon_uuid,
    vcon_json,
)
from tests.schemas.vcon_support import (
    decode_content_hash,
    identity_code,
    recording,
    schema_errors,
)

AUDIO = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4
AUDIO_URL = "https://tallenne.example.fi/api/v1/recordings/{id}/audio?reason=export"
ANALYSIS: dict[str, Any] = {
    "channels": [
        {"role": "agent", "talk_s": 100.0, "talk_ratio": 0.42},
        {"role": "customer", "talk_s": 120.0, "talk_ratio": 0.5},
    ],
    "silence_ratio": 0.08, "longest_silence_s": 6.5, "overtalk_s": 3.25, "overtalk_count": 4,
    "flags": ["clipping"],
}


def evaluation(recording_id: uuid.UUID, **overrides: object) -> EvaluationOut:
    now = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
    values: dict[str, object] = {
        "id": uuid.uuid4(), "recording_id": recording_id, "evaluator": "supervisor-2",
        "form": "laatu", "form_version": 3, "scores": {"greeting": 2, "solution": 4},
        "comment": "Hyvä puhelu", "created_at": now, "updated_at": now,
    }
    values.update(overrides)
    return EvaluationOut.model_validate(values)


def annotation(**overrides: object) -> CallAnnotation:
    values: dict[str, object] = {
        "id": uuid.uuid4(), "author": "agent-7", "at_s": 12.5, "end_s": 20.0,
        "text": "asiakas kysyy laskusta", "visibility": "team",
        "created_at": datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
    }
    values.update(overrides)
    return CallAnnotation.model_validate(values)


def full_vcon(rec: dict[str, object], **overrides: object) -> dict[str, Any]:
    """The vCon of `rec` as a client parses it: a JSON document."""
    rec_id = rec["id"]
    assert isinstance(rec_id, uuid.UUID)
    arguments: dict[str, object] = {
        "host": "tallenne.example.fi", "analysis": ANALYSIS,
        "evaluations": [evaluation(rec_id)], "annotations": [annotation()],
        "audio_url": AUDIO_URL.format(id=rec_id),
    }
    arguments.update(overrides)
    vcon = build_vcon(rec, **arguments)  # type: ignore[arg-type]
    document = json.loads(vcon_json(vcon))
    assert isinstance(document, dict)
    return document


def test_call_with_analysis_evaluations_and_annotations_is_a_valid_draft_04_vcon() -> None:
    rec = recording(AUDIO)
    document = full_vcon(rec)

    assert schema_errors(document) == []
    assert document["vcon"] == VCON_SYNTAX == "0.4.0"
    assert document["extensions"] == ["CC"]
    [dialog] = document["dialog"]
    assert dialog["type"] == "recording"
    assert dialog["url"] == AUDIO_URL.format(id=rec["id"])
    assert dialog["mediatype"] == "audio/x-wav"
    assert dialog["start"] == "2026-03-02T08:00:00Z"
    assert dialog["duration"] == 240.0
    assert "body" not in dialog and "encoding" not in dialog
    algorithm, digest = decode_content_hash(dialog["content_hash"])
    assert (algorithm, digest) == ("sha256", hashlib.sha256(AUDIO).digest())

    [analysis] = document["analysis"]
    assert analysis["type"] == "report" and analysis["dialog"] == 0
    assert analysis["encoding"] == "json" and analysis["body"] == ANALYSIS

    by_purpose = {a["purpose"]: a["body"] for a in document["attachments"]}
    assert by_purpose["tags"] == ["billing", "complaint"]
    assert by_purpose["processing_purpose"] == {"purpose": "quality"}
    assert by_purpose["retention"] == {"retain_until": "2027-03-02T08:00:00+00:00",
                                       "legal_holds": ["case-2026-17"]}
    assert by_purpose["evaluation"]["scores"] == {"greeting": 2, "solution": 4}
    assert by_purpose["annotation"]["text"] == "asiakas kysyy laskusta"
    assert by_purpose["annotation"]["at_s"] == 12.5
    assert by_purpose["call_metadata"]["external_id"] == rec["external_id"]


def test_schema_check_refuses_a_document_that_breaks_the_draft() -> None:
    # The validator is not vacuous: formats and conditional rules are enforced.
    document = full_vcon(recording(AUDIO))
    document["created_at"] = "yesterday"
    document["dialog"][0].pop("content_hash")
    document["attachments"][0].pop("party")
    errors = schema_errors(document)
    assert any("created_at" in e for e in errors)
    assert any("content_hash" in e for e in errors)
    assert any("'party' is a required property" in e for e in errors)


def test_inbound_call_makes_the_caller_the_customer_and_the_callee_the_agent() -> None:
    rec = recording(AUDIO, direction="inbound", caller="040 123 4567", callee="08 5584 3100")
    caller, callee, company = full_vcon(rec)["parties"]
    assert caller == {"role": "customer", "tel": "tel:+358401234567",
                      "uuid": str(rec["customer_id"])}
    assert callee == {"role": "agent", "tel": "tel:+358855843100", "name": "agent-7",
                      "org": rec["company"], "dept": "billing"}
    assert company == {"type": "organization", "name": rec["company"], "org": rec["company"]}


def test_outbound_call_makes_the_caller_the_agent() -> None:
    rec = recording(AUDIO, direction="outbound", caller="+358 9 123 4567",
                    callee="00358 50 765 4321")
    caller, callee, _ = full_vcon(rec)["parties"]
    assert (caller["role"], caller["tel"]) == ("agent", "tel:+35891234567")
    assert (callee["role"], callee["tel"]) == ("customer", "tel:+358507654321")


def test_internal_call_has_two_agents_and_no_customer() -> None:
    rec = recording(AUDIO, direction="internal", customer_id=None)
    caller, callee, _ = full_vcon(rec)["parties"]
    assert caller["role"] == callee["role"] == "agent"
    assert full_vcon(rec)["dialog"][0]["parties"] == [0, 1]


@pytest.mark.parametrize("written", ["040 123 4567", "+358 40 123 4567", "00358401234567",
                                     "040-1234567", "+358401234567"])
def test_a_finnish_number_in_any_form_becomes_one_e164_tel_uri(written: str) -> None:
    document = full_vcon(recording(AUDIO, caller=written))
    assert document["parties"][0]["tel"] == "tel:+358401234567"


@pytest.mark.parametrize("written", ["1234", "anonymous", "", None])
def test_a_number_that_is_not_a_phone_number_is_left_out_rather_than_guessed(
        written: str | None) -> None:
    document = full_vcon(recording(AUDIO, caller=written))
    assert "tel" not in document["parties"][0]
    assert schema_errors(document) == []


def test_dialog_parties_follow_the_channel_roles_of_the_analysis() -> None:
    # Inbound: customer is party 0, agent party 1; channel 0 is the agent's.
    document = full_vcon(recording(AUDIO, direction="inbound"))
    assert document["dialog"][0]["parties"] == [1, 0]
    other = {**ANALYSIS, "channels": [ANALYSIS["channels"][1],
                                      {"role": "other", "talk_s": 1.0, "talk_ratio": 0.0}]}
    document = full_vcon(recording(AUDIO, direction="inbound"), analysis=other)
    assert document["dialog"][0]["parties"] == [0, None]
    assert schema_errors(document) == []


def test_call_not_yet_analysed_has_no_analysis_and_is_still_valid() -> None:
    document = full_vcon(recording(AUDIO), analysis=None, evaluations=[], annotations=[])
    assert document["analysis"] == []
    assert document["dialog"][0]["parties"] == [0, 1]
    assert schema_errors(document) == []


def test_known_sha512_is_stated_first_beside_the_sha256() -> None:
    document = full_vcon(recording(AUDIO), audio_sha512=hashlib.sha512(AUDIO).hexdigest())
    hashes = [decode_content_hash(h) for h in document["dialog"][0]["content_hash"]]
    assert hashes == [("sha512", hashlib.sha512(AUDIO).digest()),
                      ("sha256", hashlib.sha256(AUDIO).digest())]
    assert schema_errors(document) == []


def test_no_identity_code_reaches_the_vcon_whatever_the_input_carries() -> None:
    code = identity_code()
    test_code = identity_code("010190", "900", "A")
    assert not any(name in VconRecording.model_fields
                   for name in ("personal_id", "henkilotunnus", "hetu", "identity_code"))
    rec = recording(AUDIO, personal_id=code, tags=[f"hetu {code}"], queue="billing")
    rec_id = rec["id"]
    assert isinstance(rec_id, uuid.UUID)
    document = full_vcon(
        rec,
        evaluations=[evaluation(rec_id, comment=f"tunnistettu {code.lower()}")],
        annotations=[annotation(text=f"asiakas {code} ja {test_code} soittivat")],
    )
    text = json.dumps(document)
    for leaked in (code, code.lower(), test_code):
        assert leaked not in text
    assert f"{code[:7]}****" in text
    assert schema_errors(document) == []


def test_a_shape_that_fails_the_check_character_is_not_treated_as_an_identity_code() -> None:
    code = identity_code()
    wrong = code[:-1] + ("A" if code[-1] != "A" else "B")
    document = full_vcon(recording(AUDIO), annotations=[annotation(text=f"tilaus {wrong}")])
    assert f"tilaus {wrong}" in json.dumps(document)


def test_audio_by_plain_http_url_is_refused() -> None:
    with pytest.raises(ValueError, match="HTTPS"):
        build_vcon(recording(AUDIO), host="h", audio_url="http://tallenne.example.fi/a")


def test_inline_vcon_cannot_be_written_without_its_audio() -> None:
    vcon = build_vcon(recording(AUDIO), host="h")
    assert vcon.inline
    with pytest.raises(ValueError, match="inline"):
        vcon_json(vcon)


def test_vcon_uuids_are_version_8_with_the_hosts_hash_and_never_repeat() -> None:
    at = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    generator = VconIds()
    ids = [generator.new("tallenne.example.fi", at) for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    host_bits = int.from_bytes(hashlib.sha1(b"tallenne.example.fi").digest()[:8], "big") >> 2
    for value in ids[:50] + ids[-50:]:
        assert value.version == 8 and value.variant == uuid.RFC_4122
        assert value.int & ((1 << 62) - 1) == host_bits
    first_ms = ids[0].int >> 80
    assert abs(first_ms - int(at.timestamp() * 1000)) <= 3
    assert new_vcon_uuid("other.example.fi").int & ((1 << 62) - 1) != host_bits


def test_created_at_and_uuid_can_be_given_for_a_repeatable_document() -> None:
    rec = recording(AUDIO)
    fixed = uuid.UUID("01950000-0000-8000-8000-000000000000")
    created = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
    rec_id = rec["id"]
    assert isinstance(rec_id, uuid.UUID)
    given = {"vcon_uuid": fixed, "created_at": created,
             "evaluations": [evaluation(rec_id)], "annotations": [annotation()]}
    first = full_vcon(rec, **given)
    again = full_vcon(rec, **given)
    assert first == again
    assert first["uuid"] == str(fixed) and first["created_at"] == "2026-04-01T12:00:00Z"
