"""Evaluation forms: their criteria, and the rule of which scores fit a form."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field, field_validator

from schemas.common import StrictModel
from schemas.free_text import FreeText

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
KEY_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
# As companies.code of migration 001.
COMPANY_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"
MAX_CRITERIA = 50


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value.strip()


Text = Annotated[str, AfterValidator(_not_blank)]


class Criterion(StrictModel):
    key: FreeText = Field(pattern=KEY_PATTERN,
                          description="Stable key of the criterion in an evaluation's scores.")
    label: Text = Field(min_length=1, max_length=200, description="What the evaluator reads.")
    max_score: int = Field(ge=1, le=100, description="Scores run from 0 to this.")


class _FormContent(StrictModel):
    title: Text = Field(min_length=1, max_length=200)
    description: str | None = Field(None, max_length=2000)
    criteria: list[Criterion] = Field(min_length=1, max_length=MAX_CRITERIA)

    @field_validator("description")
    @classmethod
    def _blank_description_is_none(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return value.strip()

    @field_validator("criteria")
    @classmethod
    def _keys_are_unique(cls, criteria: list[Criterion]) -> list[Criterion]:
        seen: set[str] = set()
        for criterion in criteria:
            if criterion.key in seen:
                raise ValueError(f"the criterion key {criterion.key!r} appears twice")
            seen.add(criterion.key)
        return criteria


class FormIn(_FormContent):
    """A new form."""

    name: FreeText = Field(pattern=NAME_PATTERN,
                           description="Stable key of the form; evaluations name it in `form`.")
    company: str | None = Field(
        None, pattern=COMPANY_PATTERN,
        description="Company code of a company's own form; absent: a group-wide form.",
    )


class FormUpdate(_FormContent):
    """The whole form as it should be from now on. Changed criteria make a new version;
    evaluations keep the version they were scored with."""

    active: bool | None = Field(None, description="Absent: unchanged.")


class FormOut(BaseModel):
    name: str
    title: str
    description: str | None
    company: str | None = Field(description="Company code; null for a group-wide form.")
    version: int = Field(description="Version of these criteria.")
    current_version: int = Field(description="The version new evaluations are scored with.")
    criteria: list[Criterion]
    active: bool
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime

    def criterion(self, key: str) -> Criterion | None:
        return next((c for c in self.criteria if c.key == key), None)


class FormList(BaseModel):
    items: list[FormOut]


class FormQuery(StrictModel):
    active: bool | None = Field(None, description="Only active (true) or inactive (false) forms.")
    company: str | None = Field(None, pattern=COMPANY_PATTERN,
                                description="Only forms usable for this company's calls.")


class FormVersionQuery(StrictModel):
    version: int | None = Field(None, ge=1, description="An earlier version; absent: current.")


def score_errors(form: FormOut, scores: dict[str, int]) -> Sequence[tuple[list[str], str]]:
    """Where `scores` do not fit the form: every criterion scored, none unknown, each score
    within 0..max_score. Empty when they fit."""
    errors: list[tuple[list[str], str]] = []
    for criterion in form.criteria:
        score = scores.get(criterion.key)
        if score is None:
            errors.append((["body", "scores", criterion.key],
                           f"the criterion {criterion.key!r} is not scored"))
        elif not 0 <= score <= criterion.max_score:
            errors.append((["body", "scores", criterion.key],
                           f"the score of {criterion.key!r} must be between 0 and"
                           f" {criterion.max_score}"))
    for key in scores:
        if form.criterion(key) is None:
            errors.append((["body", "scores", key],
                           f"the form {form.name!r} has no criterion {key!r}"))
    return errors
