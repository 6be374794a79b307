"""Web-site events in PostgreSQL: monthly partitions, COPY-staged batch inserts with customer
linking, idempotency keys, and keyset-paged reads.

A batch is COPYed into a per-connection temporary table (no row-level security there), then
moved into `web_events` with one INSERT … SELECT, which the RLS policy checks row by row and
which resolves customer numbers to customers through the memberships the caller can see.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID

import asyncpg

logger = logging.getLogger(__name__)

PARTITION_LOCK = 0x7A11E5F
STAGING_COLUMNS = (
    "ts", "company_id", "site", "event", "url", "session_id", "customer_number", "ip",
    "user_agent", "referrer", "attributes",
)
_STAGING_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS web_events_incoming ("
    " ts timestamptz, company_id uuid, site text, event text, url text, session_id text,"
    " customer_number text, ip text, user_agent text, referrer text, attributes text"
    ") ON COMMIT DELETE ROWS"
)
StagedRow = tuple[Any, ...]


def month_of(ts: datetime) -> date:
    return date(ts.year, ts.month, 1)


def partition_name(month: date) -> str:
    return f"web_events_{month.year:04d}_{month.month:02d}"


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


async def missing_partitions(conn: asyncpg.Connection, months: Iterable[date]) -> list[date]:
    """The months among these that have no partition yet (a read; takes no lock)."""
    wanted = sorted(set(months))
    if not wanted:
        return []
    rows = await conn.fetch(
        "SELECT m FROM unnest($1::text[]) AS m WHERE to_regclass(m) IS NULL",
        [partition_name(m) for m in wanted],
    )
    names = {r["m"] for r in rows}
    return [m for m in wanted if partition_name(m) in names]


async def ensure_partitions(pool: asyncpg.Pool, months: Iterable[date]) -> None:
    """Create the partitions of these months if missing, each in its own short transaction.

    Runs on a connection of its own, never inside a batch's transaction, so that the brief
    lock the DDL takes on `web_events` is not held while a batch is being read. A batch asks
    `missing_partitions` on its own connection first, so this runs about once a month.
    """
    async with pool.acquire() as conn:
        for month in await missing_partitions(conn, months):
            name = partition_name(month)
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK)
                try:
                    # The owner's function: the runtime role may not alter `web_events`.
                    await conn.execute(
                        "SELECT tallenne_create_web_events_partition($1, $2, $3)",
                        name, month, next_month(month),
                    )
                except asyncpg.CheckViolationError:
                    # Rows of this month already sit in the default partition; they stay
                    # there (still found by every query) rather than blocking ingest.
                    logger.warning("web_events partition blocked by default rows",
                                   extra={"partition": name})


async def prepare_staging(conn: asyncpg.Connection) -> None:
    await conn.execute(_STAGING_DDL)


async def stage(conn: asyncpg.Connection, rows: Sequence[StagedRow]) -> None:
    """COPY validated rows (see STAGING_COLUMNS) into this transaction's staging table."""
    if rows:
        await conn.copy_records_to_table(
            "web_events_incoming", records=rows, columns=STAGING_COLUMNS
        )


async def publish_staged(conn: asyncpg.Connection) -> int:
    """Move the staged rows into `web_events`, linking known customer numbers."""
    # Shared link locks of the companies involved: a concurrent customer upsert (which takes
    # the lock exclusively) either sees these rows or is seen by this INSERT.
    await conn.execute(
        "SELECT pg_advisory_xact_lock_shared(hashtextextended('tallenne link ' || c::text, 0))"
        " FROM (SELECT DISTINCT company_id AS c FROM web_events_incoming"
        "       WHERE customer_number IS NOT NULL ORDER BY 1) AS companies"
    )
    status = await conn.execute(
        "INSERT INTO web_events (ts, company_id, site, event, url, session_id,"
        " customer_number, customer_id, ip, user_agent, referrer, attributes)"
        " SELECT s.ts, s.company_id, s.site, s.event, s.url, s.session_id, s.customer_number,"
        " m.customer_id, s.ip::inet, s.user_agent, s.referrer, s.attributes::jsonb"
        " FROM web_events_incoming s LEFT JOIN customer_memberships m"
        " ON m.company_id = s.company_id AND m.customer_number = s.customer_number"
        " AND tallenne_membership_current(m.ended_at)"
    )
    await conn.execute("TRUNCATE web_events_incoming")
    return int(status.split()[-1])


# --- idempotency -------------------------------------------------------------


async def claim_idempotency_key(
    conn: asyncpg.Connection, account_kind: str, account_id: UUID, endpoint: str, key: str
) -> tuple[int, Any] | None:
    """Claim a key inside the caller's transaction, or return the answer stored under it.

    A concurrent request with the same key waits on the unique index until the first one
    commits (then gets its answer) or rolls back (then claims the key itself).
    """
    claimed = await conn.fetchval(
        "INSERT INTO idempotency_keys (account_kind, account_id, endpoint, key, status,"
        " response) VALUES ($1, $2, $3, $4, 0, 'null') ON CONFLICT DO NOTHING RETURNING 1",
        account_kind, account_id, endpoint, key,
    )
    if claimed:
        return None
    row = await conn.fetchrow(
        "SELECT status, response FROM idempotency_keys WHERE account_kind = $1"
        " AND account_id = $2 AND endpoint = $3 AND key = $4",
        account_kind, account_id, endpoint, key,
    )
    assert row is not None
    return int(row["status"]), row["response"]


async def store_idempotent_answer(
    conn: asyncpg.Connection, account_kind: str, account_id: UUID, endpoint: str, key: str,
    status: int, response: Any,
) -> None:
    await conn.execute(
        "UPDATE idempotency_keys SET status = $5, response = $6 WHERE account_kind = $1"
        " AND account_id = $2 AND endpoint = $3 AND key = $4",
        account_kind, account_id, endpoint, key, status, response,
    )


# --- reading -----------------------------------------------------------------


@dataclass(frozen=True)
class WebEvent:
    """A stored web-site event with its company's code; `ip` is the truncated network
    (address/prefix length) as stored."""

    id: int
    ts: datetime
    company: str
    site: str
    event: str
    url: str | None
    session_id: str | None
    customer_number: str | None
    customer_id: UUID | None
    ip: str | None
    user_agent: str | None
    referrer: str | None
    attributes: dict[str, Any]
    received_at: datetime


async def list_events(
    conn: asyncpg.Connection,
    *,
    customer_id: UUID | None,
    site: str | None,
    event: str | None,
    since: datetime | None,
    until: datetime | None,
    after: tuple[datetime, int] | None,
    limit: int,
) -> tuple[list[WebEvent], tuple[datetime, int] | None]:
    """Newest first, keyset paged on (ts, id), with the key of the next page's start (None
    on the last page); RLS limits rows to the caller's companies."""
    rows = await conn.fetch(
        "SELECT e.id, e.ts, c.code AS company, e.site, e.event, e.url, e.session_id,"
        " e.customer_number, e.customer_id, host(e.ip) || '/' || masklen(e.ip) AS ip,"
        " e.user_agent, e.referrer, e.attributes, e.received_at"
        " FROM web_events e JOIN companies c ON c.id = e.company_id"
        " WHERE ($1::uuid IS NULL OR e.customer_id = $1)"
        " AND ($2::text IS NULL OR e.site = $2)"
        " AND ($3::text IS NULL OR e.event = $3)"
        " AND ($4::timestamptz IS NULL OR e.ts >= $4)"
        " AND ($5::timestamptz IS NULL OR e.ts < $5)"
        " AND ($6::timestamptz IS NULL OR (e.ts, e.id) < ($6, $7::bigint))"
        " ORDER BY e.ts DESC, e.id DESC LIMIT $8",
        customer_id, site, event, since, until,
        after[0] if after else None, after[1] if after else None, limit + 1,
    )
    items = [WebEvent(**r) for r in rows[:limit]]
    next_after = None
    if len(rows) > limit:
        last = items[-1]
        next_after = (last.ts, last.id)
    return items, next_after
