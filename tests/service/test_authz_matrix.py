"""Every endpoint in the route table × every role: the policy table decides, nothing else.

Generated from `service.app.ROUTES`, so an endpoint added later is covered
without touching this file.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from aiohttp import ClientResponse

from service.app import ROUTES
from service.http.api import Endpoint, RouteTable
from service.policy import ACTIONS, AUTHENTICATED, PUBLIC, ROLES, allowed
from tests.helpers import Api, bearer

# Values for path parameters: real-looking but pointing at nothing.
PATH_VALUES = {
    "company": "tenergia",
    "customer_number": "no-such-customer",
    "username": "no-such-user",
    "code": "no-such-company",
    "use": "direct_marketing",
    "case": "no-such-case",
}
_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


def _url(endpoint: Endpoint) -> str:
    return _PARAM.sub(lambda m: PATH_VALUES.get(m.group(1), str(uuid.uuid4())), endpoint.path)


def _id(endpoint: Endpoint) -> str:
    return f"{endpoint.method} {endpoint.path}"


ENDPOINTS = list(ROUTES.endpoints)
PROTECTED = [ep for ep in ENDPOINTS if ep.action != PUBLIC]


async def _call(api: Api, endpoint: Endpoint, headers: dict[str, str]) -> ClientResponse:
    kwargs: dict[str, Any] = {"headers": headers, "allow_redirects": False}
    if endpoint.method in ("POST", "PUT", "PATCH", "DELETE"):
        kwargs["json"] = {}
    return await api.client.request(endpoint.method, _url(endpoint), **kwargs)


async def _sign_in_as(api: Api, role: str) -> dict[str, str]:
    username = f"matrix-{role.replace('_', '-')}"
    if role in ("admin", "dpo"):
        await api.user(username, role, all_companies=True)
    else:
        await api.user(username, role, ["tenergia"])
    return {"X-CSRF-Token": await api.login(username)}


def test_every_endpoint_action_is_in_the_policy_table() -> None:
    assert ENDPOINTS, "the route table is empty"
    for endpoint in ENDPOINTS:
        assert endpoint.action in ACTIONS or endpoint.action in (PUBLIC, AUTHENTICATED), (
            _id(endpoint))


def test_registering_an_endpoint_with_an_unknown_action_fails() -> None:
    table = RouteTable()
    with pytest.raises(ValueError, match="not in the policy table"):
        table.route("GET", "/api/v1/nothing", action="recording.dance", summary="x", tag="x")
    assert table.endpoints == []


def test_every_policy_action_names_a_known_role_grant() -> None:
    for role in ROLES:
        assert allowed(role, AUTHENTICATED)
    assert all(allowed("admin", action) for action in ACTIONS)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=_id)
async def test_role_matrix(api: Api, endpoint: Endpoint) -> None:
    """Lacking the action → 403; having it → anything but 401/403 (400/404/422 are fine)."""
    for role in ROLES:
        headers = await _sign_in_as(api, role)
        response = await _call(api, endpoint, headers)
        text = await response.text()
        if allowed(role, endpoint.action):
            assert response.status not in (401, 403), (role, response.status, text)
            assert response.status < 500, (role, response.status, text)
        else:
            assert response.status == 403, (role, response.status, text)
            assert response.content_type == "application/problem+json"


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=_id)
async def test_machine_token_of_a_role_lacking_the_action_is_refused(
        api: Api, endpoint: Endpoint) -> None:
    for role in ROLES:
        if allowed(role, endpoint.action):
            continue
        token = await api.token(role, ["tenergia"], name=f"matrix-{role}")
        response = await _call(api, endpoint, bearer(token))
        assert response.status == 403, (role, response.status, await response.text())


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=_id)
async def test_unauthenticated_caller(api: Api, endpoint: Endpoint) -> None:
    """Every non-public endpoint answers 401 without credentials; public ones never do."""
    api.client.session.cookie_jar.clear()
    response = await _call(api, endpoint, {})
    if endpoint.action == PUBLIC:
        assert response.status != 401, response.status
    else:
        assert response.status == 401, (response.status, await response.text())
        assert response.content_type == "application/problem+json"


async def test_bad_bearer_token_is_401_everywhere(api: Api) -> None:
    for endpoint in PROTECTED:
        response = await _call(api, endpoint, bearer("tln_not-a-real-token"))
        assert response.status == 401, _id(endpoint)


async def test_another_persons_token_is_not_found(api: Api) -> None:
    await api.user("aino", "quality", ["tenergia"])
    await api.user("eero", "quality", ["tenergia"])
    csrf = await api.login("aino")
    made = await api.client.post("/api/v1/tokens", json={"name": "ainos-laptop"},
                                 headers={"X-CSRF-Token": csrf})
    assert made.status == 201
    token = await made.json()

    csrf = await api.login("eero")
    listed = await (await api.client.get("/api/v1/tokens")).json()
    assert token["id"] not in {t["id"] for t in listed["items"]}
    theirs = await api.client.delete(f"/api/v1/tokens/{token['id']}",
                                     headers={"X-CSRF-Token": csrf})
    missing = await api.client.delete(f"/api/v1/tokens/{uuid.uuid4()}",
                                      headers={"X-CSRF-Token": csrf})
    assert theirs.status == missing.status == 404
    assert (await theirs.json())["detail"] == (await missing.json())["detail"]
    still = await api.client.get("/api/v1/me", headers=bearer(token["token"]))
    assert still.status == 200
