"""The site registry in PostgreSQL: web sites and the company each belongs to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from schemas.sites import SiteRow
from storage.db import Scope
from storage.errors import InvalidInput


@dataclass(frozen=True)
class Site:
    site: str
    company: str  # the company's code
    updated_by: str
    updated_at: datetime


@dataclass(frozen=True)
class SiteMove:
    """One change to the registry: added (old_company None), moved, or removed (company
    None)."""

    site: str
    old_company: str | None
    company: str | None


async def list_sites(conn: asyncpg.Connection, scope: Scope) -> list[Site]:
    """The sites of the companies in `scope` (the shippers' lookup, `site_companies`, sees
    every site; a person sees only those of their companies)."""
    rows = await conn.fetch(
        "SELECT s.site, c.code AS company, s.updated_by, s.updated_at"
        " FROM web_sites s JOIN companies c ON c.id = s.company_id"
        " WHERE $1::boolean OR s.company_id = ANY($2::uuid[]) ORDER BY s.site",
        scope.all_companies, list(scope.company_ids),
    )
    return [Site(**dict(r)) for r in rows]


async def site_companies(conn: asyncpg.Connection) -> dict[str, UUID]:
    """Every registered site with its company's id (the registry is a few dozen rows)."""
    return {r["site"]: r["company_id"]
            for r in await conn.fetch("SELECT site, company_id FROM web_sites")}


async def apply_rows(
    conn: asyncpg.Connection, rows: Sequence[SiteRow], scope: Scope, actor: str
) -> list[SiteMove]:
    """Upsert the rows (company null removes the site); the changes made, in row order.

    A company outside `scope` is refused as if it did not exist, and so is moving or
    removing a site whose present company lies outside it.
    """
    companies = {r["code"]: r["id"] for r in await conn.fetch("SELECT id, code FROM companies")
                 if scope.allows(r["id"])}
    codes = {company_id: code for code, company_id in companies.items()}
    problems: list[tuple[list[str | int], str]] = []
    for i, row in enumerate(rows):
        if row.company is not None and row.company not in companies:
            problems.append((["body", i, "company"], f"unknown company code {row.company}"))
    seen: set[str] = set()
    for i, row in enumerate(rows):
        if row.site in seen:
            problems.append((["body", i, "site"], f"site {row.site} is given twice"))
        seen.add(row.site)
    if problems:
        raise InvalidInput("the site rows are not valid", problems)
    async with conn.transaction():
        present = {r["site"]: r["company_id"] for r in await conn.fetch(
            "SELECT site, company_id FROM web_sites WHERE site = ANY($1::text[]) FOR UPDATE",
            [row.site for row in rows])}
        for i, row in enumerate(rows):
            old = present.get(row.site)
            if old is not None and not scope.allows(old):
                problems.append((["body", i, "site"],
                                 f"site {row.site} belongs to a company outside your scope"))
        if problems:
            raise InvalidInput("the site rows are not valid", problems)
        changes: list[SiteMove] = []
        for row in rows:
            old = present.get(row.site)
            old_code = codes.get(old) if old is not None else None
            if row.company is None:
                if old is None:
                    continue
                await conn.execute("DELETE FROM web_sites WHERE site = $1", row.site)
            elif old_code == row.company:
                continue
            else:
                await conn.execute(
                    "INSERT INTO web_sites (site, company_id, updated_by) VALUES ($1, $2, $3)"
                    " ON CONFLICT (site) DO UPDATE SET company_id = EXCLUDED.company_id,"
                    " updated_by = EXCLUDED.updated_by, updated_at = now()",
                    row.site, companies[row.company], actor,
                )
            changes.append(SiteMove(site=row.site, old_company=old_code, company=row.company))
    return changes
