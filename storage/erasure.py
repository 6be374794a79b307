"""Erasure of a customer: the customer key destroyed (crypto-shredding every recording and
history row sealed under it), personal fields blanked, recordings reduced to tombstones, web
events unlinked, and the erasure ledger that `tallenne restore` re-applies.

The ledger is kept three times: in PostgreSQL, as one small object per customer in S3 (ids
and times only), and in the key snapshot (storage.key_snapshot), so a database restored from
an older backup still learns of later erasures, even into a new bucket. A recording erased on
its own (`DELETE /api/v1/recordings/{id}`) leaves its tombstone in PostgreSQL and one small
object under `erasure-ledger/recordings/` (ids and time only), so that a restore of an older
backup onto the surviving bucket erases it again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

import asyncpg

from storage.db import Scope, apply_scope
from storage.errors import Conflict, Forbidden, NotFound
from storage.legal_holds import cases_holding_customer
from storage.objects import ObjectStore

LEDGER_PREFIX = "erasure-ledger/"
RECORDING_LEDGER_PREFIX = f"{LEDGER_PREFIX}recordings/"
_THEIR_RECORDINGS = "(customer_id = $1 OR (key_owner = 'customer' AND key_owner_id = $1))"


@dataclass(frozen=True)
class CustomerErasure:
    customer_id: UUID
    erased_at: datetime
    company_ids: list[UUID]
    recording_ids: list[UUID]
    object_keys: list[str] = field(repr=False)
    web_events_unlinked: int


def ledger_object_key(customer_id: UUID) -> str:
    return f"{LEDGER_PREFIX}{customer_id}.json"


async def erase_customer(
    conn: asyncpg.Connection, customer_id: UUID, *, erased_by: str, reason: str,
    scope: Scope | None = None,
) -> CustomerErasure:
    """Erase one customer across every company. The connection must be in a transaction;
    the scope is widened to every company because the customer's key is the person's, not a
    company's. So a caller's `scope` must cover every company holding the customer's data
    (memberships and recordings). The caller deletes `object_keys` from S3 after commit."""
    await apply_scope(conn, Scope.everything())
    row = await conn.fetchrow(
        "SELECT erased_at FROM customers WHERE id = $1 FOR UPDATE", customer_id
    )
    if row is None or row["erased_at"] is not None:
        raise NotFound("no such customer")
    if scope is not None and not scope.all_companies:
        holders = {r[0] for r in await conn.fetch(
            "SELECT company_id FROM customer_memberships WHERE customer_id = $1"
            f" UNION SELECT company_id FROM recordings WHERE {_THEIR_RECORDINGS}",
            customer_id,
        )}
        if not holders <= scope.company_ids:
            raise Forbidden("the customer's data is also held by a company outside your"
                            " scope: erasing them needs a principal of every such company")
    # Their recordings are locked before their holds are read (customer first, then the
    # recordings in id order, as placing a hold does): a hold placed on one of them
    # meanwhile has committed and is seen below, or waits until this erasure is done.
    await conn.execute(
        f"SELECT 1 FROM recordings WHERE {_THEIR_RECORDINGS} ORDER BY id FOR UPDATE",
        customer_id,
    )
    holds = await cases_holding_customer(conn, customer_id)
    if holds:
        raise Conflict("the customer is under a legal hold and cannot be erased")
    return await _shred(conn, customer_id, erased_by=erased_by, reason=reason)


async def _shred(
    conn: asyncpg.Connection, customer_id: UUID, *, erased_by: str, reason: str
) -> CustomerErasure:
    company_ids = [r["company_id"] for r in await conn.fetch(
        "SELECT company_id FROM customer_memberships WHERE customer_id = $1", customer_id
    )]
    recording_ids: list[UUID] = []
    object_keys: list[str] = []
    if await conn.fetchval("SELECT to_regclass('recordings') IS NOT NULL"):
        # Calls linked to the customer, and calls whose data key their key wraps.
        rows = await conn.fetch(
            f"SELECT id, object_key FROM recordings WHERE {_THEIR_RECORDINGS} FOR UPDATE",
            customer_id,
        )
        recording_ids = [r["id"] for r in rows]
        object_keys = [r["object_key"] for r in rows]
        await conn.execute(
            "INSERT INTO recording_tombstones (id, company_id, external_id, erased_by, reason)"
            f" SELECT id, company_id, external_id, $2, $3 FROM recordings WHERE {_THEIR_RECORDINGS}"
            " ON CONFLICT DO NOTHING",
            customer_id, erased_by, reason,
        )
        await conn.execute(f"DELETE FROM recordings WHERE {_THEIR_RECORDINGS}", customer_id)
    unlinked = await conn.fetchval(
        "WITH changed AS (UPDATE web_events e SET customer_id = NULL, customer_number = NULL,"
        " session_id = NULL, ip = NULL, user_agent = NULL, attributes = '{}'::jsonb"
        " WHERE e.customer_id = $1 OR (e.customer_id IS NULL"
        " AND (e.customer_number, e.company_id) IN"
        " (SELECT m.customer_number, m.company_id FROM customer_memberships m"
        " WHERE m.customer_id = $1)) RETURNING 1) SELECT count(*) FROM changed",
        customer_id,
    )
    await conn.execute(
        "UPDATE customer_history SET old_values_enc = NULL WHERE customer_id = $1", customer_id
    )
    # The key goes first, while the memberships still show it to a scoped caller; deleting
    # it marks the key snapshot due (a trigger), which the caller then overwrites.
    await conn.execute("DELETE FROM customer_keys WHERE customer_id = $1", customer_id)
    await conn.execute("DELETE FROM customer_memberships WHERE customer_id = $1", customer_id)
    erased_at: datetime = await conn.fetchval(
        "UPDATE customers SET name = NULL, personal_id_enc = NULL, personal_id_hash = NULL,"
        " address = '{}'::jsonb, email = NULL, phone = NULL,"
        " erased_at = coalesce(erased_at, now()), updated_at = now() WHERE id = $1"
        " RETURNING erased_at",
        customer_id,
    )
    await conn.execute(
        "INSERT INTO erasure_ledger (customer_id, erased_at, company_ids, recording_ids)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (customer_id) DO UPDATE SET"
        " company_ids = ARRAY(SELECT DISTINCT unnest(erasure_ledger.company_ids"
        " || EXCLUDED.company_ids)),"
        " recording_ids = ARRAY(SELECT DISTINCT unnest(erasure_ledger.recording_ids"
        " || EXCLUDED.recording_ids))",
        customer_id, erased_at, company_ids, recording_ids,
    )
    return CustomerErasure(customer_id, erased_at, company_ids, recording_ids, object_keys,
                           int(unlinked))


def ledger_entry_json(erasure: CustomerErasure) -> bytes:
    """The S3 copy of a ledger entry: ids and times only."""
    return json.dumps({
        "customer_id": str(erasure.customer_id),
        "erased_at": erasure.erased_at.isoformat(),
        "company_ids": [str(c) for c in erasure.company_ids],
        "recording_ids": [str(r) for r in erasure.recording_ids],
    }).encode()


async def write_ledger_object(objects: ObjectStore, erasure: CustomerErasure) -> None:
    await objects.put_bytes(ledger_object_key(erasure.customer_id), ledger_entry_json(erasure))


def recording_ledger_key(recording_id: UUID) -> str:
    return f"{RECORDING_LEDGER_PREFIX}{recording_id}.json"


async def write_recording_ledger_object(
    objects: ObjectStore, recording_id: UUID, company_id: UUID, erased_at: datetime
) -> None:
    """The S3 entry of a recording erased on its own: ids and time only."""
    await objects.put_bytes(recording_ledger_key(recording_id), json.dumps({
        "recording_id": str(recording_id), "company_id": str(company_id),
        "erased_at": erased_at.isoformat(),
    }).encode())


async def _ledger_objects(
    objects: ObjectStore,
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """The S3 ledger: (customers' entries, entries of recordings erased on their own)."""
    customers: list[dict[str, object]] = []
    recordings: list[dict[str, object]] = []
    for key in await objects.list_keys(LEDGER_PREFIX):
        entry = json.loads(await objects.get_bytes(key))
        (recordings if key.startswith(RECORDING_LEDGER_PREFIX) else customers).append(entry)
    return customers, recordings


@dataclass(frozen=True)
class Reapplied:
    customers: int  # erased again
    recordings: int  # recordings erased on their own, erased again


async def reapply_erasures(
    conn: asyncpg.Connection, objects: ObjectStore, *, also: dict[UUID, str] | None = None
) -> Reapplied:
    """Erase again every customer in the ledger (PostgreSQL's and S3's copy, and `also`:
    customer id → erasure time, from the key snapshot) whose data a restore brought back,
    and every recording erased on its own that came back (reduced to a tombstone again).
    Idempotent."""
    from_s3, recordings_erased = await _ledger_objects(objects)
    known = {str(e["customer_id"]) for e in from_s3}
    from_s3 += [{"customer_id": str(c), "erased_at": at, "company_ids": [],
                 "recording_ids": []} for c, at in (also or {}).items() if str(c) not in known]
    stale_keys: list[str] = []
    recordings_again: list[str] = []
    erased_again = 0
    async with conn.transaction():
        await apply_scope(conn, Scope.everything())
        for entry in from_s3:
            await conn.execute(
                "INSERT INTO erasure_ledger (customer_id, erased_at, company_ids, recording_ids)"
                " VALUES ($1::uuid, $2::text::timestamptz, $3::uuid[], $4::uuid[])"
                " ON CONFLICT (customer_id) DO NOTHING",
                entry["customer_id"], entry["erased_at"], entry["company_ids"],
                entry["recording_ids"],
            )
        has_recordings = await conn.fetchval("SELECT to_regclass('recordings') IS NOT NULL")
        recordings_check = (
            " OR EXISTS (SELECT 1 FROM recordings r WHERE r.customer_id = c.id)"
            if has_recordings else ""
        )
        rows = await conn.fetch(
            "SELECT l.customer_id, l.recording_ids FROM erasure_ledger l"
            " JOIN customers c ON c.id = l.customer_id"
            " WHERE c.erased_at IS NULL OR c.name IS NOT NULL"
            " OR EXISTS (SELECT 1 FROM customer_keys k WHERE k.customer_id = c.id)"
            " OR c.personal_id_hash IS NOT NULL"
            " OR EXISTS (SELECT 1 FROM customer_memberships m WHERE m.customer_id = c.id)"
            + recordings_check,
        )
        for row in rows:
            erasure = await _shred(conn, row["customer_id"], erased_by="restore",
                                   reason="erasure ledger re-applied after restore")
            stale_keys.extend(erasure.object_keys)
            erased_again += 1
        if has_recordings:
            # Recordings of erased customers restored without their customer link.
            leftover = await conn.fetch(
                "DELETE FROM recordings WHERE id IN (SELECT unnest(recording_ids)"
                " FROM erasure_ledger) RETURNING object_key"
            )
            stale_keys.extend(r["object_key"] for r in leftover)
            recordings_again = await _erase_recordings_again(conn, recordings_erased)
            stale_keys.extend(recordings_again)
    if stale_keys:
        await objects.delete(stale_keys)
    return Reapplied(erased_again, len(recordings_again))


async def _erase_recordings_again(
    conn: asyncpg.Connection, entries: list[dict[str, object]]
) -> list[str]:
    """Recordings of the S3 ledger that a restore brought back, reduced to their tombstones
    again; their object keys."""
    if not entries:
        return []
    erased_at = {UUID(str(e["recording_id"])): str(e["erased_at"]) for e in entries}
    rows = await conn.fetch(
        "DELETE FROM recordings WHERE id = ANY($1::uuid[])"
        " RETURNING id, company_id, external_id, object_key", list(erased_at))
    for row in rows:
        await conn.execute(
            "INSERT INTO recording_tombstones (id, company_id, external_id, erased_at,"
            " erased_by, reason) VALUES ($1, $2, $3, $4::text::timestamptz, 'restore',"
            " 'erasure ledger re-applied after restore') ON CONFLICT DO NOTHING",
            row["id"], row["company_id"], row["external_id"], erased_at[row["id"]])
    return [r["object_key"] for r in rows]
