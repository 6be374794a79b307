"""The production role split: the service refuses to run as a role that could bypass
row-level security, and its own role holds only the grants it needs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from devstack.embedded import EmbeddedStack, free_ports
from service.settings import Settings
from tests.conftest import Stack
from tests.helpers import settings_env


async def serve_exit(settings: Settings, **overrides: str) -> tuple[int, list[str]]:
    """Run the real `tallenne serve` until it exits (or 60 s); exit code and stderr lines."""
    (port,) = free_ports(1)
    env = {**os.environ, **settings_env(settings), "TALLENNE_PORT": str(port),
           "TALLENNE_PURGE_ENABLED": "false", **overrides}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "service.cli", "serve"], env=env,
        capture_output=True, text=True, timeout=60, check=False,
    )
    return done.returncode, [line for line in done.stderr.splitlines() if line.strip()]


def assert_refused(code: int, lines: list[str], *words: str) -> None:
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("tallenne: error: refusing to start: "), lines
    for word in words:
        assert word in lines[0], lines


async def test_serve_refuses_a_superuser(settings: Settings, stack: Stack,
                                         database: str) -> None:
    code, lines = await serve_exit(
        settings, TALLENNE_DATABASE_URL=stack.superuser_url(database))
    assert_refused(code, lines, "'postgres'", "superuser")


@pytest.fixture
async def bypass_role(stack: Stack) -> AsyncIterator[str]:
    name = "t_bypass_" + uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(stack.superuser_url("postgres"))
    try:
        await admin.execute(f"CREATE ROLE {name} LOGIN BYPASSRLS PASSWORD 'bypass-pass'")
        await admin.execute(f"GRANT tallenne_runtime TO {name}")
        yield name
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {name}")
        await admin.close()


async def test_serve_refuses_a_bypassrls_role(settings: Settings, stack: Stack, database: str,
                                              bypass_role: str) -> None:
    assert stack.embedded.postgres is not None
    url = (f"postgresql://{bypass_role}:bypass-pass@127.0.0.1:{stack.embedded.postgres.port}"
           f"/{database}")
    code, lines = await serve_exit(settings, TALLENNE_DATABASE_URL=url)
    assert_refused(code, lines, f"'{bypass_role}'", "BYPASSRLS")


async def test_serve_refuses_the_tables_owner(settings: Settings, stack: Stack,
                                              database: str) -> None:
    code, lines = await serve_exit(settings, TALLENNE_DATABASE_URL=stack.owner_url(database))
    assert_refused(code, lines, "'tallenne_owner'", "owns table")


async def test_serve_refuses_a_member_of_the_owner_role(
        settings: Settings, stack: Stack, database: str, bypass_role: str) -> None:
    admin = await asyncpg.connect(stack.superuser_url("postgres"))
    try:
        await admin.execute(f"ALTER ROLE {bypass_role} NOBYPASSRLS")
        await admin.execute(f"GRANT tallenne_owner TO {bypass_role}")
        assert stack.embedded.postgres is not None
        url = (f"postgresql://{bypass_role}:bypass-pass@127.0.0.1:"
               f"{stack.embedded.postgres.port}/{database}")
        code, lines = await serve_exit(settings, TALLENNE_DATABASE_URL=url)
    finally:
        await admin.execute(f"REVOKE tallenne_owner FROM {bypass_role}")
        await admin.close()
    assert_refused(code, lines, "through membership of 'tallenne_owner'")


async def test_serve_refuses_a_member_of_a_bypassrls_role_or_the_schema_owner(
        settings: Settings, stack: Stack, database: str, bypass_role: str) -> None:
    """What the login role may SET ROLE to counts: a BYPASSRLS role behind it, or the owner of
    the schema (who may drop every table), is refused like the role itself would be."""
    behind = "t_behind_" + uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(stack.superuser_url("postgres"))
    assert stack.embedded.postgres is not None
    url = (f"postgresql://{bypass_role}:bypass-pass@127.0.0.1:"
           f"{stack.embedded.postgres.port}/{database}")
    try:
        await admin.execute(f"ALTER ROLE {bypass_role} NOBYPASSRLS")
        await admin.execute(f"CREATE ROLE {behind} NOLOGIN BYPASSRLS")
        await admin.execute(f"GRANT {behind} TO {bypass_role}")
        code, lines = await serve_exit(settings, TALLENNE_DATABASE_URL=url)
        assert_refused(code, lines, f"member of '{behind}'", "BYPASSRLS")
        await admin.execute(f"REVOKE {behind} FROM {bypass_role}")

        owner = await admin.fetchval("SELECT pg_get_userbyid(nspowner) FROM pg_namespace"
                                     " WHERE nspname = 'public'")
        schema_owner = f"t_schema_{uuid.uuid4().hex[:8]}"
        await admin.execute(f"CREATE ROLE {schema_owner} NOLOGIN")
        db_admin = await asyncpg.connect(stack.superuser_url(database))
        try:
            await db_admin.execute(f"ALTER SCHEMA public OWNER TO {schema_owner}")
            await db_admin.execute("GRANT ALL ON SCHEMA public TO tallenne_owner, tallenne_runtime")
            await admin.execute(f"GRANT {schema_owner} TO {bypass_role}")
            code, lines = await serve_exit(settings, TALLENNE_DATABASE_URL=url)
        finally:
            await db_admin.execute(f"ALTER SCHEMA public OWNER TO {owner}")
            await db_admin.close()
            await admin.execute(f"DROP ROLE {schema_owner}")
        assert_refused(code, lines, "owns the schema 'public'", schema_owner)
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {behind}")
        await admin.close()


async def test_serve_refuses_a_schema_behind_without_the_owner_url(
        settings: Settings, db: asyncpg.Connection) -> None:
    await db.execute("DELETE FROM schema_migrations WHERE version = '015_runtime_role'")
    code, lines = await serve_exit(settings.model_copy(update={"database_owner_url": None}))
    assert_refused(code, lines, "015_runtime_role", "tallenne migrate")


async def test_runtime_role_owns_nothing_and_only_appends_to_the_audit_trail(
        stack: Stack, database: str) -> None:
    conn = await asyncpg.connect(stack.app_url(database))
    try:
        role = await conn.fetchrow("SELECT rolsuper, rolbypassrls, rolcreatedb FROM pg_roles"
                                   " WHERE rolname = current_user")
        assert tuple(role) == (False, False, False)
        owned = await conn.fetchval(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND pg_has_role(current_user, c.relowner, 'MEMBER')")
        assert owned == 0
        rights = {p: await conn.fetchval("SELECT has_table_privilege('audit_events', $1)", p)
                  for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")}
        assert rights == {"SELECT": True, "INSERT": True, "UPDATE": False, "DELETE": False,
                          "TRUNCATE": False}
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("ALTER TABLE recordings DISABLE ROW LEVEL SECURITY")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE TABLE mine (x int)")
        with pytest.raises(asyncpg.RaiseError):
            await conn.execute("SELECT tallenne_drop_web_events_partition('recordings')")
    finally:
        await conn.close()


async def test_cli_migrate_needs_the_owner_url(settings: Settings) -> None:
    env = {**os.environ, **settings_env(settings)}
    env.pop("TALLENNE_DATABASE_OWNER_URL")
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "service.cli", "migrate"], env=env,
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "TALLENNE_DATABASE_OWNER_URL" in done.stderr
    env = {**os.environ, **settings_env(settings)}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "service.cli", "migrate"], env=env,
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout


def test_embedded_stack_creates_both_roles_and_hands_an_old_database_to_the_owner(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = EmbeddedStack(data)
    info = first.start()
    try:
        assert info.database_owner_url.startswith("postgresql://tallenne_owner:")
        assert info.as_env()["TALLENNE_DATABASE_OWNER_URL"] == info.database_owner_url

        async def legacy() -> dict[str, object]:
            admin = await asyncpg.connect(info.superuser_url.rsplit("/", 1)[0] + "/tallenne")
            try:
                roles = {r["rolname"]: (r["rolsuper"], r["rolbypassrls"], r["rolcanlogin"])
                         for r in await admin.fetch(
                             "SELECT rolname, rolsuper, rolbypassrls, rolcanlogin FROM pg_roles"
                             " WHERE rolname LIKE 'tallenne%'")}
                member = await admin.fetchval("SELECT pg_has_role('tallenne',"
                                              " 'tallenne_runtime', 'MEMBER')")
                owner = await admin.fetchval("SELECT pg_get_userbyid(datdba) FROM pg_database"
                                             " WHERE datname = 'tallenne'")
                # The shape of a data directory from before the split: the service's role
                # owned the database and its tables.
                await admin.execute("ALTER DATABASE tallenne OWNER TO tallenne")
                await admin.execute("CREATE TABLE legacy (x int)")
                await admin.execute("ALTER TABLE legacy OWNER TO tallenne")
            finally:
                await admin.close()
            return {"roles": roles, "member": member, "owner": owner}

        before = asyncio.run(legacy())
        assert before["roles"] == {"tallenne": (False, False, True),
                                   "tallenne_owner": (False, False, True),
                                   "tallenne_runtime": (False, False, False)}
        assert before["member"] is True and before["owner"] == "tallenne_owner"
    finally:
        first.stop()
    again = EmbeddedStack(data)
    info = again.start()
    try:
        async def owners() -> tuple[str, str]:
            admin = await asyncpg.connect(info.superuser_url.rsplit("/", 1)[0] + "/tallenne")
            try:
                database = await admin.fetchval("SELECT pg_get_userbyid(datdba) FROM"
                                                " pg_database WHERE datname = 'tallenne'")
                table = await admin.fetchval("SELECT pg_get_userbyid(relowner) FROM pg_class"
                                             " WHERE relname = 'legacy'")
            finally:
                await admin.close()
            return database, table

        assert asyncio.run(owners()) == ("tallenne_owner", "tallenne_owner")
    finally:
        again.stop()
