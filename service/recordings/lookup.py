"""Finding a recording for a request: its id in the path, the row in the caller's scope, and
the limits and refusals every endpoint on a recording shares."""

from __future__ import annotations

import uuid

import asyncpg
from aiohttp import web

from storage import recordings as store
from storage.db import Scope, scoped
from storage.errors import NotFound
from storage.recordings import Recording

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
