"""Replay of recorded audio: reasoned, ranged, decrypted on the fly, verified and audited.

Audio only ever flows through this endpoint; no S3 URL or credential reaches a client.
Every stored segment is AES-GCM-authenticated with the recording's id, its index and whether
it is the last one bound in, so a segment that was altered, moved, swapped in from another
recording or cut short fails before any of its bytes leave. The whole-file SHA-256 is not
recomputed here: downloads that hand the client a digest check it, and the scrub
(service/recordings/scrub.py) re-verifies every stored object on a schedule.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncGenerator

from aiohttp import web
from prometheus_client import Counter

from schemas.recordings import ReplayQuery
from service.http import problems
from service.http.api import RouteTable
from service.http.auth import actor_of, principal_of
from service.http.keys import (
    AHEAD_KEY,
    KEYRING,
    LOCATORS,
    OBJECTS,
    POOL,
    REPLAY_WINDOWS,
    REQUEST_ID_KEY,
)
from service.recordings import integrity
from service.recordings.lookup import WITHHELD, recording_id_of, stated_reason
from service.recordings.replay_reads import (
    Locator,
    Plan,
    StoredRead,
    credential_of,
    plan_reply,
)
from service.recordings.windows import note_replay, window_key
from storage import keys
from storage import recordings as store
from storage.audio import CONTENT_TYPES
from storage.db import scoped
from storage.errors import Conflict, IntegrityError
from storage.recordings import Recording

routes = RouteTable()

logger = logging.getLogger(__name__)

SMALL_BODY = 256 * 1024  # ranges up to this size are sent whole, with their headers
REPLAYED_BYTES = Counter("tallenne_replayed_bytes", "Audio bytes sent whole to listeners")


def read_ahead(request: web.Request) -> StoredRead | None:
    """Before authentication: start the S3 read of a recording this request's credential
    replayed here lately (see `Locators`)."""
    credential = credential_of(request)
    try:
        recording_id = uuid.UUID(request.match_info["id"])
    except ValueError:
        return None
    known = request.app[LOCATORS].get(credential, recording_id) if credential else None
    if known is None or not request.query.get("reason"):
        return None
    plan = plan_reply(request, known.size, known.etag)
    if plan.span is None:
        return None
    return StoredRead.start(request.app[OBJECTS], recording_id, known, plan.span)


@routes.route(
    "GET", "/api/v1/recordings/{id}/audio", action="recording.replay", tag="recordings",
    summary="Stream the original audio (Range, If-Range, If-None-Match); reason required",
    query=ReplayQuery,
    response_content={"audio/*": {"schema": {"type": "string", "format": "binary"}}},
    extra_statuses=(206, 304, 409, 410, 416),
    before_auth=read_ahead,
)
async def replay_audio(request: web.Request) -> web.StreamResponse:
    # A read started ahead (see `read_ahead`) is used only if the row agrees with it.
    ahead = request.pop(AHEAD_KEY, None)
    read = ahead if isinstance(ahead, StoredRead) else None
    try:
        recording_id = recording_id_of(request)
        reason = stated_reason(request)
        principal = principal_of(request)
        actor = actor_of(request)
        # A window already open here has its audit event on record: this request's range
        # is noted in the background. Otherwise the replay is noted before any byte leaves.
        note_first = not request.app[REPLAY_WINDOWS].is_open(
            window_key(actor, recording_id, reason))
        # One self-scoping statement reads the row with its owner key; the S3 read starts
        # once it is known, unless it started ahead.
        async with request.app[POOL].acquire() as conn:
            recording, owner_kek_version, wrapped_owner_key = await store.get_for_replay(
                conn, principal.scope, recording_id)
        if recording.state == "corrupt":
            raise Conflict(WITHHELD)
        locator = Locator.of(recording)
        credential = credential_of(request)
        if credential is not None:
            request.app[LOCATORS].remember(credential, recording.id, locator)
        plan = plan_reply(request, locator.size, locator.etag)
        if read is not None and (read.locator, read.span) != (locator, plan.span):
            await read.abandon()
            read = None
        if plan.span is not None:
            if read is None:
                read = StoredRead.start(request.app[OBJECTS], recording.id, locator, plan.span)
            owner = keys.open_owner_key(
                request.app[KEYRING].masters, recording.key_owner, recording.key_owner_id,
                owner_kek_version, wrapped_owner_key,
            )
            read.data_key.set_result(
                keys.unwrap_data_key(owner, recording.id, recording.wrapped_key))
        if note_first:
            # The replay window is bookkeeping a crash may lose: its commit does not wait
            # for the disk. Its audit event is committed before any byte leaves.
            async with scoped(request.app[POOL], principal.scope, durable=False) as conn:
                await note_replay(conn, request.app[REPLAY_WINDOWS], actor, recording,
                                  reason, plan.summary(recording.size_bytes))
    except BaseException:
        if read is not None:
            await read.abandon()
        raise
    if not note_first:
        request.app[REPLAY_WINDOWS].note_later(
            actor, recording, reason, plan.summary(recording.size_bytes))
    return await _reply(request, recording, plan, read)


async def _reply(
    request: web.Request, recording: Recording, plan: Plan, read: StoredRead | None
) -> web.StreamResponse:
    size = recording.size_bytes
    headers = {
        "ETag": f'"{recording.sha256}"',
        "Accept-Ranges": "bytes",
        "Content-Type": CONTENT_TYPES[recording.format],
        "Content-Disposition": f'inline; filename="recording-{recording.id}.{recording.format}"',
        "Cache-Control": "private, no-cache",
    }
    if plan.status == 304:
        return web.Response(status=304, headers=headers)
    if plan.span is None or read is None:
        return problems.problem_response(
            416, "Range not satisfiable", f"the recording has {size} bytes",
            request_id=request.get(REQUEST_ID_KEY), headers={"Content-Range": f"bytes */{size}"},
        )
    span = plan.span
    if plan.ranged:
        headers["Content-Range"] = f"bytes {span.start}-{span.end}/{size}"
    response: web.StreamResponse | None = None
    try:
        if span.length <= SMALL_BODY:
            # A player's typical range: read whole, then sent with its headers in one write.
            pieces = [piece async for piece in _pieces(read)]
            REPLAYED_BYTES.inc(span.length)
            return web.Response(status=plan.status, headers=headers, body=b"".join(pieces))
        response = web.StreamResponse(status=plan.status, headers=headers)
        response.content_length = span.length
        async for piece in _pieces(read):
            if not response.prepared:
                await response.prepare(request)  # only once the first piece is verified
            await response.write(piece)
    except IntegrityError as exc:
        return await integrity.cut_short(request, response or web.StreamResponse(),
                                         recording.id, recording.company, exc.detail,
                                         found_by="replay")
    finally:
        await read.abandon()
    await response.write_eof()
    REPLAYED_BYTES.inc(span.length)
    return response


async def _pieces(read: StoredRead) -> AsyncGenerator[bytes, None]:
    piece = await read.first_piece
    if piece is None:
        return
    yield piece
    async for piece in read.stream:
        yield piece
