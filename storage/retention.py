"""Retention policies and the recomputation of recordings' retain_until when one changes.

The rule itself (a record's time plus its policy's keep_days) is the SQL function
`tallenne_retain_until` of migration 010; this module reads and writes the policies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from storage.db import Scope, scoped
from storage.errors import InvalidInput

RECOMPUTE_BATCH = 5000


@dataclass(frozen=True)
class Policy:
    """How long a company keeps one kind of data for one purpose."""

    company: str  # the company's code
    kind: str
    purpose: str
    keep_days: int


@dataclass(frozen=True)
class PolicyChange:
    company_id: UUID
    policy: Policy
    old_keep_days: int | None


async def list_policies(conn: asyncpg.Connection, scope: Scope) -> list[Policy]:
    """The policies of the companies in `scope`."""
    rows = await conn.fetch(
        "SELECT c.code AS company, p.kind, p.purpose, p.keep_days FROM retention_policies p"
        " JOIN companies c ON c.id = p.company_id"
        " WHERE $1 OR c.id = ANY($2::uuid[]) ORDER BY c.code, p.kind, p.purpose",
        scope.all_companies, sorted(scope.company_ids),
    )
    return [Policy(**dict(r)) for r in rows]


async def upsert_policies(
    conn: asyncpg.Connection, policies: Sequence[Policy], updated_by: str, scope: Scope
) -> list[PolicyChange]:
    """Upsert in the caller's transaction; returns the rows whose keep_days changed. A
    company outside `scope` is as unknown as one that does not exist."""
    codes = sorted({p.company for p in policies})
    found = {r["code"]: r["id"] for r in await conn.fetch(
        "SELECT code, id FROM companies WHERE code = ANY($1::text[])", codes)
        if scope.allows(r["id"])}
    unknown = [c for c in codes if c not in found]
    if unknown:
        raise InvalidInput("unknown company", [(["body", "items", "company"],
                                                f"unknown company {unknown[0]!r}")])
    changes: list[PolicyChange] = []
    for policy in policies:
        company_id = found[policy.company]
        old = await conn.fetchval(
            "SELECT keep_days FROM retention_policies WHERE company_id = $1 AND kind = $2"
            " AND purpose = $3 FOR UPDATE",
            company_id, policy.kind, policy.purpose,
        )
        if old == policy.keep_days:
            continue
        await conn.execute(
            "INSERT INTO retention_policies (company_id, kind, purpose, keep_days, updated_by)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (company_id, kind, purpose) DO UPDATE"
            " SET keep_days = EXCLUDED.keep_days, updated_by = EXCLUDED.updated_by,"
            " updated_at = now()",
            company_id, policy.kind, policy.purpose, policy.keep_days, updated_by,
        )
        changes.append(PolicyChange(company_id, policy, old))
    return changes


async def recompute_recordings(pool: asyncpg.Pool, company_id: UUID, purpose: str) -> int:
    """Re-stamp retain_until of the company's recordings of this purpose, one short
    transaction per batch (keyset on id), so ingest and replay never wait on one giant
    update. Returns how many recordings moved."""
    moved = 0
    after = UUID(int=0)
    while True:
        async with scoped(pool, Scope.everything()) as conn:
            rows = await conn.fetch(
                "WITH batch AS (SELECT id FROM recordings WHERE company_id = $1"
                " AND purpose = $2 AND id > $3 ORDER BY id LIMIT $4),"
                " moved AS (UPDATE recordings r SET retain_until = tallenne_retain_until("
                " r.company_id, 'recording', r.purpose, r.started_at) FROM batch"
                " WHERE r.id = batch.id AND r.retain_until IS DISTINCT FROM"
                " tallenne_retain_until(r.company_id, 'recording', r.purpose, r.started_at)"
                " RETURNING r.id)"
                " SELECT (SELECT max(id::text) FROM batch) AS last,"
                " (SELECT count(*) FROM moved) AS moved",
                company_id, purpose, after, RECOMPUTE_BATCH,
            )
        last, count = rows[0]["last"], int(rows[0]["moved"])
        moved += count
        if last is None:
            return moved
        after = UUID(last)
