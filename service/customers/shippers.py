"""Web-site logs from standard log shippers: OTLP/HTTP logs and the Loki push API.

Each request is decoded by schemas/shippers into web-event lines, then stored through the one
ingest path of `/web-events` (service/customers/event_ingest.py): the same validation, company
rule, IP truncation, idempotency and COPY; a record that fails fails alone. A request none of whose
records could be stored answers 422, so a shipper does not retry it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from aiohttp import web

from schemas.shippers import (
    RESPONSE_CONTENT_TYPES,
    DecodedBatch,
    Limits,
    MalformedRequest,
    MappedLine,
    RecordError,
    RequestTooLarge,
    ShipperRequestError,
    UnsupportedMediaType,
    decode_loki_push,
    decode_otlp_logs,
    encode_otlp_response,
    loki_format,
    otlp_format,
    rejection_message,
)
from schemas.web_events import BatchReport, RejectedLine
from service.customers.event_ingest import MAX_LINE_BYTES, decoded_body, idempotency_key, ingest
from service.http.api import RouteTable
from service.http.auth import actor_of
from service.http.errors import MalformedBody, TooLarge
from service.http.keys import BATCH_SLOTS, POOL, SETTINGS
from storage.errors import InvalidInput

routes = RouteTable()

OTLP_ENDPOINT = "otlp-logs"
LOKI_ENDPOINT = "loki-push"
# Rejected records named one by one in a 422's `errors`; the detail counts them all.
ERRORS_SHOWN = 50

Decoder = Callable[[bytes, str | None, Limits], DecodedBatch]


def _translated(exc: ShipperRequestError) -> Exception:
    if isinstance(exc, UnsupportedMediaType):
        return web.HTTPUnsupportedMediaType(text=exc.detail)
    if isinstance(exc, RequestTooLarge):
        return TooLarge(exc.detail)
    if isinstance(exc, MalformedRequest):
        return MalformedBody(exc.detail, [(["body"], exc.detail)])
    return InvalidInput(exc.detail, [(["body"], exc.detail)])


async def _decoded(request: web.Request, decode: Decoder) -> DecodedBatch:
    """The whole body (gunzipped, bounded) decoded off the event loop."""
    limit = request.app[SETTINGS].max_batch_bytes
    body = bytearray()
    async for chunk in decoded_body(request, limit):
        body += chunk
    limits = Limits(max_body_bytes=limit, max_line_bytes=MAX_LINE_BYTES)
    try:
        return await asyncio.to_thread(decode, bytes(body), request.content_type, limits)
    except ShipperRequestError as exc:
        raise _translated(exc) from exc


async def _lines(mapped: Sequence[MappedLine]) -> AsyncIterator[tuple[int, Any]]:
    for record, line in mapped:
        yield record, line


async def _store(
    request: web.Request, endpoint: str, decode: Decoder, what: str
) -> tuple[BatchReport, bool]:
    async with request.app[BATCH_SLOTS].slot():
        batch = await _decoded(request, decode)
        refused = [RejectedLine(line=e.record, error=e.error) for e in batch.errors]
        actor = actor_of(request)
        answer, replayed = await ingest(request.app[POOL], actor, idempotency_key(request),
                                        endpoint, _lines(batch.lines), refused)
    report = BatchReport.model_validate(answer)
    if report.rejected and not report.accepted:
        raise InvalidInput(
            f"none of the {len(report.rejected)} {what}s was stored: "
            + rejection_message([RecordError(r.line, r.error) for r in report.rejected]),
            [(["body", what, r.line], r.error) for r in report.rejected[:ERRORS_SHOWN]],
        )
    return report, replayed


def _replay_headers(replayed: bool) -> dict[str, str] | None:
    return {"Idempotent-Replayed": "true"} if replayed else None


@routes.route(
    "POST", "/api/v1/otlp/v1/logs", action="web_event.ingest", tag="web-events",
    summary="OTLP/HTTP logs (protobuf or JSON, gzip allowed) stored as web events",
    request_content={
        "application/x-protobuf": {"schema": {"type": "string", "format": "binary",
                                              "description": "ExportLogsServiceRequest"}},
        "application/json": {"schema": {"type": "object",
                                        "description": "ExportLogsServiceRequest (OTLP JSON)"}},
    },
    response_content={
        "application/x-protobuf": {"schema": {"type": "string", "format": "binary",
                                              "description": "ExportLogsServiceResponse"}},
        "application/json": {"schema": {"type": "object", "description":
                                        "ExportLogsServiceResponse: partialSuccess "
                                        "{rejectedLogRecords, errorMessage} when records "
                                        "were rejected"}},
    },
    extra_statuses=(413, 415, 429, 503),
)
async def post_otlp_logs(request: web.Request) -> web.Response:
    try:
        fmt = otlp_format(request.headers.get("Content-Type"))
    except ShipperRequestError as exc:
        raise _translated(exc) from exc
    report, replayed = await _store(request, OTLP_ENDPOINT, decode_otlp_logs, "record")
    errors = [RecordError(r.line, r.error) for r in report.rejected]
    body = encode_otlp_response(fmt, len(errors), rejection_message(errors) if errors else "")
    return web.Response(body=body, content_type=RESPONSE_CONTENT_TYPES[fmt],
                        headers=_replay_headers(replayed))


@routes.route(
    "POST", "/api/v1/loki/api/v1/push", action="web_event.ingest", tag="web-events",
    summary="Loki push (JSON, gzip allowed, or snappy protobuf) stored as web events",
    request_content={
        "application/x-protobuf": {"schema": {"type": "string", "format": "binary",
                                              "description": "snappy logproto.PushRequest"}},
        "application/json": {"schema": {"type": "object",
                                        "description": '{"streams": [{"stream", "values"}]}'}},
    },
    response=BatchReport, extra_statuses=(204, 413, 415, 429, 503),
)
async def post_loki_push(request: web.Request) -> web.Response:
    try:
        loki_format(request.headers.get("Content-Type"))
    except ShipperRequestError as exc:
        raise _translated(exc) from exc
    report, replayed = await _store(request, LOKI_ENDPOINT, decode_loki_push, "entry")
    if not report.rejected:
        return web.Response(status=204, headers=_replay_headers(replayed))
    return web.Response(text=report.model_dump_json(), content_type="application/json",
                        headers=_replay_headers(replayed))
