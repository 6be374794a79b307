"""The one ingest path of web-site events (validation, company rule, IP truncation,
idempotency, COPY), shared by `/web-events` and the OTLP and Loki endpoints
(service/customers/shippers.py), and the bounded number of batches stored at a time.

Company rule: every event belongs to one company, which the posting token must cover. A line
naming `company` belongs to it, unless the site registry (service/customers/sites.py) names
another company for its site: then it is rejected, without naming that company. A line
without it belongs to its site's company in the registry; a line of an unregistered site
belongs to the token's company when the token has exactly one, and is rejected, naming the
site, when it covers several. No rejection text carries an identity code: they are masked.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import ijson
from aiohttp import web
from prometheus_client import Counter
from pydantic import ValidationError

from schemas.ip import truncated_ip
from schemas.web_events import (
    MAX_REPORTED_REJECTIONS,
    BatchReport,
    RejectedLine,
    WebEventLine,
    attributes_json,
    mask_identity_codes,
)
from service.http.api import body_chunks
from service.http.auth import Actor
from service.http.errors import MalformedBody, TooLarge, TooManyRequests
from service.http.principal import Principal
from service.settings import Settings
from storage import accounts, sites, web_events
from storage.db import Scope, scoped
from storage.errors import InvalidInput

STAGE_EVERY = 5000
# One event is a page view or a click: far below this even with long URLs and attributes.
MAX_LINE_BYTES = 64 * 1024
READ_CHUNK = 64 * 1024
IDEMPOTENCY_ENDPOINT = "web-events"
_KEY_SHAPE = re.compile(r"^[\x21-\x7e]{1,200}$")
WEB_EVENT_LINES = Counter("tallenne_web_event_lines",
                          "Web-event lines of stored batches, by outcome (accepted, rejected)",
                          ["outcome"])


def batch_slots(settings: Settings) -> int:
    """Concurrent batches allowed: each holds a connection, so leave the pool room."""
    return max(2, settings.database_pool_size // 2 - 1)


class BatchSlots:
    """The batches one application is storing at a time, bounded by `batch_slots`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.inflight = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One of the concurrent batch slots, or 429 with Retry-After when all are taken."""
        if self.inflight >= batch_slots(self.settings):
            raise TooManyRequests("too many batches in progress; retry shortly", retry_after=1)
        self.inflight += 1
        try:
            yield
        finally:
            self.inflight -= 1


async def decoded_body(request: web.Request, limit: int) -> AsyncIterator[bytes]:
    """The body in chunks, gunzipped with bounded output, refused once past `limit` bytes.

    aiohttp normally decodes `Content-Encoding: gzip` itself (also in bounded steps); a body
    still gzip-framed when it reaches here is inflated at most READ_CHUNK bytes at a time.
    """
    if request.content_length is not None and not request.headers.get("Content-Encoding") \
            and request.content_length > limit:
        raise TooLarge(f"the batch exceeds {limit} bytes")
    total = 0
    inflater: Any = None
    first = True
    try:
        async for chunk in body_chunks(request, READ_CHUNK):
            if first:
                first = False
                if chunk[:2] == b"\x1f\x8b":
                    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            if inflater is None:
                total += len(chunk)
                if total > limit:
                    raise TooLarge(f"the batch exceeds {limit} bytes once decompressed")
                yield chunk
                continue
            data = chunk
            while data:
                out = inflater.decompress(data, READ_CHUNK)
                total += len(out)
                if total > limit:
                    raise TooLarge(f"the batch exceeds {limit} bytes once decompressed")
                if out:
                    yield out
                data = inflater.unconsumed_tail
    except zlib.error as exc:
        raise InvalidInput("the body is not valid gzip", [(["body"], "bad gzip")]) from exc
    except web.HTTPException:
        raise
    except Exception as exc:  # aiohttp's own decoder reports corrupt gzip this way
        if exc.__class__.__name__ == "ContentEncodingError":
            raise InvalidInput("the body is not valid gzip", [(["body"], "bad gzip")]) from exc
        raise


MAX_JSON_DEPTH = 64  # an event is flat; its attributes nest a few levels at most


async def array_elements(
    head: bytes, chunks: AsyncIterator[bytes]
) -> AsyncIterator[tuple[int, Any]]:
    """The elements of a JSON-array body, parsed incrementally (ijson's C parser, its events
    built into one element at a time): never the whole array in memory. A body that is not
    one well-formed array, or nests deeper than MAX_JSON_DEPTH, is refused whole (400)."""
    events: list[tuple[str, Any]] = ijson.sendable_list()
    parser = ijson.basic_parse_coro(events, use_float=True)
    depth = 0
    number = 0
    builder: Any = None

    def completed() -> list[tuple[int, Any]]:
        nonlocal depth, number, builder
        out: list[tuple[int, Any]] = []
        for event, value in events:
            if event in ("start_map", "start_array"):
                depth += 1
                if depth > MAX_JSON_DEPTH:
                    raise MalformedBody("the body is nested too deeply", [(["body"], "too deep")])
                if depth == 1:
                    continue  # the array itself
            elif event in ("end_map", "end_array"):
                depth -= 1
                if depth == 0:
                    continue
            elif depth == 1:
                number += 1  # a scalar element (rejected as its line)
                out.append((number, value))
                continue
            if builder is None:
                builder = ijson.ObjectBuilder()
            builder.event(event, value)
            if depth == 1:
                number += 1
                out.append((number, builder.value))
                builder = None
        del events[:]
        return out

    chunk = head
    try:
        while True:
            parser.send(chunk)
            for item in completed():
                yield item
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                break
        parser.close()
    except ijson.JSONError as exc:
        raise MalformedBody("the body is not a valid JSON array",
                            [(["body"], "not a valid JSON array")]) from exc
    for item in completed():
        yield item


async def body_lines(request: web.Request, limit: int) -> AsyncIterator[tuple[int, Any]]:
    """(line number, raw line bytes or a parsed element) for NDJSON or a JSON array."""
    chunks = decoded_body(request, limit)
    head = b""
    async for chunk in chunks:
        head += chunk
        if head.strip():
            break
    is_array = head.lstrip()[:1] == b"["
    if is_array:
        async for item in array_elements(head, chunks):
            yield item
        return
    pending = head
    number = 0
    while True:
        *lines, pending = pending.split(b"\n")
        for line in lines:
            number += 1
            if line.strip():
                yield number, line
        try:
            pending += await anext(chunks)
        except StopAsyncIteration:
            break
    if pending.strip():
        yield number + 1, pending


def _rejection(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return _error_text(exc)
    if isinstance(exc, RecursionError):
        return "the line is nested too deeply"
    return str(exc)


def _rejected(number: int, error: str) -> RejectedLine:
    # Rejection texts quote what the client sent (a site, an attribute name); they are
    # answered, kept with the idempotency key and shipped back to the sender's logs.
    return RejectedLine(line=number, error=mask_identity_codes(error))


def _holds_nul(value: Any) -> bool:
    """Whether a parsed JSON element has a NUL in any string, key or value, also in fields
    a line ignores: the same rule as the `\\u0000` test of an NDJSON line."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


def _error_text(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(parts)


class LineConverter:
    """Validates one line and turns it into a staging row, applying the company rule."""

    def __init__(self, scope: Scope, companies: dict[str, UUID], sites: dict[str, UUID]) -> None:
        self.companies = {c: i for c, i in companies.items() if scope.allows(i)}
        self.scope = scope
        self.sites = sites
        own = list(scope.company_ids) if not scope.all_companies else []
        self.default_company = own[0] if len(own) == 1 else None
        self.months: set[Any] = set()

    def convert(self, raw: Any) -> tuple[Any, ...]:
        if isinstance(raw, bytes | bytearray) and len(raw) > MAX_LINE_BYTES:
            raise ValueError(f"the line exceeds {MAX_LINE_BYTES} bytes")
        if isinstance(raw, bytes | bytearray):
            if b"\\u0000" in raw:
                # PostgreSQL's text and jsonb cannot hold NUL: this line fails, not the batch.
                raise ValueError("the line contains a NUL character (\\u0000)")
            line = WebEventLine.model_validate_json(raw)
        elif isinstance(raw, dict):
            if _holds_nul(raw):
                raise ValueError("the line contains a NUL character (\\u0000)")
            line = WebEventLine.model_validate(raw)
        else:
            raise ValueError("the element is not a JSON object")
        company_id = self.company_of(line)
        self.months.add(web_events.month_of(line.ts))
        return (
            line.ts, company_id, line.site, line.event, line.url, line.session_id,
            line.customer_number, truncated_ip(line.ip), line.user_agent, line.referrer,
            attributes_json(line.attributes),
        )

    def company_of(self, line: WebEventLine) -> UUID:
        site_company = self.sites.get(line.site)
        if line.company is not None:
            company_id = self.companies.get(line.company)
            if company_id is None:
                raise ValueError("company is not one of the token's companies")
            if site_company is not None and site_company != company_id:
                # The same words whether or not the token covers the registered company,
                # and never which company that is.
                raise ValueError(f"site {line.site!r} is registered to another company than"
                                 " the line names")
            return company_id
        if site_company is not None:
            if not self.scope.allows(site_company):
                raise ValueError(
                    f"site {line.site!r} belongs to a company the token does not cover")
            return site_company
        if self.default_company is not None:
            return self.default_company
        raise ValueError(
            f"unknown site {line.site!r}: the site registry (/api/v1/sites) does not name its"
            " company and the line gives none")


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _KEY_SHAPE.match(key):
        raise InvalidInput("the Idempotency-Key header is not valid",
                           [(["header", "Idempotency-Key"], "1-200 printable characters")])
    return key


async def ingest(
    pool: asyncpg.Pool, actor: Actor, key: str | None, endpoint: str,
    lines: AsyncIterable[tuple[int, Any]], rejected_before: Iterable[RejectedLine] = (),
) -> tuple[dict[str, Any], bool]:
    """Store the lines of one request as its actor, each failing alone, once per idempotency
    key; (the BatchReport, replayed).

    `rejected_before` are lines a decoder already refused (a shipper's record that maps to no
    line); they join the report in line order. Audited with counts only.
    """
    report, replayed = await store_lines(pool, actor.caller, key, endpoint, lines,
                                         rejected_before)
    await actor.audit("web_event.ingest", target_type="web_events",
                      detail={"accepted": report["accepted"],
                              "rejected": report["rejected_total"], "replayed": replayed,
                              **({"via": endpoint} if endpoint != IDEMPOTENCY_ENDPOINT
                                 else {})})
    return report, replayed


async def store_lines(
    pool: asyncpg.Pool, principal: Principal, key: str | None, endpoint: str,
    lines: AsyncIterable[tuple[int, Any]], rejected_before: Iterable[RejectedLine],
) -> tuple[dict[str, Any], bool]:
    """Validate and store the lines as this principal (once per idempotency key)."""
    account = principal.account
    async with pool.acquire() as conn:
        companies = {c.code: c.id for c in await accounts.list_companies(conn)}
        registry = await sites.site_companies(conn)
    converter = LineConverter(principal.scope, companies, registry)
    async with scoped(pool, principal.scope) as conn:
        if key is not None:
            stored = await web_events.claim_idempotency_key(
                conn, account.kind, account.id, endpoint, key
            )
            if stored is not None:
                return stored[1], True
        await web_events.prepare_staging(conn)
        before = [_rejected(r.line, r.error) for r in rejected_before]
        rejected: list[RejectedLine] = before[:MAX_REPORTED_REJECTIONS]
        rejected_total = len(before)
        rows: list[tuple[Any, ...]] = []
        async for number, raw in lines:
            try:
                rows.append(converter.convert(raw))
            except (ValidationError, ValueError, RecursionError) as exc:
                # Only the first MAX_REPORTED_REJECTIONS are described; the rest are counted.
                rejected_total += 1
                if len(rejected) < MAX_REPORTED_REJECTIONS:
                    rejected.append(_rejected(number, _rejection(exc)))
            if len(rows) >= STAGE_EVERY:
                await web_events.stage(conn, rows)
                rows = []
        await web_events.stage(conn, rows)
        this_month = web_events.month_of(datetime.now(UTC))
        missing = await web_events.missing_partitions(
            conn, converter.months | {this_month, web_events.next_month(this_month)})
        if missing:  # about once a month: a connection of its own creates them
            await _ensure_partitions(pool, set(missing))
        accepted = await web_events.publish_staged(conn)
        rejected.sort(key=lambda r: r.line)
        WEB_EVENT_LINES.labels("accepted").inc(accepted)
        WEB_EVENT_LINES.labels("rejected").inc(rejected_total)
        report = BatchReport(accepted=accepted, rejected=rejected,
                             rejected_total=rejected_total).model_dump()
        if key is not None:
            await web_events.store_idempotent_answer(
                conn, account.kind, account.id, endpoint, key, 200, report
            )
    return report, False


async def _ensure_partitions(pool: asyncpg.Pool, months: set[Any]) -> None:
    for attempt in range(3):
        try:
            await web_events.ensure_partitions(pool, months)
            return
        except asyncpg.DeadlockDetectedError:
            if attempt == 2:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))


