"""POST /api/v1/loki/api/v1/push: a Loki client library (JSON) and Loki's own protobuf
messages, compiled here with protoc and snappy-compressed as Promtail sends them."""

from __future__ import annotations

import asyncio
import gzip
import importlib.resources
import importlib.util
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import cramjam
import logging_loki
import pytest
from grpc_tools import protoc

from service.settings import Settings
from tests.helpers import Api, bearer

A = "kemin-energia"
B = "tornion-energia"
SITE = "www.kemin-energia.fi"
B_SITE = "www.tornion-energia.fi"
PATH = "/api/v1/loki/api/v1/push"
PROTO = Path(__file__).with_name("loki_push.proto")
START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


@pytest.fixture(scope="session")
def logproto(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """Loki's push.proto compiled by protoc into Python message classes."""
    out = tmp_path_factory.mktemp("logproto")
    includes = importlib.resources.files("grpc_tools") / "_proto"
    status = protoc.main(["protoc", f"-I{PROTO.parent}", f"-I{includes}",
                          f"--python_out={out}", str(PROTO)])
    assert status == 0, "protoc failed on loki_push.proto"
    spec = importlib.util.spec_from_file_location("loki_push_pb2", out / "loki_push_pb2.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def registered(api: Api) -> str:
    admin = await api.token("admin", all_companies=True, name="site-admin")
    response = await api.client.put("/api/v1/sites", json=[{"site": SITE, "company": A}],
                                    headers=bearer(admin))
    assert response.status == 200
    return await api.token("ingest", [A, B], name="promtail")


def promtail_body(logproto: ModuleType, count: int, site: str = SITE) -> bytes:
    """A PushRequest of two streams, snappy block-compressed as Promtail sends it."""
    request = logproto.PushRequest()
    streams = [request.streams.add(labels=f'{{site="{site}", event="page_view", job="web"}}'),
               request.streams.add(labels=f'{{site="{site}", event="click", job="web"}}')]
    for i in range(count):
        entry = streams[i % 2].entries.add()
        entry.timestamp.FromDatetime(START + timedelta(seconds=i))
        entry.line = json.dumps({"url": f"https://{site}/sahko/{i}", "session_id": f"pt-{i}",
                                 "ip": f"198.51.100.{i % 250}",
                                 "customer_number": f"{200000 + i}" if i % 4 == 0 else None,
                                 "user_agent": "Mozilla/5.0", "attributes": {"n": i}})
        entry.structuredMetadata.add(name="trace_id", value=f"{i:032x}")
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


async def push(api: Api, token: str, body: bytes, content_type: str, **headers: str) -> Any:
    return await api.client.post(PATH, data=body, headers={
        **bearer(token), "Content-Type": content_type, **headers})


async def test_snappy_protobuf_push_of_1000_entries_is_stored_with_labels_mapped(
    api: Api, db: asyncpg.Connection, logproto: ModuleType
) -> None:
    token = await registered(api)
    response = await push(api, token, promtail_body(logproto, 1000), "application/x-protobuf")
    assert response.status == 204, await response.text()
    rows = {r["session_id"]: r for r in await db.fetch(
        "SELECT e.*, c.code FROM web_events e JOIN companies c ON c.id = e.company_id")}
    assert len(rows) == 1000
    for i in (0, 1, 4, 999):
        row = rows[f"pt-{i}"]
        assert row["code"] == A and row["site"] == SITE
        assert row["event"] == ("page_view" if i % 2 == 0 else "click")
        assert row["ts"] == START + timedelta(seconds=i)
        assert row["url"] == f"https://{SITE}/sahko/{i}"
        assert str(row["ip"]) == "198.51.100.0/24"
        assert row["customer_number"] == (f"{200000 + i}" if i % 4 == 0 else None)
        assert json.loads(row["attributes"]) == {"job": "web", "trace_id": f"{i:032x}", "n": i}


def ship_with_logging_loki(url: str, token: str, count: int) -> None:
    """A site's Python backend logging through python-logging-loki's handler."""
    handler = logging_loki.LokiHandler(url=url, tags={"site": SITE, "job": "web"}, version="1")
    handler.emitter.session.headers["Authorization"] = f"Bearer {token}"
    logger = logging.getLogger("kemin-energia.web.loki-test")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        for i in range(count):
            # A company label must agree with the site registry: B's site is unregistered.
            tags = {"company": A} if i % 2 else {"company": B, "site": B_SITE}
            logger.info(json.dumps({"event": "login", "session_id": f"lk-{i}",
                                    "ip": "2001:db8:5:6::7"}),
                        extra={"tags": tags})
    finally:
        logger.removeHandler(handler)
        handler.close()


async def test_python_logging_loki_json_pushes_are_stored(
    api: Api, db: asyncpg.Connection
) -> None:
    token = await registered(api)
    url = f"http://127.0.0.1:{api.client.server.port}{PATH}"
    await asyncio.to_thread(ship_with_logging_loki, url, token, 20)
    rows = await db.fetch(
        "SELECT e.*, c.code FROM web_events e JOIN companies c ON c.id = e.company_id"
        " ORDER BY e.session_id")
    assert len(rows) == 20
    assert {(r["code"], r["site"]) for r in rows} == {(A, SITE), (B, B_SITE)}
    assert all(r["event"] == "login" for r in rows)
    assert {str(r["ip"]) for r in rows} == {"2001:db8:5::/48"}
    attributes = json.loads(rows[0]["attributes"])
    assert attributes["job"] == "web" and attributes["severity"] == "info"


async def test_gzip_json_push_with_a_bad_entry_stores_the_rest(
    api: Api, db: asyncpg.Connection
) -> None:
    token = await registered(api)
    ns = str(int(START.timestamp()) * 10**9)
    document = {"streams": [
        {"stream": {"site": SITE, "event": "page_view"},
         "values": [[ns, "GET /sahko 200"], ["not-a-time", "x"], [ns, '{"session_id": "j"}']]},
        {"stream": {"job": "web"}, "values": [[ns, "no site label"]]},
    ]}
    response = await push(api, token, gzip.compress(json.dumps(document).encode()),
                          "application/json", **{"Content-Encoding": "gzip"})
    assert response.status == 200
    report = await response.json()
    assert report["accepted"] == 2
    assert [r["line"] for r in report["rejected"]] == [2, 4]
    assert "timestamp" in report["rejected"][0]["error"]
    # The job label names the last stream's site, which the registry does not know.
    assert "unknown site 'web'" in report["rejected"][1]["error"]
    stored = {r["session_id"]: json.loads(r["attributes"]) for r in await db.fetch(
        "SELECT session_id, attributes FROM web_events")}
    assert stored == {None: {"line": "GET /sahko 200"}, "j": {}}


async def test_malformed_wrong_type_bomb_and_unknown_site_are_4xx_and_store_nothing(
    api: Api, db: asyncpg.Connection, settings: Settings, logproto: ModuleType
) -> None:
    token = await registered(api)
    unknown = await push(api, token, promtail_body(logproto, 3, site="www.unknown.example"),
                         "application/x-protobuf")
    assert unknown.status == 422
    problem = await unknown.json(content_type=None)
    assert "unknown site 'www.unknown.example'" in problem["detail"]
    assert [e["loc"] for e in problem["errors"]] == [["body", "entry", n] for n in (1, 2, 3)]

    not_snappy = await push(api, token, b"\xff\xff\xff\xff\xff\xff not snappy",
                            "application/x-protobuf")
    assert not_snappy.status == 400
    not_protobuf = await push(api, token, bytes(cramjam.snappy.compress_raw(b"\x0a\xff\xff\xff")),
                              "application/x-protobuf")
    assert not_protobuf.status == 400
    wrong_type = await push(api, token, b"{}", "text/plain")
    assert wrong_type.status == 415
    bomb = bytes(cramjam.snappy.compress_raw(b"\0" * (settings.max_batch_bytes + 1024)))
    assert len(bomb) < settings.max_batch_bytes // 10
    too_large = await push(api, token, bomb, "application/x-protobuf")
    assert too_large.status == 413
    gzip_bomb = gzip.compress(b" " * (settings.max_batch_bytes + 1024), 9)
    too_large_json = await push(api, token, gzip_bomb, "application/json",
                                **{"Content-Encoding": "gzip"})
    assert too_large_json.status == 413
    for response in (unknown, not_snappy, not_protobuf, wrong_type, too_large, too_large_json):
        assert response.content_type == "application/problem+json"
    assert await db.fetchval("SELECT count(*) FROM web_events") == 0


def json_push(*values: list[Any], stream: dict[str, str] | None = None) -> bytes:
    """A JSON push of one stream; json.dumps writes a lone surrogate as its \\u escape."""
    return json.dumps({"streams": [{"stream": stream or {"site": SITE},
                                    "values": list(values)}]}).encode()


async def test_lone_surrogates_fail_only_their_entry(
    api: Api, db: asyncpg.Connection
) -> None:
    token = await registered(api)
    ns = str(int(START.timestamp()) * 10**9)
    body = json_push(
        [ns, '{"session_id": "ok-1"}'],
        [ns, "hello \ud800"],
        [ns, '{"session_id": "s", "attributes": {"form": ["\\udc00"]}}'],
        [ns, '{"session_id": "s", "url": "https://x.fi/\\ud83d"}'],
        [ns, '{"session_id": "s"}', {"trace_id": "\udfff"}],
        [ns, '{"session_id": "ok-2", "attributes": {"emoji": "\\ud83d\\ude00"}}'],
    )
    response = await push(api, token, body, "application/json")
    assert response.status == 200, await response.text()
    report = await response.json()
    assert report["accepted"] == 2
    errors = {r["line"]: r["error"] for r in report["rejected"]}
    assert list(errors) == [2, 3, 4, 5]
    assert "the line contains a lone surrogate" in errors[2]
    assert "attributes['form'][0] contains a lone surrogate" in errors[3]
    assert errors[4].startswith("url: ")  # pydantic's own str check refuses it
    assert "attributes['trace_id'] contains a lone surrogate" in errors[5]
    stored = {r["session_id"]: json.loads(r["attributes"]) for r in await db.fetch(
        "SELECT session_id, attributes FROM web_events")}
    assert stored == {"ok-1": {}, "ok-2": {"emoji": "\U0001f600"}}


async def test_nan_or_infinite_in_a_json_line_fails_only_its_entry(
    api: Api, db: asyncpg.Connection
) -> None:
    token = await registered(api)
    ns = str(int(START.timestamp()) * 10**9)
    body = json_push(
        [ns, '{"session_id": "ok-1", "attributes": {"score": 1.5}}'],
        [ns, '{"session_id": "nan", "attributes": {"score": NaN}}'],
        [ns, '{"session_id": "inf", "attributes": {"score": [Infinity]}}'],
        [ns, '{"session_id": "big", "attributes": {"score": 1e400}}'],
    )
    response = await push(api, token, body, "application/json")
    assert response.status == 200, await response.text()
    report = await response.json()
    assert report["accepted"] == 1
    assert [r["line"] for r in report["rejected"]] == [2, 3, 4]
    assert all("attributes['score']" in r["error"] for r in report["rejected"])
    stored = {r["session_id"]: json.loads(r["attributes"]) for r in await db.fetch(
        "SELECT session_id, attributes FROM web_events")}
    assert stored == {"ok-1": {"score": 1.5}}


async def test_raw_lines_are_masked_and_client_ip_labels_become_the_truncated_ip(
    api: Api, db: asyncpg.Connection
) -> None:
    token = await registered(api)
    ns = str(int(START.timestamp()) * 10**9)
    body = json.dumps({"streams": [
        {"stream": {"site": SITE, "client_ip": "192.0.2.77"},
         "values": [[ns, "GET /asiakas?hetu=131052-308T 200"],
                    [ns, '{"session_id": "own-ip", "ip": "198.51.100.9"}']]},
        {"stream": {"site": SITE},
         "values": [[ns, '{"session_id": "meta", "attributes": {"note": "131052-308T"}}',
                     {"client_ip": "2001:db8:5:6::7", "hetu": "131052-308T"}]]},
    ]}).encode()
    response = await push(api, token, body, "application/json")
    assert response.status == 204, await response.text()
    rows = {r["session_id"]: r for r in await db.fetch("SELECT * FROM web_events")}
    assert json.loads(rows[None]["attributes"]) == {
        "line": "GET /asiakas?hetu=[henkilötunnus] 200"}
    assert str(rows[None]["ip"]) == "192.0.2.0/24"
    assert str(rows["own-ip"]["ip"]) == "198.51.100.0/24"
    assert json.loads(rows["own-ip"]["attributes"]) == {}
    assert str(rows["meta"]["ip"]) == "2001:db8:5::/48"
    assert json.loads(rows["meta"]["attributes"]) == {
        "hetu": "[henkilötunnus]", "note": "[henkilötunnus]"}
    everything = str([dict(r) for r in rows.values()])
    for secret in ("131052", "192.0.2.77", "198.51.100.9", "2001:db8:5:6::7"):
        assert secret not in everything
