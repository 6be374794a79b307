"""The accepted formats, their content types and extensions, and the check of client claims."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from storage.errors import AudioRejected


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
