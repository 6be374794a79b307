"""Customer endpoints: upsert from billing systems, lookup, the customer view, prohibitions."""

from __future__ import annotations

import functools
import re
from dataclasses import asdict
from datetime import UTC, datetime
from uuid import UUID

from aiohttp import web

from schemas.customers import (
    CUSTOMER_NUMBER_PATTERN,
    CustomerDetailOut,
    CustomerIn,
    CustomerList,
    CustomerLookupIn,
    CustomerOut,
    ProhibitedUse,
    ProhibitionIn,
)
from service.customers.presentation import present
from service.http.api import RouteTable, json_response, parse_model, read_json
from service.http.auth import audit, principal_of, read_detail
from service.http.keys import KEYRING, POOL
from service.http.principal import Principal
from storage import customers
from storage.db import scoped
from storage.errors import InvalidInput, NotFound

routes = RouteTable()

_NUMBER = re.compile(CUSTOMER_NUMBER_PATTERN)
_USES = ProhibitedUse.__args__  # type: ignore[attr-defined]


def _customer_id(request: web.Request) -> UUID:
    try:
        return UUID(request.match_info["customer_id"])
    except ValueError:
        raise NotFound("no such customer") from None


@routes.route(
    "PUT", "/api/v1/customers/{company}/{customer_number}", action="customer.write",
    summary="Create or update the customer with this customer number", tag="customers",
    body=CustomerIn, response=CustomerOut, extra_statuses=(201, 404, 409),
)
async def put_customer(request: web.Request) -> web.Response:
    principal = principal_of(request)
    number = request.match_info["customer_number"]
    if not _NUMBER.match(number):
        raise InvalidInput("the customer number is not valid",
                           [(["path", "customer_number"], "letters, digits, . _ / - only")])
    body = await read_json(request, CustomerIn)
    ring = request.app[KEYRING]
    record = body.model_dump(exclude={"personal_id", "ended_at"})
    async with scoped(request.app[POOL], principal.scope) as conn:
        company_id = await customers.company_id_by_code(conn, request.match_info["company"])
        if company_id is None or not principal.scope.allows(company_id):
            raise NotFound("no such company")
        result = await customers.upsert_customer(
            conn, principal.scope, company_id, number, record,
            seal_personal_id=functools.partial(ring.personal_ids.encrypt, body.personal_id),
            personal_id_hash=ring.personal_ids.lookup_hash(body.personal_id),
            masters=ring.masters, actor=principal.name,
        )
        ended = "ended_at" in body.model_fields_set and await customers.set_membership_end(
            conn, result.customer_id, company_id, body.ended_at, principal.name)
        rows = await customers.customer_rows(conn, [result.customer_id])
    await audit(
        request, "customer.write", target_type="customer", target_id=str(result.customer_id),
        company=request.match_info["company"],
        detail={"created": result.created, "changed_fields": result.changed_fields,
                "customer_number": number,
                **({"ended_at": body.ended_at.isoformat() if body.ended_at else None}
                   if ended else {})},
    )
    return json_response(present(request.app[KEYRING], principal, rows[0]),
                         status=201 if result.created else 200)


@routes.route(
    "POST", "/api/v1/customers/lookup", action="customer.read",
    summary="Find customers by identity code or by company and customer number",
    tag="customers", body=CustomerLookupIn, response=CustomerList,
)
async def lookup_customers(request: web.Request) -> web.Response:
    principal = principal_of(request)
    body = await read_json(request, CustomerLookupIn)
    async with scoped(request.app[POOL], principal.scope) as conn:
        if body.personal_id is not None:
            digest = request.app[KEYRING].personal_ids.lookup_hash(body.personal_id)
            ids = await customers.find_by_hash(conn, digest)
            how = "personal_id"
        else:
            assert body.company is not None and body.customer_number is not None
            company_id = await customers.company_id_by_code(conn, body.company)
            ids = []
            if company_id is not None and principal.scope.allows(company_id):
                ids = await customers.find_by_number(conn, company_id, body.customer_number)
            how = "customer_number"
        rows = await customers.customer_rows(conn, ids)
    ids_detail, subjects = read_detail(customers=[r.id for r in rows])
    await audit(request, "customer.search", target_type="customer",
                company_codes={m.company for r in rows for m in r.companies},
                subject_ids=subjects,
                detail={"by": how, "found": len(rows), **ids_detail})
    keyring = request.app[KEYRING]
    return json_response(CustomerList(items=[present(keyring, principal, r) for r in rows]))


@routes.route(
    "GET", "/api/v1/customers/{customer_id}", action="customer.read",
    summary="One customer with companies, prohibitions and counts of data held",
    tag="customers", response=CustomerDetailOut, extra_statuses=(404,),
)
async def get_customer(request: web.Request) -> web.Response:
    principal = principal_of(request)
    customer_id = _customer_id(request)
    detail = await _detail(request, principal, customer_id)
    await audit(request, "customer.read", target_type="customer", target_id=str(customer_id),
                company_codes={m.company for m in detail.companies},
                subject_ids=[customer_id])
    return json_response(detail)


async def _detail(
    request: web.Request, principal: Principal, customer_id: UUID
) -> CustomerDetailOut:
    async with scoped(request.app[POOL], principal.scope) as conn:
        rows = await customers.customer_rows(conn, [customer_id])
        if not rows:
            raise NotFound("no such customer")
        bans = await customers.prohibitions(conn, customer_id)
        counts = await customers.data_counts(conn, customer_id)
    out = present(request.app[KEYRING], principal, rows[0])
    return CustomerDetailOut.model_validate(
        {**out.model_dump(), "prohibitions": [asdict(b) for b in bans], "counts": counts}
    )


@routes.route(
    "POST", "/api/v1/customers/{customer_id}/prohibitions", action="prohibition.write",
    summary="Record a prohibition of a use of the customer's data", tag="customers",
    body=ProhibitionIn, response=CustomerDetailOut, status=201, extra_statuses=(200, 404),
)
async def add_prohibition(request: web.Request) -> web.Response:
    principal = principal_of(request)
    customer_id = _customer_id(request)
    body = await read_json(request, ProhibitionIn)
    async with scoped(request.app[POOL], principal.scope) as conn:
        if not await customers.visible(conn, customer_id):
            raise NotFound("no such customer")
        added = await customers.add_prohibition(
            conn, customer_id, body.use, body.channel,
            body.received_at or datetime.now(UTC), principal.name,
        )
    # Audited also when the prohibition was already in force: the answer is the customer's
    # detail all the same, a read of their personal data.
    await audit(request, "prohibition.add", target_type="customer",
                target_id=str(customer_id), subject_ids=[customer_id],
                detail={"use": body.use, "channel": body.channel,
                        **({} if added else {"already_in_force": True})})
    detail = await _detail(request, principal, customer_id)
    return json_response(detail, status=201 if added else 200)


@routes.route(
    "DELETE", "/api/v1/customers/{customer_id}/prohibitions/{use}", action="prohibition.write",
    summary="Withdraw a prohibition (kept in history)", tag="customers",
    response=CustomerDetailOut, extra_statuses=(404,),
)
async def withdraw_prohibition(request: web.Request) -> web.Response:
    principal = principal_of(request)
    customer_id = _customer_id(request)
    use = request.match_info["use"]
    if use not in _USES:
        parse_model(ProhibitionIn, {"use": use, "channel": "post"}, "path")
    async with scoped(request.app[POOL], principal.scope) as conn:
        if not await customers.visible(conn, customer_id):
            raise NotFound("no such customer")
        if not await customers.withdraw_prohibition(conn, customer_id, use, principal.name):
            raise NotFound("no prohibition of this use is in force")
    await audit(request, "prohibition.withdraw", target_type="customer",
                target_id=str(customer_id), detail={"use": use})
    return json_response(await _detail(request, principal, customer_id))
