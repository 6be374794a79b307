"""Sign-in under attack: parallel bursts are throttled, forwarded addresses are believed only
from trusted proxies, the session cookie is Secure, and JSON endpoints take only JSON."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from service.app import ROUTES, create_app
from service.settings import Settings
from tests.conftest import Stack, secure_origin_client
from tests.helpers import DEFAULT_PASSWORD, Api

WRONG = {"password": "definitely-not-it"}


async def _attempt(client: TestClient[Any, Any], username: str,
                   headers: dict[str, str] | None = None, password: str = WRONG["password"]
                   ) -> int:
    response = await client.post("/api/v1/session", headers=headers,
                                 json={"username": username, "password": password})
    return response.status


async def test_a_burst_of_50_parallel_wrong_passwords_is_throttled(
        api: Api, db: asyncpg.Connection) -> None:
    await api.user("aino", "quality", ["tenergia"])
    statuses = await asyncio.gather(*(_attempt(api.client, "aino") for _ in range(50)))
    assert set(statuses) == {401, 429}
    # Five free failures per account, then a wait of seconds: the burst counts one by one
    # (checked and counted apart, all fifty would have been let through). A slow machine
    # may let one more in after the first wait.
    failed = statuses.count(401)
    assert 5 <= failed <= 6, statuses
    assert await db.fetchval(
        "SELECT count(*) FROM login_failures WHERE username = 'aino'") == failed


async def test_a_parallel_burst_over_many_accounts_is_throttled_per_address(
        api: Api, db: asyncpg.Connection) -> None:
    statuses = await asyncio.gather(*(_attempt(api.client, f"user{n}") for n in range(50)))
    # Per address the allowance is four times an account's: 20 failures, then a wait.
    failed = statuses.count(401)
    assert 20 <= failed <= 22, statuses
    assert statuses.count(429) == 50 - failed
    assert await db.fetchval("SELECT count(*) FROM login_failures") == failed


@pytest.fixture
async def behind_proxy(settings: Settings, stack: Stack, database: str
                       ) -> AsyncIterator[Api]:
    """The service with the test client's own address (loopback) as a trusted proxy."""
    app = create_app(settings.model_copy(update={"trusted_proxies": "10.9.0.0/16, 127.0.0.1"}))
    async with secure_origin_client(app) as client:
        yield Api(client, stack.superuser_url(database))


async def _audited_ips(db: asyncpg.Connection) -> list[str]:
    rows = await db.fetch("SELECT client_ip FROM audit_events WHERE action = 'login'"
                          " ORDER BY seq")
    return [r["client_ip"] for r in rows]


async def test_forwarded_addresses_are_believed_from_a_trusted_proxy(
        behind_proxy: Api, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture) -> None:
    client = behind_proxy.client
    caplog.set_level(logging.INFO, logger="service.http.middlewares")
    # The last hop that is not a trusted proxy is the client.
    assert await _attempt(client, "x", {"X-Forwarded-For": "203.0.113.9, 10.9.1.1"}) == 401
    assert await _attempt(client, "x", {"Forwarded": 'for=198.51.100.4;proto=https,'
                                                     ' for="[2001:db8:cafe::17]:4711"'}) == 401
    assert await _audited_ips(db) == ["203.0.113.0/24", "2001:db8:cafe::/48"]
    logged = [getattr(r, "client_ip", None) for r in caplog.records if r.msg == "request"]
    assert logged == ["203.0.113.0/24", "2001:db8:cafe::/48"]


async def test_throttling_behind_a_trusted_proxy_is_per_client(
        behind_proxy: Api) -> None:
    client = behind_proxy.client
    attacker = {"X-Forwarded-For": "203.0.113.9"}
    statuses = await asyncio.gather(*(_attempt(client, f"u{n}", attacker) for n in range(30)))
    assert statuses.count(429) >= 8
    # Another client behind the same proxy is not locked out by the attacker.
    await behind_proxy.user("aino", "quality", ["tenergia"])
    assert await _attempt(client, "aino", {"X-Forwarded-For": "192.0.2.50"},
                          password=DEFAULT_PASSWORD) == 200


async def test_forwarded_headers_from_an_untrusted_peer_are_ignored(
        api: Api, db: asyncpg.Connection) -> None:
    # No trusted proxies are configured: a spoofed header neither changes the audited address
    # nor lets an attacker escape the per-address throttle by inventing addresses.
    statuses = await asyncio.gather(*(
        _attempt(api.client, f"u{n}", {"X-Forwarded-For": f"203.0.{n}.1",
                                       "Forwarded": f"for=198.51.{n}.1"})
        for n in range(30)))
    assert statuses.count(429) >= 8
    assert set(await _audited_ips(db)) == {"127.0.0.0/24"}


async def test_session_cookie_is_secure_by_default_even_over_plain_http(api: Api) -> None:
    # Behind a TLS-terminating proxy the request reaches the service as plain http.
    await api.user("aino", "quality", ["tenergia"])
    response = await api.client.post(
        "/api/v1/session", json={"username": "aino", "password": DEFAULT_PASSWORD},
        headers={"X-Forwarded-Proto": "https"})
    assert response.status == 200
    assert "; Secure" in response.headers["Set-Cookie"]


async def test_insecure_cookies_setting_drops_the_secure_flag(
        settings: Settings, stack: Stack, database: str) -> None:
    app = create_app(settings.model_copy(update={"insecure_cookies": True}))
    async with secure_origin_client(app) as client:
        await Api(client, stack.superuser_url(database)).user("aino", "quality", ["tenergia"])
        response = await client.post(
            "/api/v1/session", json={"username": "aino", "password": DEFAULT_PASSWORD})
        assert response.status == 200
        cookie = response.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "Secure" not in cookie


async def test_login_refuses_a_cross_site_text_plain_form_post(
        api: Api, db: asyncpg.Connection) -> None:
    await api.user("aino", "quality", ["tenergia"])
    body = f'{{"username": "aino", "password": "{DEFAULT_PASSWORD}"}}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded",
                         "multipart/form-data; boundary=x"):
        response = await api.client.post("/api/v1/session", data=body,
                                         headers={"Content-Type": content_type,
                                                  "Origin": "https://evil.example"})
        assert response.status == 415, content_type
        assert response.headers["Content-Type"].startswith("application/problem+json")
        assert "application/json" in (await response.json())["detail"]
        assert "Set-Cookie" not in response.headers
    assert await db.fetchval("SELECT count(*) FROM sessions") == 0
    # Sent as JSON (with a charset) it works.
    response = await api.client.post("/api/v1/session", data=body, headers={
        "Content-Type": "application/json; charset=utf-8"})
    assert response.status == 200


async def test_every_json_endpoint_refuses_a_body_that_is_not_json(api: Api) -> None:
    with_body = [ep for ep in ROUTES.endpoints if ep.body is not None]
    assert len(with_body) > 10
    for ep in with_body:
        path = ep.path
        while "{" in path:
            start = path.index("{")
            path = path[:start] + "00000000-0000-4000-8000-000000000000" \
                + path[path.index("}", start) + 1:]
        response = await api.client.request(ep.method, path, data="{}",
                                            headers={"Content-Type": "text/plain"})
        assert response.status == 415, (ep.method, ep.path, response.status)
        assert response.headers["Content-Type"].startswith("application/problem+json")


async def test_openapi_lists_415_for_json_bodies(api: Api) -> None:
    document = await (await api.client.get("/api/v1/openapi.json")).json()
    login = document["paths"]["/api/v1/session"]["post"]["responses"]
    assert "415" in login
