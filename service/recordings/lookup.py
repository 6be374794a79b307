"""Finding a recording for a request: its id in the path, the row in the caller's scope, and
the limits and refusals every endpoint on a recording shares."""

from __future__ import annotations

import uuid

import asyncpg
from aiohttp import web

from schemas.recordings import RecordingFilter, ReplayQuery
from service.http.api import parse_model
from storage import recordings as store
from storage.db import Scope, scoped
from storage.errors import NotFound
from storage.recordings import Recording, SearchFilter

METADATA_LIMIT = 64 * 1024
MAX_REASON = 500
WITHHELD = "the recording's stored audio failed verification and is withheld"


def recording_id_of(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError:
        raise NotFound("no such recording") from None


async def load_recording(pool: asyncpg.Pool, scope: Scope, recording_id: uuid.UUID) -> Recording:
    async with scoped(pool, scope) as conn:
        return await store.get(conn, recording_id)


def search_filter(company_id: uuid.UUID | None, wanted: RecordingFilter) -> SearchFilter:
    """The search a recording filter asks for (a search page's or an export's), in the
    company `company_id` when it names one."""
    return SearchFilter(
        company_id=company_id, started_from=wanted.from_, started_before=wanted.to,
        agent=wanted.agent, queue=wanted.queue, direction=wanted.direction,
        customer_id=wanted.customer_id, tag=wanted.tag, external_id=wanted.external_id,
        phone_e164=wanted.phone, min_duration_s=wanted.min_duration_s,
        max_duration_s=wanted.max_duration_s, min_silence_ratio=wanted.min_silence_ratio,
        min_overtalk_s=wanted.min_overtalk_s, flag=wanted.flag,
    )


def stated_reason(request: web.Request, doing: str = "replayed") -> str:
    """The `reason` of a request that opens a call (replay, peaks, vCon), stripped: 400 when
    it is missing, blank or too long (a player's URL without one), 422 when it holds an
    identity code."""
    stated = (request.query.get("reason") or "").strip()
    if not stated or len(stated) > MAX_REASON:
        raise web.HTTPBadRequest(text=f"say why the call is {doing}: reason=1-{MAX_REASON} chars")
    return parse_model(ReplayQuery, {"reason": stated}, "query").reason
