"""Request and response models of the recordings API: metadata, search, erasure, evaluations."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, Field, ValidationInfo, field_validator

from schemas.analysis import ChannelRole, Flag, RecordingAnalysis
from schemas.common import StrictModel
from schemas.evaluation_forms import KEY_PATTERN, NAME_PATTERN
from schemas.free_text import FreeText, contains_personal_id
from schemas.phone import to_e164

Direction = Literal["inbound", "outbound", "internal"]
Purpose = Literal["transaction_verification", "quality"]
AudioFormat = Literal["wav", "mp3", "ogg", "flac", "m4a"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LABEL = Field(None, max_length=200)


class RecordingMetadata(StrictModel):
    """The `metadata` part of an upload; validated before any audio is read."""

    company: str = Field(min_length=1, max_length=63, description="Company code.")
    external_id: str = Field(
        min_length=1, max_length=200, description="The telephony system's call id."
    )
    started_at: AwareDatetime
    ended_at: AwareDatetime
    direction: Direction
    agent: str | None = _LABEL
    queue: str | None = _LABEL
    caller: str | None = Field(None, max_length=64, description="Calling number (personal data).")
    callee: str | None = Field(None, max_length=64, description="Called number (personal data).")
    customer_number: str | None = Field(None, min_length=1, max_length=64)
    purpose: Purpose
    tags: list[str] = Field(default_factory=list, max_length=50)
    sha256: str | None = Field(None, description="Hex SHA-256 of the audio; checked if given.")
    channel_roles: list[ChannelRole] | None = Field(
        None, min_length=1, max_length=8,
        description="Who each channel carries, in channel order (e.g. agent, customer).")

    @field_validator("tags")
    @classmethod
    def _tags_are_short(cls, tags: list[str]) -> list[str]:
        for tag in tags:
            if not tag or len(tag) > 64:
                raise ValueError("each tag must be 1-64 characters")
        return tags

    @field_validator("sha256")
    @classmethod
    def _sha256_is_hex(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lower()
        if not _SHA256.match(value):
            raise ValueError("must be 64 hexadecimal characters")
        return value

    @field_validator("ended_at")
    @classmethod
    def _ends_after_start(cls, value: datetime, info: ValidationInfo) -> datetime:
        started = info.data.get("started_at")
        if started is not None and value < started:
            raise ValueError("ended_at is before started_at")
        return value


class RecordingOut(BaseModel):
    id: UUID
    company: str
    external_id: str
    started_at: datetime
    ended_at: datetime
    direction: Direction
    agent: str | None
    queue: str | None
    caller: str | None
    callee: str | None
    customer_number: str | None
    customer_id: UUID | None
    purpose: Purpose
    tags: list[str]
    format: AudioFormat
    codec: str
    duration_s: float
    sample_rate: int
    channels: int
    size_bytes: int
    sha256: str
    state: str = Field(description="stored, or corrupt when replay found the bytes damaged.")
    retain_until: datetime | None
    legal_holds: list[str]
    created_at: datetime
    channel_roles: list[ChannelRole] | None = None
    analysis: RecordingAnalysis | None = Field(
        None, description="Talk, silence, overtalk and health flags; null until analysed.")


class RecordingPage(BaseModel):
    items: list[RecordingOut]
    next_cursor: str | None = Field(None, description="Opaque cursor of the next page.")


class RecordingFilter(StrictModel):
    """The filters of `GET /api/v1/recordings`, which an export takes too."""

    company: str | None = None
    from_: AwareDatetime | None = Field(None, alias="from")
    to: AwareDatetime | None = None
    agent: str | None = None
    queue: str | None = None
    direction: Direction | None = None
    customer_id: UUID | None = None
    tag: str | None = None
    external_id: str | None = None
    phone: str | None = Field(
        None, min_length=1, max_length=64,
        description="Caller or callee, in any Finnish or E.164 form (040 123 4567, "
        "0401234567, +358401234567).")
    min_duration_s: float | None = Field(None, ge=0)
    max_duration_s: float | None = Field(None, ge=0)
    min_silence_ratio: float | None = Field(None, ge=0, le=1)
    min_overtalk_s: float | None = Field(None, ge=0)
    flag: Flag | None = Field(None, description="A health flag the call's analysis has.")

    model_config = {"extra": "forbid", "populate_by_name": True}

    @field_validator("phone")
    @classmethod
    def _phone_in_e164(cls, value: str | None) -> str | None:
        if value is None:
            return None
        e164 = to_e164(value)
        if e164 is None:
            raise ValueError("not a valid telephone number")
        return e164


class RecordingQuery(RecordingFilter):
    limit: int = Field(100, ge=1, le=1000)
    cursor: str | None = Field(None, max_length=512)


class ReplayQuery(BaseModel):
    reason: FreeText = Field(min_length=1, max_length=500,
                             description="Why the call is opened; without one: 400.")


class RecordingEraseIn(StrictModel):
    reason: FreeText = Field(min_length=1, max_length=500)

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


class RecordingErasedOut(BaseModel):
    id: UUID
    erased_at: datetime
    reason: str


class EvaluationIn(StrictModel):
    form: FreeText = Field(pattern=NAME_PATTERN,
                           description="Name of an active evaluation form usable for the call.")
    scores: dict[str, Annotated[int, Field(strict=True)]] = Field(
        max_length=100,
        description="A score for every criterion of the form, each 0..its max_score.",
    )
    comment: FreeText | None = Field(None, max_length=10_000)

    @field_validator("scores")
    @classmethod
    def _keys_are_criterion_keys(cls, scores: dict[str, int]) -> dict[str, int]:
        # A key is echoed in the answer when the form has no such criterion: one shaped
        # like an identity code is refused here, without naming it.
        for key in scores:
            if not re.fullmatch(KEY_PATTERN, key) or contains_personal_id(key):
                raise ValueError("a key of scores is not a criterion key (a-z, 0-9, _ and -)")
        return scores

    @field_validator("scores")
    @classmethod
    def _criteria_are_named(cls, scores: dict[str, int]) -> dict[str, int]:
        # Which criteria and ranges fit is the form's rule (schemas.evaluation_forms).
        for criterion in scores:
            if not criterion or len(criterion) > 100:
                raise ValueError("each criterion name must be 1-100 characters")
        return scores


class EvaluationOut(BaseModel):
    id: UUID
    recording_id: UUID
    evaluator: str
    form: str
    form_version: int | None = Field(
        description="Version of the form the call was scored with; null for evaluations "
        "stored before forms were defined.")
    scores: dict[str, int]
    comment: str | None
    created_at: datetime
    updated_at: datetime


class EvaluationList(BaseModel):
    items: list[EvaluationOut]
