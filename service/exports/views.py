"""Export jobs over HTTP: create (202), progress, cancel and the audited download; and the
background worker each replica runs (one replica at a time per job, by lease)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from schemas.countries import country_in_eu_eea
from schemas.exports import ExportCreated, ExportIn, ExportOut
from service.exports import jobs as export_jobs
from service.exports.jobs import ExportContext, worker_name
from service.http.api import RouteTable, json_response, read_json
from service.http.auth import Principal, audit, principal_of
from service.http.keys import (
    AUDIT,
    EXPORT_TARGET,
    EXPORT_WAKE,
    EXPORT_WORKER,
    EXPORTS,
    KEYRING,
    OBJECTS,
    POOL,
    SETTINGS,
)
from service.ops.tasks import stop_task
from service.resources import object_store
from service.settings import Settings
from storage import exports as store
from storage.db import Scope, scoped
from storage.errors import Conflict, InvalidInput, NotFound
from storage.exports import ExportJob, NewExportJob
from storage.objects import ObjectStore

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
    job_id = await begin_export(request, body)
    return json_response(ExportCreated(id=job_id), status=202,
                         headers={"Location": f"/api/v1/exports/{job_id}"})


def new_job(settings: Settings, body: ExportIn, *, name: str, kind: str, role: str,
            scope: Scope, account_id: uuid.UUID | None) -> tuple[NewExportJob, dict[str, object]]:
    """The job a request describes, with the summary its audit events carry; InvalidInput
    (after which the caller audits the refusal) for a recipient outside the EU/EEA."""
    wanted: dict[str, Any] = body.filter.model_dump(mode="json", by_alias=True,
                                                    exclude_none=True)
    summary: dict[str, object] = {"format": body.format, "filter": wanted}
    if body.leaves_controller:
        summary |= {"recipient": body.recipient, "recipient_country": body.recipient_country,
                    "legal_basis": body.legal_basis, "purpose": body.purpose}
    job_id = uuid.uuid4()
    job = NewExportJob(
        id=job_id, created_by=name, created_by_kind=kind, created_by_role=role,
        created_by_id=account_id, scope=scope,
        filter=wanted, reason=body.reason, format=body.format, recipient=body.recipient,
        recipient_country=body.recipient_country, legal_basis=body.legal_basis,
        purpose=body.purpose if body.leaves_controller else None,
        recipient_public_key=body.recipient_public_key,
        target_bucket=settings.export_target_bucket if body.format == "s3" else None,
        target_prefix=f"{settings.export_prefix.strip('/')}/{job_id}".lstrip("/")
        if body.format == "s3" else None,
        keep_for=timedelta(hours=settings.export_keep_hours),
    )
    return job, summary


def outside_eu_eea(body: ExportIn) -> InvalidInput | None:
    if body.leaves_controller and not country_in_eu_eea(body.recipient_country or ""):
        return InvalidInput("no data is exported outside the EU/EEA",
                            [(["body", "recipient_country"], "not an EU/EEA country")])
    return None


async def begin_export(request: web.Request, body: ExportIn) -> uuid.UUID:
    """Register the job (refused outside the EU/EEA), audit it and wake the local worker."""
    principal = principal_of(request)
    job, summary = new_job(request.app[SETTINGS], body, name=principal.name,
                           kind=principal.kind, role=principal.role, scope=principal.scope,
                           account_id=principal.account.id)
    refusal = outside_eu_eea(body)
    if refusal is not None:
        await audit(request, "export.create", target_type="export", reason=body.reason,
                    outcome="refused", detail={**summary, "refused": "recipient outside the "
                                                                     "EU/EEA"})
        raise refusal
    async with scoped(request.app[POOL], principal.scope) as conn:
        await store.create_job(conn, job)
    seq = await audit(request, "export.create", target_type="export", target_id=str(job.id),
                      reason=body.reason, detail=summary)
    async with scoped(request.app[POOL], principal.scope) as conn:
        await store.note_audit_event(conn, job.id, seq)
    wake = request.app.get(EXPORT_WAKE)
    if wake is not None:
        wake.set()
    return job.id


@routes.route(
    "GET", "/api/v1/exports/{id}", action="export.run", tag="exports",
    summary="An export job's progress", response=ExportOut,
)
async def get_export(request: web.Request) -> web.Response:
    job = await load_job(request)
    return json_response(job.out)


@routes.route(
    "DELETE", "/api/v1/exports/{id}", action="export.run", tag="exports",
    summary="Cancel an export job (a finished one's result is withdrawn)", response=ExportOut,
)
async def cancel_export(request: web.Request) -> web.Response:
    job = await load_job(request)
    async with scoped(request.app[POOL], principal_of(request).scope) as conn:
        cancelled = await store.cancel(conn, job.id)
    assert cancelled is not None
    if job.state == "done" and job.format == "s3":
        await export_jobs.remove_s3(request.app[EXPORTS], job)
    await audit(request, "export.cancel", target_type="export", target_id=str(job.id),
                detail={"state_before": job.state})
    wake = request.app.get(EXPORT_WAKE)
    if wake is not None:
        wake.set()
    return json_response(cancelled.out)


@routes.route(
    "GET", "/api/v1/exports/{id}/download", action="export.run", tag="exports",
    summary="Stream a finished zip/vcon export (a zip, or an age file when encrypted)",
    response_content={"application/zip": {"schema": {"type": "string", "format": "binary"}}},
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
    await audit(request, "export.download", target_type="export", target_id=str(job.id),
                reason=job.reason, detail={"format": job.format, "encrypted": encrypted,
                                           "calls": job.total, "bytes": job.bytes})
    name = f"tallenne-export-{job.id}.zip" + (".age" if encrypted else "")
    response = web.StreamResponse(headers={
        "Content-Type": "application/octet-stream" if encrypted else "application/zip",
        "Content-Disposition": f'attachment; filename="{name}"',
        "Cache-Control": "private, no-store",
    })
    stream = export_jobs.download_stream(request.app[EXPORTS], job)
    try:
        async for chunk in stream:
            if not response.prepared:
                await response.prepare(request)
            await response.write(chunk)
    except Exception:
        logger.exception("export download broke off", extra={"export_id": str(job.id)})
        if not response.prepared:
            raise
        if request.transport is not None:
            request.transport.abort()  # a truncated zip, never one that looks complete
        return response
    await response.write_eof()
    return response


# --- the worker ----------------------------------------------------------------------------


def export_context(app: web.Application) -> ExportContext:
    settings: Settings = app[SETTINGS]
    targets = app[EXPORT_TARGET]

    def target() -> ObjectStore:
        if not targets:
            targets.append(object_store(settings, settings.export_target_bucket, threads=4))
        return targets[0]

    return ExportContext(
        pool=app[POOL], objects=app[OBJECTS], target=target, masters=app[KEYRING].masters,
        audit=app[AUDIT], public_url=settings.public_url,
        lease=timedelta(seconds=settings.export_lease_s),
    )


async def work_exports(app: web.Application, owner: str) -> None:
    """Run jobs while there are any; then wait to be woken or for the next look."""
    wake = app[EXPORT_WAKE]
    poll = app[SETTINGS].export_poll_s
    while True:
        wake.clear()
        try:
            while await export_jobs.run_next(app[EXPORTS], owner):
                pass
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("export worker failed; trying again")
        try:
            await asyncio.wait_for(wake.wait(), poll)
        except TimeoutError:
            pass


def start_export_worker(app: web.Application) -> asyncio.Task[None]:
    task = asyncio.create_task(work_exports(app, worker_name()), name="export-worker")
    app[EXPORT_WORKER] = task
    return task


async def export_worker_ctx(app: web.Application) -> AsyncIterator[None]:
    app[EXPORT_TARGET] = []
    app[EXPORTS] = export_context(app)
    app[EXPORT_WAKE] = asyncio.Event()
    if app[SETTINGS].export_enabled:
        start_export_worker(app)
    yield
    task = app.get(EXPORT_WORKER)
    await stop_task(task)
    for target in app[EXPORT_TARGET]:
        await target.close()
