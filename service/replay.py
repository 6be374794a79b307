"""Replay of recorded audio: reasoned, ranged, decrypted on the fly, verified and audited.

Audio only ever flows through this endpoint; no S3 URL or credential reaches a client.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import web

from schemas.recordings import ReplayQuery
from service import problems
from service.api import routes
from service.auth import audit, principal_of
from service.recordings import recording_id_of
from service.typedefs import KEYRING, OBJECTS, POOL, REQUEST_ID_KEY
from storage import keys
from storage import recordings as store
from storage.audio import CONTENT_TYPES
from storage.db import scoped
from storage.errors import Conflict, IntegrityError
from storage.recordings import Recording
from storage.sealed_audio import iter_plaintext

logger = logging.getLogger(__name__)

MAX_REASON = 500
WITHHELD = "the recording's stored audio failed verification and is withheld"


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


WindowKey = tuple[uuid.UUID, str, str]  # recording, principal, reason


class ReplayWindows:
    """The replay windows this process knows to be open.

    The first request of a window waits for its audit event before any byte leaves; the
    window's later requests only add their range to it, in the background (a crash may lose
    the last few ranges, never the audit event).
    """

    MARGIN_S = 30.0  # forget a window a little before the database closes it
    LIMIT = 10_000
    DRAIN_S = 10.0  # how long shutdown waits for range notes still being written

    def __init__(self) -> None:
        self._open: dict[WindowKey, float] = {}
        self._notes: set[asyncio.Task[None]] = set()

    def note_later(self, note: Coroutine[Any, Any, None]) -> None:
        """Write a range note in the background: the response (and the next request on its
        connection) need not wait for it."""
        task = asyncio.create_task(note)
        self._notes.add(task)
        task.add_done_callback(self._notes.discard)

    async def drain(self) -> None:
        if self._notes:
            await asyncio.wait(set(self._notes), timeout=self.DRAIN_S)

    def is_open(self, key: WindowKey) -> bool:
        until = self._open.get(key)
        if until is None:
            return False
        if until <= time.monotonic():
            del self._open[key]
            return False
        return True

    def remember(self, key: WindowKey, window: store.ReplayWindow) -> None:
        now = time.monotonic()
        if len(self._open) >= self.LIMIT:
            self._open = {k: t for k, t in self._open.items() if t > now}
        if len(self._open) < self.LIMIT:
            self._open[key] = now + window.open_for.total_seconds() - self.MARGIN_S


REPLAY_WINDOWS = web.AppKey("replay_windows", ReplayWindows)


async def replay_windows_ctx(app: web.Application) -> AsyncIterator[None]:
    windows = ReplayWindows()
    app[REPLAY_WINDOWS] = windows
    yield
    await windows.drain()


def _window_key(request: web.Request, recording_id: uuid.UUID, reason: str) -> WindowKey:
    principal = principal_of(request)
    return recording_id, f"{principal.kind}:{principal.account.id}", reason


async def _note_replay(
    conn: asyncpg.Connection, request: web.Request, recording: Recording, reason: str,
    byte_range: str,
) -> None:
    """One audit event per recording, principal and reason per window; later requests of
    the same listening session are summarised in the replay window row."""
    key = _window_key(request, recording.id, reason)

    async def open_event() -> int:
        return await audit(
            request, "recording.replay", target_type="recording",
            target_id=str(recording.id), company=recording.out.company, reason=reason,
            detail={"range": byte_range, "grouped_minutes": 10},
        )

    window = await store.note_replay(
        conn, recording, principal=key[1], reason=reason, byte_range=byte_range,
        open_event=open_event,
    )
    request.app[REPLAY_WINDOWS].remember(key, window)


async def _note_beside(
    request: web.Request, recording: Recording, reason: str, byte_range: str
) -> None:
    """Add this request's range to its open window, in the background."""
    try:
        async with scoped(request.app[POOL], principal_of(request).scope,
                          durable=False) as conn:
            await _note_replay(conn, request, recording, reason, byte_range)
    except Exception as exc:  # the window's audit event is on record already
        logger.warning("replay range not noted", extra={
            "recording_id": str(recording.id), "error": exc.__class__.__name__})


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


async def _first_piece(stream: AsyncGenerator[bytes, None]) -> bytes | None:
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return None


async def _abandon(
    first_piece: asyncio.Task[bytes | None] | None, stream: AsyncGenerator[bytes, None] | None
) -> None:
    """Drop a read started ahead of a request that failed before sending anything."""
    if first_piece is not None:
        first_piece.cancel()
        await asyncio.wait([first_piece])
        if not first_piece.cancelled():
            first_piece.exception()  # the request's own error is the one that counts
    if stream is not None:
        await stream.aclose()


async def _integrity_alarm(request: web.Request, recording: Recording, exc: IntegrityError) -> None:
    logger.error(
        "integrity alarm: stored audio failed verification",
        extra={"recording_id": str(recording.id), "error": exc.detail},
    )
    async with scoped(request.app[POOL], principal_of(request).scope) as conn:
        await store.mark_corrupt(conn, recording.id)
    await audit(request, "recording.integrity_alarm", target_type="recording",
                target_id=str(recording.id), company=recording.out.company,
                outcome="failure", detail={"error": exc.detail})


@routes.route(
    "GET", "/api/v1/recordings/{id}/audio", action="recording.replay", tag="recordings",
    summary="Stream the original audio (Range, If-Range, If-None-Match); reason required",
    query=ReplayQuery,
    response_content={"audio/*": {"schema": {"type": "string", "format": "binary"}}},
    extra_statuses=(206, 304, 409, 416),
)
async def replay_audio(request: web.Request) -> web.StreamResponse:
    recording_id = recording_id_of(request)
    reason = (request.query.get("reason") or "").strip()
    if not reason or len(reason) > MAX_REASON:
        raise web.HTTPBadRequest(text=f"say why the call is replayed: reason=1-{MAX_REASON} chars")
    principal = principal_of(request)
    # A window already open here has its audit event on record: this request's range is
    # noted in the background. Otherwise the replay is noted before any byte leaves.
    note_first = not request.app[REPLAY_WINDOWS].is_open(
        _window_key(request, recording_id, reason))
    stream: AsyncGenerator[bytes, None] | None = None
    first_piece: asyncio.Task[bytes | None] | None = None
    # One transaction reads the row with its owner key (and notes the replay); the replay
    # window is bookkeeping a crash may lose, so its commit does not wait for the disk.
    # Once the row is known the S3 read starts, overlapping the rest of the transaction.
    try:
        async with scoped(request.app[POOL], principal.scope, durable=False) as conn:
            recording, wrapped_owner_key = await store.get_for_replay(conn, recording_id)
            out = recording.out
            if out.state == "corrupt":
                raise Conflict(WITHHELD)
            size = out.size_bytes
            etag = f'"{out.sha256}"'
            plan = plan_reply(request, size, etag)
            if plan.span is not None:
                owner = keys.open_owner_key(
                    request.app[KEYRING].master_key, recording.key_owner,
                    recording.key_owner_id, wrapped_owner_key,
                )
                stream = iter_plaintext(
                    request.app[OBJECTS], recording.object_key,
                    data_key=keys.unwrap_data_key(owner, recording.id, recording.wrapped_key),
                    object_id=recording.id, size=size, start=plan.span.start,
                    end_inclusive=plan.span.end,
                    expected_sha256=out.sha256 if plan.span.length == size else None,
                )
                first_piece = asyncio.create_task(_first_piece(stream))
            if note_first:
                await _note_replay(conn, request, recording, reason, plan.summary(size))
    except BaseException:
        await _abandon(first_piece, stream)
        raise
    if not note_first:
        request.app[REPLAY_WINDOWS].note_later(
            _note_beside(request, recording, reason, plan.summary(size)))
    return await _reply(request, recording, plan, stream, first_piece)


async def _reply(
    request: web.Request, recording: Recording, plan: Plan,
    stream: AsyncGenerator[bytes, None] | None, first_piece: asyncio.Task[bytes | None] | None,
) -> web.StreamResponse:
    out = recording.out
    size = out.size_bytes
    headers = {
        "ETag": f'"{out.sha256}"',
        "Accept-Ranges": "bytes",
        "Content-Type": CONTENT_TYPES[out.format],
        "Content-Disposition": f'inline; filename="recording-{out.id}.{out.format}"',
        "Cache-Control": "private, no-cache",
    }
    if plan.status == 304:
        return web.Response(status=304, headers=headers)
    if plan.span is None or stream is None or first_piece is None:
        return problems.problem_response(
            416, "Range not satisfiable", f"the recording has {size} bytes",
            request_id=request.get(REQUEST_ID_KEY), headers={"Content-Range": f"bytes */{size}"},
        )
    span = plan.span
    response = web.StreamResponse(status=plan.status, headers=headers)
    if plan.ranged:
        response.headers["Content-Range"] = f"bytes {span.start}-{span.end}/{size}"
    response.content_length = span.length
    try:
        piece = await first_piece
        await response.prepare(request)
        if piece is not None:
            await response.write(piece)
            async for piece in stream:
                await response.write(piece)
    except IntegrityError as exc:
        await _integrity_alarm(request, recording, exc)
        if not response.prepared:
            raise Conflict(WITHHELD) from None
        if request.transport is not None:
            request.transport.abort()  # the client sees a truncated body, not a complete one
        return response
    finally:
        await _abandon(first_piece, stream)
    await response.write_eof()
    return response
