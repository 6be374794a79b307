"""Analysis at ingest: a call is searchable by its talk, silence, overtalk and flags the
moment its upload is acknowledged; `tallenne analyse` fills in calls stored without it."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from tests import audiogen
from tests.helpers import Api, bearer
from tests.service.recording_factory import COMPANY, OTHER_COMPANY, analysed, metadata, upload


async def _ingest(api: Api, path: Any, company: str = COMPANY, **meta: Any) -> dict[str, Any]:
    """Push a call and wait (a few seconds at most) for the service to analyse it."""
    token = await api.token("ingest", [company], name=f"pbx-{company}")
    response = await upload(api.client, token, metadata(company=company, **meta), path)
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    reader = await api.token("quality", [company], name=f"qa-{company}")
    return await analysed(api.client, reader, created["id"])


async def _found(api: Api, token: str, **params: str) -> list[str]:
    response = await api.client.get("/api/v1/recordings", params=params, headers=bearer(token))
    assert response.status == 200, await response.text()
    return [item["id"] for item in (await response.json())["items"]]


async def test_a_call_carries_its_analysis_seconds_after_its_upload(api: Api) -> None:
    body = await _ingest(api, audiogen.make_call("ogg_opus", "faulty"),
                         channel_roles=["agent", "customer"])
    analysis = body["analysis"]
    assert [c["role"] for c in analysis["channels"]] == ["agent", "customer"]
    assert analysis["channels"][0]["talk_ratio"] == pytest.approx(10 / 26, rel=0.05)
    assert analysis["overtalk_s"] == pytest.approx(2.0, abs=0.1)
    assert analysis["overtalk_count"] == 1
    assert analysis["flags"] == ["clipping", "dropout"]
    assert body["channel_roles"] == ["agent", "customer"]
    token = await api.token("quality", [COMPANY])
    response = await api.client.get(f"/api/v1/recordings/{body['id']}", headers=bearer(token))
    assert (await response.json())["analysis"] == analysis


async def test_search_filters_on_silence_overtalk_and_flags(api: Api) -> None:
    clean = await _ingest(api, audiogen.make_call("wav_pcm", "clean"),
                          started_at="2026-03-04T10:00:00+02:00",
                          ended_at="2026-03-04T10:01:00+02:00")
    faulty = await _ingest(api, audiogen.make_call("wav_pcm", "faulty"),
                           started_at="2026-03-03T10:00:00+02:00",
                           ended_at="2026-03-03T10:01:00+02:00")
    silent = await _ingest(api, audiogen.make_call("wav_pcm", "silent_right"))
    theirs = await _ingest(api, audiogen.make_call("wav_pcm", "faulty"), OTHER_COMPANY)
    token = await api.token("quality", [COMPANY])
    assert await _found(api, token, flag="clipping") == [faulty["id"]]
    assert await _found(api, token, flag="silent_channel") == [silent["id"]]
    assert await _found(api, token, flag="mono_mixdown") == []
    assert await _found(api, token, min_overtalk_s="1.5") == [clean["id"], faulty["id"]]
    assert await _found(api, token, min_silence_ratio="0.5") == [silent["id"]]
    assert theirs["id"] not in await _found(api, token, flag="dropout")


async def test_an_unknown_flag_or_role_is_refused_by_name(api: Api) -> None:
    token = await api.token("quality", [COMPANY])
    response = await api.client.get("/api/v1/recordings", params={"flag": "loud"},
                                    headers=bearer(token))
    assert response.status == 422
    assert "flag" in await response.text()
    ingest = await api.token("ingest", [COMPANY])
    response = await upload(api.client, ingest, metadata(channel_roles=["boss"]),
                            audiogen.make_call("wav_pcm"))
    assert response.status == 422
    assert "channel_roles" in await response.text()


async def test_analyse_command_fills_in_calls_stored_without_analysis(
    api: Api, db: asyncpg.Connection, settings: Any, tmp_path: Any
) -> None:
    import asyncio
    import json
    import sys

    from tests.helpers import settings_env

    body = await _ingest(api, audiogen.make_call("flac", "clean"))
    await db.execute("UPDATE recordings SET analysis = NULL, flags = '{}', silence_ratio = NULL"
                     " WHERE id = $1", body["id"])
    await db.execute("DELETE FROM recording_peaks")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", "analyse", "--missing",
        env=settings_env(settings), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert "1 analysed" in out.decode()
    row = await db.fetchrow("SELECT analysis, silence_ratio FROM recordings WHERE id = $1",
                            body["id"])
    assert json.loads(row["analysis"])["overtalk_count"] == 1
    assert row["silence_ratio"] == pytest.approx(6 / 26, rel=0.03)
    assert await db.fetchval("SELECT count(*) FROM recording_peaks") == 1
