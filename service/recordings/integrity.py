"""The integrity alarm: stored audio that failed verification is marked `corrupt` (withheld
from replay and export from then on), logged as an error and counted in /metrics. Whoever
found it during a request (replay, a vCon, a download) calls `alarm_in_request`; the scrub
writes its audit event with its own actor."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterable

import asyncpg
from aiohttp import web
from prometheus_client import Counter

from service.http.auth import Actor, actor_of
from service.http.keys import POOL
from service.recordings.lookup import WITHHELD
from storage import recordings as store
from storage.db import Scope, scoped
from storage.errors import Conflict

logger = logging.getLogger(__name__)

INTEGRITY_ALARMS = Counter(
    "tallenne_integrity_alarms",
    "Recordings whose stored audio failed verification, by what found it", ["found_by"])
ALARM_ACTION = "recording.integrity_alarm"


def raise_alarm(recording_id: uuid.UUID, error: str, *, found_by: str) -> None:
    """The error log line and the metric (the caller marks the recording and audits)."""
    logger.error(
        "integrity alarm: stored audio failed verification",
        extra={"recording_id": str(recording_id), "error": error, "found_by": found_by},
    )
    INTEGRITY_ALARMS.labels(found_by=found_by).inc()


async def mark_corrupt(
    pool: asyncpg.Pool, scope: Scope, recording_id: uuid.UUID, error: str, *, found_by: str
) -> None:
    """Raise the alarm and mark the recording `corrupt` (in the finder's scope)."""
    raise_alarm(recording_id, error, found_by=found_by)
    async with scoped(pool, scope) as conn:
        await store.mark_corrupt(conn, recording_id)


async def alarm_in_request(
    actor: Actor, pool: asyncpg.Pool, recording_id: uuid.UUID, company: str,
    error: str, *, found_by: str,
) -> None:
    """Stored audio failed verification while a request read it: raise the alarm, mark the
    recording `corrupt` in the caller's scope and audit the alarm as the caller's."""
    await mark_corrupt(pool, actor.caller.scope, recording_id, error, found_by=found_by)
    await actor.audit(ALARM_ACTION, target_type="recording", target_id=str(recording_id),
                      company=company, outcome="failure", subject_ids=[recording_id],
                      detail={"error": error, "found_by": found_by})


async def send(request: web.Request, response: web.StreamResponse,
               chunks: AsyncIterable[bytes]) -> None:
    """Write `chunks` as the response's body; its headers go with the first chunk, so that
    audio failing verification before any byte left can still be answered with 409."""
    async for chunk in chunks:
        if not response.prepared:
            await response.prepare(request)
        await response.write(chunk)


async def cut_short(request: web.Request, response: web.StreamResponse,
                    recording_id: uuid.UUID, company: str, error: str, *,
                    found_by: str) -> web.StreamResponse:
    """Stored audio failed verification while `response` streamed it: the alarm is raised
    and the recording marked; the client gets 409 if nothing was sent yet, else a cut-off
    body (never one that looks complete)."""
    await alarm_in_request(actor_of(request), request.app[POOL], recording_id, company, error,
                           found_by=found_by)
    if not response.prepared:
        raise Conflict(WITHHELD) from None
    if request.transport is not None:
        request.transport.abort()
    return response
