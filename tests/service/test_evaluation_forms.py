"""Evaluation forms: admins define them, evaluations must fit them, companies see their own,
changed criteria make a new version, and the web UI's admin and call pages use them."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import asyncpg

from service.cli import main as cli
from service.settings import Settings
from tests import audiogen
from tests.helpers import Api, bearer, settings_env
from tests.service.recording_factory import COMPANY, OTHER_COMPANY, metadata, upload

FORMS = "/api/v1/evaluation-forms"
XSS = '<script>alert("x")</script>'
SEEDED = {"greeting": 3, "identification": 4, "solution": 5, "courtesy": 2}


def a_form(name: str = "asiakaskokemus", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "title": "Asiakaskokemus",
        "description": "Miltä puhelu tuntui asiakkaasta.",
        "criteria": [
            {"key": "empathy", "label": "Empatia", "max_score": 10},
            {"key": "clarity", "label": "Selkeys", "max_score": 3},
        ],
    }
    body.update(overrides)
    return body


async def stored_call(api: Api, company: str = COMPANY) -> str:
    token = await api.token("ingest", [company], name=f"pbx-{company}")
    response = await upload(api.client, token, metadata(company=company),
                            audiogen.make_audio("wav_mulaw", 1.0))
    assert response.status == 201, await response.text()
    return str((await response.json())["id"])


async def evaluate(api: Api, token: str, recording_id: str, form: str,
                   scores: dict[str, Any], comment: str | None = None) -> Any:
    return await api.client.post(f"/api/v1/recordings/{recording_id}/evaluations",
                                 json={"form": form, "scores": scores, "comment": comment},
                                 headers=bearer(token))


async def test_admin_defines_a_form_and_quality_scores_with_it(
    api: Api, db: asyncpg.Connection
) -> None:
    admin = await api.token("admin", all_companies=True, name="pääkäyttäjä")
    created = await api.client.post(FORMS, json=a_form(), headers=bearer(admin))
    assert created.status == 201, await created.text()
    assert created.headers["Location"] == f"{FORMS}/asiakaskokemus"
    form = await created.json()
    assert (form["version"], form["current_version"], form["company"], form["active"]) == (
        1, 1, None, True)
    assert [c["key"] for c in form["criteria"]] == ["empathy", "clarity"]
    again = await api.client.post(FORMS, json=a_form(title="Toinen"), headers=bearer(admin))
    assert again.status == 409
    assert again.content_type == "application/problem+json"

    recording_id = await stored_call(api)
    quality = await api.token("quality", [COMPANY], name="laura")
    listed = await (await api.client.get(FORMS, params={"active": "true"},
                                         headers=bearer(quality))).json()
    assert [f["name"] for f in listed["items"]] == ["asiakaskokemus", "perus"]
    scored = await evaluate(api, quality, recording_id, "asiakaskokemus",
                            {"empathy": 10, "clarity": 0}, "hyvä")
    assert scored.status == 201, await scored.text()
    assert (await scored.json())["form_version"] == 1
    row = await db.fetchrow("SELECT evaluator, form, form_version, scores FROM"
                            " recording_evaluations WHERE recording_id = $1", recording_id)
    assert (row["evaluator"], row["form"], row["form_version"]) == ("laura", "asiakaskokemus", 1)
    assert json.loads(row["scores"]) == {"empathy": 10, "clarity": 0}
    audited = await db.fetchrow("SELECT actor, company, detail FROM audit_events"
                                " WHERE action = 'evaluation_form.create'")
    assert audited["actor"] == "pääkäyttäjä" and audited["company"] is None
    assert json.loads(audited["detail"])["criteria"] == ["empathy", "clarity"]


async def test_the_seeded_form_is_the_one_the_call_page_offered(api: Api) -> None:
    quality = await api.token("quality", [COMPANY])
    response = await api.client.get(f"{FORMS}/perus", headers=bearer(quality))
    assert response.status == 200
    form = await response.json()
    assert [(c["key"], c["max_score"]) for c in form["criteria"]] == [
        ("greeting", 5), ("identification", 5), ("solution", 5), ("courtesy", 5)]
    recording_id = await stored_call(api)
    assert (await evaluate(api, quality, recording_id, "perus", SEEDED)).status == 201


async def test_scores_that_do_not_fit_the_form_are_refused_naming_the_criterion(
    api: Api, db: asyncpg.Connection
) -> None:
    recording_id = await stored_call(api)
    quality = await api.token("quality", [COMPANY])

    async def refused(form: str, scores: dict[str, Any]) -> dict[str, Any]:
        response = await evaluate(api, quality, recording_id, form, scores)
        assert response.status == 422, await response.text()
        assert response.content_type == "application/problem+json"
        body: dict[str, Any] = await response.json()
        return body

    over = await refused("perus", {**SEEDED, "greeting": 6})
    assert "'greeting'" in over["detail"] and "between 0 and 5" in over["detail"]
    assert over["errors"] == [{"loc": ["body", "scores", "greeting"],
                               "msg": "the score of 'greeting' must be between 0 and 5"}]
    negative = await refused("perus", {**SEEDED, "courtesy": -1})
    assert negative["errors"][0]["loc"] == ["body", "scores", "courtesy"]
    unknown = await refused("perus", {**SEEDED, "tone": 3})
    assert "'tone'" in unknown["detail"]
    assert unknown["errors"][0]["loc"] == ["body", "scores", "tone"]
    missing = dict(SEEDED)
    del missing["solution"]
    lacking = await refused("perus", missing)
    assert "'solution'" in lacking["detail"] and "not scored" in lacking["detail"]
    no_form = await refused("ei-ole", SEEDED)
    assert no_form["errors"][0]["loc"] == ["body", "form"]
    not_a_number = await refused("perus", {**SEEDED, "greeting": "5"})
    assert not_a_number["errors"][0]["loc"][:3] == ["body", "scores", "greeting"]
    # An identity code typed as the form or a criterion is refused without being repeated.
    for form, scores in (("131052-308t", SEEDED), ("131052-308T", SEEDED),
                         ("perus", {**SEEDED, "131052-308t": 1}),
                         ("perus", {**SEEDED, "131052-308T": 1})):
        body = await refused(form, scores)
        assert "131052" not in json.dumps(body), body
    assert await db.fetchval("SELECT count(*) FROM recording_evaluations") == 0


async def test_an_inactive_form_scores_nothing_new_but_stays_on_record(
    api: Api, db: asyncpg.Connection
) -> None:
    admin = await api.token("admin", all_companies=True)
    assert (await api.client.post(FORMS, json=a_form(), headers=bearer(admin))).status == 201
    recording_id = await stored_call(api)
    quality = await api.token("quality", [COMPANY], name="laura")
    scores = {"empathy": 7, "clarity": 2}
    assert (await evaluate(api, quality, recording_id, "asiakaskokemus", scores)).status == 201

    removed = await api.client.delete(f"{FORMS}/asiakaskokemus", headers=bearer(admin))
    assert removed.status == 200, await removed.text()
    assert (await removed.json())["active"] is False
    other = await api.token("quality", [COMPANY], name="otto")
    refused = await evaluate(api, other, recording_id, "asiakaskokemus", scores)
    assert refused.status == 422
    assert "no longer in use" in (await refused.json())["detail"]

    kept = await api.client.get(f"{FORMS}/asiakaskokemus", headers=bearer(quality))
    assert kept.status == 200 and (await kept.json())["active"] is False
    active = await (await api.client.get(FORMS, params={"active": "true"},
                                         headers=bearer(quality))).json()
    assert "asiakaskokemus" not in [f["name"] for f in active["items"]]
    evaluations = await (await api.client.get(
        f"/api/v1/recordings/{recording_id}/evaluations", headers=bearer(quality))).json()
    assert [(e["evaluator"], e["form"]) for e in evaluations["items"]] == [
        ("laura", "asiakaskokemus")]
    assert await db.fetchval("SELECT count(*) FROM audit_events"
                             " WHERE action = 'evaluation_form.deactivate'") == 1


async def test_only_admins_define_forms(api: Api) -> None:
    for role in ("quality", "customer_service", "dpo"):
        token = await api.token(role, [COMPANY], name=f"not-admin-{role}")
        assert (await api.client.get(FORMS, headers=bearer(token))).status == 200
        made = await api.client.post(FORMS, json=a_form(), headers=bearer(token))
        assert made.status == 403, role
        changed = await api.client.put(f"{FORMS}/perus", json=a_form(), headers=bearer(token))
        assert changed.status == 403, role
        gone = await api.client.delete(f"{FORMS}/perus", headers=bearer(token))
        assert gone.status == 403, role
    ingest = await api.token("ingest", [COMPANY])
    assert (await api.client.get(FORMS, headers=bearer(ingest))).status == 403
    admin = await api.token("admin", all_companies=True)
    perus = await (await api.client.get(f"{FORMS}/perus", headers=bearer(admin))).json()
    assert perus["active"] is True and perus["current_version"] == 1


async def test_a_company_form_looks_like_nothing_to_another_company(api: Api) -> None:
    admin = await api.token("admin", all_companies=True)
    theirs = a_form("kemin-oma", company=OTHER_COMPANY)
    assert (await api.client.post(FORMS, json=theirs, headers=bearer(admin))).status == 201
    ours = await stored_call(api)
    quality = await api.token("quality", [COMPANY])

    hidden = await api.client.get(f"{FORMS}/kemin-oma", headers=bearer(quality))
    missing = await api.client.get(f"{FORMS}/ei-ole", headers=bearer(quality))
    assert hidden.status == missing.status == 404
    assert (await hidden.json())["detail"] == (await missing.json())["detail"]
    listed = await (await api.client.get(FORMS, headers=bearer(quality))).json()
    assert "kemin-oma" not in [f["name"] for f in listed["items"]]
    scores = {"empathy": 1, "clarity": 1}
    refused = await (await evaluate(api, quality, ours, "kemin-oma", scores)).json()
    unknown = await (await evaluate(api, quality, ours, "ei-ole", scores)).json()
    assert refused["detail"] == unknown["detail"].replace("ei-ole", "kemin-oma")

    kemi = await api.token("quality", [OTHER_COMPANY], name="kemi")
    seen = await (await api.client.get(FORMS, params={"company": OTHER_COMPANY},
                                       headers=bearer(kemi))).json()
    assert [f["name"] for f in seen["items"]] == ["kemin-oma", "perus"]
    assert (await evaluate(api, kemi, await stored_call(api, OTHER_COMPANY), "kemin-oma",
                           scores)).status == 201
    # Someone of both companies still cannot score one company's call on the other's form.
    both = await api.token("quality", [COMPANY, OTHER_COMPANY], name="both")
    crossed = await evaluate(api, both, ours, "kemin-oma", scores)
    assert crossed.status == 422
    assert "not for this company" in (await crossed.json())["detail"]


async def test_an_admin_of_one_company_defines_only_that_companys_forms(api: Api) -> None:
    admin = await api.token("admin", [COMPANY], name="oulu-admin")
    group_wide = await api.client.post(FORMS, json=a_form(), headers=bearer(admin))
    assert group_wide.status == 403
    # The seeded group-wide form is visible to them but theirs neither to change nor to retire.
    changed = await api.client.put(f"{FORMS}/perus", headers=bearer(admin), json={
        "title": "Oma", "criteria": [{"key": "a", "label": "A", "max_score": 5}]})
    assert changed.status == 403, await changed.text()
    retired = await api.client.delete(f"{FORMS}/perus", headers=bearer(admin))
    assert retired.status == 403, await retired.text()
    assert (await api.client.put(f"{FORMS}/ei-ole", headers=bearer(admin), json={
        "title": "X", "criteria": [{"key": "a", "label": "A", "max_score": 5}]})).status == 404
    seeded = await (await api.client.get(f"{FORMS}/perus", headers=bearer(admin))).json()
    assert seeded["active"] and seeded["title"] != "Oma"
    other = await api.client.post(FORMS, json=a_form(company=OTHER_COMPANY),
                                  headers=bearer(admin))
    assert other.status == 422
    assert (await other.json())["errors"][0]["loc"] == ["body", "company"]
    own = await api.client.post(FORMS, json=a_form(company=COMPANY), headers=bearer(admin))
    assert own.status == 201
    assert (await own.json())["company"] == COMPANY
    assert (await api.client.delete(f"{FORMS}/perus", headers=bearer(admin))).status == 403


async def test_changed_criteria_make_a_new_version_and_old_evaluations_keep_theirs(
    api: Api, db: asyncpg.Connection
) -> None:
    admin = await api.token("admin", all_companies=True)
    assert (await api.client.post(FORMS, json=a_form(), headers=bearer(admin))).status == 201
    recording_id = await stored_call(api)
    laura = await api.token("quality", [COMPANY], name="laura")
    otto = await api.token("quality", [COMPANY], name="otto")
    assert (await evaluate(api, laura, recording_id, "asiakaskokemus",
                           {"empathy": 9, "clarity": 3})).status == 201

    changed = a_form(criteria=[{"key": "empathy", "label": "Empatia", "max_score": 5},
                               {"key": "pace", "label": "Tahti", "max_score": 3}])
    del changed["name"]
    put = await api.client.put(f"{FORMS}/asiakaskokemus", json=changed, headers=bearer(admin))
    assert put.status == 200, await put.text()
    assert (await put.json())["current_version"] == 2

    old = await api.client.get(f"{FORMS}/asiakaskokemus", params={"version": "1"},
                               headers=bearer(laura))
    assert [c["key"] for c in (await old.json())["criteria"]] == ["empathy", "clarity"]
    assert (await old.json())["version"] == 1
    assert await db.fetchval("SELECT form_version FROM recording_evaluations") == 1
    # New evaluations are held against version 2.
    stale = await evaluate(api, otto, recording_id, "asiakaskokemus",
                           {"empathy": 9, "clarity": 3})
    assert stale.status == 422
    assert {e["loc"][-1] for e in (await stale.json())["errors"]} == {"empathy", "pace",
                                                                       "clarity"}
    fresh = await evaluate(api, otto, recording_id, "asiakaskokemus", {"empathy": 5, "pace": 0})
    assert fresh.status == 201 and (await fresh.json())["form_version"] == 2

    # A new title alone is no new version; scoring again moves laura's evaluation to it.
    retitled = {**changed, "title": "Asiakaskokemus 2026"}
    again = await (await api.client.put(f"{FORMS}/asiakaskokemus", json=retitled,
                                        headers=bearer(admin))).json()
    assert (again["title"], again["current_version"]) == ("Asiakaskokemus 2026", 2)
    rescored = await evaluate(api, laura, recording_id, "asiakaskokemus",
                              {"empathy": 4, "pace": 3})
    assert rescored.status == 200 and (await rescored.json())["form_version"] == 2
    assert await db.fetchval("SELECT count(*) FROM evaluation_form_versions"
                             " WHERE form = 'asiakaskokemus'") == 2
    details = [json.loads(r["detail"]) for r in await db.fetch(
        "SELECT detail FROM audit_events WHERE action = 'evaluation_form.update' ORDER BY seq")]
    assert [d["new_version"] for d in details] == [True, False]


async def test_criteria_are_checked_when_a_form_is_defined(api: Api) -> None:
    admin = await api.token("admin", all_companies=True)

    async def problem(**overrides: Any) -> list[list[Any]]:
        response = await api.client.post(FORMS, json=a_form(**overrides), headers=bearer(admin))
        assert response.status == 422, await response.text()
        return [e["loc"] for e in (await response.json())["errors"]]

    twice = [{"key": "a", "label": "A", "max_score": 5}, {"key": "a", "label": "B",
                                                          "max_score": 5}]
    assert await problem(criteria=twice) == [["body", "criteria"]]
    assert await problem(criteria=[]) == [["body", "criteria"]]
    many = [{"key": f"k{i}", "label": "x", "max_score": 1} for i in range(51)]
    assert await problem(criteria=many) == [["body", "criteria"]]
    assert await problem(criteria=[{"key": "a", "label": "", "max_score": 5}]) == [
        ["body", "criteria", 0, "label"]]
    assert await problem(criteria=[{"key": "a", "label": "x" * 201, "max_score": 5}]) == [
        ["body", "criteria", 0, "label"]]
    assert await problem(criteria=[{"key": "a", "label": "A", "max_score": 101}]) == [
        ["body", "criteria", 0, "max_score"]]
    assert await problem(criteria=[{"key": "a", "label": "A", "max_score": 0}]) == [
        ["body", "criteria", 0, "max_score"]]
    assert await problem(name="Iso Nimi") == [["body", "name"]]
    assert await problem(name="131052-308t") == [["body", "name"]]
    assert await problem(criteria=[{"key": "131052-308t", "label": "A", "max_score": 5}]) == [
        ["body", "criteria", 0, "key"]]


# --- web UI --------------------------------------------------------------------------------


def hidden_csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "no CSRF field in the page"
    return found.group(1)


async def test_admin_page_creates_a_form_that_the_call_page_offers_as_text(
    api: Api, db: asyncpg.Connection
) -> None:
    recording_id = await stored_call(api)
    await api.user("paula", "admin", all_companies=True)
    await api.login("paula")
    page = await api.client.get("/admin/evaluation-forms")
    assert page.status == 200
    text = await page.text()
    assert 'data-form="perus"' in text and "<script>" not in text.split("</head>")[1]
    nav = text.split('<nav')[1].split('</nav>')[0]
    assert 'href="/admin/evaluation-forms"' in nav and "Arviointilomakkeet" in nav
    csrf = hidden_csrf(text)
    fields = {"csrf_token": csrf, "name": "palvelu", "title": f"Palvelu {XSS}",
              "description": "", "company": "",
              "key-0": "tone", "label-0": XSS, "max-0": "4",
              "key-1": "", "label-1": "", "max-1": "",
              "key-2": "accuracy", "label-2": "Tarkkuus", "max-2": "20"}
    forged = await api.client.post("/admin/evaluation-forms",
                                   data={**fields, "csrf_token": "guess"},
                                   allow_redirects=False)
    assert forged.status == 400
    assert await db.fetchval("SELECT count(*) FROM evaluation_forms") == 1
    bad = await api.client.post("/admin/evaluation-forms", data={**fields, "max-0": "0"},
                                allow_redirects=False)
    assert bad.status == 422
    bad_page = await bad.text()
    assert 'id="form-problems"' in bad_page and "Kohta 1" in bad_page
    assert 'value="accuracy"' in bad_page  # what was typed is kept
    made = await api.client.post("/admin/evaluation-forms", data=fields, allow_redirects=False)
    assert made.status == 303, await made.text()
    assert made.headers["Location"] == "/admin/evaluation-forms?done=created&form=palvelu"
    listed = await (await api.client.get(made.headers["Location"])).text()
    assert "Lomake palvelu luotiin." in listed and 'data-form="palvelu"' in listed
    stored = await db.fetchrow("SELECT f.created_by, v.criteria FROM evaluation_forms f JOIN"
                               " evaluation_form_versions v ON v.form = f.name"
                               " WHERE f.name = 'palvelu'")
    assert stored["created_by"] == "paula"
    assert [c["key"] for c in json.loads(stored["criteria"])] == ["tone", "accuracy"]

    await api.user("laura", "quality", [COMPANY])
    await api.login("laura")
    call = await (await api.client.get(f"/recordings/{recording_id}")).text()
    assert XSS not in call
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in call
    assert '<select id="e-form" name="form">' in call
    assert '<option value="palvelu">Palvelu &lt;script&gt;' in call
    # 0..4 as radio buttons, 0..20 as a number field, every input with its label
    block = call.split('data-form="palvelu"')[1].split('data-form="perus"')[0]
    assert block.count('type="radio"') == 5
    assert 'type="number"' in block and 'max="20"' in block
    for input_id in re.findall(r'<input type="(?:radio|number)" id="([^"]+)"', call):
        assert f'<label for="{input_id}">' in call, input_id
    assert 'href="/admin/evaluation-forms"' not in call  # not for the quality team

    await api.login("paula")
    csrf = hidden_csrf(await (await api.client.get("/admin/evaluation-forms")).text())
    off = await api.client.post("/admin/evaluation-forms/palvelu/deactivate",
                                data={"csrf_token": csrf}, allow_redirects=False)
    assert off.status == 303
    assert await db.fetchval("SELECT active FROM evaluation_forms WHERE name = 'palvelu'") is False
    await api.login("laura")
    call = await (await api.client.get(f"/recordings/{recording_id}")).text()
    assert 'data-form="palvelu"' not in call
    assert '<input id="e-form" name="form" type="hidden" value="perus">' in call


async def test_admin_page_is_for_admins_only(api: Api) -> None:
    await api.user("laura", "quality", [COMPANY])
    csrf = await api.login("laura")
    page = await api.client.get("/admin/evaluation-forms", allow_redirects=False)
    assert page.status == 303 and page.headers["Location"] == "/"
    posted = await api.client.post("/admin/evaluation-forms/perus/deactivate",
                                   data={"csrf_token": csrf}, allow_redirects=False)
    assert posted.status == 303 and posted.headers["Location"] == "/"
    api.client.session.cookie_jar.clear()
    stranger = await api.client.post("/admin/evaluation-forms/perus/deactivate",
                                     data={"csrf_token": csrf}, allow_redirects=False)
    assert stranger.status == 303


async def test_call_page_lists_evaluations_with_the_labels_they_were_scored_on(
    api: Api, db: asyncpg.Connection
) -> None:
    recording_id = await stored_call(api)
    await api.user("laura", "quality", [COMPANY])
    await api.login("laura")
    quality = await api.token("quality", [COMPANY], name="otto")
    assert (await evaluate(api, quality, recording_id, "perus", SEEDED, XSS)).status == 201
    # An evaluation stored before forms existed keeps its free-form name and criteria.
    await db.execute(
        "INSERT INTO recording_evaluations (recording_id, company_id, evaluator, form, scores)"
        " SELECT id, company_id, 'vanha', $2, '{\"tone\": 4}' FROM recordings WHERE id = $1",
        recording_id, XSS)
    page = await (await api.client.get(f"/recordings/{recording_id}")).text()
    assert XSS not in page
    assert "Tervehdys: 3/5" in page and "Perusarviointi" in page and "(versio 1)" in page
    assert "tone: 4" in page
    assert page.count("&lt;script&gt;") >= 2  # the comment and the old form's name


async def test_cli_lists_and_adds_forms(settings: Settings, db: asyncpg.Connection,
                                        tmp_path: Path, capsys: Any,
                                        monkeypatch: Any) -> None:
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    file = tmp_path / "form.json"
    file.write_text(json.dumps(a_form("cli-lomake", company=COMPANY)), encoding="utf-8")
    assert await asyncio.to_thread(cli.main, ["forms", "add", str(file)]) == 0
    added = json.loads(capsys.readouterr().out)
    assert (added["name"], added["company"], added["created_by"]) == (
        "cli-lomake", COMPANY, "cli")
    assert await asyncio.to_thread(cli.main, ["forms", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"cli-lomake\tv1\tactive\t{COMPANY}\tAsiakaskokemus",
                     "perus\tv1\tactive\t-\tPerusarviointi"]
    file.write_text(json.dumps(a_form("huono", criteria=[])), encoding="utf-8")
    assert await asyncio.to_thread(cli.main, ["forms", "add", str(file)]) == 1
    assert "criteria" in capsys.readouterr().err
    assert await db.fetchval("SELECT count(*) FROM audit_events"
                             " WHERE action = 'evaluation_form.create' AND actor = 'cli'") == 1


async def test_a_name_no_form_could_have_is_not_found(api: Api) -> None:
    admin = await api.token("admin", all_companies=True)
    for name in ("Perus", "%C3%A4"):
        for method in ("GET", "DELETE"):
            response = await api.client.request(method, f"{FORMS}/{name}", headers=bearer(admin))
            assert response.status == 404, (method, name)
    # A NUL anywhere in a URL is refused before routing, for every endpoint alike.
    nul = await api.client.get(f"{FORMS}/a%00b", headers=bearer(admin))
    assert nul.status == 422
    unknown = await api.client.get(FORMS, params={"company": "\x00"}, headers=bearer(admin))
    assert unknown.status == 422
