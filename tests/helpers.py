"""Factories and shortcuts shared by tests: tokens of a role, users, sessions."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from storage import accounts, passwords

DEFAULT_PASSWORD = "correct-horse-battery-staple"


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
            await accounts.create_user(conn, username, passwords.hash_password(password), role,
                                       [c.id for c in found], all_companies)
        finally:
            await conn.close()

    async def login(self, username: str, password: str = DEFAULT_PASSWORD) -> str:
        response = await self.client.post(
            "/api/v1/session", json={"username": username, "password": password}
        )
        assert response.status == 200, await response.text()
        return str((await response.json())["csrf_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
