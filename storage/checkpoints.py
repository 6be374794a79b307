"""Checkpoints of the audit head in S3, and checking the chain against them.

The hash chain alone does not stop someone who rewrites all of it in SQL; a checkpoint
object outside the database (object-locked where the bucket supports it) pins the hash
the chain had at that sequence number, so such a rewrite no longer matches.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from minio.commonconfig import COMPLIANCE
from minio.retention import Retention

from storage.audit import GENESIS, ChainReport, verify_chain
from storage.errors import ObjectMissing, Unavailable
from storage.objects import ObjectStore

logger = logging.getLogger(__name__)

PREFIX = "audit/checkpoints/"
# A checkpoint must outlive every record whose processing it vouches for.
RETENTION = timedelta(days=3650)


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: bytes
    at: datetime
    object_key: str
    locked: bool = False

    def document(self) -> bytes:
        body = {"seq": self.seq, "hash": self.hash.hex(),
                "at": self.at.astimezone(UTC).isoformat(timespec="microseconds")}
        return json.dumps(body, sort_keys=True).encode()


@dataclass(frozen=True)
class CheckpointReport:
    checked: int
    first_bad: int | None = None
    problem: str | None = None


def object_key(seq: int) -> str:
    return f"{PREFIX}{seq:020d}.json"


async def bucket_has_object_lock(objects: ObjectStore) -> bool:
    """Ask the bucket (a read, no body) rather than provoke a refused retention PUT."""
    try:
        config = await objects.run(objects.client.get_object_lock_config, objects.bucket)
    except Unavailable:
        return False
    return config is not None


async def _put_checkpoint(objects: ObjectStore, key: str, data: bytes, until: datetime) -> bool:
    """Put with COMPLIANCE retention where the bucket has object lock; True if it was locked."""
    if await bucket_has_object_lock(objects):
        await objects.run(
            objects.client.put_object, objects.bucket, key, io.BytesIO(data), len(data),
            content_type="application/json",
            retention=Retention(COMPLIANCE, until), legal_hold=False,
        )
        return True
    logger.warning("the bucket has no object lock; audit checkpoint stored without retention",
                   extra={"bucket": objects.bucket})
    await objects.put_bytes(key, data)
    return False


async def write_checkpoint(pool: asyncpg.Pool, objects: ObjectStore) -> Checkpoint:
    """Write the current audit head to S3 and record it in `audit_checkpoints`."""
    async with pool.acquire() as conn:
        head = await conn.fetchrow("SELECT seq, hash FROM audit_head")
        assert head is not None
        now = datetime.now(UTC)
        checkpoint = Checkpoint(seq=int(head["seq"]), hash=bytes(head["hash"]), at=now,
                                object_key=object_key(int(head["seq"])))
        locked = await _put_checkpoint(objects, checkpoint.object_key, checkpoint.document(),
                                   now + RETENTION)
        await conn.execute(
            "INSERT INTO audit_checkpoints (seq, hash, object_key, at) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (seq) DO NOTHING",
            checkpoint.seq, checkpoint.hash, checkpoint.object_key, now,
        )
    return Checkpoint(checkpoint.seq, checkpoint.hash, now, checkpoint.object_key, locked)


async def latest_checkpoint_seq(conn: asyncpg.Connection) -> int | None:
    value = await conn.fetchval("SELECT max(seq) FROM audit_checkpoints")
    return None if value is None else int(value)


async def verify_checkpoints(conn: asyncpg.Connection, objects: ObjectStore) -> CheckpointReport:
    """Every checkpoint in S3 must name an event that exists with exactly that hash."""
    keys = sorted(await objects.list_keys(PREFIX))
    checked = 0
    first_bad: int | None = None
    problem: str | None = None
    for key in keys:
        try:
            document = json.loads(await objects.get_bytes(key))
            seq, expected = int(document["seq"]), bytes.fromhex(document["hash"])
        except ObjectMissing:
            continue  # listed, then gone: nothing to compare against
        except (ValueError, KeyError, TypeError):
            return CheckpointReport(checked, None, f"checkpoint object {key} is unreadable")
        checked += 1
        if seq == 0:
            actual: bytes | None = GENESIS
        else:
            # Every company's events: the check compares hashes, nothing more leaves it.
            async with conn.transaction(readonly=True):
                await conn.execute("SELECT tallenne_set_scope(true, '{}')")
                stored = await conn.fetchval("SELECT hash FROM audit_events WHERE seq = $1",
                                             seq)
            actual = bytes(stored) if stored is not None else None
        if actual == expected:
            continue
        if first_bad is None or seq < first_bad:
            first_bad = seq
            problem = (f"event {seq} is missing but the S3 checkpoint names it" if actual is None
                       else f"event {seq} does not match its S3 checkpoint")
    return CheckpointReport(checked, first_bad, problem)


async def verify_trail(conn: asyncpg.Connection, objects: ObjectStore) -> ChainReport:
    """The chain recomputed, then held against every S3 checkpoint; the earliest fault wins."""
    chain = await verify_chain(conn)
    pinned = await verify_checkpoints(conn, objects)
    report = ChainReport(chain.ok, chain.events, chain.first_bad, chain.problem,
                         checkpoints=pinned.checked)
    if pinned.problem is None:
        return report
    if chain.ok or (pinned.first_bad is not None and chain.first_bad is not None
                    and pinned.first_bad < chain.first_bad):
        return ChainReport(False, chain.events, pinned.first_bad, pinned.problem,
                           checkpoints=pinned.checked)
    return report
