"""The reading side of replay: which bytes a request gets (Range, If-Range, If-None-Match),
where a recording's stored audio lies, and a read of it under way (started ahead of
authentication for a credential that replayed the recording here lately)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from aiohttp import web

from service.http.auth import SESSION_COOKIE
from storage.objects import ObjectStore
from storage.recordings import Recording
from storage.sealed_audio import iter_plaintext


class Unsatisfiable(Exception):
    """The Range header asks for bytes the recording does not have."""


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def parse_range(header: str, size: int) -> ByteRange | None:
    """One `bytes=` range of RFC 9110; None to serve the whole file (absent, malformed or
    multi-range headers, which a server may ignore)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, sep, last = (p.strip() for p in spec.partition("-"))
    if not sep:
        return None
    if not first:
        if not last.isdigit():
            return None
        suffix = int(last)
        if suffix == 0:
            raise Unsatisfiable
        return ByteRange(max(0, size - suffix), size - 1)
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise Unsatisfiable
    return ByteRange(start, min(end, size - 1))


def _etag_matches(header: str, etag: str) -> bool:
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


@dataclass(frozen=True)
class Plan:
    """What one request gets: 304, 416, or these bytes (`ranged` answers 206)."""

    status: int
    span: ByteRange | None = None
    ranged: bool = False

    def summary(self, size: int) -> str:
        if self.status == 304:
            return "not-modified"
        if self.span is None:
            return "unsatisfiable"
        return f"bytes {self.span.start}-{self.span.end}/{size}"


def plan_reply(request: web.Request, size: int, etag: str) -> Plan:
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None and _etag_matches(if_none_match, etag):
        return Plan(304)
    range_header = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:
        range_header = None  # the client's copy is stale: send the whole file
    try:
        wanted = parse_range(range_header, size) if range_header else None
    except Unsatisfiable:
        return Plan(416)
    if wanted is None:
        return Plan(200, ByteRange(0, size - 1))
    return Plan(206, wanted, ranged=True)


@dataclass(frozen=True)
class Locator:
    """Where a recording's stored audio lies and what it is; fixed once it is stored."""

    object_key: str
    size: int
    sha256: str

    @classmethod
    def of(cls, recording: Recording) -> Locator:
        return cls(recording.object_key, recording.size_bytes, recording.sha256)

    @property
    def etag(self) -> str:
        return f'"{self.sha256}"'


class Locators:
    """Locators of the recordings that a credential (a bearer token or a session) replayed
    here lately, so that the same listener's next request starts its S3 read while the
    caller is authenticated and the row is read. What is read ahead is ciphertext only:
    nothing is opened or sent before the row, read in the caller's scope, agrees. Only a
    credential that has read the recording before starts such a read."""

    LIMIT = 10_000

    def __init__(self) -> None:
        self._known: OrderedDict[tuple[bytes, uuid.UUID], Locator] = OrderedDict()

    def get(self, credential: bytes, recording_id: uuid.UUID) -> Locator | None:
        return self._known.get((credential, recording_id))

    def remember(self, credential: bytes, recording_id: uuid.UUID, locator: Locator) -> None:
        key = (credential, recording_id)
        self._known[key] = locator
        self._known.move_to_end(key)
        if len(self._known) > self.LIMIT:
            self._known.popitem(last=False)


def credential_of(request: web.Request) -> bytes | None:
    """A digest of the request's credential (never the credential itself), if it has one."""
    presented = request.headers.get("Authorization") or request.cookies.get(SESSION_COOKIE)
    return hashlib.sha256(presented.encode()).digest() if presented else None


@dataclass
class StoredRead:
    """A read of stored audio under way: the S3 read starts at once and fills a bounded
    read-ahead; its segments are opened once `data_key` is set."""

    locator: Locator
    span: ByteRange
    data_key: asyncio.Future[bytes]
    stream: AsyncGenerator[bytes, None]
    first_piece: asyncio.Task[bytes | None]

    @classmethod
    def start(
        cls, objects: ObjectStore, recording_id: uuid.UUID, locator: Locator, span: ByteRange
    ) -> StoredRead:
        data_key: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        stream = iter_plaintext(
            objects, locator.object_key, data_key=data_key, object_id=recording_id,
            size=locator.size, start=span.start, end_inclusive=span.end,
        )
        return cls(locator, span, data_key, stream, asyncio.create_task(cls._first(stream)))

    @staticmethod
    async def _first(stream: AsyncGenerator[bytes, None]) -> bytes | None:
        try:
            return await anext(stream)
        except StopAsyncIteration:
            return None

    async def abandon(self) -> None:
        """Drop the read (the request failed before sending anything, or is done)."""
        self.first_piece.cancel()
        await asyncio.wait([self.first_piece])
        if not self.first_piece.cancelled():
            self.first_piece.exception()  # the request's own error is the one that counts
        await self.stream.aclose()
