"""SQL of the scrub: which stored recordings are due for a re-read of their object, and
when each was last found intact. Every function takes a connection scoped to every company.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from storage.recordings import Recording, _recording

_DUE = (
    " FROM recordings r JOIN companies c ON c.id = r.company_id"
    " LEFT JOIN recording_scrubs s ON s.recording_id = r.id"
    " WHERE r.state = 'stored' AND coalesce(s.verified_at, r.stored_at, r.created_at) < $1"
)


@dataclass(frozen=True)
class Due:
    """How much a pass has ahead of it."""

    objects: int
    bytes: int


async def due_totals(conn: asyncpg.Connection, verified_before: datetime) -> Due:
    row = await conn.fetchrow(
        f"SELECT count(*) AS n, coalesce(sum(r.size_bytes), 0) AS size {_DUE}", verified_before)
    assert row is not None
    return Due(int(row["n"]), int(row["size"]))


async def due(
    conn: asyncpg.Connection, verified_before: datetime, after: UUID | None, limit: int
) -> list[Recording]:
    """The next `limit` recordings (by id, after `after`) last verified before the given
    time, or stored before it and never verified since."""
    rows = await conn.fetch(
        f"SELECT r.*, c.code AS company {_DUE}"
        " AND ($2::uuid IS NULL OR r.id > $2) ORDER BY r.id LIMIT $3",
        verified_before, after, limit,
    )
    return [_recording(row) for row in rows]


async def note_verified(conn: asyncpg.Connection, recording: Recording) -> None:
    await conn.execute(
        "INSERT INTO recording_scrubs (recording_id, company_id) VALUES ($1, $2)"
        " ON CONFLICT (recording_id) DO UPDATE SET verified_at = now()",
        recording.id, recording.company_id,
    )

