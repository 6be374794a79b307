"""curl, a real HTTP client, fetches ranges of a stored recording from the running server:
every answer is a byte-exact slice of the original."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from storage.crypto import SEGMENT_SIZE
from tests import audiogen
from tests.helpers import Api
from tests.service.recording_factory import COMPANY, metadata, upload

pytestmark = pytest.mark.e2e
REASON = "asiakkaan reklamaatio 88"


async def curl(*args: str) -> tuple[bytes, str]:
    """(body, response headers) of one curl run; fails the test on a non-zero exit."""
    process = await asyncio.create_subprocess_exec(
        "curl", "--silent", "--show-error", "--fail", "--dump-header", "/dev/stderr", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    body, headers = await process.communicate()
    assert process.returncode == 0, headers.decode(errors="replace")
    return body, headers.decode("latin-1")


async def test_curl_ranges_are_byte_exact(api: Api, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    ingest = await api.token("ingest", [COMPANY], name="pbx")
    path = audiogen.make_audio("wav_pcm", 30.0)
    original = path.read_bytes()
    size = len(original)
    response = await upload(api.client, ingest, metadata(), path)
    assert response.status == 201, await response.text()
    recording_id = (await response.json())["id"]
    token = await api.token("quality", [COMPANY])
    url = str(api.client.make_url(f"/api/v1/recordings/{recording_id}/audio"))
    auth = ["--header", f"Authorization: Bearer {token}", "--get",
            "--data-urlencode", f"reason={REASON}"]

    cases = [
        (f"0-{SEGMENT_SIZE - 1}", 0, SEGMENT_SIZE - 1),
        (f"{SEGMENT_SIZE - 6}-{SEGMENT_SIZE + 5}", SEGMENT_SIZE - 6, SEGMENT_SIZE + 5),
        (f"{3 * SEGMENT_SIZE}-{5 * SEGMENT_SIZE + 17}", 3 * SEGMENT_SIZE, 5 * SEGMENT_SIZE + 17),
        ("-777", size - 777, size - 1),
        (f"{size - 4000}-", size - 4000, size - 1),
    ]
    for spec, first, last in cases:
        body, headers = await curl(*auth, "--range", spec, url)
        assert headers.startswith("HTTP/1.1 206"), headers
        assert f"content-range: bytes {first}-{last}/{size}" in headers.lower(), headers
        assert body == original[first:last + 1], spec

    whole, headers = await curl(*auth, url)
    assert headers.startswith("HTTP/1.1 200") and whole == original

    # A download interrupted half-way and resumed by curl itself.
    target = tmp_path / "call.wav"
    target.write_bytes(original[: size // 2])
    await curl(*auth, "--continue-at", "-", "--output", str(target), url)
    assert target.read_bytes() == original
