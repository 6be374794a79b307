"""M4A/AAC: top-level atoms must fit the file; duration from mvhd."""

from __future__ import annotations

import struct
from typing import BinaryIO

from mutagen.mp4 import MP4

from storage.audio.common import _mutagen_info, _num, _read_at, _truncated
from storage.audio.formats import AudioInfo
from storage.errors import AudioRejected

_MAX_MP4_ATOMS = 1 << 17
# Atom names that may be echoed in a message; others are file content and stay unnamed.
_MP4_ATOM_NAMES = frozenset(
    {
        b"ftyp",
        b"moov",
        b"mdat",
        b"free",
        b"skip",
        b"wide",
        b"udta",
        b"uuid",
        b"moof",
        b"mfra",
        b"meta",
        b"pdin",
        b"sidx",
        b"styp",
    }
)


def _mvhd_seconds(f: BinaryIO, moov_body: int, moov_end: int) -> float:
    """Presentation length from the movie header; unlike the media header it excludes the
    encoder's priming samples, which the edit list hides."""
    pos = moov_body
    while pos + 8 <= moov_end:
        size, kind = struct.unpack(">I4s", _read_at(f, pos, 8))
        if size < 8:
            return 0.0
        if kind == b"mvhd":
            body = _read_at(f, pos + 8, 32)
            if body[:1] == b"\x01" and len(body) >= 32:
                timescale, duration = struct.unpack_from(">IQ", body, 20)
            elif len(body) >= 20:
                timescale, duration = struct.unpack_from(">II", body, 12)
            else:
                return 0.0
            return duration / timescale if timescale else 0.0
        pos += size
    return 0.0


def _probe_m4a(f: BinaryIO, size: int) -> AudioInfo:
    pos = 0
    seen: set[bytes] = set()
    presented = 0.0
    for _ in range(_MAX_MP4_ATOMS):
        if pos >= size:
            break
        h = _read_at(f, pos, 16)
        if len(h) < 8:
            raise _truncated(f"the file ends inside an MP4 atom header at byte {pos}")
        length, kind = struct.unpack_from(">I4s", h)
        header = 8
        if length == 1:
            if len(h) < 16:
                raise _truncated(f"the file ends inside an MP4 atom header at byte {pos}")
            length, header = struct.unpack_from(">Q", h, 8)[0], 16
        elif length == 0:  # the last atom may run to the end of the file
            length = size - pos
        if length < header:
            raise AudioRejected(f"the MP4 atom at byte {pos} declares an impossible size")
        if pos + length > size:
            name = kind.decode("ascii") if kind in _MP4_ATOM_NAMES else "an"
            raise _truncated(
                f"the {name} atom declares {length} bytes but the file holds {size - pos}"
            )
        if kind == b"moov":
            presented = _mvhd_seconds(f, pos + header, pos + length)
        seen.add(kind)
        pos += length
    else:
        raise AudioRejected("the MP4 file has too many top-level atoms")
    if b"moov" not in seen:
        raise _truncated("the M4A file has no movie header (moov atom)")
    if b"mdat" not in seen:
        raise _truncated("the M4A file has no media data (mdat atom)")

    info = _mutagen_info(MP4, f, "M4A")
    codec = str(getattr(info, "codec", ""))
    # AAC object types: 0x40 MPEG-4, 0x66-0x68 the MPEG-2 AAC profiles.
    if codec.split(".")[:2] not in (["mp4a", "40"], ["mp4a", "66"], ["mp4a", "67"], ["mp4a", "68"]):
        raise AudioRejected("the M4A file carries a codec other than AAC")
    return AudioInfo(
        "m4a",
        "aac",
        presented or _num(info, "length"),
        int(_num(info, "sample_rate")),
        int(_num(info, "channels")),
    )
