"""Signed checkpoints of the audit head in a bucket of their own, and checking the chain
against them.

The hash chain alone does not stop someone who rewrites all of it in SQL; a checkpoint
signed with a key the database never sees (Ed25519, C2SP signed-note format, see
storage.signed_note) and stored in a separate bucket through a write-only credential pins
the hash the chain had at that sequence number. Each checkpoint names the previous one of
its epoch, so a deleted one leaves a gap. A restore (a legitimate roll-back) starts a new
epoch with a signed checkpoint of the restored head: checkpoints of an older epoch beyond
that point no longer bind the chain, and nothing but the signing key can start an epoch.
"""

from __future__ import annotations

import io
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from minio.commonconfig import COMPLIANCE
from minio.retention import Retention

from storage.audit import GENESIS, ChainReport, verify_chain
from storage.errors import ObjectMissing, Unavailable
from storage.objects import ObjectStore
from storage.signed_note import CheckpointText, NoteError, NoteSigner, NoteVerifier

logger = logging.getLogger(__name__)

PREFIX = "audit/checkpoints/"
PROBE_KEY = "audit/lock-probe"
# A checkpoint must outlive every record whose processing it vouches for.
RETENTION = timedelta(days=3650)
# Long enough to try the delete, short enough that the probe object does not pile up.
PROBE_RETENTION = timedelta(seconds=5)
_KEY = re.compile(r"^audit/checkpoints/e(\d{4,})/(\d{20})\.note$")
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('tallenne audit checkpoint', 0))"


@dataclass
class CheckpointBucket:
    """The checkpoint bucket seen through two credentials: `writer` may only put objects
    (where the store can grant that); `reader` lists and reads them for verification."""

    writer: ObjectStore
    reader: ObjectStore
    keep_for: timedelta = RETENTION
    retention: bool = False  # the bucket has Object Lock: checkpoints carry retention

    async def close(self) -> None:
        await self.writer.close()
        if self.reader is not self.writer:
            await self.reader.close()


@dataclass(frozen=True)
class LockProbe:
    enforced: bool
    detail: str

    @property
    def state(self) -> str:
        return "enforced" if self.enforced else "not enforced"


@dataclass(frozen=True)
class Checkpoint:
    epoch: int
    seq: int
    hash: bytes
    at: datetime
    object_key: str
    locked: bool = False


@dataclass(frozen=True)
class CheckpointReport:
    checked: int
    first_bad: int | None = None
    problem: str | None = None


def object_key(epoch: int, seq: int) -> str:
    return f"{PREFIX}e{epoch:04d}/{seq:020d}.note"


def parse_key(key: str) -> tuple[int, int] | None:
    found = _KEY.match(key)
    return (int(found.group(1)), int(found.group(2))) if found else None


async def bucket_has_object_lock(objects: ObjectStore) -> bool:
    """Ask the bucket (a read, no body) rather than provoke a refused retention PUT."""
    try:
        config = await objects.run(objects.client.get_object_lock_config, objects.bucket)
    except Unavailable:
        return False
    return config is not None


async def open_bucket(bucket: CheckpointBucket) -> None:
    """Create the bucket with Object Lock requested (reader's credential) and note whether
    the bucket has it."""
    await bucket.reader.ensure_bucket(object_lock=True)
    bucket.retention = (bucket.keep_for > timedelta(0)
                        and await bucket_has_object_lock(bucket.reader))


async def probe_lock(bucket: CheckpointBucket) -> LockProbe:
    """Whether the store really refuses to delete a locked object: put a probe object with
    retention, then try to delete that very version with the reader's (stronger)
    credential. A lock accepted but not enforced is reported as not enforced."""
    if not bucket.retention:
        return LockProbe(False, "the checkpoint bucket has no Object Lock"
                         if bucket.keep_for > timedelta(0) else "no retention is configured")
    await _forget_old_probes(bucket.reader)
    until = datetime.now(UTC) + PROBE_RETENTION
    body = f"lock probe {uuid.uuid4()}\n".encode()
    try:
        written = await bucket.writer.run(
            bucket.writer.client.put_object, bucket.writer.bucket, PROBE_KEY,
            io.BytesIO(body), len(body), retention=Retention(COMPLIANCE, until))
    except Unavailable as exc:
        return LockProbe(False, f"a locked probe object could not be written: {exc.detail}")
    version = written.version_id
    if version is None:
        return LockProbe(False, "the store keeps no object versions")
    try:
        await bucket.reader.run(bucket.reader.client.remove_object, bucket.reader.bucket,
                                PROBE_KEY, version_id=version)
    except Unavailable:
        try:
            await bucket.reader.run(bucket.reader.client.stat_object, bucket.reader.bucket,
                                    PROBE_KEY, version_id=version)
        except (Unavailable, ObjectMissing):
            return LockProbe(False, "the delete was refused but the probe object is gone")
        return LockProbe(True, "the store refused to delete a locked object")
    except ObjectMissing:
        return LockProbe(False, "the probe object vanished")
    return LockProbe(False, "the store deleted a locked object: retention is not enforced")


async def _forget_old_probes(store: ObjectStore) -> None:
    """Delete the versions of earlier probes (their lock ran out long ago)."""
    cutoff = datetime.now(UTC) - 10 * PROBE_RETENTION

    def old_versions() -> list[str | None]:
        return [o.version_id for o in store.client.list_objects(
            store.bucket, prefix=PROBE_KEY, include_version=True)
            if o.object_name == PROBE_KEY and o.last_modified is not None
            and o.last_modified < cutoff]

    try:
        for version in await store.run(old_versions):
            await store.run(store.client.remove_object, store.bucket, PROBE_KEY,
                            version_id=version)
    except (Unavailable, ObjectMissing) as exc:
        logger.info("old lock probes left in place", extra={"error": repr(exc)})


async def _put(bucket: CheckpointBucket, key: str, note: str) -> bool:
    data = note.encode()
    if bucket.retention:
        await bucket.writer.run(
            bucket.writer.client.put_object, bucket.writer.bucket, key, io.BytesIO(data),
            len(data), content_type="text/plain; charset=utf-8",
            retention=Retention(COMPLIANCE, datetime.now(UTC) + bucket.keep_for),
        )
        return True
    await bucket.writer.put_bytes(key, data)
    return False


async def _write(conn: asyncpg.Connection, bucket: CheckpointBucket, signer: NoteSigner,
                 *, new_epoch: int | None) -> Checkpoint:
    async with conn.transaction():
        # Checkpoint writers take turns; appends go on (the head row is read, not locked,
        # so a slow S3 put never holds up the audit trail).
        await conn.execute(_LOCK)
        head = await conn.fetchrow("SELECT seq, hash, epoch FROM audit_head")
        assert head is not None
        seq, digest = int(head["seq"]), bytes(head["hash"])
        epoch = new_epoch if new_epoch is not None else int(head["epoch"])
        previous = None
        if new_epoch is None:
            previous = await conn.fetchval(
                "SELECT max(seq) FROM audit_checkpoints WHERE epoch = $1 AND seq < $2",
                epoch, seq)
        text = CheckpointText(signer.verifier.name, seq, digest, epoch,
                              None if previous is None else int(previous))
        key = object_key(epoch, seq)
        locked = await _put(bucket, key, signer.sign(text.render()))
        now = datetime.now(UTC)
        if new_epoch is not None:
            await conn.execute("UPDATE audit_head SET epoch = $1", new_epoch)
        await conn.execute(
            "INSERT INTO audit_checkpoints (epoch, seq, hash, object_key, at)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            epoch, seq, digest, key, now,
        )
    return Checkpoint(epoch, seq, digest, now, key, locked)


async def write_checkpoint(
    pool: asyncpg.Pool, bucket: CheckpointBucket, signer: NoteSigner
) -> Checkpoint:
    """Sign the current audit head, put it in the checkpoint bucket, record it."""
    async with pool.acquire() as conn:
        return await _write(conn, bucket, signer, new_epoch=None)


async def start_epoch(
    pool: asyncpg.Pool, bucket: CheckpointBucket, signer: NoteSigner
) -> Checkpoint:
    """After a restore: a new epoch whose first checkpoint is the restored head."""
    keys = await bucket.reader.list_keys(PREFIX)
    in_bucket = [parsed[0] for parsed in map(parse_key, keys) if parsed is not None]
    async with pool.acquire() as conn:
        current = int(await conn.fetchval("SELECT epoch FROM audit_head"))
        return await _write(conn, bucket, signer, new_epoch=max([current, *in_bucket]) + 1)


async def audit_head_seq(conn: asyncpg.Connection) -> int | None:
    """The sequence number of the latest audit event (0 before the first)."""
    value = await conn.fetchval("SELECT seq FROM audit_head")
    return None if value is None else int(value)


async def latest_checkpoint_seq(conn: asyncpg.Connection) -> int | None:
    value = await conn.fetchval(
        "SELECT max(c.seq) FROM audit_checkpoints c, audit_head h WHERE c.epoch = h.epoch")
    return None if value is None else int(value)


@dataclass(frozen=True)
class StoredNote:
    key: str
    note: str
    # A plain DELETE in the versioned, locked bucket leaves a delete marker on top of the
    # locked version: the checkpoint is hidden from a listing, not gone. It is read from that
    # version and reported as deleted.
    deleted: bool = False


async def signed_notes(bucket: ObjectStore) -> list[StoredNote]:
    """Every checkpoint in the bucket, oldest epoch and seq first, those hidden behind a
    delete marker included (where the store lists versions)."""
    try:
        listed = await bucket.run(_checkpoint_versions, bucket)
    except Unavailable as exc:
        # A store (or credential) without version listing: what a plain listing shows.
        logger.info("checkpoint versions not listed", extra={"error": exc.detail})
        listed = {k: (None, False) for k in await bucket.list_keys(PREFIX)}
    notes = []
    for key in sorted(k for k in listed if parse_key(k) is not None):
        version, deleted = listed[key]
        try:
            data = (await bucket.get_bytes(key) if version is None
                    else await bucket.run(_read_version, bucket, key, version))
        except ObjectMissing:
            continue
        notes.append(StoredNote(key, data.decode("utf-8", "replace"), deleted))
    return notes


def _checkpoint_versions(bucket: ObjectStore) -> dict[str, tuple[str | None, bool]]:
    """Per checkpoint key: the version to read (its newest that is not a delete marker) and
    whether a delete marker is its latest version."""
    newest: dict[str, tuple[datetime, str | None]] = {}
    deleted: set[str] = set()
    for entry in bucket.client.list_objects(bucket.bucket, prefix=PREFIX, recursive=True,
                                            include_version=True):
        key = entry.object_name
        if key is None:
            continue
        if entry.is_delete_marker:
            # minio gives IsLatest as the text of the XML element.
            if str(entry.is_latest).lower() == "true":
                deleted.add(key)
            continue
        at = entry.last_modified or datetime.min.replace(tzinfo=UTC)
        if key not in newest or at > newest[key][0]:
            newest[key] = (at, entry.version_id)
    return {key: (None if version in (None, "null") else version, key in deleted)
            for key, (_, version) in newest.items()}


def _read_version(bucket: ObjectStore, key: str, version: str) -> bytes:
    response = bucket.client.get_object(bucket.bucket, key, version_id=version)
    try:
        return bytes(response.read())
    finally:
        response.close()
        response.release_conn()


async def _event_hashes(conn: asyncpg.Connection, seqs: set[int]) -> dict[int, bytes]:
    """The stored hash of each of these events, across every company: the check compares
    hashes, nothing more leaves it."""
    async with conn.transaction():
        await conn.execute("SELECT tallenne_set_scope(true, '{}')")
        rows = await conn.fetch(
            "SELECT seq, hash FROM audit_events WHERE seq = ANY($1::bigint[])", sorted(seqs))
    return {int(row["seq"]): bytes(row["hash"]) for row in rows}


async def verify_checkpoints(
    conn: asyncpg.Connection, bucket: ObjectStore, verifier: NoteVerifier
) -> CheckpointReport:
    """Every checkpoint must carry a good signature, link to the previous one of its epoch,
    and name an event that exists with exactly that hash; the head may not be behind the
    newest checkpoint; no checkpoint the database recorded may be missing."""
    faults: list[tuple[int, str]] = []
    by_epoch: dict[int, dict[int, CheckpointText]] = {}
    notes = await signed_notes(bucket)
    for stored in notes:
        key = stored.key
        epoch, seq = parse_key(key) or (0, 0)
        if stored.deleted:
            faults.append((seq, f"the checkpoint of event {seq} (epoch {epoch}) was deleted"
                                " from the bucket (a delete marker hides it)"))
        try:
            text = CheckpointText.parse(verifier.open(stored.note))
        except NoteError as exc:
            faults.append((seq, f"the checkpoint of event {seq} is not validly signed ({exc})"))
            continue
        if (text.origin, text.size, text.epoch) != (verifier.name, seq, epoch):
            faults.append((seq, f"the checkpoint object {key} holds another checkpoint"))
            continue
        by_epoch.setdefault(epoch, {})[seq] = text
    head = await conn.fetchrow("SELECT seq, epoch FROM audit_head")
    assert head is not None
    head_seq, head_epoch = int(head["seq"]), int(head["epoch"])
    recorded = await conn.fetch(
        "SELECT epoch, seq, object_key FROM audit_checkpoints WHERE epoch IS NOT NULL")
    present = {stored.key for stored in notes}
    for row in recorded:
        if row["object_key"] not in present:
            faults.append((int(row["seq"]), f"the checkpoint of event {row['seq']} (epoch "
                                            f"{row['epoch']}) is missing from the bucket"))
    if by_epoch and max(by_epoch) > head_epoch:
        faults.append((head_seq + 1, f"the checkpoints reach epoch {max(by_epoch)} but the "
                                     f"database is in epoch {head_epoch}: it was rolled back"))
    fork: dict[int, int | None] = {}
    for epoch in range(1, head_epoch + 1):
        if epoch > 1 and epoch not in by_epoch:
            faults.append((head_seq + 1, f"epoch {epoch} has no signed start checkpoint"))
    for epoch, texts in by_epoch.items():
        later = by_epoch.get(epoch + 1)
        fork[epoch] = min(later) if later else None
        for seq in sorted(texts):
            # Each names the one before it that the database recorded; a checkpoint in
            # between whose row was lost (the database failed after the upload) is an extra
            # one, checked like the others. One that is named but gone was hidden.
            named = texts[seq].previous
            if named is not None and (named not in texts or named >= seq):
                faults.append((named, f"the checkpoint of event {named} (epoch {epoch})"
                                      " is missing from the bucket"))
    checked = 0
    hashes = await _event_hashes(conn, {seq for texts in by_epoch.values() for seq in texts})
    for epoch, texts in by_epoch.items():
        limit = fork.get(epoch)
        for seq, text in texts.items():
            if limit is not None and seq >= limit:
                # Abandoned by a restore that started the next epoch at `limit`: the next
                # epoch's start checkpoint is what binds that event now (after a recovery
                # the service may have appended a new event of that number first).
                continue
            checked += 1
            if seq == 0:
                actual: bytes | None = GENESIS
            else:
                actual = hashes.get(seq)
            if actual == text.hash:
                continue
            if actual is None and seq > head_seq and epoch == head_epoch:
                faults.append((head_seq + 1, f"the head (event {head_seq}) is behind the signed"
                                             f" checkpoint of event {seq}: events were removed"))
            elif actual is None:
                faults.append((seq, f"event {seq} is missing but a signed checkpoint names it"))
            else:
                faults.append((seq, f"event {seq} does not match its signed checkpoint"))
    if not faults:
        return CheckpointReport(checked)
    first_bad, problem = min(faults, key=lambda f: f[0])
    return CheckpointReport(checked, first_bad, problem)


async def verify_trail(
    conn: asyncpg.Connection, bucket: ObjectStore, verifier: NoteVerifier
) -> ChainReport:
    """The chain recomputed, then held against every signed checkpoint; the earliest fault
    wins."""
    chain = await verify_chain(conn)
    pinned = await verify_checkpoints(conn, bucket, verifier)
    report = ChainReport(chain.ok, chain.events, chain.first_bad, chain.problem,
                         checkpoints=pinned.checked)
    if pinned.problem is None:
        return report
    if chain.ok or (pinned.first_bad is not None and chain.first_bad is not None
                    and pinned.first_bad < chain.first_bad):
        return ChainReport(False, chain.events, pinned.first_bad, pinned.problem,
                           checkpoints=pinned.checked)
    return report
