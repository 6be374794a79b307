"""The web UI pages: sign-in required, strict CSP, escaped output, Finnish by default."""

from __future__ import annotations

import uuid

import pytest

from tests import audiogen
from tests.helpers import Api, bearer
from tests.service.recording_factory import COMPANY, OTHER_COMPANY, metadata, upload

XSS = '<script>alert("x")</script>'
# Ids that name nothing stored; fixed, so that every test process collects the same tests.
NOWHERE = "00000000-0000-4000-8000-00000000beef"
PAGES = ("/recordings", f"/recordings/{NOWHERE}", "/customers", f"/customers/{NOWHERE}")


async def stored_call(api: Api, company: str = COMPANY, **overrides: object) -> dict[str, object]:
    token = await api.token("ingest", [company], name=f"pbx-{company}")
    response = await upload(api.client, token, metadata(company=company, **overrides),
                            audiogen.make_audio("wav_mulaw", 1.0))
    assert response.status == 201, await response.text()
    body: dict[str, object] = await response.json()
    return body


@pytest.mark.parametrize("path", PAGES)
async def test_pages_send_strangers_to_the_sign_in_page(api: Api, path: str) -> None:
    response = await api.client.get(path, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/"
    forged = await api.client.get(path, allow_redirects=False,
                                  cookies={"tallenne_session": "made-up"})
    assert forged.status == 303


async def test_a_role_without_the_pages_action_is_sent_home(api: Api) -> None:
    await api.user("pbx-person", "ingest", [COMPANY])
    await api.login("pbx-person")
    for path in PAGES:
        response = await api.client.get(path, allow_redirects=False)
        assert response.status == 303, path
    await api.user("quality-person", "quality", [COMPANY])
    await api.login("quality-person")
    assert (await api.client.get("/customers", allow_redirects=False)).status == 303
    page = await (await api.client.get("/")).text()
    assert 'href="/recordings"' in page and 'href="/customers"' not in page


async def test_pages_send_a_strict_content_security_policy(api: Api) -> None:
    await api.user("aino", "quality", [COMPANY])
    await api.login("aino")
    for path in ("/", "/recordings"):
        response = await api.client.get(path)
        assert response.status == 200
        policy = response.headers["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";") if d.strip())
        assert directives["script-src"] == "'self'"
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert directives["frame-ancestors"] == "'none'"
        page = await response.text()
        # No inline script: every <script> either loads a file or is a JSON data block.
        for chunk in page.split("<script")[1:]:
            tag = chunk.split(">", 1)[0]
            assert 'src="/static/' in tag or 'type="application/json"' in tag, tag


async def test_a_script_in_agent_name_and_comment_renders_as_text(api: Api) -> None:
    call = await stored_call(api, agent=XSS, queue=XSS, tags=["<b>x</b>"])
    admin = await api.token("admin", all_companies=True)
    form = {"name": "xss", "title": XSS, "criteria": [
        {"key": "greeting", "label": XSS, "max_score": 5}]}
    made = await api.client.post("/api/v1/evaluation-forms", json=form, headers=bearer(admin))
    assert made.status == 201, await made.text()
    await api.user("aino", "quality", [COMPANY])
    csrf = await api.login("aino")
    saved = await api.client.post(f"/api/v1/recordings/{call['id']}/evaluations",
                                  json={"form": "xss", "scores": {"greeting": 3}, "comment": XSS},
                                  headers={"X-CSRF-Token": csrf})
    assert saved.status == 201, await saved.text()
    response = await api.client.get(f"/recordings/{call['id']}")
    assert response.status == 200
    page = await response.text()
    assert XSS not in page and "<b>x</b>" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    # agent, queue, form title and criterion label (list and form), comment
    assert page.count("&lt;script&gt;") >= 6


async def test_call_page_is_audited_like_the_api_and_scoped(api: Api, db: object) -> None:
    ours = await stored_call(api)
    theirs = await stored_call(api, OTHER_COMPANY)
    await api.user("aino", "quality", [COMPANY])
    await api.login("aino")
    assert (await api.client.get(f"/recordings/{ours['id']}")).status == 200
    hidden = await api.client.get(f"/recordings/{theirs['id']}")
    assert hidden.status == 404
    assert str(theirs["external_id"]) not in await hidden.text()
    assert (await api.client.get("/recordings/not-a-uuid")).status == 404
    rows = await db.fetch(  # type: ignore[attr-defined]
        "SELECT action, actor FROM audit_events WHERE target_id = $1", str(ours["id"]))
    assert {("recording.read", "aino"), ("evaluation.read", "aino")} <= {
        (r["action"], r["actor"]) for r in rows}


async def test_finnish_by_default_english_by_cookie_or_browser(api: Api) -> None:
    first = await (await api.client.get("/")).text()
    assert '<html lang="fi">' in first and "Kirjaudu sisään" in first
    assert "Käyttäjätunnus" in first
    english = await (await api.client.get(
        "/", headers={"Accept-Language": "en-GB,en;q=0.8"})).text()
    assert '<html lang="en">' in english and "Sign in" in english

    switched = await api.client.get("/ui/lang/en", params={"back": "/recordings"},
                                    allow_redirects=False)
    assert switched.status == 303 and switched.headers["Location"] == "/recordings"
    assert "lang=en" in switched.headers["Set-Cookie"]
    page = await (await api.client.get("/", headers={"Accept-Language": "fi"})).text()
    assert '<html lang="en">' in page and "Username" in page

    await api.user("aino", "quality", [COMPANY])
    await api.login("aino")
    search = await (await api.client.get("/recordings")).text()
    assert "Search calls" in search and 'for="f-agent">Agent<' in search
    for elsewhere in ("https://evil.example/", "//evil.example", "/\t/evil.example",
                      "/\n/evil.example", "/\\evil.example"):
        back = await api.client.get("/ui/lang/en", params={"back": elsewhere},
                                    allow_redirects=False)
        assert back.headers["Location"] == "/", elsewhere
    back = await api.client.get("/ui/lang/fi", params={"back": "/recordings?agent=a b"},
                                allow_redirects=False)
    assert back.headers["Location"] == "/recordings?agent=a+b"
    finnish = await (await api.client.get("/recordings")).text()
    assert "Puheluhaku" in finnish and 'for="f-agent">Asiakaspalvelija<' in finnish


async def test_customer_page_for_customer_service(api: Api) -> None:
    await api.user("asta", "customer_service", [COMPANY])
    await api.login("asta")
    customer_id = uuid.uuid4()
    page = await api.client.get(f"/customers/{customer_id}")
    assert page.status == 200
    text = await page.text()
    assert f'data-customer="{customer_id}"' in text and 'id="prohibition-form"' in text
    assert 'id="customer-calls"' in text and 'id="customer-events"' in text
    call = await stored_call(api)
    detail = await (await api.client.get(f"/recordings/{call['id']}")).text()
    # customer service reads call metadata but may neither replay nor evaluate
    assert 'id="player"' not in detail and 'id="evaluation-form"' not in detail


async def test_static_scripts_are_served(api: Api) -> None:
    for name in ("app.js", "recordings.js", "call.js", "customer.js", "app.css"):
        response = await api.client.get(f"/static/{name}")
        assert response.status == 200, name
    token = await api.token("quality", [COMPANY])
    assert (await api.client.get("/recordings", headers=bearer(token),
                                 allow_redirects=False)).status == 303


async def test_the_search_page_offers_phone_duration_and_analysis_filters(api: Api) -> None:
    await api.user("sanna", "quality", [COMPANY])
    await api.login("sanna")
    page = await (await api.client.get("/recordings", headers={"Accept-Language": "en"})).text()
    for name in ("phone", "min_duration_s", "max_duration_s", "min_silence_ratio",
                 "min_overtalk_s", "flag"):
        assert f'name="{name}"' in page, name
    for flag in ("silent_channel", "one_sided", "clipping", "dropout", "mono_mixdown"):
        assert f'<option value="{flag}">' in page, flag
    script = await (await api.client.get("/static/recordings.js")).text()
    assert '"phone"' in script and '"flag"' in script  # the page's script sends them
