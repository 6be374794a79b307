"""The resources every operation works with, opened once per process.

The service opens them when it starts (`create_app` puts each under its typed app key) and a
CLI command opens the same ones without an aiohttp application (`open_resources`). Domain
functions take the members they need, never the application.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import asyncpg

from schemas import personal_id
from schemas.countries import region_in_eu_eea
from service.settings import Settings
from storage.audio.analyser import Analyser
from storage.audit import AuditLog
from storage.crypto import PersonalIdCipher, load_master_key
from storage.customers import reseal_personal_ids
from storage.db import create_pool
from storage.keyring import KeyRing
from storage.keys import load_master_keys
from storage.migrate import migrate_url
from storage.objects import ObjectStore
from storage.roles import check_runtime_role

logger = logging.getLogger(__name__)

POOL_CLOSE_GRACE_S = 10.0


@dataclass(frozen=True)
class Resources:
    settings: Settings
    pool: asyncpg.Pool
    objects: ObjectStore  # the audio bucket
    key_objects: ObjectStore  # the key bucket (key snapshot)
    keyring: KeyRing
    audit: AuditLog
    analyser: Analyser  # the threads calls are analysed in


def check_region(region: str) -> None:
    """Audio is never stored outside the EU/EEA: refuse any other object-store region."""
    if not region_in_eu_eea(region):
        raise ValueError(f"the S3 region {region!r} is not inside the EU/EEA")


def object_store(settings: Settings, bucket: str, *, threads: int = 2,
                 credential: tuple[str, str] | None = None) -> ObjectStore:
    """A client of one bucket of the configured S3 service; the service's own credential
    unless another (access key, secret key) is given."""
    assert settings.s3_endpoint and settings.s3_access_key and settings.s3_secret_key
    check_region(settings.s3_region)
    access, secret = credential or (settings.s3_access_key.get_secret_value(),
                                    settings.s3_secret_key.get_secret_value())
    return ObjectStore(settings.s3_endpoint, access, secret, bucket, region=settings.s3_region,
                       secure=settings.s3_secure, threads=threads,
                       timeout_s=settings.s3_timeout_s)


def load_keyring(settings: Settings) -> KeyRing:
    if settings.master_key is None or settings.personal_id_key is None:
        raise ValueError("TALLENNE_MASTER_KEY and TALLENNE_PERSONAL_ID_KEY must be set")
    previous = settings.previous_master_keys
    keyring = KeyRing(
        masters=load_master_keys(settings.master_key.get_secret_value(),
                                 settings.master_key_version,
                                 previous.get_secret_value() if previous else None),
        personal_ids=PersonalIdCipher(
            load_master_key(settings.personal_id_key.get_secret_value())
        ),
    )
    personal_id.set_allow_test_ids(settings.allow_test_ids)
    return keyring


async def close_pool(pool: asyncpg.Pool) -> None:
    """Close gracefully; a connection still held after the grace period is cut, so that a
    stuck task can never keep the process from stopping."""
    try:
        await asyncio.wait_for(pool.close(), POOL_CLOSE_GRACE_S)
    except TimeoutError:
        logger.warning("database connections still in use at shutdown were terminated")
        pool.terminate()


async def open_database(settings: Settings) -> asyncpg.Pool:
    """Migrate (as the owner, when its URL is set), then the service's pool, refused when
    its role could bypass row-level security."""
    assert settings.database_url is not None, "database_url is resolved before the app starts"
    if settings.database_owner_url is not None:
        await migrate_url(settings.database_owner_url.get_secret_value())
    pool = await create_pool(
        settings.database_url.get_secret_value(), max_size=settings.database_pool_size
    )
    try:
        async with pool.acquire() as conn:
            await check_runtime_role(conn)
    except BaseException:
        await pool.close()
        raise
    return pool


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    keyring = load_keyring(settings)
    async with AsyncExitStack() as stack:
        pool = await open_database(settings)
        stack.push_async_callback(close_pool, pool)
        resealed = await reseal_personal_ids(pool, keyring.personal_ids)
        if resealed:
            logger.info("identity codes sealed again, bound to their customer",
                        extra={"resealed": resealed})
        objects = object_store(settings, settings.s3_bucket, threads=settings.s3_threads)
        stack.push_async_callback(objects.close)
        await objects.ensure_bucket()
        # The key bucket is created on the first snapshot written.
        key_objects = object_store(settings, settings.key_bucket)
        stack.push_async_callback(key_objects.close)
        # The audit writer has connections of its own: handlers await an append while
        # holding a connection of the main pool (a replay opens its audit event inside its
        # transaction), so sharing that pool deadlocks once every connection waits on it.
        assert settings.database_url is not None
        audit_pool = await create_pool(settings.database_url.get_secret_value(), max_size=2)
        stack.push_async_callback(close_pool, audit_pool)
        audit = AuditLog(audit_pool)
        await audit.start()
        stack.push_async_callback(audit.stop)
        analyser = Analyser()
        stack.callback(analyser.close)
        yield Resources(settings=settings, pool=pool, objects=objects, key_objects=key_objects,
                        keyring=keyring, audit=audit, analyser=analyser)
