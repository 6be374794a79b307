"""The right of access: the access report of a customer as JSON, and as a printable Finnish
letter (PDF). Each call answers a verified access request, recorded and audited."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from uuid import UUID

import asyncpg
from aiohttp import web

from schemas.access_reports import (
    AccessReport,
    AccessReportQuery,
    AccessRequestIn,
    AccessRequestOut,
    ReportAnnotation,
    ReportCustomer,
    ReportDisclosure,
    ReportEvaluation,
    ReportHistoryEntry,
    ReportMembership,
    ReportRecording,
    ReportWebEvent,
    ReportWebEvents,
)
from schemas.customers import Address, Prohibition
from schemas.register_statement import DATA_KINDS
from service.http.api import RouteTable, json_response, read_json, read_query
from service.http.auth import audit, principal_of, read_detail
from service.http.keys import KEYRING, POOL
from service.http.principal import Principal
from service.policy import SEES_PERSONAL_ID
from service.recordings.presentation import recording_out
from service.rights.letter import render_letter
from service.rights.lookup import customer_id_of, customer_recordings
from storage import access_reports as store
from storage import customers
from storage.crypto import open_customer_values
from storage.db import scoped
from storage.errors import IntegrityError, NotFound
from storage.keyring import KeyRing
from storage.keys import OwnerKey, find_customer_key

routes = RouteTable()

logger = logging.getLogger(__name__)

def _history_values(key: OwnerKey | None, customer_id: UUID,
                    sealed: bytes | None) -> dict[str, object] | None:
    if sealed is None or key is None:
        return None
    try:
        values = open_customer_values(key.key, customer_id, bytes(sealed))
    except IntegrityError:
        # A damaged entry of the history is shown without its old values; the rest of the
        # report stands. Logged without anything of the customer but the id.
        logger.error("customer history entry failed authentication",
                     extra={"customer_id": str(customer_id)})
        return None
    values.pop("personal_id_enc", None)  # an old identity code stays sealed
    return values


async def build_report(
    pool: asyncpg.Pool, keyring: KeyRing, principal: Principal, customer_id: UUID,
    query: AccessReportQuery,
) -> AccessReport:
    """Record (or look up) the access request and gather everything held about the customer
    in the caller's companies."""
    async with scoped(pool, principal.scope) as conn:
        row = await store.customer_row(conn, customer_id)
        if row is None:
            raise NotFound("no such customer")
        if query.request_id is not None:
            access_request = await store.recorded_request(conn, customer_id, query.request_id)
        else:
            assert query.verified_by is not None
            access_request = await store.record_request(
                conn, customer_id, query.verified_by, principal.name,
                query.request_received_at or datetime.now(UTC),
            )
        memberships = await store.memberships(conn, customer_id)
        history = await store.history(conn, customer_id)
        key = await find_customer_key(conn, keyring.masters, customer_id)
        recordings = await customer_recordings(conn, customer_id)
        evaluations = await store.evaluations(conn, customer_id)
        annotations = await store.call_notes(conn, customer_id)
        events_total, events = await store.web_events(conn, customer_id)
        bans = await customers.prohibitions(conn, customer_id)
        disclosures = await store.disclosures(conn, customer_id)
        holds = await store.legal_holds(conn, customer_id)

    code: str | None = None
    if row.personal_id_enc is not None and principal.role in SEES_PERSONAL_ID:
        code = keyring.personal_ids.decrypt(row.personal_id_enc, row.id)
    note = None
    if events_total > len(events):
        note = (f"the latest {len(events)} of {events_total} events are listed;"
                " the rest are available on request")
    return AccessReport(
        request=AccessRequestOut.model_validate(access_request, from_attributes=True),
        due_at=access_request.due_at,
        generated_at=datetime.now(UTC),
        customer=ReportCustomer(
            id=row.id, name=row.name, personal_id=code,
            address=Address.model_validate(row.address or {}), email=row.email,
            phone=row.phone, created_at=row.created_at, updated_at=row.updated_at,
        ),
        memberships=[ReportMembership.model_validate(m, from_attributes=True)
                     for m in memberships],
        history=[
            ReportHistoryEntry(
                company=h.company, change=h.change, changed_fields=h.changed_fields,
                old_values=_history_values(key, customer_id, h.old_values_enc),
                changed_at=h.changed_at,
            )
            for h in history
        ],
        recordings=[
            ReportRecording.model_validate(recording_out(r).model_dump()) for r in recordings
        ],
        evaluations=[ReportEvaluation.model_validate(e, from_attributes=True)
                     for e in evaluations],
        annotations=[ReportAnnotation.model_validate(a, from_attributes=True)
                     for a in annotations],
        web_events=ReportWebEvents(
            total=events_total,
            items=[ReportWebEvent.model_validate(e, from_attributes=True) for e in events],
            note=note,
        ),
        prohibitions=[Prohibition.model_validate(b, from_attributes=True) for b in bans],
        disclosures=[ReportDisclosure.model_validate(d, from_attributes=True)
                     for d in disclosures],
        legal_holds=holds,
        data_kinds=DATA_KINDS,
    )


async def _audit_report(request: web.Request, report: AccessReport, form: str,
                        query: AccessReportQuery) -> None:
    ids_detail, subjects = read_detail(customers=[report.customer.id],
                                       recordings=[r.id for r in report.recordings])
    await audit(
        request, "access_report.read", target_type="customer",
        target_id=str(report.customer.id), subject_ids=subjects,
        company_codes={m.company for m in report.memberships} or None,
        detail={"format": form, "access_request": str(report.request.id),
                "verified_by": report.request.verified_by,
                "new_request": query.request_id is None,
                "due_at": report.due_at.isoformat(),
                "customers": ids_detail["customers"],
                "recordings": ids_detail["recordings"],
                "recordings_count": len(report.recordings)},
    )


@routes.route(
    "POST", "/api/v1/customers/{customer_id}/access-requests", action="access_request.write",
    summary="Record a customer's verified access request; due one month from receipt",
    tag="data-subject rights", body=AccessRequestIn, response=AccessRequestOut, status=201,
)
async def take_access_request(request: web.Request) -> web.Response:
    principal = principal_of(request)
    body = await read_json(request, AccessRequestIn)
    customer_id = customer_id_of(request)
    async with scoped(request.app[POOL], principal.scope) as conn:
        if await store.customer_row(conn, customer_id) is None:
            raise NotFound("no such customer")
        taken = await store.record_request(conn, customer_id, body.verified_by, principal.name,
                                           body.received_at or datetime.now(UTC))
        companies = {m.company for m in await store.memberships(conn, customer_id)}
    await audit(request, "access_request.create", target_type="customer",
                target_id=str(customer_id), subject_ids=[customer_id],
                company_codes=companies or None,
                detail={"access_request": str(taken.id), "verified_by": taken.verified_by,
                        "due_at": taken.due_at.isoformat()})
    return json_response(AccessRequestOut.model_validate(taken, from_attributes=True),
                         status=201)


@routes.route(
    "GET", "/api/v1/customers/{customer_id}/access-report", action="access_report.read",
    summary="Everything held about the customer (answers a verified access request)",
    tag="data-subject rights", query=AccessReportQuery, response=AccessReport,
    extra_statuses=(404,),
)
async def access_report(request: web.Request) -> web.Response:
    principal = principal_of(request)
    query = read_query(request, AccessReportQuery)
    report = await build_report(request.app[POOL], request.app[KEYRING], principal,
                                customer_id_of(request), query)
    await _audit_report(request, report, "json", query)
    return json_response(report)


@routes.route(
    "GET", "/api/v1/customers/{customer_id}/access-report.pdf", action="access_report.read",
    summary="The access report as a printable Finnish letter to the address on record",
    tag="data-subject rights", query=AccessReportQuery,
    response_content={"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
    extra_statuses=(404,),
)
async def access_report_pdf(request: web.Request) -> web.StreamResponse:
    principal = principal_of(request)
    query = read_query(request, AccessReportQuery)
    report = await build_report(request.app[POOL], request.app[KEYRING], principal,
                                customer_id_of(request), query)
    pdf = await render_letter(report)
    await _audit_report(request, report, "pdf", query)
    response = web.StreamResponse(headers={
        "Content-Type": "application/pdf",
        "Content-Disposition": f'attachment; filename="rekisteriote-{report.customer.id}.pdf"',
        "Cache-Control": "private, no-store",
    })
    response.content_length = len(pdf)
    await response.prepare(request)
    for start in range(0, len(pdf), 256 * 1024):
        await response.write(pdf[start:start + 256 * 1024])
    await response.write_eof()
    return response
