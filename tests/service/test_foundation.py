"""The skeleton a user meets first: health, readiness, problems, OpenAPI, identity basics."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate

from service.app import create_app
from service.logs import JsonFormatter, request_id_var
from service.settings import Settings
from storage.migrate import migrate, migration_files
from tests import audiogen
from tests.helpers import Api, bearer, metric
from tests.service.recording_factory import COMPANY, metadata, upload

IDENTITY_CODE = "131052-308T"


async def test_healthz_answers_and_carries_a_request_id(api: Api) -> None:
    response = await api.client.get("/healthz")
    assert response.status == 200
    assert (await response.json()) == {"status": "ok"}
    assert len(response.headers["X-Request-Id"]) >= 16


async def test_given_request_id_is_echoed(api: Api) -> None:
    response = await api.client.get("/healthz", headers={"X-Request-Id": "pbx-call-42"})
    assert response.headers["X-Request-Id"] == "pbx-call-42"


async def test_request_id_shaped_like_an_identity_code_is_replaced(api: Api) -> None:
    """A client's request id goes into every log line, problem document and audit event of
    its request: one that carries an identity code is replaced like any insane one."""
    for given in (IDENTITY_CODE, f"call.{IDENTITY_CODE}", "pbx_131052A308T"):
        response = await api.client.get("/api/v1/no-such-thing", headers={"X-Request-Id": given})
        assert response.status == 404
        assert response.headers["X-Request-Id"] != given
        assert len(response.headers["X-Request-Id"]) >= 16
        assert (await response.json())["request_id"] == response.headers["X-Request-Id"]


async def test_readyz_reports_both_backends_ok(api: Api) -> None:
    response = await api.client.get("/readyz")
    assert response.status == 200
    body = await response.json()
    assert body == {"status": "ready", "postgres": "ok", "s3": "ok",
                    "audit_checkpoint_lock": body["audit_checkpoint_lock"]}
    assert body["audit_checkpoint_lock"] == "enforced" or body["audit_checkpoint_lock"].startswith(
        "not enforced: ")


async def test_unknown_path_is_a_problem_document(api: Api) -> None:
    response = await api.client.get("/api/v1/no-such-thing")
    assert response.status == 404
    assert response.content_type == "application/problem+json"
    body = await response.json()
    assert body["status"] == 404 and body["title"] and body["detail"]


async def test_malformed_json_body_is_a_400_problem(api: Api) -> None:
    response = await api.client.post(
        "/api/v1/session", data=b'{"username": "x", ', headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    assert response.content_type == "application/problem+json"
    assert "not valid JSON" in (await response.json())["detail"]


async def test_invalid_field_names_its_location(api: Api) -> None:
    response = await api.client.post("/api/v1/session", json={"username": "x"})
    assert response.status == 422
    body = await response.json()
    assert ["body", "password"] in [e["loc"] for e in body["errors"]]


async def test_openapi_document_is_valid_and_lists_the_contract(api: Api) -> None:
    response = await api.client.get("/api/v1/openapi.json")
    spec = await response.json()
    validate(spec)
    assert spec["openapi"].startswith("3.1")
    for path in ("/api/v1/me", "/api/v1/session", "/api/v1/tokens", "/api/v1/audit/verify"):
        assert path in spec["paths"]


async def test_openapi_lists_the_answers_and_bodies_a_client_meets(api: Api) -> None:
    """What a client generated from the document must be ready for: a duplicate account or
    company (409), a busy backend (503), an over-large body (413), a rows body sent as a
    bare list, and an encrypted export's octet stream."""
    spec = await (await api.client.get("/api/v1/openapi.json")).json()
    paths = spec["paths"]
    for path in ("/api/v1/users", "/api/v1/companies"):
        assert "409" in paths[path]["post"]["responses"], path
    assert "503" in paths["/api/v1/recordings"]["get"]["responses"]
    assert {"408", "413"} <= set(paths["/api/v1/customers/{company}/{customer_number}"]["put"]
                                 ["responses"])
    for path in ("/api/v1/sites", "/api/v1/retention-policies"):
        body = paths[path]["put"]["requestBody"]["content"]["application/json"]["schema"]
        assert [choice.get("type") for choice in body["oneOf"]] == ["array", None], path
    download = paths["/api/v1/exports/{id}/download"]["get"]["responses"]["200"]["content"]
    assert {"application/zip", "application/octet-stream"} <= set(download)
    validate(spec)
    # And a bare list is what the service takes.
    admin = await api.token("admin", all_companies=True)
    response = await api.client.put("/api/v1/sites", headers=bearer(admin), json=[
        {"site": "openapi-testi.fi", "company": "kemin-energia"}])
    assert response.status == 200, await response.text()


async def test_api_docs_page_lists_operations(api: Api) -> None:
    response = await api.client.get("/api/docs")
    assert response.status == 200
    assert "/api/v1/me" in await response.text()


async def test_metrics_count_requests_by_route_and_status(api: Api) -> None:
    await api.client.get("/readyz")
    text = await (await api.client.get("/metrics")).text()
    assert 'tallenne_http_requests_total{method="GET",route="/readyz",status="200"}' in text
    assert "tallenne_http_request_duration_seconds_bucket" in text


async def test_metrics_count_what_the_service_took_in_and_sent_out(api: Api) -> None:
    """An operator's dashboard: recordings stored (and retried), their bytes, audio bytes
    sent to listeners, web-event lines accepted and rejected."""
    samples = ('tallenne_recordings_ingested_total{outcome="stored"}',
               'tallenne_recordings_ingested_total{outcome="repeated"}',
               "tallenne_recordings_ingested_bytes_total", "tallenne_replayed_bytes_total",
               'tallenne_web_event_lines_total{outcome="accepted"}',
               'tallenne_web_event_lines_total{outcome="rejected"}')
    before = {s: await metric(api.client, s) for s in samples}
    ingest = await api.token("ingest", [COMPANY])
    call = metadata()
    audio = audiogen.make_audio("wav_pcm", 1.0)
    stored = await upload(api.client, ingest, call, audio)
    assert stored.status == 201
    again = await upload(api.client, ingest, call, audio)
    assert again.status == 200
    recording = await stored.json()
    quality = await api.token("quality", [COMPANY])
    played = await api.client.get(f"/api/v1/recordings/{recording['id']}/audio",
                                  params={"reason": "laatu"}, headers=bearer(quality))
    assert played.status == 200 and len(await played.read()) == recording["size_bytes"]
    events = await api.client.post("/api/v1/web-events", headers=bearer(ingest), json=[
        {"ts": "2026-03-02T10:00:00+02:00", "site": "oulunsahkonmyynti.fi", "event": "login",
         "company": COMPANY},
        {"ts": "not a time", "site": "oulunsahkonmyynti.fi", "event": "login"}])
    assert (await events.json())["accepted"] == 1
    after = {s: await metric(api.client, s) for s in samples}
    grown = {s.split("{")[0].removeprefix("tallenne_") + s[len(s.split("{")[0]):]:
             after[s] - before[s] for s in samples}
    assert grown == {
        'recordings_ingested_total{outcome="stored"}': 1,
        'recordings_ingested_total{outcome="repeated"}': 1,
        "recordings_ingested_bytes_total": recording["size_bytes"],
        "replayed_bytes_total": recording["size_bytes"],
        'web_event_lines_total{outcome="accepted"}': 1,
        'web_event_lines_total{outcome="rejected"}': 1,
    }


async def test_me_without_credentials_is_401_problem(api: Api) -> None:
    response = await api.client.get("/api/v1/me")
    assert response.status == 401
    assert response.content_type == "application/problem+json"


async def test_me_with_token_shows_name_role_and_companies(api: Api) -> None:
    token = await api.token("ingest", ["kemin-energia", "tenergia"], name="pbx-kemi")
    response = await api.client.get("/api/v1/me", headers=bearer(token))
    assert response.status == 200
    assert (await response.json()) == {
        "kind": "token", "name": "pbx-kemi", "role": "ingest",
        "companies": ["kemin-energia", "tenergia"], "all_companies": False,
    }


async def test_nine_companies_are_seeded(db: asyncpg.Connection) -> None:
    codes = {r["code"] for r in await db.fetch("SELECT code FROM companies")}
    assert len(codes) == 9 and "oulun-sahkonmyynti" in codes
    business_id = await db.fetchval(
        "SELECT business_id FROM companies WHERE code = 'oulun-sahkonmyynti'")
    assert business_id == "1703296-5"


async def test_migrations_are_idempotent(db: asyncpg.Connection) -> None:
    assert await migrate(db) == []
    recorded = [r["version"] for r in await db.fetch(
        "SELECT version FROM schema_migrations ORDER BY version")]
    assert recorded == [version for version, _ in migration_files()]


async def test_two_instances_starting_at_once_migrate_once(stack, settings) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from tests.conftest import drop_database

    admin = await asyncpg.connect(stack.superuser_url("postgres"))
    await admin.execute("CREATE DATABASE t_race OWNER tallenne_owner")
    await admin.close()
    try:
        conns = [await asyncpg.connect(stack.owner_url("t_race")) for _ in range(2)]
        applied = await asyncio.gather(*(migrate(c) for c in conns))
        for c in conns:
            await c.close()
        assert sorted(len(a) for a in applied) == [0, len(migration_files())]
    finally:
        await asyncio.to_thread(drop_database, stack, "t_race")


async def test_token_passwords_are_never_stored_in_plain(api: Api, db: asyncpg.Connection) -> None:
    token = await api.token("quality", ["tenergia"])
    dump = str(await db.fetch("SELECT * FROM api_tokens"))
    assert token not in dump and token[4:] not in dump


def test_app_factory_builds_without_running(settings) -> None:  # type: ignore[no-untyped-def]
    app = create_app(settings)
    assert any(r.resource and r.resource.canonical == "/healthz" for r in app.router.routes())


def _counted(metrics: str, route: str, status: int) -> float:
    found = re.search(r'^tallenne_http_requests_total\{method="GET",route="' + re.escape(route)
                      + f'",status="{status}"' + r'\} (\S+)$', metrics, re.MULTILINE)
    return float(found[1]) if found else 0.0


async def test_a_redirect_is_counted_with_its_status_and_carries_a_request_id(api: Api) -> None:
    route = "/ui/lang/{lang}"
    before = await (await api.client.get("/metrics")).text()
    response = await api.client.get("/ui/lang/en", allow_redirects=False,
                                    headers={"X-Request-Id": "lang-switch-1"})
    assert response.status == 303
    assert response.headers["X-Request-Id"] == "lang-switch-1"
    after = await (await api.client.get("/metrics")).text()
    assert _counted(after, route, 303) == _counted(before, route, 303) + 1
    assert _counted(after, route, 500) == _counted(before, route, 500)


@contextmanager
def json_log(logger_name: str = "tallenne.test") -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose records are written by the service's formatter into a string."""
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(logger_name)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, written
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _lines(written: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in written.getvalue().splitlines()]


def test_a_log_line_with_nan_or_infinity_is_valid_json() -> None:
    with json_log() as (logger, written):
        logger.info("ratio", extra={"ratio": float("nan"), "peaks": [1.5, float("-inf")]})
    (line,) = _lines(written)  # json.loads accepts NaN; a log shipper's parser does not
    assert "NaN" not in written.getvalue() and "Infinity" not in written.getvalue()
    assert line["msg"] == "ratio" and line["ratio"] == "nan" and line["peaks"] == [1.5, "-inf"]


def test_an_extra_cannot_overwrite_the_level_time_logger_request_id_or_actor() -> None:
    token = request_id_var.set("req-1")
    try:
        with json_log() as (logger, written):
            logger.warning("disk nearly full", extra={
                "level": "debug", "ts": "1970", "logger": "elsewhere", "request_id": "forged",
                "actor": "someone", "exc": "no traceback"})
    finally:
        request_id_var.reset(token)
    (line,) = _lines(written)
    assert (line["level"], line["logger"], line["request_id"], line["msg"]) == (
        "warning", "tallenne.test", "req-1", "disk nearly full")
    assert line["ts"].startswith("20") and "actor" not in line and "exc" not in line
    assert (line["extra_level"], line["extra_request_id"], line["extra_actor"]) == (
        "debug", "forged", "someone")


def test_a_log_line_that_cannot_be_encoded_is_one_minimal_json_line(
        capsys: Any) -> None:
    """Python's own fallback is a multi-line "--- Logging error ---" block on stderr that
    echoes the raw arguments; the service writes one JSON line without them instead."""
    with json_log() as (logger, written):
        logger.warning("erasure done", extra={"by_customer": {uuid.uuid4(): IDENTITY_CODE}})
        logger.error("count %d", IDENTITY_CODE)
    first, second = _lines(written)
    assert first == {"ts": first["ts"], "level": "warning", "logger": "tallenne.test",
                     "msg": "erasure done", "log_error": "TypeError"}
    assert second == {"ts": second["ts"], "level": "error", "logger": "tallenne.test",
                      "msg": "count %d", "log_error": "TypeError"}
    assert IDENTITY_CODE not in written.getvalue()
    assert "Logging error" not in capsys.readouterr().err


async def test_an_unhandled_database_error_is_logged_without_row_values(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """PostgreSQL quotes the offending row in its message ("Key (…)=(…) already exists",
    "Failing row contains (…)"): the log names the error, its SQLSTATE and the constraint,
    never the values."""
    await db.execute("CREATE TABLE probe (personal_id text CONSTRAINT probe_personal_id_key"
                     " UNIQUE CONSTRAINT probe_short CHECK (length(personal_id) < 12))")
    await db.execute("INSERT INTO probe VALUES ($1)", IDENTITY_CODE)

    async def duplicate(request: web.Request) -> web.Response:
        await db.execute("INSERT INTO probe VALUES ($1)", request.match_info["value"])
        return web.Response(text="stored")

    app = create_app(settings)
    app.router.add_get("/test-only/probe/{value}", duplicate)
    with json_log("service.http.middlewares") as (_, written):
        async with TestClient(TestServer(app)) as client:
            for value in (IDENTITY_CODE, "131052-308T0000"):
                response = await client.get(f"/test-only/probe/{value}")
                assert response.status == 500
                assert response.content_type == "application/problem+json"
                assert value not in await response.text()
    logged = [line for line in _lines(written) if line["msg"] == "unhandled error"]
    assert [(line["error"], line["sqlstate"], line["constraint"], line["table"])
            for line in logged] == [
        ("UniqueViolationError", "23505", "probe_personal_id_key", "probe"),
        ("CheckViolationError", "23514", "probe_short", "probe")]
    assert "UniqueViolationError" in logged[0]["exc"]
    assert IDENTITY_CODE not in written.getvalue()
    assert "Key (" not in written.getvalue() and "Failing row" not in written.getvalue()
