"""Shared by the export tests: calls in several companies, a job run to its end, the
export bucket, a client that leaves mid-download."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp.test_utils import TestClient

from service.http.keys import OBJECTS
from service.settings import Settings
from storage.objects import ObjectStore
from tests import audiogen
from tests.conftest import Stack, drop_bucket
from tests.helpers import Api, bearer
from tests.service.recording_factory import COMPANY, OTHER_COMPANY, metadata, upload
from tests.service.retention_factory import app_of

THIRD_COMPANY = "tenergia"


@dataclass
class Calls:
    """Recordings by company: what an export must hold, and what it must never hold."""

    exported: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> recording
    held: list[str] = field(default_factory=list)
    erased: list[str] = field(default_factory=list)
    other_company: list[str] = field(default_factory=list)


async def ingest(api: Api, company: str, count: int, *, tone: float = 300.0,
                 **overrides: Any) -> list[dict[str, Any]]:
    token = await api.token("ingest", [company], name=f"ingest-{company}-{uuid.uuid4().hex[:6]}")
    made = []
    for i in range(count):
        audio = audiogen.make_audio("wav_pcm", 1.0, tone_hz=tone + 13 * i)
        response = await upload(api.client, token, metadata(company=company, **overrides),
                                audio)
        assert response.status == 201, await response.text()
        made.append(await response.json())
    return made


async def calls_in_three_companies(api: Api) -> Calls:
    """Two companies the exporter sees (one call held, one erased) and a third it does not."""
    calls = Calls()
    first = await ingest(api, COMPANY, 5)
    second = await ingest(api, OTHER_COMPANY, 2, tone=700.0)
    third = await ingest(api, THIRD_COMPANY, 2, tone=900.0)
    admin = await api.token("admin", all_companies=True, name="export-admin")
    held, erased = first[3], first[4]
    response = await api.client.post("/api/v1/legal-holds", headers=bearer(admin), json={
        "case": "case-2026-21", "reason": "riita-asia", "recording_ids": [held["id"]]})
    assert response.status in (200, 201), await response.text()
    response = await api.client.delete(f"/api/v1/recordings/{erased['id']}",
                                       headers=bearer(admin), json={"reason": "pyyntö"})
    assert response.status == 200, await response.text()
    calls.exported = {r["id"]: r for r in first[:3] + second}
    calls.held = [held["id"]]
    calls.erased = [erased["id"]]
    calls.other_company = [r["id"] for r in third]
    return calls


async def wait_for(client: TestClient[Any, Any], token: str, export_id: str,
                   states: tuple[str, ...] = ("done", "failed", "cancelled"),
                   timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"/api/v1/exports/{export_id}", headers=bearer(token))
        assert response.status == 200, await response.text()
        progress: dict[str, Any] = await response.json()
        if progress["state"] in states:
            return progress
        assert time.monotonic() < deadline, f"export still {progress}"
        await asyncio.sleep(0.05)


def export_store(settings: Settings) -> ObjectStore:
    assert settings.s3_endpoint and settings.s3_access_key and settings.s3_secret_key
    return ObjectStore(settings.s3_endpoint, settings.s3_access_key.get_secret_value(),
                       settings.s3_secret_key.get_secret_value(),
                       settings.export_target_bucket, region=settings.s3_region, threads=4)


def drop_export_bucket(stack: Stack, settings: Settings) -> None:
    drop_bucket(stack, settings.export_target_bucket)


def open_reads(objects: ObjectStore) -> int:
    """Connections of the object store's HTTP client still serving a response."""
    session = objects._session
    return 0 if session is None else len(session.connector._acquired)  # type: ignore[union-attr]


class ReadsAtRequestEnd(logging.Handler):
    """The S3 reads still open at the moment the service logs the end of a request to `path`
    (its handler returned or was cancelled; nothing else has run since)."""

    def __init__(self, objects: ObjectStore, path: str) -> None:
        super().__init__()
        self.objects = objects
        self.path = path
        self.open: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        route = str(getattr(record, "route", ""))
        if record.getMessage() == "request" and route.endswith(self.path.rsplit("/", 1)[1]):
            self.open.append(open_reads(self.objects))


async def reads_left_open(api: Api, path: str, token: str,
                          params: dict[str, str] | None = None) -> tuple[int, int]:
    """A client that takes the first 256 KiB of a long answer and leaves: the S3 reads open
    while it was reading, and those still open when the service finished the request."""
    objects = app_of(api)[OBJECTS]
    requests = logging.getLogger("service.http.middlewares")
    level = requests.level
    at_end = ReadsAtRequestEnd(objects, path)
    requests.setLevel(logging.INFO)
    requests.addHandler(at_end)
    try:
        response = await api.client.get(path, params=params, headers=bearer(token))
        assert response.status == 200, await response.text()
        await response.content.readexactly(256 * 1024)
        await asyncio.sleep(0.2)  # the service waits for the client to take more
        while_read = open_reads(objects)
        response.close()
        for _ in range(100):
            if at_end.open:
                break
            await asyncio.sleep(0.05)
    finally:
        requests.removeHandler(at_end)
        requests.setLevel(level)
    assert len(at_end.open) == 1, at_end.open
    return while_read, at_end.open[0]
