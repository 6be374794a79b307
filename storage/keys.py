"""The key hierarchy of recorded audio: master key → customer or company key → data key.

Each wrap binds the key to the record it belongs to (the AAD context), so a wrapped key copied
onto another customer, company or recording no longer unwraps. Destroying a customer's key
makes every recording wrapped by it unreadable, backups included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from uuid import UUID

import asyncpg

from storage.crypto import new_key, unwrap_key, wrap_key
from storage.errors import IntegrityError, NotFound

KeyOwner = Literal["customer", "company"]


def customer_key_context(customer_id: UUID) -> bytes:
    return b"tallenne customer key:" + customer_id.bytes


def company_key_context(company_id: UUID) -> bytes:
    return b"tallenne company key:" + company_id.bytes


def recording_key_context(recording_id: UUID, owner: KeyOwner, owner_id: UUID) -> bytes:
    return b"tallenne recording key:" + recording_id.bytes + owner.encode() + owner_id.bytes


@dataclass(frozen=True)
class OwnerKey:
    """A plaintext customer or company key, held only for the length of one request."""

    owner: KeyOwner
    owner_id: UUID
    key: bytes


async def company_key(
    conn: asyncpg.Connection, master_key: bytes, company_id: UUID, *, create: bool = True
) -> OwnerKey:
    """The company's key, created on first use; concurrent creators agree on one."""
    if create:
        await conn.execute(
            "INSERT INTO company_keys (company_id, wrapped_key) VALUES ($1, $2)"
            " ON CONFLICT (company_id) DO NOTHING",
            company_id,
            wrap_key(master_key, new_key(), context=company_key_context(company_id)),
        )
    wrapped = await conn.fetchval(
        "SELECT wrapped_key FROM company_keys WHERE company_id = $1", company_id
    )
    return open_owner_key(master_key, "company", company_id, wrapped)


async def customer_key(
    conn: asyncpg.Connection, master_key: bytes, customer_id: UUID, *, create: bool = True
) -> OwnerKey:
    """The customer's key, created on first use; IntegrityError once it has been shredded."""
    lock = " FOR UPDATE" if create else ""
    row = await conn.fetchrow(
        f"SELECT wrapped_key, erased_at FROM customers WHERE id = $1{lock}", customer_id
    )
    if row is None:
        raise NotFound("no such customer")
    wrapped = row["wrapped_key"]
    if wrapped is None:
        if row["erased_at"] is not None or not create:
            raise IntegrityError("the customer's key has been destroyed")
        wrapped = wrap_key(master_key, new_key(), context=customer_key_context(customer_id))
        await conn.execute(
            "UPDATE customers SET wrapped_key = $2 WHERE id = $1", customer_id, wrapped
        )
    return open_owner_key(master_key, "customer", customer_id, wrapped)


async def owner_key(
    conn: asyncpg.Connection,
    master_key: bytes,
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
        return await customer_key(conn, master_key, owner_id, create=create)
    return await company_key(conn, master_key, owner_id, create=create)


def open_owner_key(
    master_key: bytes, owner: KeyOwner, owner_id: UUID, wrapped: bytes | None
) -> OwnerKey:
    """The plaintext owner key from its wrapped form (as stored, or read alongside a
    recording by storage.recordings.get_for_replay); IntegrityError when it is gone."""
    if wrapped is None:
        if owner == "customer":
            raise IntegrityError("the customer's key has been destroyed")
        raise IntegrityError("the company has no key")
    context = (customer_key_context(owner_id) if owner == "customer"
               else company_key_context(owner_id))
    return OwnerKey(owner, owner_id, unwrap_key(master_key, bytes(wrapped), context=context))


def wrap_data_key(owner: OwnerKey, recording_id: UUID, data_key: bytes) -> bytes:
    context = recording_key_context(recording_id, owner.owner, owner.owner_id)
    return wrap_key(owner.key, data_key, context=context)


def unwrap_data_key(owner: OwnerKey, recording_id: UUID, wrapped: bytes) -> bytes:
    context = recording_key_context(recording_id, owner.owner, owner.owner_id)
    return unwrap_key(owner.key, wrapped, context=context)
