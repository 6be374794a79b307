"""Models shared by every part of the API: the problem document and paged lists."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(description="Where the problem is: body/query, then the field.")
    msg: str = Field(description="What is wrong there.")


class Problem(BaseModel):
    """RFC 9457 problem details; the body of every 4xx and 5xx response."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[ValidationIssue] | None = None
    request_id: str | None = None


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(None, description="Opaque cursor of the next page.")


class StrictModel(BaseModel):
    """Request bodies refuse unknown fields, so a typo is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")
