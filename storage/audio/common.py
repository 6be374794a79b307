"""Bounded reads and small helpers shared by the per-format probes."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import BinaryIO

from mutagen import MutagenError

from storage.errors import AudioRejected, AudioTruncated


def _read_at(f: BinaryIO, offset: int, n: int) -> bytes:
    f.seek(offset)
    return f.read(n)


def _truncated(detail: str) -> AudioTruncated:
    return AudioTruncated(f"audio is truncated: {detail}")


def _skip_id3v2(f: BinaryIO, size: int) -> int:
    """Offset just past any ID3v2 tags at the start; some writers stack several."""
    pos = 0
    for _ in range(16):
        h = _read_at(f, pos, 10)
        if len(h) < 10 or h[:3] != b"ID3" or any(b & 0x80 for b in h[6:10]):
            return pos
        tag = (h[6] << 21) | (h[7] << 14) | (h[8] << 7) | h[9]
        end = pos + 10 + tag + (10 if h[5] & 0x10 else 0)
        if end > size:
            raise _truncated(
                f"the ID3 tag declares {end - pos} bytes but the file holds {size - pos}"
            )
        pos = end
    return pos




def _mutagen_info(loader: Callable[[BinaryIO], object], f: BinaryIO, what: str) -> object:
    f.seek(0)
    try:
        return getattr(loader(f), "info")  # noqa: B009 - mutagen is untyped
    except (MutagenError, EOFError, ValueError, struct.error) as exc:
        # mutagen's own message may quote header bytes, so it is not passed on.
        raise AudioRejected(f"the {what} headers cannot be parsed") from exc


def _num(obj: object, name: str) -> float:
    value = getattr(obj, name, 0)
    return float(value) if isinstance(value, int | float) else 0.0
