"""FLAC: STREAMINFO plus a CRC-checked last frame to find truncation."""

from __future__ import annotations

import struct
from typing import BinaryIO

from mutagen.flac import FLAC

from storage.audio.common import _mutagen_info, _read_at, _skip_id3v2, _truncated
from storage.audio.formats import NOT_AUDIO, AudioInfo
from storage.errors import AudioRejected


def _crc_table(poly: int, width: int) -> tuple[int, ...]:
    top, mask = 1 << (width - 1), (1 << width) - 1
    table = []
    for byte in range(256):
        crc = byte << (width - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly) if crc & top else crc << 1
        table.append(crc & mask)
    return tuple(table)


_CRC8 = _crc_table(0x07, 8)
_CRC16 = _crc_table(0x8005, 16)
_MAX_FLAC_BLOCKS = 4096
_FLAC_TAIL_CANDIDATES = 16  # frame headers whose CRC-16 is tried at the end of the file


def _crc8(data: bytes) -> int:
    crc = 0
    for b in data:
        crc = _CRC8[crc ^ b]
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ b]
    return crc


def _flac_frame_header(b: bytes, fixed_block: int) -> tuple[int, int] | None:
    """(first sample, block size) of the FLAC frame whose header starts `b`, if it is one."""
    if len(b) < 6 or b[0] != 0xFF or b[1] & 0xFE != 0xF8:
        return None
    bs_code, rate_code = b[2] >> 4, b[2] & 0xF
    if bs_code == 0 or rate_code == 15 or b[3] >> 4 > 10 or (b[3] >> 1) & 7 == 3 or b[3] & 1:
        return None
    lead = b[4]
    ones = 8 - (~lead & 0xFF).bit_length()  # UTF-8-style length prefix of the coded number
    if ones == 1 or ones == 8:
        return None
    extra = max(ones - 1, 0)
    mask = 0x7F if ones == 0 else (1 << (7 - ones)) - 1
    number = lead & mask
    p = 5
    for c in b[p : p + extra]:
        if c & 0xC0 != 0x80:
            return None
        number = (number << 6) | (c & 0x3F)
    p += extra
    if bs_code == 1:
        block = 192
    elif bs_code <= 5:
        block = 576 << (bs_code - 2)
    elif bs_code == 6:
        block = b[p] + 1 if p < len(b) else 0
        p += 1
    elif bs_code == 7:
        block = int.from_bytes(b[p : p + 2], "big") + 1
        p += 2
    else:
        block = 256 << (bs_code - 8)
    p += {12: 1, 13: 2, 14: 2}.get(rate_code, 0)
    if p >= len(b) or _crc8(b[:p]) != b[p]:
        return None
    first = number if b[1] & 1 else number * fixed_block
    return first, block


def _probe_flac(f: BinaryIO, size: int) -> AudioInfo:
    start = _skip_id3v2(f, size)
    if _read_at(f, start, 4) != b"fLaC":
        raise AudioRejected(NOT_AUDIO)
    pos = start + 4
    streaminfo = b""
    for n in range(_MAX_FLAC_BLOCKS):
        h = _read_at(f, pos, 4)
        if len(h) < 4:
            raise _truncated("the file ends inside the FLAC metadata")
        length = int.from_bytes(h[1:4], "big")
        if pos + 4 + length > size:
            raise _truncated(
                f"a FLAC metadata block declares {length} bytes but the file holds {size - pos - 4}"
            )
        if n == 0:
            if h[0] & 0x7F != 0 or length != 34:
                raise AudioRejected("the FLAC stream info block is missing or malformed")
            streaminfo = _read_at(f, pos + 4, 34)
        pos += 4 + length
        if h[0] & 0x80:
            break
    else:
        raise AudioRejected("the FLAC file has too many metadata blocks")
    audio_start = pos

    _min_block, max_block = struct.unpack_from(">HH", streaminfo)
    max_frame = int.from_bytes(streaminfo[7:10], "big")
    packed = int.from_bytes(streaminfo[10:18], "big")
    rate = packed >> 44
    channels = ((packed >> 41) & 7) + 1
    total = packed & ((1 << 36) - 1)
    if rate == 0:
        raise AudioRejected("the FLAC stream info declares no sample rate")
    if audio_start >= size:
        raise _truncated("the FLAC file ends before its first audio frame")
    if _flac_frame_header(_read_at(f, audio_start, 16), max_block) is None:
        raise AudioRejected("the FLAC stream is damaged: no audio frame follows the metadata")

    # The last frame is found by its header and verified by its CRC-16, which covers the
    # whole frame: a file cut anywhere but a frame boundary has no such last frame, and one
    # cut at a boundary ends before the sample count the stream info declares.
    # Bounded whatever the (untrusted) stream info says, as is the number of CRC-16 runs.
    span = min(max_frame + 16, 1 << 20) if max_frame else 1 << 20
    window = min(size - audio_start, span)
    tail = _read_at(f, size - window, window)
    tried = 0
    at = tail.rfind(b"\xff")
    end_sample = -1
    while at != -1 and tried < _FLAC_TAIL_CANDIDATES:
        parsed = _flac_frame_header(tail[at : at + 16], max_block)
        if parsed is not None:
            tried += 1
            if window - at >= 8 and _crc16(tail[at:-2]) == int.from_bytes(tail[-2:], "big"):
                end_sample = parsed[0] + parsed[1]
                break
        at = tail.rfind(b"\xff", 0, at)
    if end_sample < 0:
        raise _truncated("the last FLAC frame is incomplete")
    if total and end_sample < total:
        raise _truncated(
            f"the FLAC stream info declares {total} samples but the frames end at {end_sample}"
        )

    _mutagen_info(FLAC, f, "FLAC")
    return AudioInfo("flac", "flac", (total or end_sample) / rate, rate, channels)
