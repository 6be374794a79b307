"""A vCon with its recording inline: base64url body streamed in pieces, exact length known
beforehand, SHA-256 checked and SHA-512 stated, and no finished document for wrong audio."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator

import pytest

from schemas.vcon import build_vcon
from storage.errors import IntegrityError
from storage.vcon_stream import InlineVcon, b64url_length
from tests.audiogen import make_audio
from tests.schemas.vcon_support import decode_content_hash, recording, schema_errors


async def pieces(data: bytes, step: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), step):
        yield data[start:start + step]


async def stream(inline: InlineVcon, audio: bytes, step: int) -> bytes:
    return b"".join([chunk async for chunk in inline.iter_bytes(pieces(audio, step))])


@pytest.mark.parametrize("step", [1, 2, 3, 1000, 65_537, 1 << 20])
async def test_inline_audio_decodes_to_the_recording_whatever_the_piece_sizes(
        step: int) -> None:
    audio = make_audio("wav_pcm", 0.5 if step == 1 else 2.0).read_bytes()
    vcon = build_vcon(recording(audio), host="tallenne.example.fi")
    inline = InlineVcon(vcon, len(audio))
    out = await stream(inline, audio, step)

    assert len(out) == inline.size
    document = json.loads(out)
    assert schema_errors(document) == []
    dialog = document["dialog"][0]
    assert dialog["encoding"] == "base64url" and dialog["mediatype"] == "audio/x-wav"
    assert "=" not in dialog["body"] and "url" not in dialog
    body = dialog["body"]
    assert base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)) == audio
    assert [decode_content_hash(h) for h in dialog["content_hash"]] == [
        ("sha512", hashlib.sha512(audio).digest()), ("sha256", hashlib.sha256(audio).digest())]
    assert document["attachments"] == json.loads(
        vcon.model_dump_json(by_alias=True, exclude_none=True))["attachments"]


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 6, 7])
async def test_document_length_is_exact_for_every_remainder_of_three(size: int) -> None:
    audio = bytes(range(size))
    inline = InlineVcon(build_vcon(recording(audio), host="h"), size)
    out = await stream(inline, audio, 2)
    assert len(out) == inline.size
    assert b64url_length(size) == len(base64.urlsafe_b64encode(audio).rstrip(b"="))


async def test_audio_that_differs_from_its_sha256_never_finishes_the_document() -> None:
    audio = make_audio("wav_pcm", 1.0).read_bytes()
    inline = InlineVcon(build_vcon(recording(audio), host="h"), len(audio))
    damaged = audio[:100] + bytes([audio[100] ^ 0xFF]) + audio[101:]
    got = bytearray()
    with pytest.raises(IntegrityError):
        async for chunk in inline.iter_bytes(pieces(damaged, 4096)):
            got += chunk
    assert len(got) < inline.size
    with pytest.raises(json.JSONDecodeError):
        json.loads(got)


@pytest.mark.parametrize("cut", [-1, +1])
async def test_audio_shorter_or_longer_than_its_record_is_refused(cut: int) -> None:
    audio = make_audio("wav_pcm", 1.0).read_bytes()
    inline = InlineVcon(build_vcon(recording(audio), host="h"), len(audio))
    given = audio[:cut] if cut < 0 else audio + b"\0"
    with pytest.raises(IntegrityError):
        await stream(inline, given, 4096)


async def test_a_stated_sha512_that_the_audio_does_not_match_is_refused() -> None:
    audio = make_audio("wav_pcm", 1.0).read_bytes()
    vcon = build_vcon(recording(audio), host="h", audio_sha512=hashlib.sha512(b"x").hexdigest())
    with pytest.raises(IntegrityError):
        await stream(InlineVcon(vcon, len(audio)), audio, 4096)


def test_a_vcon_that_references_its_audio_by_url_is_not_streamed_inline() -> None:
    vcon = build_vcon(recording(), host="h", audio_url="https://tallenne.example.fi/a")
    with pytest.raises(ValueError, match="URL"):
        InlineVcon(vcon, 10)
