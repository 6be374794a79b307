"""What the service's database role may be: the start-up check behind least privilege.

Row-level security is the company boundary. It does not apply to a superuser or a role with
BYPASSRLS, and the owner of a table can switch it (or the audit trail's triggers) off. The
service therefore refuses to run as any of these, and with rights on a table whose row-level
security is off (unless the table is one of those that need none).
"""

from __future__ import annotations

import asyncpg

from storage.migrate import migration_files

# Tables the runtime role may use without row-level security, each for the reason given.
# Any other table it has a right on must have row-level security enabled and forced: a new
# table gets the runtime role's rights from the default privileges of migration 015.
WITHOUT_ROW_SECURITY = frozenset({
    # The group's companies and their web sites: names and codes, readable by every scope.
    "companies", "web_sites",
    # Accounts, tokens and sign-in: read before a caller (and so a scope) is known; whom a
    # caller may manage is decided by service/identity/accounts.py.
    "users", "user_companies", "api_tokens", "token_companies", "sessions", "login_failures",
    # The first answer to a web-event batch, found by the account that sent it and its key.
    "idempotency_keys",
    # The audit chain's head and checkpoints (sequence numbers and hashes), and which change
    # of the key store the key snapshot has caught up with (counters).
    "audit_head", "audit_checkpoints", "key_snapshot_state",
    # Retention policies (periods per company; storage/retention.py writes only the caller's)
    # and purge runs and their log (group-wide work: ids, counts, reasons).
    "retention_policies", "purge_runs", "purge_log",
    # Legal-hold cases: placed and released on an all-companies connection, the caller's
    # scope checked against every record of the case by storage/legal_holds.py.
    "legal_holds", "legal_hold_recordings", "legal_hold_customers",
    # The migration record (SELECT only).
    "schema_migrations",
})


class UnsafeDatabaseRole(Exception):
    """The runtime role may bypass row-level security, or the schema is not ready for it."""


async def unsafe_role_reason(conn: asyncpg.Connection) -> str | None:
    """Why this connection's role must not run the service, or None when it is fit."""
    role = await conn.fetchrow(
        "SELECT rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
    )
    assert role is not None
    name = role["rolname"]
    if role["rolsuper"]:
        return f"the database role {name!r} of TALLENNE_DATABASE_URL is a superuser"
    if role["rolbypassrls"]:
        return f"the database role {name!r} of TALLENNE_DATABASE_URL has BYPASSRLS"
    owned = await conn.fetchrow(
        "SELECT c.relname, pg_get_userbyid(c.relowner) AS owner FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')"
        " AND pg_has_role(current_user, c.relowner, 'MEMBER')"
        " ORDER BY c.relrowsecurity DESC, c.relname LIMIT 1"
    )
    if owned is not None:
        via = "" if owned["owner"] == name else f" (through membership of {owned['owner']!r})"
        return (f"the database role {name!r} of TALLENNE_DATABASE_URL owns table "
                f"{owned['relname']!r}{via}; the tables must belong to the owner role of "
                "TALLENNE_DATABASE_OWNER_URL")
    # A role it may SET ROLE to counts as its own: a superuser or BYPASSRLS role behind it
    # bypasses row-level security all the same.
    above = await conn.fetchrow(
        "SELECT rolname, rolsuper FROM pg_roles WHERE (rolsuper OR rolbypassrls)"
        " AND rolname <> current_user AND pg_has_role(current_user, oid, 'MEMBER')"
        " ORDER BY rolsuper DESC, rolname LIMIT 1"
    )
    if above is not None:
        what = "a superuser" if above["rolsuper"] else "a role with BYPASSRLS"
        return (f"the database role {name!r} of TALLENNE_DATABASE_URL is a member of "
                f"{above['rolname']!r}, {what}")
    # The owner of the schema (on PostgreSQL 15 and later, the database's owner through
    # pg_database_owner) may drop any table in it; the owner of a function may rewrite it.
    schema = await conn.fetchval(
        "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'"
        " AND pg_has_role(current_user, nspowner, 'MEMBER')"
    )
    if schema is not None:
        return (f"the database role {name!r} of TALLENNE_DATABASE_URL owns the schema "
                f"'public' (through {schema!r}): it could drop every table; the database "
                "and its schema must belong to the owner role of TALLENNE_DATABASE_OWNER_URL")
    function = await conn.fetchval(
        "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'public' AND pg_has_role(current_user, p.proowner, 'MEMBER')"
        " ORDER BY p.proname LIMIT 1"
    )
    if function is not None:
        return (f"the database role {name!r} of TALLENNE_DATABASE_URL owns function "
                f"{function!r}; the functions must belong to the owner role of "
                "TALLENNE_DATABASE_OWNER_URL")
    return None


async def unsecured_table_reason(conn: asyncpg.Connection) -> str | None:
    """Why the role's rights reach a table of `public` whose row-level security is not
    enabled and forced (outside WITHOUT_ROW_SECURITY), or None. An extension's own tables
    and views (pg_stat_statements, PostGIS's spatial_ref_sys) are not ours to secure."""
    found = await conn.fetchrow(
        "SELECT c.relname, current_user AS role FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"
        " AND NOT (c.relrowsecurity AND c.relforcerowsecurity)"
        " AND c.relname <> ALL ($1::text[])"
        " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass"
        " AND d.objid = c.oid AND d.deptype = 'e')"
        " AND (has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE,"
        " REFERENCES, TRIGGER')"
        " OR has_any_column_privilege(c.oid, 'SELECT, INSERT, UPDATE, REFERENCES'))"
        " ORDER BY c.relname LIMIT 1",
        sorted(WITHOUT_ROW_SECURITY),
    )
    if found is None:
        return None
    return (f"the database role {found['role']!r} of TALLENNE_DATABASE_URL has rights on "
            f"table {found['relname']!r}, whose row-level security "
            "is not enabled and forced; secure it in a migration (or, holding no company's "
            "data, add it to storage.roles.WITHOUT_ROW_SECURITY)")


async def pending_migrations(conn: asyncpg.Connection) -> list[str]:
    """Migrations not yet applied to this database (every one when it was never migrated)."""
    if not await conn.fetchval("SELECT to_regclass('public.schema_migrations') IS NOT NULL"):
        return [version for version, _ in migration_files()]
    done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    return [version for version, _ in migration_files() if version not in done]


async def check_runtime_role(conn: asyncpg.Connection) -> None:
    """Raise UnsafeDatabaseRole with a one-line reason unless the service may run as this
    connection's role on this schema."""
    reason = await unsafe_role_reason(conn)
    if reason is not None:
        raise UnsafeDatabaseRole(f"refusing to start: {reason}")
    pending = await pending_migrations(conn)
    if pending:
        raise UnsafeDatabaseRole(
            f"refusing to start: the database schema lacks migration {pending[0]}; run "
            "`tallenne migrate` with TALLENNE_DATABASE_OWNER_URL (or set it for the service)"
        )
    # After the migrations: a schema behind is told to migrate, not that a table is open.
    unsecured = await unsecured_table_reason(conn)
    if unsecured is not None:
        raise UnsafeDatabaseRole(f"refusing to start: {unsecured}")
