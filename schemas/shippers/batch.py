"""What a decoded shipper request is: web-event line dicts and per-record errors, in request
order, within the bounds a caller sets."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from schemas.shippers.errors import UnsupportedMediaType
from schemas.web_events import mask_identity_codes

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Limits:
    """Bounds of one request. `max_body_bytes` caps the body once decompressed (the decoders
    that decompress themselves, Loki's snappy, check it before inflating anything)."""

    max_body_bytes: int = 32 * 1024**2
    max_records: int = 100_000
    max_line_bytes: int = 64 * 1024


class MappedLine(NamedTuple):
    """A record turned into the dict `schemas.web_events.WebEventLine` validates."""

    record: int  # 1-based position in the request (OTLP: resource → scope → record order)
    line: dict[str, Any]


class RecordError(NamedTuple):
    """A record that could not be mapped; its neighbours are unaffected."""

    record: int
    error: str


@dataclass
class DecodedBatch:
    lines: list[MappedLine] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.lines) + len(self.errors)


class RecordRejected(ValueError):
    """Raised inside a mapper for one record; the decoder turns it into a RecordError."""


def media_type(content_type: str | None, accepted: dict[str, str], endpoint: str) -> str:
    """The format key for a Content-Type header (parameters such as charset ignored)."""
    bare = (content_type or "").split(";", 1)[0].strip().lower()
    try:
        return accepted[bare]
    except KeyError:
        speaks = " or ".join(sorted(accepted))
        shown = mask_identity_codes(bare) or "none"
        raise UnsupportedMediaType(
            f"{endpoint} takes {speaks}, not content type {shown[:100]!r}"
        ) from None


def time_from_unix_nanos(nanos: int) -> datetime:
    return EPOCH + timedelta(microseconds=nanos // 1000)


def text_without_nul(value: str, where: str) -> str:
    # PostgreSQL text and jsonb cannot hold NUL; protobuf strings can.
    if "\x00" in value:
        raise RecordRejected(f"{where} contains a NUL character")
    return value
