"""Time-coded notes and bookmarks on a call."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Self
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.personal_id import has_personal_id_shape

Visibility = Literal["private", "team"]


class AnnotationIn(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    at_s: float = Field(ge=0, le=86_400, description="Where in the call, in seconds.")
    end_s: float | None = Field(None, ge=0, le=86_400,
                                description="End of the annotated span; none for a bookmark.")
    text: str = Field(min_length=1, max_length=2000)
    visibility: Visibility = Field(
        "team", description="private: its author only; team: everyone who may see the call.")

    @field_validator("text")
    @classmethod
    def _no_identity_code(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("must not be blank")
        if has_personal_id_shape(text):
            raise ValueError("must not contain a personal identity code")
        return text.strip()

    @model_validator(mode="after")
    def _ends_after_start(self) -> Self:
        if self.end_s is not None and self.end_s < self.at_s:
            raise ValueError("end_s is before at_s")
        return self


class AnnotationOut(BaseModel):
    id: UUID
    recording_id: UUID
    author: str
    at_s: float
    end_s: float | None
    text: str
    visibility: Visibility
    created_at: datetime


class AnnotationList(BaseModel):
    items: list[AnnotationOut]
