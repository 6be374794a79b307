"""The asyncpg pool, its codecs, and company scoping of every customer-data query.

Row-level security policies compare each row's company with the transaction-local settings
written by `scoped()`; a connection that never called it sees no scoped rows at all.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from uuid import UUID

import asyncpg

from storage.errors import Unavailable


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A released connection is not reset beyond what asyncpg always does (roll back an
    open transaction, forget listeners): this code keeps no session state to clear. Scope
    settings are transaction-local (`apply_scope`), there is no LISTEN, no session SET and no
    held cursor, and each session advisory lock is released by its holder in a `finally`.
    Skipping `RESET ALL` & co. saves a round trip on every request."""


# What a lost or read-only primary looks like to a client: the server went away (killed,
# restarting, network), refuses connections while it starts or recovers, or answers as a
# standby (a failover not yet finished, or a DSN listing hosts of which none is writable).
# OSError also covers a write to an HTTP client that hung up (ConnectionResetError): callers
# serving a client tell that case apart before blaming the database.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)

# A transaction PostgreSQL rolled back to break a lock cycle or to keep concurrent
# transactions serialisable: none of it was written, and the same request may succeed.
TRANSACTION_ROLLED_BACK: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
)


async def create_pool(dsn: str, *, max_size: int = 10) -> asyncpg.Pool:
    """A pool of the service's connections. `dsn` may list several hosts
    (`postgresql://u:p@primary:5432,standby:5432/db?target_session_attrs=read-write`):
    connections then go to whichever of them is the writable primary, also after a
    failover."""
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=max_size,
            init=_init_connection,
            reset=_keep_session,
            command_timeout=60,
            server_settings={"application_name": "tallenne"},
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise Unavailable(f"PostgreSQL is not reachable: {exc.__class__.__name__}") from exc
    assert pool is not None
    return pool


@dataclass(frozen=True)
class Scope:
    """The companies a caller may see; `all_companies` for admins and system jobs."""

    company_ids: frozenset[UUID] = field(default_factory=frozenset)
    all_companies: bool = False

    @classmethod
    def everything(cls) -> Scope:
        return cls(all_companies=True)

    @classmethod
    def of(cls, company_ids: Iterable[UUID]) -> Scope:
        return cls(company_ids=frozenset(company_ids))

    def allows(self, company_id: UUID) -> bool:
        return self.all_companies or company_id in self.company_ids


async def apply_scope(conn: asyncpg.Connection, scope: Scope, *, durable: bool = True) -> None:
    """Write the scope into transaction-local settings that the RLS policies read (by the
    database's own `tallenne_set_scope`, which single self-scoping statements call too).

    `durable=False` lets the commit return before its WAL reaches disk (for bookkeeping a
    crash may lose, such as replay windows); it rides on the same round trip.
    """
    await conn.execute(
        "SELECT tallenne_set_scope($1, $2)"
        + ("" if durable else ", set_config('synchronous_commit', 'off', true)"),
        scope.all_companies,
        sorted(scope.company_ids),
    )


@asynccontextmanager
async def scoped(
    pool: asyncpg.Pool, scope: Scope, *, durable: bool = True
) -> AsyncIterator[asyncpg.Connection]:
    """A connection inside a transaction that sees only the scope's companies."""
    async with pool.acquire() as conn, scoped_on(conn, scope, durable=durable):
        yield conn


@asynccontextmanager
async def scoped_on(
    conn: asyncpg.Connection, scope: Scope, *, durable: bool = True
) -> AsyncIterator[asyncpg.Connection]:
    """A transaction on a connection the caller already holds, seeing only the scope's
    companies (for work that must not take a second connection of the pool)."""
    async with conn.transaction():
        await apply_scope(conn, scope, durable=durable)
        yield conn


async def ping(conn: asyncpg.Connection) -> None:
    """A round trip to the server (readiness)."""
    await conn.fetchval("SELECT 1")
