"""OTLP/HTTP logs as the OpenTelemetry Python SDK ships them, decoded into web-event lines."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from schemas.shippers import (
    RESPONSE_CONTENT_TYPES,
    Limits,
    MalformedRequest,
    RequestTooLarge,
    ShipperRequestError,
    UnsupportedMediaType,
    decode_otlp_logs,
    encode_otlp_response,
    otlp_format,
    rejection_message,
)
from tests.schemas.shipper_lines import validated

SITE = "www.example.fi"
START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


@dataclass
class Collector:
    """A tiny OTLP/HTTP receiver: keeps each request's Content-Type and decoded body."""

    url: str = ""
    requests: list[tuple[str, bytes]] = field(default_factory=list)


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    received = Collector()

    async def logs(request: web.Request) -> web.Response:
        # aiohttp undoes Content-Encoding: gzip, as the endpoint's reader will.
        received.requests.append((request.headers["Content-Type"], await request.read()))
        fmt = otlp_format(request.headers["Content-Type"])
        return web.Response(body=encode_otlp_response(fmt),
                            content_type=RESPONSE_CONTENT_TYPES[fmt])

    app = web.Application()
    app.router.add_post("/v1/logs", logs)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    received.url = f"http://127.0.0.1:{port}/v1/logs"
    yield received
    await runner.cleanup()


def expected_event(i: int) -> dict[str, Any]:
    return {
        "ts": START + timedelta(seconds=i, microseconds=i),
        "site": SITE,
        "event": "page_view" if i % 2 == 0 else "click",
        "url": f"https://{SITE}/sahko?sivu={i}",
        "session_id": f"s-{i % 50}",
        "customer_number": f"{100000 + i}" if i % 3 == 0 else None,
        "company": "energia" if i % 4 == 0 else None,
        "ip": f"192.0.2.{i % 250}",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
        "referrer": "https://haku.example/" if i % 5 == 0 else None,
    }


def sdk_attributes(i: int) -> dict[str, Any]:
    event = expected_event(i)
    attributes: dict[str, Any] = {
        "url.full": event["url"],
        "session.id": event["session_id"],
        "client.address": event["ip"],
        "user_agent.original": event["user_agent"],
        "ab.variant": "B",
        "http.response.status_code": 200,
    }
    if i % 2:
        attributes["event.name"] = "click"
    if event["customer_number"]:
        attributes["enduser.id"] = event["customer_number"]
    if event["company"]:
        attributes["tallenne.company"] = event["company"]
    if event["referrer"]:
        attributes["http.request.header.referer"] = [event["referrer"]]
    return attributes


def ship_with_sdk(url: str, count: int, compression: Compression) -> None:
    """What a site's backend does: emit records through the SDK and its OTLP exporter."""
    resource = Resource.create({"service.name": SITE, "deployment.environment.name": "test"})
    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(BatchLogRecordProcessor(
        OTLPLogExporter(endpoint=url, compression=compression),
        max_export_batch_size=count, max_queue_size=count * 2, schedule_delay_millis=60_000,
    ))
    logger = provider.get_logger("tallenne.test.site")
    for i in range(count):
        ts = expected_event(i)["ts"]
        nanos = int(ts.timestamp()) * 1_000_000_000 + ts.microsecond * 1000 + 123
        logger.emit(
            timestamp=nanos, observed_timestamp=time.time_ns(),
            event_name="page_view" if i % 2 == 0 else None,
            body=f"view {i}", attributes=sdk_attributes(i),
        )
    provider.force_flush()
    provider.shutdown()


async def shipped(collector: Collector, count: int,
                  compression: Compression = Compression.Gzip) -> tuple[str, bytes]:
    await asyncio.to_thread(ship_with_sdk, collector.url, count, compression)
    assert len(collector.requests) == 1
    return collector.requests[0]


def otlp_json(body: bytes) -> bytes:
    """The OTLP JSON encoding of the SDK's own message: proto3 JSON with hex ids and
    integer enums, as the OTLP specification prescribes."""
    document = json_format.MessageToDict(
        ExportLogsServiceRequest.FromString(body), use_integers_for_enums=True
    )
    for resource_logs in document["resourceLogs"]:
        for scope_logs in resource_logs["scopeLogs"]:
            for record in scope_logs["logRecords"]:
                for key in ("traceId", "spanId"):
                    if key in record:
                        record[key] = base64.b64decode(record[key]).hex()
    return json.dumps(document).encode()


def assert_sdk_records_mapped(batch_lines: dict[int, Any], count: int) -> None:
    assert sorted(batch_lines) == list(range(1, count + 1))
    for number, line in batch_lines.items():
        i = number - 1
        assert line.model_dump(exclude={"attributes"}) == expected_event(i)
        assert line.attributes == {
            "ab.variant": "B",
            "http.response.status_code": 200,
            "body": f"view {i}",
            "resource": {"deployment.environment.name": "test"},
        }


async def test_sdk_protobuf_export_of_1000_records_maps_every_field(
    collector: Collector,
) -> None:
    content_type, body = await shipped(collector, 1000)

    batch = decode_otlp_logs(body, content_type)

    assert batch.errors == []
    lines, failures = validated(batch)
    assert failures == {}
    assert_sdk_records_mapped(lines, 1000)


async def test_otlp_json_of_the_sdk_message_maps_like_protobuf(collector: Collector) -> None:
    _, body = await shipped(collector, 1000, Compression.NoCompression)

    batch = decode_otlp_logs(otlp_json(body), "application/json; charset=utf-8")

    lines, failures = validated(batch)
    assert failures == {}
    assert_sdk_records_mapped(lines, 1000)


async def test_a_record_without_timestamp_fails_alone_in_protobuf(
    collector: Collector,
) -> None:
    content_type, body = await shipped(collector, 20)
    request = ExportLogsServiceRequest.FromString(body)
    records = request.resource_logs[0].scope_logs[0].log_records
    records[4].time_unix_nano = 0
    records[4].observed_time_unix_nano = 0
    records[9].time_unix_nano = int((datetime.now(UTC) + timedelta(days=400)).timestamp() * 1e9)
    # observed time stands in when the event time is missing
    records[11].time_unix_nano = 0

    lines, failures = validated(decode_otlp_logs(request.SerializeToString(), content_type))

    assert set(failures) == {5, 10}
    assert "neither timeUnixNano nor observedTimeUnixNano" in failures[5]
    assert "in the future" in failures[10]
    assert len(lines) == 18
    assert abs(lines[12].ts - datetime.now(UTC)) < timedelta(minutes=5)
    assert lines[13].url == expected_event(12)["url"]


async def test_a_record_with_an_unparsable_json_timestamp_fails_alone(
    collector: Collector,
) -> None:
    _, body = await shipped(collector, 10, Compression.NoCompression)
    document = json.loads(otlp_json(body))
    records = document["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    records[3]["timeUnixNano"] = "eilen 010190-123A"
    records[6]["traceId"] = "not-hex"

    batch = decode_otlp_logs(json.dumps(document).encode(), "application/json")

    assert [e.record for e in batch.errors] == [4, 7]
    assert batch.errors[0].error == "timeUnixNano is not valid OTLP JSON"
    assert "010190" not in rejection_message(batch.errors)
    assert "traceId must be 32 hexadecimal digits" in batch.errors[1].error
    assert [n for n, _ in batch.lines] == [1, 2, 3, 5, 6, 8, 9, 10]


async def test_partial_success_answer_counts_rejected_records_in_both_encodings(
    collector: Collector,
) -> None:
    content_type, body = await shipped(collector, 10)
    request = ExportLogsServiceRequest.FromString(body)
    records = request.resource_logs[0].scope_logs[0].log_records
    for i in (2, 7):
        records[i].time_unix_nano = records[i].observed_time_unix_nano = 0
    batch = decode_otlp_logs(request.SerializeToString(), content_type)
    message = rejection_message(batch.errors)

    answer = ExportLogsServiceResponse.FromString(
        encode_otlp_response("protobuf", len(batch.errors), message)
    )
    answer_json = json.loads(encode_otlp_response("json", len(batch.errors), message))

    assert answer.partial_success.rejected_log_records == 2
    assert answer.partial_success.error_message.startswith("record 3: the log record has")
    assert "record 8:" in answer.partial_success.error_message
    assert answer_json == {"partialSuccess": {"rejectedLogRecords": "2",
                                              "errorMessage": message}}
    assert encode_otlp_response("protobuf") == b""
    assert json.loads(encode_otlp_response("json")) == {}


async def test_truncated_protobuf_is_one_malformed_request(collector: Collector) -> None:
    content_type, body = await shipped(collector, 5)

    with pytest.raises(MalformedRequest, match="not a protobuf OTLP ExportLogsServiceRequest"):
        decode_otlp_logs(body[:-1], content_type)


@pytest.mark.parametrize("body", [b'{"resourceLogs": [', b"[]", b'{"resourceLogs": {}}'])
def test_json_that_is_no_export_request_is_one_malformed_request(body: bytes) -> None:
    with pytest.raises(MalformedRequest):
        decode_otlp_logs(body, "application/json")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-ndjson", None, ""])
def test_a_content_type_otlp_does_not_define_is_unsupported(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType, match="application/json or application/x-protobuf"):
        decode_otlp_logs(b"{}", content_type)


async def test_more_records_than_the_cap_refuse_the_request(collector: Collector) -> None:
    content_type, body = await shipped(collector, 50)

    with pytest.raises(RequestTooLarge, match="holds 50 log records; at most 49"):
        decode_otlp_logs(body, content_type, Limits(max_records=49))
    with pytest.raises(RequestTooLarge):
        decode_otlp_logs(body, content_type, Limits(max_body_bytes=len(body) - 1))


async def test_an_oversized_or_unstorable_record_fails_alone(collector: Collector) -> None:
    content_type, body = await shipped(collector, 6)
    request = ExportLogsServiceRequest.FromString(body)
    records = request.resource_logs[0].scope_logs[0].log_records
    records[1].body.string_value = "x" * 70_000
    records[3].attributes.add(key="note").value.string_value = "a\x00b"

    batch = decode_otlp_logs(request.SerializeToString(), content_type)

    assert dict(batch.errors) == {2: "the log record exceeds 65536 bytes",
                                  4: "attribute 'note' contains a NUL character"}
    assert [n for n, _ in batch.lines] == [1, 3, 5, 6]


async def test_site_falls_back_to_server_address_when_service_name_is_the_sdk_default(
    collector: Collector,
) -> None:
    content_type, body = await shipped(collector, 3)
    request = ExportLogsServiceRequest.FromString(body)
    resource = request.resource_logs[0].resource
    for attribute in resource.attributes:
        if attribute.key == "service.name":
            attribute.value.string_value = "unknown_service:python"
    records = request.resource_logs[0].scope_logs[0].log_records
    records[0].attributes.add(key="server.address").value.string_value = "oma.example.fi"

    batch = decode_otlp_logs(request.SerializeToString(), content_type)

    assert [line["site"] for _, line in batch.lines] == ["oma.example.fi"]
    assert dict(batch.errors) == {
        2: "no site: the resource has no service.name or server.address",
        3: "no site: the resource has no service.name or server.address",
    }



async def test_url_is_built_from_path_and_query_when_url_full_is_absent(
    collector: Collector,
) -> None:
    content_type, body = await shipped(collector, 2)
    request = ExportLogsServiceRequest.FromString(body)
    for record in request.resource_logs[0].scope_logs[0].log_records:
        assert record.attributes[0].key == "url.full"
        del record.attributes[0]
        record.attributes.add(key="url.path").value.string_value = "/kirjaudu"
    records = request.resource_logs[0].scope_logs[0].log_records
    records[0].attributes.add(key="url.query").value.string_value = "paluu=%2Fsahko"

    batch = decode_otlp_logs(request.SerializeToString(), content_type)

    assert [line["url"] for _, line in batch.lines] == ["/kirjaudu?paluu=%2Fsahko", "/kirjaudu"]
    assert all("url.path" not in line["attributes"] for _, line in batch.lines)

_OTLP_KEYS = st.sampled_from([
    "resourceLogs", "resource", "scopeLogs", "logRecords", "attributes", "key", "value",
    "stringValue", "intValue", "kvlistValue", "arrayValue", "values", "timeUnixNano",
    "observedTimeUnixNano", "traceId", "spanId", "body", "eventName",
])
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_OTLP_KEYS, inner, max_size=4),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(_JSON_VALUES)
def test_any_json_body_gives_a_batch_or_one_request_error(document: Any) -> None:
    try:
        batch = decode_otlp_logs(json.dumps(document).encode(), "application/json")
    except ShipperRequestError:
        return
    assert all(isinstance(line, dict) for _, line in batch.lines)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_protobuf_body_gives_a_batch_or_one_request_error(body: bytes) -> None:
    try:
        decode_otlp_logs(body, "application/x-protobuf")
    except ShipperRequestError:
        pass
