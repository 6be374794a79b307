"""Least privilege: tokens that cannot breed and that expire and die with their owner, a
company-scoped admin who grants no more than they have, an audit trail read under the
caller's scope, and reads of personal data that name whose data they returned."""

from __future__ import annotations

import asyncio
import getpass
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from service.settings import Settings
from storage.audit import MAX_IDS, id_summary, subjects_of
from tests.helpers import Api, bearer
from tests.service.data_subject_factory import customer, personal_id, recording_of
from tests.service.retention_factory import purge_env

OWN = "tenergia"
OTHER = "kemin-energia"
ROOT = Path(__file__).resolve().parents[2]


async def _session(api: Api, username: str, role: str, companies: list[str] | None = None,
                   *, all_companies: bool = False) -> dict[str, str]:
    await api.user(username, role, companies, all_companies=all_companies)
    return {"X-CSRF-Token": await api.login(username)}


# --- tokens --------------------------------------------------------------------------------


async def test_a_token_never_creates_tokens(api: Api, db: asyncpg.Connection) -> None:
    admin_token = await api.token("admin", all_companies=True, name="leaked-pbx")
    before = await db.fetchval("SELECT count(*) FROM api_tokens")
    for body in ({"name": "child"}, {"name": "child", "role": "ingest", "companies": [OWN]}):
        bred = await api.client.post("/api/v1/tokens", json=body, headers=bearer(admin_token))
        assert bred.status == 403
        assert bred.content_type == "application/problem+json"
        assert "never with a token" in (await bred.json())["detail"]
    assert await db.fetchval("SELECT count(*) FROM api_tokens") == before
    # A person signed in makes one, and it carries them as owner.
    person = await _session(api, "aino", "quality", [OWN])
    made = await api.client.post("/api/v1/tokens", json={"name": "laptop"}, headers=person)
    assert made.status == 201, await made.text()
    child = await made.json()
    with_child = await api.client.post("/api/v1/tokens", json={"name": "grandchild"},
                                       headers=bearer(child["token"]))
    assert with_child.status == 403


async def test_a_personal_token_has_its_owner_and_expires_in_90_days_at_most_two_years(
        api: Api) -> None:
    person = await _session(api, "aino", "quality", [OWN])
    made = await api.client.post("/api/v1/tokens", json={"name": "laptop"}, headers=person)
    assert made.status == 201
    body = await made.json()
    assert body["owner"] == "aino" and body["owner_kind"] == "user"
    assert body["companies"] == [OWN] and body["role"] == "quality"
    expires = datetime.fromisoformat(body["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=90))) < timedelta(minutes=5)
    too_long = (datetime.now(UTC) + timedelta(days=731)).isoformat()
    refused = await api.client.post("/api/v1/tokens", headers=person,
                                    json={"name": "forever", "expires_at": too_long})
    assert refused.status == 422
    assert (await refused.json())["errors"][0]["loc"] == ["body", "expires_at"]
    listed = await (await api.client.get("/api/v1/tokens", headers=person)).json()
    assert [(t["name"], t["owner"], t["expires_at"]) for t in listed["items"]] == [
        ("laptop", "aino", body["expires_at"])]


async def test_an_expired_token_is_refused(api: Api, db: asyncpg.Connection) -> None:
    person = await _session(api, "aino", "quality", [OWN])
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    body = await (await api.client.post("/api/v1/tokens", headers=person,
                                        json={"name": "short", "expires_at": soon})).json()
    assert (await api.client.get("/api/v1/me", headers=bearer(body["token"]))).status == 200
    await db.execute("UPDATE api_tokens SET expires_at = now() - interval '1 second'"
                     " WHERE id = $1", uuid.UUID(body["id"]))
    refused = await api.client.get("/api/v1/me", headers=bearer(body["token"]))
    assert refused.status == 401
    assert "expired" in (await refused.json())["detail"]


async def test_disabling_a_person_revokes_their_tokens_for_good(
        api: Api, db: asyncpg.Connection) -> None:
    person = await _session(api, "aino", "quality", [OWN])
    body = await (await api.client.post("/api/v1/tokens", json={"name": "laptop"},
                                        headers=person)).json()
    admin = await api.token("admin", all_companies=True, name="admin-script")
    assert (await api.client.get("/api/v1/me", headers=bearer(body["token"]))).status == 200
    disabled = await api.client.patch("/api/v1/users/aino", json={"disabled": True},
                                      headers=bearer(admin))
    assert disabled.status == 200
    assert await db.fetchval("SELECT revoked_at FROM api_tokens WHERE id = $1",
                             uuid.UUID(body["id"])) is not None
    assert (await api.client.get("/api/v1/me", headers=bearer(body["token"]))).status == 401
    enabled = await api.client.patch("/api/v1/users/aino", json={"disabled": False},
                                     headers=bearer(admin))
    assert enabled.status == 200
    assert (await api.client.get("/api/v1/me", headers=bearer(body["token"]))).status == 401
    listed = await (await api.client.get("/api/v1/tokens", headers=bearer(admin))).json()
    mine = next(t for t in listed["items"] if t["id"] == body["id"])
    assert mine["revoked_at"] is not None and mine["owner"] == "aino"


def _cli(settings: Settings, *args: str, stdin: str | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], cwd=ROOT, env=purge_env(settings),
        capture_output=True, text=True, timeout=120, check=False, input=stdin,
    )


async def test_cli_tokens_name_their_system_and_expire(
        api: Api, settings: Settings, db: asyncpg.Connection) -> None:
    made = await asyncio.to_thread(
        _cli, settings, "token", "create", "--name", "pbx-1", "--role", "ingest",
        "--company", OWN, "--owner", "elisa-pbx", "--expires-days", "30")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert (await api.client.get("/api/v1/me", headers=bearer(secret))).status == 200
    row = await db.fetchrow("SELECT * FROM api_tokens WHERE name = 'pbx-1'")
    assert row["owner_name"] == "elisa-pbx" and row["owner_user_id"] is None
    assert abs(row["expires_at"] - (datetime.now(UTC) + timedelta(days=30))) < timedelta(
        minutes=5)
    too_long = await asyncio.to_thread(
        _cli, settings, "token", "create", "--name", "pbx-2", "--role", "ingest",
        "--company", OWN, "--expires-days", "800")
    assert too_long.returncode != 0 and "--expires-days" in too_long.stderr
    listed = await asyncio.to_thread(_cli, settings, "token", "list")
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    assert header.split("\t") == ["id", "name", "role", "companies", "owner", "expires_at",
                                  "state"]
    fields = next(line.split("\t") for line in lines if "\tpbx-1\t" in line)
    assert fields[4] == "system:elisa-pbx"
    assert fields[5] == row["expires_at"].isoformat(timespec="seconds")
    assert fields[6] == "active"
    event = await db.fetchrow("SELECT * FROM audit_events WHERE action = 'token.create'")
    assert event["actor_kind"] == "cli" and json.loads(event["detail"])["owner"] == "elisa-pbx"


async def test_cli_changes_to_accounts_companies_and_tokens_are_audited_as_the_api_audits_them(
        settings: Settings, db: asyncpg.Connection) -> None:
    secret_words = "kuusi-hirvea-kissaa"
    steps: list[tuple[tuple[str, ...], str | None]] = [
        (("user", "add", "--username", "eve", "--role", "admin", "--all-companies",
          "--password-stdin"), f"{secret_words}-1\n"),
        (("user", "disable", "eve"), None),
        (("user", "enable", "eve"), None),
        (("user", "reset-password", "eve", "--password-stdin"), f"{secret_words}-2\n"),
        (("user", "add", "--username", "ville", "--role", "quality", "--company", OWN,
          "--password-stdin"), f"{secret_words}-3\n"),
        (("company", "add", "--code", "uusi-yhtio", "--name", "Uusi Yhtiö Oy"), None),
        (("company", "rename", "uusi-yhtio", "--name", "Uusi Yhtiö Oyj"), None),
        (("token", "create", "--name", "pbx-3", "--role", "ingest", "--company", OWN), None),
    ]
    for args, stdin in steps:
        done = await asyncio.to_thread(_cli, settings, *args, stdin=stdin)
        assert done.returncode == 0, (args, done.stderr)
    token = await db.fetchval("SELECT id FROM api_tokens WHERE name = 'pbx-3'")
    revoked = await asyncio.to_thread(_cli, settings, "token", "revoke", str(token))
    assert revoked.returncode == 0, revoked.stderr

    eve = await db.fetchval("SELECT id FROM users WHERE username = 'eve'")
    ville = await db.fetchval("SELECT id FROM users WHERE username = 'ville'")
    own = await db.fetchval("SELECT id FROM companies WHERE code = $1", OWN)
    new = await db.fetchval("SELECT id FROM companies WHERE code = 'uusi-yhtio'")
    events = await db.fetch(
        "SELECT actor, action, target_type, target_id, company_ids, detail FROM audit_events"
        " WHERE actor_kind = 'cli' ORDER BY seq")
    assert {e["actor"] for e in events} == {f"cli:{getpass.getuser()}"}
    assert [(e["action"], e["target_type"], e["target_id"], e["company_ids"],
             json.loads(e["detail"])) for e in events[:-2]] == [
        ("user.create", "user", str(eve), None, {"username": "eve", "role": "admin"}),
        ("user.change", "user", str(eve), None, {"disabled": True}),
        ("user.change", "user", str(eve), None, {"disabled": False}),
        ("user.change", "user", str(eve), None, {"password": "reset"}),
        ("user.create", "user", str(ville), [own], {"username": "ville", "role": "quality"}),
        ("company.create", "company", "uusi-yhtio", [new], {}),
        ("company.change", "company", "uusi-yhtio", [new], {"name": "Uusi Yhtiö Oyj"}),
    ]
    assert [(e["action"], e["target_id"], e["company_ids"]) for e in events[-2:]] == [
        ("token.create", str(token), [own]), ("token.revoke", str(token), [own])]
    # Neither a password nor a token secret is in any event.
    assert not any(secret_words in e["detail"] for e in events)


async def test_cli_user_add_refuses_the_usernames_the_api_refuses(
        api: Api, settings: Settings, db: asyncpg.Connection) -> None:
    admin = await api.token("admin", all_companies=True, name="admin-script")
    password = "kuusi-hirvea-kissaa\n"
    for username in ("eve smith", "e" * 201, "eve/../admin", "131052-308T"):
        by_api = await api.client.post("/api/v1/users", headers=bearer(admin), json={
            "username": username, "password": password.strip(), "role": "quality",
            "companies": [OWN]})
        assert by_api.status == 422
        by_cli = await asyncio.to_thread(
            _cli, settings, "user", "add", "--username", username, "--role", "quality",
            "--company", OWN, "--password-stdin", stdin=password)
        assert by_cli.returncode != 0
        message = by_cli.stderr.strip()
        assert message.startswith("tallenne: error: username: ") and "\n" not in message
        assert "131052" not in message and "131052" not in await by_api.text()
    assert await db.fetchval("SELECT count(*) FROM users") == 0
    assert await db.fetchval("SELECT count(*) FROM audit_events"
                             " WHERE action = 'user.create'") == 0
    allowed = await asyncio.to_thread(
        _cli, settings, "user", "add", "--username", "eve.smith@tenergia", "--role",
        "quality", "--company", OWN, "--password-stdin", stdin=password)
    assert allowed.returncode == 0, allowed.stderr
    assert await db.fetchval("SELECT username FROM users") == "eve.smith@tenergia"


async def test_a_system_token_and_a_person_never_share_the_name_they_act_under(
        api: Api, settings: Settings, db: asyncpg.Connection) -> None:
    # A system token acts under its own name; private notes and evaluations are keyed on it.
    await api.user("alice", "quality", [OWN])
    named_after_alice = await asyncio.to_thread(
        _cli, settings, "token", "create", "--name", "alice", "--role", "quality",
        "--company", OWN)
    assert named_after_alice.returncode != 0
    assert "username" in named_after_alice.stderr and not named_after_alice.stdout
    assert await db.fetchval("SELECT count(*) FROM api_tokens WHERE name = 'alice'") == 0

    bot = await asyncio.to_thread(_cli, settings, "token", "create", "--name", "qa-bot",
                                  "--role", "quality", "--company", OWN)
    assert bot.returncode == 0, bot.stderr
    admin = await api.token("admin", all_companies=True, name="admin-script")
    by_api = await api.client.post("/api/v1/users", headers=bearer(admin), json={
        "username": "qa-bot", "password": "kuusi-hirvea-kissaa", "role": "quality",
        "companies": [OWN]})
    assert by_api.status == 409
    assert "system token" in (await by_api.json())["detail"]
    by_cli = await asyncio.to_thread(
        _cli, settings, "user", "add", "--username", "qa-bot", "--role", "quality",
        "--company", OWN, "--password-stdin", stdin="kuusi-hirvea-kissaa\n")
    assert by_cli.returncode != 0 and "system token" in by_cli.stderr
    assert await db.fetchval("SELECT count(*) FROM users WHERE username = 'qa-bot'") == 0
    # A personal token's name is only a label: naming one after a colleague stays allowed.
    person = await _session(api, "ville", "quality", [OWN])
    labelled = await api.client.post("/api/v1/tokens", json={"name": "alice"}, headers=person)
    assert labelled.status == 201


# --- a company-scoped admin grants no more than they have ------------------------------------


async def test_a_company_admin_grants_no_more_than_they_have(api: Api) -> None:
    admin = await _session(api, "own-admin", "admin", [OWN])
    await api.user("group-admin", "admin", all_companies=True)
    await api.user("other-person", "quality", [OTHER])

    def user(**changes: Any) -> dict[str, Any]:
        return {"username": "new-person", "password": "correct-horse-battery-staple",
                "role": "quality", "companies": [OWN], **changes}

    every = await api.client.post("/api/v1/users", headers=admin,
                                  json=user(role="admin", companies=[], all_companies=True))
    assert every.status == 403
    elsewhere = await api.client.post("/api/v1/users", headers=admin,
                                      json=user(companies=[OTHER]))
    assert elsewhere.status == 403
    own = await api.client.post("/api/v1/users", headers=admin, json=user())
    assert own.status == 201, await own.text()

    reset = {"password": "another-correct-horse-battery"}
    group = await api.client.patch("/api/v1/users/group-admin", headers=admin, json=reset)
    other = await api.client.patch("/api/v1/users/other-person", headers=admin, json=reset)
    missing = await api.client.patch("/api/v1/users/no-such-person", headers=admin, json=reset)
    assert group.status == other.status == missing.status == 404
    assert (await group.json())["detail"] == (await missing.json())["detail"]
    await api.login("group-admin")  # the group admin's password is unchanged
    admin = {"X-CSRF-Token": await api.login("own-admin")}

    listed = await (await api.client.get("/api/v1/users", headers=admin)).json()
    assert {u["username"] for u in listed["items"]} == {"own-admin", "new-person"}

    wide = await api.client.post("/api/v1/tokens", headers=admin,
                                 json={"name": "t", "role": "ingest", "all_companies": True})
    assert wide.status == 403
    other_company = await api.client.post("/api/v1/tokens", headers=admin,
                                          json={"name": "t", "role": "ingest",
                                                "companies": [OTHER]})
    assert other_company.status == 403
    machine = await api.client.post("/api/v1/tokens", headers=admin,
                                    json={"name": "pbx", "role": "ingest", "companies": [OWN]})
    assert machine.status == 201
    assert (await machine.json())["owner"] == "own-admin"

    run = await api.client.post("/api/v1/purges", json={"dry_run": False}, headers=admin)
    assert run.status == 403
    preview = await api.client.post("/api/v1/purges", json={"dry_run": True}, headers=admin)
    assert preview.status == 200
    assert {b["company"] for b in (await preview.json())["expired"]} <= {OWN}
    added = await api.client.post("/api/v1/companies", headers=admin,
                                  json={"code": "iin-energia", "name": "Iin Energia Oy"})
    assert added.status == 403


async def test_a_company_admin_changes_only_their_companys_policies_and_holds(
        api: Api, db: asyncpg.Connection) -> None:
    group = await api.token("admin", all_companies=True, name="group-admin")
    await customer(api, [OWN], number="7001")
    await customer(api, [OTHER], number="7002", personal_id=personal_id("020290", individual=234))
    own_recording, _ = await recording_of(api, OWN, "70010", seconds=1.0)
    other_recording, _ = await recording_of(api, OTHER, "70020", seconds=1.0)
    for case, recordings in (("CASE-OTHER", [other_recording]),
                             ("CASE-BOTH", [own_recording, other_recording])):
        made = await api.client.post("/api/v1/legal-holds", headers=bearer(group), json={
            "case": case, "reason": "riita-asia", "recording_ids": recordings})
        assert made.status == 201
    admin = await api.token("admin", [OWN], name="own-admin")

    policy = {"kind": "recording", "purpose": "quality", "keep_days": 30}
    theirs = await api.client.put("/api/v1/retention-policies", headers=bearer(admin),
                                  json=[{"company": OTHER, **policy}])
    unknown = await api.client.put("/api/v1/retention-policies", headers=bearer(admin),
                                   json=[{"company": "no-such-company", **policy}])
    assert theirs.status == unknown.status == 422
    assert (await theirs.json())["detail"] == (await unknown.json())["detail"]
    assert await db.fetchval(
        "SELECT p.keep_days FROM retention_policies p JOIN companies c ON c.id = p.company_id"
        " WHERE c.code = $1 AND p.kind = 'recording' AND p.purpose = 'quality'", OTHER) == 183
    ours = await api.client.put("/api/v1/retention-policies", headers=bearer(admin),
                                json=[{"company": OWN, **policy}])
    assert ours.status == 200, await ours.text()
    listed = await ours.json()
    assert {p["company"] for p in listed["items"]} == {OWN}

    for case in ("CASE-OTHER", "CASE-BOTH"):
        released = await api.client.delete(f"/api/v1/legal-holds/{case}",
                                           headers=bearer(admin))
        assert released.status == 404
    assert await db.fetchval("SELECT count(*) FROM legal_holds WHERE released_at IS NULL") == 2
    holds = await (await api.client.get("/api/v1/legal-holds", headers=bearer(admin))).json()
    assert holds["items"] == []
    hidden = await api.client.post("/api/v1/legal-holds", headers=bearer(admin), json={
        "case": "CASE-OWN", "reason": "riita-asia", "recording_ids": [other_recording]})
    assert hidden.status == 422
    assert "no such recording" in (await hidden.json())["errors"][0]["msg"]
    placed = await api.client.post("/api/v1/legal-holds", headers=bearer(admin), json={
        "case": "CASE-OWN", "reason": "riita-asia", "recording_ids": [own_recording]})
    assert placed.status == 201
    assert (await api.client.delete("/api/v1/legal-holds/CASE-OWN",
                                    headers=bearer(admin))).status == 200


# --- the audit trail under the caller's scope, and whose data a read returned --------------


async def _replay(api: Api, token: str, recording_id: str, reason: str = "laatu") -> None:
    response = await api.client.get(f"/api/v1/recordings/{recording_id}/audio",
                                     params={"reason": reason}, headers=bearer(token))
    assert response.status == 200, await response.text()
    await response.read()


async def _audit(api: Api, token: str, **params: str) -> list[dict[str, Any]]:
    response = await api.client.get("/api/v1/audit", params=params, headers=bearer(token))
    assert response.status == 200, await response.text()
    return list((await response.json())["items"])


async def test_another_companys_dpo_and_admin_do_not_see_its_replays(api: Api) -> None:
    await customer(api, [OWN], number="7001")
    recording_id, _ = await recording_of(api, OWN, "70010", seconds=1.0)
    await _replay(api, await api.token("quality", [OWN], name="listener"), recording_id)
    await _replay(api, await api.token("dpo", all_companies=True, name="group-dpo"),
                  recording_id, reason="tarkastus")
    for role in ("dpo", "admin"):
        outsider = await api.token(role, [OTHER], name=f"other-{role}")
        seen = await _audit(api, outsider)
        assert all(e["target_id"] != recording_id for e in seen)
        assert recording_id not in json.dumps(seen)
        assert await _audit(api, outsider, target=recording_id) == []
    insider = await api.token("dpo", [OWN], name="own-dpo")
    replays = await _audit(api, insider, action="recording.replay")
    assert sorted(e["reason"] for e in replays) == ["laatu", "tarkastus"]
    own_id = replays[0]["company_ids"]
    assert own_id is not None and len(own_id) == 1


async def test_each_read_of_personal_data_names_whose_data_it_returned(
        api: Api, db: asyncpg.Connection) -> None:
    customer_id = await customer(api, [OWN], number="7001")
    recording_id, _ = await recording_of(api, OWN, "70010", seconds=1.0)
    web = await api.token("ingest", [OWN], name="web")
    line = {"ts": "2026-11-05T10:00:00+02:00", "site": "tenergia.fi", "event": "page_view",
            "url": "https://tenergia.fi/oma", "session_id": "s-1", "company": OWN,
            "customer_number": "70010"}
    pushed = await api.client.post("/api/v1/web-events", data=json.dumps(line) + "\n",
                                   headers={**bearer(web),
                                            "Content-Type": "application/x-ndjson"})
    assert (await pushed.json())["accepted"] == 1
    dpo = await api.token("dpo", [OWN], name="own-dpo")
    reads = [
        ("customer.search", api.client.post("/api/v1/customers/lookup", headers=bearer(dpo),
                                            json={"personal_id": personal_id()})),
        ("recording.search", api.client.get("/api/v1/recordings", headers=bearer(dpo))),
        ("web_event.read", api.client.get("/api/v1/web-events", headers=bearer(dpo))),
        ("access_report.read", api.client.get(
            f"/api/v1/customers/{customer_id}/access-report", headers=bearer(dpo),
            params={"verified_by": "in_person"})),
    ]
    for action, call in reads:
        response = await call
        assert response.status == 200, (action, await response.text())
        event = await db.fetchrow("SELECT * FROM audit_events WHERE action = $1"
                                  " ORDER BY seq DESC LIMIT 1", action)
        subjects = {str(s) for s in event["subject_ids"] or []}
        detail = json.loads(event["detail"])
        assert customer_id in subjects, action
        assert detail["customers"] == [customer_id], (action, detail)
        if action in ("recording.search", "access_report.read"):
            assert recording_id in subjects and detail["recordings"] == [recording_id], action


async def test_who_has_seen_this_customer_finds_the_lookup_and_the_replay(api: Api) -> None:
    customer_id = await customer(api, [OWN], number="7001")
    stranger = await customer(api, [OWN], number="7002",
                              personal_id=personal_id("020290", individual=234))
    recording_id, _ = await recording_of(api, OWN, "70010", seconds=1.0)
    service = await api.token("customer_service", [OWN], name="asiakaspalvelu")
    looked = await api.client.post("/api/v1/customers/lookup", headers=bearer(service),
                                   json={"personal_id": personal_id()})
    assert looked.status == 200
    assert (await api.client.get(f"/api/v1/customers/{stranger}",
                                 headers=bearer(service))).status == 200
    await _replay(api, await api.token("quality", [OWN], name="listener"), recording_id,
                  reason="laadunvarmistus")

    dpo = await api.token("dpo", [OWN], name="own-dpo")
    seen = await _audit(api, dpo, subject=customer_id)
    by_action = {e["action"]: e for e in seen}
    assert {"customer.search", "recording.replay"} <= set(by_action)
    assert by_action["customer.search"]["actor"] == "asiakaspalvelu"
    assert by_action["recording.replay"]["actor"] == "listener"
    assert by_action["recording.replay"]["reason"] == "laadunvarmistus"
    assert by_action["recording.replay"]["target_id"] == recording_id
    assert all(e["target_id"] != stranger for e in seen)
    # Nobody of another company learns who read this customer.
    outsider = await api.token("dpo", [OTHER], name="other-dpo")
    assert await _audit(api, outsider, subject=customer_id) == []
    # The query itself is on record.
    asked = await _audit(api, dpo, action="audit.read")
    assert any(e["detail"].get("subject") == customer_id for e in asked)


def test_past_a_thousand_ids_an_event_keeps_a_digest_and_a_count() -> None:
    few = [uuid.uuid4() for _ in range(3)]
    assert id_summary(few) == sorted(str(i) for i in few)
    many = [uuid.uuid4() for _ in range(MAX_IDS + 1)]
    summary = id_summary(many)
    assert isinstance(summary, dict) and summary["count"] == MAX_IDS + 1
    assert summary == id_summary(list(reversed(many)))  # the digest ignores order
    assert len(str(summary["sha256"])) == 64
    assert subjects_of(few, many) == sorted(few)
