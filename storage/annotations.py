"""SQL of call annotations; every function takes a connection scoped to the caller."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from schemas.annotations import AnnotationIn
from storage.errors import Forbidden, NotFound

_COLUMNS = "id, recording_id, author, at_s, end_s, text, visibility, created_at"


@dataclass(frozen=True)
class Annotation:
    id: UUID
    recording_id: UUID
    author: str
    at_s: float
    end_s: float | None
    text: str
    visibility: str  # 'private' or 'team'
    created_at: datetime


def _annotation(row: asyncpg.Record) -> Annotation:
    return Annotation(**dict(row))


async def add(
    conn: asyncpg.Connection, recording_id: UUID, company_id: UUID, author: str,
    note: AnnotationIn,
) -> Annotation:
    row = await conn.fetchrow(
        "INSERT INTO recording_annotations (recording_id, company_id, author, at_s, end_s,"
        f" text, visibility) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_COLUMNS}",
        recording_id, company_id, author, note.at_s, note.end_s, note.text, note.visibility,
    )
    return _annotation(row)


async def visible(conn: asyncpg.Connection, recording_id: UUID, reader: str) -> list[Annotation]:
    """The call's team notes and the reader's own private ones, in call order."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM recording_annotations WHERE recording_id = $1"
        " AND (visibility = 'team' OR author = $2) ORDER BY at_s, created_at, id",
        recording_id, reader,
    )
    return [_annotation(r) for r in rows]


async def delete(
    conn: asyncpg.Connection, recording_id: UUID, annotation_id: UUID, *, author: str | None
) -> Annotation:
    """Delete a note of the call; `author` None deletes anyone's (an admin), otherwise only
    the author's own: someone else's team note (which the caller sees) is refused, someone
    else's private note is as not found."""
    row = await conn.fetchrow(
        "DELETE FROM recording_annotations WHERE id = $1 AND recording_id = $2"
        f" AND ($3::text IS NULL OR author = $3) RETURNING {_COLUMNS}",
        annotation_id, recording_id, author,
    )
    if row is not None:
        return _annotation(row)
    if await conn.fetchval(
            "SELECT visibility = 'team' FROM recording_annotations WHERE id = $1"
            " AND recording_id = $2", annotation_id, recording_id):
        raise Forbidden("only its author or an admin may delete a team note")
    raise NotFound("no such annotation")
