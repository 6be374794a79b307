"""The DPO's subject search: everything held about one person, found by a phone number or
an identity code, across the caller's companies."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field, model_validator

from schemas.common import StrictModel
from schemas.customers import CustomerOut
from schemas.disclosures import DisclosureOut
from schemas.personal_id import PersonalId
from schemas.recordings import EvaluationOut, RecordingOut


class SubjectQuery(StrictModel):
    phone: str = Field(min_length=1, max_length=64,
                       description="A phone number in any Finnish or E.164 form.")


class SubjectSearchIn(StrictModel):
    """Either `personal_id` or `phone`; an identity code only ever travels in a body."""

    personal_id: PersonalId | None = None
    phone: str | None = Field(None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _one_key(self) -> SubjectSearchIn:
        if (self.personal_id is None) == (self.phone is None):
            raise ValueError("give either personal_id or phone")
        return self


class SubjectRecording(RecordingOut):
    matched_by: list[str] = Field(description="customer, phone, or both.")
    evaluations: list[EvaluationOut]


class SubjectWebEvent(BaseModel):
    id: int
    ts: datetime
    company: str
    site: str
    event: str
    url: str | None
    customer_id: UUID | None


class SubjectRead(BaseModel):
    """An audited access to the person's data."""

    seq: int
    at: datetime
    actor: str
    action: str
    target_type: str | None
    target_id: str | None
    company: str | None
    reason: str | None


class SubjectsOut(BaseModel):
    phone: str | None = Field(None, description="The number searched, in E.164.")
    customers: list[CustomerOut]
    recordings: list[SubjectRecording]
    web_events: list[SubjectWebEvent]
    disclosures: list[DisclosureOut]
    reads: list[SubjectRead]
    links: dict[str, Any] = Field(
        default_factory=dict,
        description="Where the access report and an export of these calls start.")
