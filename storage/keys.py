"""The key hierarchy of recorded audio: master key → customer or company key → data key.

Customer and company keys live in the key store (tables `customer_keys` and `company_keys`),
each wrapped by a version of the master key (the key-encryption key, which can be rotated:
`tallenne keys rotate`). Each wrap binds the key to the record it belongs to (the AAD
context), so a wrapped key copied onto another customer, company or recording no longer
unwraps.

Destroying a customer's key makes every recording wrapped by it unreadable. Backups hold no
owner keys: `tallenne backup` dumps the key store's tables without their rows, and the keys
leave the database only in the key snapshot (storage.key_snapshot), which every erasure
overwrites at once. So a backup taken before an erasure, with every secret and the current key
snapshot, no longer opens the erased customer's audio.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

import asyncpg

from storage.crypto import load_master_key, new_key, unwrap_key, wrap_key
from storage.errors import IntegrityError, KeyDestroyed, NotFound

KeyOwner = Literal["customer", "company"]


def customer_key_context(customer_id: UUID) -> bytes:
    return b"tallenne customer key:" + customer_id.bytes


def company_key_context(company_id: UUID) -> bytes:
    return b"tallenne company key:" + company_id.bytes


def owner_key_context(owner: KeyOwner, owner_id: UUID) -> bytes:
    return (customer_key_context(owner_id) if owner == "customer"
            else company_key_context(owner_id))


def recording_key_context(recording_id: UUID, owner: KeyOwner, owner_id: UUID) -> bytes:
    return b"tallenne recording key:" + recording_id.bytes + owner.encode() + owner_id.bytes


@dataclass(frozen=True)
class MasterKeys:
    """The versions of the master key this process knows: `version` wraps every new key,
    any of `keys` unwraps (the previous ones stay configured while a rotation runs)."""

    version: int
    keys: Mapping[int, bytes]

    def __post_init__(self) -> None:
        if self.version not in self.keys:
            raise ValueError("the current master key version has no key")
        if any(v < 1 for v in self.keys):
            raise ValueError("master key versions start at 1")

    @classmethod
    def single(cls, key: bytes, version: int = 1) -> MasterKeys:
        return cls(version, {version: key})

    @property
    def current(self) -> bytes:
        return self.keys[self.version]

    def wrap(self, key: bytes, *, context: bytes) -> tuple[int, bytes]:
        """(version, wrapped) of `key` under the current master key."""
        return self.version, wrap_key(self.current, key, context=context)

    def unwrap(self, version: int, wrapped: bytes, *, context: bytes) -> bytes:
        master = self.keys.get(version)
        if master is None:
            raise IntegrityError(
                f"a key is wrapped by master key version {version}, which is not configured"
                " (TALLENNE_PREVIOUS_MASTER_KEYS)")
        return unwrap_key(master, wrapped, context=context)


_PREVIOUS = re.compile(r"^\s*(\d+)\s*:\s*(\S+)\s*$")


def load_master_keys(current: str, version: int, previous: str | None) -> MasterKeys:
    """The master keys from configuration: the current key and its version, and
    `previous` as "VERSION:BASE64" items separated by commas. Messages never quote a key."""
    keys = {version: load_master_key(current)}
    for item in (previous or "").split(","):
        if not item.strip():
            continue
        match = _PREVIOUS.match(item)
        if match is None:
            raise ValueError("previous master keys are written VERSION:BASE64, comma-separated")
        old = int(match.group(1))
        if old in keys:
            raise ValueError(f"master key version {old} is given twice")
        keys[old] = load_master_key(match.group(2))
    return MasterKeys(version, keys)


@dataclass(frozen=True)
class OwnerKey:
    """A plaintext customer or company key, held only for the length of one request."""

    owner: KeyOwner
    owner_id: UUID
    key: bytes


async def company_key(
    conn: asyncpg.Connection, masters: MasterKeys, company_id: UUID, *, create: bool = True
) -> OwnerKey:
    """The company's key, created on first use; concurrent creators agree on one."""
    if create:
        version, wrapped = masters.wrap(new_key(), context=company_key_context(company_id))
        await conn.execute(
            "INSERT INTO company_keys (company_id, kek_version, wrapped_key) VALUES ($1, $2, $3)"
            " ON CONFLICT (company_id) DO NOTHING",
            company_id, version, wrapped,
        )
    row = await conn.fetchrow(
        "SELECT kek_version, wrapped_key FROM company_keys WHERE company_id = $1", company_id
    )
    return open_owner_key(masters, "company", company_id,
                          row["kek_version"] if row else None, row["wrapped_key"] if row else None)


async def create_customer_key(
    conn: asyncpg.Connection, masters: MasterKeys, customer_id: UUID
) -> OwnerKey:
    """A new key for a customer that has none (a new customer, once its membership exists)."""
    key = new_key()
    version, wrapped = masters.wrap(key, context=customer_key_context(customer_id))
    await conn.execute(
        "INSERT INTO customer_keys (customer_id, kek_version, wrapped_key) VALUES ($1, $2, $3)",
        customer_id, version, wrapped,
    )
    return OwnerKey("customer", customer_id, key)


async def find_customer_key(
    conn: asyncpg.Connection, masters: MasterKeys, customer_id: UUID
) -> OwnerKey | None:
    """The customer's key, or None when there is none (destroyed, or never made)."""
    row = await conn.fetchrow(
        "SELECT kek_version, wrapped_key FROM customer_keys WHERE customer_id = $1", customer_id
    )
    if row is None:
        return None
    return open_owner_key(masters, "customer", customer_id, row["kek_version"],
                          row["wrapped_key"])


async def customer_key(
    conn: asyncpg.Connection, masters: MasterKeys, customer_id: UUID, *, create: bool = True
) -> OwnerKey:
    """The customer's key, created on first use; KeyDestroyed once it has been shredded."""
    lock = " FOR UPDATE OF c" if create else ""
    row = await conn.fetchrow(
        "SELECT c.erased_at, k.kek_version, k.wrapped_key FROM customers c"
        f" LEFT JOIN customer_keys k ON k.customer_id = c.id WHERE c.id = $1{lock}",
        customer_id,
    )
    if row is None:
        raise NotFound("no such customer")
    if row["wrapped_key"] is None:
        if row["erased_at"] is not None or not create:
            raise KeyDestroyed("the customer's key has been destroyed")
        return await create_customer_key(conn, masters, customer_id)
    return open_owner_key(masters, "customer", customer_id, row["kek_version"],
                          row["wrapped_key"])


async def owner_key(
    conn: asyncpg.Connection,
    masters: MasterKeys,
    *,
    owner: KeyOwner,
    owner_id: UUID | None = None,
    company_id: UUID | None = None,
    customer_id: UUID | None = None,
    create: bool = True,
) -> OwnerKey:
    """The customer's or company's key that wraps a recording's data key; `create=False`
    for reading. Pass the recording's `key_owner_id`: a call linked to a customer later
    keeps the key it was stored with until `rewrap_for_customer` moves it. (`company_id` /
    `customer_id` are the older way of naming the owner.)"""
    if owner_id is None:
        owner_id = customer_id if owner == "customer" else company_id
    if owner_id is None:
        raise IntegrityError(f"the {owner} whose key wraps the data key is not named")
    if owner == "customer":
        return await customer_key(conn, masters, owner_id, create=create)
    return await company_key(conn, masters, owner_id, create=create)


def open_owner_key(
    masters: MasterKeys, owner: KeyOwner, owner_id: UUID, kek_version: int | None,
    wrapped: bytes | None,
) -> OwnerKey:
    """The plaintext owner key from its wrapped form (as stored, or read alongside a
    recording by storage.recordings.get_for_replay); KeyDestroyed when it is gone."""
    if wrapped is None or kek_version is None:
        if owner == "customer":
            raise KeyDestroyed("the customer's key has been destroyed")
        raise KeyDestroyed("the company has no key")
    key = masters.unwrap(kek_version, bytes(wrapped), context=owner_key_context(owner, owner_id))
    return OwnerKey(owner, owner_id, key)


def wrap_data_key(owner: OwnerKey, recording_id: UUID, data_key: bytes) -> bytes:
    context = recording_key_context(recording_id, owner.owner, owner.owner_id)
    return wrap_key(owner.key, data_key, context=context)


def unwrap_data_key(owner: OwnerKey, recording_id: UUID, wrapped: bytes) -> bytes:
    context = recording_key_context(recording_id, owner.owner, owner.owner_id)
    return unwrap_key(owner.key, wrapped, context=context)


async def rotate(conn: asyncpg.Connection, masters: MasterKeys, *, batch: int = 500,
                 on_batch: Callable[[int], None] | None = None) -> dict[str, int]:
    """Re-wrap every owner key not yet under the current master key version, a batch per
    transaction (the caller's connection, outside a transaction); returns the count per
    table and tells `on_batch` each batch's count as it commits. Only the wraps change: no
    owner key, data key or audio changes."""
    counts = {"customer_keys": 0, "company_keys": 0}
    for table, column, owner in (("customer_keys", "customer_id", "customer"),
                                 ("company_keys", "company_id", "company")):
        while True:
            async with conn.transaction():
                await conn.execute("SELECT set_config('tallenne.all_companies', 'on', true)")
                rows = await conn.fetch(
                    f"SELECT {column} AS id, kek_version, wrapped_key FROM {table}"
                    f" WHERE kek_version <> $1 ORDER BY {column} LIMIT $2 FOR UPDATE",
                    masters.version, batch,
                )
                for row in rows:
                    context = owner_key_context(owner, row["id"])  # type: ignore[arg-type]
                    plain = masters.unwrap(row["kek_version"], bytes(row["wrapped_key"]),
                                           context=context)
                    version, wrapped = masters.wrap(plain, context=context)
                    await conn.execute(
                        f"UPDATE {table} SET kek_version = $2, wrapped_key = $3"
                        f" WHERE {column} = $1",
                        row["id"], version, wrapped,
                    )
            counts[table] += len(rows)
            if on_batch is not None and rows:
                on_batch(len(rows))
            if len(rows) < batch:
                break
    return counts
