"""Erasure of a customer (right to erasure): crypto-shredding, tombstones, the ledger."""

from __future__ import annotations

from aiohttp import web

from schemas.access_reports import ErasureIn, ErasureOut
from service.http.api import RouteTable, json_response, read_json
from service.http.auth import audit, principal_of
from service.http.keys import OBJECTS, POOL, RESOURCES
from service.keys.store import follow_erasures
from service.rights.lookup import customer_id_of
from storage import customers
from storage import erasure as store
from storage.db import scoped
from storage.errors import Conflict, NotFound

routes = RouteTable()


@routes.route(
    "POST", "/api/v1/customers/{customer_id}/erasure", action="customer.erase",
    summary="Erase the customer: destroy their key, delete audio, blank personal fields",
    tag="data-subject rights", body=ErasureIn, response=ErasureOut, extra_statuses=(404, 409),
)
async def erase_customer(request: web.Request) -> web.Response:
    principal = principal_of(request)
    customer_id = customer_id_of(request)
    body = await read_json(request, ErasureIn)
    try:
        async with scoped(request.app[POOL], principal.scope) as conn:
            if not await customers.visible(conn, customer_id):
                raise NotFound("no such customer")
            erasure = await store.erase_customer(conn, customer_id, erased_by=principal.name,
                                                 reason=body.reason, scope=principal.scope)
    except Conflict:
        await audit(request, "customer.erase", target_type="customer",
                    target_id=str(customer_id), reason=body.reason, outcome="refused",
                    subject_ids=[customer_id],
                    detail={"refused": "legal hold"})
        raise
    # After commit; an object left by a crash has no row and the reconciler removes it.
    left = await request.app[OBJECTS].delete(erasure.object_keys)
    await store.write_ledger_object(request.app[OBJECTS], erasure)
    # At once: the key snapshot that restores need must no longer hold the destroyed key.
    snapshot = await follow_erasures(request.app[RESOURCES])
    await audit(request, "customer.erase", target_type="customer", target_id=str(customer_id),
                reason=body.reason, company_ids=erasure.company_ids or None,
                subject_ids=[customer_id, *erasure.recording_ids],
                detail={"recordings": len(erasure.recording_ids),
                        "companies": len(erasure.company_ids),
                        "web_events_unlinked": erasure.web_events_unlinked,
                        "objects_not_deleted": len(left),
                        "key_snapshot": snapshot.snapshot_id if snapshot else None})
    return json_response(ErasureOut(
        customer_id=customer_id, erased_at=erasure.erased_at,
        recordings_erased=len(erasure.recording_ids),
        web_events_unlinked=erasure.web_events_unlinked,
    ))
