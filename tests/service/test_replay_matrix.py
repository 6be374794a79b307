"""The replay and search contract as a matrix: ranges of a real stored (encrypted) recording
compared byte for byte with the original, conditional requests, paging through 2,500 rows,
and company scope on every read path."""

from __future__ import annotations

import random
from pathlib import Path

import asyncpg
import pytest

from storage.crypto import SEGMENT_SIZE
from tests import audiogen
from tests.helpers import Api, bearer
from tests.service.recording_factory import COMPANY, OTHER_COMPANY, metadata, upload

REASON = "laatutarkastus 2026/11"


async def stored(api: Api, company: str = COMPANY, seconds: float = 41.0) -> tuple[str, bytes]:
    token = await api.token("ingest", [company], name=f"pbx-{company}")
    path: Path = audiogen.make_audio("wav_pcm", seconds)
    response = await upload(api.client, token, metadata(company=company), path)
    assert response.status == 201, await response.text()
    return (await response.json())["id"], path.read_bytes()


def range_cases(size: int, rng: random.Random) -> list[tuple[str, int, int]]:
    """(header, first byte, last byte) — segment boundaries, suffixes, open ends, random."""
    seg = SEGMENT_SIZE
    cases = [
        (f"bytes=0-{seg - 1}", 0, seg - 1),
        (f"bytes={seg - 1}-{seg}", seg - 1, seg),
        (f"bytes={seg}-{2 * seg - 1}", seg, 2 * seg - 1),
        (f"bytes={seg - 1}-{seg - 1}", seg - 1, seg - 1),
        (f"bytes={2 * seg - 3}-{3 * seg + 2}", 2 * seg - 3, 3 * seg + 2),
        (f"bytes={(size // seg) * seg}-", (size // seg) * seg, size - 1),
        ("bytes=-1", size - 1, size - 1),
        (f"bytes=-{seg + 1}", size - seg - 1, size - 1),
        (f"bytes=-{size + 100}", 0, size - 1),
        (f"bytes={size - 10}-{size + 5000}", size - 10, size - 1),
        ("bytes=17-", 17, size - 1),
    ]
    while len(cases) < 20:
        first = rng.randrange(size)
        last = rng.randrange(first, min(size, first + 3 * seg))
        cases.append((f"bytes={first}-{last}", first, last))
    return cases


async def test_twenty_ranges_are_byte_exact(api: Api) -> None:
    recording_id, original = await stored(api)
    size = len(original)
    assert size > 9 * SEGMENT_SIZE
    token = await api.token("quality", [COMPANY])
    url = f"/api/v1/recordings/{recording_id}/audio"
    for header, first, last in range_cases(size, random.Random(20261126)):
        response = await api.client.get(url, params={"reason": REASON},
                                        headers={**bearer(token), "Range": header})
        assert response.status == 206, (header, await response.text())
        body = await response.read()
        assert body == original[first:last + 1], header
        assert response.headers["Content-Range"] == f"bytes {first}-{last}/{size}", header
        assert int(response.headers["Content-Length"]) == last - first + 1
        assert response.headers["Accept-Ranges"] == "bytes"


@pytest.mark.parametrize("header", ["bytes={size}-", "bytes={size}-{more}", "bytes=-0"])
async def test_unsatisfiable_ranges_are_416(api: Api, header: str) -> None:
    recording_id, original = await stored(api, seconds=3.0)
    size = len(original)
    token = await api.token("quality", [COMPANY])
    response = await api.client.get(
        f"/api/v1/recordings/{recording_id}/audio", params={"reason": REASON},
        headers={**bearer(token), "Range": header.format(size=size, more=size + 99)})
    assert response.status == 416
    assert response.headers["Content-Range"] == f"bytes */{size}"
    assert response.content_type == "application/problem+json"


async def test_if_range_and_if_none_match(api: Api) -> None:
    recording_id, original = await stored(api, seconds=8.0)
    token = await api.token("quality", [COMPANY])
    url = f"/api/v1/recordings/{recording_id}/audio"
    first = await api.client.get(url, params={"reason": REASON}, headers=bearer(token))
    etag = first.headers["ETag"]
    assert await first.read() == original

    fresh = await api.client.get(url, params={"reason": REASON}, headers={
        **bearer(token), "Range": "bytes=1000-70000", "If-Range": etag})
    assert fresh.status == 206 and await fresh.read() == original[1000:70001]

    stale = await api.client.get(url, params={"reason": REASON}, headers={
        **bearer(token), "Range": "bytes=1000-70000", "If-Range": '"' + "0" * 64 + '"'})
    assert stale.status == 200 and "Content-Range" not in stale.headers
    assert await stale.read() == original

    same = await api.client.get(url, params={"reason": REASON},
                                headers={**bearer(token), "If-None-Match": etag})
    assert same.status == 304 and await same.read() == b""


async def test_paging_through_2500_rows_has_no_gaps_or_duplicates(
        api: Api, db: asyncpg.Connection) -> None:
    # Three calls share each start time, so the id tie-break decides page borders too.
    for company, rows in ((COMPANY, 2500), (OTHER_COMPANY, 300)):
        await db.execute(
            "INSERT INTO recordings (id, company_id, external_id, state, started_at, ended_at,"
            " direction, agent, purpose, tags, format, codec, duration_s, sample_rate,"
            " channels, size_bytes, sha256, object_key, key_owner, wrapped_key)"
            " SELECT gen_random_uuid(), c.id, $2 || '-' || g, 'stored',"
            " timestamptz '2026-01-01 08:00+02' + (g / 3) * interval '1 minute',"
            " timestamptz '2026-01-01 08:05+02' + (g / 3) * interval '1 minute',"
            " CASE WHEN g % 2 = 0 THEN 'inbound' ELSE 'outbound' END, 'agent-' || (g % 7),"
            " 'quality', ARRAY['t' || (g % 5)], 'wav', 'pcm_s16le', 60, 8000, 1, 960000,"
            " repeat('0', 64), 'bulk/' || $2 || '/' || g, 'company', '\\x00'"
            " FROM companies c, generate_series(1, $3) g WHERE c.code = $1",
            company, f"bulk-{company}", rows,
        )
    expected = [str(r["id"]) for r in await db.fetch(
        "SELECT r.id FROM recordings r JOIN companies c ON c.id = r.company_id"
        " WHERE c.code = $1 ORDER BY r.started_at DESC, r.id DESC", COMPANY)]
    token = await api.token("quality", [COMPANY])

    async def walk(limit: int, **filters: str) -> list[str]:
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": str(limit), **filters, **({"cursor": cursor} if cursor else {})}
            response = await api.client.get("/api/v1/recordings", params=params,
                                            headers=bearer(token))
            assert response.status == 200, await response.text()
            page = await response.json()
            assert len(page["items"]) <= limit
            assert all(item["company"] == COMPANY for item in page["items"])
            seen += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                return seen

    assert await walk(1000) == expected
    assert await walk(333) == expected
    outbound = await walk(250, direction="outbound", tag="t3")
    assert len(outbound) == len(set(outbound)) == 250  # g odd and g % 5 == 3 → 1 in 10


async def test_company_a_never_sees_company_b_call(api: Api) -> None:
    recording_id, _ = await stored(api, OTHER_COMPANY, seconds=2.0)
    external_id = (await (await api.client.get(
        f"/api/v1/recordings/{recording_id}",
        headers=bearer(await api.token("quality", [OTHER_COMPANY])))).json())["external_id"]
    token = await api.token("quality", [COMPANY])
    await api.user("aino", "quality", [COMPANY])
    csrf = await api.login("aino")

    base = f"/api/v1/recordings/{recording_id}"
    assert (await api.client.get(base, headers=bearer(token))).status == 404
    audio = await api.client.get(f"{base}/audio", params={"reason": REASON},
                                 headers={**bearer(token), "Range": "bytes=0-10"})
    assert audio.status == 404
    assert (await api.client.get(f"{base}/evaluations", headers=bearer(token))).status == 404
    posted = await api.client.post(f"{base}/evaluations", json={"form": "perus", "scores": {
        "greeting": 1, "identification": 1, "solution": 1, "courtesy": 1}},
        headers={"X-CSRF-Token": csrf})
    assert posted.status == 404
    for params in ({"external_id": external_id}, {"company": OTHER_COMPANY}, {}):
        found = await (await api.client.get("/api/v1/recordings", params=params,
                                            headers=bearer(token))).json()
        assert recording_id not in [item["id"] for item in found["items"]], params
    assert (await api.client.get(f"/recordings/{recording_id}")).status == 404
