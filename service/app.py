"""The application factory: settings in, a ready-to-run aiohttp Application out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from aiohttp import web

from schemas import personal_id
from service.audit.checkpoints import checkpoint_ctx
from service.audit.routes import routes as audit_routes
from service.customers.routes import routes as customer_routes
from service.exports.routes import routes as export_routes
from service.exports.views import export_worker_ctx
from service.http.api import RouteTable, add_routes
from service.http.client_address import TRUSTED_PROXIES, parse_networks
from service.http.keys import AUDIT, KEYRING, OBJECTS, POOL, ROUTE_TABLE, SETTINGS
from service.http.middlewares import (
    authorisation,
    mark_response_started,
    problem_documents,
    request_context,
)
from service.identity.routes import routes as identity_routes
from service.keys.store import key_store_ctx
from service.ops.housekeeping import housekeeping_ctx
from service.ops.routes import routes as ops_routes
from service.recordings import replay
from service.recordings.analysis_queue import analysis_queue_ctx
from service.recordings.reconciler import reconciler_ctx
from service.recordings.routes import routes as recording_routes
from service.recordings.scrub import scrub_ctx
from service.recordings.windows import replay_windows_ctx
from service.retention.routes import routes as retention_routes
from service.retention.scheduler import purge_scheduler_ctx
from service.rights.routes import routes as rights_routes
from service.settings import Settings
from service.webui.routes import routes as webui_routes
from storage.audit import AuditLog
from storage.crypto import PersonalIdCipher, load_master_key
from storage.db import create_pool
from storage.keyring import KeyRing
from storage.keys import load_master_keys
from storage.migrate import migrate_url
from storage.objects import ObjectStore
from storage.roles import check_runtime_role

logger = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "webui" / "static"



def check_region(region: str) -> None:
    """Audio is never stored outside the EU/EEA: refuse any other object-store region."""
    from schemas.countries import region_in_eu_eea

    if not region_in_eu_eea(region):
        raise ValueError(f"the S3 region {region!r} is not inside the EU/EEA")


# Every endpoint of the service, package by package, in the router's match order.
ROUTES = RouteTable.join(
    rights_routes,
    audit_routes,
    recording_routes,
    customer_routes,
    export_routes,
    identity_routes,
    ops_routes,
    retention_routes,
    webui_routes,
)

POOL_CLOSE_GRACE_S = 10.0


async def close_pool(pool: asyncpg.Pool) -> None:
    """Close gracefully; a connection still held after the grace period is cut, so that a
    stuck task can never keep the process from stopping."""
    try:
        await asyncio.wait_for(pool.close(), POOL_CLOSE_GRACE_S)
    except TimeoutError:
        logger.warning("database connections still in use at shutdown were terminated")
        pool.terminate()


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
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
    app[POOL] = pool
    yield
    await close_pool(pool)


async def object_store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    assert settings.s3_endpoint and settings.s3_access_key and settings.s3_secret_key
    check_region(settings.s3_region)
    store = ObjectStore(
        settings.s3_endpoint,
        settings.s3_access_key.get_secret_value(),
        settings.s3_secret_key.get_secret_value(),
        settings.s3_bucket,
        region=settings.s3_region,
        secure=settings.s3_secure,
        threads=settings.s3_threads,
        timeout_s=settings.s3_timeout_s,
    )
    await store.ensure_bucket()
    app[OBJECTS] = store
    yield
    await store.close()


async def keyring_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if settings.master_key is None or settings.personal_id_key is None:
        raise ValueError("TALLENNE_MASTER_KEY and TALLENNE_PERSONAL_ID_KEY must be set")
    previous = settings.previous_master_keys
    app[KEYRING] = KeyRing(
        masters=load_master_keys(settings.master_key.get_secret_value(),
                                 settings.master_key_version,
                                 previous.get_secret_value() if previous else None),
        personal_ids=PersonalIdCipher(
            load_master_key(settings.personal_id_key.get_secret_value())
        ),
    )
    personal_id.set_allow_test_ids(settings.allow_test_ids)
    yield


async def audit_ctx(app: web.Application) -> AsyncIterator[None]:
    # The writer has connections of its own: handlers await an append while holding a
    # connection of the main pool (a replay opens its audit event inside its transaction),
    # so sharing that pool deadlocks once every connection waits on the writer.
    settings = app[SETTINGS]
    assert settings.database_url is not None
    pool = await create_pool(settings.database_url.get_secret_value(), max_size=2)
    log = AuditLog(pool)
    await log.start()
    app[AUDIT] = log
    yield
    await log.stop()
    await close_pool(pool)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[request_context, problem_documents, authorisation],
        client_max_size=1024**2,
    )
    app[SETTINGS] = settings
    app[TRUSTED_PROXIES] = parse_networks(settings.trusted_proxies)
    app[replay.LOCATORS] = replay.Locators()
    app.on_response_prepare.append(mark_response_started)
    app.cleanup_ctx.extend(
        [keyring_ctx, database_ctx, object_store_ctx, key_store_ctx, audit_ctx, checkpoint_ctx,
         purge_scheduler_ctx, reconciler_ctx, replay_windows_ctx, scrub_ctx,
         export_worker_ctx, housekeeping_ctx, analysis_queue_ctx]
    )
    app[ROUTE_TABLE] = ROUTES
    add_routes(app, ROUTES)
    app.router.add_static("/static", STATIC_DIR)
    return app
