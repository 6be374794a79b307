"""Operational endpoints: liveness, readiness, Prometheus metrics, OpenAPI and its docs page."""

from __future__ import annotations

import asyncio
import functools
import html
import json
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from schemas.ops import Health, Readiness
from service.http.api import RouteTable, build_openapi, json_response
from service.http.keys import AUDIT_LOCK, OBJECTS, POOL, ROUTE_TABLE
from service.policy import PUBLIC
from storage.db import ping
from storage.errors import StorageError, Unavailable

routes = RouteTable()

READY_TIMEOUT_S = 3.0
API_VERSION = "1.0.0"


@functools.cache
def _spec(table: RouteTable) -> dict[str, Any]:
    """The OpenAPI document of a route table (fixed once the application is created)."""
    return build_openapi("tallenne", API_VERSION, table)


@routes.route("GET", "/healthz", action=PUBLIC, summary="The process is up", tag="operations",
              response=Health)
async def healthz(request: web.Request) -> web.Response:
    return json_response(Health(status="ok"))


async def _check_postgres(request: web.Request) -> str:
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            async with request.app[POOL].acquire() as conn:
                await ping(conn)
    except Exception:
        return "unreachable"
    return "ok"


async def _check_s3(request: web.Request) -> str:
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await request.app[OBJECTS].ping()
    except (TimeoutError, StorageError):
        return "unreachable"
    return "ok"


@routes.route("GET", "/readyz", action=PUBLIC, summary="PostgreSQL and S3 are reachable",
              tag="operations", response=Readiness, extra_statuses=(503,))
async def readyz(request: web.Request) -> web.Response:
    postgres, s3 = await asyncio.gather(_check_postgres(request), _check_s3(request))
    if postgres != "ok" or s3 != "ok":
        failing = [name for name, state in (("PostgreSQL", postgres), ("S3", s3)) if state != "ok"]
        raise Unavailable(f"not ready: {' and '.join(failing)} unreachable", retry_after=2)
    probe = request.app.get(AUDIT_LOCK)
    lock = None if probe is None else (
        probe.state if probe.enforced else f"{probe.state}: {probe.detail}")
    return json_response(Readiness(status="ready", postgres=postgres, s3=s3,
                                   audit_checkpoint_lock=lock))


@routes.route("GET", "/metrics", action=PUBLIC, summary="Prometheus metrics", tag="operations",
              response_content={"text/plain": {"schema": {"type": "string"}}})
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.route("GET", "/api/v1/openapi.json", action=PUBLIC, summary="This API as OpenAPI 3.1",
              tag="operations", response_content={"application/json": {"schema": {}}})
async def openapi(request: web.Request) -> web.Response:
    return json_response(_spec(request.app[ROUTE_TABLE]))


@routes.route("GET", "/api/docs", action=PUBLIC, summary="Browsable API documentation",
              tag="operations", response_content={"text/html": {"schema": {"type": "string"}}})
async def api_docs(request: web.Request) -> web.Response:
    spec = _spec(request.app[ROUTE_TABLE])
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>tallenne API</title>",
        "<link rel=stylesheet href=/static/app.css></head><body class=docs>",
        "<h1>tallenne API</h1><p>Machine-readable: <a href=/api/v1/openapi.json>openapi.json"
        "</a>. Authenticate with <code>Authorization: Bearer &lt;token&gt;</code> or a session"
        " cookie plus <code>X-CSRF-Token</code>.</p>",
    ]
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            parts.append(
                f"<details><summary><code class=method>{method.upper()}</code> "
                f"<code>{html.escape(path)}</code> {html.escape(op['summary'])}</summary>"
            )
            if op.get("description"):
                parts.append(f"<p>{html.escape(op['description'])}</p>")
            for param in op.get("parameters", []):
                parts.append(
                    f"<p><code>{html.escape(param['name'])}</code> ({param['in']}"
                    f"{', required' if param.get('required') else ''})</p>"
                )
            if "requestBody" in op:
                parts.append("<h4>Request</h4><pre>"
                             + html.escape(json.dumps(op["requestBody"]["content"], indent=1))
                             + "</pre>")
            parts.append("<h4>Responses</h4><ul>")
            for status in op["responses"]:
                parts.append(f"<li>{html.escape(status)}</li>")
            parts.append("</ul></details>")
    parts.append("<h2>Schemas</h2><pre>"
                 + html.escape(json.dumps(spec["components"]["schemas"], indent=1)) + "</pre>")
    parts.append("</body></html>")
    return web.Response(text="".join(parts), content_type="text/html")
