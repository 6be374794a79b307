"""The accepted audio formats and probe_audio, which finds an upload's real format, codec and
duration from its bytes and refuses files that are not whole audio or contradict their claims.
"""

from storage.audio.flac import _flac_frame_header
from storage.audio.formats import (
    CONTENT_TYPE_ALIASES,
    CONTENT_TYPES,
    EXTENSIONS,
    NOT_AUDIO,
    AudioInfo,
)
from storage.audio.probe import probe_audio

__all__ = [
    "CONTENT_TYPES",
    "CONTENT_TYPE_ALIASES",
    "EXTENSIONS",
    "NOT_AUDIO",
    "AudioInfo",
    "_flac_frame_header",
    "probe_audio",
]
