"""Signed audit checkpoints in the service: the checkpoint bucket and its write-only
credential, the Object Lock probe at start-up, and the task that signs the audit head into
the bucket every few minutes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import asyncpg
from aiohttp import web
from prometheus_client import Counter

from service.http.keys import AUDIT_LOCK, AUDIT_SIGNER, CHECKPOINTS, POOL, SETTINGS
from service.ops.tasks import stop_task
from service.resources import object_store
from service.settings import Settings
from storage.checkpoints import (
    CheckpointBucket,
    audit_head_seq,
    latest_checkpoint_seq,
    open_bucket,
    probe_lock,
    write_checkpoint,
)
from storage.crypto import load_master_key
from storage.signed_note import NoteSigner

logger = logging.getLogger(__name__)
CHECKPOINTS_MADE = Counter("tallenne_audit_checkpoints",
                           "Periodic audit checkpoints, by outcome (written, failed)",
                           ["outcome"])

INTERVAL_S = 300.0


def note_signer(settings: Settings) -> NoteSigner:
    if settings.audit_signing_key is None:
        raise ValueError("TALLENNE_AUDIT_SIGNING_KEY must be set")
    seed = load_master_key(settings.audit_signing_key.get_secret_value(),
                           "TALLENNE_AUDIT_SIGNING_KEY")
    return NoteSigner(settings.audit_origin, seed)


def checkpoint_bucket(settings: Settings) -> CheckpointBucket:
    """The checkpoint bucket through the audit credential (puts) and the main one (reads)."""
    keep_for = timedelta(days=settings.audit_checkpoint_retention_days)
    reader = object_store(settings, settings.audit_bucket)
    if settings.s3_audit_access_key is None or settings.s3_audit_secret_key is None:
        return CheckpointBucket(writer=reader, reader=reader, keep_for=keep_for)
    writer = object_store(settings, settings.audit_bucket, credential=(
        settings.s3_audit_access_key.get_secret_value(),
        settings.s3_audit_secret_key.get_secret_value()))
    return CheckpointBucket(writer=writer, reader=reader, keep_for=keep_for)


@asynccontextmanager
async def opened_checkpoint_bucket(settings: Settings) -> AsyncIterator[CheckpointBucket]:
    """The checkpoint bucket, created if missing, for work outside the service (CLI)."""
    bucket = checkpoint_bucket(settings)
    try:
        await open_bucket(bucket)
        yield bucket
    finally:
        await bucket.close()


async def checkpoint_once(pool: asyncpg.Pool, bucket: CheckpointBucket,
                          signer: NoteSigner) -> bool:
    """Write a checkpoint when the head moved since the last one; True if one was written."""
    async with pool.acquire() as conn:
        head = await audit_head_seq(conn)
        last = await latest_checkpoint_seq(conn)
    if head is None or head == 0 or (last is not None and last >= head):
        return False
    checkpoint = await write_checkpoint(pool, bucket, signer)
    CHECKPOINTS_MADE.labels("written").inc()
    logger.info("audit checkpoint written",
                extra={"seq": checkpoint.seq, "epoch": checkpoint.epoch,
                       "locked": checkpoint.locked})
    return True


async def _checkpoint_forever(pool: asyncpg.Pool, bucket: CheckpointBucket,
                              signer: NoteSigner, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await checkpoint_once(pool, bucket, signer)
        except Exception as exc:
            CHECKPOINTS_MADE.labels("failed").inc()
            logger.error("audit checkpoint failed", extra={"error": repr(exc)})


async def checkpoint_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    signer = app[AUDIT_SIGNER] = note_signer(settings)
    bucket = checkpoint_bucket(settings)
    try:
        await open_bucket(bucket)
        probe = await probe_lock(bucket)
    except BaseException:
        await bucket.close()
        raise
    app[CHECKPOINTS] = bucket
    app[AUDIT_LOCK] = probe
    log = logger.info if probe.enforced else logger.warning
    log(f"audit checkpoint lock {probe.state}",
        extra={"bucket": settings.audit_bucket, "lock": probe.state, "detail": probe.detail,
               "separate_credential": bucket.writer is not bucket.reader})
    task = asyncio.create_task(_checkpoint_forever(app[POOL], bucket, signer, INTERVAL_S),
                                name="audit-checkpoints")
    yield
    await stop_task(task)
    await bucket.close()
