"""A recorded call as a vCon (IETF draft-ietf-vcon-vcon-core-04, syntax "0.4.0"): the
document's models and the builder that turns a recording, its analysis, evaluations and
annotations into one.

Parties carry numbers only as E.164 tel URIs and the customer only as an opaque reference;
no input here has an identity-code field, and free text (tags, notes, comments) has any
identity code in it masked. The recording is referenced by URL or left to be streamed
inline (storage.vcon_stream); either way the dialog states its SHA-256 in the draft's
ContentHash form ("sha256-" + unpadded base64url of the digest).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue

from schemas.personal_id import mask_personal_ids_in
from schemas.phone import tel_uri
from schemas.recordings import AudioFormat, Direction, EvaluationOut, Purpose

VCON_SYNTAX: Literal["0.4.0"] = "0.4.0"
"""The value of the (deprecated) "vcon" member that draft-ietf-vcon-vcon-core-04 fixes."""
VCON_DRAFT = "draft-ietf-vcon-vcon-core-04"
CC_EXTENSION = "CC"
"""draft-ietf-vcon-cc-extension: the Party "role" parameter (agent, customer) comes from it."""
VENDOR = "tallenne"
ANALYSIS_SCHEMA = "tallenne-call-analysis/1"

MEDIATYPES: dict[str, str] = {
    # The draft's recommended audio types where it names one; FLAC has only its IANA type.
    "wav": "audio/x-wav",
    "mp3": "audio/x-mp3",
    "ogg": "audio/ogg",
    "m4a": "audio/x-mp4",
    "flac": "audio/flac",
}


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515 section 2), as the draft asks for bodies and hashes."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def content_hash(algorithm: Literal["sha256", "sha512"], digest: bytes) -> str:
    """A ContentHash token: the algorithm name, a hyphen, the base64url digest."""
    return f"{algorithm}-{b64url(digest)}"


def sha256_content_hash(hex_digest: str) -> str:
    """The ContentHash of a stored recording from its hex SHA-256."""
    return content_hash("sha256", bytes.fromhex(hex_digest))


# --- the document -----------------------------------------------------------------------


class _VconPart(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Party(_VconPart):
    tel: str | None = None
    name: str | None = None
    uuid: str | None = Field(None, description="Opaque reference; never an identity code.")
    type: Literal["person", "bot", "organization"] | None = None
    org: str | None = None
    dept: str | None = None
    role: str | None = Field(None, description="CC extension: agent, customer, ...")


class Dialog(_VconPart):
    type: Literal["recording"] = "recording"
    start: datetime
    duration: float
    parties: list[int | None]
    mediatype: str
    filename: str
    url: str | None = None
    encoding: Literal["base64url"] | None = None
    # Last but one and last: an inline body is streamed into its place (storage.vcon_stream),
    # and a hash computed while streaming can still follow it.
    body: str | None = None
    content_hash: str | list[str]


class Analysis(_VconPart):
    type: str
    dialog: int
    vendor: str = VENDOR
    product: str | None = None
    schema_: str | None = Field(None, alias="schema")
    mediatype: str = "application/json"
    encoding: Literal["json"] = "json"
    body: JsonValue


class Attachment(_VconPart):
    purpose: str
    start: datetime
    party: int
    dialog: int
    mediatype: str = "application/json"
    encoding: Literal["json"] = "json"
    body: JsonValue


class Vcon(_VconPart):
    vcon: Literal["0.4.0"] = VCON_SYNTAX
    uuid: UUID
    created_at: datetime
    extensions: list[str] = Field(default_factory=lambda: [CC_EXTENSION])
    parties: list[Party]
    dialog: list[Dialog]
    analysis: list[Analysis] = Field(default_factory=list)
    attachments: list[Attachment] = Field(default_factory=list)

    @property
    def inline(self) -> bool:
        """Whether the recording is to be streamed into the document rather than referenced."""
        return self.dialog[0].url is None

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def vcon_json(vcon: Vcon) -> bytes:
    """The document of a vCon that references its recording by URL."""
    if vcon.inline:
        raise ValueError("an inline vCon is written by storage.vcon_stream, with its audio")
    return vcon.model_dump_json(by_alias=True, exclude_none=True).encode()


# --- what the builder takes -------------------------------------------------------------


class VconRecording(BaseModel):
    """The fields of a recording a vCon is made from. Anything else a caller hands over
    (a RecordingOut, a row) is dropped, so nothing beyond these can reach the document."""

    model_config = ConfigDict(extra="ignore", from_attributes=True)

    id: UUID
    company: str
    external_id: str
    started_at: AwareDatetime
    ended_at: AwareDatetime
    direction: Direction
    agent: str | None = None
    queue: str | None = None
    caller: str | None = None
    callee: str | None = None
    customer_id: UUID | None = None
    purpose: Purpose
    tags: list[str] = Field(default_factory=list)
    format: AudioFormat
    codec: str
    duration_s: float
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    retain_until: datetime | None = None
    legal_holds: list[str] = Field(default_factory=list)


class ChannelAnalysis(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["agent", "customer", "other"] | None = None  # None: no channel roles given
    talk_s: float
    talk_ratio: float


class CallAnalysis(BaseModel):
    """A recording's `analysis` (shared/API.md, player and analytics)."""

    model_config = ConfigDict(extra="allow", from_attributes=True)

    channels: list[ChannelAnalysis]
    silence_ratio: float
    longest_silence_s: float
    overtalk_s: float
    overtalk_count: int
    flags: list[str] = Field(default_factory=list)


class CallAnnotation(BaseModel):
    """A note on a point or span of a call (shared/API.md, annotations)."""

    model_config = ConfigDict(extra="ignore", from_attributes=True)

    id: UUID
    author: str
    at_s: float
    end_s: float | None = None
    text: str
    visibility: Literal["private", "team"]
    created_at: AwareDatetime


# --- the vCon's own id ------------------------------------------------------------------

class VconIds:
    """Version 8 UUIDs as the draft describes them: a version 7 layout whose last 62 bits are
    the high 62 bits of SHA-1 of the generating host's name. The 12 bits between count up
    within a millisecond (RFC 9562 section 6.2, method 1) and the clock never runs back, so
    one generator never repeats an id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0

    def new(self, host: str, at: datetime | None = None) -> UUID:
        now_ms = int((at.timestamp() if at is not None else time.time()) * 1000)
        with self._lock:
            if now_ms > self._last_ms:
                self._last_ms, self._counter = now_ms, secrets.randbelow(1 << 11)
            else:
                self._counter += 1
                if self._counter >= 1 << 12:
                    self._last_ms, self._counter = self._last_ms + 1, 0
            ms, counter = self._last_ms, self._counter
        host_hash = hashlib.sha1(host.lower().encode(), usedforsecurity=False).digest()
        host_bits = int.from_bytes(host_hash[:8], "big") >> 2
        return UUID(int=(ms & (1 << 48) - 1) << 80 | 0x8 << 76 | counter << 64 | 0b10 << 62
                    | host_bits)


_vcon_ids = VconIds()


def new_vcon_uuid(host: str, at: datetime | None = None) -> UUID:
    """A vCon UUID from the process's one generator (see `VconIds`)."""
    return _vcon_ids.new(host, at)


# --- the builder ------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _clean(text: str | None) -> str | None:
    return None if text is None else mask_personal_ids_in(text)


def _parties(recording: VconRecording) -> tuple[list[Party], int | None, int | None, int]:
    """Caller first (the implied originator), callee, then the company that made the record.
    Returns the parties and the indices of the agent, the customer and the company."""
    agent = Party(role="agent", name=_clean(recording.agent), org=recording.company,
                  dept=_clean(recording.queue))
    customer = Party(role="customer",
                     uuid=None if recording.customer_id is None else str(recording.customer_id))
    if recording.direction == "inbound":
        caller, callee, agent_at, customer_at = customer, agent, 1, 0
    elif recording.direction == "outbound":
        caller, callee, agent_at, customer_at = agent, customer, 0, 1
    else:
        caller, callee = agent, Party(role="agent", org=recording.company)
        agent_at, customer_at = None, None
    caller.tel = tel_uri(recording.caller)
    callee.tel = tel_uri(recording.callee)
    company = Party(type="organization", name=recording.company, org=recording.company)
    return [caller, callee, company], agent_at, customer_at, 2


def _dialog_parties(analysis: CallAnalysis | None, agent_at: int | None,
                    customer_at: int | None) -> list[int | None]:
    """One entry per channel when the analysis knows which role speaks on which channel;
    otherwise both parties as the mix of a single channel."""
    if analysis is None or len(analysis.channels) < 2 or agent_at is None:
        return [0, 1]
    by_role = {"agent": agent_at, "customer": customer_at}
    per_channel = [by_role.get(channel.role or "other") for channel in analysis.channels]
    return per_channel if any(i is not None for i in per_channel) else [0, 1]


def build_vcon(
    recording: VconRecording | BaseModel | Mapping[str, Any],
    *,
    host: str,
    analysis: CallAnalysis | BaseModel | Mapping[str, Any] | None = None,
    evaluations: Iterable[EvaluationOut] = (),
    annotations: Iterable[CallAnnotation | BaseModel | Mapping[str, Any]] = (),
    audio_url: str | None = None,
    audio_sha512: str | None = None,
    created_at: datetime | None = None,
    vcon_uuid: UUID | None = None,
) -> Vcon:
    """The vCon of one call.

    `audio_url` is the audited HTTPS address of the recording's audio; without it the
    dialog is inline and its body is streamed in by `storage.vcon_stream`. `audio_sha512`
    (hex), when the caller knows it, is stated beside the SHA-256, since the draft makes
    SHA-512 the algorithm every consumer must support. `host` names the generator in the
    vCon's UUID (see `new_vcon_uuid`).
    """
    rec = VconRecording.model_validate(recording)
    call_analysis = None if analysis is None else CallAnalysis.model_validate(analysis)
    notes = [CallAnnotation.model_validate(a) for a in annotations]
    created = _utc(created_at or datetime.now(UTC))
    if audio_url is not None and not audio_url.startswith("https://"):
        raise ValueError("the draft requires an HTTPS URL for externally referenced audio")

    parties, agent_at, customer_at, company_at = _parties(rec)
    hashes: list[str] = []
    if audio_sha512 is not None:
        hashes.append(content_hash("sha512", bytes.fromhex(audio_sha512)))
    hashes.append(sha256_content_hash(rec.sha256))
    dialog = Dialog(
        start=_utc(rec.started_at), duration=rec.duration_s,
        parties=_dialog_parties(call_analysis, agent_at, customer_at),
        mediatype=MEDIATYPES[rec.format], filename=f"{rec.id}.{rec.format}",
        url=audio_url, encoding=None if audio_url is not None else "base64url",
        content_hash=hashes[0] if len(hashes) == 1 else hashes,
    )

    analyses = []
    if call_analysis is not None:
        analyses.append(Analysis(
            type="report", dialog=0, product="call-analysis", schema_=ANALYSIS_SCHEMA,
            body=call_analysis.model_dump(mode="json"),
        ))

    def attach(purpose: str, start: datetime, body: JsonValue) -> Attachment:
        return Attachment(purpose=purpose, start=_utc(start), party=company_at, dialog=0,
                          body=body)

    attachments = [
        attach("call_metadata", rec.started_at, {
            "recording_id": str(rec.id), "company": rec.company,
            "external_id": rec.external_id, "direction": rec.direction,
            "started_at": _utc(rec.started_at).isoformat(),
            "ended_at": _utc(rec.ended_at).isoformat(),
            "format": rec.format, "codec": rec.codec, "duration_s": rec.duration_s,
            "sha256": rec.sha256,
        }),
        attach("tags", rec.started_at, [mask_personal_ids_in(tag) for tag in rec.tags]),
        attach("processing_purpose", rec.started_at, {"purpose": rec.purpose}),
        attach("retention", created, {
            "retain_until": None if rec.retain_until is None else _utc(rec.retain_until)
            .isoformat(),
            "legal_holds": list(rec.legal_holds),
        }),
    ]
    for evaluation in sorted(evaluations, key=lambda e: e.created_at):
        attachments.append(attach("evaluation", evaluation.created_at, {
            "id": str(evaluation.id), "evaluator": _clean(evaluation.evaluator),
            "form": evaluation.form, "form_version": evaluation.form_version,
            "scores": dict(evaluation.scores), "comment": _clean(evaluation.comment),
            "created_at": _utc(evaluation.created_at).isoformat(),
            "updated_at": _utc(evaluation.updated_at).isoformat(),
        }))
    for note in sorted(notes, key=lambda n: n.created_at):
        attachments.append(attach("annotation", note.created_at, {
            "id": str(note.id), "author": _clean(note.author), "at_s": note.at_s,
            "end_s": note.end_s, "text": mask_personal_ids_in(note.text),
            "visibility": note.visibility,
        }))

    return Vcon(
        uuid=vcon_uuid or new_vcon_uuid(host, created), created_at=created,
        parties=parties, dialog=[dialog], analysis=analyses, attachments=attachments,
    )
