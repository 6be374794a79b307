"""Starting an export job: the job a request describes, the EU/EEA refusal, and registering
it (audited) for a worker to pick up. The API, the web UI and the CLI all start jobs here."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import asyncpg

from schemas.countries import country_in_eu_eea
from schemas.exports import ExportIn
from service.http.auth import Actor
from service.policy import allowed
from service.settings import Settings
from storage import exports as store
from storage.age_stream import parse_age_recipient
from storage.db import Scope, scoped
from storage.errors import Forbidden, InvalidInput, StorageError
from storage.exports import NewExportJob


def new_job(settings: Settings, body: ExportIn, *, name: str, kind: str, role: str,
            scope: Scope, account_id: uuid.UUID | None) -> tuple[NewExportJob, dict[str, object]]:
    """The job a request describes, with the summary its audit events carry."""
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


def refusal_of(body: ExportIn, role: str) -> tuple[StorageError, str] | None:
    """Why the job may not start (with the reason its refusal is audited under), or None.
    An export to a recipient is a disclosure: only a role that may disclose starts one, and
    never to a recipient outside the EU/EEA."""
    if body.leaves_controller and not allowed(role, "disclosure.create"):
        return (Forbidden(f"the role {role} may not disclose data to a recipient"),
                "the role may not disclose data")
    if body.leaves_controller and not country_in_eu_eea(body.recipient_country or ""):
        return (InvalidInput("no data is exported outside the EU/EEA",
                             [(["body", "recipient_country"], "not an EU/EEA country")]),
                "recipient outside the EU/EEA")
    if body.recipient_public_key is not None:
        try:
            parse_age_recipient(body.recipient_public_key)
        except InvalidInput:
            return (InvalidInput("the recipient key is not an age X25519 public key",
                                 [(["body", "recipient_public_key"],
                                   "not a valid age X25519 public key (checksum)")]),
                    "the recipient key is not valid")
    return None


async def begin_export(actor: Actor, body: ExportIn, *, pool: asyncpg.Pool,
                       settings: Settings, wake: asyncio.Event | None) -> uuid.UUID:
    """Register the job the actor asks for (see `refusal_of`), audit it and wake the local
    worker."""
    name, kind, role, scope, account_id = actor.owner()
    job, summary = new_job(settings, body, name=name, kind=kind, role=role, scope=scope,
                           account_id=account_id)
    refusal = refusal_of(body, role)
    if refusal is not None:
        error, why = refusal
        await actor.audit("export.create", target_type="export", reason=body.reason,
                          outcome="refused", detail={**summary, "refused": why})
        raise error
    async with scoped(pool, scope) as conn:
        await store.create_job(conn, job)
    seq = await actor.audit("export.create", target_type="export", target_id=str(job.id),
                            reason=body.reason, detail=summary)
    async with scoped(pool, scope) as conn:
        await store.note_audit_event(conn, job.id, seq)
    if wake is not None:
        wake.set()
    return job.id
