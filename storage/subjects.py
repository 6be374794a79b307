"""SQL of the subject search: the customers, calls, web events, disclosures and audited
reads that concern one person. Every function takes a scoped connection.

Calls are found by their indexed E.164 caller and callee columns (normalised at ingest, see
schemas.phone); a customer's own phone, stored as written, is matched by `phone_matches_sql`:
stripped of everything but digits and "+", against the written forms of the E.164 number."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from storage.disclosures import Disclosure, disclosure
from storage.recordings import _COLUMNS, Evaluation, Recording, _evaluation, _recording

LIMIT = 1000


@dataclass(frozen=True)
class LinkedWebEvent:
    """A web-site event linked to one of the customers found."""

    id: int
    ts: datetime
    company: str
    site: str
    event: str
    url: str | None
    customer_id: UUID | None


@dataclass(frozen=True)
class AuditedRead:
    """An audit event about one of the customers or calls found."""

    seq: int
    at: datetime
    actor: str
    action: str
    target_type: str | None
    target_id: str | None
    company: str | None
    reason: str | None


def written_forms(e164: str) -> list[str]:
    """The digit strings an E.164 number is stored as once spaces, dashes and brackets are
    dropped: international with "+" or "00", without either, and national with the trunk
    prefix "0" (Finland and the other numbering plans that use it)."""
    digits = e164.removeprefix("+")
    forms = [e164, "00" + digits, digits]
    if digits.startswith("358"):
        national = digits[3:]
        # "+358 (0)40 …" keeps the trunk prefix after the country code.
        forms += ["0" + national, "+3580" + national, "003580" + national]
    return forms


def phone_matches_sql(column: str, forms_param: str) -> str:
    """SQL true when `column` holds one of the written forms bound at `forms_param`."""
    return f"regexp_replace({column}, '[^0-9+]', '', 'g') = ANY({forms_param}::text[])"


async def recordings_by_phone(conn: asyncpg.Connection, e164: str) -> list[Recording]:
    """Calls in which the number took part as caller or callee, newest first."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM recordings r JOIN companies c ON c.id = r.company_id"
        " WHERE r.state <> 'pending' AND (r.caller_e164 = $1 OR r.callee_e164 = $1)"
        " ORDER BY r.started_at DESC, r.id DESC LIMIT $2",
        e164, LIMIT,
    )
    return [_recording(r) for r in rows]


async def customers_by_phone(conn: asyncpg.Connection, e164: str) -> list[UUID]:
    rows = await conn.fetch(
        "SELECT c.id FROM customers c WHERE c.erased_at IS NULL"
        f" AND {phone_matches_sql('c.phone', '$1')}",
        written_forms(e164),
    )
    return [r["id"] for r in rows]


async def recordings_of_customers(conn: asyncpg.Connection,
                                  customer_ids: Sequence[UUID]) -> list[Recording]:
    if not customer_ids:
        return []
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM recordings r JOIN companies c ON c.id = r.company_id"
        " WHERE r.state <> 'pending' AND r.customer_id = ANY($1::uuid[])"
        " ORDER BY r.started_at DESC, r.id DESC LIMIT $2",
        list(customer_ids), LIMIT,
    )
    return [_recording(r) for r in rows]


async def evaluations_of(conn: asyncpg.Connection,
                         recording_ids: Sequence[UUID]) -> list[Evaluation]:
    rows = await conn.fetch(
        "SELECT * FROM recording_evaluations WHERE recording_id = ANY($1::uuid[])"
        " ORDER BY created_at, id",
        list(recording_ids),
    )
    return [_evaluation(r) for r in rows]


async def web_events_of(conn: asyncpg.Connection,
                        customer_ids: Sequence[UUID]) -> list[LinkedWebEvent]:
    if not customer_ids:
        return []
    rows = await conn.fetch(
        "SELECT e.id, e.ts, co.code AS company, e.site, e.event, e.url, e.customer_id"
        " FROM web_events e JOIN companies co ON co.id = e.company_id"
        " WHERE e.customer_id = ANY($1::uuid[]) ORDER BY e.ts DESC, e.id DESC LIMIT $2",
        list(customer_ids), LIMIT,
    )
    return [LinkedWebEvent(**r) for r in rows]


async def disclosures_of(conn: asyncpg.Connection,
                         customer_ids: Sequence[UUID]) -> list[Disclosure]:
    if not customer_ids:
        return []
    rows = await conn.fetch(
        "SELECT d.*, co.code AS company FROM disclosures d"
        " JOIN companies co ON co.id = d.company_id"
        " WHERE d.customer_ids && $1::uuid[] ORDER BY d.disclosed_at DESC, d.id DESC LIMIT $2",
        list(customer_ids), LIMIT,
    )
    return [disclosure(r) for r in rows]


async def reads_of(conn: asyncpg.Connection, target_ids: Sequence[UUID]) -> list[AuditedRead]:
    """Audit events about these customers and calls: those that target one of them and those
    that read their data among others (a search, a list, an export: `subject_ids`). Which of
    them the caller sees is row-level security's to say: an event whose companies all lie in
    the caller's scope (events that name none, to all-company callers only)."""
    if not target_ids:
        return []
    rows = await conn.fetch(
        "SELECT seq, at, actor, action, target_type, target_id, company, reason"
        " FROM audit_events WHERE target_id = ANY($1::text[]) OR subject_ids && $2::uuid[]"
        " ORDER BY seq DESC LIMIT $3",
        [str(t) for t in target_ids], list(target_ids), LIMIT,
    )
    return [AuditedRead(**r) for r in rows]
