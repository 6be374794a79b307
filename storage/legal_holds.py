"""Legal holds: cases that stop expiry and erasure of recordings and whole customers.

The link tables are the truth; `recordings.legal_holds` mirrors the active cases of each
recording (its own and its customer's) and is kept in sync here and by the insert trigger
of migration 010, for the readers that need no join (recording JSON, erasure, purge).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from schemas.retention import LegalHoldIn
from storage.checkpoints import bucket_has_object_lock
from storage.db import Scope
from storage.errors import Conflict, InvalidInput, NotFound, ObjectMissing
from storage.objects import ObjectStore


@dataclass(frozen=True)
class LegalHold:
    """A case with the recordings and customers it holds."""

    case: str
    reason: str
    created_by: str
    created_at: datetime
    released_by: str | None
    released_at: datetime | None
    recording_ids: list[UUID]
    customer_ids: list[UUID]


_CUSTOMER_RECORDINGS = (
    "(r.customer_id = ANY($2::uuid[])"
    " OR (r.key_owner = 'customer' AND r.key_owner_id = ANY($2::uuid[])))"
)


async def records_companies(
    conn: asyncpg.Connection, recording_ids: list[UUID], customer_ids: list[UUID]
) -> dict[UUID, set[UUID]]:
    """Per recording and per customer, every company whose data it is: a recording's own
    company; a customer's memberships and the companies of their recordings."""
    found: dict[UUID, set[UUID]] = {}
    for row in await conn.fetch(
        "SELECT id AS record, company_id FROM recordings WHERE id = ANY($1::uuid[])"
        " UNION SELECT customer_id, company_id FROM customer_memberships"
        " WHERE customer_id = ANY($2::uuid[])"
        " UNION SELECT c.id, r.company_id FROM unnest($2::uuid[]) AS c(id)"
        f" JOIN recordings r ON {_CUSTOMER_RECORDINGS.replace('ANY($2::uuid[])', 'c.id')}",
        recording_ids, customer_ids,
    ):
        found.setdefault(row["record"], set()).add(row["company_id"])
    return found


async def case_companies(conn: asyncpg.Connection, case_ids: list[str]) -> dict[str, set[UUID]]:
    """Every company whose data each case holds (now or when it was released)."""
    found: dict[str, set[UUID]] = {c: set() for c in case_ids}
    for row in await conn.fetch(
        "SELECT case_id, company_id FROM legal_hold_recordings WHERE case_id = ANY($1::text[])"
        " UNION SELECT h.case_id, m.company_id FROM legal_hold_customers h"
        " JOIN customer_memberships m ON m.customer_id = h.customer_id"
        " WHERE h.case_id = ANY($1::text[])",
        case_ids,
    ):
        found[row["case_id"]].add(row["company_id"])
    return found


async def lock_customer_holds(conn: asyncpg.Connection, *, shared: bool) -> None:
    """Serialise holds on customers with the purge's web-event steps: placing them takes
    the lock exclusively, a web-event step shares it, so a step reads the held customers
    only after every hold placed before it has committed, and a later one waits for it."""
    fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    await conn.execute(f"SELECT {fn}(hashtextextended('tallenne customer holds', 0))")


async def _lock_all(conn: asyncpg.Connection, sql: str, ids: list[UUID], what: str) -> None:
    """Lock the rows `sql` selects of `ids`; InvalidInput naming the first that is missing."""
    found = {r["id"] for r in await conn.fetch(sql, ids)}
    missing = sorted(set(ids) - found)
    if missing:
        raise InvalidInput(f"no such {what}", [(["body", f"{what}_ids"],
                                                f"no such {what} {missing[0]}")])


def _inside(scope: Scope, companies: set[UUID]) -> bool:
    """A case or record lies in the scope when every company of it does; one that holds no
    company's data is group-wide."""
    return scope.all_companies or (bool(companies) and companies <= scope.company_ids)


async def place(
    conn: asyncpg.Connection, hold: LegalHoldIn, created_by: str, scope: Scope | None = None
) -> LegalHold:
    """Open a case (or add records to an open one). The connection sees every company and is
    in a transaction; `scope` is the caller's: records (and an existing case) outside it are
    as missing as records that do not exist."""
    scope = scope or Scope.everything()
    if hold.customer_ids:
        await lock_customer_holds(conn, shared=False)
    # A request opening the same case at the same moment: this insert waits for the other's
    # transaction, and then the case is found as an existing one.
    created = await conn.fetchval(
        "INSERT INTO legal_holds (case_id, reason, created_by) VALUES ($1, $2, $3)"
        " ON CONFLICT (case_id) DO NOTHING RETURNING true",
        hold.case, hold.reason, created_by,
    )
    if not created:
        existing = await conn.fetchrow(
            "SELECT released_at FROM legal_holds WHERE case_id = $1 FOR UPDATE", hold.case
        )
        assert existing is not None, "cases are never deleted"
        if existing["released_at"] is not None:
            raise Conflict("this case was released; open a new case id")
        if not _inside(scope, (await case_companies(conn, [hold.case]))[hold.case]):
            raise Conflict("this case id is in use; open a new case id")
    if not scope.all_companies:
        owners = await records_companies(conn, hold.recording_ids, hold.customer_ids)
        for ids, loc, what in ((hold.recording_ids, "recording_ids", "recording"),
                               (hold.customer_ids, "customer_ids", "customer")):
            outside = sorted(i for i in ids if not _inside(scope, owners.get(i, set())))
            if outside:
                raise InvalidInput(f"no such {what}", [(["body", loc],
                                                        f"no such {what} {outside[0]}")])
    # Customers before recordings, each in id order, as an erasure locks them. Locked: a
    # purge or erasure of one of them either finishes first (then it is missing here) or
    # waits and then sees the hold.
    await _lock_all(conn, "SELECT id FROM customers WHERE id = ANY($1::uuid[])"
                    " AND erased_at IS NULL ORDER BY id FOR UPDATE",
                    hold.customer_ids, "customer")
    await _lock_all(conn, "SELECT id FROM recordings WHERE id = ANY($1::uuid[])"
                    " ORDER BY id FOR UPDATE", hold.recording_ids, "recording")
    await conn.execute(
        "INSERT INTO legal_hold_recordings (case_id, recording_id, company_id)"
        " SELECT $1, r.id, r.company_id FROM recordings r WHERE r.id = ANY($2::uuid[])"
        " ON CONFLICT DO NOTHING",
        hold.case, hold.recording_ids,
    )
    await conn.execute(
        "INSERT INTO legal_hold_customers (case_id, customer_id)"
        " SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING",
        hold.case, hold.customer_ids,
    )
    await conn.execute(
        "UPDATE recordings r SET legal_holds = ARRAY(SELECT DISTINCT unnest("
        "r.legal_holds || ARRAY[$1::text]) ORDER BY 1)"
        f" WHERE (r.id = ANY($3::uuid[]) OR {_CUSTOMER_RECORDINGS})"
        " AND NOT r.legal_holds @> ARRAY[$1::text]",
        hold.case, hold.customer_ids, hold.recording_ids,
    )
    return await get(conn, hold.case)


async def release(
    conn: asyncpg.Connection, case_id: str, released_by: str, scope: Scope | None = None
) -> LegalHold:
    """Release a case; one outside `scope` (the caller's) is as missing as no case."""
    if scope is not None and not _inside(scope, (await case_companies(conn, [case_id]))[case_id]):
        raise NotFound("no such open case")
    row = await conn.fetchrow(
        "UPDATE legal_holds SET released_at = now(), released_by = $2"
        " WHERE case_id = $1 AND released_at IS NULL RETURNING case_id",
        case_id, released_by,
    )
    if row is None:
        raise NotFound("no such open case")
    await conn.execute(
        "UPDATE legal_hold_recordings SET released_at = now()"
        " WHERE case_id = $1 AND released_at IS NULL", case_id)
    await conn.execute(
        "UPDATE legal_hold_customers SET released_at = now()"
        " WHERE case_id = $1 AND released_at IS NULL", case_id)
    await conn.execute(
        "UPDATE recordings SET legal_holds = array_remove(legal_holds, $1)"
        " WHERE legal_holds @> ARRAY[$1::text]",
        case_id,
    )
    return await get(conn, case_id)


def _hold(row: asyncpg.Record) -> LegalHold:
    return LegalHold(case=row["case_id"], reason=row["reason"], created_by=row["created_by"],
                     created_at=row["created_at"], released_by=row["released_by"],
                     released_at=row["released_at"], recording_ids=list(row["recording_ids"]),
                     customer_ids=list(row["customer_ids"]))


_SELECT = (
    "SELECT h.case_id, h.reason, h.created_by, h.created_at, h.released_by, h.released_at,"
    " ARRAY(SELECT recording_id FROM legal_hold_recordings x WHERE x.case_id = h.case_id"
    " ORDER BY recording_id) AS recording_ids,"
    " ARRAY(SELECT customer_id FROM legal_hold_customers x WHERE x.case_id = h.case_id"
    " ORDER BY customer_id) AS customer_ids FROM legal_holds h"
)


async def get(conn: asyncpg.Connection, case_id: str) -> LegalHold:
    row = await conn.fetchrow(f"{_SELECT} WHERE h.case_id = $1", case_id)
    if row is None:
        raise NotFound("no such case")
    return _hold(row)


async def list_holds(
    conn: asyncpg.Connection, *, include_released: bool, scope: Scope | None = None
) -> list[LegalHold]:
    """The cases, only those wholly inside `scope` when given."""
    where = "" if include_released else " WHERE h.released_at IS NULL"
    rows = await conn.fetch(f"{_SELECT}{where} ORDER BY h.created_at, h.case_id")
    if scope is not None and not scope.all_companies:
        companies = await case_companies(conn, [r["case_id"] for r in rows])
        rows = [r for r in rows if _inside(scope, companies[r["case_id"]])]
    return [_hold(r) for r in rows]


async def cases_holding_customer(conn: asyncpg.Connection, customer_id: UUID) -> list[str]:
    """Active cases on the customer itself or on any of their recordings."""
    rows = await conn.fetch(
        "SELECT case_id FROM legal_hold_customers WHERE customer_id = $1"
        " AND released_at IS NULL"
        " UNION SELECT unnest(legal_holds) FROM recordings"
        " WHERE customer_id = $1 OR (key_owner = 'customer' AND key_owner_id = $1)"
        " ORDER BY 1",
        customer_id,
    )
    return [str(r[0]) for r in rows]


async def held_customer_ids(conn: asyncpg.Connection) -> list[UUID]:
    rows = await conn.fetch(
        "SELECT DISTINCT customer_id FROM legal_hold_customers WHERE released_at IS NULL"
    )
    return [r["customer_id"] for r in rows]


# --- S3 object legal hold ------------------------------------------------------------------


async def object_keys_held_by(conn: asyncpg.Connection, case_id: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT object_key FROM recordings WHERE legal_holds @> ARRAY[$1::text]", case_id
    )
    return [r["object_key"] for r in rows]


async def object_keys_freed_by(conn: asyncpg.Connection, case_id: str) -> list[str]:
    """Objects whose only active case is this one (call before releasing it)."""
    rows = await conn.fetch(
        "SELECT object_key FROM recordings WHERE legal_holds = ARRAY[$1::text]", case_id
    )
    return [r["object_key"] for r in rows]


async def mirror_to_objects(objects: ObjectStore, keys: list[str], *, held: bool) -> int:
    """Set or lift the S3 object legal hold of these objects; only on a bucket with object
    lock (elsewhere the database hold is the only one). Returns how many were changed."""
    if not keys or not await bucket_has_object_lock(objects):
        return 0
    change = (objects.client.enable_object_legal_hold if held
              else objects.client.disable_object_legal_hold)
    changed = 0
    for key in keys:
        try:
            await objects.run(change, objects.bucket, key)
        except ObjectMissing:
            continue
        changed += 1
    return changed
