"""Customers in PostgreSQL: upsert with history, matching by identity-code hash, linking,
lookups and prohibitions. Every function runs on a connection already scoped by the caller.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Concatenate, NamedTuple, ParamSpec
from uuid import UUID, uuid4

import asyncpg

from storage.crypto import PersonalIdCipher, seal_customer_values
from storage.db import Scope, apply_scope
from storage.errors import Conflict, NotFound
from storage.keys import MasterKeys, create_customer_key, find_customer_key
from storage.recordings import rewrap_for_customer

CUSTOMER_FIELDS = ("name", "address", "email", "phone")


async def link_lock(conn: asyncpg.Connection, company_id: UUID, *, shared: bool) -> None:
    """Serialise linking per company: a customer upsert (exclusive) and any insert of
    records carrying customer numbers (shared) never miss each other's rows."""
    fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    await conn.execute(
        f"SELECT {fn}(hashtextextended('tallenne link ' || $1::uuid::text, 0))",
        company_id,
    )


async def company_id_by_code(conn: asyncpg.Connection, code: str) -> UUID | None:
    found: UUID | None = await conn.fetchval("SELECT id FROM companies WHERE code = $1", code)
    return found


@dataclass(frozen=True)
class UpsertResult:
    customer_id: UUID
    created: bool
    changed_fields: list[str]


async def _person_by_hash(
    conn: asyncpg.Connection, caller: Scope, personal_id_hash: bytes
) -> UUID | None:
    """The one place that looks across companies: only the id of the person with this code.

    Runs briefly with every company visible and returns nothing but the id, which the
    caller may use only to attach a membership of its own company.
    """
    await apply_scope(conn, Scope.everything())
    try:
        found: UUID | None = await conn.fetchval(
            "SELECT id FROM customers WHERE personal_id_hash = $1 FOR UPDATE", personal_id_hash
        )
    finally:
        await apply_scope(conn, caller)
    return found


P = ParamSpec("P")
CURRENT = "(ended_at IS NULL OR ended_at > now())"


async def _end_membership(
    conn: asyncpg.Connection, customer_id: UUID, company_id: UUID, actor: str, change: str
) -> None:
    """End a membership now (unless it already ended): its number passes to another."""
    await conn.execute(
        "UPDATE customer_memberships SET ended_at = now(), active = false, updated_at = now()"
        f" WHERE customer_id = $1 AND company_id = $2 AND {CURRENT}",
        customer_id, company_id,
    )
    await _history(conn, customer_id, company_id, change, ["ended_at"], None, actor)


async def _attach_membership(
    conn: asyncpg.Connection, caller: Scope, customer_id: UUID, company_id: UUID, number: str
) -> str | None:
    """Give a person a current membership of the caller's company (an ended one of theirs
    starts again); returns the number it replaced."""
    await apply_scope(conn, Scope.everything())
    try:
        row = await conn.fetchrow(
            "SELECT customer_number, ended_at FROM customer_memberships"
            " WHERE customer_id = $1 AND company_id = $2",
            customer_id, company_id,
        )
        if row is None:
            await conn.execute(
                "INSERT INTO customer_memberships (customer_id, company_id, customer_number)"
                " VALUES ($1, $2, $3)",
                customer_id, company_id, number,
            )
        else:
            await conn.execute(
                "UPDATE customer_memberships SET customer_number = $3, ended_at = NULL,"
                " active = true, created_at = CASE WHEN ended_at IS NULL THEN created_at"
                " ELSE now() END, updated_at = now() WHERE customer_id = $1 AND company_id = $2",
                customer_id, company_id, number,
            )
    finally:
        await apply_scope(conn, caller)
    old = None if row is None else str(row["customer_number"])
    return old if old is not None and old != number else None


async def set_membership_end(
    conn: asyncpg.Connection, customer_id: UUID, company_id: UUID, ended_at: datetime | None,
    actor: str,
) -> bool:
    """Record when the membership ended (None: it goes on); True when that changed."""
    changed = await conn.fetchval(
        "UPDATE customer_memberships SET ended_at = $3, active = ($3::timestamptz IS NULL"
        " OR $3 > now()), updated_at = now() WHERE customer_id = $1 AND company_id = $2"
        " AND ended_at IS DISTINCT FROM $3 RETURNING 1",
        customer_id, company_id, ended_at,
    )
    if changed is None:
        return False
    await _history(conn, customer_id, company_id, "membership_ended" if ended_at else
                   "membership_resumed", ["ended_at"], None, actor)
    return True


async def _history(
    conn: asyncpg.Connection, customer_id: UUID, company_id: UUID, change: str,
    fields: list[str], sealed: bytes | None, actor: str,
) -> None:
    await conn.execute(
        "INSERT INTO customer_history (customer_id, company_id, change, changed_fields,"
        " old_values_enc, changed_by) VALUES ($1, $2, $3, $4, $5, $6)",
        customer_id, company_id, change, fields, sealed, actor,
    )


def _again_on_a_person_made_meanwhile(
    upsert: Callable[Concatenate[asyncpg.Connection, P], Coroutine[Any, Any, UpsertResult]],
) -> Callable[Concatenate[asyncpg.Connection, P], Coroutine[Any, Any, UpsertResult]]:
    """Two companies' systems may send a new person at the same moment: the one that creates
    them second finds the code taken, and its upsert is done again (in a savepoint) on the
    person the other created."""

    @functools.wraps(upsert)
    async def once_more(conn: asyncpg.Connection, /, *args: P.args,
                        **kwargs: P.kwargs) -> UpsertResult:
        for attempt in (1, 2):
            try:
                async with conn.transaction():
                    return await upsert(conn, *args, **kwargs)
            except asyncpg.UniqueViolationError as exc:
                if attempt == 2 or exc.constraint_name != "customers_personal_id_hash_key":
                    raise
        raise AssertionError("unreachable")

    return once_more


@_again_on_a_person_made_meanwhile
async def upsert_customer(
    conn: asyncpg.Connection,
    caller: Scope,
    company_id: UUID,
    customer_number: str,
    record: dict[str, Any],
    *,
    seal_personal_id: Callable[[UUID], bytes],
    personal_id_hash: bytes,
    masters: MasterKeys,
    actor: str,
) -> UpsertResult:
    """Create or update the customer behind `company_id`/`customer_number`.

    `record` holds name, address, email, phone. One person (identity-code hash) is one
    customer across companies; the connection must be in a transaction scoped to `caller`.

    A number that comes with another person's identity code has passed to that person: the
    previous holder's membership ends now and keeps every record stored under the number
    so far; only records stored from now on follow the number (README, "Customer numbers
    change hands"). An identity code is therefore never rectified through this call.
    """
    if not caller.allows(company_id):
        raise NotFound("no such company")
    await link_lock(conn, company_id, shared=False)
    holder: UUID | None = await conn.fetchval(
        "SELECT customer_id FROM customer_memberships"
        f" WHERE company_id = $1 AND customer_number = $2 AND {CURRENT}",
        company_id, customer_number,
    )
    person = await _person_by_hash(conn, caller, personal_id_hash)
    if person is not None and person != holder:
        taken = await conn.fetchval(
            "SELECT customer_number FROM customer_memberships"
            f" WHERE customer_id = $1 AND company_id = $2 AND {CURRENT}",
            person, company_id,
        )
        if taken is not None:
            raise Conflict("this person already has another customer number at this company")
    if holder is not None and holder != person:
        await _end_membership(conn, holder, company_id, actor, "number_passed_on")

    if person is None:
        customer_id = uuid4()
        await conn.execute(
            "INSERT INTO customers (id, personal_id_enc, personal_id_hash, name, address,"
            " email, phone) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            customer_id, seal_personal_id(customer_id), personal_id_hash, record["name"],
            record["address"], record["email"], record["phone"],
        )
        await _attach_membership(conn, caller, customer_id, company_id, customer_number)
        await create_customer_key(conn, masters, customer_id)
        await _history(conn, customer_id, company_id, "created", [], None, actor)
        await _link_records(conn, company_id, customer_number, customer_id, masters)
        return UpsertResult(customer_id, True, [])

    customer_id = person
    created = False
    changed: list[str] = []
    if holder != person:
        replaced = await _attach_membership(conn, caller, person, company_id, customer_number)
        created = True
        await _history(
            conn, person, company_id,
            "membership_moved" if holder is not None else "membership_added",
            ["customer_number"] if replaced else [], None, actor,
        )

    row = await conn.fetchrow(
        "SELECT name, address, email, phone FROM customers WHERE id = $1 FOR UPDATE",
        customer_id,
    )
    assert row is not None, "the membership makes the customer visible"
    old = {f: row[f] for f in CUSTOMER_FIELDS}
    changed += [f for f in CUSTOMER_FIELDS if old[f] != record[f]]
    if changed:
        # Rectification keeps history: the old values, sealed under the customer's key.
        key = await find_customer_key(conn, masters, customer_id)
        sealed = seal_customer_values(key.key, customer_id, {f: old[f] for f in changed}) \
            if key is not None else None
        await conn.execute(
            "UPDATE customers SET name = $2, address = $3, email = $4, phone = $5,"
            " updated_at = now() WHERE id = $1",
            customer_id, record["name"], record["address"], record["email"], record["phone"],
        )
        await _history(conn, customer_id, company_id, "updated", changed, sealed, actor)
    await _link_records(conn, company_id, customer_number, customer_id, masters)
    return UpsertResult(customer_id, created, changed)


async def _link_records(
    conn: asyncpg.Connection, company_id: UUID, customer_number: str, customer_id: UUID,
    masters: MasterKeys,
) -> None:
    """Point the company's earlier events and recordings with this number that belong to
    no customer yet at the customer; an earlier holder's records stay theirs.

    The recordings' data keys move under the customer's key in the same transaction, so
    destroying that key on erasure covers calls stored before the customer record arrived.
    """
    await conn.execute(
        "UPDATE web_events SET customer_id = $3 WHERE company_id = $1"
        " AND customer_number = $2 AND customer_id IS NULL",
        company_id, customer_number, customer_id,
    )
    if await _recordings_linkable(conn):
        await rewrap_for_customer(
            conn, masters, company_id=company_id, customer_number=customer_number,
            customer_id=customer_id,
        )
        await conn.execute(
            "UPDATE recordings SET customer_id = $3 WHERE company_id = $1"
            " AND customer_number = $2 AND customer_id IS NULL",
            company_id, customer_number, customer_id,
        )


async def _recordings_linkable(conn: asyncpg.Connection) -> bool:
    found: bool = await conn.fetchval(
        "SELECT count(*) = 3 FROM information_schema.columns WHERE table_name = 'recordings'"
        " AND table_schema = current_schema()"
        " AND column_name IN ('company_id', 'customer_number', 'customer_id')"
    )
    return found


# --- reading ---------------------------------------------------------------


class CustomerNumber(NamedTuple):
    """A customer's number at a company; `ended_at` once the membership has ended."""

    company: str
    customer_number: str
    ended_at: datetime | None


@dataclass(frozen=True)
class CustomerRecord:
    """A customer's own fields; the identity code still sealed."""

    id: UUID
    name: str | None
    personal_id_enc: bytes | None
    address: dict[str, Any] | None
    email: str | None
    phone: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Customer(CustomerRecord):
    """A customer record with the memberships the scope sees."""

    companies: tuple[CustomerNumber, ...]


def _customer(row: asyncpg.Record) -> Customer:
    companies = tuple(
        CustomerNumber(m["company"], m["customer_number"],
                       datetime.fromisoformat(m["ended_at"]) if m["ended_at"] else None)
        for m in row["companies"])
    return Customer(
        id=row["id"], name=row["name"], personal_id_enc=row["personal_id_enc"],
        address=row["address"], email=row["email"], phone=row["phone"],
        created_at=row["created_at"], updated_at=row["updated_at"], companies=companies,
    )


async def customer_rows(conn: asyncpg.Connection, ids: list[UUID]) -> list[Customer]:
    """Customers by id with the memberships the scope can see; missing ids are skipped."""
    rows = await conn.fetch(
        "SELECT c.id, c.name, c.personal_id_enc, c.address, c.email, c.phone, c.created_at,"
        " c.updated_at, coalesce(json_agg(json_build_object('company', co.code,"
        " 'customer_number', m.customer_number, 'ended_at', m.ended_at)"
        " ORDER BY co.code, m.ended_at DESC NULLS FIRST)"
        " FILTER (WHERE m.customer_id IS NOT NULL), '[]') AS companies"
        " FROM customers c"
        " LEFT JOIN customer_memberships m ON m.customer_id = c.id"
        " LEFT JOIN companies co ON co.id = m.company_id"
        " WHERE c.id = ANY($1::uuid[]) AND c.erased_at IS NULL"
        " GROUP BY c.id ORDER BY c.name, c.id",
        ids,
    )
    return [_customer(r) for r in rows]


async def find_by_hash(conn: asyncpg.Connection, personal_id_hash: bytes) -> list[UUID]:
    return [r["id"] for r in await conn.fetch(
        "SELECT id FROM customers WHERE personal_id_hash = $1", personal_id_hash
    )]


async def find_by_number(
    conn: asyncpg.Connection, company_id: UUID, customer_number: str
) -> list[UUID]:
    return [r["customer_id"] for r in await conn.fetch(
        "SELECT customer_id FROM customer_memberships"
        f" WHERE company_id = $1 AND customer_number = $2 AND {CURRENT}",
        company_id, customer_number,
    )]


async def data_counts(conn: asyncpg.Connection, customer_id: UUID) -> dict[str, int]:
    events = await conn.fetchval(
        "SELECT count(*) FROM web_events WHERE customer_id = $1", customer_id
    )
    recordings = 0
    if await conn.fetchval("SELECT to_regclass('recordings') IS NOT NULL"):
        recordings = await conn.fetchval(
            "SELECT count(*) FROM recordings WHERE customer_id = $1", customer_id
        )
    return {"recordings": int(recordings), "web_events": int(events)}


@dataclass(frozen=True)
class Prohibition:
    """A prohibition of a use of the customer's data; withdrawn when `withdrawn_at` is set."""

    use: str
    channel: str
    received_at: datetime
    recorded_by: str
    withdrawn_at: datetime | None
    withdrawn_by: str | None


async def prohibitions(conn: asyncpg.Connection, customer_id: UUID) -> list[Prohibition]:
    rows = await conn.fetch(
        "SELECT use, channel, received_at, recorded_by, withdrawn_at, withdrawn_by"
        " FROM customer_prohibitions WHERE customer_id = $1 ORDER BY received_at, id",
        customer_id,
    )
    return [Prohibition(**r) for r in rows]


async def add_prohibition(
    conn: asyncpg.Connection, customer_id: UUID, use: str, channel: str,
    received_at: datetime, actor: str,
) -> bool:
    """Record a prohibition; False when the same use is already prohibited."""
    inserted = await conn.fetchval(
        "INSERT INTO customer_prohibitions (customer_id, use, channel, received_at, recorded_by)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (customer_id, use)"
        " WHERE withdrawn_at IS NULL DO NOTHING RETURNING id",
        customer_id, use, channel, received_at, actor,
    )
    return inserted is not None


async def withdraw_prohibition(
    conn: asyncpg.Connection, customer_id: UUID, use: str, actor: str
) -> bool:
    done = await conn.fetchval(
        "UPDATE customer_prohibitions SET withdrawn_at = now(), withdrawn_by = $3"
        " WHERE customer_id = $1 AND use = $2 AND withdrawn_at IS NULL RETURNING id",
        customer_id, use, actor,
    )
    return done is not None


async def visible(conn: asyncpg.Connection, customer_id: UUID) -> bool:
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM customers WHERE id = $1 AND erased_at IS NULL)",
        customer_id,
    )
    return found


async def reseal_personal_ids(pool: asyncpg.Pool, cipher: PersonalIdCipher,
                              batch: int = 500) -> int:
    """Seal again, bound to their customer, the identity codes sealed before codes were
    bound (a database from an earlier version, or restored from an older backup); how many.
    Each code is replaced only if no one changed it meanwhile, so replicas starting at once
    do no harm."""
    resealed = 0
    after = UUID(int=0)
    while True:
        async with pool.acquire() as conn, conn.transaction():
            await apply_scope(conn, Scope.everything())
            rows = await conn.fetch(
                "SELECT id, personal_id_enc FROM customers WHERE personal_id_enc IS NOT NULL"
                " AND substring(personal_id_enc FROM 1 FOR 4) <> '\\x50494432'::bytea"
                " AND id > $1 ORDER BY id LIMIT $2", after, batch)
            for row in rows:
                sealed = cipher.encrypt(cipher.open_unbound(row["personal_id_enc"]), row["id"])
                resealed += int(await conn.fetchval(
                    "WITH changed AS (UPDATE customers SET personal_id_enc = $2"
                    " WHERE id = $1 AND personal_id_enc = $3 RETURNING 1)"
                    " SELECT count(*) FROM changed", row["id"], sealed, row["personal_id_enc"]))
        if len(rows) < batch:
            return resealed
        after = rows[-1]["id"]
