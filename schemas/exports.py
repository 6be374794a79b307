"""Export jobs: the request (a recording filter, a reason, a format and, when the export
leaves the controller, its recipient), the job's progress, and what "held back" means."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field, field_validator, model_validator

from schemas.common import StrictModel
from schemas.disclosures import DisclosurePurpose
from schemas.free_text import FreeText
from schemas.recordings import RecordingFilter

ExportFormat = Literal["zip", "vcon", "s3"]
ExportState = Literal["queued", "running", "done", "failed", "cancelled"]

HELD_BACK_RULE = (
    "A call is held back (never exported, counted in `held_back` only) while it is under a "
    "legal hold (restriction of processing), when its stored audio failed verification, and, "
    "for a marketing disclosure, when its customer has prohibited that use. Erased calls are "
    "never exported."
)


class ExportFilter(RecordingFilter):
    """The filters of `GET /api/v1/recordings`, without paging."""


class ExportIn(StrictModel):
    filter: ExportFilter = Field(default_factory=ExportFilter)
    reason: FreeText = Field(min_length=1, max_length=500,
                             description="Why the calls are exported.")
    format: ExportFormat = "zip"
    recipient: FreeText | None = Field(
        None, min_length=1, max_length=300,
        description="Who receives the export when it leaves the controller (a disclosure).")
    recipient_country: str | None = Field(
        None, pattern=r"^[A-Za-z]{2}$",
        description="ISO 3166-1 alpha-2 of the recipient; must be in the EU/EEA.")
    legal_basis: FreeText | None = Field(None, min_length=1, max_length=500)
    purpose: DisclosurePurpose = Field(
        "subcontractor", description="Purpose of the disclosure, when there is a recipient.")
    recipient_public_key: str | None = Field(
        None, pattern=r"^age1[02-9ac-hj-np-z]{58}$",
        description="age X25519 public key; the result is encrypted to it.")

    @field_validator("reason")
    @classmethod
    def _reason_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    @model_validator(mode="after")
    def _recipient_complete(self) -> ExportIn:
        given = [self.recipient, self.recipient_country, self.legal_basis]
        if any(v is not None for v in given) and any(v is None for v in given):
            raise ValueError("an export to a recipient needs recipient, recipient_country "
                             "and legal_basis")
        if self.recipient_country is not None:
            self.recipient_country = self.recipient_country.upper()
        if (self.recipient is not None and self.purpose == "debt_collection"
                and self.filter.customer_id is None):
            raise ValueError("debt collection discloses a single customer: give "
                             "filter.customer_id")
        return self

    @property
    def leaves_controller(self) -> bool:
        return self.recipient is not None


class ExportCreated(BaseModel):
    id: UUID


class ExportOut(BaseModel):
    id: UUID
    state: ExportState
    done: int = Field(description="Calls handled so far (written or held back).")
    total: int | None = Field(description="Calls the filter chose; null until planned.")
    bytes: int = Field(description="Bytes of the files written so far.")
    error: str | None
    format: ExportFormat
    held_back: int = Field(description=HELD_BACK_RULE)
    created_at: datetime
    finished_at: datetime | None
    expires_at: datetime
