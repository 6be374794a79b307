"""Factories and shortcuts shared by tests: tokens of a role, users, sessions."""

from __future__ import annotations

import asyncio
import time
from functools import cache
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from service.settings import Settings
from storage import accounts, passwords

DEFAULT_PASSWORD = "correct-horse-battery-staple"


@cache
def password_hash(password: str) -> str:
    """A real argon2id hash of `password`, made once per test process: tests create
    hundreds of users, and each hash costs about 0.15 s by design. Signing in still verifies
    against it in full."""
    return passwords.hash_password(password)


class Api:
    """The test client plus factories that write accounts straight into the test database."""

    def __init__(self, client: TestClient[Any, Any], superuser_url: str) -> None:
        self.client = client
        self.superuser_url = superuser_url

    async def _conn(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.superuser_url)

    async def token(self, role: str, companies: list[str] | None = None, *,
                    all_companies: bool = False, name: str | None = None) -> str:
        conn = await self._conn()
        try:
            found = await accounts.companies_by_code(conn, companies or [])
            _, secret = await accounts.create_token(
                conn, name or f"test-{role}", role, [c.id for c in found], all_companies
            )
        finally:
            await conn.close()
        return secret

    async def user(self, username: str, role: str, companies: list[str] | None = None, *,
                   all_companies: bool = False, password: str = DEFAULT_PASSWORD) -> None:
        conn = await self._conn()
        try:
            found = await accounts.companies_by_code(conn, companies or [])
            await accounts.create_user(conn, username, password_hash(password), role,
                                       [c.id for c in found], all_companies)
        finally:
            await conn.close()

    async def login(self, username: str, password: str = DEFAULT_PASSWORD) -> str:
        response = await self.client.post(
            "/api/v1/session", json={"username": username, "password": password}
        )
        assert response.status == 200, await response.text()
        return str((await response.json())["csrf_token"])


async def until_waiting(db: asyncpg.Connection, sessions: int, timeout_s: float = 20, *,
                        unless: asyncio.Future[Any] | None = None) -> None:
    """Return once `sessions` other sessions of `db`'s database wait for a lock (a row, a
    table, an advisory lock), or `unless` has finished: the moment a race test lets the next
    side go. Sessions of other databases (the test databases made ahead) do not count."""
    deadline = time.monotonic() + timeout_s
    while not (unless is not None and unless.done()):
        # Within a transaction the sessions' activity is read once unless cleared.
        await db.execute("SELECT pg_stat_clear_snapshot()")
        if await db.fetchval(
            "SELECT count(DISTINCT l.pid) FROM pg_locks l JOIN pg_stat_activity a"
            " ON a.pid = l.pid WHERE NOT l.granted AND a.datname = current_database()"
            " AND l.pid <> pg_backend_pid()"
        ) >= sessions:
            return
        assert time.monotonic() < deadline, f"fewer than {sessions} session(s) reached a lock"
        await asyncio.sleep(0.02)


async def metric(client: TestClient[Any, Any], sample: str) -> float:
    """The value of one sample of /metrics, e.g. 'tallenne_x_total{outcome="ok"}' (0 when it
    is not there yet)."""
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def settings_env(settings: Settings) -> dict[str, str]:
    """TALLENNE_* variables that point a CLI or service subprocess at a test's database,
    bucket and keys."""
    assert settings.database_url and settings.s3_access_key and settings.s3_secret_key
    assert settings.master_key and settings.personal_id_key and settings.s3_endpoint
    return {
        "TALLENNE_DATABASE_URL": settings.database_url.get_secret_value(),
        **({"TALLENNE_DATABASE_OWNER_URL": settings.database_owner_url.get_secret_value()}
           if settings.database_owner_url else {}),
        "TALLENNE_S3_ENDPOINT": settings.s3_endpoint,
        "TALLENNE_S3_ACCESS_KEY": settings.s3_access_key.get_secret_value(),
        "TALLENNE_S3_SECRET_KEY": settings.s3_secret_key.get_secret_value(),
        "TALLENNE_S3_BUCKET": settings.s3_bucket,
        "TALLENNE_MASTER_KEY": settings.master_key.get_secret_value(),
        "TALLENNE_PERSONAL_ID_KEY": settings.personal_id_key.get_secret_value(),
        "TALLENNE_DATA_DIR": str(settings.data_dir),
        "TALLENNE_MASTER_KEY_VERSION": str(settings.master_key_version),
        "TALLENNE_S3_KEY_BUCKET": settings.key_bucket,
        "TALLENNE_S3_AUDIT_BUCKET": settings.audit_bucket,
        **({"TALLENNE_AUDIT_SIGNING_KEY": settings.audit_signing_key.get_secret_value()}
           if settings.audit_signing_key else {}),
        **({"TALLENNE_S3_AUDIT_ACCESS_KEY": settings.s3_audit_access_key.get_secret_value(),
            "TALLENNE_S3_AUDIT_SECRET_KEY": settings.s3_audit_secret_key.get_secret_value()}
           if settings.s3_audit_access_key and settings.s3_audit_secret_key else {}),
        **({"TALLENNE_BACKUP_KEY": settings.backup_key.get_secret_value()}
           if settings.backup_key else {}),
        **({"TALLENNE_PREVIOUS_MASTER_KEYS": settings.previous_master_keys.get_secret_value()}
           if settings.previous_master_keys else {}),
    }
