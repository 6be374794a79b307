"""The endpoint table: each route's method, path, policy action and pydantic models.

One declaration drives routing, the authorisation check, request parsing and OpenAPI.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from schemas.common import Problem
from service.http.errors import MalformedBody, RequestTimeout, TooLarge, UnsupportedMediaType
from service.http.keys import SETTINGS
from service.policy import ACTIONS, AUTHENTICATED, PUBLIC
from storage.errors import InvalidInput

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Ahead(Protocol):
    """Work an endpoint starts before its caller is authenticated (see `before_auth`)."""

    async def abandon(self) -> None: ...


M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
JSON_BODY_LIMIT = 1024 * 1024


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    action: str
    handler: Handler
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    request_content: dict[str, Any] | None = None
    response_content: dict[str, Any] | None = None
    extra_statuses: tuple[int, ...] = ()
    operation_id: str = ""
    in_schema: bool = True
    # The body is a bare JSON list of rows, or the `body` model ({"items": [...]}).
    rows_body: bool = False
    # Work that needs no authority and reveals nothing (a read of ciphertext, say), started
    # while the caller is authenticated; abandoned if authentication or the policy refuses.
    before_auth: Callable[[web.Request], Ahead | None] | None = None


@dataclass(eq=False)  # hashed by identity: the OpenAPI document is cached per table
class RouteTable:
    endpoints: list[Endpoint] = field(default_factory=list)

    def route(
        self,
        method: str,
        path: str,
        *,
        action: str,
        summary: str,
        tag: str,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        status: int = 200,
        request_content: dict[str, Any] | None = None,
        response_content: dict[str, Any] | None = None,
        extra_statuses: tuple[int, ...] = (),
        in_schema: bool = True,
        rows_body: bool = False,
        before_auth: Callable[[web.Request], Ahead | None] | None = None,
    ) -> Callable[[Handler], Handler]:
        if action not in ACTIONS and action not in (PUBLIC, AUTHENTICATED):
            raise ValueError(f"{method} {path}: action {action!r} is not in the policy table")

        def register(handler: Handler) -> Handler:
            self.endpoints.append(
                Endpoint(
                    method=method,
                    path=path,
                    action=action,
                    handler=handler,
                    summary=summary,
                    tag=tag,
                    body=body,
                    query=query,
                    response=response,
                    status=status,
                    request_content=request_content,
                    response_content=response_content,
                    extra_statuses=extra_statuses,
                    operation_id=handler.__name__,
                    in_schema=in_schema,
                    rows_body=rows_body,
                    before_auth=before_auth,
                )
            )
            return handler

        return register

    @classmethod
    def join(cls, *tables: RouteTable) -> RouteTable:
        """One table of the endpoints of `tables`, in their order (the router's match order)."""
        return cls([endpoint for table in tables for endpoint in table.endpoints])


ENDPOINT_ATTR = "tallenne_endpoint"


def add_routes(app: web.Application, table: RouteTable) -> None:
    for endpoint in table.endpoints:
        resource_route = app.router.add_route(endpoint.method, endpoint.path, endpoint.handler)
        setattr(resource_route, ENDPOINT_ATTR, endpoint)


def endpoint_of(request: web.Request) -> Endpoint | None:
    route = request.match_info.route
    found: Endpoint | None = getattr(route, ENDPOINT_ATTR, None)
    return found


def _validation_errors(exc: ValidationError, prefix: str) -> InvalidInput:
    errors = [([prefix, *e["loc"]], e["msg"]) for e in exc.errors(include_input=False)]
    return InvalidInput(f"the {prefix} is not valid", errors)


def parse_model(model: type[M], data: Any, where: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _validation_errors(exc, where) from exc


def decode_json(raw: bytes, where: str = "body") -> Any:
    if b"\\u0000" in raw:
        # PostgreSQL text cannot hold NUL: refuse it here rather than fail at the insert.
        raise InvalidInput(f"the {where} contains a NUL character (\\u0000)",
                           [([where], "NUL characters are not accepted")])
    try:
        data = json.loads(raw)
    except RecursionError as exc:
        raise MalformedBody(f"the {where} is nested too deeply", [([where], "too deep")]) from exc
    except (UnicodeDecodeError, ValueError) as exc:
        msg = f"the {where} is not valid JSON"
        if isinstance(exc, json.JSONDecodeError):
            msg += f" (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        # A whole body that is not JSON is malformed (400); a JSON part of a multipart body
        # is one invalid field among others (422).
        error = MalformedBody if where == "body" else InvalidInput
        raise error(msg, [([where], msg)]) from exc
    if _SURROGATE_ESCAPE.search(raw) and not _encodable(data):
        # "\ud800" alone is valid JSON but no character: PostgreSQL's text cannot hold it.
        raise InvalidInput(f"the {where} contains an unpaired surrogate escape (\\ud800-\\udfff)",
                           [([where], "unpaired UTF-16 surrogates are not accepted")])
    return data


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _encodable(data: Any) -> bool:
    try:
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def is_json_type(content_type: str) -> bool:
    """application/json or a JSON-based type (application/problem+json, …)."""
    kind = content_type.lower()
    return kind == "application/json" or (kind.startswith("application/")
                                          and kind.endswith("+json"))


async def within_read_timeout(request: web.Request, reading: Awaitable[T]) -> T:
    """One read of a request body, given at most TALLENNE_BODY_READ_TIMEOUT_S: a client that
    announces a body and then stalls (slowloris) gets 408 instead of holding the request."""
    try:
        async with asyncio.timeout(request.app[SETTINGS].body_read_timeout_s):
            return await reading
    except TimeoutError:
        raise RequestTimeout("the request body stopped arriving; send it without pauses")\
            from None


async def body_chunks(request: web.Request, size: int) -> AsyncIterator[bytes]:
    """The request body in chunks of at most `size` bytes, each read under the timeout."""
    while chunk := await within_read_timeout(request, request.content.read(size)):
        yield chunk


def refuse_non_json(request: web.Request) -> None:
    """415 for a body whose Content-Type is not JSON (a cross-site form post, text/plain)."""
    if request.body_exists and not is_json_type(request.content_type):
        raise UnsupportedMediaType(
            f"the body must be sent as Content-Type: application/json, not "
            f"{request.content_type!r}")


async def read_json_value(request: web.Request, *, limit: int = JSON_BODY_LIMIT,
                          empty: bytes = b"{}") -> Any:
    """A JSON body of bounded size, decoded (`empty` stands for a blank body); a body sent
    as anything but JSON is refused (415), so that no cross-site form post reaches a JSON
    endpoint."""
    refuse_non_json(request)
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"the JSON body exceeds {limit} bytes")
    raw = bytearray()
    async for chunk in body_chunks(request, 64 * 1024):
        raw += chunk
        if len(raw) > limit:
            raise TooLarge(f"the JSON body exceeds {limit} bytes")
    return decode_json(bytes(raw) if raw.strip() else empty)


async def read_json(request: web.Request, model: type[M], *, limit: int = JSON_BODY_LIMIT) -> M:
    """Read and validate a JSON body of bounded size (see `read_json_value`)."""
    return parse_model(model, await read_json_value(request, limit=limit), "body")


R = TypeVar("R", bound=BaseModel)


async def read_json_rows(request: web.Request, model: type[R], *, none_given: str,
                         hint: str) -> R:
    """A body of rows: a bare JSON list (the contract) or {"items": [...]}, validated as
    `model` (which has `items`); at least one row (else 422 saying `none_given`)."""
    raw = await read_json_value(request, empty=b"null")
    body = parse_model(model, {"items": raw} if isinstance(raw, list) else raw, "body")
    if not vars(body)["items"]:
        raise InvalidInput(none_given, [(["body"], hint)])
    return body


def read_query(request: web.Request, model: type[M]) -> M:
    data: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        field_info = model.model_fields.get(key)
        is_list = field_info is not None and "list" in str(field_info.annotation).lower()
        data[key] = values if is_list else values[-1]
    return parse_model(model, data, "query")


def json_response(payload: BaseModel | dict[str, Any] | list[Any], status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    if isinstance(payload, BaseModel):
        text = payload.model_dump_json()
    else:
        text = json.dumps(payload, default=str)
    return web.Response(
        text=text, status=status, content_type="application/json", headers=headers
    )


def problem_schema_ref() -> dict[str, Any]:
    return {"$ref": "#/components/schemas/Problem"}


def build_openapi(title: str, version: str, table: RouteTable) -> dict[str, Any]:
    """OpenAPI 3.1 document generated from the route table and its pydantic models."""
    from pydantic.json_schema import models_json_schema

    models: list[tuple[type[BaseModel], Any]] = [(Problem, "serialization")]
    for ep in table.endpoints:
        if ep.body is not None:
            models.append((ep.body, "validation"))
        if ep.response is not None:
            models.append((ep.response, "serialization"))
    seen: set[tuple[type[BaseModel], str]] = set()
    unique = [m for m in models if not (m in seen or seen.add(m))]  # type: ignore[func-returns-value]
    keys, top = models_json_schema(unique, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = dict(top.get("$defs", {}))

    def ref(model: type[BaseModel], mode: str) -> dict[str, Any]:
        return dict(keys[(model, mode)])  # type: ignore[index]

    paths: dict[str, Any] = {}
    for ep in table.endpoints:
        if not ep.in_schema:
            continue
        op: dict[str, Any] = {
            "operationId": ep.operation_id,
            "summary": ep.summary,
            "tags": [ep.tag],
            "responses": {},
        }
        if ep.action not in (PUBLIC,):
            op["security"] = [{"bearer": []}, {"session": []}]
            if ep.action != AUTHENTICATED:
                op["description"] = f"Requires the action `{ep.action}` ({ACTIONS[ep.action]})."
        else:
            op["security"] = []
        params: list[dict[str, Any]] = []
        for name in _path_params(ep.path):
            params.append(
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            )
        if ep.query is not None:
            qschema = ep.query.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(qschema.pop("$defs", {}))
            required = set(qschema.get("required", []))
            for name, prop in qschema.get("properties", {}).items():
                param: dict[str, Any] = {
                    "name": name,
                    "in": "query",
                    "required": name in required,
                    "schema": prop,
                }
                if prop.get("type") == "array" or any(
                    a.get("type") == "array" for a in prop.get("anyOf", [])
                ):
                    param["explode"] = True
                params.append(param)
        if params:
            op["parameters"] = params
        if ep.request_content is not None:
            op["requestBody"] = {"required": True, "content": ep.request_content}
        elif ep.body is not None:
            body_schema = ref(ep.body, "validation")
            if ep.rows_body:
                model = body_schema["$ref"].rsplit("/", 1)[1]
                body_schema = {"oneOf": [schemas[model]["properties"]["items"], body_schema]}
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": body_schema}},
            }
        if ep.response_content is not None:
            op["responses"][str(ep.status)] = {"description": "OK", "content": ep.response_content}
        elif ep.response is not None:
            op["responses"][str(ep.status)] = {
                "description": "OK",
                "content": {"application/json": {"schema": ref(ep.response, "serialization")}},
            }
        else:
            op["responses"][str(ep.status)] = {"description": "OK"}
        problem = {
            "description": "Problem",
            "content": {"application/problem+json": {"schema": problem_schema_ref()}},
        }
        statuses = {400, 422} if (ep.body or ep.query or ep.request_content) else set()
        if ep.body:
            statuses.add(415)  # a body that is not sent as JSON
        if ep.body or ep.request_content:
            statuses |= {408, 413}  # a body sent too slowly, or too large
        statuses.add(503)  # the database or S3 not answering (with Retry-After)
        if ep.action != PUBLIC:
            statuses |= {401, 403}
        if "{" in ep.path:
            statuses.add(404)
        statuses |= set(ep.extra_statuses)
        for code in sorted(statuses):
            if code == 304:
                op["responses"].setdefault("304", {"description": "Not modified"})
            elif code == 204:
                op["responses"].setdefault("204", {"description": "No content"})
            elif code < 400:
                # Another success status (201 vs 200, 206, 202) carries the same body.
                op["responses"].setdefault(str(code), op["responses"][str(ep.status)])
            else:
                op["responses"].setdefault(str(code), problem)
        op["responses"]["default"] = problem
        paths.setdefault(ep.path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "tallenne_session"},
            },
        },
    }


def _path_params(path: str) -> list[str]:
    names = []
    for part in path.split("/"):
        if part.startswith("{") and part.endswith("}"):
            names.append(part[1:-1].split(":")[0])
    return names
