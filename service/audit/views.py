"""Reading and verifying the audit trail."""

from __future__ import annotations

from dataclasses import asdict
from uuid import UUID

from aiohttp import web
from pydantic import Field

from schemas.audit import AuditEventOut, AuditPage, AuditQuery, AuditVerifyOut
from service.http import cursor
from service.http.api import RouteTable, json_response, read_query
from service.http.auth import audit, principal_of
from service.http.keys import AUDIT_SIGNER, CHECKPOINTS, POOL
from storage import audit as audit_store
from storage.checkpoints import verify_trail
from storage.db import scoped

routes = RouteTable()


class AuditVerifyReport(AuditVerifyOut):
    checkpoints: int = Field(0, description="Signed checkpoints the chain was held against.")


@routes.route("GET", "/api/v1/audit", action="audit.read", summary="Read the audit trail",
              tag="audit", query=AuditQuery, response=AuditPage)
async def list_audit(request: web.Request) -> web.Response:
    query = read_query(request, AuditQuery)
    before: int | None = None
    if query.cursor:
        (before,) = cursor.decode(request, "audit", query.cursor, int)
    principal = principal_of(request)
    # Row-level security decides which events the caller's companies may read.
    async with scoped(request.app[POOL], principal.scope) as conn:
        subjects: list[UUID] | None = None
        if query.subject is not None:
            # The customer, and their recordings: a replay names the recording it read.
            subjects = [query.subject,
                        *await audit_store.recordings_of_subject(conn, query.subject)]
        rows = await audit_store.search_events(conn, audit_store.EventFilter(
            actor=query.actor, action=query.action, target=query.target, since=query.from_,
            until=query.to, before_seq=before, subjects=subjects,
        ), query.limit + 1)
    items = [
        AuditEventOut(**{**asdict(r), "hash": r.hash.hex()}) for r in rows[: query.limit]
    ]
    next_cursor = (cursor.encode(request, "audit", items[-1].seq)
                   if len(rows) > query.limit else None)
    await audit(request, "audit.read",
                detail={"results": len(items),
                        **({"subject": str(query.subject)} if query.subject else {})})
    return json_response(AuditPage(items=items, next_cursor=next_cursor))


@routes.route("GET", "/api/v1/audit/verify", action="audit.verify",
              summary="Recompute the audit hash chain", tag="audit", response=AuditVerifyReport)
async def verify_audit(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        report = await verify_trail(conn, request.app[CHECKPOINTS].reader,
                                    request.app[AUDIT_SIGNER].verifier)
    await audit(request, "audit.verify", outcome="ok" if report.ok else "failure",
                detail={"events": report.events, "first_bad": report.first_bad,
                        "checkpoints": report.checkpoints})
    return json_response(AuditVerifyReport(ok=report.ok, events=report.events,
                                           first_bad=report.first_bad, problem=report.problem,
                                           checkpoints=report.checkpoints))
