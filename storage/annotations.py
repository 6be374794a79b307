"""SQL of call annotations; every function takes a connection scoped to the caller."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from schemas.annotations import AnnotationIn, AnnotationOut
from storage.errors import NotFound


async def add(
    conn: asyncpg.Connection, recording_id: UUID, company_id: UUID, author: str,
    note: AnnotationIn,
) -> AnnotationOut:
    row = await conn.fetchrow(
        "INSERT INTO recording_annotations (recording_id, company_id, author, at_s, end_s,"
        " text, visibility) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
        recording_id, company_id, author, note.at_s, note.end_s, note.text, note.visibility,
    )
    return AnnotationOut.model_validate(dict(row))


async def visible(conn: asyncpg.Connection, recording_id: UUID, reader: str) -> list[AnnotationOut]:
    """The call's team notes and the reader's own private ones, in call order."""
    rows = await conn.fetch(
        "SELECT * FROM recording_annotations WHERE recording_id = $1"
        " AND (visibility = 'team' OR author = $2) ORDER BY at_s, created_at, id",
        recording_id, reader,
    )
    return [AnnotationOut.model_validate(dict(r)) for r in rows]


async def delete(
    conn: asyncpg.Connection, recording_id: UUID, annotation_id: UUID, *, author: str | None
) -> AnnotationOut:
    """Delete a note of the call; `author` None deletes anyone's (an admin), otherwise only
    the author's own. Someone else's note is as not found."""
    row = await conn.fetchrow(
        "DELETE FROM recording_annotations WHERE id = $1 AND recording_id = $2"
        " AND ($3::text IS NULL OR author = $3) RETURNING *",
        annotation_id, recording_id, author,
    )
    if row is None:
        raise NotFound("no such annotation")
    return AnnotationOut.model_validate(dict(row))
