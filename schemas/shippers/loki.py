"""Loki push (`/loki/api/v1/push`): JSON or snappy-compressed `logproto.PushRequest`, each
entry decoded into a web-event line dict from its line, stream labels and metadata."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import cramjam
from google.protobuf.message import DecodeError

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
from schemas.shippers.labels import LabelSyntaxError, parse_labels
from schemas.shippers.loki_push import PushRequest

PROTOBUF = "protobuf"
JSON = "json"
# Loki itself treats every type but JSON as snappy protobuf; here an unknown type is refused.
_MEDIA_TYPES = {"application/x-protobuf": PROTOBUF, "application/json": JSON}
DEFAULT_EVENT = "log"
SITE_LABELS = ("site", "service_name", "job")
COMPANY_LABEL = "company"
EVENT_LABEL = "event"
# A label or metadata of the client's address: the event's `ip` (truncated before storage),
# never an attribute, even when the line gives its own `ip`.
IP_LABELS = ("client_ip",)
LINE_ATTRIBUTE = "line"
_NANOS = re.compile(r"^-?[0-9]{1,19}$")

Labels = dict[str, str]


def loki_format(content_type: str | None) -> str:
    """PROTOBUF or JSON for a Content-Type; UnsupportedMediaType for anything else."""
    return media_type(content_type, _MEDIA_TYPES, "Loki push")


def decode_loki_push(
    body: bytes, content_type: str | None, limits: Limits | None = None
) -> DecodedBatch:
    """Every entry of every stream as a web-event line dict or a per-entry error.

    A protobuf body is snappy-decompressed here (the block format Promtail sends), refused
    before inflating when it would exceed `limits.max_body_bytes`; a JSON body arrives
    decompressed (gzip is the endpoint's). Entries are numbered 1.. across streams.
    """
    limits = limits or Limits()
    fmt = loki_format(content_type)
    if len(body) > limits.max_body_bytes:
        raise RequestTooLarge(f"the request exceeds {limits.max_body_bytes} bytes")
    if fmt == PROTOBUF:
        return _decode_protobuf(body, limits)
    return _decode_json(body, limits)


def _unsnappy(body: bytes, limit: int) -> bytes:
    try:
        size = cramjam.snappy.decompress_raw_len(body)
    except cramjam.DecompressionError as exc:
        raise MalformedRequest("the body is not snappy-compressed protobuf") from exc
    if size > limit:
        raise RequestTooLarge(f"the request exceeds {limit} bytes once decompressed")
    # The block header's length bounds the output: a stream that would write more fails.
    out = bytearray(size)
    try:
        written = cramjam.snappy.decompress_raw_into(body, out)
    except cramjam.DecompressionError as exc:
        raise MalformedRequest("the body is not valid snappy-compressed data") from exc
    return bytes(out[:written])


def _decode_protobuf(body: bytes, limits: Limits) -> DecodedBatch:
    request = PushRequest()
    try:
        request.ParseFromString(_unsnappy(body, limits.max_body_bytes))
    except DecodeError as exc:
        raise MalformedRequest("the body is not a protobuf Loki PushRequest") from exc
    _check_entry_count(sum(len(stream.entries) for stream in request.streams), limits)
    batch = DecodedBatch()
    number = 0
    for stream in request.streams:
        try:
            labels: Labels | str = _stream_labels(parse_labels(stream.labels))
        except (LabelSyntaxError, RecordRejected) as exc:
            labels = f"stream labels: {exc}"
        for entry in stream.entries:
            number += 1
            try:
                if isinstance(labels, str):
                    raise RecordRejected(labels)
                stamp = entry.timestamp
                if not 0 <= stamp.nanos < 1_000_000_000:
                    raise RecordRejected("the entry timestamp has nanos out of range")
                metadata = {pair.name: pair.value for pair in entry.structuredMetadata}
                nanos = stamp.seconds * 1_000_000_000 + stamp.nanos
                line = _map_entry(labels, nanos, entry.line, metadata, limits)
                batch.lines.append(MappedLine(number, line))
            except RecordRejected as exc:
                batch.errors.append(RecordError(number, str(exc)))
    return batch


def _decode_json(body: bytes, limits: Limits) -> DecodedBatch:
    try:
        document = json.loads(body)
    except RecursionError as exc:
        raise MalformedRequest("the body is nested too deeply") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedRequest("the body is not valid JSON") from exc
    if not isinstance(document, dict) or not isinstance(document.get("streams"), list):
        raise MalformedRequest('the body must be a JSON object {"streams": [...]}')
    streams = document["streams"]
    for i, stream in enumerate(streams):
        if not isinstance(stream, dict) or not isinstance(stream.get("values"), list):
            raise MalformedRequest(f'streams[{i}] must be an object with a "values" array')
    _check_entry_count(sum(len(stream["values"]) for stream in streams), limits)
    batch = DecodedBatch()
    number = 0
    for stream in streams:
        try:
            labels: Labels | str = _stream_labels(_json_labels(stream.get("stream")))
        except RecordRejected as exc:
            labels = f"stream labels: {exc}"
        for value in stream["values"]:
            number += 1
            try:
                if isinstance(labels, str):
                    raise RecordRejected(labels)
                nanos, text, metadata = _json_entry(value)
                batch.lines.append(MappedLine(number, _map_entry(labels, nanos, text, metadata,
                                                                 limits)))
            except RecordRejected as exc:
                batch.errors.append(RecordError(number, str(exc)))
    return batch


def _json_labels(stream: Any) -> Labels:
    if stream is None:
        return {}
    if not isinstance(stream, dict) or not all(isinstance(v, str) for v in stream.values()):
        raise RecordRejected('"stream" must be an object of string label values')
    return stream


def _json_entry(value: Any) -> tuple[int, str, Labels]:
    """["<unix ns>", "<line>"] or ["<unix ns>", "<line>", {structured metadata}]."""
    if not isinstance(value, list) or len(value) not in (2, 3):
        raise RecordRejected('an entry must be ["<unix nanoseconds>", "<line>", {metadata}?]')
    stamp, text = value[0], value[1]
    if not isinstance(stamp, str) or not _NANOS.match(stamp):
        raise RecordRejected("the entry timestamp must be a string of Unix nanoseconds")
    if not isinstance(text, str):
        raise RecordRejected("the entry line must be a string")
    metadata = value[2] if len(value) == 3 else {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise RecordRejected("structured metadata must be an object of string values")
    return int(stamp), text, metadata


def _stream_labels(labels: Labels) -> Labels:
    for name, value in labels.items():
        text_without_nul(name, "a label name")
        text_without_nul(value, f"label {name!r}")
    return labels


def _check_entry_count(total: int, limits: Limits) -> None:
    if total > limits.max_records:
        raise RequestTooLarge(
            f"the request holds {total} entries; at most {limits.max_records} are taken"
        )


def _entry_time(nanos: int) -> datetime:
    if nanos == 0:
        raise RecordRejected("the entry has no timestamp")
    try:
        return time_from_unix_nanos(nanos)
    except OverflowError as exc:
        raise RecordRejected("the entry timestamp is out of range") from exc


def _map_entry(
    labels: Labels, nanos: int, text: str, metadata: Labels, limits: Limits
) -> dict[str, Any]:
    """An entry as a web-event line: a JSON-object line is a web-event line whose missing
    fields the entry and its labels fill; any other line is kept in attributes.line."""
    ts = _entry_time(nanos)
    try:
        too_long = len(text) > limits.max_line_bytes or len(text.encode()) > limits.max_line_bytes
    except UnicodeEncodeError:
        # A JSON push may escape half a surrogate pair (\ud800); no UTF-8 text holds it.
        raise RecordRejected("the line contains a lone surrogate (\\ud800-\\udfff), which"
                             " is not Unicode text") from None
    if too_long:
        raise RecordRejected(f"the line exceeds {limits.max_line_bytes} bytes")
    text_without_nul(text, "the line")
    for name, value in metadata.items():
        text_without_nul(name, "a structured metadata name")
        text_without_nul(value, f"structured metadata {name!r}")
    line = _json_line(text)
    if line is None:
        line = {"attributes": {LINE_ATTRIBUTE: text}}
    own_attributes = line.get("attributes")
    if own_attributes is None:
        own_attributes = {}
    elif not isinstance(own_attributes, dict):
        raise RecordRejected("attributes in the line must be a JSON object")
    used: set[str] = set()
    if line.get("ts") is None:
        line["ts"] = ts
    if not line.get("site"):
        for name in SITE_LABELS:
            if labels.get(name):
                line["site"] = labels[name]
                used.add(name)
                break
    if line.get("company") is None and COMPANY_LABEL in labels:
        line["company"] = labels[COMPANY_LABEL]
        used.add(COMPANY_LABEL)
    if not line.get("event"):
        if labels.get(EVENT_LABEL):
            line["event"] = labels[EVENT_LABEL]
            used.add(EVENT_LABEL)
        else:
            line["event"] = DEFAULT_EVENT
    if line.get("ip") is None:
        for name in IP_LABELS:
            address = metadata.get(name) or labels.get(name)
            if address:
                line["ip"] = address
                break
    used.update(IP_LABELS)
    attributes = {name: value for name, value in labels.items() if name not in used}
    attributes.update((name, value) for name, value in metadata.items() if name not in IP_LABELS)
    attributes.update(own_attributes)
    line["attributes"] = attributes
    return line


def _json_line(text: str) -> dict[str, Any] | None:
    if not text.lstrip().startswith("{"):
        return None
    try:
        parsed = json.loads(text)
    except (RecursionError, ValueError):
        return None
    if not isinstance(parsed, dict):
        return None
    if "\\u0000" in text:
        # json.loads turned the escape into a NUL, which PostgreSQL cannot store.
        raise RecordRejected("the line contains a NUL character (\\u0000)")
    return parsed
