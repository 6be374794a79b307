"""probe_audio: sniff the real format, check claims, run the format probe."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from storage.audio.common import _read_at, _skip_id3v2
from storage.audio.flac import _probe_flac
from storage.audio.formats import _READ_BUFFER, NOT_AUDIO, AudioInfo, _check_claims
from storage.audio.m4a import _probe_m4a
from storage.audio.mp3 import _mpeg_frame, _probe_mp3
from storage.audio.ogg import _probe_ogg
from storage.audio.wav import _probe_wav
from storage.errors import AudioRejected


def probe_audio(
    path: Path, *, content_type: str | None = None, filename: str | None = None
) -> AudioInfo:
    """Return what the file at `path` really is, or raise AudioRejected.

    `content_type` and `filename` are the client's claims; they are checked against the
    bytes, never used to decide the format. The file is read in bounded pieces only.
    """
    with path.open("rb", buffering=_READ_BUFFER) as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise AudioRejected("the file is empty")
        fmt = _sniff(f, size)
        if fmt is None:
            raise AudioRejected(NOT_AUDIO)
        # Checked before the full validation so a mislabelled upload fails cheaply.
        _check_claims(fmt, None, content_type, filename)
        info = _PROBES[fmt](f, size)
    if info.sample_rate <= 0 or info.channels <= 0:
        raise AudioRejected(f"the {fmt} header declares no sample rate or no channels")
    if info.duration_s <= 0:
        raise AudioRejected("audio has zero duration")
    _check_claims(fmt, info.codec, content_type, filename)
    return info


_PROBES: dict[str, Callable[[BinaryIO, int], AudioInfo]] = {
    "wav": _probe_wav,
    "mp3": _probe_mp3,
    "ogg": _probe_ogg,
    "flac": _probe_flac,
    "m4a": _probe_m4a,
}

def _sniff(f: BinaryIO, size: int) -> str | None:
    head = _read_at(f, 0, 12)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"OggS":
        return "ogg"
    if head[4:8] == b"ftyp":
        return "m4a"
    if head[:4] == b"fLaC":
        return "flac"
    start = _skip_id3v2(f, size) if head[:3] == b"ID3" else 0
    after = _read_at(f, start, 4)
    if after == b"fLaC":
        return "flac"
    if _mpeg_frame(after) is not None:
        return "mp3"
    return None
