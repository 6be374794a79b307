"""The key snapshot: the one copy of the key store that leaves the database.

Database backups carry no owner keys (`tallenne backup` dumps `customer_keys` and
`company_keys` without their rows). What a restore needs to open the audio again is this
snapshot: every customer and company key, as wrapped in the key store, plus the ids of the
erased customers, in one encrypted object (`key-snapshot`) in the key bucket. There is only
ever one: each backup writes it, and every erasure overwrites it at once, so the snapshot
never holds the key of a customer erased before it was written. A backup taken before an
erasure, restored with every secret and the current snapshot, no longer opens the erased
customer's calls.

Layout (streamed both ways, never whole in memory):

    b"TLNKEYS1"   magic
    4 bytes       length of the header, big-endian
    header        JSON: snapshot_id, created_at, kek_version, due, format
    segments      storage.crypto segments under HKDF(master key `kek_version`,
                  salt = SHA-256 of the header), object id = snapshot_id; the plaintext is
                  NDJSON, one entry a line:
                  {"t": "customer"|"company", "id", "v": master key version, "k": base64}
                  {"t": "erased", "id", "at"}
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import struct
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from storage.crypto import (
    STORED_SEGMENT_SIZE,
    SegmentDecryptor,
    SegmentEncryptor,
    derive_key,
    plaintext_size,
    segment_count,
)
from storage.db import Scope, apply_scope
from storage.errors import IntegrityError, InvalidInput, ObjectMissing, Unavailable
from storage.keys import MasterKeys, owner_key_context
from storage.objects import ObjectStore

logger = logging.getLogger(__name__)

OBJECT_KEY = "key-snapshot"
MAGIC = b"TLNKEYS1"
FORMAT = "tallenne-key-snapshot/1"
SNAPSHOT_LOCK = 0x7A11E63
_INFO = b"tallenne key snapshot"
_BATCH = 1000
_CHUNK = 16 * 64 * 1024  # plaintext handed to the encryptor at once
_READ = 16 * STORED_SEGMENT_SIZE


@dataclass(frozen=True)
class SnapshotHeader:
    snapshot_id: uuid.UUID
    created_at: datetime
    kek_version: int
    due: int

    def encode(self) -> bytes:
        return json.dumps({
            "format": FORMAT, "snapshot_id": str(self.snapshot_id),
            "created_at": self.created_at.isoformat(), "kek_version": self.kek_version,
            "due": self.due,
        }, sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> SnapshotHeader:
        try:
            data = json.loads(raw)
            if data.get("format") != FORMAT:
                raise ValueError(f"unknown key snapshot format {data.get('format')!r}")
            return cls(uuid.UUID(data["snapshot_id"]), datetime.fromisoformat(data["created_at"]),
                       int(data["kek_version"]), int(data["due"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(f"the key snapshot's header is unreadable: {exc}") from None


def _snapshot_key(masters: MasterKeys, header: bytes, kek_version: int) -> bytes:
    master = masters.keys.get(kek_version)
    if master is None:
        raise IntegrityError(f"the key snapshot is sealed by master key version {kek_version},"
                             " which is not configured")
    return derive_key(master, _INFO, salt=hashlib.sha256(header).digest())


@dataclass
class SnapshotInfo:
    snapshot_id: str
    created_at: str
    kek_version: int
    customer_keys: int = 0
    company_keys: int = 0
    erased_customers: int = 0
    bytes: int = 0
    old_versions_removed: int = 0

    def report(self) -> dict[str, Any]:
        return dict(vars(self))


# --- writing --------------------------------------------------------------------------------


async def _lines(conn: asyncpg.Connection, info: SnapshotInfo) -> AsyncIterator[bytes]:
    """The snapshot's plaintext, a batch of NDJSON lines at a time, read by cursors in the
    caller's (repeatable-read) transaction."""
    queries: tuple[tuple[str, str], ...] = (
        ("customer", "SELECT customer_id AS id, kek_version, wrapped_key FROM customer_keys"
                     " ORDER BY customer_id"),
        ("company", "SELECT company_id AS id, kek_version, wrapped_key FROM company_keys"
                    " ORDER BY company_id"),
    )
    out = bytearray()
    for kind, query in queries:
        async for row in conn.cursor(query, prefetch=_BATCH):
            out += json.dumps({"t": kind, "id": str(row["id"]), "v": row["kek_version"],
                               "k": base64.b64encode(bytes(row["wrapped_key"])).decode()},
                              separators=(",", ":")).encode() + b"\n"
            if kind == "customer":
                info.customer_keys += 1
            else:
                info.company_keys += 1
            if len(out) >= _CHUNK:
                yield bytes(out)
                out.clear()
    async for row in conn.cursor("SELECT customer_id, erased_at FROM erasure_ledger"
                                 " ORDER BY customer_id", prefetch=_BATCH):
        out += json.dumps({"t": "erased", "id": str(row["customer_id"]),
                           "at": row["erased_at"].isoformat()},
                          separators=(",", ":")).encode() + b"\n"
        info.erased_customers += 1
        if len(out) >= _CHUNK:
            yield bytes(out)
            out.clear()
    yield bytes(out)


async def _sealed(conn: asyncpg.Connection, masters: MasterKeys, header: SnapshotHeader,
                  info: SnapshotInfo) -> AsyncIterator[bytes]:
    raw = header.encode()
    prefix = MAGIC + struct.pack(">I", len(raw)) + raw
    encryptor = SegmentEncryptor(_snapshot_key(masters, raw, header.kek_version),
                                 header.snapshot_id)
    info.bytes = len(prefix)
    yield prefix
    async for plain in _lines(conn, info):
        sealed = bytes(encryptor.update(plain))
        info.bytes += len(sealed)
        yield sealed
    last = encryptor.finalize()
    info.bytes += len(last)
    yield last


async def write_snapshot(
    pool: asyncpg.Pool, store: ObjectStore, masters: MasterKeys
) -> SnapshotInfo:
    """Overwrite the key snapshot with the key store as it is now. One writer at a time (an
    advisory lock), each reading the store after the previous one finished, so the last
    snapshot written follows every erasure committed before it began."""
    await _ensure_bucket(store)
    async with pool.acquire() as conn:
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", SNAPSHOT_LOCK)
            return await _write_locked(conn, store, masters)
        finally:
            await conn.execute("SELECT pg_advisory_unlock_all()")


async def _write_locked(
    conn: asyncpg.Connection, store: ObjectStore, masters: MasterKeys
) -> SnapshotInfo:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await apply_scope(conn, Scope.everything())
        state = await conn.fetchrow("SELECT due, now() AS at FROM key_snapshot_state")
        assert state is not None, "migration 016 inserts the state row"
        header = SnapshotHeader(uuid.uuid4(), state["at"], masters.version, int(state["due"]))
        info = SnapshotInfo(str(header.snapshot_id), header.created_at.isoformat(),
                            header.kek_version)
        await store.put_chunks(OBJECT_KEY, _sealed(conn, masters, header, info))
    info.old_versions_removed = await _drop_old_versions(store)
    await conn.execute(
        "UPDATE key_snapshot_state SET written = greatest(coalesce(written, 0), $1),"
        " written_at = now(), snapshot_id = $2",
        header.due, header.snapshot_id,
    )
    logger.info("key snapshot written", extra={"snapshot_id": info.snapshot_id,
                                               "customer_keys": info.customer_keys,
                                               "company_keys": info.company_keys})
    return info


_checked_buckets: set[str] = set()


async def _ensure_bucket(store: ObjectStore) -> None:
    if store.bucket not in _checked_buckets:
        await store.ensure_bucket()
        _checked_buckets.add(store.bucket)


def _latest(flag: object) -> bool:
    """The listing's IsLatest, which the S3 client hands over as the text "true"/"false"."""
    return str(flag).strip().lower() == "true"


async def _drop_old_versions(store: ObjectStore) -> int:
    """On a versioned key bucket, delete every version of the snapshot but the newest: an
    overwritten snapshot must not survive as an older version."""
    try:
        config = await store.run(store.client.get_bucket_versioning, store.bucket)
    except Unavailable:
        return 0
    if str(config.status) not in ("Enabled", "Suspended"):
        return 0

    def _drop() -> int:
        from minio.deleteobjects import DeleteObject

        old = [DeleteObject(OBJECT_KEY, o.version_id)
               for o in store.client.list_objects(store.bucket, prefix=OBJECT_KEY,
                                                  include_version=True)
               if o.object_name == OBJECT_KEY and not _latest(o.is_latest)]
        errors = list(store.client.remove_objects(store.bucket, old)) if old else []
        if errors:
            raise Unavailable("old versions of the key snapshot could not be deleted")
        return len(old)

    return await store.run(_drop)


async def snapshot_due(pool: asyncpg.Pool) -> bool:
    """Whether a snapshot was ever written and the key store has changed in a way (a key
    destroyed or re-wrapped) it has not followed yet."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT due, written FROM key_snapshot_state")
    return row is not None and row["written"] is not None and row["written"] < row["due"]


async def refresh_if_due(
    pool: asyncpg.Pool, store: ObjectStore, masters: MasterKeys
) -> SnapshotInfo | None:
    """Overwrite the snapshot when it holds a key the store no longer does (after an
    erasure, a purge of customers or a rotation); None when nothing was due. Until a first
    backup writes one there is no snapshot to follow."""
    if not await snapshot_due(pool):
        return None
    return await write_snapshot(pool, store, masters)


# --- reading --------------------------------------------------------------------------------


@dataclass
class SnapshotContents:
    """What a pass over a snapshot learnt: its header, how many keys it holds and the
    erased customers (ids and times only). The keys themselves go to the pass's sink."""

    header: SnapshotHeader
    customer_keys: int = 0
    company_keys: int = 0
    erased: dict[uuid.UUID, str] = field(default_factory=dict)


KeyBatch = list[tuple[str, uuid.UUID, int, bytes]]  # (owner kind, owner id, version, wrapped)
KeySink = Callable[[KeyBatch], Awaitable[None]]


class SnapshotReader:
    """Opens a snapshot as its bytes stream in: the header first, then whole lines."""

    def __init__(self, masters: MasterKeys, total_size: int) -> None:
        self._masters = masters
        self._total = total_size
        self._head = bytearray()
        self._decryptor: SegmentDecryptor | None = None
        self._partial = bytearray()
        self.header: SnapshotHeader | None = None

    def _open_header(self) -> int:
        if len(self._head) < len(MAGIC) + 4:
            return 0
        if bytes(self._head[:len(MAGIC)]) != MAGIC:
            raise InvalidInput("this is not a tallenne key snapshot")
        length = int.from_bytes(self._head[len(MAGIC):len(MAGIC) + 4], "big")
        start = len(MAGIC) + 4
        if length > 4096:
            raise InvalidInput("the key snapshot's header is too long")
        if len(self._head) < start + length:
            return 0
        raw = bytes(self._head[start:start + length])
        self.header = SnapshotHeader.decode(raw)
        stored = self._total - start - length
        segments = segment_count(plaintext_size(stored))
        self._decryptor = SegmentDecryptor(
            _snapshot_key(self._masters, raw, self.header.kek_version),
            self.header.snapshot_id, 0, segments - 1)
        return start + length

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        if self._decryptor is None:
            self._head += chunk
            used = self._open_header()
            if not used:
                return []
            chunk = bytes(self._head[used:])
            self._head.clear()
        assert self._decryptor is not None
        return self._split(self._decryptor.update(chunk))

    def finish(self) -> list[dict[str, Any]]:
        if self._decryptor is None:
            raise IntegrityError("the key snapshot ends inside its header")
        entries = self._split(self._decryptor.finalize())
        if self._partial:
            raise IntegrityError("the key snapshot ends inside an entry")
        return entries

    def _split(self, plain: bytes) -> list[dict[str, Any]]:
        self._partial += plain
        *lines, rest = self._partial.split(b"\n")
        self._partial = bytearray(rest)
        return [json.loads(line) for line in lines if line]


async def read_snapshot(
    chunks: AsyncIterator[bytes], total_size: int, masters: MasterKeys,
    sink: KeySink | None = None,
) -> SnapshotContents:
    """One streaming pass over a snapshot: every wrapped key is checked to unwrap under the
    configured master keys (so a wrong master key fails before a restore changes anything)
    and handed to `sink` in batches; the erased customers' ids are returned."""
    reader = SnapshotReader(masters, total_size)
    contents: SnapshotContents | None = None
    batch: KeyBatch = []

    async def take(entries: list[dict[str, Any]]) -> None:
        nonlocal contents
        if contents is None:
            assert reader.header is not None
            contents = SnapshotContents(reader.header)
        for entry in entries:
            kind = entry.get("t")
            owner_id = uuid.UUID(entry["id"])
            if kind == "erased":
                contents.erased[owner_id] = str(entry["at"])
                continue
            if kind not in ("customer", "company"):
                raise IntegrityError(f"the key snapshot holds an unknown entry {kind!r}")
            version, wrapped = int(entry["v"]), base64.b64decode(entry["k"])
            masters.unwrap(version, wrapped, context=owner_key_context(kind, owner_id))
            if kind == "customer":
                contents.customer_keys += 1
            else:
                contents.company_keys += 1
            batch.append((kind, owner_id, version, wrapped))
        if sink is not None and len(batch) >= _BATCH:
            await sink(batch[:])
        if sink is None or len(batch) >= _BATCH:
            batch.clear()

    try:
        async for chunk in chunks:
            await take(reader.feed(chunk))
        await take(reader.finish())
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"the key snapshot is unreadable: {exc}") from None
    if sink is not None and batch:
        await sink(batch)
    if contents is None:
        raise IntegrityError("the key snapshot is empty")
    return contents


@dataclass(frozen=True)
class SnapshotSource:
    """Where a restore reads the snapshot: the key bucket, or a file copied out of it."""

    store: ObjectStore | None = None
    path: Path | None = None

    async def size(self) -> int:
        if self.path is not None:
            return self.path.stat().st_size
        assert self.store is not None
        try:
            return (await self.store.stat(OBJECT_KEY)).size
        except ObjectMissing:
            raise InvalidInput(
                f"the key bucket {self.store.bucket} holds no key snapshot") from None

    async def chunks(self) -> AsyncIterator[bytes]:
        if self.path is not None:
            with self.path.open("rb") as source:
                while block := await asyncio.to_thread(source.read, _READ):
                    yield block
            return
        assert self.store is not None
        async for block in self.store.iter_range(OBJECT_KEY, chunk_size=_READ):
            yield block

    async def read(self, masters: MasterKeys, sink: KeySink | None = None) -> SnapshotContents:
        return await read_snapshot(self.chunks(), await self.size(), masters, sink)


async def load_keys(
    conn: asyncpg.Connection, source: SnapshotSource, masters: MasterKeys
) -> tuple[SnapshotContents, dict[str, int]]:
    """Put the snapshot's keys into an empty key store, streaming (in the caller's
    all-companies transaction); keys of customers or companies the database does not hold
    are left out."""
    await conn.execute(
        "CREATE TEMPORARY TABLE snapshot_keys (kind text, owner_id uuid, kek_version integer,"
        " wrapped_key bytea) ON COMMIT DROP")

    async def sink(batch: KeyBatch) -> None:
        await conn.copy_records_to_table("snapshot_keys", records=batch)

    contents = await source.read(masters, sink)
    customers = await conn.fetchval(
        "WITH put AS (INSERT INTO customer_keys (customer_id, kek_version, wrapped_key)"
        " SELECT s.owner_id, s.kek_version, s.wrapped_key FROM snapshot_keys s"
        " JOIN customers c ON c.id = s.owner_id WHERE s.kind = 'customer' RETURNING 1)"
        " SELECT count(*) FROM put")
    companies = await conn.fetchval(
        "WITH put AS (INSERT INTO company_keys (company_id, kek_version, wrapped_key)"
        " SELECT s.owner_id, s.kek_version, s.wrapped_key FROM snapshot_keys s"
        " JOIN companies c ON c.id = s.owner_id WHERE s.kind = 'company' RETURNING 1)"
        " SELECT count(*) FROM put")
    loaded = {"customer_keys": int(customers), "company_keys": int(companies)}
    loaded["without_owner"] = (contents.customer_keys + contents.company_keys
                               - loaded["customer_keys"] - loaded["company_keys"])
    return contents, loaded


async def count_by_version(conn: asyncpg.Connection) -> dict[int, int]:
    """How many customer and company keys are wrapped under each master-key version."""
    rows = await conn.fetch(
        "SELECT kek_version, count(*) AS n FROM (SELECT kek_version FROM customer_keys"
        " UNION ALL SELECT kek_version FROM company_keys) k GROUP BY kek_version")
    return {int(r["kek_version"]): int(r["n"]) for r in rows}


async def holds_keys(conn: asyncpg.Connection) -> bool:
    """Whether the key store holds any customer or company key."""
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM customer_keys)"
                                    " OR EXISTS (SELECT 1 FROM company_keys)"))
