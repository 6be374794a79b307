"""Purges: a purged call leaves a tombstone and no object (every version), a dry run changes
nothing, a killed purge finishes on the next run, a stopped one is recorded as interrupted and
run again, two at once purge each item once, web events go by whole partitions, expired
customers are crypto-shredded."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from service.app import create_app
from service.retention import scheduler as purge_scheduler
from service.settings import Settings
from storage.purge import WORKERS
from tests import audiogen
from tests.helpers import Api, bearer, until_waiting
from tests.service.data_subject_factory import A, customer, record
from tests.service.recording_factory import COMPANY, bucket_keys, metadata, upload
from tests.service.retention_factory import (
    FUTURE,
    app_of,
    expired_recordings,
    purge_context_of,
    purge_process,
    purge_run,
)

COUNTED_TABLES = ("recordings", "recording_tombstones", "customers", "web_events",
                  "purge_log", "erasure_ledger")


async def table_counts(db: asyncpg.Connection) -> dict[str, int]:
    return {t: int(await db.fetchval(f"SELECT count(*) FROM {t}")) for t in COUNTED_TABLES}


async def test_purged_call_is_gone_from_s3_and_leaves_a_tombstone(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    ingest = await api.token("ingest", [COMPANY], name="pbx")
    meta = metadata()
    response = await upload(api.client, ingest, meta, audiogen.make_audio("wav_pcm", 1.0))
    recording_id = (await response.json())["id"]
    assert len(await bucket_keys(settings)) == 1

    report = await purge_scheduler.run_now(purge_context_of(api), FUTURE, actor="test")
    assert report.state == "finished"
    assert [(b.company, b.kind, b.items) for b in report.purged] == [(COMPANY, "recording", 1)]

    store_keys = await bucket_keys(settings, prefix="")
    assert not [k for k in store_keys if k.startswith("recordings/")]
    tombstone = await db.fetchrow("SELECT * FROM recording_tombstones WHERE id = $1",
                                  uuid.UUID(recording_id))
    assert tombstone["erased_by"].startswith("purge ")
    assert tombstone["reason"] == "retention: recording/quality"
    logged = await db.fetchrow("SELECT * FROM purge_log WHERE item_id = $1", recording_id)
    assert logged["item_kind"] == "recording" and logged["purge_id"] == report.id

    quality = await api.token("quality", [COMPANY])
    replay = await api.client.get(f"/api/v1/recordings/{recording_id}/audio",
                                  params={"reason": "check"}, headers=bearer(quality))
    assert replay.status == 404
    again = await upload(api.client, ingest, meta, audiogen.make_audio("wav_pcm", 1.0))
    assert again.status == 409  # a purged call is not taken in again by a retry
    event = await db.fetchrow("SELECT * FROM audit_events WHERE action = 'purge.run'")
    assert json.loads(event["detail"])["items"] == 1
    assert await db.fetchval("SELECT count(*) FROM audit_checkpoints") >= 1


async def test_dry_run_changes_nothing_but_one_audit_event(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    await expired_recordings(db, settings, 3, object_size=100)
    before_rows = await table_counts(db)
    before_keys = await bucket_keys(settings, prefix="")
    before_events = await db.fetchval("SELECT max(seq) FROM audit_events") or 0
    admin = await api.token("admin", all_companies=True)

    response = await api.client.post("/api/v1/purges", json={"dry_run": True},
                                     headers=bearer(admin))
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["dry_run"] is True
    assert body["expired"] == [{"company": COMPANY, "kind": "recording", "items": 3,
                                "bytes": 300}]
    assert body["oldest"]["kind"] == "recording"

    assert await table_counts(db) == before_rows
    assert await bucket_keys(settings, prefix="") == before_keys
    actions = [r["action"] for r in await db.fetch(
        "SELECT action FROM audit_events WHERE seq > $1 AND action <> 'token.first_use_today'"
        " ORDER BY seq", before_events)]
    assert actions == ["purge.preview"]


async def test_api_purge_returns_an_id_whose_progress_ends_finished(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    await expired_recordings(db, settings, 4)
    admin = await api.token("admin", all_companies=True)
    response = await api.client.post("/api/v1/purges", json={"dry_run": False},
                                     headers=bearer(admin))
    assert response.status == 202, await response.text()
    purge_id = (await response.json())["id"]
    for _ in range(100):
        state = await api.client.get(f"/api/v1/purges/{purge_id}", headers=bearer(admin))
        body = await state.json()
        if body["state"] != "running":
            break
        await asyncio.sleep(0.1)
    # Real time: the rows above were stamped in 2020, so they have expired today too.
    assert body["state"] == "finished"
    assert body["purged"] == [{"company": COMPANY, "kind": "recording", "items": 4,
                               "bytes": 256}]
    assert await db.fetchval("SELECT count(*) FROM recordings") == 0
    quality = await api.token("quality", [COMPANY])
    refused = await api.client.post("/api/v1/purges", json={"dry_run": True},
                                    headers=bearer(quality))
    assert refused.status == 403


async def test_killed_purge_finishes_on_the_next_run_and_counts_add_up(
    db: asyncpg.Connection, settings: Settings
) -> None:
    total = 120
    await expired_recordings(db, settings, total)
    first = purge_process(settings, TALLENNE_PURGE_BATCH_SIZE="1")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = await db.fetchval("SELECT count(*) FROM purge_log")
        if done >= 10 or first.poll() is not None:
            break
        await asyncio.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = await db.fetchval("SELECT count(*) FROM purge_log")
    assert 0 < killed_at < total, "the purge was not caught midway"

    second = purge_process(settings)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err.decode()
    summary = json.loads(out)
    assert summary["state"] == "finished"
    purged_now = sum(b["items"] for b in summary["purged"])
    assert killed_at + purged_now == total
    assert await db.fetchval("SELECT count(*) FROM recordings") == 0
    assert await db.fetchval("SELECT count(*) FROM recording_tombstones") == total
    assert await bucket_keys(settings) == []
    states = [r["state"] for r in await db.fetch(
        "SELECT state FROM purge_runs ORDER BY started_at")]
    assert states == ["interrupted", "finished"]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
async def test_purge_stopped_by_ctrl_c_or_sigterm_is_recorded_interrupted_and_audited(
    db: asyncpg.Connection, settings: Settings, stop: signal.Signals
) -> None:
    total = 120
    await expired_recordings(db, settings, total)
    first = purge_process(settings, TALLENNE_PURGE_BATCH_SIZE="1")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if await db.fetchval("SELECT count(*) FROM purge_log") >= 10 or first.poll() is not None:
            break
        await asyncio.sleep(0.02)
    first.send_signal(stop)
    _, err = await asyncio.to_thread(first.communicate, timeout=60)
    assert first.returncode == 128 + stop, err.decode()
    purged = await db.fetchval("SELECT count(*) FROM purge_log")
    assert 0 < purged < total, "the purge was not caught midway"

    run = await db.fetchrow("SELECT state, error FROM purge_runs")
    assert run["state"] == "interrupted" and "before it finished" in run["error"]
    event = await db.fetchrow("SELECT outcome, detail FROM audit_events"
                              " WHERE action = 'purge.run'")
    assert event is not None and event["outcome"] == "interrupted"
    # The counts so far: a batch of each worker may have committed in the very moment of the
    # stop, before the run counted it (purge_log has every item).
    assert purged - WORKERS <= json.loads(event["detail"])["items"] <= purged
    assert "Traceback" not in err.decode()
    assert err.decode().strip().splitlines()[-1] == f"tallenne: stopped by {stop.name}"

    second = purge_process(settings)
    out, err = await asyncio.to_thread(second.communicate, timeout=120)
    assert second.returncode == 0, err.decode()
    assert sum(b["items"] for b in json.loads(out)["purged"]) == total - purged
    assert await bucket_keys(settings) == []


async def test_scheduled_purge_stopped_mid_run_is_interrupted_and_runs_again_after_a_restart(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    await expired_recordings(db, settings, 3)
    context = purge_context_of(api)
    lock = db.transaction()
    await lock.start()
    try:
        # The batch waits to write its tombstones: the replica stops meanwhile.
        await db.execute("LOCK TABLE recording_tombstones IN ACCESS EXCLUSIVE MODE")
        run = asyncio.ensure_future(purge_scheduler.scheduled_once(context))
        await until_waiting(db, 1, unless=run)
        run.cancel()
    finally:
        await lock.rollback()
    with pytest.raises(asyncio.CancelledError):
        await run
    row = await db.fetchrow("SELECT id, state FROM purge_runs")
    assert row["state"] == "interrupted"
    admin = await api.token("admin", all_companies=True)
    shown = await api.client.get(f"/api/v1/purges/{row['id']}", headers=bearer(admin))
    assert (await shown.json())["state"] == "interrupted"
    assert await db.fetchval("SELECT count(*) FROM recordings") == 3

    # The replica starts again the same day: today's purge runs now, not tomorrow.
    async with TestClient(TestServer(create_app(settings))):
        deadline = time.monotonic() + 60
        while await db.fetchval("SELECT count(*) FROM purge_runs WHERE state = 'finished'") == 0:
            assert time.monotonic() < deadline, "the interrupted purge was not run again"
            await asyncio.sleep(0.1)
    assert await db.fetchval("SELECT count(*) FROM recordings") == 0
    assert await bucket_keys(settings) == []
    assert await purge_scheduler.scheduled_once(context) is None  # today's is done now


async def test_two_purges_at_once_purge_each_item_exactly_once(
    db: asyncpg.Connection, settings: Settings
) -> None:
    total = 150
    ids = await expired_recordings(db, settings, total)
    runs = [purge_process(settings, TALLENNE_PURGE_BATCH_SIZE="5") for _ in range(2)]
    outputs = [r.communicate(timeout=120) for r in runs]
    for run, (_, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err.decode()
    per_run = [sum(b["items"] for b in json.loads(out)["purged"]) for out, _ in outputs]
    assert sum(per_run) == total
    logged = await db.fetch("SELECT item_id, purge_id FROM purge_log")
    assert sorted(r["item_id"] for r in logged) == sorted(str(i) for i in ids)
    assert await bucket_keys(settings) == []


async def test_web_events_go_by_whole_expired_months_and_row_deletes(
    api: Api, db: asyncpg.Connection
) -> None:
    token = await api.token("ingest", [COMPANY], name="site")
    now = datetime.now(UTC)
    old = datetime(2020, 3, 15, tzinfo=UTC)
    lines = [{"ts": (old + timedelta(minutes=i)).isoformat(), "site": "www", "event": "view",
              "url": "/", "session_id": "s"} for i in range(20)]
    lines += [{"ts": now.isoformat(), "site": "www", "event": "view", "url": "/",
               "session_id": "s"}]
    response = await api.client.post(
        "/api/v1/web-events", data="\n".join(json.dumps(x) for x in lines),
        headers={**bearer(token), "Content-Type": "application/x-ndjson"})
    assert response.status == 200, await response.text()
    assert (await response.json())["accepted"] == 21
    assert await db.fetchval("SELECT to_regclass('web_events_2020_03') IS NOT NULL")

    report = await purge_scheduler.run_now(purge_context_of(api), now, actor="test")
    assert report.partitions_dropped == ["web_events_2020_03"]
    assert [(b.kind, b.items) for b in report.purged] == [("web_event", 20)]
    assert not await db.fetchval("SELECT to_regclass('web_events_2020_03') IS NOT NULL")
    assert await db.fetchval("SELECT count(*) FROM web_events") == 1

    # Later, by row deletes: the month of `now` still holds newer rows of other days.
    later = now + timedelta(days=397)
    report = await purge_scheduler.run_now(purge_context_of(api), later, actor="test")
    assert [(b.kind, b.items) for b in report.purged] == [("web_event", 1)]


async def test_customer_without_membership_or_data_expires_and_is_shredded(
    api: Api, db: asyncpg.Connection
) -> None:
    customer_id = uuid.UUID(await customer(api, [A]))
    await db.execute("UPDATE customer_memberships SET ended_at = now(), active = false"
                     " WHERE customer_id = $1", customer_id)
    report = await purge_scheduler.run_now(purge_context_of(api), datetime.now(UTC), actor="test")
    assert report.purged == []  # the relationship ended today: three years to go
    report = await purge_scheduler.run_now(purge_context_of(api), FUTURE, actor="test")
    assert [(b.kind, b.items) for b in report.purged] == [("customer", 1)]
    row = await db.fetchrow("SELECT * FROM customers WHERE id = $1", customer_id)
    assert row["erased_at"] is not None and row["name"] is None
    assert await db.fetchval("SELECT count(*) FROM customer_keys WHERE customer_id = $1",
                             customer_id) == 0
    assert await db.fetchval("SELECT count(*) FROM erasure_ledger") == 1


async def test_customer_resumed_while_the_purge_judges_expiry_is_kept(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    customer_id = uuid.UUID(await customer(api, [A]))
    await db.execute("UPDATE customer_memberships SET ended_at = now(), active = false"
                     " WHERE customer_id = $1", customer_id)
    billing = await api.token("ingest", [A], name="billing")
    assert settings.database_url is not None
    # One connection planning generically: a plan made once locks the expiry function's
    # tables only when the candidate query runs, after its snapshot, so the lock below
    # stops the query between its snapshot and its row locks.
    pool = await asyncpg.create_pool(
        settings.database_url.get_secret_value(), min_size=1, max_size=1,
        server_settings={"plan_cache_mode": "force_generic_plan"})
    try:
        async with purge_run(app_of(api), datetime.now(UTC), pool=pool) as job:
            assert await job.customer_batch() == 0  # ended today: not expired, plan made
        async with purge_run(app_of(api), FUTURE, pool=pool) as job:
            lock = db.transaction()
            await lock.start()
            try:
                await db.execute("LOCK TABLE retention_policies IN ACCESS EXCLUSIVE MODE")
                batch = asyncio.ensure_future(job.customer_batch())
                await until_waiting(db, 1)
                resumed = await asyncio.wait_for(api.client.put(
                    f"/api/v1/customers/{A}/50010", json=record(ended_at=None),
                    headers=bearer(billing)), 20)
                assert resumed.status in (200, 201), await resumed.text()
            finally:
                await lock.rollback()
            await batch
    finally:
        await pool.close()
    row = await db.fetchrow("SELECT * FROM customers WHERE id = $1", customer_id)
    assert row["erased_at"] is None and row["name"] is not None
    assert await db.fetchval("SELECT count(*) FROM customer_memberships WHERE customer_id = $1"
                             " AND ended_at IS NULL", customer_id) == 1
    assert await db.fetchval("SELECT count(*) FROM erasure_ledger") == 0


async def test_hold_answered_while_a_web_event_month_is_dropped_keeps_its_events(
    api: Api, db: asyncpg.Connection
) -> None:
    customer_id = await customer(api, [A])
    site = await api.token("ingest", [A], name="site")
    old = datetime(2020, 3, 15, tzinfo=UTC)
    lines = [{"ts": (old + timedelta(minutes=i)).isoformat(), "site": "www", "event": "view",
              "url": "/", "customer_number": "50010"} for i in range(5)]
    response = await api.client.post(
        "/api/v1/web-events", data="\n".join(json.dumps(x) for x in lines),
        headers={**bearer(site), "Content-Type": "application/x-ndjson"})
    assert response.status == 200, await response.text()
    theirs = "SELECT count(*) FROM {} WHERE customer_id = $1"
    assert await db.fetchval(theirs.format("web_events"), uuid.UUID(customer_id)) == 5
    admin = await api.token("admin", all_companies=True)

    async with purge_run(app_of(api), datetime.now(UTC)) as job:
        lock = db.transaction()
        await lock.start()
        try:
            # The month's drop waits for the partition, having read which customers are
            # held; a hold on the customer is asked for meanwhile.
            await db.execute("SELECT count(*) FROM web_events_2020_03")
            dropping = asyncio.ensure_future(job.web_event_partitions())
            await until_waiting(db, 1)
            holding = asyncio.ensure_future(api.client.post(
                "/api/v1/legal-holds", headers=bearer(admin),
                json={"case": "site-1", "reason": "court order", "customer_ids": [customer_id]}))
            await until_waiting(db, 2, unless=holding)
            confirmed = await db.fetchval(theirs.format("web_events_2020_03"),
                                          uuid.UUID(customer_id)) if holding.done() else None
        finally:
            await lock.rollback()
        held = await holding
        assert held.status == 201, await held.text()
        if confirmed is None:  # the hold waited for the drop: answered after it
            confirmed = await db.fetchval(theirs.format("web_events"), uuid.UUID(customer_id))
        await dropping
        assert job.dropped == ["web_events_2020_03"]
    # The events there were when the hold was answered are all kept.
    assert await db.fetchval(theirs.format("web_events"), uuid.UUID(customer_id)) == confirmed


async def test_active_customer_never_expires(api: Api, db: asyncpg.Connection) -> None:
    await customer(api, [A])
    report = await purge_scheduler.run_now(purge_context_of(api), FUTURE, actor="test")
    assert report.purged == []
    assert await db.fetchval("SELECT count(*) FROM customers WHERE erased_at IS NULL") == 1


def test_daily_time_is_helsinki_time() -> None:
    at = purge_scheduler.next_run_after(datetime(2026, 6, 1, 12, 0, tzinfo=UTC), "02:30")
    assert at == datetime(2026, 6, 1, 23, 30, tzinfo=UTC)  # 02:30 EEST is 23:30 UTC
    at = purge_scheduler.next_run_after(datetime(2026, 1, 1, 0, 10, tzinfo=UTC), "02:30")
    assert at == datetime(2026, 1, 1, 0, 30, tzinfo=UTC)


async def test_scheduled_purge_runs_on_one_replica_only(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    await expired_recordings(db, settings, 2)
    context = purge_context_of(api)
    holder = await asyncpg.connect(settings.database_url.get_secret_value())  # type: ignore[union-attr]
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", purge_scheduler.SCHEDULE_LOCK)
        assert await purge_scheduler.scheduled_once(context) is None  # another replica has it
    finally:
        await holder.close()
    report = await purge_scheduler.scheduled_once(context)
    assert report is not None and report.state == "finished"
    assert await purge_scheduler.scheduled_once(context) is None  # already done today
