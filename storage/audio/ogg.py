"""Ogg Opus/Vorbis: every page checked (capture pattern, CRC, sequence, end of stream)."""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis

from storage.audio.common import _mutagen_info, _num, _truncated
from storage.audio.formats import AudioInfo
from storage.errors import AudioRejected

_BITREV8 = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _ogg_crc(page: bytes) -> int:
    """Ogg's CRC-32 (poly 0x04C11DB7, MSB first, no reflection, init and xor-out 0).

    It is zlib's reflected CRC-32 run on bit-reversed bytes with the result bit-reversed,
    which keeps a 2 GiB walk in C instead of a Python loop per byte.
    """
    raw = zlib.crc32(page.translate(_BITREV8), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{raw:032b}"[::-1], 2)


def _probe_ogg(f: BinaryIO, size: int) -> AudioInfo:
    f.seek(0)
    pos = 0
    serial = -1
    expected_seq = 0
    first_packet = b""
    ended = False
    while pos < size:
        if ended:
            raise AudioRejected("Ogg files with more than one logical stream are not supported")
        header = f.read(27)
        if len(header) < 27:
            raise _truncated(f"the file ends inside the Ogg page header at byte {pos}")
        if header[:4] != b"OggS" or header[4] != 0:
            raise AudioRejected(f"the Ogg stream is damaged: no page starts at byte {pos}")
        flags = header[5]
        page_serial, seq, crc = struct.unpack_from("<III", header, 14)
        segments = f.read(header[26])
        body_len = sum(segments)
        page_len = 27 + len(segments) + body_len
        if len(segments) < header[26] or pos + page_len > size:
            raise _truncated(
                f"the Ogg page at byte {pos} needs {27 + header[26] + body_len} bytes but the "
                f"file holds {size - pos}"
            )
        body = f.read(body_len)
        if _ogg_crc(header[:22] + b"\0\0\0\0" + header[26:] + segments + body) != crc:
            raise AudioRejected(f"the Ogg stream is damaged: page {seq} fails its checksum")
        if pos == 0:
            if not flags & 2:
                raise AudioRejected("the Ogg stream does not begin with a beginning-of-stream page")
            serial = page_serial
            first_packet = body[:8]
        elif page_serial != serial or flags & 2:
            raise AudioRejected("Ogg files with more than one logical stream are not supported")
        if seq != expected_seq:
            raise AudioRejected(f"the Ogg stream is damaged: page {expected_seq} is missing")
        expected_seq = seq + 1
        ended = bool(flags & 4)
        pos += page_len
    if not ended:
        raise _truncated("the Ogg stream ends without its end-of-stream page")

    if first_packet.startswith(b"OpusHead"):
        info = _mutagen_info(OggOpus, f, "Ogg Opus")
        # Opus always decodes at 48 kHz; the header's input rate is only informational.
        return AudioInfo("ogg", "opus", _num(info, "length"), 48000, int(_num(info, "channels")))
    if first_packet.startswith(b"\x01vorbis"):
        info = _mutagen_info(OggVorbis, f, "Ogg Vorbis")
        return AudioInfo(
            "ogg",
            "vorbis",
            _num(info, "length"),
            int(_num(info, "sample_rate")),
            int(_num(info, "channels")),
        )
    raise AudioRejected("the Ogg stream carries a codec other than Opus or Vorbis")
