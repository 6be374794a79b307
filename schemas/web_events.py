"""Models of web-site usage events: one line of a pushed batch, the batch report, queries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from schemas.common import StrictModel
from schemas.ip import is_ip_address

EARLIEST_EVENT = datetime(2000, 1, 1, tzinfo=UTC)
FUTURE_TOLERANCE = timedelta(days=1)


class WebEventLine(BaseModel):
    """One event as a log shipper sends it. Unknown fields are ignored: shippers add their
    own (host, program, …) and a batch must not fail for them."""

    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)

    ts: datetime = Field(description="When it happened, RFC 3339 with offset.")
    site: str = Field(min_length=1, max_length=200)
    event: str = Field(min_length=1, max_length=200)
    url: str | None = Field(None, max_length=8192)
    session_id: str | None = Field(None, max_length=200)
    customer_number: str | None = Field(None, min_length=1, max_length=64)
    company: str | None = Field(None, max_length=63)
    ip: str | None = Field(None, max_length=64)
    user_agent: str | None = Field(None, max_length=2048)
    referrer: str | None = Field(None, max_length=8192)
    attributes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("ts")
    @classmethod
    def sane_time(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("ts must carry a UTC offset")
        if value < EARLIEST_EVENT or value > datetime.now(UTC) + FUTURE_TOLERANCE:
            raise ValueError("ts is before 2000 or in the future")
        return value

    @field_validator("ip")
    @classmethod
    def an_address(cls, value: str | None) -> str | None:
        if value in (None, "", "-"):
            return None
        if not is_ip_address(value):
            raise ValueError("ip is not an IPv4 or IPv6 address")
        return value


class RejectedLine(BaseModel):
    line: int = Field(description="1-based line (NDJSON) or element (JSON array) number.")
    error: str


MAX_REPORTED_REJECTIONS = 1000
"""Rejected lines described per batch; past it they are only counted (`rejected_total`)."""


class BatchReport(BaseModel):
    accepted: int
    rejected: list[RejectedLine] = Field(
        description=f"The first {MAX_REPORTED_REJECTIONS:,} rejected lines, each with why.")
    rejected_total: int = Field(
        0, description="Every rejected line, counted (also those past the first "
        f"{MAX_REPORTED_REJECTIONS:,} that `rejected` lists).")


class WebEventQuery(StrictModel):
    customer_id: UUID | None = None
    site: str | None = None
    event: str | None = None
    from_: AwareDatetime | None = Field(None, alias="from")
    to: AwareDatetime | None = None
    limit: int = Field(100, ge=1, le=1000)
    cursor: str | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class WebEventOut(BaseModel):
    id: int
    ts: datetime
    company: str
    site: str
    event: str
    url: str | None
    session_id: str | None
    customer_number: str | None
    customer_id: UUID | None
    ip: str | None = Field(description="Truncated to /24 (IPv4) or /48 (IPv6).")
    user_agent: str | None
    referrer: str | None
    attributes: dict[str, Any]
    received_at: datetime


class WebEventPage(BaseModel):
    items: list[WebEventOut]
    next_cursor: str | None = None
