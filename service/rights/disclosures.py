"""Disclosures to recipients outside the register: the streamed NDJSON export and its log."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

from aiohttp import web

from schemas.countries import country_in_eu_eea
from schemas.disclosures import (
    EXCLUDED_BY,
    DisclosureIn,
    DisclosureOut,
    DisclosurePage,
    DisclosureQuery,
)
from service.http import cursor
from service.http.api import RouteTable, json_response, read_json, read_query
from service.http.auth import audit, principal_of, read_detail
from service.http.keys import KEYRING, POOL
from storage import customers
from storage import disclosures as store
from storage.db import apply_scope, scoped
from storage.disclosures import DisclosedCustomer
from storage.errors import InvalidInput, NotFound

routes = RouteTable()


def _line(request: web.Request, customer: DisclosedCustomer,
          fields: list[str]) -> dict[str, Any]:
    line: dict[str, Any] = {}
    for name in fields:
        if name == "personal_id":
            enc = customer.personal_id_enc
            ids = request.app[KEYRING].personal_ids
            line[name] = ids.decrypt(enc, customer.id) if enc else None
        else:
            line[name] = getattr(customer, name)
    return line


@routes.route(
    "POST", "/api/v1/disclosures", action="disclosure.create", tag="disclosures",
    summary="Disclose customers of a company to a recipient in the EU/EEA (streamed NDJSON)",
    body=DisclosureIn,
    response_content={"application/x-ndjson": {"schema": {"type": "string"}}},
    extra_statuses=(404,),
)
async def create_disclosure(request: web.Request) -> web.StreamResponse:
    principal = principal_of(request)
    body = await read_json(request, DisclosureIn)
    country = body.recipient_country.upper()
    summary = {"recipient": body.recipient, "recipient_country": country,
               "purpose": body.purpose, "legal_basis": body.legal_basis,
               "fields": body.fields}
    if not country_in_eu_eea(country):
        await audit(request, "disclosure.create", target_type="disclosure",
                    company=body.company, outcome="refused",
                    detail={**summary, "refused": "recipient outside the EU/EEA"})
        raise InvalidInput("no data is disclosed outside the EU/EEA",
                           [(["body", "recipient_country"], "not an EU/EEA country")])
    pool = request.app[POOL]
    # One snapshot (REPEATABLE READ) for the prohibition check and the rows streamed: a
    # prohibition or change committed meanwhile cannot slip between the two.
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                        readonly=True):
        await apply_scope(conn, principal.scope)
        company_id = await customers.company_id_by_code(conn, body.company)
        if company_id is None or not principal.scope.allows(company_id):
            raise NotFound("no such company")
        chosen = await store.eligible_customers(
            conn, company_id, EXCLUDED_BY[body.purpose], body.customer_ids
        )
        # Logged and committed (on a connection of its own) before the first byte leaves:
        # a broken stream is over-, never under-recorded.
        async with scoped(pool, principal.scope) as writer:
            logged = await store.log_disclosure(
                writer, company_id=company_id, disclosed_by=principal.name,
                recipient=body.recipient, recipient_country=country, purpose=body.purpose,
                legal_basis=body.legal_basis, fields=list(body.fields), customer_ids=chosen,
            )
        ids_detail, subjects = read_detail(customers=chosen)
        await audit(request, "disclosure.create", target_type="disclosure",
                    target_id=str(logged.id), company=body.company, subject_ids=subjects,
                    detail={**summary, "customers": len(chosen),
                            "customer_ids": ids_detail["customers"]})
        response = web.StreamResponse(headers={
            "Content-Type": "application/x-ndjson",
            "Content-Disposition": f'attachment; filename="luovutus-{logged.id}.ndjson"',
            "X-Disclosure-Id": str(logged.id),
            "Cache-Control": "private, no-store",
        })
        await response.prepare(request)
        async for batch in store.customer_batches(conn, company_id, chosen):
            text = "".join(
                json.dumps(_line(request, row, list(body.fields)), ensure_ascii=False) + "\n"
                for row in batch
            )
            await response.write(text.encode())
    await response.write_eof()
    return response


@routes.route(
    "GET", "/api/v1/disclosures", action="disclosure.read", tag="disclosures",
    summary="The disclosure log, newest first", query=DisclosureQuery, response=DisclosurePage,
)
async def list_disclosures(request: web.Request) -> web.Response:
    principal = principal_of(request)
    query = read_query(request, DisclosureQuery)
    after = (cursor.decode(request, "disclosures", query.cursor, datetime.fromisoformat, UUID)
             if query.cursor else None)
    async with scoped(request.app[POOL], principal.scope) as conn:
        company_id = None
        if query.company is not None:
            company_id = await customers.company_id_by_code(conn, query.company) or UUID(int=0)
        rows = await store.disclosure_log(conn, company_id=company_id,
                                          customer_id=query.customer_id, after=after,
                                          limit=query.limit + 1)
    items = [DisclosureOut.model_validate(r, from_attributes=True) for r in rows[: query.limit]]
    last = rows[query.limit - 1] if len(rows) > query.limit else None
    next_cursor = (cursor.encode(request, "disclosures", last.disclosed_at, last.id)
                   if last else None)
    await audit(request, "disclosure.read", target_type="disclosure",
                detail={"results": len(items), "paged": after is not None})
    return json_response(DisclosurePage(items=items, next_cursor=next_cursor))
