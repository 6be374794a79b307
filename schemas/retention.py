"""Models of retention policies, legal holds and purges."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field

from schemas.common import StrictModel
from schemas.free_text import FreeText

DataKind = Literal["recording", "web_event", "customer"]
CASE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"


class RetentionPolicy(StrictModel):
    company: str = Field(description="Company code.")
    kind: DataKind
    purpose: str = Field(
        min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$",
        description="transaction_verification or quality (recordings), site_usage (web "
        "events), customer_relationship (customers).",
    )
    keep_days: int = Field(gt=0, le=36500, description="Days a record is kept.")


class RetentionPolicyList(BaseModel):
    items: list[RetentionPolicy]


class RetentionPolicyChange(BaseModel):
    company: str
    kind: DataKind
    purpose: str
    old_keep_days: int | None
    keep_days: int
    records_moved: int = Field(description="Records whose retain_until was recomputed.")


class RetentionPolicyUpdate(BaseModel):
    items: list[RetentionPolicy]
    changes: list[RetentionPolicyChange]


class LegalHoldIn(StrictModel):
    case: str = Field(pattern=CASE_PATTERN, description="The case id, e.g. a court file number.")
    reason: FreeText = Field(min_length=3, max_length=1000)
    recording_ids: list[UUID] = Field(default_factory=list, max_length=10000)
    customer_ids: list[UUID] = Field(default_factory=list, max_length=10000)


class LegalHoldOut(BaseModel):
    case: str
    reason: str
    created_by: str
    created_at: datetime
    released_by: str | None = None
    released_at: datetime | None = None
    recording_ids: list[UUID]
    customer_ids: list[UUID]


class LegalHoldList(BaseModel):
    items: list[LegalHoldOut]


class PurgeIn(StrictModel):
    dry_run: bool = Field(True, description="Preview only: counts, touches nothing.")


class PurgeBucket(BaseModel):
    company: str
    kind: DataKind
    items: int
    bytes: int


class OldestItem(BaseModel):
    kind: DataKind
    id: str
    company: str
    retain_until: datetime


class PurgeReport(BaseModel):
    """A preview (dry run) or the progress and result of a real run."""

    id: UUID | None = None
    dry_run: bool
    state: str
    as_of: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expired: list[PurgeBucket] = Field(
        default_factory=list, description="Expired items by company and kind (a preview)."
    )
    purged: list[PurgeBucket] = Field(
        default_factory=list, description="Items purged so far by company and kind."
    )
    held_back: int = Field(0, description="Expired items kept because of a legal hold.")
    oldest: OldestItem | None = None
    partitions_dropped: list[str] = Field(default_factory=list)
    error: str | None = None
