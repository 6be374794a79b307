"""Typed keys of every shared resource the application and a request hold, in one place."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from service.settings import Settings
from storage.objects import ObjectStore
from storage.signed_note import NoteSigner

if TYPE_CHECKING:
    from schemas.ip import Network
    from service.customers.event_ingest import BatchSlots
    from service.exports.jobs import ExportContext
    from service.http.api import Ahead, RouteTable
    from service.http.principal import Principal
    from service.recordings.analysis_queue import AnalysisQueue
    from service.recordings.ingest import Uploads
    from service.recordings.replay_reads import Locators
    from service.recordings.windows import ReplayWindows
    from service.resources import Resources
    from storage.audit import AuditLog
    from storage.checkpoints import CheckpointBucket, LockProbe
    from storage.keyring import KeyRing

# Application: shared resources.
SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
OBJECTS = web.AppKey("objects", ObjectStore)
KEY_OBJECTS = web.AppKey("key_objects", ObjectStore)  # the key bucket (key snapshot)
AUDIT: web.AppKey[AuditLog] = web.AppKey("audit")
KEYRING: web.AppKey[KeyRing] = web.AppKey("keyring")
CHECKPOINTS: web.AppKey[CheckpointBucket] = web.AppKey("checkpoints")
AUDIT_SIGNER = web.AppKey("audit_signer", NoteSigner)
AUDIT_LOCK: web.AppKey[LockProbe] = web.AppKey("audit_lock")  # start-up probe's finding
RESOURCES: web.AppKey[Resources] = web.AppKey("resources")  # the members above, together
BATCH_SLOTS: web.AppKey[BatchSlots] = web.AppKey("batch_slots")  # web-event batches
ROUTE_TABLE: web.AppKey[RouteTable] = web.AppKey("route_table")  # every endpoint (OpenAPI)
TRUSTED_PROXIES: web.AppKey[tuple[Network, ...]] = web.AppKey("trusted_proxies")

# Application: state of the capability packages.
UPLOADS: web.AppKey[Uploads] = web.AppKey("uploads")  # uploads under way, their memory
LOCATORS: web.AppKey[Locators] = web.AppKey("replay_locators")
REPLAY_WINDOWS: web.AppKey[ReplayWindows] = web.AppKey("replay_windows")
ANALYSIS_QUEUE: web.AppKey[AnalysisQueue] = web.AppKey("analysis_queue")
EXPORTS: web.AppKey[ExportContext] = web.AppKey("exports")
EXPORT_WAKE = web.AppKey("export_wake", asyncio.Event)
EXPORT_WORKER = web.AppKey("export_worker", asyncio.Task[None])
PURGE_TASKS = web.AppKey("purge_tasks", set[asyncio.Task[None]])

# Request.
PRINCIPAL_KEY: web.RequestKey[Principal] = web.RequestKey("principal")
REQUEST_ID_KEY = web.RequestKey("request_id", str)
CLIENT_ADDRESS = web.RequestKey("client_address", str)
RESPONSE_STARTED_KEY = web.RequestKey("response_started", bool)
# Where the handler finds the work its endpoint started ahead; it owns it from then on.
AHEAD_KEY: web.RequestKey[Ahead] = web.RequestKey("ahead")
