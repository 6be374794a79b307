"""Recording endpoints: streamed ingest, search, one recording, erasure and evaluations.
Replay of the audio lives in service/recordings/replay.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from prometheus_client import Counter

from schemas.evaluation_forms import score_errors
from schemas.recordings import (
    EvaluationIn,
    EvaluationList,
    EvaluationOut,
    RecordingErasedOut,
    RecordingEraseIn,
    RecordingMetadata,
    RecordingOut,
    RecordingPage,
    RecordingQuery,
)
from service.http import cursor
from service.http.api import (
    RouteTable,
    decode_json,
    json_response,
    parse_model,
    read_json,
    read_query,
    within_read_timeout,
)
from service.http.auth import audit, principal_of, read_detail
from service.http.errors import MalformedBody, TooLarge, UnsupportedMediaType
from service.http.keys import ANALYSIS_QUEUE, KEYRING, OBJECTS, POOL, SETTINGS, UPLOADS
from service.recordings.ingest import Spooled, probe, resolve_target, store_recording
from service.recordings.lookup import (
    METADATA_LIMIT,
    load_recording,
    recording_id_of,
    search_filter,
)
from service.recordings.presentation import evaluation_out, form_out, recording_out
from storage import erasure, evaluation_forms
from storage import recordings as store
from storage.db import scoped
from storage.errors import InvalidInput

routes = RouteTable()
INGESTED = Counter("tallenne_recordings_ingested",
                   "Recordings pushed and answered, by outcome (stored; repeated: a retry)",
                   ["outcome"])
INGESTED_BYTES = Counter("tallenne_recordings_ingested_bytes",
                         "Audio bytes of the recordings newly stored")

READ_CHUNK = 64 * 1024
SPOOL_WRITE = 1024 * 1024
# Multipart framing and the metadata part on top of the audio itself.
ENVELOPE_ALLOWANCE = METADATA_LIMIT + 16 * 1024

_MULTIPART_SCHEMA = {
    "multipart/form-data": {
        "schema": {
            "type": "object",
            "required": ["metadata", "audio"],
            "properties": {
                "metadata": RecordingMetadata.model_json_schema(),
                "audio": {"type": "string", "format": "binary"},
            },
        },
        "encoding": {"metadata": {"contentType": "application/json"}},
    }
}


# --- ingest --------------------------------------------------------------------------------


def _part_error(name: str, msg: str) -> InvalidInput:
    return InvalidInput(msg, [(["body", name], msg)])


def _not_multipart() -> MalformedBody:
    return MalformedBody("the body is not multipart/form-data as its Content-Type says (no or"
                         " a wrong boundary)", [(["body"], "malformed multipart framing")])


async def _next_part(request: web.Request, reader: Any, name: str) -> BodyPartReader:
    try:
        part = await within_read_timeout(request, reader.next())
    except ValueError:
        # aiohttp's reader: the body does not begin with the declared boundary.
        raise _not_multipart() from None
    if not isinstance(part, BodyPartReader) or part.name != name:
        order = "first" if name == "metadata" else "after the metadata part"
        raise _part_error(name, f"the part {name!r} must come {order}")
    return part


async def _read_metadata(request: web.Request, part: BodyPartReader) -> RecordingMetadata:
    raw = bytearray()
    while chunk := await within_read_timeout(request, part.read_chunk(READ_CHUNK)):
        raw += chunk
        if len(raw) > METADATA_LIMIT:
            raise TooLarge(f"the metadata part exceeds {METADATA_LIMIT} bytes")
    return parse_model(RecordingMetadata, decode_json(bytes(raw), "metadata"), "metadata")


async def _spool_audio(
    request: web.Request, part: BodyPartReader, path: Path, limit: int
) -> tuple[int, str]:
    """Copy the audio part to `path` in bounded chunks; (size, sha256 hex).

    Hashing and writing run in a worker thread per megabyte, off the event loop.
    """
    digest = hashlib.sha256()
    size = 0
    pending = bytearray()

    def flush(block: bytes, out: Any) -> None:
        digest.update(block)
        out.write(block)

    with path.open("wb") as out:
        while chunk := await within_read_timeout(request, part.read_chunk(READ_CHUNK)):
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"the recording exceeds the limit of {limit} bytes")
            pending += chunk
            if len(pending) >= SPOOL_WRITE:
                await asyncio.to_thread(flush, bytes(pending), out)
                pending.clear()
        if pending:
            await asyncio.to_thread(flush, bytes(pending), out)
    return size, digest.hexdigest()


@routes.route(
    "POST", "/api/v1/recordings", action="recording.ingest", tag="recordings",
    summary="Push a recording (multipart: metadata part first, then audio); 200 for a retry",
    request_content=_MULTIPART_SCHEMA, response=RecordingOut, status=201,
    extra_statuses=(200, 409, 413, 415, 429, 503),
)
async def ingest_recording(request: web.Request) -> web.Response:
    app = request.app
    limit = app[SETTINGS].max_recording_bytes
    if request.content_length is not None and request.content_length > limit + ENVELOPE_ALLOWANCE:
        raise TooLarge(f"the recording exceeds the limit of {limit} bytes")
    if request.content_type != "multipart/form-data":
        raise UnsupportedMediaType("the body must be sent as Content-Type: multipart/form-data"
                                   f", not {request.content_type!r}")
    with app[UPLOADS].slot():
        return await _ingest_recording(request)


async def _ingest_recording(request: web.Request) -> web.Response:
    principal = principal_of(request)
    app = request.app
    limit = app[SETTINGS].max_recording_bytes
    try:
        reader = await request.multipart()
    except ValueError:
        raise _not_multipart() from None  # a Content-Type without a usable boundary
    metadata = await _read_metadata(request, await _next_part(request, reader, "metadata"))
    target = await resolve_target(app[POOL], principal.scope, metadata)
    audio = await _next_part(request, reader, "audio")

    fd, name = tempfile.mkstemp(prefix="tallenne-upload-")
    os.close(fd)
    spool: Path | None = Path(name)
    try:
        assert spool is not None
        size, sha256 = await _spool_audio(request, audio, spool, limit)
        info = await probe(spool, audio.headers.get("Content-Type"), audio.filename)
        outcome = await store_recording(
            app[POOL], app[OBJECTS], app[KEYRING].masters, principal.scope, target,
            Spooled(spool, info, size, sha256), app[UPLOADS].budget,
        )
        if outcome.created:
            # The analysis worker takes the spool file over and analyses the call from it.
            await app[ANALYSIS_QUEUE].submit(outcome.recording.id, spool)
            spool = None
    finally:
        if spool is not None:
            await asyncio.to_thread(spool.unlink, True)
    recording = recording_out(outcome.recording)
    INGESTED.labels("stored" if outcome.created else "repeated").inc()
    if outcome.created:
        INGESTED_BYTES.inc(recording.size_bytes)
    await audit(
        request, "recording.ingest", target_type="recording", target_id=str(recording.id),
        company=recording.company, detail=outcome.audit_detail(),
    )
    return json_response(recording, status=201 if outcome.created else 200)


# --- search --------------------------------------------------------------------------------


@routes.route(
    "GET", "/api/v1/recordings", action="recording.search", tag="recordings",
    summary="Search recordings, newest first (from inclusive, to exclusive, on started_at)",
    query=RecordingQuery, response=RecordingPage,
)
async def search_recordings(request: web.Request) -> web.Response:
    principal = principal_of(request)
    query = read_query(request, RecordingQuery)
    after = (cursor.decode(request, "recordings", query.cursor, datetime.fromisoformat,
                           uuid.UUID) if query.cursor else None)
    async with scoped(request.app[POOL], principal.scope) as conn:
        company_id: uuid.UUID | None = None
        if query.company is not None:
            # An unknown company simply matches nothing; the scope hides the others.
            company_id = await store.company_id_by_code(conn, query.company) or uuid.UUID(int=0)
        where = search_filter(company_id, query)
        if company_id is not None and not principal.scope.allows(company_id):
            # Nothing there is visible; asking PostgreSQL would walk the index to its end.
            found = []
        else:
            found = await store.search(conn, where, after=after, limit=query.limit + 1)
    items = [recording_out(r) for r in found[: query.limit]]
    next_cursor = (cursor.encode(request, "recordings", items[-1].started_at, items[-1].id)
                   if len(found) > query.limit else None)
    filters = query.model_dump(mode="json", by_alias=True, exclude_none=True,
                               exclude={"cursor", "limit"})
    ids_detail, subjects = read_detail(customers=[i.customer_id for i in items],
                                       recordings=[i.id for i in items])
    await audit(request, "recording.search", target_type="recording",
                company_codes={i.company for i in items}, subject_ids=subjects,
                detail={"filter": filters, "results": len(items), "paged": after is not None,
                        **ids_detail})
    return json_response(RecordingPage(items=items, next_cursor=next_cursor))


@routes.route(
    "GET", "/api/v1/recordings/{id}", action="recording.search", tag="recordings",
    summary="One recording's metadata (404 when erased)", response=RecordingOut,
)
async def get_recording(request: web.Request) -> web.Response:
    recording = await load_recording(request.app[POOL], principal_of(request).scope,
                                     recording_id_of(request))
    await audit(request, "recording.read", target_type="recording",
                target_id=str(recording.id), company=recording.company,
                subject_ids=[recording.id, *filter(None, [recording.customer_id])])
    return json_response(recording_out(recording))


# --- erasure -------------------------------------------------------------------------------


@routes.route(
    "DELETE", "/api/v1/recordings/{id}", action="recording.erase", tag="recordings",
    summary="Erase a recording's audio and metadata, keeping a tombstone",
    body=RecordingEraseIn, response=RecordingErasedOut, extra_statuses=(409,),
)
async def erase_recording(request: web.Request) -> web.Response:
    principal = principal_of(request)
    recording_id = recording_id_of(request)
    body = await read_json(request, RecordingEraseIn)
    async with scoped(request.app[POOL], principal.scope) as conn:
        tombstone = await store.erase(conn, recording_id, erased_by=principal.name,
                                      reason=body.reason)
        company = await store.company_code(conn, tombstone.company_id)
        # Before commit: a restore of an older backup must learn of the erasure (if the
        # commit fails, the entry names a recording whose erasure was asked for and allowed).
        await erasure.write_recording_ledger_object(
            request.app[OBJECTS], recording_id, tombstone.company_id, tombstone.erased_at)
    # After commit: a crash here leaves an object without a row, which the reconciler removes.
    await request.app[OBJECTS].delete([tombstone.object_key])
    await audit(request, "recording.erase", target_type="recording",
                target_id=str(recording_id), company=company, reason=body.reason,
                subject_ids=[recording_id])
    return json_response(
        RecordingErasedOut(id=recording_id, erased_at=tombstone.erased_at, reason=body.reason)
    )


# --- evaluations ---------------------------------------------------------------------------


@routes.route(
    "POST", "/api/v1/recordings/{id}/evaluations", action="evaluation.write",
    tag="evaluations", summary="Score the call (one evaluation per evaluator and form)",
    body=EvaluationIn, response=EvaluationOut, status=201, extra_statuses=(200,),
)
async def evaluate_recording(request: web.Request) -> web.Response:
    principal = principal_of(request)
    recording_id = recording_id_of(request)
    body = await read_json(request, EvaluationIn)
    async with scoped(request.app[POOL], principal.scope) as conn:
        recording = await store.get(conn, recording_id)
        form = await evaluation_forms.usable(conn, body.form, recording.company_id)
        errors = score_errors(form_out(form), body.scores)
        if errors:
            raise InvalidInput(f"the scores do not fit the form {form.name!r}: {errors[0][1]}",
                               errors)
        evaluation, created = await store.save_evaluation(conn, recording, principal.name, body,
                                                          form.version)
    await audit(request, "evaluation.write", target_type="recording",
                target_id=str(recording_id), company=recording.company,
                detail={"form": body.form, "form_version": form.version, "created": created})
    return json_response(evaluation_out(evaluation), status=201 if created else 200)


@routes.route(
    "GET", "/api/v1/recordings/{id}/evaluations", action="evaluation.read",
    tag="evaluations", summary="The call's evaluations", response=EvaluationList,
)
async def list_evaluations(request: web.Request) -> web.Response:
    recording_id = recording_id_of(request)
    async with scoped(request.app[POOL], principal_of(request).scope) as conn:
        recording = await store.get(conn, recording_id)
        items = await store.evaluations(conn, recording.id)
    await audit(request, "evaluation.read", target_type="recording",
                target_id=str(recording_id), company=recording.company,
                detail={"results": len(items)})
    return json_response(EvaluationList(items=[evaluation_out(e) for e in items]))
