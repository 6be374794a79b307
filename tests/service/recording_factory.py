"""Shared factories of recording tests: metadata, multipart uploads, bucket listings."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from service.settings import Settings
from storage.objects import ObjectStore
from tests.helpers import bearer

COMPANY = "oulun-sahkonmyynti"
OTHER_COMPANY = "kemin-energia"


def metadata(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "company": COMPANY,
        "external_id": f"call-{uuid.uuid4().hex[:10]}",
        "started_at": "2026-03-02T10:00:00+02:00",
        "ended_at": "2026-03-02T10:04:00+02:00",
        "direction": "inbound",
        "agent": "agent-7",
        "queue": "billing",
        "caller": "+358401234567",
        "callee": "+358855843100",
        "purpose": "quality",
        "tags": ["billing"],
    }
    values.update(overrides)
    return values


def form(meta: dict[str, Any] | str, audio: Path | bytes, *, filename: str | None = None,
         content_type: str | None = None) -> aiohttp.FormData:
    data = aiohttp.FormData()
    text = meta if isinstance(meta, str) else json.dumps(meta)
    data.add_field("metadata", text, content_type="application/json")
    payload = audio.read_bytes() if isinstance(audio, Path) else audio
    name = filename if filename is not None else (
        audio.name if isinstance(audio, Path) else "audio.bin")
    data.add_field("audio", payload, filename=name,
                   content_type=content_type or "application/octet-stream")
    return data


async def upload(client: TestClient[Any, Any], token: str, meta: dict[str, Any] | str,
                 audio: Path | bytes, **kwargs: Any) -> aiohttp.ClientResponse:
    return await client.post("/api/v1/recordings", data=form(meta, audio, **kwargs),
                             headers=bearer(token))


def object_store(settings: Settings) -> ObjectStore:
    assert settings.s3_endpoint and settings.s3_access_key and settings.s3_secret_key
    return ObjectStore(
        settings.s3_endpoint, settings.s3_access_key.get_secret_value(),
        settings.s3_secret_key.get_secret_value(), settings.s3_bucket,
        region=settings.s3_region, threads=4,
    )


async def bucket_keys(settings: Settings, prefix: str = "recordings/") -> list[str]:
    store = object_store(settings)
    try:
        return await store.list_keys(prefix)
    finally:
        await store.close()


async def analysed(client: TestClient[Any, Any], token: str, recording_id: str,
                   within_s: float = 20.0) -> dict[str, Any]:
    """The recording once the service's analysis worker has analysed it."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        response = await client.get(f"/api/v1/recordings/{recording_id}",
                                    headers=bearer(token))
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        if body["analysis"] is not None or loop.time() > deadline:
            return body
        await asyncio.sleep(0.1)
