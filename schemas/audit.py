"""Models of the audit trail as the API shows it."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, Field


class AuditQuery(BaseModel):
    actor: str | None = None
    action: str | None = None
    target: str | None = Field(None, description="Target id (a recording, customer, user…).")
    subject: UUID | None = Field(
        None, description="A customer id: every recorded read or change of that customer's "
        "data or of one of their recordings (who has seen it, when and why).")
    from_: AwareDatetime | None = Field(None, alias="from")
    to: AwareDatetime | None = None
    limit: int = Field(100, ge=1, le=1000)
    cursor: str | None = None


class AuditEventOut(BaseModel):
    seq: int
    at: datetime
    actor: str
    actor_kind: str
    role: str | None
    action: str
    target_type: str | None
    target_id: str | None
    company: str | None
    reason: str | None
    outcome: str
    request_id: str | None
    client_ip: str | None
    detail: dict[str, Any]
    company_ids: list[UUID] | None = Field(
        None, description="The companies the event concerns; none: a group-wide event.")
    subject_ids: list[UUID] | None = Field(
        None, description="Customers and recordings whose data the event read or changed.")
    hash: str


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    next_cursor: str | None = None


class AuditVerifyOut(BaseModel):
    ok: bool
    events: int
    first_bad: int | None
    problem: str | None = None
