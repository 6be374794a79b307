"""Models of the audit trail as the API shows it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class AuditQuery(BaseModel):
    actor: str | None = None
    action: str | None = None
    target: str | None = Field(None, description="Target id (a recording, customer, user…).")
    from_: datetime | None = Field(None, alias="from")
    to: datetime | None = None
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
    hash: str


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    next_cursor: str | None = None


class AuditVerifyOut(BaseModel):
    ok: bool
    events: int
    first_bad: int | None
    problem: str | None = None
