"""MP3: frame sync, Xing/VBRI headers and a frame walk to find truncation."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

from mutagen.mp3 import MP3

from storage.audio.common import _mutagen_info, _num, _read_at, _skip_id3v2, _truncated
from storage.audio.formats import NOT_AUDIO, AudioInfo
from storage.errors import AudioRejected

_BITRATES_V1 = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_BITRATES_V2 = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_MP3_TAIL = 256 * 1024  # bytes re-walked at the end of a long file to find its last frame
_MP3_HEAD_FRAMES = 8
_MP3_CHAIN = 4  # consecutive frames that prove a sync point in the tail is real


@dataclass(frozen=True)
class _MpegFrame:
    key: tuple[int, int]  # version+layer bits, sample-rate bits: constant within a stream
    rate: int
    channels: int
    length: int
    samples: int
    side_info: int
    min_length: int


def _mpeg_frame(h: bytes) -> _MpegFrame | None:
    """The MPEG audio Layer III frame whose 4-byte header is `h`, if it is one."""
    if len(h) < 4 or h[0] != 0xFF or h[1] & 0xE0 != 0xE0:
        return None
    version = (h[1] >> 3) & 3
    layer = (h[1] >> 1) & 3
    bitrate_index = h[2] >> 4
    rate_index = (h[2] >> 2) & 3
    if version == 1 or layer != 1 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    if h[3] & 3 == 2:  # reserved emphasis
        return None
    mpeg1 = version == 3
    table = _BITRATES_V1 if mpeg1 else _BITRATES_V2
    rate = _MPEG_RATES[version][rate_index]
    samples = 1152 if mpeg1 else 576
    mono = h[3] >> 6 == 3
    return _MpegFrame(
        key=(h[1] & 0x1E, h[2] & 0x0C),
        rate=rate,
        channels=1 if mono else 2,
        length=samples // 8 * table[bitrate_index] * 1000 // rate + ((h[2] >> 1) & 1),
        samples=samples,
        side_info=(17 if mpeg1 else 9) if mono else (32 if mpeg1 else 17),
        min_length=samples // 8 * table[1] * 1000 // rate,
    )


def _mp3_audio_end(f: BinaryIO, size: int, start: int) -> int:
    """Offset where MPEG frames must stop: before any trailing ID3v1 / APEv2 tag."""
    end = size
    if end - 128 >= start and _read_at(f, end - 128, 3) == b"TAG":
        end -= 128
    if end - 32 >= start:
        footer = _read_at(f, end - 32, 32)
        if footer[:8] == b"APETAGEX":
            tag_size, _count, flags = struct.unpack_from("<III", footer, 12)
            end -= tag_size + (32 if flags & 0x80000000 else 0)
    return max(end, start)


def _mp3_vbr_header(f: BinaryIO, start: int, first: _MpegFrame) -> tuple[int, int, int] | None:
    """(frames, stream bytes, samples to trim) from a Xing/Info or VBRI header; -1 = absent."""
    frame = _read_at(f, start, first.length)
    at = 4 + first.side_info
    if frame[at : at + 4] in (b"Xing", b"Info") and len(frame) >= at + 8:
        flags = int.from_bytes(frame[at + 4 : at + 8], "big")
        p = at + 8
        frames = declared = -1
        if flags & 1:
            frames = int.from_bytes(frame[p : p + 4], "big")
            p += 4
        if flags & 2:
            declared = int.from_bytes(frame[p : p + 4], "big")
            p += 4
        p += (100 if flags & 4 else 0) + (4 if flags & 8 else 0)
        trim = 0
        lame = frame[p : p + 24]
        # The LAME tag (written by LAME and FFmpeg) records encoder delay and padding.
        if len(lame) == 24 and lame[:4].isalpha():
            delay_padding = int.from_bytes(lame[21:24], "big")
            trim = (delay_padding >> 12) + (delay_padding & 0xFFF)
        return frames, declared, trim
    vbri = frame[36:54]
    if vbri[:4] == b"VBRI" and len(vbri) == 18:
        declared, frames = struct.unpack(">II", vbri[10:18])
        return frames, declared, 0
    return None


def _mp3_walk(buf: bytes, pos: int, key: tuple[int, int], base: int) -> None:
    """Follow frames from `pos` to the end of `buf`; refuse if the last one is cut off."""
    while pos + 4 <= len(buf):
        frame = _mpeg_frame(buf[pos : pos + 4])
        if frame is None or frame.key != key:
            # Not a frame: trailing junk after the audio, which players skip as well.
            return
        if pos + frame.length > len(buf):
            raise _truncated(
                f"the MPEG frame at byte {base + pos} needs {frame.length} bytes but the file "
                f"holds {len(buf) - pos}"
            )
        pos += frame.length
    if pos != len(buf):
        raise _truncated(f"the file ends inside the MPEG frame header at byte {base + pos}")


def _mp3_chain_start(buf: bytes, key: tuple[int, int]) -> int | None:
    """First offset in `buf` that starts a run of real frames reaching on to the end."""
    pos = buf.find(b"\xff")
    while pos != -1:
        p, run = pos, 0
        while run < _MP3_CHAIN:
            frame = _mpeg_frame(buf[p : p + 4])
            if frame is None or frame.key != key:
                break
            run += 1
            p += frame.length
            if p >= len(buf):
                run = _MP3_CHAIN
        if run == _MP3_CHAIN:
            return pos
        pos = buf.find(b"\xff", pos + 1)
    return None


def _probe_mp3(f: BinaryIO, size: int) -> AudioInfo:
    # mutagen will sync to frames anywhere in the first kilobytes, even in garbage, so the
    # frame structure is checked here first and mutagen only reads the stream properties.
    start = _skip_id3v2(f, size)
    end = _mp3_audio_end(f, size, start)
    first = _mpeg_frame(_read_at(f, start, 4))
    if first is None:
        raise AudioRejected(NOT_AUDIO)
    held = end - start

    pos = start
    for n in range(_MP3_HEAD_FRAMES):
        if pos + 4 > end:
            if n == 0 or pos != end:
                raise _truncated(f"the file ends inside MPEG frame {n + 1}")
            break
        frame = _mpeg_frame(_read_at(f, pos, 4))
        if frame is None or frame.key != first.key:
            raise AudioRejected(f"the MP3 stream is damaged: frame {n + 1} has no valid header")
        if pos + frame.length > end:
            raise _truncated(
                f"MPEG frame {n + 1} needs {frame.length} bytes but the file holds {end - pos}"
            )
        pos += frame.length

    vbr = _mp3_vbr_header(f, start, first)
    if vbr is not None:
        frames, declared, _trim = vbr
        # Compared with everything before the audio's end: some encoders count the ID3v2 tag.
        if declared > end:
            raise _truncated(
                f"the MP3 header declares {declared} bytes of audio but the file holds {held}"
            )
        if frames > 0 and frames * first.min_length > held:
            raise _truncated(
                f"the MP3 header declares {frames} frames but the file cannot hold that many"
            )

    tail_start = max(start, end - _MP3_TAIL)
    tail = _read_at(f, tail_start, end - tail_start)
    chain = 0 if tail_start == start else _mp3_chain_start(tail, first.key)
    if chain is None:
        raise AudioRejected("the MP3 stream is damaged: its last frames cannot be found")
    _mp3_walk(tail, chain, first.key, tail_start)

    info = _mutagen_info(MP3, f, "MP3")
    if int(_num(info, "sample_rate")) != first.rate:
        raise AudioRejected("the MP3 stream is damaged: its frames disagree on the sample rate")
    duration = _num(info, "length")
    if vbr is not None and vbr[0] > 0:
        frames, _declared, trim = vbr
        samples = frames * first.samples
        duration = (samples - trim if trim < samples else samples) / first.rate
    return AudioInfo("mp3", "mp3", duration, first.rate, first.channels)
