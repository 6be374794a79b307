"""A stored call's analysis and peaks: its data key, the peaks it opens, and the analysis
of calls stored before (or without) one, read back from S3."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import uuid
from pathlib import Path

import asyncpg

from schemas.analysis import ChannelPeaks, Peaks
from service.recordings.ingest import sealed_analysis
from service.resources import Resources
from storage import keys
from storage import recordings as store
from storage.audio.analysis import TICKS_PER_S, unpack_peaks
from storage.db import Scope, scoped
from storage.errors import NotFound
from storage.recordings import Recording
from storage.sealed_audio import derived_object_id, iter_plaintext, open_bytes

logger = logging.getLogger(__name__)


async def recording_with_key(
    pool: asyncpg.Pool, masters: keys.MasterKeys, scope: Scope, recording_id: uuid.UUID
) -> tuple[Recording, bytes]:
    """The recording (in `scope`) and its data key; KeyDestroyed once that key is gone."""
    async with pool.acquire() as conn:
        recording, kek_version, wrapped_owner_key = await store.get_for_replay(
            conn, scope, recording_id)
    owner = keys.open_owner_key(masters, recording.key_owner, recording.key_owner_id,
                                kek_version, wrapped_owner_key)
    return recording, keys.unwrap_data_key(owner, recording.id, recording.wrapped_key)


async def opened_peaks(
    pool: asyncpg.Pool, scope: Scope, recording: Recording, data_key: bytes
) -> Peaks | None:
    """The call's peaks, or None when it has not been analysed."""
    async with scoped(pool, scope) as conn:
        sealed = await store.peaks(conn, recording.id)
    if sealed is None:
        return None
    packed = await asyncio.to_thread(
        open_bytes, sealed.sealed, data_key, derived_object_id(recording.id, "peaks"),
        sealed.size)
    roles = list(recording.channel_roles or [])
    channels = await asyncio.to_thread(unpack_peaks, packed, sealed.channels)
    return Peaks(interval_ms=1000 // TICKS_PER_S, channels=[
        ChannelPeaks(role=roles[i] if i < len(roles) else None, min=low, max=high)
        for i, (low, high) in enumerate(channels)
    ])


async def analyse_stored(resources: Resources, recording_id: uuid.UUID) -> bool:
    """Analyse a stored call again from its audio in S3 (decrypted into a private spool
    file, never into memory whole); False when its audio cannot be analysed."""
    scope = Scope.everything()
    recording, data_key = await recording_with_key(resources.pool, resources.keyring.masters,
                                                   scope, recording_id)
    fd, name = tempfile.mkstemp(prefix="tallenne-analyse-")
    os.close(fd)
    spool = Path(name)
    try:
        sink = await asyncio.to_thread(spool.open, "wb")
        try:
            async for piece in iter_plaintext(
                resources.objects, recording.object_key, data_key=data_key, object_id=recording.id,
                size=recording.size_bytes, start=0, end_inclusive=recording.size_bytes - 1,
                expected_sha256=recording.sha256,
            ):
                await asyncio.to_thread(sink.write, piece)
        finally:
            await asyncio.to_thread(sink.close)
        analysed = await resources.analyser.analyse(spool, recording.channel_roles,
                                                    recording.duration_s)
    finally:
        await asyncio.to_thread(spool.unlink, True)
    if analysed is None:
        return False
    async with scoped(resources.pool, scope) as conn:
        await store.save_analysis(conn, recording.id,
                                  sealed_analysis(analysed, recording.id, data_key))
    return True


async def analyse_spooled(resources: Resources, recording_id: uuid.UUID, audio: Path) -> bool:
    """Analyse a stored call from a local copy of its audio (the upload's spool file, an
    imported file); False when it cannot be analysed or is gone."""
    recording, data_key = await recording_with_key(resources.pool, resources.keyring.masters,
                                                   Scope.everything(), recording_id)
    analysed = await resources.analyser.analyse(audio, recording.channel_roles,
                                                recording.duration_s)
    if analysed is None:
        return False
    try:
        async with scoped(resources.pool, Scope.of([recording.company_id])) as conn:
            await store.save_analysis(conn, recording.id,
                                      sealed_analysis(analysed, recording.id, data_key))
    except NotFound:
        return False  # erased meanwhile
    return True
