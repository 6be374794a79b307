"""Typed keys of every shared resource the application holds."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from service.settings import Settings
from storage.objects import ObjectStore
from storage.signed_note import NoteSigner

if TYPE_CHECKING:
    from service.customers.event_ingest import BatchSlots
    from service.http.api import RouteTable
    from service.http.auth import Principal
    from service.resources import Resources
    from storage.audit import AuditLog
    from storage.checkpoints import CheckpointBucket, LockProbe
    from storage.keyring import KeyRing

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
OBJECTS = web.AppKey("objects", ObjectStore)
KEY_OBJECTS = web.AppKey("key_objects", ObjectStore)  # the key bucket (key snapshot)
AUDIT: web.AppKey[AuditLog] = web.AppKey("audit")
KEYRING: web.AppKey[KeyRing] = web.AppKey("keyring")
CHECKPOINTS: web.AppKey[CheckpointBucket] = web.AppKey("checkpoints")
AUDIT_SIGNER = web.AppKey("audit_signer", NoteSigner)
AUDIT_LOCK: web.AppKey[LockProbe] = web.AppKey("audit_lock")  # start-up probe's finding
RESOURCES: web.AppKey[Resources] = web.AppKey("resources")  # the members below, together
BATCH_SLOTS: web.AppKey[BatchSlots] = web.AppKey("batch_slots")  # web-event batches
ROUTE_TABLE: web.AppKey[RouteTable] = web.AppKey("route_table")  # every endpoint (OpenAPI)
PRINCIPAL_KEY: web.RequestKey[Principal] = web.RequestKey("principal")
REQUEST_ID_KEY = web.RequestKey("request_id", str)

__all__ = ["AUDIT", "AUDIT_LOCK", "AUDIT_SIGNER", "BATCH_SLOTS", "CHECKPOINTS", "KEY_OBJECTS",
           "KEYRING", "OBJECTS", "POOL", "PRINCIPAL_KEY", "REQUEST_ID_KEY", "RESOURCES",
           "ROUTE_TABLE", "SETTINGS"]
if TYPE_CHECKING:
    __all__ += ["AuditLog", "KeyRing", "Principal"]
