"""Turns domain errors and HTTP exceptions into application/problem+json responses."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from service.http import errors as request_errors
from storage import errors

logger = logging.getLogger(__name__)

STATUS_OF: list[tuple[type[errors.StorageError], int]] = [
    (request_errors.MalformedBody, 400),
    (errors.AudioRejected, 422),
    (errors.InvalidInput, 422),
    (errors.NotFound, 404),
    (errors.AlreadyExists, 409),
    (errors.Conflict, 409),
    (errors.Forbidden, 403),
    (request_errors.Unauthenticated, 401),
    (request_errors.TooLarge, 413),
    (request_errors.UnsupportedMediaType, 415),
    (request_errors.RequestTimeout, 408),
    (request_errors.TooManyRequests, 429),
    (errors.Unavailable, 503),
    (errors.ObjectMissing, 503),
    (errors.KeyDestroyed, 410),
    (errors.IntegrityError, 500),
]


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    request_id: str | None = None,
    issues: list[tuple[list[Any], str]] | None = None,
    headers: dict[str, str] | None = None,
    type_: str = "about:blank",
) -> web.Response:
    body: dict[str, Any] = {"type": type_, "title": title, "status": status, "detail": detail}
    if issues:
        body["errors"] = [{"loc": loc, "msg": msg} for loc, msg in issues]
    if request_id:
        body["request_id"] = request_id
    return web.Response(
        status=status,
        text=json.dumps(body, ensure_ascii=False),
        content_type="application/problem+json",
        headers=headers,
    )


def from_domain_error(exc: errors.StorageError, request_id: str | None) -> web.Response:
    status = next((code for cls, code in STATUS_OF if isinstance(exc, cls)), 500)
    headers: dict[str, str] = {}
    if isinstance(exc, request_errors.TooManyRequests | errors.Unavailable):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, request_errors.Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="tallenne"'
    issues = exc.errors if isinstance(exc, errors.InvalidInput) else None
    return problem_response(
        status, exc.title, exc.detail, request_id=request_id, issues=issues, headers=headers
    )


def from_http_exception(exc: web.HTTPException, request_id: str | None) -> web.Response:
    detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
    if exc.status == 404:
        detail = "no such resource"
    elif exc.status == 405:
        detail = "this method is not allowed on this resource"
    elif exc.status == 413:
        detail = "the request body is too large"
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    return problem_response(
        exc.status, exc.reason, detail or exc.reason, request_id=request_id, headers=headers
    )
