"""Finding a customer's data for the rights of access and erasure: the customer of a path,
every recording of the customer in the caller's scope."""

from __future__ import annotations

from uuid import UUID

import asyncpg
from aiohttp import web

from storage import recordings as recording_store
from storage.errors import NotFound
from storage.recordings import Recording, SearchFilter

RECORDINGS_PAGE = 1000


def customer_id_of(request: web.Request) -> UUID:
    try:
        return UUID(request.match_info["customer_id"])
    except ValueError:
        raise NotFound("no such customer") from None


async def customer_recordings(conn: asyncpg.Connection, customer_id: UUID) -> list[Recording]:
    """Every recording of the customer the connection's scope can see, newest first."""
    found: list[Recording] = []
    after = None
    while True:
        page = await recording_store.search(
            conn, SearchFilter(customer_id=customer_id), after=after, limit=RECORDINGS_PAGE,
        )
        found.extend(page)
        if len(page) < RECORDINGS_PAGE:
            return found
        after = (page[-1].started_at, page[-1].id)
