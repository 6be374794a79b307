"""Scope on the target: every endpoint that acts on one object × every role × the object in
the caller's own company, in another company, or group-wide × a company-scoped and an
all-companies caller.

2xx only where the policy table allows the role and the object lies in the caller's scope;
a role lacking the action gets 403; an object outside the scope answers exactly as a
missing one (or 403 for a group-wide act); and no answer to a company-scoped caller carries
an id of the other company's objects.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from aiohttp import ClientResponse

from service.policy import ROLES, Role, allowed
from tests.helpers import Api, bearer
from tests.service.data_subject_factory import customer, personal_id, recording_of

OWN = "tenergia"
OTHER = "kemin-energia"
PLACES = ("own", "other", "group")
Caller = tuple[Role, bool]  # role, all companies


@dataclass
class World:
    """Objects of both companies and group-wide ones, made by an all-companies admin."""

    api: Api
    db: asyncpg.Connection
    admin: str
    ids: dict[str, dict[str, str]] = field(default_factory=dict)
    other_ids: set[str] = field(default_factory=set)
    cases: int = 0

    def of(self, kind: str, place: str) -> str | None:
        return self.ids.get(kind, {}).get(place)

    async def recording(self, place: str) -> str:
        """A fresh call of the place's customer (erasing one uses it up)."""
        company, number = {"own": (OWN, "70010"), "other": (OTHER, "70020")}[place]
        made, _ = await recording_of(self.api, company, number, seconds=1.0)
        if place == "other":
            self.other_ids.add(made)
        return made

    async def case(self, place: str) -> str:
        """A fresh legal-hold case over the place's recordings (releasing one uses it up)."""
        self.cases += 1
        name = f"CASE-{place}-{self.cases}"
        recordings = {"own": [self.ids["recording"]["own"]],
                      "other": [self.ids["recording"]["other"]],
                      "group": [self.ids["recording"]["own"], self.ids["recording"]["other"]],
                      }[place]
        made = await self.api.client.post(
            "/api/v1/legal-holds", headers=bearer(self.admin),
            json={"case": name, "reason": "matrix", "recording_ids": recordings})
        assert made.status == 201, await made.text()
        if place == "other":
            self.other_ids.add(name)
        return name


async def build_world(api: Api, db: asyncpg.Connection) -> World:
    admin = await api.token("admin", all_companies=True, name="world-admin")
    world = World(api, db, admin)
    ids = world.ids
    own_customer = await customer(api, [OWN], number="7001",
                                  personal_id=personal_id("010190", individual=123))
    other_customer = await customer(api, [OTHER], number="7002",
                                    personal_id=personal_id("020290", individual=234))
    shared_customer = await customer(api, [OWN, OTHER], number="7003",
                                     personal_id=personal_id("030390", individual=345))
    ids["customer"] = {"own": own_customer, "other": other_customer, "group": shared_customer}
    own_recording, _ = await recording_of(api, OWN, "70010", seconds=1.0)
    other_recording, _ = await recording_of(api, OTHER, "70020", seconds=1.0)
    ids["recording"] = {"own": own_recording, "other": other_recording}

    await api.user("own-person", "quality", [OWN])
    await api.user("other-person", "quality", [OTHER])
    await api.user("group-person", "dpo", all_companies=True)
    ids["user"] = {"own": "own-person", "other": "other-person", "group": "group-person"}
    for place, companies, every in (("own", [OWN], False), ("other", [OTHER], False),
                                    ("group", [], True)):
        await api.token("ingest", companies, all_companies=every, name=f"{place}-pbx")
    ids["token"] = {r["name"].removesuffix("-pbx"): str(r["id"]) for r in await db.fetch(
        "SELECT id, name FROM api_tokens WHERE name LIKE '%-pbx'")}

    for place, company in (("own", OWN), ("other", OTHER)):
        made = await api.client.post("/api/v1/evaluation-forms", headers=bearer(admin), json={
            "name": f"{place}-form", "title": "Lomake", "company": company,
            "criteria": [{"key": "greeting", "label": "Tervehdys", "max_score": 5}]})
        assert made.status == 201, await made.text()
    ids["form"] = {"own": "own-form", "other": "other-form", "group": "perus"}
    ids["company"] = {"own": OWN, "other": OTHER}

    # A finished run on record (a real one now would purge these calls of last spring).
    run_id = uuid.uuid4()
    await db.execute("INSERT INTO purge_runs (id, dry_run, as_of, started_by, state)"
                     " VALUES ($1, false, now(), 'scheduler', 'finished')", run_id)
    ids["purge"] = {"group": str(run_id)}

    world.other_ids |= {other_customer, other_recording, "other-person", "other-form",
                        ids["token"]["other"],
                        str(await db.fetchval("SELECT id FROM users WHERE username = $1",
                                              "other-person"))}
    return world


Send = Callable[[World, str, str], Awaitable[ClientResponse]]


@dataclass(frozen=True)
class Target:
    """One endpoint acting on one object: how to call it, and whether scope allows it."""

    name: str
    kind: str
    action: str
    send: Send
    # Whether a caller may act on the group-wide object at all (when it is not theirs).
    group_for_scoped: bool = False
    # Only the object's owner or an all-companies-scoped `token.manage` may act.
    places: tuple[str, ...] = PLACES

    def permits(self, role: str, every: bool, place: str) -> bool:
        if not allowed(role, self.action):
            return False
        if self.kind == "token" and role != "admin":
            return False  # only their own tokens, and these are nobody's in particular
        return every or place == "own" or (place == "group" and self.group_for_scoped)


def _get(path: str, **params: str) -> Send:
    async def send(world: World, token: str, target: str) -> ClientResponse:
        return await world.api.client.get(path.format(target), params=params,
                                          headers=bearer(token))
    return send


def _call(method: str, path: str, body: Callable[[str], Any]) -> Send:
    async def send(world: World, token: str, target: str) -> ClientResponse:
        return await world.api.client.request(method, path.format(target), json=body(target),
                                              headers=bearer(token))
    return send


async def _release(world: World, token: str, target: str) -> ClientResponse:
    return await world.api.client.delete(f"/api/v1/legal-holds/{target}",
                                         headers=bearer(token))


TARGETS = [
    Target("recording metadata", "recording", "recording.search",
           _get("/api/v1/recordings/{}"), places=("own", "other")),
    Target("recording audio", "recording", "recording.replay",
           _get("/api/v1/recordings/{}/audio", reason="matrix"), places=("own", "other")),
    Target("recording evaluations", "recording", "evaluation.read",
           _get("/api/v1/recordings/{}/evaluations"), places=("own", "other")),
    Target("recording vCon", "recording", "recording.replay",
           _get("/api/v1/recordings/{}/vcon", reason="matrix"), places=("own", "other")),
    Target("recording annotations", "recording", "annotation.read",
           _get("/api/v1/recordings/{}/annotations"), places=("own", "other")),
    Target("annotation create", "recording", "annotation.write",
           _call("POST", "/api/v1/recordings/{}/annotations",
                 lambda _: {"at_s": 0.5, "text": "matrix", "visibility": "team"}),
           places=("own", "other")),
    Target("recording erasure", "fresh_recording", "recording.erase",
           _call("DELETE", "/api/v1/recordings/{}", lambda _: {"reason": "matrix"}),
           places=("own", "other")),
    Target("customer", "customer", "customer.read", _get("/api/v1/customers/{}"),
           group_for_scoped=True),
    Target("prohibition", "customer", "prohibition.write",
           _call("POST", "/api/v1/customers/{}/prohibitions",
                 lambda _: {"use": "direct_marketing", "channel": "phone"}),
           group_for_scoped=True),
    Target("access report", "customer", "access_report.read",
           _get("/api/v1/customers/{}/access-report", verified_by="signed_letter"),
           group_for_scoped=True),
    Target("user change", "user", "user.manage",
           _call("PATCH", "/api/v1/users/{}", lambda _: {"disabled": False})),
    Target("token revoke", "token", "token.manage",
           _call("DELETE", "/api/v1/tokens/{}", lambda _: None)),
    Target("retention policy", "company", "retention.write",
           _call("PUT", "/api/v1/retention-policies", lambda code: [
               {"company": code, "kind": "recording", "purpose": "quality",
                "keep_days": 183}]), places=("own", "other")),
    Target("site registry", "company", "site.manage",
           _call("PUT", "/api/v1/sites", lambda code: [
               {"site": f"www.{code}.example", "company": code}]), places=("own", "other")),
    Target("company change", "company", "company.manage",
           _call("PATCH", "/api/v1/companies/{}", lambda _: {}), places=("own", "other")),
    Target("disclosure", "company", "disclosure.create",
           _call("POST", "/api/v1/disclosures", lambda code: {
               "recipient": "Tutkimus Oy", "recipient_country": "FI",
               "purpose": "market_research", "legal_basis": "oikeutettu etu",
               "company": code, "fields": ["name"]}), places=("own", "other")),
    Target("evaluation form", "form", "evaluation_form.read",
           _get("/api/v1/evaluation-forms/{}"), group_for_scoped=True),
    Target("evaluation form change", "form", "evaluation_form.manage",
           _call("DELETE", "/api/v1/evaluation-forms/{}", lambda _: None)),
    Target("legal hold release", "case", "legal_hold.manage", _release),
    Target("purge run", "purge", "purge.run", _get("/api/v1/purges/{}"), places=("group",)),
]
MISSING = {"recording": str(uuid.uuid4()), "fresh_recording": str(uuid.uuid4()),
           "customer": str(uuid.uuid4()),
           "user": "no-such-person", "token": str(uuid.uuid4()), "company": "no-such-company",
           "form": "no-such-form", "case": "NO-SUCH-CASE", "purge": str(uuid.uuid4())}


async def _problem(response: ClientResponse) -> tuple[int, str, str]:
    body = await response.json()
    return response.status, body["title"], body["detail"]


async def _target(world: World, spec: Target, place: str) -> str:
    if spec.kind == "case":
        return await world.case(place)
    if spec.kind == "fresh_recording":
        return await world.recording(place)
    found = world.of(spec.kind, place)
    assert found is not None, (spec.name, place)
    return found


@pytest.mark.parametrize("spec", TARGETS, ids=lambda t: t.name)
async def test_scope_on_the_target(api: Api, db: asyncpg.Connection, spec: Target) -> None:
    world = await build_world(api, db)
    callers: dict[Caller, str] = {}
    for role in ROLES:
        callers[(role, False)] = await api.token(role, [OWN], name=f"caller-{role}")
        callers[(role, True)] = await api.token(role, all_companies=True,
                                                name=f"caller-{role}-all")
    seen: list[tuple[str, str, bool, int]] = []
    for (role, every), token in callers.items():
        for place in spec.places:
            target = await _target(world, spec, place)
            response = await spec.send(world, token, target)
            body = await response.read()
            where = (spec.name, role, "all" if every else "scoped", place, response.status,
                     body[:300])
            seen.append((role, place, every, response.status))
            if spec.permits(role, every, place):
                assert 200 <= response.status < 300, where
            elif not allowed(role, spec.action) and spec.kind != "token":
                # (Anyone may revoke their own tokens: another's is as missing as none.)
                assert response.status == 403, where
                assert response.content_type == "application/problem+json", where
            else:
                missing = await spec.send(world, token, MISSING[spec.kind])
                assert response.status in (403, 404) or (
                    await _problem(response) == await _problem(missing)), where
                if response.status != 403:
                    assert (response.status, (await response.json())["detail"]) == (
                        missing.status, (await missing.json())["detail"]), where
            if not every:
                for other in world.other_ids:
                    assert other.encode() not in body, (*where, other)
    # The matrix is not vacuous: somebody was let through and somebody was not.
    assert any(200 <= s < 300 for *_, s in seen) and any(s >= 400 for *_, s in seen)


LISTS = ["/api/v1/recordings", "/api/v1/users", "/api/v1/tokens", "/api/v1/retention-policies",
         "/api/v1/legal-holds?released=true", "/api/v1/evaluation-forms", "/api/v1/audit",
         "/api/v1/disclosures", "/api/v1/web-events", "/api/v1/companies"]


async def test_lists_show_a_company_scoped_caller_nothing_of_the_other_company(
        api: Api, db: asyncpg.Connection) -> None:
    world = await build_world(api, db)
    await world.case("other")
    for target in ("own", "other"):
        # Every company's objects are read once, so the audit trail holds events of both.
        await api.client.get(f"/api/v1/recordings/{world.ids['recording'][target]}/audio",
                             params={"reason": "matrix"}, headers=bearer(world.admin))
    for role in ROLES:
        token = await api.token(role, [OWN], name=f"lister-{role}")
        for path in LISTS:
            response = await api.client.get(path, headers=bearer(token))
            body = await response.read()
            assert response.status in (200, 403), (role, path, response.status, body[:300])
            for other in world.other_ids:
                assert other.encode() not in body, (role, path, other)
