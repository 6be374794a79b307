"""Models of the site registry: which group company each web site belongs to."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, field_validator

from schemas.common import StrictModel

SITE_MAX_LENGTH = 200


class SiteRow(StrictModel):
    site: str = Field(min_length=1, max_length=SITE_MAX_LENGTH,
                      description="What shippers send in `site` (a host name or an "
                      "OpenTelemetry service.name), compared exactly.")
    company: str | None = Field(max_length=63, description="Company code; null removes the "
                                "site from the registry.")

    @field_validator("site")
    @classmethod
    def printable(cls, value: str) -> str:
        if value != value.strip() or any(ch < " " or ch == "\x7f" for ch in value):
            raise ValueError("site must not hold control characters or surrounding spaces")
        return value


class SiteRows(BaseModel):
    items: list[SiteRow] = Field(max_length=10_000)


class SiteOut(BaseModel):
    site: str
    company: str
    updated_by: str
    updated_at: datetime


class SiteList(BaseModel):
    items: list[SiteOut]


class SiteChange(BaseModel):
    site: str
    old_company: str | None
    company: str | None


class SiteUpdate(BaseModel):
    items: list[SiteOut]
    changes: list[SiteChange] = Field(description="Rows that changed; unchanged rows are left "
                                      "out.")
