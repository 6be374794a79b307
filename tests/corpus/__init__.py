"""The bad-input corpus: every file is generated at test time from a good one (or from
nothing), so no binary blob is committed. Each case names what the service must refuse."""

from __future__ import annotations

import gzip
import io
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from tests import audiogen


@dataclass(frozen=True)
class AudioCase:
    name: str
    make: Callable[[], bytes]
    filename: str
    content_type: str = "application/octet-stream"


def _good(kind: str, seconds: float = 2.0) -> bytes:
    return audiogen.make_audio(kind, seconds).read_bytes()


def truncated(kind: str, keep: float = 0.5) -> bytes:
    data = _good(kind)
    return data[: int(len(data) * keep)]


def wav_lying_sizes() -> bytes:
    """A WAV whose RIFF and data chunk sizes claim ten times the bytes that follow."""
    data = bytearray(_good("wav_pcm"))
    struct.pack_into("<I", data, 4, (len(data) - 8) * 10)
    at = data.find(b"data")
    struct.pack_into("<I", data, at + 4, (len(data) - at - 8) * 10)
    return bytes(data)


def wav_header_only() -> bytes:
    return _good("wav_pcm")[:44]


def text_named_wav() -> bytes:
    return b"This is not a recording, only a note that someone renamed.\n" * 40


def mp3_named_wav() -> bytes:
    return _good("mp3")


AUDIO_CASES: list[AudioCase] = [
    AudioCase("truncated_wav", lambda: truncated("wav_pcm"), "call.wav", "audio/wav"),
    AudioCase("truncated_mp3", lambda: truncated("mp3", 0.3), "call.mp3", "audio/mpeg"),
    AudioCase("truncated_flac", lambda: truncated("flac"), "call.flac", "audio/flac"),
    AudioCase("truncated_ogg_opus", lambda: truncated("ogg_opus"), "call.opus", "audio/ogg"),
    AudioCase("truncated_ogg_vorbis", lambda: truncated("ogg_vorbis"), "call.ogg", "audio/ogg"),
    AudioCase("wav_lying_header_sizes", wav_lying_sizes, "call.wav", "audio/wav"),
    AudioCase("wav_header_only", wav_header_only, "call.wav", "audio/wav"),
    AudioCase("text_named_wav", text_named_wav, "call.wav", "audio/wav"),
    AudioCase("empty_file", lambda: b"", "call.wav", "audio/wav"),
    AudioCase("mp3_claimed_as_wav", mp3_named_wav, "call.wav", "audio/wav"),
]


def json_bomb(depth: int = 30_000) -> str:
    """Deep nesting that stays under the size limits, so only the depth is at fault."""
    return "[" * depth + "]" * depth


def nested_object_bomb(depth: int = 10_000) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def gzip_bomb(inflated_bytes: int = 256 * 1024**2) -> bytes:
    """~256 MiB of newlines compressed to a few hundred KiB."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz:
        block = b"\n" * (1024 * 1024)
        for _ in range(inflated_bytes // len(block)):
            gz.write(block)
    return out.getvalue()


def corrupt_gzip() -> bytes:
    good = gzip.compress(b'{"ts":"2026-03-02T10:00:00+02:00","site":"s","event":"e"}\n')
    return good[:12] + bytes(b ^ 0x5A for b in good[12:30]) + good[30:]


def ndjson_line(size: int = 1024 * 1024, **fields: object) -> bytes:
    line = {"ts": "2026-03-02T10:00:00+02:00", "site": "oulun-sahkonmyynti.fi",
            "event": "page_view", "url": "https://example.fi/", **fields}
    line["attributes"] = {"padding": "x" * size}
    return json.dumps(line).encode() + b"\n"


def invalid_utf8_line() -> bytes:
    return (b'{"ts":"2026-03-02T10:00:00+02:00","site":"s\xff\xfe","event":"page_view"}\n')


def raw_deflate(data: bytes) -> bytes:
    return zlib.compress(data)
