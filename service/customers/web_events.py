"""Web-site event endpoints: streamed batch ingest (NDJSON or JSON array, gzip) and reads.
The ingest itself is service/customers/event_ingest.py."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from schemas.web_events import BatchReport, WebEventOut, WebEventPage, WebEventQuery
from service.customers.event_ingest import IDEMPOTENCY_ENDPOINT, body_lines, idempotency_key, ingest
from service.http import cursor
from service.http.api import RouteTable, json_response, read_query
from service.http.auth import actor_of, audit, principal_of, read_detail
from service.http.keys import BATCH_SLOTS, POOL, SETTINGS
from storage import web_events
from storage.db import scoped

routes = RouteTable()


@routes.route(
    "POST", "/api/v1/web-events", action="web_event.ingest",
    summary="Push a batch of web-site events (NDJSON or JSON array, gzip allowed)",
    tag="web-events", response=BatchReport,
    request_content={
        "application/x-ndjson": {"schema": {"type": "string"}},
        "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
    },
    extra_statuses=(413, 429),
)
async def post_web_events(request: web.Request) -> web.Response:
    async with request.app[BATCH_SLOTS].slot():
        limit = request.app[SETTINGS].max_batch_bytes
        actor = actor_of(request)
        report, replayed = await ingest(request.app[POOL], actor, idempotency_key(request),
                                        IDEMPOTENCY_ENDPOINT, body_lines(request, limit))
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return json_response(report, headers=headers)


@routes.route(
    "GET", "/api/v1/web-events", action="web_event.read",
    summary="Web-site events by customer, site, event and time; newest first, keyset paged",
    tag="web-events", query=WebEventQuery, response=WebEventPage,
)
async def list_web_events(request: web.Request) -> web.Response:
    principal = principal_of(request)
    query = read_query(request, WebEventQuery)
    after = (cursor.decode(request, "web-events", query.cursor, datetime.fromisoformat, int)
             if query.cursor else None)
    async with scoped(request.app[POOL], principal.scope) as conn:
        items, next_after = await web_events.list_events(
            conn, customer_id=query.customer_id, site=query.site, event=query.event,
            since=query.from_, until=query.to, after=after, limit=query.limit,
        )
    ids_detail, subjects = read_detail(
        customers=[query.customer_id, *(i.customer_id for i in items)])
    await audit(request, "web_event.read", target_type="customer" if query.customer_id else None,
                target_id=str(query.customer_id) if query.customer_id else None,
                company_codes={i.company for i in items} or None, subject_ids=subjects,
                detail={"returned": len(items), "customers": ids_detail["customers"]})
    return json_response(
        WebEventPage(items=[WebEventOut.model_validate(i, from_attributes=True)
                            for i in items],
                     next_cursor=cursor.encode(request, "web-events", *next_after)
                     if next_after else None)
    )
