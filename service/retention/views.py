"""Retention endpoints: policies, legal holds and purges (admin; dpo may read policies)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import asdict
from datetime import UTC, datetime

from aiohttp import web

from schemas.retention import (
    LegalHoldIn,
    LegalHoldList,
    LegalHoldOut,
    PurgeIn,
    PurgeReport,
    RetentionPolicy,
    RetentionPolicyChange,
    RetentionPolicyList,
    RetentionPolicyUpdate,
)
from service.http.api import (
    RouteTable,
    json_response,
    read_json,
    read_json_rows,
)
from service.http.auth import audit, principal_of
from service.http.keys import OBJECTS, POOL, PURGE_TASKS, REQUEST_ID_KEY, RESOURCES
from service.retention import scheduler as purge_scheduler
from storage import legal_holds, purge, retention
from storage.db import Scope, scoped
from storage.errors import Forbidden, NotFound

routes = RouteTable()


def policy_out(policy: retention.Policy) -> RetentionPolicy:
    return RetentionPolicy.model_validate(asdict(policy))


@routes.route(
    "GET", "/api/v1/retention-policies", action="retention.read", tag="retention",
    summary="Retention policies per company, data kind and purpose",
    response=RetentionPolicyList,
)
async def list_policies(request: web.Request) -> web.Response:
    scope = principal_of(request).scope
    async with scoped(request.app[POOL], scope) as conn:
        items = await retention.list_policies(conn, scope)
    return json_response(RetentionPolicyList(items=[policy_out(p) for p in items]))


@routes.route(
    "PUT", "/api/v1/retention-policies", action="retention.write", tag="retention",
    summary="Upsert policies; recordings under a changed one get a new retain_until",
    body=RetentionPolicyList, response=RetentionPolicyUpdate, rows_body=True,
)
async def put_policies(request: web.Request) -> web.Response:
    principal = principal_of(request)
    body = await read_json_rows(request, RetentionPolicyList, none_given="no policies given",
                                hint="give at least one policy")
    pool = request.app[POOL]
    async with scoped(pool, principal.scope) as conn:
        changes = await retention.upsert_policies(
            conn, [retention.Policy(**p.model_dump()) for p in body.items], principal.name,
            principal.scope)
    reported: list[RetentionPolicyChange] = []
    for change in changes:
        moved = 0
        if change.policy.kind == "recording":
            moved = await retention.recompute_recordings(pool, change.company_id,
                                                         change.policy.purpose)
        reported.append(RetentionPolicyChange(
            **asdict(change.policy), old_keep_days=change.old_keep_days,
            records_moved=moved,
        ))
    await audit(request, "retention.write", target_type="retention_policy",
                company_ids=sorted({c.company_id for c in changes}) or None,
                detail={"changes": [c.model_dump() for c in reported]})
    async with scoped(pool, principal.scope) as conn:
        items = await retention.list_policies(conn, principal.scope)
    return json_response(RetentionPolicyUpdate(items=[policy_out(p) for p in items],
                                               changes=reported))


# --- legal holds ---------------------------------------------------------------------------


def legal_hold_out(hold: legal_holds.LegalHold) -> LegalHoldOut:
    return LegalHoldOut(**asdict(hold))


@routes.route(
    "POST", "/api/v1/legal-holds", action="legal_hold.manage", tag="retention",
    summary="Place a legal hold (a case) on recordings and/or whole customers",
    body=LegalHoldIn, response=LegalHoldOut, status=201, extra_statuses=(409,),
)
async def place_hold(request: web.Request) -> web.Response:
    principal = principal_of(request)
    body = await read_json(request, LegalHoldIn)
    # The case's records are checked against the caller's scope; the hold itself then
    # reaches every record of a held customer.
    async with scoped(request.app[POOL], Scope.everything()) as conn:
        hold = await legal_holds.place(conn, body, principal.name, principal.scope)
        keys = await legal_holds.object_keys_held_by(conn, body.case)
        companies = (await legal_holds.case_companies(conn, [body.case]))[body.case]
    # After commit: the database hold is the one that counts; the object's mirrors it.
    mirrored = await legal_holds.mirror_to_objects(request.app[OBJECTS], keys, held=True)
    await audit(request, "legal_hold.place", target_type="legal_hold", target_id=body.case,
                reason=body.reason, company_ids=companies,
                subject_ids=[*body.recording_ids, *body.customer_ids],
                detail={"recording_ids": [str(r) for r in body.recording_ids],
                        "customer_ids": [str(c) for c in body.customer_ids],
                        "objects_locked": mirrored})
    return json_response(legal_hold_out(hold), status=201)


@routes.route(
    "GET", "/api/v1/legal-holds", action="legal_hold.manage", tag="retention",
    summary="Open cases (?released=true also lists released ones)", response=LegalHoldList,
)
async def list_holds(request: web.Request) -> web.Response:
    include = request.query.get("released", "false").lower() in ("1", "true", "yes")
    async with scoped(request.app[POOL], Scope.everything()) as conn:
        items = await legal_holds.list_holds(conn, include_released=include,
                                             scope=principal_of(request).scope)
    return json_response(LegalHoldList(items=[legal_hold_out(h) for h in items]))


@routes.route(
    "DELETE", "/api/v1/legal-holds/{case}", action="legal_hold.manage", tag="retention",
    summary="Release a case; other cases on the same records stay", response=LegalHoldOut,
)
async def release_hold(request: web.Request) -> web.Response:
    case = request.match_info["case"]
    principal = principal_of(request)
    async with scoped(request.app[POOL], Scope.everything()) as conn:
        freed = await legal_holds.object_keys_freed_by(conn, case)
        # A case holding any company's data outside the caller's scope is not theirs to see.
        hold = await legal_holds.release(conn, case, principal.name, principal.scope)
        companies = (await legal_holds.case_companies(conn, [case]))[case]
    unlocked = await legal_holds.mirror_to_objects(request.app[OBJECTS], freed, held=False)
    await audit(request, "legal_hold.release", target_type="legal_hold", target_id=case,
                company_ids=companies, detail={"objects_unlocked": unlocked})
    return json_response(legal_hold_out(hold))


# --- purges --------------------------------------------------------------------------------


@routes.route(
    "POST", "/api/v1/purges", action="purge.run", tag="retention",
    summary="Preview (dry_run) or start a purge; a real run answers 202 with its id",
    body=PurgeIn, response=PurgeReport, extra_statuses=(202,),
)
async def start_purge(request: web.Request) -> web.Response:
    principal = principal_of(request)
    body = await read_json(request, PurgeIn)
    app = request.app
    now = datetime.now(UTC)
    request_id = request.get(REQUEST_ID_KEY)
    if body.dry_run:
        return json_response(await purge_scheduler.preview(
            app[RESOURCES], now, actor=principal.name, actor_kind=principal.kind,
            role=principal.role, request_id=request_id, scope=principal.scope))
    if not principal.scope.all_companies:
        # A run removes what has expired in every company (a month of web events is one
        # partition): it is a group-wide act.
        raise Forbidden("a purge run covers every company: it needs an all-companies admin")
    run_id, conn = await purge_scheduler.begin(app[POOL], now, actor=principal.name)
    context = purge_scheduler.purge_context(app)
    task = asyncio.create_task(
        purge_scheduler.carry_out(context, run_id, conn, now, actor=principal.name,
                                  actor_kind=principal.kind, role=principal.role,
                                  request_id=request_id),
        name=f"purge-{run_id}")
    tasks = app[PURGE_TASKS]
    tasks.add(task)  # type: ignore[arg-type]
    task.add_done_callback(tasks.discard)
    async with app[POOL].acquire() as reader:
        report = await purge.run_report(reader, run_id)
    assert report is not None
    return json_response(purge_scheduler.purge_report(report), status=202,
                         headers={"Location": f"/api/v1/purges/{run_id}"})


@routes.route(
    "GET", "/api/v1/purges/{id}", action="purge.run", tag="retention",
    summary="A purge run's progress and result", response=PurgeReport,
)
async def get_purge(request: web.Request) -> web.Response:
    try:
        run_id = uuid.UUID(request.match_info["id"])
    except ValueError:
        raise NotFound("no such purge") from None
    if not principal_of(request).scope.all_companies:
        raise NotFound("no such purge")  # runs are group-wide
    async with request.app[POOL].acquire() as conn:
        report = await purge.run_report(conn, run_id)
    if report is None:
        raise NotFound("no such purge")
    return json_response(purge_scheduler.purge_report(report))
