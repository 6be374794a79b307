"""Housekeeping on its own schedule: ended sessions, old login failures and old idempotency
keys are deleted; live ones stay."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta

import asyncpg

from service.http.keys import POOL, SETTINGS
from service.ops.housekeeping import housekeep_once
from tests.helpers import Api
from tests.service.retention_factory import app_of


async def test_expired_sessions_login_failures_and_idempotency_keys_go_live_ones_stay(
        api: Api, db: asyncpg.Connection) -> None:
    await api.user("aino", "quality", ["kemin-energia"])
    user_id = await db.fetchval("SELECT id FROM users WHERE username = 'aino'")
    sessions = {name: os.urandom(32) for name in ("live", "revoked", "idle", "too_old")}
    for name, digest in sessions.items():
        await db.execute(
            "INSERT INTO sessions (digest, user_id, csrf_token, created_at, last_seen_at,"
            " revoked_at) VALUES ($1, $2, 'x', now() - $3::interval, now() - $4::interval,"
            " CASE WHEN $5 THEN now() END)",
            digest, user_id,
            {"too_old": timedelta(hours=13)}.get(name, timedelta(hours=1)),
            {"idle": timedelta(minutes=31)}.get(name, timedelta(minutes=1)),
            name == "revoked",
        )
    await db.execute("INSERT INTO login_failures (username, client_ip, at) VALUES"
                     " ('aino', '127.0.0.0/24', now() - interval '2 hours'),"
                     " ('aino', '127.0.0.0/24', now() - interval '1 minute')")
    account = uuid.uuid4()
    await db.execute("INSERT INTO idempotency_keys (account_kind, account_id, endpoint, key,"
                     " status, response, created_at) VALUES"
                     " ('token', $1, 'web-events', 'old', 200, '{}', now() - interval '25 hours'),"
                     " ('token', $1, 'web-events', 'new', 200, '{}', now())", account)

    app = app_of(api)
    done = await housekeep_once(app[POOL], app[SETTINGS])

    assert (done.sessions, done.login_failures, done.idempotency_keys) == (3, 1, 1)
    left = {bytes(r["digest"]) for r in await db.fetch("SELECT digest FROM sessions")}
    assert sessions["live"] in left
    assert not left & {sessions[n] for n in ("revoked", "idle", "too_old")}
    assert await db.fetchval("SELECT count(*) FROM login_failures WHERE at > now() - interval"
                             " '1 hour'") == await db.fetchval(
                                 "SELECT count(*) FROM login_failures") == 1
    assert [r["key"] for r in await db.fetch("SELECT key FROM idempotency_keys")] == ["new"]
