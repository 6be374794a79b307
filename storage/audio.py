"""The accepted audio formats and probe_audio, which finds an upload's real format, codec and
duration from its bytes and refuses files that are not whole audio or contradict their claims.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from mutagen import MutagenError
from mutagen.flac import FLAC
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis

from storage.errors import AudioRejected

__all__ = [
    "CONTENT_TYPES",
    "CONTENT_TYPE_ALIASES",
    "EXTENSIONS",
    "NOT_AUDIO",
    "AudioInfo",
    "probe_audio",
]


@dataclass(frozen=True)
class AudioInfo:
    """What an upload really is, as found from its bytes."""

    format: str  # wav|mp3|ogg|flac|m4a
    codec: str  # pcm_s16le|pcm_u8|pcm_s24le|pcm_s32le|pcm_mulaw|pcm_alaw|mp3|opus|vorbis|flac|aac
    duration_s: float
    sample_rate: int
    channels: int

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


CONTENT_TYPES: dict[str, str] = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "flac": "audio/flac",
    "m4a": "audio/mp4",
}

# Every Content-Type a client may send for a format, canonical one included.
CONTENT_TYPE_ALIASES: dict[str, frozenset[str]] = {
    "wav": frozenset(
        {"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "audio/x-pn-wav"}
    ),
    "mp3": frozenset(
        {"audio/mpeg", "audio/mp3", "audio/x-mp3", "audio/mpeg3", "audio/x-mpeg", "audio/x-mpeg-3"}
    ),
    "ogg": frozenset(
        {
            "audio/ogg",
            "audio/opus",
            "audio/vorbis",
            "audio/x-ogg",
            "application/ogg",
            "audio/x-opus",
        }
    ),
    "flac": frozenset({"audio/flac", "audio/x-flac"}),
    # video/mp4 is what browsers send for an .mp4 file even when it holds only sound.
    "m4a": frozenset(
        {"audio/mp4", "audio/x-m4a", "audio/m4a", "audio/aac", "audio/x-aac", "video/mp4"}
    ),
}

# .aac normally names a raw ADTS stream, which is not accepted; but recorders also use it for
# AAC in MP4, so the claim is read as "AAC audio".
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "wav": (".wav", ".wave"),
    "mp3": (".mp3",),
    "ogg": (".ogg", ".opus", ".oga"),
    "flac": (".flac",),
    "m4a": (".m4a", ".mp4", ".aac"),
}

# Claims that also pin the codec inside the container.
_CODEC_CLAIMS: dict[str, str] = {
    ".opus": "opus",
    "audio/opus": "opus",
    "audio/x-opus": "opus",
    "audio/vorbis": "vorbis",
}

# Content types that say nothing about the bytes.
_NO_CLAIM_TYPES = frozenset({"application/octet-stream", "binary/octet-stream"})

# Other media extensions: a real file named with one of them contradicts itself. Any other
# extension is ordinary free text in a file name and claims nothing.
_FOREIGN_EXTENSIONS = frozenset(
    {
        ".wma",
        ".amr",
        ".aif",
        ".aiff",
        ".aifc",
        ".au",
        ".snd",
        ".caf",
        ".webm",
        ".weba",
        ".mka",
        ".mkv",
        ".3gp",
        ".mov",
        ".avi",
        ".ra",
        ".gsm",
    }
)

SUPPORTED = "WAV, MP3, Ogg Opus/Vorbis, FLAC, M4A/AAC"
NOT_AUDIO = f"file is not audio in a supported format ({SUPPORTED})"

_READ_BUFFER = 1 << 16


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


# --- claims ----------------------------------------------------------------------------------


def _shown(value: str) -> str:
    """A client-supplied value made safe to echo: printable ASCII, bounded length."""
    clean = "".join(c if " " <= c <= "~" else "?" for c in value)
    return clean if len(clean) <= 80 else clean[:77] + "..."


def _real(fmt: str, codec: str | None, claim: str) -> str:
    pinned = _CODEC_CLAIMS.get(claim)
    return f"{fmt} ({codec})" if pinned is not None and codec is not None else fmt


def _check_claims(
    fmt: str, codec: str | None, content_type: str | None, filename: str | None
) -> None:
    if content_type:
        media = content_type.split(";", 1)[0].strip().lower()
        if media and media not in _NO_CLAIM_TYPES:
            pinned = _CODEC_CLAIMS.get(media)
            if media not in CONTENT_TYPE_ALIASES[fmt] or (
                codec is not None and pinned is not None and pinned != codec
            ):
                raise AudioRejected(
                    f"the Content-Type {_shown(media)} contradicts the file's real format "
                    f"{_real(fmt, codec, media)}"
                )
    if filename:
        ext = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
        known = ext in _FOREIGN_EXTENSIONS or any(ext in exts for exts in EXTENSIONS.values())
        if known:
            pinned = _CODEC_CLAIMS.get(ext)
            if ext not in EXTENSIONS[fmt] or (
                codec is not None and pinned is not None and pinned != codec
            ):
                raise AudioRejected(
                    f"the file extension {_shown(ext)} contradicts the file's real format "
                    f"{_real(fmt, codec, ext)}"
                )


# --- shared helpers --------------------------------------------------------------------------


def _read_at(f: BinaryIO, offset: int, n: int) -> bytes:
    f.seek(offset)
    return f.read(n)


def _truncated(detail: str) -> AudioRejected:
    return AudioRejected(f"audio is truncated: {detail}")


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


# --- WAV -------------------------------------------------------------------------------------

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


# --- MP3 -------------------------------------------------------------------------------------

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


# --- Ogg -------------------------------------------------------------------------------------

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


# --- FLAC ------------------------------------------------------------------------------------


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


# --- M4A -------------------------------------------------------------------------------------

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


_PROBES: dict[str, Callable[[BinaryIO, int], AudioInfo]] = {
    "wav": _probe_wav,
    "mp3": _probe_mp3,
    "ogg": _probe_ogg,
    "flac": _probe_flac,
    "m4a": _probe_m4a,
}
