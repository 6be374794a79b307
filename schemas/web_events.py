"""Models of web-site usage events: one line of a pushed batch, the batch report, queries;
and what of a line may be stored (no NUL, no lone surrogate, no NaN, identity codes masked)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.common import StrictModel
from schemas.free_text import contains_personal_id
from schemas.ip import is_ip_address

EARLIEST_EVENT = datetime(2000, 1, 1, tzinfo=UTC)
FUTURE_TOLERANCE = timedelta(days=1)

IDENTITY_CODE_MASK = "[henkilötunnus]"
"""What an identity code in a stored web-event string, or in a rejection text, becomes."""
# Candidates only (eleven characters between non-alphanumerics); whether one is shaped like
# an identity code is decided by schemas/free_text.py, the one place that rule lives.
_CODE_CANDIDATE = re.compile(
    r"(?<![0-9A-Za-z])[0-9]{6}[-+A-Za-z][0-9]{3}[0-9A-Za-z](?![0-9A-Za-z])")
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
# A quick test that lets nearly every string through untouched; a hit is looked at closely.
# No edges: in serialised JSON an escape (\n131052-…) can hide a code's left edge.
_MAYBE_CODE = re.compile(r"[0-9]{6}[-+A-Za-z][0-9]{3}")
_SHOWN_KEY = 40
# Not ASCII-escaped, so a lone surrogate stays visible to the quick test (a valid pair is one
# character); jsonb has no NaN or infinity.
_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def mask_identity_codes(text: str) -> str:
    """The text with everything shaped like an identity code (valid or mistyped, as
    `contains_personal_id` judges) replaced by IDENTITY_CODE_MASK."""
    if _CODE_CANDIDATE.search(text) is None:
        return text
    return _CODE_CANDIDATE.sub(
        lambda m: IDENTITY_CODE_MASK if contains_personal_id(m[0]) else m[0], text)


def _storable_text(text: str, where: Sequence[str | int]) -> str:
    # PostgreSQL text and jsonb hold neither NUL nor a lone surrogate (not encodable as
    # UTF-8); JSON parsers other than pydantic's let both through.
    if "\x00" in text:
        raise ValueError(f"{_path(where)} contains a NUL character (\\u0000)")
    if _LONE_SURROGATE.search(text) is not None:
        raise ValueError(f"{_path(where)} contains a lone surrogate (\\ud800-\\udfff),"
                         " which is not Unicode text")
    return mask_identity_codes(text)


def _needs_care(text: str, nul: str) -> bool:
    return (nul in text or _LONE_SURROGATE.search(text) is not None
            or _MAYBE_CODE.search(text) is not None)


def attributes_json(attributes: dict[str, Any]) -> str:
    """A line's attributes as the JSON text stored in jsonb: identity codes masked in names
    and string values at any depth; ValueError naming where a NUL, a lone surrogate, NaN or
    an infinity is (any of them would fail the whole batch in PostgreSQL)."""
    try:
        serialised = _JSON.encode(attributes)
    except ValueError:
        serialised = None  # NaN or infinity somewhere: the walk says where
    if serialised is not None and not _needs_care(serialised, "\\u0000"):
        return serialised
    stored: str = _JSON.encode(_storable_json(attributes, ["attributes"]))
    return stored


def _storable_json(value: Any, where: list[str | int]) -> Any:
    """An attribute value as it may be stored in jsonb: strings checked and masked (keys
    too), NaN and infinities refused."""
    if isinstance(value, str):
        return _storable_text(value, where)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{_path(where)} is NaN or infinite, which JSON cannot hold")
    if isinstance(value, dict):
        stored: dict[str, Any] = {}
        for key, item in value.items():
            where.append(key)
            stored[_storable_text(key, where)] = _storable_json(item, where)
            where.pop()
        return stored
    if isinstance(value, list):
        items = []
        for index, item in enumerate(value):
            where.append(index)
            items.append(_storable_json(item, where))
            where.pop()
        return items
    return value


def _path(where: Sequence[str | int]) -> str:
    """`attributes['form'][0]`: keys masked, escaped by repr (a NUL or a lone surrogate
    shows as its escape) and shortened."""
    head, *steps = where
    shown = [str(head)]
    for step in steps:
        if isinstance(step, str):
            key = mask_identity_codes(step)
            key = key if len(key) <= _SHOWN_KEY else key[:_SHOWN_KEY] + "…"
            shown.append(f"[{key!r}]")
        else:
            shown.append(f"[{step}]")
    return "".join(shown)


# The string fields of a line checked and masked like its attributes (`ip` is an address).
_TEXT_FIELDS = ("site", "event", "url", "session_id", "customer_number", "company",
                "user_agent", "referrer")


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

    @model_validator(mode="after")
    def storable_text(self) -> WebEventLine:
        """No NUL or lone surrogate reaches PostgreSQL (it would fail the whole batch there),
        and no identity code is stored: each is masked. `attributes` go through
        `attributes_json` on their way to storage."""
        given = [text for name in _TEXT_FIELDS if (text := getattr(self, name)) is not None]
        if not _needs_care("\n".join(given), "\x00"):
            return self
        for name in _TEXT_FIELDS:
            text = getattr(self, name)
            if text is not None:
                setattr(self, name, _storable_text(text, [name]))
        return self


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
