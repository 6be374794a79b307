"""People and machines: sign-in, sessions, CSRF, throttling, passwords, tokens, companies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
from argon2 import PasswordHasher

from storage import passwords
from tests.helpers import DEFAULT_PASSWORD, Api, bearer

NEW_PASSWORD = "a-brand-new-passphrase-2026"


def _session_cookie(api: Api) -> str:
    for cookie in api.client.session.cookie_jar:
        if cookie.key == "tallenne_session":
            return cookie.value
    raise AssertionError("no session cookie")


def _as_cookie(session_id: str) -> dict[str, str]:
    return {"Cookie": f"tallenne_session={session_id}"}


async def _admin(api: Api) -> dict[str, str]:
    return bearer(await api.token("admin", all_companies=True, name="admin-script"))


async def _admin_session(api: Api) -> dict[str, str]:
    """A signed-in all-companies admin (only a person, never a token, makes tokens)."""
    await api.user("group-admin", "admin", all_companies=True)
    return {"X-CSRF-Token": await api.login("group-admin")}


async def test_login_sets_httponly_strict_cookie_and_returns_csrf(api: Api) -> None:
    await api.user("aino", "quality", ["tenergia"])
    response = await api.client.post("/api/v1/session",
                                     json={"username": "aino", "password": DEFAULT_PASSWORD})
    assert response.status == 200
    assert len((await response.json())["csrf_token"]) >= 32
    set_cookie = response.headers["Set-Cookie"]
    assert set_cookie.startswith("tallenne_session=")
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/" in set_cookie
    me = await api.client.get("/api/v1/me")
    assert (await me.json())["name"] == "aino"


async def test_every_login_gets_a_new_session_id(api: Api) -> None:
    await api.user("aino", "quality", ["tenergia"])
    await api.login("aino")
    first = _session_cookie(api)
    await api.login("aino")
    second = _session_cookie(api)
    assert first != second


async def test_wrong_password_and_unknown_user_look_the_same(api: Api) -> None:
    await api.user("aino", "quality", ["tenergia"])
    wrong = await api.client.post("/api/v1/session",
                                  json={"username": "aino", "password": "not-it-at-all"})
    unknown = await api.client.post("/api/v1/session",
                                    json={"username": "nobody", "password": "not-it-at-all"})
    assert wrong.status == unknown.status == 401
    assert (await wrong.json())["detail"] == (await unknown.json())["detail"]


async def test_cookie_request_without_csrf_token_is_refused(api: Api) -> None:
    await api.user("aino", "quality", ["tenergia"])
    csrf = await api.login("aino")
    refused = await api.client.post("/api/v1/tokens", json={"name": "mine"})
    assert refused.status == 403
    wrong = await api.client.post("/api/v1/tokens", json={"name": "mine"},
                                  headers={"X-CSRF-Token": "guess"})
    assert wrong.status == 403
    accepted = await api.client.post("/api/v1/tokens", json={"name": "mine"},
                                     headers={"X-CSRF-Token": csrf})
    assert accepted.status == 201


async def test_bearer_request_needs_no_csrf_token(api: Api) -> None:
    response = await api.client.post("/api/v1/companies", headers=await _admin(api),
                                     json={"code": "iin-energia", "name": "Iin Energia Oy"})
    assert response.status == 201, await response.text()


async def test_logout_ends_the_session_on_the_server(api: Api) -> None:
    await api.user("aino", "quality", ["tenergia"])
    csrf = await api.login("aino")
    session_id = _session_cookie(api)
    out = await api.client.delete("/api/v1/session", headers={"X-CSRF-Token": csrf})
    assert out.status == 204
    api.client.session.cookie_jar.clear()
    replay = await api.client.get("/api/v1/me", headers=_as_cookie(session_id))
    assert replay.status == 401


async def test_five_failures_throttle_and_the_throttle_releases(api: Api,
                                                                db: asyncpg.Connection) -> None:
    await api.user("aino", "quality", ["tenergia"])
    for _ in range(5):
        bad = await api.client.post("/api/v1/session",
                                    json={"username": "aino", "password": "wrong-password!"})
        assert bad.status == 401
    throttled = await api.client.post("/api/v1/session",
                                      json={"username": "aino", "password": DEFAULT_PASSWORD})
    assert throttled.status == 429
    assert int(throttled.headers["Retry-After"]) >= 1
    await db.execute("UPDATE login_failures SET at = at - interval '1 minute'")
    released = await api.client.post("/api/v1/session",
                                      json={"username": "aino", "password": DEFAULT_PASSWORD})
    assert released.status == 200


async def test_throttle_delay_grows_with_failures() -> None:
    from service.identity.accounts import throttle_delay

    delays = [throttle_delay(n) for n in range(4, 10)]
    assert delays[0] == 0 and delays == sorted(delays) and delays[-1] > delays[1]


async def test_disabling_a_user_ends_their_live_session_at_once(api: Api) -> None:
    await api.user("aino", "quality", ["tenergia"])
    await api.login("aino")
    session_id = _session_cookie(api)
    api.client.session.cookie_jar.clear()
    patched = await api.client.patch("/api/v1/users/aino", json={"disabled": True},
                                     headers=await _admin(api))
    assert patched.status == 200 and (await patched.json())["disabled"] is True
    assert (await api.client.get("/api/v1/me", headers=_as_cookie(session_id))).status == 401
    again = await api.client.post("/api/v1/session",
                                  json={"username": "aino", "password": DEFAULT_PASSWORD})
    assert again.status == 401


async def test_admin_password_reset_ends_sessions(api: Api) -> None:
    await api.user("aino", "quality", ["tenergia"])
    await api.login("aino")
    session_id = _session_cookie(api)
    api.client.session.cookie_jar.clear()
    reset = await api.client.patch("/api/v1/users/aino", json={"password": NEW_PASSWORD},
                                   headers=await _admin(api))
    assert reset.status == 200
    assert (await api.client.get("/api/v1/me", headers=_as_cookie(session_id))).status == 401
    await api.login("aino", NEW_PASSWORD)


async def test_change_own_password(api: Api) -> None:
    await api.user("aino", "quality", ["tenergia"])
    csrf = await api.login("aino")
    wrong = await api.client.post("/api/v1/me/password", headers={"X-CSRF-Token": csrf},
                                  json={"current_password": "not-mine-at-all",
                                        "new_password": NEW_PASSWORD})
    assert wrong.status == 422
    changed = await api.client.post("/api/v1/me/password", headers={"X-CSRF-Token": csrf},
                                    json={"current_password": DEFAULT_PASSWORD,
                                          "new_password": NEW_PASSWORD})
    assert changed.status == 204
    old = await api.client.post("/api/v1/session",
                                json={"username": "aino", "password": DEFAULT_PASSWORD})
    assert old.status == 401
    await api.login("aino", NEW_PASSWORD)


async def test_short_or_common_passwords_are_refused(api: Api) -> None:
    await api.user("aino", "quality", ["tenergia"])
    csrf = await api.login("aino")
    for weak in ("short-1", "password123456", "aino-is-my-name"):
        response = await api.client.post("/api/v1/me/password", headers={"X-CSRF-Token": csrf},
                                         json={"current_password": DEFAULT_PASSWORD,
                                               "new_password": weak})
        assert response.status == 422, weak
    created = await api.client.post(
        "/api/v1/users", headers=await _admin(api),
        json={"username": "eero", "password": "qwerty", "role": "quality",
              "companies": ["tenergia"]})
    assert created.status == 422


async def test_idle_session_times_out(api: Api, db: asyncpg.Connection) -> None:
    await api.user("aino", "quality", ["tenergia"])
    await api.login("aino")
    assert (await api.client.get("/api/v1/me")).status == 200
    await db.execute("UPDATE sessions SET last_seen_at = now() - interval '31 minutes'")
    assert (await api.client.get("/api/v1/me")).status == 401


async def test_session_ends_after_the_absolute_timeout_even_when_active(
        api: Api, db: asyncpg.Connection) -> None:
    await api.user("aino", "quality", ["tenergia"])
    await api.login("aino")
    await db.execute("UPDATE sessions SET created_at = now() - interval '12 hours 1 minute'")
    assert (await api.client.get("/api/v1/me")).status == 401


async def test_token_expiry_and_revocation(api: Api, db: asyncpg.Connection) -> None:
    admin = await _admin_session(api)
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    made = await api.client.post("/api/v1/tokens", headers=admin,
                                 json={"name": "short-lived", "role": "ingest",
                                       "companies": ["tenergia"], "expires_at": soon})
    assert made.status == 201
    body = await made.json()
    assert (await api.client.get("/api/v1/me", headers=bearer(body["token"]))).status == 200
    await db.execute("UPDATE api_tokens SET expires_at = now() - interval '1 second'"
                     " WHERE id = $1", body["id"])
    assert (await api.client.get("/api/v1/me", headers=bearer(body["token"]))).status == 401

    other = await (await api.client.post("/api/v1/tokens", headers=admin,
                                         json={"name": "revoked-one", "role": "quality",
                                               "companies": ["tenergia"]})).json()
    assert (await api.client.get("/api/v1/me", headers=bearer(other["token"]))).status == 200
    revoked = await api.client.delete(f"/api/v1/tokens/{other['id']}", headers=admin)
    assert revoked.status == 204
    assert (await api.client.get("/api/v1/me", headers=bearer(other["token"]))).status == 401
    listed = await (await api.client.get("/api/v1/tokens", headers=admin)).json()
    assert {t["name"] for t in listed["items"] if t["revoked_at"]} == {"revoked-one"}
    assert all("token" not in t for t in listed["items"])


async def test_token_secret_is_shown_once_and_never_listed(api: Api) -> None:
    admin = await _admin_session(api)
    made = await (await api.client.post("/api/v1/tokens", headers=admin,
                                        json={"name": "once", "role": "ingest",
                                              "companies": ["tenergia"]})).json()
    listing = await (await api.client.get("/api/v1/tokens", headers=admin)).text()
    assert made["token"] not in listing


async def test_a_person_cannot_mint_a_token_above_their_role_or_companies(api: Api) -> None:
    await api.user("aino", "quality", ["tenergia"])
    csrf = await api.login("aino")
    headers = {"X-CSRF-Token": csrf}
    higher = await api.client.post("/api/v1/tokens", headers=headers,
                                   json={"name": "mine", "role": "admin"})
    assert higher.status == 403
    wider = await api.client.post("/api/v1/tokens", headers=headers,
                                  json={"name": "mine", "companies": ["kemin-energia"]})
    assert wider.status == 403
    everything = await api.client.post("/api/v1/tokens", headers=headers,
                                       json={"name": "mine", "all_companies": True})
    assert everything.status == 403
    own = await api.client.post("/api/v1/tokens", headers=headers,
                                json={"name": "mine", "companies": ["tenergia"]})
    assert own.status == 201
    token = (await own.json())["token"]
    me = await (await api.client.get("/api/v1/me", headers=bearer(token))).json()
    assert me["role"] == "quality" and me["companies"] == ["tenergia"]


async def test_password_is_rehashed_when_parameters_change(api: Api,
                                                           db: asyncpg.Connection) -> None:
    await api.user("aino", "quality", ["tenergia"])
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(DEFAULT_PASSWORD)
    await db.execute("UPDATE users SET password_hash = $1 WHERE username = 'aino'", weak)
    assert passwords.needs_rehash(weak)
    await api.login("aino")
    stored = await db.fetchval("SELECT password_hash FROM users WHERE username = 'aino'")
    assert stored != weak and not passwords.needs_rehash(stored)
    assert stored.startswith("$argon2id$")
    assert passwords.verify_password(stored, DEFAULT_PASSWORD)


async def test_companies_can_be_added_and_renamed_with_a_valid_business_id(api: Api) -> None:
    admin = await _admin(api)
    added = await api.client.post("/api/v1/companies", headers=admin,
                                  json={"code": "iin-energia", "name": "Iin Energia Oy",
                                        "business_id": "2345678-0"})
    assert added.status == 201, await added.text()
    assert (await added.json())["business_id"] == "2345678-0"
    renamed = await api.client.patch("/api/v1/companies/iin-energia", headers=admin,
                                     json={"name": "Iin Sähkö Oy"})
    assert renamed.status == 200 and (await renamed.json())["name"] == "Iin Sähkö Oy"
    seeded = await api.client.patch("/api/v1/companies/oulun-sahkonmyynti", headers=admin,
                                    json={"business_id": "1703296-5"})
    assert seeded.status == 200
    listed = await (await api.client.get("/api/v1/companies", headers=admin)).json()
    assert {"iin-energia", "oulun-sahkonmyynti"} <= {c["code"] for c in listed["items"]}


async def test_a_wrong_business_id_check_digit_is_refused(api: Api) -> None:
    admin = await _admin(api)
    for wrong in ("1703296-4", "1234567-2", "170329-5"):
        response = await api.client.post("/api/v1/companies", headers=admin,
                                         json={"code": "iin-energia", "name": "Iin Energia Oy",
                                               "business_id": wrong})
        assert response.status == 422, wrong
    patched = await api.client.patch("/api/v1/companies/tenergia", headers=admin,
                                     json={"business_id": "1703296-4"})
    assert patched.status == 422


async def test_a_duplicate_business_id_is_a_conflict(api: Api) -> None:
    response = await api.client.post("/api/v1/companies", headers=await _admin(api),
                                     json={"code": "copycat", "name": "Copycat Oy",
                                           "business_id": "1703296-5"})
    assert response.status == 409


async def test_web_ui_shows_only_the_sign_in_form_to_strangers(api: Api) -> None:
    await api.user("aino", "quality", ["tenergia"])
    response = await api.client.get("/")
    assert response.status == 200 and response.content_type == "text/html"
    page = await response.text()
    assert 'id="login-form"' in page and "aino" not in page and "tenergia" not in page
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    forged = await api.client.get("/", headers=_as_cookie("made-up-session"))
    assert 'id="login-form"' in await forged.text()


async def test_web_ui_shows_the_signed_in_person_and_navigation(api: Api) -> None:
    await api.user("aino", "customer_service", ["tenergia", "kemin-energia"])
    await api.login("aino")
    api.client.session.cookie_jar.update_cookies({"lang": "en"})
    page = await (await api.client.get("/")).text()
    assert 'id="me-name">aino<' in page and 'id="me-role">customer_service<' in page
    assert "kemin-energia, tenergia" in page or "tenergia, kemin-energia" in page
    for item in ("Recordings", "Customers", "Audit", "Sign out"):
        assert item in page
    assert 'id="login-form"' not in page


async def test_web_ui_routes_are_in_the_table_but_not_in_openapi(api: Api) -> None:
    from service.app import ROUTES
    from service.policy import PUBLIC

    home = [ep for ep in ROUTES.endpoints if ep.path == "/" and ep.method == "GET"]
    assert home and home[0].action == PUBLIC and home[0].tag == "ui"
    spec = await (await api.client.get("/api/v1/openapi.json")).json()
    assert "/" not in spec["paths"]
    script = await api.client.get("/static/app.js")
    assert script.status == 200
