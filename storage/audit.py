"""The append-only, hash-chained audit trail.

Appends from every request are queued and written by one task per process in batches;
replicas serialise on the `audit_head` row lock, so the chain has one order everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from storage.errors import Unavailable

logger = logging.getLogger(__name__)

GENESIS = bytes(32)
MAX_BATCH = 500
COLUMNS = (
    "seq", "at", "actor", "actor_kind", "role", "action", "target_type", "target_id",
    "company", "reason", "outcome", "request_id", "client_ip", "detail", "prev_hash", "hash",
    "company_ids", "subject_ids",
)
# Columns added after the chain began: hashed only when set, so earlier events verify as
# they were written.
OPTIONAL = frozenset({"company_ids", "subject_ids"})
# Past this many ids, an event's detail keeps a digest and a count instead of the list.
MAX_IDS = 1000


@dataclass
class AuditEntry:
    """One thing that happened; never carries a personal identity code."""

    actor: str
    actor_kind: str
    action: str
    outcome: str = "ok"
    role: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    company: str | None = None
    reason: str | None = None
    request_id: str | None = None
    client_ip: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # The companies the event concerns (row-level security decides who reads it by them);
    # None: resolved from `company` when given, else the event is group-wide.
    company_ids: list[UUID] | None = None
    # Customers and recordings whose data the event read or changed.
    subject_ids: list[UUID] | None = None
    # Not stored: codes of the companies the event concerns, resolved into company_ids.
    company_codes: list[str] | None = None


def id_summary(ids: list[UUID]) -> list[str] | dict[str, Any]:
    """The ids themselves, or past MAX_IDS their count and a SHA-256 of the sorted list."""
    unique = sorted({str(i) for i in ids})
    if len(unique) <= MAX_IDS:
        return unique
    digest = hashlib.sha256("\n".join(unique).encode()).hexdigest()
    return {"count": len(unique), "sha256": digest}


def subjects_of(*groups: list[UUID]) -> list[UUID] | None:
    """The subject ids an event is found by: every group of at most MAX_IDS ids."""
    found: set[UUID] = set()
    for group in groups:
        unique = set(group)
        if len(unique) <= MAX_IDS:
            found |= unique
    return sorted(found) or None


def canonical(seq: int, entry: dict[str, Any]) -> bytes:
    """The bytes that are hashed: every column but the hashes, as sorted compact JSON."""
    body = {k: entry[k] for k in COLUMNS if k not in ("seq", "prev_hash", "hash")
            and not (k in OPTIONAL and entry.get(k) is None)}
    body["seq"] = seq
    at = body["at"]
    body["at"] = at.astimezone(UTC).isoformat(timespec="microseconds")
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode()


def chain_hash(prev_hash: bytes, seq: int, entry: dict[str, Any]) -> bytes:
    return hashlib.sha256(prev_hash + canonical(seq, entry)).digest()


def _as_jsonb_keeps(value: Any) -> Any:
    """`value` as PostgreSQL's jsonb gives it back, so that the hash verification recomputes
    over what was stored is the hash written. jsonb keeps numbers as `numeric`: it has no
    infinity, NaN or negative zero and writes no exponent, where Python writes 1e+16; such
    floats are kept as their text."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == 0:
            return 0.0
        text = repr(value)
        return text if "e" in text or "E" in text else value
    if isinstance(value, dict):
        return {k: _as_jsonb_keeps(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_jsonb_keeps(v) for v in value]
    return value


def _without_nul(value: Any) -> Any:
    """PostgreSQL text cannot hold NUL; a reason or filter typed by a client may."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(v) for v in value]
    return value


async def _resolve_companies(
    conn: asyncpg.Connection, entries: list[AuditEntry], known: dict[str, UUID]
) -> None:
    """An event naming a company by code concerns that company's id (`known` caches them:
    company codes never change)."""
    def codes(entry: AuditEntry) -> list[str]:
        if entry.company_ids is not None:
            return []
        return list(entry.company_codes or ([entry.company] if entry.company else []))

    wanted = {c for e in entries for c in codes(e) if c not in known}
    if wanted:
        for row in await conn.fetch(
            "SELECT code, id FROM companies WHERE code = ANY($1::text[])", sorted(wanted)
        ):
            known[row["code"]] = row["id"]
    for entry in entries:
        named = codes(entry)
        if named:
            entry.company_ids = [known[c] for c in named if c in known]
        if entry.company_ids is not None:
            entry.company_ids = sorted(set(entry.company_ids)) or None
        if entry.subject_ids is not None:
            entry.subject_ids = sorted(set(entry.subject_ids)) or None


Head = tuple[int, bytes]  # the chain's last sequence number and hash


def _chained(entries: list[AuditEntry], head: Head) -> tuple[list[tuple[Any, ...]], Head]:
    """The entries as rows of COLUMNS, chained on from `head`; and the head after them."""
    seq, prev = head
    rows = []
    for entry in entries:
        seq += 1
        values = {k: _without_nul(v) for k, v in vars(entry).items()}
        values["detail"] = _as_jsonb_keeps(json.loads(json.dumps(values["detail"],
                                                                 default=str)))
        digest = chain_hash(prev, seq, values)
        rows.append(tuple({**values, "seq": seq, "prev_hash": prev, "hash": digest}[c]
                          for c in COLUMNS))
        prev = digest
    return rows, (seq, prev)


def _seqs(head: Head, count: int) -> list[int]:
    """The sequence numbers of the last `count` events up to `head`."""
    return list(range(head[0] - count + 1, head[0] + 1))


_INSERT_SQL = (f"INSERT INTO audit_events ({', '.join(COLUMNS)})"
               f" VALUES ({', '.join(f'${i}' for i in range(1, len(COLUMNS) + 1))})")


async def _append_locked(conn: asyncpg.Connection, entries: list[AuditEntry]) -> Head:
    async with conn.transaction():
        row = await conn.fetchrow("SELECT seq, hash FROM audit_head FOR UPDATE")
        assert row is not None
        rows, head = _chained(entries, (int(row["seq"]), bytes(row["hash"])))
        await conn.executemany(_INSERT_SQL, rows)
        await conn.execute("UPDATE audit_head SET seq = $1, hash = $2", *head)
    return head


async def append_batch(
    conn: asyncpg.Connection, entries: list[AuditEntry], known: dict[str, UUID] | None = None
) -> list[int]:
    """Chain and insert entries in one transaction; returns their sequence numbers."""
    await _resolve_companies(conn, entries, {} if known is None else known)
    head = await _append_locked(conn, entries)
    return _seqs(head, len(entries))


# Up to this many events go in one statement that also moves the head, when the head is
# still where this process last left it: one round trip for a request that waits for its
# event. More events, or a head another replica has moved, take the locked path.
FAST_BATCH = 16
_CASTS = {"seq": "bigint", "at": "timestamptz", "detail": "jsonb", "prev_hash": "bytea",
          "hash": "bytea", "company_ids": "uuid[]", "subject_ids": "uuid[]"}


def _append_at_head_sql(count: int) -> str:
    width = len(COLUMNS)
    values = ", ".join(
        "(" + ", ".join(f"${5 + row * width + i}::{_CASTS.get(column, 'text')}"
                        for i, column in enumerate(COLUMNS)) + ")"
        for row in range(count)
    )
    # The head moves only from where it was, and the events go in only if it moved; a
    # replica that moved it first (its lock is waited for) leaves this statement with
    # nothing written.
    return (
        "WITH moved AS (UPDATE audit_head SET seq = $1, hash = $2"
        " WHERE seq = $3 AND hash = $4 RETURNING 1)"
        f" INSERT INTO audit_events ({', '.join(COLUMNS)})"
        f" SELECT * FROM (VALUES {values}) AS v WHERE EXISTS (SELECT 1 FROM moved)"
    )


_AT_HEAD_SQL = tuple(_append_at_head_sql(n) for n in range(1, FAST_BATCH + 1))


async def _append_at_head(conn: asyncpg.Connection, entries: list[AuditEntry],
                          head: Head) -> Head | None:
    """The entries appended after `head` in one statement; None (nothing written) when the
    chain's head is no longer `head`."""
    rows, moved = _chained(entries, head)
    status = await conn.execute(_AT_HEAD_SQL[len(rows) - 1], *moved, *head,
                                *(value for row in rows for value in row))
    return moved if status == f"INSERT 0 {len(rows)}" else None


class AuditLog:
    """Queue in front of the chain: one writer per process appends what gathered, in one
    statement while the head is where it left it; `append` returns once the event is
    committed."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._queue: asyncio.Queue[tuple[AuditEntry, asyncio.Future[int]]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._company_ids: dict[str, UUID] = {}
        # Where this process last left the chain's head (None: not known, or in doubt).
        self._head: Head | None = None

    async def start(self) -> None:
        self._writer = asyncio.create_task(self._write_forever(), name="audit-writer")

    async def stop(self) -> None:
        if self._writer is None:
            return
        # Let queued events reach the database before the pool closes.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout=10)
        self._writer.cancel()
        # Bounded: shutdown must finish even if the writer is stuck on the database.
        await asyncio.wait({self._writer}, timeout=10)
        self._writer = None

    async def append(self, entry: AuditEntry) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        await self._queue.put((entry, future))
        return await future

    async def _append(self, entries: list[AuditEntry]) -> list[int]:
        async with self.pool.acquire() as conn:
            await _resolve_companies(conn, entries, self._company_ids)
            head = None
            if self._head is not None and len(entries) <= FAST_BATCH:
                head = await _append_at_head(conn, entries, self._head)
            if head is None:
                head = await _append_locked(conn, entries)
        self._head = head
        return _seqs(head, len(entries))

    async def _write_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                seqs = await self._append([entry for entry, _ in batch])
            except Exception as exc:
                self._head = None
                logger.error("audit append failed", extra={"error": repr(exc)})
                for _, future in batch:
                    if not future.done():
                        future.set_exception(Unavailable("the audit trail cannot be written"))
            else:
                for (_, future), seq in zip(batch, seqs, strict=True):
                    if not future.done():
                        future.set_result(seq)
            finally:
                for _ in batch:
                    self._queue.task_done()


@dataclass
class ChainReport:
    ok: bool
    events: int
    first_bad: int | None
    problem: str | None = None
    checkpoints: int = 0


async def verify_chain(conn: asyncpg.Connection) -> ChainReport:
    """Recompute every hash; the first event whose hash, link or sequence is wrong is named.
    Events and head are read in one snapshot: appends committed meanwhile are in neither."""
    prev = GENESIS
    expected_seq = 1
    count = 0
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        # The chain is checked whole: every company's events (only counts leave this).
        await conn.execute("SELECT tallenne_set_scope(true, '{}')")
        head = await conn.fetchrow("SELECT seq, hash FROM audit_head")
        async for row in conn.cursor("SELECT * FROM audit_events ORDER BY seq", prefetch=2000):
            count += 1
            values = dict(row)
            seq = int(values["seq"])
            if seq != expected_seq:
                return ChainReport(False, count, expected_seq, f"event {expected_seq} is missing")
            if bytes(values["prev_hash"]) != prev:
                return ChainReport(False, count, seq,
                                   f"event {seq} does not link to its predecessor")
            if chain_hash(prev, seq, values) != bytes(values["hash"]):
                return ChainReport(False, count, seq, f"event {seq} was altered")
            prev = bytes(values["hash"])
            expected_seq += 1
    if head is not None and int(head["seq"]) != expected_seq - 1:
        return ChainReport(False, count, expected_seq, "events after the last one are missing")
    if head is not None and count and bytes(head["hash"]) != prev:
        return ChainReport(False, count, expected_seq - 1,
                           f"event {expected_seq - 1} is not the head the chain was built on")
    return ChainReport(True, count, None)


async def recordings_of_subject(conn: asyncpg.Connection, customer_id: UUID) -> list[UUID]:
    """The customer's recordings (also those sealed under the customer's key): a replay
    names the recording it read, not the customer."""
    rows = await conn.fetch(
        "SELECT id FROM recordings WHERE customer_id = $1"
        " OR (key_owner = 'customer' AND key_owner_id = $1)", customer_id)
    return [r["id"] for r in rows]


@dataclass(frozen=True)
class EventFilter:
    actor: str | None = None
    action: str | None = None
    target: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_seq: int | None = None
    subjects: list[UUID] | None = None  # events about any of them


@dataclass(frozen=True)
class AuditEvent:
    """A stored audit event; `hash` is its link in the chain."""

    seq: int
    at: datetime
    actor: str
    actor_kind: str
    role: str | None
    action: str
    target_type: str | None
    target_id: str | None
    company: str | None
    reason: str | None
    outcome: str
    request_id: str | None
    client_ip: str | None
    detail: dict[str, Any]
    company_ids: list[UUID] | None
    subject_ids: list[UUID] | None
    hash: bytes


_AUDIT_EVENT_FIELDS = tuple(f.name for f in fields(AuditEvent))


async def search_events(conn: asyncpg.Connection, wanted: EventFilter,
                        limit: int) -> list[AuditEvent]:
    """Events matching the filter, newest first; row-level security limits them to the
    connection's scope."""
    rows = await conn.fetch(
        "SELECT * FROM audit_events WHERE ($1::text IS NULL OR actor = $1)"
        " AND ($2::text IS NULL OR action = $2) AND ($3::text IS NULL OR target_id = $3)"
        " AND ($4::timestamptz IS NULL OR at >= $4) AND ($5::timestamptz IS NULL OR at < $5)"
        " AND ($6::bigint IS NULL OR seq < $6)"
        " AND ($8::uuid[] IS NULL OR subject_ids && $8::uuid[]"
        "      OR target_id = ANY($8::uuid[]::text[]))"
        " ORDER BY seq DESC LIMIT $7",
        wanted.actor, wanted.action, wanted.target, wanted.since, wanted.until,
        wanted.before_seq, limit, wanted.subjects,
    )
    return [AuditEvent(**{**{name: r[name] for name in _AUDIT_EVENT_FIELDS},
                          "hash": bytes(r["hash"])}) for r in rows]
