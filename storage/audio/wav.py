"""WAV: RIFF chunks parsed directly (PCM, A-law, µ-law, extensible), truncation by data size."""

from __future__ import annotations

import struct
from typing import BinaryIO

from storage.audio.common import _read_at, _truncated
from storage.audio.formats import AudioInfo
from storage.errors import AudioRejected

# Tail of the KSDATAFORMAT_SUBTYPE_* GUIDs; the first two bytes carry the plain format code.
_KS_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")
_PCM_CODECS = {8: "pcm_u8", 16: "pcm_s16le", 24: "pcm_s24le", 32: "pcm_s32le"}
_MAX_RIFF_CHUNKS = 1024


def _parse_wav_fmt(body: bytes) -> tuple[str, int, int, int]:
    """(codec, sample_rate, channels, block_align) from a `fmt ` chunk body."""
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", body)
    if tag == 0xFFFE:
        if len(body) < 40 or body[26:40] != _KS_GUID_TAIL:
            raise AudioRejected("the WAV extensible format chunk is malformed")
        tag = int.from_bytes(body[24:26], "little")
    if channels == 0 or rate == 0 or block_align == 0:
        raise AudioRejected("the WAV format chunk declares no channels, sample rate or frame size")
    if tag == 1:
        codec = _PCM_CODECS.get(bits)
        if codec is None:
            raise AudioRejected(f"WAV PCM with {bits} bits per sample is not supported")
        width = bits // 8
    elif tag in (6, 7):
        codec = "pcm_alaw" if tag == 6 else "pcm_mulaw"
        width = 1
    else:
        raise AudioRejected(
            f"WAV audio encoding 0x{tag:04X} is not supported (use PCM, A-law or µ-law)"
        )
    if block_align != channels * width:
        raise AudioRejected("the WAV format chunk's frame size does not match its sample format")
    return codec, rate, channels, block_align


def _probe_wav(f: BinaryIO, size: int) -> AudioInfo:
    # Parsed by hand: mutagen takes the data chunk's declared length on trust.
    pos = 12
    fmt: tuple[str, int, int, int] | None = None
    for _ in range(_MAX_RIFF_CHUNKS):
        header = _read_at(f, pos, 8)
        if len(header) < 8:
            where = "format" if fmt is None else "data"
            raise _truncated(f"the file ends before the WAV {where} chunk")
        chunk_id, length = struct.unpack("<4sI", header)
        body = pos + 8
        held = size - body
        if chunk_id == b"fmt ":
            if length < 16:
                raise AudioRejected("the WAV format chunk is too short")
            if length > held:
                raise _truncated(
                    f"the format chunk declares {length} bytes but the file holds {held}"
                )
            fmt = _parse_wav_fmt(_read_at(f, body, min(length, 40)))
        elif chunk_id == b"data":
            if fmt is None:
                raise AudioRejected("the WAV data chunk comes before its format chunk")
            if length > held:
                raise _truncated(
                    f"the data chunk declares {length} bytes but the file holds {held}"
                )
            codec, rate, channels, block_align = fmt
            return AudioInfo("wav", codec, (length // block_align) / rate, rate, channels)
        pos = body + length + (length & 1)
    raise AudioRejected("the WAV file has too many chunks before its audio data")
