"""SQL of disclosures: choosing the customers a disclosure may include, reading their
fields in batches, and the disclosure log. Every function takes a scoped connection."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg

from storage.errors import NotFound

BATCH = 500


@dataclass(frozen=True)
class Disclosure:
    """An entry of the disclosure log, with its company's code."""

    id: UUID
    company: str
    company_id: UUID
    disclosed_by: str
    recipient: str
    recipient_country: str
    purpose: str
    legal_basis: str
    fields: list[str]
    customer_ids: list[UUID]
    customer_count: int
    disclosed_at: datetime


_DISCLOSURE_FIELDS = tuple(f.name for f in fields(Disclosure))


class LoggedDisclosure(NamedTuple):
    id: UUID
    disclosed_at: datetime


@dataclass(frozen=True)
class DisclosedCustomer:
    """A disclosed customer's record with their number at the company; the identity code
    still sealed."""

    id: UUID
    name: str | None
    personal_id_enc: bytes | None
    address: dict[str, Any] | None
    email: str | None
    phone: str | None
    customer_number: str


def disclosure(row: asyncpg.Record) -> Disclosure:
    """The record of a row of `SELECT d.*, co.code AS company FROM disclosures d …`."""
    return Disclosure(**{name: row[name] for name in _DISCLOSURE_FIELDS})


async def eligible_customers(
    conn: asyncpg.Connection, company_id: UUID, excluded_by: Iterable[str],
    only: list[UUID] | None,
) -> list[UUID]:
    """Customers of the company not erased and without a prohibition in force of any use in
    `excluded_by`; restricted to `only` when given (each must be a customer of the company)."""
    if only is not None:
        members = {r["customer_id"] for r in await conn.fetch(
            "SELECT m.customer_id FROM customer_memberships m"
            " JOIN customers c ON c.id = m.customer_id"
            " WHERE m.company_id = $1 AND m.customer_id = ANY($2::uuid[])"
            " AND c.erased_at IS NULL",
            company_id, only,
        )}
        if members != set(only):
            raise NotFound("no such customer at this company")
    rows = await conn.fetch(
        "SELECT m.customer_id FROM customer_memberships m JOIN customers c ON c.id = m.customer_id"
        " WHERE m.company_id = $1 AND c.erased_at IS NULL"
        " AND ($2::uuid[] IS NULL OR m.customer_id = ANY($2::uuid[]))"
        # Former customers only when named (a debt collector's single customer).
        " AND ($2::uuid[] IS NOT NULL OR tallenne_membership_current(m.ended_at))"
        " AND NOT EXISTS (SELECT 1 FROM customer_prohibitions p WHERE p.customer_id = c.id"
        " AND p.withdrawn_at IS NULL AND p.use = ANY($3::text[]))"
        " ORDER BY m.customer_number",
        company_id, only, sorted(excluded_by),
    )
    return [r["customer_id"] for r in rows]


async def log_disclosure(
    conn: asyncpg.Connection, *, company_id: UUID, disclosed_by: str, recipient: str,
    recipient_country: str, purpose: str, legal_basis: str, fields: list[str],
    customer_ids: list[UUID],
) -> LoggedDisclosure:
    row = await conn.fetchrow(
        "INSERT INTO disclosures (company_id, disclosed_by, recipient, recipient_country,"
        " purpose, legal_basis, fields, customer_ids, customer_count)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, cardinality($8::uuid[]))"
        " RETURNING id, disclosed_at",
        company_id, disclosed_by, recipient, recipient_country, purpose, legal_basis, fields,
        customer_ids,
    )
    return LoggedDisclosure(row["id"], row["disclosed_at"])


async def customer_batches(
    conn: asyncpg.Connection, company_id: UUID, customer_ids: list[UUID], batch: int = BATCH
) -> AsyncIterator[list[DisclosedCustomer]]:
    """The disclosed customers' records with their number at the company, in the log's order."""
    for start in range(0, len(customer_ids), batch):
        chunk = customer_ids[start:start + batch]
        rows = await conn.fetch(
            "SELECT c.id, c.name, c.personal_id_enc, c.address, c.email, c.phone,"
            " m.customer_number FROM unnest($2::uuid[]) WITH ORDINALITY AS s(id, n)"
            " JOIN customers c ON c.id = s.id"
            " JOIN customer_memberships m ON m.customer_id = c.id AND m.company_id = $1"
            " WHERE c.erased_at IS NULL ORDER BY s.n",
            company_id, chunk,
        )
        yield [DisclosedCustomer(**r) for r in rows]


async def disclosure_log(
    conn: asyncpg.Connection, *, company_id: UUID | None, customer_id: UUID | None,
    after: tuple[datetime, UUID] | None, limit: int,
) -> list[Disclosure]:
    """Newest first, keyset paged on (disclosed_at, id)."""
    rows = await conn.fetch(
        "SELECT d.*, co.code AS company FROM disclosures d"
        " JOIN companies co ON co.id = d.company_id"
        " WHERE ($1::uuid IS NULL OR d.company_id = $1)"
        " AND ($2::uuid IS NULL OR d.customer_ids @> ARRAY[$2::uuid])"
        " AND ($3::timestamptz IS NULL OR (d.disclosed_at, d.id) < ($3, $4::uuid))"
        " ORDER BY d.disclosed_at DESC, d.id DESC LIMIT $5",
        company_id, customer_id, after[0] if after else None, after[1] if after else None,
        limit,
    )
    return [disclosure(r) for r in rows]
