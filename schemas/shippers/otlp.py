"""OTLP/HTTP logs: an `ExportLogsServiceRequest` (protobuf or OTLP JSON) decoded into web-event
line dicts by the OpenTelemetry semantic conventions, and the partial-success answer."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from schemas.shippers.batch import (
    DecodedBatch,
    Limits,
    MappedLine,
    RecordError,
    RecordRejected,
    media_type,
    text_without_nul,
    time_from_unix_nanos,
)
from schemas.shippers.errors import MalformedRequest, RequestTooLarge

PROTOBUF = "protobuf"
JSON = "json"
_MEDIA_TYPES = {"application/x-protobuf": PROTOBUF, "application/json": JSON}
RESPONSE_CONTENT_TYPES = {PROTOBUF: "application/x-protobuf", JSON: "application/json"}
DEFAULT_EVENT = "log"
# What the SDKs put in service.name when the application set none: it names no site.
_UNSET_SERVICE = "unknown_service"
_COMPANY_KEYS = ("tallenne.company", "company")
# The client's address by the current semantic conventions, then by older ones; the first
# given is the event's `ip` (truncated before storage), the others are dropped.
_IP_KEYS = ("client.address", "http.client_ip", "net.sock.peer.addr", "net.peer.ip")
# Record attributes that become fields; all of them are consumed even when another one of
# the same field wins (url.full over url.path), so a field is never stored twice.
_FIELD_KEYS = frozenset({
    "url.full", "url.path", "url.query", "session.id", "user_agent.original",
    "http.request.header.referer", "event.name", "enduser.id", "server.address",
    *_COMPANY_KEYS, *_IP_KEYS,
})
_RESOURCE_FIELD_KEYS = frozenset({"service.name", "server.address", *_COMPANY_KEYS})
# What the SDK says of itself (name, language, version) and the id it draws per process:
# the same on every record of a sender, and nothing about the visit.
_DROPPED_RESOURCE_PREFIX = "telemetry."
_DROPPED_RESOURCE_KEYS = frozenset({"service.instance.id"})
_JSON_ID_LENGTHS = {"traceId": 32, "trace_id": 32, "spanId": 16, "span_id": 16}
_HEX = re.compile(r"^[0-9a-fA-F]*$")
_PARSE_FIELD = re.compile(r"Failed to parse (\w+) field")


def otlp_format(content_type: str | None) -> str:
    """PROTOBUF or JSON for a Content-Type; UnsupportedMediaType for anything else."""
    return media_type(content_type, _MEDIA_TYPES, "OTLP/HTTP logs")


def decode_otlp_logs(
    body: bytes, content_type: str | None, limits: Limits | None = None
) -> DecodedBatch:
    """Every LogRecord of the request as a web-event line dict or a per-record error.

    `body` is already decompressed (Content-Encoding is the endpoint's) and bounded by the
    caller; MalformedRequest when it is not the message, RequestTooLarge past the limits.
    """
    limits = limits or Limits()
    fmt = otlp_format(content_type)
    if len(body) > limits.max_body_bytes:
        raise RequestTooLarge(f"the request exceeds {limits.max_body_bytes} bytes")
    if fmt == PROTOBUF:
        return _decode_protobuf(body, limits)
    return _decode_json(body, limits)


def _decode_protobuf(body: bytes, limits: Limits) -> DecodedBatch:
    request = ExportLogsServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as exc:
        raise MalformedRequest(
            "the body is not a protobuf OTLP ExportLogsServiceRequest"
        ) from exc
    total = sum(
        len(scope_logs.log_records)
        for resource_logs in request.resource_logs
        for scope_logs in resource_logs.scope_logs
    )
    _check_record_count(total, limits)
    batch = DecodedBatch()
    number = 0
    for resource_logs in request.resource_logs:
        try:
            context: _ResourceContext | str = _resource_context(resource_logs.resource)
        except RecordRejected as exc:
            context = f"resource: {exc}"
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                number += 1
                _map_into(batch, number, record, context, limits)
    return batch


def _decode_json(body: bytes, limits: Limits) -> DecodedBatch:
    try:
        document = json.loads(body)
    except RecursionError as exc:
        raise MalformedRequest("the body is nested too deeply") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedRequest("the body is not valid JSON") from exc
    if not isinstance(document, dict):
        raise MalformedRequest("the body must be a JSON object (ExportLogsServiceRequest)")
    resources = _json_list(document, ("resourceLogs", "resource_logs"), "resourceLogs")
    tree: list[tuple[Any, list[list[Any]]]] = []
    total = 0
    for i, resource_logs in enumerate(resources):
        where = f"resourceLogs[{i}]"
        scopes = _json_list(resource_logs, ("scopeLogs", "scope_logs"), f"{where}.scopeLogs")
        records = [
            _json_list(scope, ("logRecords", "log_records"), f"{where}.scopeLogs[{j}].logRecords")
            for j, scope in enumerate(scopes)
        ]
        total += sum(len(r) for r in records)
        tree.append((resource_logs.get("resource"), records))
    _check_record_count(total, limits)
    batch = DecodedBatch()
    number = 0
    for resource_json, scopes_records in tree:
        context: _ResourceContext | str
        try:
            if not isinstance(resource_json, dict | None):
                raise RecordRejected("must be a JSON object")
            resource = json_format.ParseDict(
                resource_json or {}, Resource(), ignore_unknown_fields=True
            )
            context = _resource_context(resource)
        except json_format.ParseError as exc:
            context = f"resource: {_parse_error_text(exc)}"
        except RecordRejected as exc:
            context = f"resource: {exc}"
        for records in scopes_records:
            for record_json in records:
                number += 1
                try:
                    record = _log_record_from_json(record_json)
                except RecordRejected as exc:
                    batch.errors.append(RecordError(number, str(exc)))
                    continue
                _map_into(batch, number, record, context, limits)
    return batch


def _json_list(container: Any, keys: tuple[str, str], where: str) -> list[Any]:
    if not isinstance(container, dict):
        raise MalformedRequest(f"{where.rsplit('.', 1)[0]} must be a JSON object")
    value = container.get(keys[0], container.get(keys[1]))
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedRequest(f"{where} must be an array")
    return value


def _log_record_from_json(record_json: Any) -> LogRecord:
    if not isinstance(record_json, dict):
        raise RecordRejected("the log record is not a JSON object")
    # OTLP JSON spells trace and span ids in hex where proto3 JSON expects base64.
    record_json = dict(record_json)
    for key, length in _JSON_ID_LENGTHS.items():
        if key not in record_json:
            continue
        value = record_json[key]
        if not isinstance(value, str) or not _HEX.match(value) or len(value) not in (0, length):
            raise RecordRejected(f"{key} must be {length} hexadecimal digits")
        record_json[key] = base64.b64encode(binascii.unhexlify(value)).decode()
    record = LogRecord()
    try:
        json_format.ParseDict(record_json, record, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise RecordRejected(_parse_error_text(exc)) from exc
    return record


def _parse_error_text(exc: json_format.ParseError) -> str:
    """Where the JSON is wrong, without echoing the value (it may be personal data)."""
    path = ".".join(_PARSE_FIELD.findall(str(exc)))
    return f"{path} is not valid OTLP JSON" if path else "not a valid OTLP JSON message"


def _check_record_count(total: int, limits: Limits) -> None:
    if total > limits.max_records:
        raise RequestTooLarge(
            f"the request holds {total} log records; at most {limits.max_records} are taken"
        )


@dataclass(frozen=True)
class _ResourceContext:
    service_name: str | None
    server_address: str | None
    company: str | None
    attributes: dict[str, Any]


def _resource_context(resource: Resource) -> _ResourceContext:
    attributes = _attributes(resource.attributes)
    service = attributes.get("service.name")
    if isinstance(service, str) and (
        service == _UNSET_SERVICE or service.startswith(_UNSET_SERVICE + ":")
    ):
        service = None
    return _ResourceContext(
        service_name=_field_text(service, "resource service.name"),
        server_address=_field_text(attributes.get("server.address"), "resource server.address"),
        company=_company(attributes, "resource"),
        attributes={
            key: value for key, value in attributes.items()
            if key not in _RESOURCE_FIELD_KEYS and key not in _DROPPED_RESOURCE_KEYS
            and not key.startswith(_DROPPED_RESOURCE_PREFIX)
        },
    )


def _map_into(
    batch: DecodedBatch, number: int, record: LogRecord, context: _ResourceContext | str,
    limits: Limits,
) -> None:
    if isinstance(context, str):
        batch.errors.append(RecordError(number, context))
        return
    try:
        if record.ByteSize() > limits.max_line_bytes:
            raise RecordRejected(f"the log record exceeds {limits.max_line_bytes} bytes")
        batch.lines.append(MappedLine(number, _map_log_record(record, context)))
    except RecordRejected as exc:
        batch.errors.append(RecordError(number, str(exc)))


def _map_log_record(record: LogRecord, context: _ResourceContext) -> dict[str, Any]:
    """One LogRecord as a web-event line dict; RecordRejected when it cannot be one."""
    fields, extra = _split_attributes(record.attributes)
    nanos = record.time_unix_nano or record.observed_time_unix_nano
    if not nanos:
        raise RecordRejected("the log record has neither timeUnixNano nor observedTimeUnixNano")
    url = fields.get("url.full")
    if url is None:
        url = fields.get("url.path")
        query = fields.get("url.query")
        if url is not None and query:
            url = f"{url}?{query}"
    event = record.event_name
    if event:
        text_without_nul(event, "event_name")
    site = context.service_name or fields.get("server.address") or context.server_address
    if site is None:
        raise RecordRejected("no site: the resource has no service.name or server.address")
    if record.HasField("body"):
        extra.setdefault("body", _any_value(record.body, "body"))
    if record.trace_id:
        extra.setdefault("trace_id", record.trace_id.hex())
    if record.span_id:
        extra.setdefault("span_id", record.span_id.hex())
    if context.attributes:
        extra.setdefault("resource", context.attributes)
    return {
        "ts": time_from_unix_nanos(nanos),
        "site": site,
        "event": event or fields.get("event.name") or DEFAULT_EVENT,
        "url": url,
        "session_id": fields.get("session.id"),
        "customer_number": fields.get("enduser.id"),
        "company": fields.get("tallenne.company") or fields.get("company") or context.company,
        "ip": next((fields[key] for key in _IP_KEYS if fields.get(key)), None),
        "user_agent": fields.get("user_agent.original"),
        "referrer": fields.get("http.request.header.referer"),
        "attributes": extra,
    }


def _split_attributes(key_values: Any) -> tuple[dict[str, str | None], dict[str, Any]]:
    """The attributes that become fields (as text) and the rest, in one pass: a batch holds
    up to max_records records of several attributes each."""
    fields: dict[str, str | None] = {}
    extra: dict[str, Any] = {}
    for key_value in key_values:
        key = key_value.key
        value = key_value.value
        if value.WhichOneof("value") == "string_value":
            item = value.string_value
            if "\x00" in item:
                raise RecordRejected(f"attribute {key!r} contains a NUL character")
        else:
            item = _any_value(value, f"attribute {key!r}")
        if key in _FIELD_KEYS:
            fields[key] = item if item is None or type(item) is str else _field_text(item, key)
        else:
            text_without_nul(key, "an attribute name")
            extra[key] = item
    return fields, extra


def _company(attributes: dict[str, Any], where: str) -> str | None:
    for key in _COMPANY_KEYS:
        company = _field_text(attributes.get(key), f"{where} {key}")
        if company is not None:
            return company
    return None


def _field_text(value: Any, key: str) -> str | None:
    """A string field from an attribute value. Integers are written out (enduser.id may be a
    number); an array (http.request.header.* is string[]) gives its first element."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list):
        return _field_text(value[0], key) if value else None
    raise RecordRejected(f"attribute {key!r} must be a string")


def _attributes(key_values: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for key_value in key_values:
        key = text_without_nul(key_value.key, "an attribute name")
        attributes[key] = _any_value(key_value.value, f"attribute {key!r}")
    return attributes


def _any_value(value: AnyValue, where: str) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return text_without_nul(value.string_value, where)
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        number = value.double_value
        # jsonb has no NaN or infinity; keep what was sent as text.
        return number if math.isfinite(number) else str(number)
    if kind == "array_value":
        return [_any_value(item, where) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None


def rejection_message(errors: Sequence[RecordError], shown: int = 5) -> str:
    """The partial-success errorMessage: the first few rejected records and why."""
    parts = [f"record {e.record}: {e.error}" for e in errors[:shown]]
    if len(errors) > shown:
        parts.append(f"and {len(errors) - shown} more")
    return "; ".join(parts)


def encode_otlp_response(fmt: str, rejected: int = 0, error_message: str = "") -> bytes:
    """An ExportLogsServiceResponse in the request's format (PROTOBUF or JSON).

    The spec leaves partial_success unset when everything was accepted and nothing is to be
    said; otherwise it carries rejectedLogRecords (int64: a string in JSON) and errorMessage.
    """
    response = ExportLogsServiceResponse()
    if rejected or error_message:
        response.partial_success.rejected_log_records = rejected
        response.partial_success.error_message = error_message
    if fmt == PROTOBUF:
        encoded: bytes = response.SerializeToString()
        return encoded
    if fmt != JSON:
        raise ValueError(f"unknown OTLP format {fmt!r}")
    return json.dumps(
        json_format.MessageToDict(response, use_integers_for_enums=True),
        separators=(",", ":"),
    ).encode()
