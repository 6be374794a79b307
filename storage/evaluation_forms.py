"""SQL of evaluation forms and their versions (migration 011). Every function takes a scoped
connection: row-level security shows group-wide forms and the caller's companies' forms, and
lets only an all-companies caller write a group-wide one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, NoReturn
from uuid import UUID

import asyncpg

from schemas.evaluation_forms import Criterion, FormIn, FormUpdate
from storage.errors import AlreadyExists, Forbidden, InvalidInput, NotFound

_SELECT = (
    "SELECT f.name, f.title, f.description, co.code AS company, v.version,"
    " f.version AS current_version, v.criteria, f.active, f.created_by, f.created_at,"
    " f.updated_by, f.updated_at, f.company_id"
    " FROM evaluation_forms f"
    " JOIN evaluation_form_versions v ON v.form = f.name"
    " LEFT JOIN companies co ON co.id = f.company_id"
)


class FormCriterion(NamedTuple):
    key: str
    label: str
    max_score: int


@dataclass(frozen=True)
class Form:
    """A version of a form (`version`) with the form's current state; `company` and
    `company_id` are None for a group-wide form."""

    name: str
    title: str
    description: str | None
    company: str | None
    company_id: UUID | None
    version: int
    current_version: int
    criteria: tuple[FormCriterion, ...]
    active: bool
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime


def _form(row: asyncpg.Record) -> Form:
    return Form(
        name=row["name"], title=row["title"], description=row["description"],
        company=row["company"], company_id=row["company_id"], version=row["version"],
        current_version=row["current_version"],
        criteria=tuple(FormCriterion(c["key"], c["label"], c["max_score"])
                       for c in row["criteria"]),
        active=row["active"], created_by=row["created_by"], created_at=row["created_at"],
        updated_by=row["updated_by"], updated_at=row["updated_at"],
    )


def _criteria(criteria: list[Criterion]) -> list[dict[str, Any]]:
    return [c.model_dump() for c in criteria]


async def list_forms(
    conn: asyncpg.Connection, *, active: bool | None = None, company_id: UUID | None = None
) -> list[Form]:
    """Current versions of the visible forms, by name; `company_id`: only those usable for
    that company's calls (its own and the group-wide ones)."""
    rows = await conn.fetch(
        _SELECT + " WHERE v.version = f.version"
        " AND ($1::boolean IS NULL OR f.active = $1)"
        " AND ($2::uuid IS NULL OR f.company_id IS NULL OR f.company_id = $2)"
        " ORDER BY f.name",
        active, company_id,
    )
    return [_form(r) for r in rows]


async def get(conn: asyncpg.Connection, name: str, version: int | None = None) -> Form:
    row = await conn.fetchrow(
        _SELECT + " WHERE f.name = $1 AND v.version = coalesce($2, f.version)", name, version
    )
    if row is None:
        raise NotFound("no such evaluation form" if version is None
                       else "no such evaluation form or version")
    return _form(row)


async def versions(
    conn: asyncpg.Connection, wanted: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], Form]:
    """The given (name, version) pairs that exist and are visible, for showing evaluations
    with the criteria they were scored on."""
    pairs = sorted(set(wanted))
    if not pairs:
        return {}
    rows = await conn.fetch(
        _SELECT + " JOIN unnest($1::text[], $2::int[]) AS w(form, version)"
        " ON w.form = v.form AND w.version = v.version",
        [p[0] for p in pairs], [p[1] for p in pairs],
    )
    return {(r["name"], r["version"]): _form(r) for r in rows}


async def usable(conn: asyncpg.Connection, name: str, company_id: UUID) -> Form:
    """The current version of an active form that may score a call of `company_id`.

    A form that does not exist, is hidden from the caller, is inactive or belongs to another
    company is refused alike, as the invalid value of `form`."""
    row = await conn.fetchrow(
        _SELECT + " WHERE f.name = $1 AND v.version = f.version", name
    )
    if row is None:
        msg = f"there is no evaluation form {name!r}"
    elif not row["active"]:
        msg = f"the evaluation form {name!r} is no longer in use"
    elif row["company_id"] is not None and row["company_id"] != company_id:
        msg = f"the evaluation form {name!r} is not for this company's calls"
    else:
        return _form(row)
    raise InvalidInput(msg, [(["body", "form"], msg)])


async def company_id_of(conn: asyncpg.Connection, code: str, where: str = "body") -> UUID:
    """The company of a form, by code; one outside the caller's scope is unknown too."""
    found: UUID | None = await conn.fetchval(
        "SELECT id FROM companies WHERE code = $1 AND tallenne_in_scope(id)", code
    )
    if found is None:
        msg = f"unknown company {code!r}"
        raise InvalidInput(msg, [([where, "company"], msg)])
    return found


async def create(
    conn: asyncpg.Connection, form: FormIn, company_id: UUID | None, created_by: str
) -> Form:
    try:
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO evaluation_forms (name, company_id, title, description,"
                " created_by, updated_by) VALUES ($1, $2, $3, $4, $5, $5)",
                form.name, company_id, form.title, form.description, created_by,
            )
            await conn.execute(
                "INSERT INTO evaluation_form_versions (form, version, company_id, criteria,"
                " created_by) VALUES ($1, 1, $2, $3, $4)",
                form.name, company_id, _criteria(form.criteria), created_by,
            )
    except asyncpg.UniqueViolationError as exc:
        # Names are unique across the group: evaluations name a form by it alone.
        raise AlreadyExists(f"an evaluation form named {form.name!r} already exists") from exc
    except asyncpg.InsufficientPrivilegeError as exc:
        raise Forbidden("only an admin of every company may define a group-wide form") from exc
    return await get(conn, form.name)


async def update(
    conn: asyncpg.Connection, name: str, change: FormUpdate, updated_by: str
) -> tuple[Form, bool]:
    """Apply `change`; True when the criteria changed and so made a new version."""
    current = await conn.fetchrow(
        "SELECT f.version, f.company_id, v.criteria FROM evaluation_forms f"
        " JOIN evaluation_form_versions v ON v.form = f.name AND v.version = f.version"
        " WHERE f.name = $1 FOR UPDATE OF f",
        name,
    )
    if current is None:
        await _refuse_unchangeable(conn, name)
    criteria = _criteria(change.criteria)
    new_version = criteria != current["criteria"]
    version = current["version"] + 1 if new_version else current["version"]
    try:
        async with conn.transaction():
            if new_version:
                await conn.execute(
                    "INSERT INTO evaluation_form_versions (form, version, company_id, criteria,"
                    " created_by) VALUES ($1, $2, $3, $4, $5)",
                    name, version, current["company_id"], criteria, updated_by,
                )
            await conn.execute(
                "UPDATE evaluation_forms SET title = $2, description = $3, version = $4,"
                " active = coalesce($5, active), updated_by = $6, updated_at = now()"
                " WHERE name = $1",
                name, change.title, change.description, version, change.active, updated_by,
            )
    except asyncpg.InsufficientPrivilegeError as exc:
        raise Forbidden("only an admin of every company may change a group-wide form") from exc
    return await get(conn, name), new_version


async def set_active(
    conn: asyncpg.Connection, name: str, active: bool, updated_by: str
) -> Form:
    """(De)activate a form; an inactive one scores no new evaluations but stays on record."""
    try:
        found = await conn.fetchval(
            "UPDATE evaluation_forms SET active = $2, updated_by = $3, updated_at = now()"
            " WHERE name = $1 RETURNING name",
            name, active, updated_by,
        )
    except asyncpg.InsufficientPrivilegeError as exc:
        raise Forbidden("only an admin of every company may change a group-wide form") from exc
    if found is None:
        await _refuse_unchangeable(conn, name)
    return await get(conn, name)


async def _refuse_unchangeable(conn: asyncpg.Connection, name: str) -> NoReturn:
    """A form the caller could not lock or change: one it sees (a group-wide form, for an
    admin of some companies) is refused, any other is as not found."""
    if await conn.fetchval("SELECT 1 FROM evaluation_forms WHERE name = $1", name):
        raise Forbidden("only an admin of every company may change a group-wide form")
    raise NotFound("no such evaluation form")
