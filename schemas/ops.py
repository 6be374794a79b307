"""Models of the operational endpoints."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    postgres: str
    s3: str
    audit_checkpoint_lock: str | None = Field(
        None, description="Whether the checkpoint bucket refused, at start-up, to delete a "
        "locked probe object: `enforced`, or `not enforced: <why>`.")
