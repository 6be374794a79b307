"""POST /api/v1/otlp/v1/logs: the OpenTelemetry SDK's own exporters ship web-site events."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from opentelemetry.exporter.otlp.common.http import Compression as JsonCompression
from opentelemetry.exporter.otlp.json.http._log_exporter import (
    OTLPLogExporter as JsonLogExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.resources import Resource

from service.settings import Settings
from tests.helpers import Api, bearer

A = "kemin-energia"
B = "tornion-energia"
SITE = "www.kemin-energia.fi"
PATH = "/api/v1/otlp/v1/logs"
START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


class Recording(LogRecordExporter):
    """The exporter as the SDK drives it, keeping each export's result."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.results: list[LogRecordExportResult] = []

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        result: LogRecordExportResult = self.inner.export(batch)
        self.results.append(result)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def attributes_of(i: int, tag: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "url.path": f"/sahko/{i}", "url.query": f"sivu={i}",
        "session.id": f"{tag}-{i}",
        "client.address": f"192.0.2.{i % 250}" if i % 2 else f"2001:db8:77:{i:x}::5",
        "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
        "http.request.header.referer": ["https://haku.example/"],
        "ab.variant": "B",
    }
    if i % 3 == 0:
        attributes["enduser.id"] = f"{100000 + i}"
    return attributes


def ship(exporter: Any, count: int, tag: str, service_name: str = SITE) -> Recording:
    """What a site's backend does: emit records through the SDK's logger and exporter."""
    recording = Recording(exporter)
    provider = LoggerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_log_record_processor(BatchLogRecordProcessor(
        recording, max_export_batch_size=500, max_queue_size=count * 2,
        schedule_delay_millis=60_000))
    logger = provider.get_logger("kemin-energia.web")
    for i in range(count):
        ts = START + timedelta(seconds=i)
        logger.emit(timestamp=int(ts.timestamp()) * 1_000_000_000,
                    observed_timestamp=time.time_ns(),
                    event_name="page_view" if i % 2 == 0 else None,
                    body=f"view {i}", attributes=attributes_of(i, tag))
    provider.force_flush()
    provider.shutdown()
    return recording


async def registered(api: Api) -> str:
    """A group-wide shipper token, with the site registered to company A."""
    admin = await api.token("admin", all_companies=True, name="site-admin")
    response = await api.client.put("/api/v1/sites", json=[{"site": SITE, "company": A}],
                                    headers=bearer(admin))
    assert response.status == 200
    return await api.token("ingest", [A, B], name="otel-collector")


def url(api: Api) -> str:
    return f"http://127.0.0.1:{api.client.server.port}{PATH}"


async def test_sdk_exporters_ship_1000_records_in_protobuf_and_json_all_stored_and_mapped(
    api: Api, db: asyncpg.Connection
) -> None:
    token = await registered(api)
    headers = {"Authorization": f"Bearer {token}"}
    protobuf = await asyncio.to_thread(
        ship, OTLPLogExporter(endpoint=url(api), headers=headers,
                              compression=Compression.Gzip), 1000, "pb")
    json_ = await asyncio.to_thread(
        ship, JsonLogExporter(endpoint=url(api), headers=headers,
                              compression=JsonCompression.GZIP), 1000, "js")
    assert protobuf.results == json_.results == [LogRecordExportResult.SUCCESS] * 2

    rows = await db.fetch(
        "SELECT e.*, c.code FROM web_events e JOIN companies c ON c.id = e.company_id")
    assert len(rows) == 2000
    by_session = {r["session_id"]: r for r in rows}
    for tag in ("pb", "js"):
        for i in (0, 1, 2, 3, 999):
            row = by_session[f"{tag}-{i}"]
            assert row["code"] == A and row["site"] == SITE
            assert row["ts"] == START + timedelta(seconds=i)
            assert row["event"] == ("page_view" if i % 2 == 0 else "log")
            assert row["url"] == f"/sahko/{i}?sivu={i}"
            assert row["customer_number"] == (f"{100000 + i}" if i % 3 == 0 else None)
            assert row["user_agent"].startswith("Mozilla/5.0")
            assert row["referrer"] == "https://haku.example/"
            expected_ip = "192.0.2.0/24" if i % 2 else "2001:db8:77::/48"
            assert str(row["ip"]) == expected_ip
            attributes = json.loads(row["attributes"])
            assert attributes["ab.variant"] == "B" and attributes["body"] == f"view {i}"
            assert "session.id" not in attributes and "client.address" not in attributes
    assert {str(r["ip"]).split("/")[1] for r in rows} == {"24", "48"}


async def export_request(token: str, api: Api, request: ExportLogsServiceRequest,
                         content_type: str = "application/x-protobuf", **headers: str) -> Any:
    return await api.client.post(PATH, data=request.SerializeToString(), headers={
        **bearer(token), "Content-Type": content_type, **headers})


def request_of(sites_and_ips: list[tuple[str, str]]) -> ExportLogsServiceRequest:
    """One resource per site, one record per (site, client.address) pair."""
    request = ExportLogsServiceRequest()
    nanos = int(START.timestamp()) * 1_000_000_000
    for site, ip in sites_and_ips:
        resource_logs = request.resource_logs.add()
        name = resource_logs.resource.attributes.add(key="service.name")
        name.value.string_value = site
        record = resource_logs.scope_logs.add().log_records.add(time_unix_nano=nanos)
        address = record.attributes.add(key="client.address")
        address.value.string_value = ip
    return request


async def test_a_bad_record_fails_alone_with_the_partial_success_answer(
    api: Api, db: asyncpg.Connection
) -> None:
    token = await registered(api)
    request = request_of([(SITE, "192.0.2.1"), (SITE, "not-an-address"),
                          ("www.unknown.example", "192.0.2.3"), (SITE, "192.0.2.4")])
    response = await export_request(token, api, request)
    assert response.status == 200
    assert response.content_type == "application/x-protobuf"
    answer = ExportLogsServiceResponse.FromString(await response.read())
    assert answer.partial_success.rejected_log_records == 2
    message = answer.partial_success.error_message
    assert "record 2: ip" in message and "record 3: unknown site 'www.unknown.example'" in message
    assert await db.fetchval("SELECT count(*) FROM web_events") == 2

    as_json = json.dumps({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": SITE}}]},
        "scopeLogs": [{"logRecords": [
            {"timeUnixNano": str(int(START.timestamp()) * 10**9), "body": {"stringValue": "ok"}},
            {"body": {"stringValue": "no time"}}]}]}]}).encode()
    response = await api.client.post(PATH, data=gzip.compress(as_json), headers={
        **bearer(token), "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert response.status == 200 and response.content_type == "application/json"
    answer_json = await response.json()
    assert answer_json["partialSuccess"]["rejectedLogRecords"] == "1"
    assert "record 2" in answer_json["partialSuccess"]["errorMessage"]
    assert await db.fetchval("SELECT count(*) FROM web_events") == 3


async def test_all_accepted_answers_an_empty_response(api: Api) -> None:
    token = await registered(api)
    response = await export_request(token, api, request_of([(SITE, "192.0.2.1")]))
    assert response.status == 200
    assert ExportLogsServiceResponse.FromString(await response.read()) == \
        ExportLogsServiceResponse()


async def test_unknown_site_malformed_wrong_type_and_bomb_are_4xx_and_store_nothing(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    token = await registered(api)
    unknown = await export_request(token, api, request_of([("www.unknown.example", "192.0.2.1")]))
    assert unknown.status == 422
    problem = await unknown.json(content_type="application/problem+json")
    assert "unknown site 'www.unknown.example'" in problem["detail"]
    assert problem["errors"][0]["loc"] == ["body", "record", 1]

    malformed = await api.client.post(PATH, data=b"\x0a\xff\xff\xff\xff\x0f garbage",
                                      headers={**bearer(token),
                                               "Content-Type": "application/x-protobuf"})
    assert malformed.status == 400
    assert "protobuf" in (await malformed.json(content_type=None))["detail"]

    wrong_type = await api.client.post(PATH, data=b"hello", headers={
        **bearer(token), "Content-Type": "text/plain"})
    assert wrong_type.status == 415
    assert "text/plain" in (await wrong_type.json(content_type=None))["detail"]

    valid = request_of([(SITE, "192.0.2.1")]).SerializeToString()
    bomb = gzip.compress(valid + b"\x00" * (settings.max_batch_bytes + 1024), 9)
    assert len(bomb) < settings.max_batch_bytes // 100
    too_large = await api.client.post(PATH, data=bomb, headers={
        **bearer(token), "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
    assert too_large.status == 413

    bad_json = await api.client.post(PATH, data=b'{"resourceLogs": 7}', headers={
        **bearer(token), "Content-Type": "application/json"})
    assert bad_json.status == 400

    for response in (unknown, malformed, wrong_type, too_large, bad_json):
        assert response.content_type == "application/problem+json"
    assert await db.fetchval("SELECT count(*) FROM web_events") == 0


async def test_full_batch_slots_answer_429_with_retry_after(
    api: Api, db: asyncpg.Connection, monkeypatch: Any
) -> None:
    import service.customers.event_ingest

    token = await registered(api)
    monkeypatch.setattr(service.customers.event_ingest, "batch_slots", lambda app: 0)
    response = await export_request(token, api, request_of([(SITE, "192.0.2.1")]))
    assert response.status == 429
    assert response.headers["Retry-After"] == "1"
    assert response.content_type == "application/problem+json"
    assert await db.fetchval("SELECT count(*) FROM web_events") == 0


async def test_a_repeated_idempotency_key_stores_once_and_replays_the_answer(
    api: Api, db: asyncpg.Connection
) -> None:
    token = await registered(api)
    request = request_of([(SITE, "192.0.2.1"), (SITE, "bad-ip")])
    first = await export_request(token, api, request, **{"Idempotency-Key": "otlp-1"})
    again = await export_request(token, api, request, **{"Idempotency-Key": "otlp-1"})
    assert await first.read() == await again.read()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert await db.fetchval("SELECT count(*) FROM web_events") == 1
    audit = [json.loads(r["detail"]) for r in await db.fetch(
        "SELECT detail FROM audit_events WHERE action = 'web_event.ingest' ORDER BY seq")]
    assert audit == [{"accepted": 1, "rejected": 1, "replayed": False, "via": "otlp-logs"},
                     {"accepted": 1, "rejected": 1, "replayed": True, "via": "otlp-logs"}]


async def test_identity_codes_in_bodies_are_masked_and_ip_attributes_become_the_ip(
    api: Api, db: asyncpg.Connection
) -> None:
    token = await registered(api)
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    name = resource_logs.resource.attributes.add(key="service.name")
    name.value.string_value = SITE
    scope = resource_logs.scope_logs.add()
    nanos = int(START.timestamp()) * 1_000_000_000
    addresses = [{"http.client_ip": "192.0.2.11"}, {"net.sock.peer.addr": "192.0.2.12"},
                 {"net.peer.ip": "2001:db8:13:14::15"},
                 {"client.address": "192.0.2.16", "net.peer.ip": "198.51.100.17"}]
    for i, attributes in enumerate(addresses):
        record = scope.log_records.add(time_unix_nano=nanos)
        record.body.string_value = f"tunnistautui 131052-308T ({i})"
        for key, value in [("session.id", f"ip-{i}"), *attributes.items()]:
            record.attributes.add(key=key).value.string_value = value
    response = await export_request(token, api, request)
    assert response.status == 200
    assert ExportLogsServiceResponse.FromString(await response.read()) == \
        ExportLogsServiceResponse()
    rows = {r["session_id"]: r for r in await db.fetch("SELECT * FROM web_events")}
    assert [str(rows[f"ip-{i}"]["ip"]) for i in range(4)] == [
        "192.0.2.0/24", "192.0.2.0/24", "2001:db8:13::/48", "192.0.2.0/24"]
    for i in range(4):
        assert json.loads(rows[f"ip-{i}"]["attributes"]) == {
            "body": f"tunnistautui [henkilötunnus] ({i})"}
    everything = str([dict(r) for r in rows.values()])
    for secret in ("131052", "192.0.2.1", "2001:db8:13:14::15", "198.51.100.17"):
        assert secret not in everything


async def test_rejection_messages_do_not_echo_an_identity_code_sent_as_a_name(
    api: Api, db: asyncpg.Connection
) -> None:
    token = await registered(api)
    request = request_of([(SITE, "192.0.2.1"), (SITE, "192.0.2.2")])
    record = request.resource_logs[1].scope_logs[0].log_records[0]
    record.attributes.add(key="131052-308T").value.string_value = "nul \x00 inside"
    response = await export_request(token, api, request, **{"Idempotency-Key": "named"})
    answer = ExportLogsServiceResponse.FromString(await response.read())
    assert answer.partial_success.rejected_log_records == 1
    message = answer.partial_success.error_message
    assert message.startswith("record 2: attribute '[henkilötunnus]'") and "NUL" in message
    saved = await db.fetchval("SELECT response::text FROM idempotency_keys")
    assert "NUL" in saved and "131052" not in saved
    assert await db.fetchval("SELECT count(*) FROM web_events") == 1
