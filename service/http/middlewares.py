"""Request middlewares: request id + JSON access log, metrics, problem documents, auth."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid

import asyncpg
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler
from prometheus_client import Counter, Histogram

from schemas.free_text import contains_personal_id
from service.http import problems
from service.http.api import endpoint_of, refuse_non_json
from service.http.auth import authenticate, client_ip
from service.http.keys import AHEAD_KEY, PRINCIPAL_KEY, REQUEST_ID_KEY, RESPONSE_STARTED_KEY
from service.logs import actor_var, postgres_error_fields, request_id_var
from service.policy import PUBLIC, allowed
from storage import errors
from storage.db import CONNECTION_LOST, TRANSACTION_ROLLED_BACK

logger = logging.getLogger(__name__)

REQUESTS = Counter(
    "tallenne_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
LATENCY = Histogram(
    "tallenne_http_request_duration_seconds",
    "Time to answer an HTTP request (headers sent)",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# nginx's code for a request whose client closed the connection before the answer was sent:
# logged and counted, never sent.
CLIENT_CLOSED_REQUEST = 499


def _request_id_of(request: web.Request) -> str:
    """The client's X-Request-Id if it is sane, else a fresh one. It goes into every log
    line, problem document and audit event of the request, so an id shaped like a personal
    identity code is not sane."""
    incoming = request.headers.get("X-Request-Id", "")
    if _SANE_REQUEST_ID.match(incoming) and not contains_personal_id(incoming):
        return incoming
    return uuid.uuid4().hex


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def client_gone(request: web.Request, exc: BaseException) -> bool:
    """Whether `exc` is the client having closed its connection (a listener who stopped
    playback, a download given up): a ConnectionError while the client's transport is gone
    or closing. It is an OSError like a lost database connection, but says nothing about
    the database."""
    if not isinstance(exc, ConnectionError):
        return False
    transport = request.transport
    return transport is None or transport.is_closing()


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = _request_id_of(request)
    request[REQUEST_ID_KEY] = request_id
    token = request_id_var.set(request_id)
    actor_token = actor_var.set(None)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers["X-Request-Id"] = request_id
        return response
    except web.HTTPException as exc:
        # A redirect (or an error answered by aiohttp itself) is an answer like any other.
        status = exc.status
        exc.headers["X-Request-Id"] = request_id
        raise
    finally:
        elapsed = time.perf_counter() - started
        route = _route_label(request)
        REQUESTS.labels(request.method, route, str(status)).inc()
        LATENCY.labels(request.method, route).observe(elapsed)
        if route not in ("/healthz", "/metrics"):
            logger.info(
                "request",
                extra={
                    "method": request.method,
                    "route": route,
                    "status": status,
                    "ms": round(elapsed * 1000, 1),
                    "client_ip": client_ip(request),
                },
            )
        actor_var.reset(actor_token)
        request_id_var.reset(token)


READ_RETRY_PAUSE_S = 0.3
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})


async def mark_response_started(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: from here on, a request can no longer be answered afresh."""
    request[RESPONSE_STARTED_KEY] = True


async def _drop_stale_connections(request: web.Request) -> None:
    """Pool health check after a lost connection: every pooled connection is replaced by a
    fresh one on its next use, so connections to a primary that is gone (or became a
    standby) are not handed out one failed request at a time."""
    from service.http.keys import AUDIT, POOL

    pools = [request.app.get(POOL)]
    audit = request.app.get(AUDIT)
    if audit is not None:
        pools.append(audit.pool)
    for pool in pools:
        if pool is not None:
            await pool.expire_connections()


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The handler's answer; an idempotent read that lost its database connection before
    its answer began is tried once more on a fresh connection (a failover in progress
    often completes within that pause)."""
    try:
        return await handler(request)
    except CONNECTION_LOST as exc:
        if client_gone(request, exc):
            raise
        await _drop_stale_connections(request)
        if request.method not in IDEMPOTENT or request.get(RESPONSE_STARTED_KEY):
            raise
    await asyncio.sleep(READ_RETRY_PAUSE_S)
    return await handler(request)


@web.middleware
async def problem_documents(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.get(REQUEST_ID_KEY)
    try:
        return await _answer(request, handler)
    except errors.StorageError as exc:
        if isinstance(exc, errors.Unavailable | errors.ObjectMissing | errors.IntegrityError) \
                and not isinstance(exc, errors.KeyDestroyed):
            logger.warning("backing service problem", extra={"error": exc.detail})
        response = problems.from_domain_error(exc, request_id)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = problems.from_http_exception(exc, request_id)
    except (web.RequestPayloadError, HttpProcessingError) as exc:
        # A body that cannot be read as sent (corrupt gzip, broken multipart framing) is
        # the client's fault, not a server error.
        logger.info("unreadable request body", extra={"error": exc.__class__.__name__})
        response = problems.problem_response(
            400, "Bad request", "the request body is malformed and could not be read",
            request_id=request_id,
        )
    except CONNECTION_LOST as exc:
        if client_gone(request, exc):
            # Nobody is left to answer; the request is logged and counted as closed by
            # its client, and nothing is wrong with the backing services.
            logger.info("client went away", extra={"error": exc.__class__.__name__})
            return web.Response(status=CLIENT_CLOSED_REQUEST)
        # PostgreSQL went away mid-request (killed, restarting, failing over to a standby,
        # network): the client may retry.
        logger.warning("backing service lost", extra={"error": exc.__class__.__name__})
        response = problems.problem_response(
            503, "Service unavailable", "a backing service is not reachable; retry later",
            request_id=request_id, headers={"Retry-After": "2"},
        )
    except asyncpg.DataError as exc:
        # A value the database cannot take (a date beyond its range once in UTC, a number
        # past its type): the request's fault. The value itself is neither logged nor sent.
        logger.info("request value refused by the database",
                    extra={"error": exc.__class__.__name__})
        response = problems.problem_response(
            422, "Invalid input",
            "a value in the request is outside what can be stored or compared (a date too"
            " far in the past or future, a number too large)", request_id=request_id,
        )
    except TRANSACTION_ROLLED_BACK as exc:
        # Chosen by PostgreSQL as the victim of a deadlock (or a serialisation failure)
        # with a concurrent transaction: nothing was written, and a retry may succeed.
        logger.warning("transaction rolled back by the database",
                       extra={"error": exc.__class__.__name__})
        response = problems.problem_response(
            503, "Service unavailable",
            "the request collided with a concurrent one and was not applied; retry it",
            request_id=request_id, headers={"Retry-After": "1"},
        )
    except Exception as exc:
        if isinstance(exc, asyncpg.PostgresError):
            # Its message and DETAIL quote row values (an identity code's hash, a failing
            # row): only its class, SQLSTATE and schema names are logged.
            logger.error("unhandled error", extra=postgres_error_fields(exc), exc_info=exc)
        else:
            logger.exception("unhandled error")
        response = problems.problem_response(
            500,
            "Internal server error",
            "the service failed to answer; the request id identifies it in the logs",
            request_id=request_id,
        )
    response.headers["X-Request-Id"] = request_id or ""
    return response


def _refuse_nul(request: web.Request) -> None:
    """PostgreSQL text cannot hold NUL: a URL carrying one is refused before any query."""
    if "\x00" in request.path:
        raise errors.InvalidInput("the URL path contains a NUL character (%00)",
                                  [(["path"], "NUL characters are not accepted")])
    for name, value in request.query.items():
        if "\x00" in name or "\x00" in value:
            raise errors.InvalidInput(
                "a query parameter contains a NUL character (%00)",
                [(["query", name.replace("\x00", "")], "NUL characters are not accepted")],
            )


@web.middleware
async def authorisation(request: web.Request, handler: Handler) -> web.StreamResponse:
    _refuse_nul(request)
    endpoint = endpoint_of(request)
    if endpoint is not None and endpoint.body is not None:
        refuse_non_json(request)
    if endpoint is None or endpoint.action == PUBLIC:
        return await handler(request)
    ahead = endpoint.before_auth(request) if endpoint.before_auth is not None else None
    try:
        principal = await authenticate(request, endpoint)
        request[PRINCIPAL_KEY] = principal
        actor_var.set(principal.name)
        if not allowed(principal.role, endpoint.action):
            raise errors.Forbidden(f"the role {principal.role} may not {endpoint.action}")
    except BaseException:
        if ahead is not None:
            await ahead.abandon()
        raise
    if ahead is not None:
        request[AHEAD_KEY] = ahead
    return await handler(request)
