"""Purges: what has expired (preview) and removing it in batches (real run).

A real run is safe to kill and to run twice at once. Each batch locks its rows with
`FOR UPDATE SKIP LOCKED`, deletes their S3 objects (every version), then replaces the rows
by tombstones and `purge_log` entries in the same transaction: a run killed after the S3
delete leaves rows whose objects are gone, which the next run picks up and finishes; a
concurrent run skips the locked rows. Whole months of web events go by dropping their
partition; expired customers are erased (crypto-shredded) like an erasure request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from storage import erasure, legal_holds
from storage.db import Scope, apply_scope, scoped
from storage.errors import Unavailable
from storage.objects import ObjectStore
from storage.web_events import PARTITION_LOCK

logger = logging.getLogger(__name__)

DEFAULT_BATCH = 200
WORKERS = 2
RUN_LOCK_SPACE = 0x7A11E65  # session lock held by a live run, keyed by hashtext(run id)
PURGED_BY = "purge"

# The one definition of an expired recording (`r`, as of $1): its retention has ended and
# its upload is complete. A held one (legal_holds not empty) is expired but kept.
_RECORDING_EXPIRED = "r.retain_until <= $1 AND r.state <> 'pending'"
_EXPIRED_CUSTOMERS = (
    "FROM customers c WHERE c.erased_at IS NULL"
    " AND NOT EXISTS (SELECT 1 FROM customer_memberships m"
    "                 WHERE m.customer_id = c.id AND (m.ended_at IS NULL OR m.ended_at > $1))"
    " AND NOT EXISTS (SELECT 1 FROM recordings r WHERE r.customer_id = c.id"
    "                 OR (r.key_owner = 'customer' AND r.key_owner_id = c.id))"
    " AND tallenne_customer_retain_until(c.id) <= $1"
)
_CUSTOMER_HELD = (
    "EXISTS (SELECT 1 FROM legal_hold_customers h WHERE h.customer_id = c.id"
    " AND h.released_at IS NULL)"
)
# Each company's web events expire after the longest web_event policy of that company.
_WEB_EVENT_CUTOFFS = (
    "SELECT company_id, $1::timestamptz - make_interval(days => max(keep_days)) AS cutoff"
    " FROM retention_policies WHERE kind = 'web_event' GROUP BY company_id"
)


@dataclass(frozen=True)
class KindCount:
    """Items (and object bytes) of one kind of one company."""

    company: str
    kind: str
    items: int
    bytes: int


@dataclass(frozen=True)
class OldestExpired:
    kind: str
    id: str
    company: str
    retain_until: datetime


@dataclass(frozen=True)
class PurgeSummary:
    """A preview (dry run), or the progress and result of a real run."""

    dry_run: bool
    state: str
    as_of: datetime
    id: UUID | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expired: list[KindCount] = field(default_factory=list)
    purged: list[KindCount] = field(default_factory=list)
    held_back: int = 0
    oldest: OldestExpired | None = None
    partitions_dropped: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Tally:
    """Purged items and bytes by (company code, kind)."""

    counts: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def add(self, company: str, kind: str, items: int, size: int = 0) -> None:
        entry = self.counts.setdefault((company, kind), [0, 0])
        entry[0] += items
        entry[1] += size

    def buckets(self) -> list[KindCount]:
        return [KindCount(company=c, kind=k, items=v[0], bytes=v[1])
                for (c, k), v in sorted(self.counts.items())]

    @property
    def total(self) -> int:
        return sum(v[0] for v in self.counts.values())


Progress = Callable[[str, str, int, int], None]  # kind, company, items, bytes


# --- preview -------------------------------------------------------------------------------


async def preview(
    conn: asyncpg.Connection, as_of: datetime, scope: Scope | None = None
) -> PurgeSummary:
    """What a real run at `as_of` would remove in the scope's companies (every company by
    default), and what holds keep back. Reads only."""
    await apply_scope(conn, scope or Scope.everything())
    tally = Tally()
    held = 0
    oldest: OldestExpired | None = None
    for row in await conn.fetch(
        "SELECT co.code, count(*) AS n, coalesce(sum(r.size_bytes), 0) AS size,"
        " r.legal_holds <> '{}' AS held"
        " FROM recordings r JOIN companies co ON co.id = r.company_id"
        f" WHERE {_RECORDING_EXPIRED}"
        " GROUP BY co.code, r.legal_holds <> '{}'",
        as_of,
    ):
        if row["held"]:
            held += int(row["n"])
        else:
            tally.add(row["code"], "recording", int(row["n"]), int(row["size"]))
    first = await conn.fetchrow(
        "SELECT r.id, co.code, r.retain_until FROM recordings r"
        " JOIN companies co ON co.id = r.company_id"
        f" WHERE {_RECORDING_EXPIRED} AND r.legal_holds = '{{}}'"
        " ORDER BY r.retain_until, r.id LIMIT 1",
        as_of,
    )
    if first is not None:
        oldest = OldestExpired(kind="recording", id=str(first["id"]), company=first["code"],
                               retain_until=first["retain_until"])
    held_customers = await legal_holds.held_customer_ids(conn)
    for row in await conn.fetch(
        "SELECT co.code, count(*) AS n FROM web_events e"
        f" JOIN ({_WEB_EVENT_CUTOFFS}) p ON p.company_id = e.company_id"
        " JOIN companies co ON co.id = e.company_id"
        " WHERE e.ts < p.cutoff AND (e.customer_id IS NULL OR NOT e.customer_id = ANY($2))"
        " GROUP BY co.code",
        as_of, held_customers,
    ):
        tally.add(row["code"], "web_event", int(row["n"]))
    held += int(await conn.fetchval(
        f"SELECT count(*) FROM web_events e JOIN ({_WEB_EVENT_CUTOFFS}) p"
        " ON p.company_id = e.company_id WHERE e.ts < p.cutoff AND e.customer_id = ANY($2)",
        as_of, held_customers,
    ))
    for row in await conn.fetch(
        f"SELECT c.id, {_CUSTOMER_HELD} AS held,"
        " (SELECT co.code FROM customer_memberships m JOIN companies co ON co.id = m.company_id"
        "  WHERE m.customer_id = c.id ORDER BY m.updated_at DESC LIMIT 1) AS code"
        f" {_EXPIRED_CUSTOMERS}",
        as_of,
    ):
        if row["held"]:
            held += 1
        else:
            tally.add(row["code"] or "-", "customer", 1)
    return PurgeSummary(dry_run=True, state="finished", as_of=as_of, expired=tally.buckets(),
                       held_back=held, oldest=oldest)


# --- runs ----------------------------------------------------------------------------------


async def start_run(
    conn: asyncpg.Connection, run_id: UUID, *, as_of: datetime, started_by: str, dry_run: bool
) -> None:
    """Record the run; the caller holds `conn` (and the run's session lock) until it ends.
    Runs left 'running' by a killed process (their lock is free) become 'interrupted'."""
    await conn.execute("SELECT pg_advisory_lock($1, hashtext($2))", RUN_LOCK_SPACE, str(run_id))
    await conn.execute(
        "INSERT INTO purge_runs (id, dry_run, as_of, started_by) VALUES ($1, $2, $3, $4)",
        run_id, dry_run, as_of, started_by,
    )
    for row in await conn.fetch(
        "SELECT id FROM purge_runs WHERE state = 'running' AND id <> $1", run_id
    ):
        other = str(row["id"])
        if await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))",
                               RUN_LOCK_SPACE, other):
            await conn.execute(
                "UPDATE purge_runs SET state = 'interrupted', finished_at = now()"
                " WHERE id = $1 AND state = 'running'", row["id"])
            await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))",
                               RUN_LOCK_SPACE, other)


async def finish_run(
    conn: asyncpg.Connection, run_id: UUID, *, state: str, counts: dict[str, Any],
    error: str | None = None,
) -> None:
    await conn.execute(
        "UPDATE purge_runs SET state = $2, finished_at = now(), counts = $3, error = $4"
        " WHERE id = $1",
        run_id, state, counts, error,
    )
    await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", RUN_LOCK_SPACE, str(run_id))


async def run_report(conn: asyncpg.Connection, run_id: UUID) -> PurgeSummary | None:
    """A run's state and what it has purged so far (from the purge log)."""
    run = await conn.fetchrow("SELECT * FROM purge_runs WHERE id = $1", run_id)
    if run is None:
        return None
    tally = Tally()
    for row in await conn.fetch(
        "SELECT coalesce(co.code, '-') AS code, l.item_kind, sum(l.items) AS n,"
        " sum(l.bytes) AS size FROM purge_log l LEFT JOIN companies co ON co.id = l.company_id"
        " WHERE l.purge_id = $1 GROUP BY 1, 2",
        run_id,
    ):
        kind = "web_event" if row["item_kind"].startswith("web_event") else row["item_kind"]
        tally.add(row["code"], kind, int(row["n"]), int(row["size"]))
    dropped = [r["item_id"].split("/")[0] for r in await conn.fetch(
        "SELECT item_id FROM purge_log WHERE purge_id = $1 AND item_kind = 'web_event_partition'"
        " ORDER BY item_id", run_id)]
    counts = run["counts"] or {}
    return PurgeSummary(
        id=run["id"], dry_run=run["dry_run"], state=run["state"], as_of=run["as_of"],
        started_at=run["started_at"], finished_at=run["finished_at"], purged=tally.buckets(),
        held_back=int(counts.get("held_back", 0)), partitions_dropped=dropped,
        error=run["error"],
    )


# --- S3 ------------------------------------------------------------------------------------


async def bucket_is_versioned(objects: ObjectStore) -> bool:
    """Whether deleting a key leaves older versions behind (then each version is deleted)."""
    try:
        return await objects.is_versioned()
    except Unavailable:
        return True  # cannot tell: take the slow, complete path


async def delete_all_versions(objects: ObjectStore, keys: list[str], versioned: bool) -> None:
    """One multi-object delete of the keys (and of every version of them when versioned)."""
    if not keys:
        return
    failed = await objects.delete_versions(keys, every_version=versioned)
    if failed:
        raise Unavailable(f"the object store did not delete {len(failed)} object(s)")


# --- real run ------------------------------------------------------------------------------


@dataclass
class PurgeJob:
    pool: asyncpg.Pool
    objects: ObjectStore
    run_id: UUID
    as_of: datetime
    batch_size: int = DEFAULT_BATCH
    # Batches in flight at once: S3 deletes of one overlap the commit of another; SKIP LOCKED
    # keeps their rows apart exactly as between two purge processes.
    workers: int = 0  # 0: WORKERS
    on_progress: Progress | None = None
    tally: Tally = field(default_factory=Tally)
    dropped: list[str] = field(default_factory=list)
    ledger: list[erasure.CustomerErasure] = field(default_factory=list)

    async def _recordings(self, versioned: bool) -> None:
        while await self.recording_batch(versioned):
            pass

    def _note(self, kind: str, company: str, items: int, size: int = 0) -> None:
        self.tally.add(company, kind, items, size)
        if self.on_progress is not None:
            self.on_progress(kind, company, items, size)

    async def run(self) -> Tally:
        versioned = await bucket_is_versioned(self.objects)
        await asyncio.gather(*(self._recordings(versioned) for _ in range(self.workers or WORKERS)))
        await self.web_event_partitions()
        while await self.web_event_rows_batch():
            pass
        while await self.customer_batch():
            pass
        return self.tally

    async def recording_batch(self, versioned: bool) -> int:
        async with scoped(self.pool, Scope.everything()) as conn:
            # A crash before the commit (durable or not, hence synchronous_commit off) leaves
            # the expired rows in place, whatever S3 already deleted; the next run finishes.
            await conn.execute("SET LOCAL synchronous_commit = off")
            rows = await conn.fetch(
                "WITH doomed AS (SELECT r.id FROM recordings r"
                f" WHERE {_RECORDING_EXPIRED} AND r.legal_holds = '{{}}'"
                " ORDER BY r.retain_until, r.id LIMIT $2 FOR UPDATE OF r SKIP LOCKED),"
                " gone AS (DELETE FROM recordings r USING doomed WHERE r.id = doomed.id"
                " RETURNING r.id, r.company_id, r.external_id, r.object_key, r.size_bytes,"
                " 'retention: recording/' || r.purpose AS reason),"
                " tombstones AS (INSERT INTO recording_tombstones (id, company_id, external_id,"
                " erased_by, reason) SELECT id, company_id, external_id, $3, reason FROM gone"
                " ON CONFLICT DO NOTHING),"
                " logged AS (INSERT INTO purge_log (item_kind, item_id, company_id, purge_id,"
                " bytes, reason) SELECT 'recording', id::text, company_id, $4, size_bytes,"
                " reason FROM gone)"
                " SELECT gone.object_key, gone.size_bytes, co.code FROM gone"
                " JOIN companies co ON co.id = gone.company_id",
                self.as_of, self.batch_size, f"{PURGED_BY} {self.run_id}", self.run_id,
            )
            if not rows:
                return 0
            # The rows are gone only when this transaction commits, after S3 said yes.
            await delete_all_versions(self.objects, [r["object_key"] for r in rows], versioned)
        for row in rows:
            self._note("recording", row["code"], 1, int(row["size_bytes"]))
        return len(rows)

    async def web_event_partitions(self) -> None:
        """Drop each monthly partition whose every row is past the longest web-event policy
        and holds no event of a held customer."""
        async with scoped(self.pool, Scope.everything()) as conn:
            longest = await conn.fetchval(
                "SELECT max(keep_days) FROM retention_policies WHERE kind = 'web_event'")
            if longest is None:
                return
            partitions = await conn.fetch(
                "SELECT c.relname AS name, (regexp_match(pg_get_expr(c.relpartbound, c.oid),"
                " 'TO \\(''([^'']+)''\\)'))[1]::timestamptz AS upper"
                " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'web_events'::regclass"
            )
        horizon = self.as_of - timedelta(days=int(longest))
        for part in partitions:
            if part["upper"] is None or part["upper"] > horizon:
                continue
            await self._drop_partition(part["name"])

    async def _drop_partition(self, name: str) -> None:
        async with scoped(self.pool, Scope.everything()) as conn:
            # The lock that creating partitions takes: one drop (or create) at a time.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK)
            if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name):
                return
            await legal_holds.lock_customer_holds(conn, shared=True)
            held = await legal_holds.held_customer_ids(conn)
            if held and await conn.fetchval(
                f"SELECT EXISTS (SELECT 1 FROM {name} WHERE customer_id = ANY($1))", held
            ):
                return  # row deletes take the rest around the held customers' events
            per_company = await conn.fetch(
                f"SELECT e.company_id, co.code, count(*) AS n FROM {name} e"
                " JOIN companies co ON co.id = e.company_id GROUP BY 1, 2"
            )
            total = sum(int(r["n"]) for r in per_company)
            await conn.execute(
                "INSERT INTO purge_log (item_kind, item_id, company_id, purge_id, items, reason)"
                " VALUES ('web_event_partition', $1, NULL, $2, $3,"
                " 'retention: web_event/site_usage, whole month expired')",
                f"{name}/{self.run_id}", self.run_id, total,
            )
            await conn.execute("SELECT tallenne_drop_web_events_partition($1)", name)
        self.dropped.append(name)
        for row in per_company:
            self._note("web_event", row["code"], int(row["n"]))

    async def web_event_rows_batch(self) -> int:
        async with scoped(self.pool, Scope.everything()) as conn:
            await legal_holds.lock_customer_holds(conn, shared=True)
            held = await legal_holds.held_customer_ids(conn)
            rows = await conn.fetch(
                f"WITH cutoffs AS ({_WEB_EVENT_CUTOFFS}),"
                " doomed AS (SELECT e.ts, e.id FROM web_events e"
                " JOIN cutoffs p ON p.company_id = e.company_id"
                " WHERE e.ts < p.cutoff AND (e.customer_id IS NULL OR NOT e.customer_id = ANY($2))"
                " LIMIT $3 FOR UPDATE OF e SKIP LOCKED)"
                " DELETE FROM web_events e USING doomed WHERE e.ts = doomed.ts"
                " AND e.id = doomed.id RETURNING e.company_id, e.id",
                self.as_of, held, self.batch_size * 50,
            )
            if not rows:
                return 0
            by_company: dict[UUID, int] = {}
            for row in rows:
                by_company[row["company_id"]] = by_company.get(row["company_id"], 0) + 1
            codes = {r["id"]: r["code"] for r in await conn.fetch(
                "SELECT id, code FROM companies WHERE id = ANY($1::uuid[])", list(by_company))}
            first = min(int(r["id"]) for r in rows)
            for company_id, n in by_company.items():
                await conn.execute(
                    "INSERT INTO purge_log (item_kind, item_id, company_id, purge_id, items,"
                    " reason) VALUES ('web_event_rows', $1, $2, $3, $4,"
                    " 'retention: web_event/site_usage')",
                    f"{first}:{company_id}", company_id, self.run_id, n,
                )
        for company_id, n in by_company.items():
            self._note("web_event", codes[company_id], n)
        return len(rows)

    async def customer_batch(self) -> int:
        erased_now: list[tuple[str, erasure.CustomerErasure]] = []
        async with scoped(self.pool, Scope.everything()) as conn:
            rows = await conn.fetch(
                "SELECT c.id, (SELECT co.code FROM customer_memberships m"
                " JOIN companies co ON co.id = m.company_id WHERE m.customer_id = c.id"
                " ORDER BY m.updated_at DESC LIMIT 1) AS code,"
                " (SELECT m.company_id FROM customer_memberships m WHERE m.customer_id = c.id"
                " ORDER BY m.updated_at DESC LIMIT 1) AS company_id"
                f" {_EXPIRED_CUSTOMERS} AND NOT {_CUSTOMER_HELD}"
                " ORDER BY c.id LIMIT $2 FOR UPDATE OF c SKIP LOCKED",
                self.as_of, self.batch_size,
            )
            for row in rows:
                # The candidates were judged in the snapshot the query began with: a
                # membership resumed, a call linked or a hold placed before the row lock
                # shows only in a statement of its own, taken now that the row is locked.
                if not await conn.fetchval(
                    f"SELECT EXISTS (SELECT 1 {_EXPIRED_CUSTOMERS} AND c.id = $2"
                    f" AND NOT {_CUSTOMER_HELD})",
                    self.as_of, row["id"],
                ):
                    continue
                # Their web events go with them, not merely unlinked as an erasure does.
                events = await conn.fetchval(
                    "WITH gone AS (DELETE FROM web_events WHERE customer_id = $1 RETURNING 1)"
                    " SELECT count(*) FROM gone", row["id"])
                if events:
                    self._note("web_event", row["code"] or "-", int(events))
                erased = await erasure.erase_customer(
                    conn, row["id"], erased_by=f"{PURGED_BY} {self.run_id}",
                    reason="retention: customer/customer_relationship",
                )
                await conn.execute(
                    "INSERT INTO purge_log (item_kind, item_id, company_id, purge_id, reason)"
                    " VALUES ('customer', $1, $2, $3,"
                    " 'retention: customer/customer_relationship')",
                    str(row["id"]), row["company_id"], self.run_id,
                )
                erased_now.append((row["code"] or "-", erased))
        for code, erased in erased_now:
            # The bucket's copy of the ledger entry, as the batch commits: a run stopped
            # later leaves none of its erasures without one.
            await erasure.write_ledger_object(self.objects, erased)
            self.ledger.append(erased)
            self._note("customer", code, 1)
        return len(rows)


async def try_session_lock(conn: asyncpg.Connection, lock: int) -> bool:
    """Take an advisory lock for the session if no other session holds it."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock))


async def release_session_locks(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_unlock_all()")


async def finished_run_since(conn: asyncpg.Connection, started_by: str,
                             since: datetime) -> bool:
    """Whether a real (not dry) run by `started_by` has finished since the moment."""
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM purge_runs WHERE started_by = $1"
        " AND NOT dry_run AND state = 'finished' AND started_at >= $2)", started_by, since))


async def interrupted_run_since(conn: asyncpg.Connection, started_by: str,
                                since: datetime) -> bool:
    """Whether a real run by `started_by` since the moment was cut short (interrupted, or
    left running by a process that died) and none has finished since."""
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM purge_runs WHERE started_by = $1 AND NOT dry_run"
        " AND state IN ('interrupted', 'running') AND started_at >= $2)"
        " AND NOT EXISTS (SELECT 1 FROM purge_runs WHERE started_by = $1 AND NOT dry_run"
        " AND state = 'finished' AND started_at >= $2)", started_by, since))
