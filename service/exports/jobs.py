"""Export jobs carried out: planning a job's calls, writing each call's files (once), the
`s3` format's partitioned prefix, and the download that re-streams a `zip`/`vcon` result.
Shared by the service's background worker, `tallenne export` and bench.export."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import asyncpg
from prometheus_client import Counter

from schemas.disclosures import EXCLUDED_BY
from schemas.exports import ExportFilter, ExportOut
from schemas.vcon import VconRecording, build_vcon, vcon_json
from service.recordings.lookup import search_filter
from service.recordings.presentation import evaluation_out, recording_out
from storage import exports as store
from storage import keys
from storage import recordings as recordings_store
from storage.age_stream import encrypt_to_age
from storage.audit import AuditEntry, AuditLog
from storage.db import Scope, scoped
from storage.disclosures import log_disclosure
from storage.errors import (
    IntegrityError,
    KeyDestroyed,
    RecordingIntegrityError,
    StorageError,
    Unavailable,
)
from storage.export_bundle import BundleEntry, BundleFile, iter_export, manifest_json, sha256sums
from storage.export_layout import s3_export_key, s3_key, vcon_files, zip_files
from storage.exports import ExportFile, ExportJob, PendingCall, PlannedCall
from storage.objects import ObjectStore
from storage.recordings import Evaluation, Recording
from storage.sealed_audio import iter_plaintext

logger = logging.getLogger(__name__)
EXPORTS_ENDED = Counter("tallenne_exports_ended", "Export jobs ended, by state", ["state"])
EXPORTED_BYTES = Counter("tallenne_exported_bytes", "Bytes of the export jobs done")

PLAN_PAGE = 1000
CALL_BATCH = 50
DISCLOSED_FIELDS = ["recording_audio", "recording_metadata", "evaluations"]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class ExportContext:
    """What carrying out an export needs: the database, the audio bucket, the export bucket
    (for the `s3` format), the master keys and the audit log."""

    pool: asyncpg.Pool
    objects: ObjectStore
    target: Callable[[], ObjectStore]
    masters: keys.MasterKeys
    audit: AuditLog
    public_url: str
    lease: timedelta
    progress: Callable[[ExportJob], None] | None = None
    _ensured: set[str] = field(default_factory=set)

    async def target_store(self) -> ObjectStore:
        target = self.target()
        if target.bucket not in self._ensured:
            await target.ensure_bucket()
            self._ensured.add(target.bucket)
        return target

    async def remove_s3(self, prefix: str | None) -> None:
        """Take back what an `s3` export wrote under its prefix (cancelled, failed or
        expired); Unavailable while the export bucket keeps any of it, so that it is tried
        again."""
        if not prefix:
            return
        target = await self.target_store()
        async for page in target.iter_keys(prefix.rstrip("/") + "/"):
            if kept := await target.delete(page):
                raise Unavailable(f"the export bucket did not delete {len(kept)} of the"
                                  " export's objects")


def export_out(job: ExportJob) -> ExportOut:
    """A job as the API and the CLI show it."""
    return ExportOut(id=job.id, state=job.state, done=job.done, total=job.total,
                     bytes=job.bytes, error=job.error, format=job.format,
                     held_back=job.held_back, created_at=job.created_at,
                     finished_at=job.finished_at, expires_at=job.expires_at)


async def matching_recordings(conn: asyncpg.Connection, scope: Scope,
                              wanted: ExportFilter) -> AsyncIterator[Recording]:
    """Every recording the filter selects in `scope` (a scoped connection), newest first."""
    company_id: uuid.UUID | None = None
    if wanted.company is not None:
        company_id = (await recordings_store.company_id_by_code(conn, wanted.company)
                      or uuid.UUID(int=0))
        if not scope.allows(company_id):
            return
    where = search_filter(company_id, wanted)
    after = None
    while True:
        page = await recordings_store.search(conn, where, after=after, limit=PLAN_PAGE)
        for recording in page:
            yield recording
        if len(page) < PLAN_PAGE:
            return
        after = (page[-1].started_at, page[-1].id)


def _held_back(recording: Recording, prohibited: set[uuid.UUID]) -> bool:
    """See schemas.exports.HELD_BACK_RULE."""
    return (bool(recording.legal_holds) or recording.state == "corrupt"
            or (recording.customer_id is not None and recording.customer_id in prohibited))


async def prohibited_customers(conn: asyncpg.Connection, job: ExportJob,
                               customer_ids: Iterable[uuid.UUID | None]) -> set[uuid.UUID]:
    """The customers among `customer_ids` who prohibit the use the job's purpose makes of
    their calls (an export that leaves the controller for marketing); asked again when the
    calls are written and downloaded, as a prohibition may come at any time."""
    uses = sorted(EXCLUDED_BY.get(job.purpose, frozenset())) if (  # type: ignore[call-overload]
        job.recipient and job.purpose) else []
    return await store.prohibited(conn, sorted({c for c in customer_ids if c}), uses)


async def plan_job(ctx: ExportContext, job: ExportJob) -> None:
    """Fix the job's calls and, for an export that leaves the controller, log the disclosure
    per company before any file is written (over-, never under-recorded)."""
    wanted = ExportFilter.model_validate(job.filter)
    async with scoped(ctx.pool, job.scope) as conn:
        # Only what planning needs is kept of each call, not the call itself.
        found = [PlannedCall(r.id, r.company_id, r.customer_id, _held_back(r, set()))
                 async for r in matching_recordings(conn, job.scope, wanted)]
        prohibited = await prohibited_customers(conn, job, (c.customer_id for c in found))
        found.reverse()  # oldest first: the order files are written and listed in
        await store.plan(conn, job.id, [
            replace(c, held_back=True) if c.customer_id in prohibited else c for c in found])
        if job.recipient is not None:
            customers = await store.customers_of(conn, job.id)
            for company_id in await store.companies_of(conn, job.id):
                await log_disclosure(
                    conn, company_id=company_id, disclosed_by=job.created_by,
                    recipient=job.recipient, recipient_country=job.recipient_country or "",
                    purpose=job.purpose or "subcontractor", legal_basis=job.legal_basis or "",
                    fields=DISCLOSED_FIELDS, customer_ids=customers.get(company_id, []),
                )


def call_metadata(recording: Recording, evaluations: Sequence[Evaluation]) -> bytes:
    document = {"recording": recording_out(recording).model_dump(mode="json"),
                "evaluations": [evaluation_out(e).model_dump(mode="json") for e in evaluations]}
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()


def _small(name: str, call: PendingCall, kind: str, content: bytes) -> ExportFile:
    return ExportFile(name, call.seq, call.recording_id, call.company_id, kind, len(content),
                      hashlib.sha256(content).hexdigest(), content)


async def data_key_of(conn: asyncpg.Connection, masters: keys.MasterKeys,
                      recording: Recording) -> bytes:
    owner = await keys.owner_key(conn, masters, owner=recording.key_owner,
                                 owner_id=recording.key_owner_id, create=False)
    return keys.unwrap_data_key(owner, recording.id, recording.wrapped_key)


def audio_of(objects: ObjectStore, recording: Recording,
             data_key: bytes) -> AsyncGenerator[bytes, None]:
    return iter_plaintext(objects, recording.object_key, data_key=data_key,
                          object_id=recording.id, size=recording.size_bytes, start=0,
                          end_inclusive=recording.size_bytes - 1,
                          expected_sha256=recording.sha256)


async def _counted(chunks: AsyncIterator[bytes], digest: Any, size: list[int],
                   ) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        digest.update(chunk)
        size[0] += len(chunk)
        yield chunk


async def _put_s3(ctx: ExportContext, job: ExportJob, call: PendingCall, name: str,
                  kind: str, chunks: AsyncIterator[bytes]) -> ExportFile:
    """One file of a call under the job's prefix; age-encrypted when the job names a key.
    What the manifest lists is what was written."""
    target = await ctx.target_store()
    if job.recipient_public_key is not None:
        chunks = encrypt_to_age(chunks, job.recipient_public_key)
        name += ".age"
    digest = hashlib.sha256()
    size = [0]
    key = job.target_prefix.rstrip("/") + "/" + name if job.target_prefix else name
    await target.put_chunks(key, _counted(chunks, digest, size))
    return ExportFile(name, call.seq, call.recording_id, call.company_id, kind, size[0],
                      digest.hexdigest(), None, key)


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


def listed_files(ctx: ExportContext, job: ExportJob, call: PendingCall, recording: Recording,
                 evaluations: Sequence[Evaluation]) -> list[ExportFile]:
    """A `zip` or `vcon` call's files: the small ones with their bytes, the audio by its
    stored size and SHA-256 (re-read when the result is downloaded)."""
    audio = ExportFile("", call.seq, call.recording_id, call.company_id, "audio",
                       recording.size_bytes, recording.sha256)
    if job.format == "zip":
        names = zip_files(recording)
        return [replace(audio, name=names.audio),
                _small(names.metadata, call, "metadata", call_metadata(recording, evaluations))]
    names = vcon_files(recording)
    document = vcon_json(build_vcon(
        VconRecording.model_validate(recording_out(recording)), host=_host(ctx.public_url),
        evaluations=[evaluation_out(e) for e in evaluations],
        audio_url=f"{ctx.public_url.rstrip('/')}/api/v1/recordings/{recording.id}/audio"))
    return [replace(audio, name=names.audio), _small(names.metadata, call, "vcon", document)]


async def export_listed_calls(ctx: ExportContext, job: ExportJob,
                              calls: Sequence[PendingCall]) -> None:
    """`zip`/`vcon`: a batch of calls listed in one transaction that holds their rows (an
    erasure waits until they are listed; an erased call is never listed)."""
    ids = [c.recording_id for c in calls]
    async with scoped(ctx.pool, job.scope) as conn:
        present = await store.lock_calls(conn, ids)
        found = await store.recordings_by_ids(conn, [i for i in ids if i in present])
        evaluations = await store.evaluations_by_call(conn, list(found))
        prohibited = await prohibited_customers(conn, job,
                                                (r.customer_id for r in found.values()))
        handled: list[tuple[int, str, Sequence[ExportFile]]] = []
        for call in calls:
            recording = found.get(call.recording_id)
            if recording is None:
                handled.append((call.seq, "erased", []))
            elif _held_back(recording, prohibited):
                handled.append((call.seq, "held_back", []))
            else:
                handled.append((call.seq, "done", listed_files(
                    ctx, job, call, recording, evaluations.get(recording.id, []))))
        await store.finish_calls(conn, job.id, handled)


async def export_call(ctx: ExportContext, job: ExportJob, call: PendingCall) -> None:
    """`s3`: write one call's files and mark it handled, in one transaction that holds the
    call's row (an erasure waits until the call is written; an erased call is never
    written). A call written but not committed is written again under the same keys."""
    async with scoped(ctx.pool, job.scope) as conn:
        present = await store.lock_calls(conn, [call.recording_id])
        if not present:
            await store.finish_call(conn, job.id, call.seq, "erased", [])
            return
        recording = await recordings_store.get(conn, call.recording_id)
        prohibited = await prohibited_customers(conn, job, [recording.customer_id])
        if _held_back(recording, prohibited):
            await store.finish_call(conn, job.id, call.seq, "held_back", [])
            return
        evaluations = await recordings_store.evaluations(conn, recording.id)
        try:
            data_key = await data_key_of(conn, ctx.masters, recording)
        except KeyDestroyed:
            await store.finish_call(conn, job.id, call.seq, "erased", [])
            return
        prefix = s3_key("", recording, "metadata.json").rsplit("/", 1)[0]
        files = [
            await _put_s3(ctx, job, call, f"{prefix}/audio.{recording.format}", "audio",
                          audio_of(ctx.objects, recording, data_key)),
            await _put_s3(ctx, job, call, f"{prefix}/metadata.json", "metadata",
                          _one(call_metadata(recording, evaluations))),
        ]
        await store.finish_call(conn, job.id, call.seq, "done", files)


def _host(public_url: str) -> str:
    return public_url.split("://", 1)[1].split("/", 1)[0]


async def _all_files(ctx: ExportContext, job: ExportJob) -> list[BundleFile]:
    listed: list[BundleFile] = []
    async with scoped(ctx.pool, job.scope) as conn:
        async for batch in store.iter_files(conn, job.id):
            listed += [BundleFile(f.name, f.size, f.sha256) for f in batch]
    return listed


async def finish_s3(ctx: ExportContext, job: ExportJob) -> None:
    """manifest.json and SHA256SUMS at the top of the job's prefix."""
    target = await ctx.target_store()
    files = await _all_files(ctx, job)
    manifest = manifest_json(files, job.metadata, job.created_at)
    listed = [*files, BundleFile("manifest.json", len(manifest),
                                 hashlib.sha256(manifest).hexdigest())]
    prefix = job.target_prefix or ""
    await target.put_bytes(s3_export_key(prefix, "manifest.json"), manifest)
    await target.put_bytes(s3_export_key(prefix, "SHA256SUMS"), sha256sums(listed))


async def _current(ctx: ExportContext, job_id: uuid.UUID) -> ExportJob:
    async with scoped(ctx.pool, Scope.everything()) as conn:
        found = await store.get_job(conn, job_id)
    assert found is not None
    return found


async def _keep_lease(ctx: ExportContext, job_id: uuid.UUID, owner: str,
                      lost: asyncio.Event) -> None:
    """Renew the lease a third of its length at a time; set `lost` once the job is no longer
    this worker's (cancelled, or taken over)."""
    while True:
        await asyncio.sleep(ctx.lease.total_seconds() / 3)
        try:
            async with scoped(ctx.pool, Scope.everything()) as conn:
                if not await store.renew(conn, job_id, owner, ctx.lease):
                    lost.set()
                    return
        except (OSError, asyncpg.PostgresError):
            logger.warning("could not renew an export lease", extra={"export_id": str(job_id)})


async def _given_up(ctx: ExportContext, job: ExportJob) -> str:
    """The job is no longer this worker's: a cancelled `s3` export takes back what it wrote
    (a job taken over by another replica is left to it)."""
    state = (await _current(ctx, job.id)).state
    if state == "cancelled" and job.format == "s3":
        await ctx.remove_s3(job.target_prefix)
    return state


async def run_job(ctx: ExportContext, job: ExportJob, owner: str) -> str:
    """Carry out a claimed job to its end, or until it is cancelled or its lease is lost;
    returns the job's state as this worker leaves it. A cancellation of this task (the
    process going down) leaves the lease to run out, and another replica resumes."""
    lost = asyncio.Event()
    heartbeat = asyncio.create_task(_keep_lease(ctx, job.id, owner, lost))
    try:
        if job.total is None:
            await plan_job(ctx, job)
        while True:
            async with scoped(ctx.pool, job.scope) as conn:
                calls = await store.pending_calls(conn, job.id, CALL_BATCH)
            if not calls:
                break
            # Small files are listed a batch per transaction; s3 writes a call at a time.
            steps = [calls] if job.format != "s3" else [[call] for call in calls]
            for step in steps:
                if lost.is_set():
                    return await _given_up(ctx, job)
                if job.format == "s3":
                    await export_call(ctx, job, step[0])
                else:
                    await export_listed_calls(ctx, job, step)
                if ctx.progress is not None:
                    ctx.progress(await _current(ctx, job.id))
            if len(calls) < CALL_BATCH:
                break  # a short batch was the last: no call is planned after the plan
        if job.format == "s3":
            await finish_s3(ctx, job)
        state = "done"
        error = None
    except (StorageError, ValueError, OSError) as exc:
        logger.exception("export job failed", extra={"export_id": str(job.id)})
        state, error = "failed", f"{exc.__class__.__name__}: {exc}"
    except Exception as exc:
        logger.exception("export job failed", extra={"export_id": str(job.id)})
        state, error = "failed", exc.__class__.__name__
    finally:
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)
    async with scoped(ctx.pool, Scope.everything()) as conn:
        still_ours = await store.renew(conn, job.id, owner, ctx.lease)
        final = await store.get_job(conn, job.id)
        subjects = await store.subjects_of(conn, job.id)
    if not still_ours:
        return await _given_up(ctx, job)
    assert final is not None
    EXPORTS_ENDED.labels(state).inc()
    if state == "done":
        EXPORTED_BYTES.inc(final.bytes)
    # Audited before the job shows as finished, so that a download is never on record
    # ahead of the export it downloads.
    await ctx.audit.append(AuditEntry(
        actor=job.created_by, actor_kind=job.created_by_kind, role=job.created_by_role,
        action="export.finish", target_type="export", target_id=str(job.id),
        reason=job.reason, outcome="ok" if state == "done" else "failure",
        subject_ids=subjects,
        detail={"format": job.format, "calls": final.total, "held_back": final.held_back,
                "bytes": final.bytes, "error": error,
                **({"recipient": job.recipient, "recipient_country": job.recipient_country}
                   if job.recipient else {})},
    ))
    async with scoped(ctx.pool, Scope.everything()) as conn:
        finished = await store.finish_job(conn, job.id, owner, state, error)
    if not finished:
        return await _given_up(ctx, job)  # cancelled in the last moment
    if ctx.progress is not None:
        ctx.progress(await _current(ctx, job.id))
    return state


async def run_next(ctx: ExportContext, owner: str, job_id: uuid.UUID | None = None) -> bool:
    """Claim and carry out one job (the oldest waiting, or `job_id`); False when none was
    waiting (or `job_id` is another replica's)."""
    async with scoped(ctx.pool, Scope.everything()) as conn:
        job = await store.claim(conn, owner, ctx.lease, job_id)
    if job is None:
        return False
    await run_job(ctx, job, owner)
    return True


# --- the download ------------------------------------------------------------------------


@dataclass
class Withdrawn:
    """Calls of a finished job that are no longer exported when it is downloaded (erased or
    put under a hold since)."""

    calls: int = 0


class Prefetched:
    """An audio stream whose first piece is already being read (while the file before it
    still streams), so that consecutive calls follow one another without a pause."""

    def __init__(self, chunks: AsyncGenerator[bytes, None]) -> None:
        self._chunks = chunks
        self._first = asyncio.create_task(self._read_first())

    async def _read_first(self) -> bytes | None:
        try:
            return await anext(self._chunks)
        except StopAsyncIteration:
            return None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        first = await self._first
        if first is None:
            return
        yield first
        async for chunk in self._chunks:
            yield chunk

    async def abandon(self) -> None:
        """Stop reading, whether or not the stream was read to its end: its S3 response is
        released now, not when the stream is collected."""
        self._first.cancel()
        await asyncio.gather(self._first, return_exceptions=True)
        await self._chunks.aclose()


LOOKUP_BATCH = 100


async def _readable(ctx: ExportContext, job: ExportJob, ids: Sequence[uuid.UUID],
                    ) -> dict[uuid.UUID, tuple[Recording, bytes]]:
    """The calls still exportable now, with their data keys, in one transaction."""
    readable: dict[uuid.UUID, tuple[Recording, bytes]] = {}
    owners: dict[tuple[str, uuid.UUID], keys.OwnerKey | None] = {}
    async with scoped(ctx.pool, job.scope) as conn:
        found = await store.recordings_by_ids(conn, ids)
        prohibited = await prohibited_customers(conn, job,
                                                (r.customer_id for r in found.values()))
        for recording in found.values():
            if _held_back(recording, prohibited):
                continue
            owner_ref = (recording.key_owner, recording.key_owner_id)
            if owner_ref not in owners:
                try:
                    owners[owner_ref] = await keys.owner_key(
                        conn, ctx.masters, owner=recording.key_owner,
                        owner_id=recording.key_owner_id, create=False)
                except KeyDestroyed:
                    owners[owner_ref] = None
            owner = owners[owner_ref]
            if owner is not None:
                readable[recording.id] = (recording, keys.unwrap_data_key(
                    owner, recording.id, recording.wrapped_key))
    return readable


async def _call_audio(objects: ObjectStore, recording: Recording,
                      data_key: bytes) -> AsyncGenerator[bytes, None]:
    """A call's audio re-read for a download; audio that fails verification raises an error
    naming the call, so that it is marked and the alarm raised."""
    async with contextlib.aclosing(audio_of(objects, recording, data_key)) as chunks:
        try:
            async for chunk in chunks:
                yield chunk
        except IntegrityError as exc:
            raise RecordingIntegrityError(exc.detail, recording_id=recording.id,
                                          company=recording.company) from exc


async def bundle_entries(ctx: ExportContext, job: ExportJob,
                         withdrawn: Withdrawn) -> AsyncGenerator[BundleEntry, None]:
    """The job's files, each call re-checked and its audio re-read and verified as it
    streams; a call erased or held since the job ran is left out whole."""
    groups: dict[int, list[ExportFile]] = {}
    async with scoped(ctx.pool, job.scope) as conn:
        async for batch in store.iter_files(conn, job.id):
            for file in batch:
                # The listing is names and digests; what streams is the audio.
                groups.setdefault(file.seq, []).append(file)
    seqs = sorted(groups)
    current: Prefetched | None = None
    ahead: Prefetched | None = None
    try:
        for start in range(0, len(seqs), LOOKUP_BATCH):
            chunk = seqs[start:start + LOOKUP_BATCH]
            readable = await _readable(ctx, job, [groups[s][0].recording_id for s in chunk])
            calls = [(s, readable.get(groups[s][0].recording_id)) for s in chunk]
            withdrawn.calls += sum(found is None for _, found in calls)
            calls_left = [(s, found) for s, found in calls if found is not None]
            for index, (seq, (recording, data_key)) in enumerate(calls_left):
                if current is not None:
                    await current.abandon()
                current = ahead or Prefetched(_call_audio(ctx.objects, recording, data_key))
                ahead = None
                if index + 1 < len(calls_left):
                    following, following_key = calls_left[index + 1][1]
                    ahead = Prefetched(_call_audio(ctx.objects, following, following_key))
                started = recording.started_at
                for file in groups[seq]:
                    if file.content is not None:
                        yield BundleEntry(file.name, file.size, _one(file.content), started,
                                          file.sha256)
                    else:
                        yield BundleEntry(file.name, file.size, current, started,
                                          file.sha256, verified=True)
    finally:
        for stream in (current, ahead):
            if stream is not None:
                await stream.abandon()


async def download_stream(ctx: ExportContext, job: ExportJob) -> AsyncGenerator[bytes, None]:
    """The `zip`/`vcon` result as one streamed zip (age-encrypted when the job names a key).
    Closing it early (a client gone) closes the audio streams it was reading at once."""
    withdrawn = Withdrawn()
    metadata: dict[str, Any] = dict(job.metadata)
    async with contextlib.aclosing(bundle_entries(ctx, job, withdrawn)) as listed:

        async def entries() -> AsyncIterator[BundleEntry]:
            async for entry in listed:
                yield entry
            metadata["withdrawn_since"] = withdrawn.calls

        async with contextlib.aclosing(iter_export(
                entries(), metadata=metadata, recipient=job.recipient_public_key)) as chunks:
            async for chunk in chunks:
                yield chunk
