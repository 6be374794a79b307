"""The site registry: admins map web sites to companies; events without a company take their
site's company, and a token still writes only to companies it covers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg

from service.cli import main as cli
from service.settings import Settings
from tests.helpers import Api, bearer, settings_env
from tests.service.test_evaluation_forms import hidden_csrf
from tests.service.test_web_events import event, ndjson, post

A = "kemin-energia"
B = "tornion-energia"
C = "raahen-energia"


async def put_sites(api: Api, token: str, rows: Any) -> Any:
    return await api.client.put("/api/v1/sites", json=rows, headers=bearer(token))


async def stored_companies(db: asyncpg.Connection) -> dict[str, str]:
    return {r["session_id"]: r["code"] for r in await db.fetch(
        "SELECT e.session_id, c.code FROM web_events e JOIN companies c ON c.id = e.company_id")}


async def test_admin_registers_moves_and_removes_sites_audited(
    api: Api, db: asyncpg.Connection
) -> None:
    admin = await api.token("admin", all_companies=True, name="site-admin")
    response = await put_sites(api, admin, [
        {"site": "kemin-energia.fi", "company": A}, {"site": "tornionenergia.fi", "company": B}])
    assert response.status == 200, await response.text()
    answer = await response.json()
    assert [(r["site"], r["company"]) for r in answer["items"]] == [
        ("kemin-energia.fi", A), ("tornionenergia.fi", B)]
    assert {c["site"]: c["old_company"] for c in answer["changes"]} == {
        "kemin-energia.fi": None, "tornionenergia.fi": None}
    moved = await (await put_sites(api, admin, {"items": [
        {"site": "kemin-energia.fi", "company": C},
        {"site": "tornionenergia.fi", "company": None},
        {"site": "unchanged-or-new.fi", "company": None}]})).json()
    assert [(r["site"], r["company"]) for r in moved["items"]] == [("kemin-energia.fi", C)]
    assert moved["changes"] == [
        {"site": "kemin-energia.fi", "old_company": A, "company": C},
        {"site": "tornionenergia.fi", "old_company": B, "company": None}]
    listed = await (await api.client.get("/api/v1/sites", headers=bearer(admin))).json()
    assert [(r["site"], r["company"], r["updated_by"]) for r in listed["items"]] == [
        ("kemin-energia.fi", C, "site-admin")]
    details = [json.loads(r["detail"]) for r in await db.fetch(
        "SELECT detail FROM audit_events WHERE action = 'site.change' ORDER BY seq")]
    assert len(details) == 2
    assert details[1]["changes"][0] == {"site": "kemin-energia.fi", "old_company": A,
                                        "company": C}


async def test_bad_site_rows_are_422_naming_the_row_and_change_nothing(
    api: Api, db: asyncpg.Connection
) -> None:
    admin = await api.token("admin", all_companies=True)
    response = await put_sites(api, admin, [
        {"site": "ok.fi", "company": A}, {"site": "bad.fi", "company": "no-such-company"}])
    assert response.status == 422
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert problem["errors"][0]["loc"] == ["body", 1, "company"]
    for rows in ([{"site": "", "company": A}], [{"site": "x.fi"}], [],
                 [{"site": "dup.fi", "company": A}, {"site": "dup.fi", "company": B}],
                 [{"site": "tab\t.fi", "company": A}], {"items": "no"}):
        response = await put_sites(api, admin, rows)
        assert response.status == 422, (rows, await response.text())
        assert response.content_type == "application/problem+json"
    assert await db.fetchval("SELECT count(*) FROM web_sites") == 0


async def test_an_admin_of_one_company_cannot_assign_or_take_another_companys_site(
    api: Api, db: asyncpg.Connection
) -> None:
    group = await api.token("admin", all_companies=True, name="group-admin")
    local = await api.token("admin", [A], name="local-admin")
    assert (await put_sites(api, group, [{"site": "tornionenergia.fi", "company": B}])
            ).status == 200
    outside = await put_sites(api, local, [{"site": "new.fi", "company": B}])
    assert outside.status == 422
    assert (await outside.json())["errors"][0]["msg"] == f"unknown company code {B}"
    taken = await put_sites(api, local, [{"site": "tornionenergia.fi", "company": A}])
    assert taken.status == 422
    assert [tuple(r) for r in await db.fetch("SELECT site, c.code FROM web_sites s"
                                             " JOIN companies c ON c.id = s.company_id")] == [
        ("tornionenergia.fi", B)]


async def test_group_wide_token_lines_without_company_take_their_sites_company(
    api: Api, db: asyncpg.Connection
) -> None:
    admin = await api.token("admin", all_companies=True)
    await put_sites(api, admin, [{"site": "kemin-energia.fi", "company": A},
                                 {"site": "tornionenergia.fi", "company": B}])
    shipper = await api.token("ingest", [A, B], name="group-shipper")
    body = ndjson([
        event(session_id="kemi"),
        event(session_id="tornio", site="tornionenergia.fi"),
        event(session_id="named", site="tornionenergia.fi", company=A),
        event(session_id="stray", site="unknown.example"),
    ])
    report = await (await post(api, shipper, body)).json()
    assert report["accepted"] == 2
    # A named company does not override the registry (and the answer does not say whose).
    assert report["rejected"] == [
        {"line": 3, "error": "site 'tornionenergia.fi' is registered to another company than"
                             " the line names"},
        {"line": 4, "error": (
            "unknown site 'unknown.example': the site registry (/api/v1/sites) does not name"
            " its company and the line gives none")}]
    assert await stored_companies(db) == {"kemi": A, "tornio": B}


async def test_a_token_cannot_write_to_a_sites_company_it_does_not_cover(
    api: Api, db: asyncpg.Connection
) -> None:
    admin = await api.token("admin", all_companies=True)
    await put_sites(api, admin, [{"site": "raahenenergia.fi", "company": C}])
    shipper = await api.token("ingest", [A], name="kemi-shipper")
    report = await (await post(api, shipper, ndjson([
        event(session_id="raahe", site="raahenenergia.fi"),
        event(session_id="own-unregistered", site="kemin-energia.fi")]))).json()
    assert report["accepted"] == 1
    assert report["rejected"][0]["line"] == 1
    assert "raahenenergia.fi" in report["rejected"][0]["error"]
    assert "does not cover" in report["rejected"][0]["error"]
    # A token of one company keeps writing its unregistered sites into that company.
    assert await stored_companies(db) == {"own-unregistered": A}


async def test_cli_sets_lists_and_removes_sites(
    settings: Settings, db: asyncpg.Connection, capsys: Any, monkeypatch: Any
) -> None:
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    assert await asyncio.to_thread(cli.main, ["site", "set", "kemin-energia.fi",
                                              "--company", A]) == 0
    assert await asyncio.to_thread(cli.main, ["site", "set", "www.tenergia.fi",
                                              "--company", "tenergia"]) == 0
    capsys.readouterr()
    assert await asyncio.to_thread(cli.main, ["site", "list"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"kemin-energia.fi\t{A}", "www.tenergia.fi\ttenergia"]
    assert await asyncio.to_thread(cli.main, ["site", "set", "x.fi", "--company", "nope"]) == 1
    assert "unknown company code nope" in capsys.readouterr().err
    assert await asyncio.to_thread(cli.main, ["site", "remove", "www.tenergia.fi"]) == 0
    assert capsys.readouterr().out.strip() == "www.tenergia.fi removed"
    assert [r["site"] for r in await db.fetch("SELECT site FROM web_sites")] == [
        "kemin-energia.fi"]
    assert await db.fetchval("SELECT count(*) FROM audit_events"
                             " WHERE action = 'site.change' AND actor = 'cli'") == 3


async def test_admin_web_page_adds_moves_and_removes_sites(
    api: Api, db: asyncpg.Connection
) -> None:
    await api.user("sanni", "admin", all_companies=True)
    await api.login("sanni")
    page = await api.client.get("/admin/sites")
    assert page.status == 200
    text = await page.text()
    nav = text.split("<nav")[1].split("</nav>")[0]
    assert 'href="/admin/sites"' in nav and "Verkkosivustot" in nav
    csrf = hidden_csrf(text)
    forged = await api.client.post("/admin/sites", allow_redirects=False, data={
        "csrf_token": "guess", "site": "kemin-energia.fi", "company": A})
    assert forged.status == 400
    bad = await api.client.post("/admin/sites", allow_redirects=False, data={
        "csrf_token": csrf, "site": "<b>x</b>.fi", "company": "no-such"})
    assert bad.status == 422
    bad_text = await bad.text()
    assert 'id="site-problems"' in bad_text and "unknown company code no-such" in bad_text
    assert "<b>x</b>" not in bad_text and "&lt;b&gt;x&lt;/b&gt;.fi" in bad_text
    made = await api.client.post("/admin/sites", allow_redirects=False, data={
        "csrf_token": csrf, "site": "kemin-energia.fi", "company": A})
    assert made.status == 303, await made.text()
    listed = await (await api.client.get(made.headers["Location"])).text()
    assert "Sivusto kemin-energia.fi tallennettiin." in listed
    assert 'data-site="kemin-energia.fi"' in listed
    await api.client.post("/admin/sites", data={
        "csrf_token": csrf, "site": "kemin-energia.fi", "company": C})
    assert await db.fetchval("SELECT c.code FROM web_sites s JOIN companies c"
                             " ON c.id = s.company_id") == C
    removed = await api.client.post("/admin/sites/remove", allow_redirects=False, data={
        "csrf_token": csrf, "site": "kemin-energia.fi"})
    assert removed.status == 303
    assert await db.fetchval("SELECT count(*) FROM web_sites") == 0
    assert await db.fetchval("SELECT count(*) FROM audit_events WHERE action = 'site.change'"
                             " AND actor = 'sanni'") == 3


async def test_a_role_without_the_site_registry_is_sent_home(api: Api) -> None:
    await api.user("outi", "customer_service", [A])
    await api.login("outi")
    response = await api.client.get("/admin/sites", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/"
    home = await (await api.client.get("/")).text()
    assert 'href="/admin/sites"' not in home


async def test_an_admin_of_one_company_lists_only_its_companys_sites(api: Api) -> None:
    group = await api.token("admin", all_companies=True, name="group-admin")
    local = await api.token("admin", [A], name="local-admin")
    assert (await put_sites(api, group, [{"site": "keminenergia.fi", "company": A},
                                         {"site": "tornionenergia.fi", "company": B}])
            ).status == 200
    listed = await api.client.get("/api/v1/sites", headers=bearer(local))
    assert [row["site"] for row in (await listed.json())["items"]] == ["keminenergia.fi"]
    everything = await api.client.get("/api/v1/sites", headers=bearer(group))
    assert {row["site"] for row in (await everything.json())["items"]} == {
        "keminenergia.fi", "tornionenergia.fi"}
