"""The application factory: settings in, a ready-to-run aiohttp Application out."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from schemas.ip import parse_networks
from service.audit.checkpoints import checkpoint_ctx
from service.audit.routes import routes as audit_routes
from service.customers.event_ingest import BatchSlots
from service.customers.routes import routes as customer_routes
from service.exports.routes import routes as export_routes
from service.exports.worker import export_worker_ctx
from service.http.api import RouteTable, add_routes
from service.http.keys import (
    AUDIT,
    BATCH_SLOTS,
    KEY_OBJECTS,
    KEYRING,
    LOCATORS,
    OBJECTS,
    POOL,
    RESOURCES,
    ROUTE_TABLE,
    SETTINGS,
    TRUSTED_PROXIES,
    UPLOADS,
)
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
from service.recordings.analysis_queue import analysis_queue_ctx
from service.recordings.ingest import Uploads
from service.recordings.reconciler import reconciler_ctx
from service.recordings.replay_reads import Locators
from service.recordings.routes import routes as recording_routes
from service.recordings.scrub import scrub_ctx
from service.recordings.windows import replay_windows_ctx
from service.resources import open_resources
from service.retention.routes import routes as retention_routes
from service.retention.scheduler import purge_scheduler_ctx
from service.rights.routes import routes as rights_routes
from service.settings import Settings
from service.webui.routes import routes as webui_routes

logger = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "webui" / "static"

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


async def resources_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_resources(app[SETTINGS]) as resources:
        app[RESOURCES] = resources
        app[POOL] = resources.pool
        app[OBJECTS] = resources.objects
        app[KEY_OBJECTS] = resources.key_objects
        app[KEYRING] = resources.keyring
        app[AUDIT] = resources.audit
        yield


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[request_context, problem_documents, authorisation],
        client_max_size=1024**2,
    )
    app[SETTINGS] = settings
    app[TRUSTED_PROXIES] = parse_networks(settings.trusted_proxies)
    app[LOCATORS] = Locators()
    app[UPLOADS] = Uploads(settings.max_uploads_in_flight)
    app[BATCH_SLOTS] = BatchSlots(settings)
    app.on_response_prepare.append(mark_response_started)
    app.cleanup_ctx.extend(
        [resources_ctx, key_store_ctx, checkpoint_ctx,
         purge_scheduler_ctx, reconciler_ctx, replay_windows_ctx, scrub_ctx,
         export_worker_ctx, housekeeping_ctx, analysis_queue_ctx]
    )
    app[ROUTE_TABLE] = ROUTES
    add_routes(app, ROUTES)
    app.router.add_static("/static", STATIC_DIR)
    return app
