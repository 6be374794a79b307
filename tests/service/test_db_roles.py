"""The production role split: the service refuses to run as a role that could bypass
row-level security, its own role holds only the grants it needs, and the database itself keeps
a company-scoped runtime role to what is its company's (SQL run as that role, past the
application)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

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


# --- the database enforces the scope on the target --------------------------------------


@dataclass(frozen=True)
class Sides:
    """Company A's runtime connection, a superuser's for setting up and checking, and the ids
    of companies A and B."""

    app: asyncpg.Connection
    su: asyncpg.Connection
    a: UUID
    b: UUID


@pytest.fixture
async def sides(stack: Stack, database: str) -> AsyncIterator[Sides]:
    su = await asyncpg.connect(stack.superuser_url(database))
    app = await asyncpg.connect(stack.app_url(database))
    try:
        a = await su.fetchval("SELECT id FROM companies WHERE code = 'kemin-energia'")
        b = await su.fetchval("SELECT id FROM companies WHERE code = 'tornion-energia'")
        yield Sides(app, su, a, b)
    finally:
        await app.close()
        await su.close()


@asynccontextmanager
async def scope_of(conn: asyncpg.Connection, *companies: UUID) -> AsyncIterator[None]:
    """A transaction scoped as the service scopes a company's caller (every company when
    none is named)."""
    async with conn.transaction():
        await conn.execute("SELECT tallenne_set_scope($1, $2::uuid[])", not companies,
                           list(companies))
        yield


async def refused(conn: asyncpg.Connection, sql: str, *args: object) -> None:
    """The statement fails for want of a right (a grant or a policy), in a savepoint."""
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with conn.transaction():
            await conn.execute(sql, *args)


async def shared_customer(su: asyncpg.Connection, *companies: UUID) -> UUID:
    """A customer with a membership of each company."""
    customer: UUID = await su.fetchval("INSERT INTO customers (name) VALUES ('Jaettu')"
                                       " RETURNING id")
    for i, company in enumerate(companies):
        await su.execute("INSERT INTO customer_memberships (customer_id, company_id,"
                         " customer_number) VALUES ($1, $2, $3)", customer, company, f"70{i}")
    return customer


async def test_a_web_event_partition_shows_and_takes_only_the_callers_companies(
        sides: Sides) -> None:
    app, su, a, b = sides.app, sides.su, sides.a, sides.b
    await app.execute("SELECT tallenne_create_web_events_partition('web_events_2021_03',"
                      " '2021-03-01', '2021-04-01')")
    for day, company in (((2020, 1, 15), a), ((2020, 1, 15), b), ((2021, 3, 10), b)):
        await su.execute("INSERT INTO web_events (ts, company_id, site, event, url)"
                         " VALUES ($1, $2, 'kemi.fi', 'page_view', '/b')",
                         datetime(*day, tzinfo=UTC), company)
    async with scope_of(app, a):
        assert await app.fetchval("SELECT count(*) FROM web_events_default") == 1
        assert await app.fetchval("SELECT count(*) FROM web_events_default"
                                  " WHERE company_id = $1", b) == 0
        assert await app.fetchval("SELECT count(*) FROM web_events_2021_03") == 0
        assert await app.execute("UPDATE web_events_default SET url = 'tampered'"
                                 " WHERE company_id = $1", b) == "UPDATE 0"
        assert await app.execute("DELETE FROM web_events_2021_03") == "DELETE 0"
        for partition, day in (("web_events_default", (2020, 2, 1)),
                               ("web_events_2021_03", (2021, 3, 11))):
            await refused(app, f"INSERT INTO {partition} (ts, company_id, site, event)"
                          " VALUES ($1, $2, 'tornio.fi', 'forged')",
                          datetime(*day, tzinfo=UTC), b)
    assert await app.fetchval("SELECT count(*) FROM web_events_default") == 0  # no scope
    stored = await su.fetch("SELECT tableoid::regclass::text AS part, url FROM web_events"
                            " WHERE company_id = $1 ORDER BY ts", b)
    assert [tuple(r) for r in stored] == [("web_events_default", "/b"),
                                          ("web_events_2021_03", "/b")]


async def test_dropping_a_month_of_web_events_needs_the_all_companies_scope(
        sides: Sides) -> None:
    app, su = sides.app, sides.su
    await app.execute("SELECT tallenne_create_web_events_partition('web_events_2021_03',"
                      " '2021-03-01', '2021-04-01')")
    await su.execute("INSERT INTO web_events (ts, company_id, site, event)"
                     " VALUES ('2021-03-10', $1, 'tornio.fi', 'page_view')", sides.b)
    async with scope_of(app, sides.a):
        await refused(app, "SELECT tallenne_drop_web_events_partition('web_events_2021_03')")
    assert await su.fetchval("SELECT count(*) FROM web_events_2021_03") == 1
    # The purge, which sees every company, still drops it.
    async with scope_of(app):
        await app.execute("SELECT tallenne_drop_web_events_partition('web_events_2021_03')")
    assert await su.fetchval("SELECT to_regclass('web_events_2021_03')") is None


async def test_a_company_neither_destroys_a_shared_customers_key_nor_removes_their_prohibitions(
        sides: Sides) -> None:
    app, su = sides.app, sides.su
    customer = await shared_customer(su, sides.a, sides.b)
    await su.execute("INSERT INTO customer_keys (customer_id, kek_version, wrapped_key)"
                     " VALUES ($1, 1, '\\x0102')", customer)
    await su.execute("INSERT INTO customer_prohibitions (customer_id, use, channel,"
                     " received_at, recorded_by) VALUES ($1, 'direct_marketing', 'phone',"
                     " now(), 'b-clerk')", customer)
    async with scope_of(app, sides.a):
        assert await app.fetchval("SELECT count(*) FROM customer_keys"
                                  " WHERE customer_id = $1", customer) == 1
        assert await app.execute("DELETE FROM customer_keys WHERE customer_id = $1",
                                 customer) == "DELETE 0"
        assert await app.execute("UPDATE customer_keys SET wrapped_key = '\\x00'"
                                 " WHERE customer_id = $1", customer) == "UPDATE 0"
        assert await app.execute("DELETE FROM customer_prohibitions WHERE customer_id = $1",
                                 customer) == "DELETE 0"
    assert await su.fetchval("SELECT wrapped_key FROM customer_keys WHERE customer_id = $1",
                             customer) == b"\x01\x02"
    assert await su.fetchval("SELECT recorded_by FROM customer_prohibitions"
                             " WHERE customer_id = $1", customer) == "b-clerk"
    # Erasure, which acts for every company, destroys the key.
    async with scope_of(app):
        assert await app.execute("DELETE FROM customer_keys WHERE customer_id = $1",
                                 customer) == "DELETE 1"


async def test_the_runtime_role_rewrites_and_removes_no_append_only_record(
        sides: Sides, stack: Stack, database: str) -> None:
    app, su, a = sides.app, sides.su, sides.a
    disclosure = await su.fetchval(
        "INSERT INTO disclosures (company_id, disclosed_by, recipient, recipient_country,"
        " purpose, legal_basis, fields, customer_ids, customer_count) VALUES ($1, 'dpo',"
        " 'Perintä Oy', 'FI', 'debt_collection', 'contract', '{name}', '{}', 0) RETURNING id", a)
    tombstone = await su.fetchval(
        "INSERT INTO recording_tombstones (id, company_id, external_id, erased_by, reason)"
        " VALUES (gen_random_uuid(), $1, 'call-1', 'dpo', 'erasure') RETURNING id", a)
    never_done = [
        "UPDATE disclosures SET recipient = 'someone else'", "DELETE FROM disclosures",
        "UPDATE recording_tombstones SET reason = 'none'", "DELETE FROM recording_tombstones",
        "UPDATE audit_checkpoints SET object_key = 'x'", "DELETE FROM audit_checkpoints",
        "UPDATE purge_log SET reason = 'x'", "DELETE FROM purge_log",
        "DELETE FROM purge_runs", "DELETE FROM audit_head",
        "INSERT INTO audit_head (seq, hash) SELECT seq, hash FROM audit_head WHERE false",
        "DELETE FROM legal_holds", "DELETE FROM legal_hold_recordings",
        "DELETE FROM legal_hold_customers", "DELETE FROM erasure_ledger",
    ]
    # A restore gives the runtime role its grants again, through the same function.
    owner = await asyncpg.connect(stack.owner_url(database))
    try:
        await owner.execute("SELECT tallenne_grant_runtime()")
    finally:
        await owner.close()
    for scope in ((a,), ()):
        async with scope_of(app, *scope):
            for sql in never_done:
                await refused(app, sql)
    assert await su.fetchval("SELECT recipient FROM disclosures WHERE id = $1",
                             disclosure) == "Perintä Oy"
    assert await su.fetchval("SELECT reason FROM recording_tombstones WHERE id = $1",
                             tombstone) == "erasure"


async def test_a_company_records_no_request_history_or_form_version_of_what_is_not_its_own(
        sides: Sides) -> None:
    app, su, a, b = sides.app, sides.su, sides.a, sides.b
    b_only = await shared_customer(su, b)
    criteria = '[{"key": "k", "label": "Kohteliaisuus", "max_score": 1}]'
    async with scope_of(app, a):
        await refused(app, "INSERT INTO access_requests (customer_id, verified_by,"
                      " requested_by, received_at, due_at) VALUES ($1, 'in_person', 'a-dpo',"
                      " now(), now() + interval '1 month')", b_only)
        for company in (a, b):
            await refused(app, "INSERT INTO customer_history (customer_id, company_id,"
                          " change, changed_by) VALUES ($1, $2, 'updated', 'a-clerk')",
                          b_only, company)
        # "perus" is group-wide: a company's version of it would be scored as the group's.
        for version_company in (a, None):
            await refused(app, "INSERT INTO evaluation_form_versions (form, version,"
                          " company_id, criteria, created_by) VALUES ('perus', 2, $1, $2,"
                          " 'a-admin')", version_company, criteria)
    assert await su.fetchval("SELECT count(*) FROM access_requests") == 0
    assert await su.fetchval("SELECT count(*) FROM customer_history") == 0
    assert await su.fetchval("SELECT max(version) FROM evaluation_form_versions"
                             " WHERE form = 'perus'") == 1
    # An all-companies admin still versions the group-wide form.
    async with scope_of(app):
        await app.execute("INSERT INTO evaluation_form_versions (form, version, company_id,"
                          " criteria, created_by) VALUES ('perus', 2, NULL, $1, 'admin')",
                          criteria)
    assert await su.fetchval("SELECT max(version) FROM evaluation_form_versions"
                             " WHERE form = 'perus'") == 2


async def test_a_company_attaches_no_membership_to_another_companys_customer(
        sides: Sides) -> None:
    """Attached by id, a membership would open the customer's record to the company."""
    app, su, a, b = sides.app, sides.su, sides.a, sides.b
    b_only = await shared_customer(su, b)
    async with scope_of(app, a):
        await refused(app, "INSERT INTO customer_memberships (customer_id, company_id,"
                      " customer_number) VALUES ($1, $2, 'A-9')", b_only, a)
        assert await app.fetchval("SELECT count(*) FROM customers WHERE id = $1", b_only) == 0
    assert await su.fetchval("SELECT count(*) FROM customer_memberships"
                             " WHERE customer_id = $1", b_only) == 1


async def test_a_company_reads_only_its_own_history_rows_of_a_shared_customer(
        sides: Sides) -> None:
    app, su, a, b = sides.app, sides.su, sides.a, sides.b
    customer = await shared_customer(su, a, b)
    for company, clerk in ((a, "a-clerk"), (b, "b-clerk"), (None, "migration")):
        await su.execute("INSERT INTO customer_history (customer_id, company_id, change,"
                         " changed_by) VALUES ($1, $2, 'membership_added', $3)",
                         customer, company, clerk)
    read = "SELECT changed_by FROM customer_history WHERE customer_id = $1 ORDER BY id"
    async with scope_of(app, a):
        assert [r[0] for r in await app.fetch(read, customer)] == ["a-clerk", "migration"]
    async with scope_of(app):
        assert [r[0] for r in await app.fetch(read, customer)] == [
            "a-clerk", "b-clerk", "migration"]


async def test_serve_refuses_a_runtime_role_with_rights_on_a_table_without_row_level_security(
        settings: Settings, stack: Stack, database: str) -> None:
    """A table a migration made without securing it gets the runtime role's rights from the
    default privileges; the service will not start beside it."""
    owner = await asyncpg.connect(stack.owner_url(database))
    try:
        await owner.execute("CREATE TABLE call_notes (company_id uuid, note text)")
    finally:
        await owner.close()
    code, lines = await serve_exit(settings)
    assert_refused(code, lines, "'call_notes'", "row-level security")
