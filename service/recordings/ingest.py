"""Storing one recording exactly once: the single ingest path of the API and the importer.

Order of durability: the row is committed `pending` (with the wrapped data key) before the
object is uploaded and flipped to `stored` after; nothing is acknowledged before the flip. A
crash in between leaves a pending row or an object without a row, which the reconciler removes.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO, Literal, cast

import asyncpg

from schemas.recordings import RecordingMetadata
from service.http.errors import TooManyRequests
from storage import keys
from storage import recordings as store
from storage.audio import AudioInfo, probe_audio
from storage.audio.analysis import Analysed
from storage.crypto import new_key, stored_size
from storage.customers import link_lock
from storage.db import Scope, scoped
from storage.errors import Conflict, InvalidInput, StorageError
from storage.objects import LONG_PART_SIZE, ObjectStore
from storage.recordings import NewRecording, Recording, StoredAnalysis
from storage.sealed_audio import EncryptingReader, derived_object_id, seal_bytes

logger = logging.getLogger(__name__)

# A pending row younger than this belongs to an upload that may still be running.
PENDING_GRACE = timedelta(minutes=15)
# How long a duplicate upload waits for a concurrent one of the same call to finish.
CONCURRENT_WAIT_S = 10.0
# Bytes of S3 part buffers that the uploads of one process may hold at once: a short call
# holds its whole (encrypted) size, a long one three 5 MiB parts. Memory stays bounded whatever
# the number of clients, while many short calls still upload side by side; the others wait
# with their audio spooled on disk.
UPLOAD_MEMORY_BUDGET = 32 * 1024**2
LONG_UPLOAD_BUFFER = 3 * LONG_PART_SIZE
UPLOAD_RETRY_AFTER_S = 5


class ByteBudget:
    """A semaphore counted in bytes."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def reserve(self, amount: int) -> AsyncIterator[None]:
        amount = min(amount, self.total)
        async with self._changed:
            await self._changed.wait_for(lambda: self.free >= amount)
            self.free -= amount
        try:
            yield
        finally:
            async with self._changed:
                self.free += amount
                self._changed.notify_all()


class Uploads:
    """The uploads of one application (or one import command) under way: their number,
    capped at TALLENNE_MAX_UPLOADS_IN_FLIGHT (each spools to disk and holds a connection),
    and the bytes of S3 part buffers they hold. Created with the application, so two
    applications in one process (tests, benchmarks) never share or leak each other's count."""

    def __init__(self, max_in_flight: int, memory_budget: int = UPLOAD_MEMORY_BUDGET) -> None:
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.budget = ByteBudget(memory_budget)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """One of the upload slots, or 429."""
        if self.in_flight >= self.max_in_flight:
            raise TooManyRequests("too many recordings are being uploaded; retry shortly",
                                  retry_after=UPLOAD_RETRY_AFTER_S)
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1


@dataclass(frozen=True)
class Target:
    """Where a recording goes, resolved from its metadata before any audio is read."""

    metadata: RecordingMetadata
    company_id: uuid.UUID
    customer_id: uuid.UUID | None


@dataclass(frozen=True)
class Ingested:
    recording: Recording
    created: bool

    def audit_detail(self) -> dict[str, object]:
        """What the audit event of an ingest records, whoever pushed the call."""
        recording = self.recording
        return {"size_bytes": recording.size_bytes, "sha256": recording.sha256,
                "format": recording.format,
                "created": self.created}


def unknown_company() -> InvalidInput:
    # Same answer for a company that does not exist and one outside the caller's scope.
    return InvalidInput("unknown company", [(["metadata", "company"], "unknown company")])


async def resolve_target(pool: asyncpg.Pool, scope: Scope, metadata: RecordingMetadata) -> Target:
    async with scoped(pool, scope) as conn:
        company_id = await store.company_id_by_code(conn, metadata.company)
        if company_id is None or not scope.allows(company_id):
            raise unknown_company()
        customer_id = None
        if metadata.customer_number is not None:
            # An unknown number is kept and linked when the customer record arrives.
            customer_id = await store.customer_id_by_number(
                conn, company_id, metadata.customer_number
            )
    return Target(metadata, company_id, customer_id)


def object_key_for(recording_id: uuid.UUID, now: datetime) -> str:
    """Random and free of personal data: only the upload month and a UUID."""
    return f"recordings/{now:%Y/%m}/{recording_id}"


async def probe(path: Path, content_type: str | None, filename: str | None) -> AudioInfo:
    return await asyncio.to_thread(
        probe_audio, path, content_type=content_type, filename=filename
    )


async def _existing_outcome(
    conn: asyncpg.Connection, target: Target, sha256: str
) -> Ingested | Literal["proceed", "wait"]:
    """With the call's lock held: the answer for a call that is already stored, "proceed"
    when none is (a crashed upload's pending row is removed), or "wait" while another
    upload of the call is under way."""
    m = target.metadata
    if await store.is_erased(conn, target.company_id, m.external_id):
        raise Conflict("this call was erased and is not accepted again")
    existing = await store.by_external_id(conn, target.company_id, m.external_id)
    if existing is None:
        return "proceed"
    if existing.sha256 != sha256:
        raise Conflict("a recording of this call with different audio already exists")
    if existing.state != "pending":
        return Ingested(existing, created=False)
    age = await store.pending_age(conn, existing.id)
    if age is not None and age > PENDING_GRACE:
        # A crashed upload of the same call: take its place.
        await store.delete_pending(conn, existing.id)
        return "proceed"
    return "wait"


@dataclass(frozen=True)
class Spooled:
    """A received recording on local disk, probed: its file, format, size and SHA-256."""

    path: Path
    info: AudioInfo
    size: int
    sha256: str


async def store_recording(
    pool: asyncpg.Pool,
    objects: ObjectStore,
    masters: keys.MasterKeys,
    scope: Scope,
    target: Target,
    audio: Spooled,
    budget: ByteBudget,
) -> Ingested:
    """Encrypt and upload a probed spool file, holding its part buffers' bytes of `budget`
    meanwhile; idempotent on (company, external_id)."""
    m = target.metadata
    if m.sha256 is not None and m.sha256 != audio.sha256:
        raise InvalidInput(
            "the audio does not match the given sha256",
            [(["metadata", "sha256"], "does not match the audio")],
        )
    # The slot is taken before the pending row is written, so a row never waits in a queue
    # long enough for the reconciler to take it for a crashed upload.
    async with budget.reserve(min(stored_size(audio.size), LONG_UPLOAD_BUFFER)):
        return await _store_in_slot(pool, objects, masters, scope, target, audio)


async def _store_in_slot(
    pool: asyncpg.Pool,
    objects: ObjectStore,
    masters: keys.MasterKeys,
    scope: Scope,
    target: Target,
    audio: Spooled,
) -> Ingested:
    m = target.metadata
    recording_id = uuid.uuid4()
    object_key = object_key_for(recording_id, datetime.now(UTC))
    data_key = new_key()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CONCURRENT_WAIT_S
    while True:
        # One transaction holds the call's lock from the look for an earlier upload of it
        # (a retry is answered as such) to the pending row.
        async with scoped(pool, scope) as conn:
            await store.lock_call(conn, target.company_id, m.external_id)
            found = await _existing_outcome(conn, target, audio.sha256)
            if isinstance(found, Ingested):
                return found
            if found == "proceed":
                customer_id = await _customer_now(conn, target)
                owner = await keys.owner_key(
                    conn,
                    masters,
                    owner="customer" if customer_id else "company",
                    owner_id=customer_id or target.company_id,
                )
                await store.insert_pending(
                    conn,
                    NewRecording(
                        id=recording_id,
                        company_id=target.company_id,
                        customer_id=customer_id,
                        metadata=m,
                        audio=audio.info,
                        size_bytes=audio.size,
                        sha256=audio.sha256,
                        object_key=object_key,
                        key_owner=owner.owner,
                        key_owner_id=owner.owner_id,
                        wrapped_key=keys.wrap_data_key(owner, recording_id, data_key),
                    ),
                )
                break
        # Another upload of the call is under way: its outcome decides this one's.
        if loop.time() > deadline:
            raise Conflict("an upload of this call is in progress; retry later")
        await asyncio.sleep(0.2)

    try:
        reader = EncryptingReader(audio.path, data_key, recording_id)
        try:
            await objects.put_long_stream(
                object_key, cast(BinaryIO, reader), stored_size(audio.size)
            )
        finally:
            reader.close()
        async with scoped(pool, scope) as conn:
            recording = await store.mark_stored(conn, recording_id)
    except (StorageError, OSError, asyncio.CancelledError):
        await _abandon(pool, objects, scope, recording_id, object_key)
        raise
    return Ingested(recording, created=True)


def sealed_analysis(analysed: Analysed, recording_id: uuid.UUID, data_key: bytes) -> StoredAnalysis:
    return StoredAnalysis(
        analysed.analysis, analysed.channels, len(analysed.peaks),
        seal_bytes(analysed.peaks, data_key, derived_object_id(recording_id, "peaks")),
    )


async def _customer_now(conn: asyncpg.Connection, target: Target) -> uuid.UUID | None:
    """The customer of the call, read again under the shared link lock: either a customer
    record pushed since `resolve_target` is seen here, or its upsert (holding the lock
    exclusively) waits for this row and moves its data key under the customer's key."""
    number = target.metadata.customer_number
    if number is None:
        return None
    await link_lock(conn, target.company_id, shared=True)
    return await store.customer_id_by_number(conn, target.company_id, number)


async def _abandon(
    pool: asyncpg.Pool, objects: ObjectStore, scope: Scope, recording_id: uuid.UUID, key: str
) -> None:
    """Best effort undo of a failed upload; whatever remains is the reconciler's."""
    try:
        async with scoped(pool, scope) as conn:
            await store.delete_pending(conn, recording_id)
        await objects.delete([key])
    except Exception:
        logger.warning("could not undo a failed upload", extra={"recording_id": str(recording_id)})
