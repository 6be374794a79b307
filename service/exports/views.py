"""Export jobs over HTTP: create (202), progress, cancel and the audited download. Jobs are
started in service/exports/creation.py and run by service/exports/worker.py."""

from __future__ import annotations

import contextlib
import logging
import uuid
from datetime import UTC, datetime

from aiohttp import web

from schemas.exports import ExportCreated, ExportIn, ExportOut
from service.exports import jobs as export_jobs
from service.exports.creation import begin_export
from service.http.api import RouteTable, json_response, read_json
from service.http.auth import actor_of, audit, principal_of
from service.http.keys import EXPORT_WAKE, EXPORTS, POOL, SETTINGS
from service.http.middlewares import client_gone
from service.http.principal import Principal
from service.recordings import integrity
from storage import exports as store
from storage.db import scoped
from storage.errors import Conflict, NotFound, RecordingIntegrityError, StorageError
from storage.exports import ExportJob

routes = RouteTable()

logger = logging.getLogger(__name__)


def export_id_of(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError:
        raise NotFound("no such export") from None


def _visible_to(job: ExportJob, principal: Principal) -> bool:
    """A job is its creator's; an admin whose companies cover it sees it too (row-level
    security has checked the cover)."""
    return (job.created_by_kind, job.created_by_id) == (principal.kind,
                                                         principal.account.id) or (
        principal.role == "admin")


async def load_job(request: web.Request) -> ExportJob:
    principal = principal_of(request)
    job_id = export_id_of(request)
    async with scoped(request.app[POOL], principal.scope) as conn:
        job = await store.get_job(conn, job_id)
    if job is None or not _visible_to(job, principal):
        raise NotFound("no such export")
    return job


@routes.route(
    "POST", "/api/v1/exports", action="export.run", tag="exports",
    summary="Start an export job of the calls a recording filter selects (zip, vcon or s3)",
    body=ExportIn, response=ExportCreated, status=202,
)
async def create_export(request: web.Request) -> web.Response:
    body = await read_json(request, ExportIn)
    job_id = await begin_export(actor_of(request), body, pool=request.app[POOL],
                                settings=request.app[SETTINGS],
                                wake=request.app.get(EXPORT_WAKE))
    return json_response(ExportCreated(id=job_id), status=202,
                         headers={"Location": f"/api/v1/exports/{job_id}"})


@routes.route(
    "GET", "/api/v1/exports/{id}", action="export.run", tag="exports",
    summary="An export job's progress", response=ExportOut,
)
async def get_export(request: web.Request) -> web.Response:
    job = await load_job(request)
    return json_response(export_jobs.export_out(job))


@routes.route(
    "DELETE", "/api/v1/exports/{id}", action="export.run", tag="exports",
    summary="Cancel an export job (a finished one's result is withdrawn)", response=ExportOut,
)
async def cancel_export(request: web.Request) -> web.Response:
    job = await load_job(request)
    async with scoped(request.app[POOL], principal_of(request).scope) as conn:
        writing = await store.being_written(conn, job.id)
        cancelled = await store.cancel(conn, job.id)
    assert cancelled is not None
    detail: dict[str, object] = {"state_before": job.state}
    if job.format == "s3" and job.state != "queued" and not writing:
        # Also when it was cancelled before: a cancel whose removal failed is repeated until
        # nothing is left. A job a worker still holds is left to it: it takes back what it
        # wrote once it sees the cancel (housekeeping does, should it die first); removing
        # under a writer would race it, and SeaweedFS stalls a write into a folder being
        # emptied.
        try:
            await request.app[EXPORTS].remove_s3(job.target_prefix)
        except StorageError as exc:
            await audit(request, "export.cancel", target_type="export", target_id=str(job.id),
                        outcome="failure", detail={**detail, "error": exc.detail})
            raise
    await audit(request, "export.cancel", target_type="export", target_id=str(job.id),
                detail=detail)
    wake = request.app.get(EXPORT_WAKE)
    if wake is not None:
        wake.set()
    return json_response(export_jobs.export_out(cancelled))


@routes.route(
    "GET", "/api/v1/exports/{id}/download", action="export.run", tag="exports",
    summary="Stream a finished zip/vcon export (a zip, or an age file when encrypted)",
    response_content={kind: {"schema": {"type": "string", "format": "binary"}}
                      for kind in ("application/zip", "application/octet-stream")},
    extra_statuses=(409, 410),
)
async def download_export(request: web.Request) -> web.StreamResponse:
    job = await load_job(request)
    if job.state != "done":
        raise Conflict(f"the export is {job.state}; only a finished export can be downloaded")
    if job.expires_at <= datetime.now(UTC):
        raise web.HTTPGone(text="the export's result has expired; start a new export")
    if job.format == "s3":
        raise Conflict(f"an s3 export is delivered to the bucket {job.target_bucket} under "
                       f"{job.target_prefix}/, not downloaded")
    encrypted = job.recipient_public_key is not None
    async with scoped(request.app[POOL], principal_of(request).scope) as conn:
        subjects = await store.subjects_of(conn, job.id)
    await audit(request, "export.download", target_type="export", target_id=str(job.id),
                reason=job.reason, subject_ids=subjects,
                detail={"format": job.format, "encrypted": encrypted, "calls": job.total,
                        "bytes": job.bytes})
    name = f"tallenne-export-{job.id}.zip" + (".age" if encrypted else "")
    response = web.StreamResponse(headers={
        "Content-Type": "application/octet-stream" if encrypted else "application/zip",
        "Content-Disposition": f'attachment; filename="{name}"',
        "Cache-Control": "private, no-store",
    })
    try:
        async with contextlib.aclosing(
                export_jobs.download_stream(request.app[EXPORTS], job)) as stream:
            await integrity.send(request, response, stream)
    except RecordingIntegrityError as exc:
        # As replay: the recording is marked and the alarm audited; the zip is cut short.
        return await integrity.cut_short(request, response, exc.recording_id, exc.company,
                                         exc.detail, found_by="export")
    except Exception as exc:
        if client_gone(request, exc):
            # The client gave the download up: nothing is wrong here.
            logger.info("export download left by its client", extra={"export_id": str(job.id)})
        else:
            logger.exception("export download broke off", extra={"export_id": str(job.id)})
        if not response.prepared:
            raise
        if request.transport is not None:
            request.transport.abort()  # a truncated zip, never one that looks complete
        return response
    await response.write_eof()
    return response
