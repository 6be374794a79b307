"""The access report (right of access), its request, and customer erasure."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, Field, model_validator

from schemas.common import StrictModel
from schemas.customers import Address, Prohibition
from schemas.free_text import FreeText

VerifiedBy = Literal["in_person", "signed_letter", "strong_electronic_id"]


class AccessReportQuery(StrictModel):
    verified_by: VerifiedBy | None = Field(
        None, description="How the requester's identity was verified; records a new request."
    )
    request_received_at: AwareDatetime | None = Field(
        None, description="When the request reached the controller; defaults to now."
    )
    request_id: UUID | None = Field(
        None, description="Answer an already recorded request instead of recording a new one."
    )

    @model_validator(mode="after")
    def new_or_recorded(self) -> AccessReportQuery:
        if (self.verified_by is None) == (self.request_id is None):
            raise ValueError("give verified_by (a new request) or request_id (a recorded one)")
        return self


class AccessExportQuery(StrictModel):
    request_id: UUID = Field(
        description="The recorded access request of this customer that the copies answer "
        "(its id from the access report).")
    reason: FreeText = Field(min_length=3, max_length=500,
                             description="Why the audio is exported; recorded in the audit"
                             " trail.")


class AccessRequestIn(StrictModel):
    """A verified access request taken (by customer service or the DPO): the DPO answers it
    with `GET …/access-report?request_id=`."""

    verified_by: VerifiedBy = Field(description="How the requester's identity was verified.")
    received_at: AwareDatetime | None = Field(
        None, description="When the request reached the controller; defaults to now.")


class AccessRequestOut(BaseModel):
    id: UUID
    customer_id: UUID
    verified_by: VerifiedBy
    requested_by: str
    received_at: datetime
    due_at: datetime


class ReportCustomer(BaseModel):
    id: UUID
    name: str | None
    personal_id: str | None
    address: Address
    email: str | None
    phone: str | None
    created_at: datetime
    updated_at: datetime


class ReportMembership(BaseModel):
    company: str
    company_name: str
    customer_number: str
    active: bool
    since: datetime


class ReportHistoryEntry(BaseModel):
    company: str | None
    change: str
    changed_fields: list[str]
    old_values: dict[str, Any] | None
    changed_at: datetime


class ReportRecording(BaseModel):
    id: UUID
    company: str
    external_id: str
    started_at: datetime
    ended_at: datetime
    direction: str
    queue: str | None
    caller: str | None
    callee: str | None
    purpose: str
    format: str
    duration_s: float
    size_bytes: int
    sha256: str
    retain_until: datetime | None
    legal_holds: list[str]


class ReportEvaluation(BaseModel):
    recording_id: UUID
    company: str
    form: str
    scores: dict[str, Any]
    comment: str | None
    created_at: datetime


class ReportAnnotation(BaseModel):
    recording_id: UUID
    company: str
    at_s: float = Field(description="Where in the call the note points, in seconds.")
    end_s: float | None
    text: str
    created_at: datetime


class ReportWebEvent(BaseModel):
    ts: datetime
    company: str
    site: str
    event: str
    url: str | None
    ip: str | None
    user_agent: str | None


class ReportWebEvents(BaseModel):
    total: int
    items: list[ReportWebEvent]
    note: str | None = None


class ReportDisclosure(BaseModel):
    id: UUID
    company: str
    recipient: str
    recipient_country: str
    purpose: str
    legal_basis: str
    fields: list[str]
    disclosed_at: datetime


class DataKind(BaseModel):
    """What the register statement says of one kind of data held."""

    kind: str
    title: str
    purpose: str
    source: str
    recipients: str
    retention: str


class AccessReport(BaseModel):
    request: AccessRequestOut
    due_at: datetime = Field(description="One month from the request: the statutory deadline.")
    generated_at: datetime
    customer: ReportCustomer
    memberships: list[ReportMembership]
    history: list[ReportHistoryEntry]
    recordings: list[ReportRecording]
    evaluations: list[ReportEvaluation]
    annotations: list[ReportAnnotation] = Field(
        description="Notes on the customer's calls (team and private), without their authors.")
    web_events: ReportWebEvents
    prohibitions: list[Prohibition]
    disclosures: list[ReportDisclosure]
    legal_holds: list[str]
    data_kinds: list[DataKind]


class ErasureIn(StrictModel):
    reason: FreeText = Field(min_length=1, max_length=500)


class ErasureOut(BaseModel):
    customer_id: UUID
    erased_at: datetime
    recordings_erased: int
    web_events_unlinked: int
