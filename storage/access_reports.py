"""SQL of the right of access: recording requests and gathering everything held about one
customer. Every function runs on a connection scoped to the caller's companies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from storage.customers import CustomerRecord
from storage.errors import NotFound

WEB_EVENTS_SHOWN = 200


@dataclass(frozen=True)
class AccessRequest:
    """A verified access request; answered by `due_at`."""

    id: UUID
    customer_id: UUID
    verified_by: str
    requested_by: str
    received_at: datetime
    due_at: datetime


@dataclass(frozen=True)
class Membership:
    company: str
    company_name: str
    customer_number: str
    active: bool
    since: datetime


@dataclass(frozen=True)
class HistoryEntry:
    """A change of the customer record; the old values still sealed."""

    company: str | None
    change: str
    changed_fields: list[str]
    old_values_enc: bytes | None
    changed_at: datetime


@dataclass(frozen=True)
class ReportedEvaluation:
    recording_id: UUID
    company: str
    form: str
    scores: dict[str, Any]
    comment: str | None
    created_at: datetime


@dataclass(frozen=True)
class ReportedAnnotation:
    recording_id: UUID
    company: str
    at_s: float
    end_s: float | None
    text: str
    created_at: datetime


@dataclass(frozen=True)
class ReportedWebEvent:
    ts: datetime
    company: str
    site: str
    event: str
    url: str | None
    ip: str | None
    user_agent: str | None


@dataclass(frozen=True)
class ReportedDisclosure:
    id: UUID
    company: str
    recipient: str
    recipient_country: str
    purpose: str
    legal_basis: str
    fields: list[str]
    disclosed_at: datetime


async def record_request(
    conn: asyncpg.Connection, customer_id: UUID, verified_by: str, requested_by: str,
    received_at: datetime,
) -> AccessRequest:
    """Record a verified access request; its deadline is one calendar month from receipt."""
    row = await conn.fetchrow(
        "INSERT INTO access_requests (customer_id, verified_by, requested_by, received_at,"
        " due_at) VALUES ($1, $2, $3, $4::timestamptz, $4::timestamptz + interval '1 month')"
        " RETURNING id, customer_id, verified_by, requested_by, received_at, due_at",
        customer_id, verified_by, requested_by, received_at,
    )
    return AccessRequest(**row)


async def recorded_request(
    conn: asyncpg.Connection, customer_id: UUID, request_id: UUID
) -> AccessRequest:
    row = await conn.fetchrow(
        "SELECT id, customer_id, verified_by, requested_by, received_at, due_at"
        " FROM access_requests WHERE id = $1 AND customer_id = $2",
        request_id, customer_id,
    )
    if row is None:
        raise NotFound("no such access request")
    return AccessRequest(**row)


async def customer_row(conn: asyncpg.Connection, customer_id: UUID) -> CustomerRecord | None:
    row = await conn.fetchrow(
        "SELECT id, name, personal_id_enc, address, email, phone, created_at,"
        " updated_at FROM customers WHERE id = $1 AND erased_at IS NULL",
        customer_id,
    )
    return CustomerRecord(**row) if row is not None else None


async def memberships(conn: asyncpg.Connection, customer_id: UUID) -> list[Membership]:
    rows = await conn.fetch(
        "SELECT co.code AS company, co.name AS company_name, m.customer_number,"
        " tallenne_membership_current(m.ended_at) AS active,"
        " m.created_at AS since FROM customer_memberships m"
        " JOIN companies co ON co.id = m.company_id WHERE m.customer_id = $1 ORDER BY co.code",
        customer_id,
    )
    return [Membership(**r) for r in rows]


async def history(conn: asyncpg.Connection, customer_id: UUID) -> list[HistoryEntry]:
    """History rows of the caller's companies (and company-less ones)."""
    rows = await conn.fetch(
        "SELECT co.code AS company, h.change, h.changed_fields, h.old_values_enc, h.changed_at"
        " FROM customer_history h LEFT JOIN companies co ON co.id = h.company_id"
        " WHERE h.customer_id = $1 AND (h.company_id IS NULL OR tallenne_in_scope(h.company_id))"
        " ORDER BY h.id",
        customer_id,
    )
    return [HistoryEntry(**r) for r in rows]


async def evaluations(conn: asyncpg.Connection, customer_id: UUID) -> list[ReportedEvaluation]:
    rows = await conn.fetch(
        "SELECT e.recording_id, co.code AS company, e.form, e.scores, e.comment, e.created_at"
        " FROM recording_evaluations e JOIN recordings r ON r.id = e.recording_id"
        " JOIN companies co ON co.id = e.company_id"
        " WHERE r.customer_id = $1 ORDER BY e.created_at, e.id",
        customer_id,
    )
    return [ReportedEvaluation(**r) for r in rows]


async def call_notes(conn: asyncpg.Connection, customer_id: UUID) -> list[ReportedAnnotation]:
    """Every note on the customer's calls, team and private alike (both are data held about
    the call), without their authors."""
    rows = await conn.fetch(
        "SELECT a.recording_id, co.code AS company, a.at_s, a.end_s, a.text, a.created_at"
        " FROM recording_annotations a JOIN recordings r ON r.id = a.recording_id"
        " JOIN companies co ON co.id = a.company_id"
        " WHERE r.customer_id = $1 ORDER BY a.created_at, a.id",
        customer_id,
    )
    return [ReportedAnnotation(**r) for r in rows]


async def web_events(
    conn: asyncpg.Connection, customer_id: UUID, shown: int = WEB_EVENTS_SHOWN
) -> tuple[int, list[ReportedWebEvent]]:
    """(how many events are linked to the customer, the latest `shown` of them)."""
    total: int = await conn.fetchval(
        "SELECT count(*) FROM web_events WHERE customer_id = $1", customer_id
    )
    rows = await conn.fetch(
        "SELECT e.ts, co.code AS company, e.site, e.event, e.url, host(e.ip) AS ip,"
        " e.user_agent FROM web_events e JOIN companies co ON co.id = e.company_id"
        " WHERE e.customer_id = $1 ORDER BY e.ts DESC, e.id DESC LIMIT $2",
        customer_id, shown,
    )
    return int(total), [ReportedWebEvent(**r) for r in rows]


async def disclosures(conn: asyncpg.Connection, customer_id: UUID) -> list[ReportedDisclosure]:
    rows = await conn.fetch(
        "SELECT d.id, co.code AS company, d.recipient, d.recipient_country, d.purpose,"
        " d.legal_basis, d.fields, d.disclosed_at FROM disclosures d"
        " JOIN companies co ON co.id = d.company_id"
        " WHERE d.customer_ids @> ARRAY[$1::uuid] ORDER BY d.disclosed_at, d.id",
        customer_id,
    )
    return [ReportedDisclosure(**r) for r in rows]


async def legal_holds(conn: asyncpg.Connection, customer_id: UUID) -> list[str]:
    """Cases holding the customer or any of their recordings.

    Holds on recordings are the recordings' `legal_holds`; holds on a whole customer live
    in a `legal_holds` table once retention lands, found by introspection until then.
    """
    cases: set[str] = set()
    if await _exists(conn, "recordings"):
        rows = await conn.fetch(
            "SELECT DISTINCT unnest(legal_holds) AS case_id FROM recordings"
            " WHERE customer_id = $1",
            customer_id,
        )
        cases.update(str(r["case_id"]) for r in rows)
    cases.update(await _customer_hold_cases(conn, customer_id))
    return sorted(cases)


async def _exists(conn: asyncpg.Connection, table: str) -> bool:
    found: bool = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
    return found


async def _columns(conn: asyncpg.Connection, table: str) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT column_name, udt_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = $1",
        table,
    )
    return {r["column_name"]: r["udt_name"] for r in rows}


async def _customer_hold_cases(conn: asyncpg.Connection, customer_id: UUID) -> list[str]:
    for table in ("legal_hold_customers", "legal_holds"):
        if not await _exists(conn, table):
            continue
        columns = await _columns(conn, table)
        case_col = next((c for c in ("case", "case_id") if c in columns), None)
        if case_col is None:
            continue
        clauses = []
        if columns.get("customer_id") == "uuid":
            clauses.append("customer_id = $1")
        if columns.get("customer_ids") == "_uuid":
            clauses.append("customer_ids @> ARRAY[$1::uuid]")
        if not clauses:
            continue
        live = " AND released_at IS NULL" if "released_at" in columns else ""
        rows = await conn.fetch(
            f'SELECT DISTINCT "{case_col}"::text AS case_id FROM {table}'
            f" WHERE ({' OR '.join(clauses)}){live}",
            customer_id,
        )
        return [str(r["case_id"]) for r in rows]
    return []
