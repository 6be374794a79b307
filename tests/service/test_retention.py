"""Retention policies: seeded defaults, retain_until stamped at ingest, a policy change
recomputes existing recordings in batches and is audited with the count moved."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

import asyncpg

from storage import retention
from tests import audiogen
from tests.helpers import Api, bearer
from tests.service.recording_factory import COMPANY, OTHER_COMPANY, metadata, upload


async def stored(api: Api, company: str = COMPANY, purpose: str = "quality") -> dict[str, object]:
    token = await api.token("ingest", [company], name=f"pbx-{company}")
    response = await upload(api.client, token, metadata(company=company, purpose=purpose),
                            audiogen.make_audio("wav_pcm", 1.0))
    assert response.status == 201, await response.text()
    body: dict[str, object] = await response.json()
    return body


async def test_every_company_has_default_policies_for_every_kind(api: Api) -> None:
    admin = await api.token("admin", all_companies=True)
    response = await api.client.get("/api/v1/retention-policies", headers=bearer(admin))
    assert response.status == 200
    items = (await response.json())["items"]
    assert len(items) == 9 * 4
    mine = {(p["kind"], p["purpose"]): p["keep_days"] for p in items if p["company"] == COMPANY}
    assert mine == {("recording", "transaction_verification"): 1096,
                    ("recording", "quality"): 183, ("web_event", "site_usage"): 396,
                    ("customer", "customer_relationship"): 1096}


async def test_recording_is_stamped_with_its_policy_when_stored(api: Api) -> None:
    quality = await stored(api, purpose="quality")
    verification = await stored(api, purpose="transaction_verification")
    for body, days in ((quality, 183), (verification, 1096)):
        started = datetime.fromisoformat(str(body["started_at"]))
        assert datetime.fromisoformat(str(body["retain_until"])) == started + timedelta(days=days)
        assert body["legal_holds"] == []


async def test_policy_change_recomputes_existing_recordings_and_is_audited(
    api: Api, db: asyncpg.Connection, monkeypatch: object
) -> None:
    monkeypatch.setattr(retention, "RECOMPUTE_BATCH", 2)  # type: ignore[attr-defined]
    mine = [await stored(api) for _ in range(5)]
    theirs = await stored(api, company=OTHER_COMPANY)
    other_purpose = await stored(api, purpose="transaction_verification")
    admin = await api.token("admin", all_companies=True)

    response = await api.client.put(
        "/api/v1/retention-policies", headers=bearer(admin),
        json=[{"company": COMPANY, "kind": "recording", "purpose": "quality", "keep_days": 30}],
    )
    assert response.status == 200, await response.text()
    change = (await response.json())["changes"]
    assert change == [{"company": COMPANY, "kind": "recording", "purpose": "quality",
                       "old_keep_days": 183, "keep_days": 30, "records_moved": 5}]
    for body in mine:
        row = await db.fetchrow("SELECT started_at, retain_until FROM recordings WHERE id = $1",
                                uuid.UUID(str(body["id"])))
        assert row["retain_until"] == row["started_at"] + timedelta(days=30)
    for body in (theirs, other_purpose):
        kept = await db.fetchval("SELECT retain_until FROM recordings WHERE id = $1",
                                 uuid.UUID(str(body["id"])))
        assert kept == datetime.fromisoformat(str(body["retain_until"]))

    event = await db.fetchrow("SELECT * FROM audit_events WHERE action = 'retention.write'")
    assert event["actor"] == "test-admin"
    assert json.loads(event["detail"])["changes"][0]["records_moved"] == 5

    again = await api.client.put(
        "/api/v1/retention-policies", headers=bearer(admin),
        json=[{"company": COMPANY, "kind": "recording", "purpose": "quality", "keep_days": 30}],
    )
    assert (await again.json())["changes"] == []  # unchanged rows move nothing


async def test_dpo_reads_policies_but_only_admin_changes_them(api: Api) -> None:
    dpo = await api.token("dpo", [COMPANY])
    assert (await api.client.get("/api/v1/retention-policies", headers=bearer(dpo))).status \
        == 200
    refused = await api.client.put(
        "/api/v1/retention-policies", headers=bearer(dpo),
        json=[{"company": COMPANY, "kind": "recording", "purpose": "quality", "keep_days": 1}])
    assert refused.status == 403
    admin = await api.token("admin", all_companies=True)
    bad = await api.client.put(
        "/api/v1/retention-policies", headers=bearer(admin),
        json=[{"company": "nope", "kind": "recording", "purpose": "quality", "keep_days": 1}])
    assert bad.status == 422
