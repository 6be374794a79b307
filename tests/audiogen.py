"""Real test audio, encoded at test time with PyAV and soundfile.

Files are cached per process in one temporary directory so each kind is encoded once.
"""

from __future__ import annotations

import atexit
import itertools
import math
import shutil
import struct
import tempfile
from pathlib import Path

import av
import numpy as np
import soundfile

KINDS: list[str] = [
    "wav_pcm",
    "wav_mulaw",
    "wav_alaw",
    "mp3",
    "ogg_opus",
    "ogg_vorbis",
    "flac",
    "m4a_aac",
]

# kind -> (format, codec) as probe_audio reports them
EXPECTED: dict[str, tuple[str, str]] = {
    "wav_pcm": ("wav", "pcm_s16le"),
    "wav_mulaw": ("wav", "pcm_mulaw"),
    "wav_alaw": ("wav", "pcm_alaw"),
    "mp3": ("mp3", "mp3"),
    "ogg_opus": ("ogg", "opus"),
    "ogg_vorbis": ("ogg", "vorbis"),
    "flac": ("flac", "flac"),
    "m4a_aac": ("m4a", "aac"),
}

SUFFIXES: dict[str, str] = {
    "wav_pcm": ".wav",
    "wav_mulaw": ".wav",
    "wav_alaw": ".wav",
    "mp3": ".mp3",
    "ogg_opus": ".opus",
    "ogg_vorbis": ".ogg",
    "flac": ".flac",
    "m4a_aac": ".m4a",
}

# kind -> (container, encoder) for the PyAV path; Vorbis goes through libsndfile because
# FFmpeg's native Vorbis encoder is experimental and libvorbis is usually not linked in.
_AV_ENCODERS: dict[str, tuple[str, str]] = {
    "wav_pcm": ("wav", "pcm_s16le"),
    "wav_mulaw": ("wav", "pcm_mulaw"),
    "wav_alaw": ("wav", "pcm_alaw"),
    "mp3": ("mp3", "libmp3lame"),
    "ogg_opus": ("ogg", "libopus"),
    "flac": ("flac", "flac"),
    "m4a_aac": ("ipod", "aac"),
}

_cache: dict[tuple[str, float, int, int, float, tuple[tuple[str, str], ...]], Path] = {}
_counter = itertools.count()
_workdir: Path | None = None


def _dir() -> Path:
    global _workdir
    if _workdir is None:
        _workdir = Path(tempfile.mkdtemp(prefix="tallenne-audio-"))
        atexit.register(shutil.rmtree, _workdir, True)
    return _workdir


def _fresh(suffix: str) -> Path:
    return _dir() / f"a{next(_counter)}{suffix}"


def effective_rate(kind: str, sample_rate: int) -> int:
    """Sample rate the file of `kind` really has: Opus is always encoded at 48 kHz."""
    return 48000 if kind == "ogg_opus" else sample_rate


def _tone(seconds: float, rate: int, channels: int, tone_hz: float) -> np.ndarray:
    """Float samples shaped (channels, n); each channel a slightly different pitch."""
    n = int(round(seconds * rate))
    t = np.arange(n, dtype=np.float64) / rate
    rows = [0.5 * np.sin(2 * math.pi * tone_hz * (1 + 0.25 * c) * t) for c in range(channels)]
    return np.asarray(np.stack(rows), dtype=np.float32)


def _encode_av(
    path: Path, kind: str, samples: np.ndarray, rate: int, options: dict[str, str]
) -> None:
    container, encoder = _AV_ENCODERS[kind]
    channels = samples.shape[0]
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), "w", format=container, options=options) as out:
        stream = out.add_stream(encoder, rate=rate, layout=layout)
        assert isinstance(stream, av.AudioStream)
        ctx = stream.codec_context
        formats = ctx.codec.audio_formats
        target_fmt = formats[0].name if formats else "s16"
        frame_size = ctx.frame_size or None
        resampler = av.AudioResampler(
            format=target_fmt, layout=layout, rate=rate, frame_size=frame_size
        )
        source = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples), format="fltp", layout=layout
        )
        source.sample_rate = rate
        pts = 0
        for frame in [*resampler.resample(source), *resampler.resample(None)]:
            frame.pts = pts
            pts += frame.samples
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def make_audio(
    kind: str,
    seconds: float = 2.0,
    *,
    sample_rate: int = 8000,
    channels: int = 1,
    tone_hz: float = 440.0,
    muxer_options: tuple[tuple[str, str], ...] = (),
) -> Path:
    """Path of a cached file of `kind` holding a tone; callers must not modify it.

    `muxer_options` go to FFmpeg's muxer, e.g. (("write_xing", "0"),) for an MP3 without a
    Xing header or (("movflags", "faststart"),) for an M4A with its index first.
    """
    if kind not in EXPECTED:
        raise ValueError(f"unknown audio kind {kind!r}")
    if muxer_options and kind == "ogg_vorbis":
        raise ValueError("ogg_vorbis is written by libsndfile, which takes no muxer options")
    key = (kind, seconds, sample_rate, channels, tone_hz, muxer_options)
    cached = _cache.get(key)
    if cached is not None:
        return cached
    rate = effective_rate(kind, sample_rate)
    samples = _tone(seconds, rate, channels, tone_hz)
    path = _fresh(SUFFIXES[kind])
    if kind == "ogg_vorbis":
        soundfile.write(str(path), samples.T, rate, format="OGG", subtype="VORBIS")
    else:
        _encode_av(path, kind, samples, rate, dict(muxer_options))
    _cache[key] = path
    return path


def make_large_wav(size_bytes: int, *, sample_rate: int = 8000) -> Path:
    """A mono 16-bit PCM WAV of about `size_bytes`, written in 1 MiB pieces."""
    data_len = max(0, size_bytes - 44) & ~1
    path = _fresh(".wav")
    block = (
        (np.sin(2 * math.pi * 440.0 * np.arange(1 << 19) / sample_rate) * 12000)
        .astype("<i2")
        .tobytes()
    )
    with path.open("wb") as f:
        f.write(b"RIFF" + struct.pack("<I", 36 + data_len) + b"WAVE")
        f.write(b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16))
        f.write(b"data" + struct.pack("<I", data_len))
        left = data_len
        while left:
            piece = block[: min(left, len(block))]
            f.write(piece)
            left -= len(piece)
    return path


def truncate_copy(path: Path, fraction: float) -> Path:
    """A copy of `path` holding only its first `fraction` of bytes."""
    keep = int(path.stat().st_size * fraction)
    dest = _fresh(path.suffix)
    with path.open("rb") as src, dest.open("wb") as dst:
        while keep:
            piece = src.read(min(keep, 1 << 20))
            if not piece:
                break
            dst.write(piece)
            keep -= len(piece)
    return dest


def write_bytes(data: bytes, suffix: str = ".bin") -> Path:
    """A fresh file in the cache directory holding `data`."""
    path = _fresh(suffix)
    path.write_bytes(data)
    return path


# --- calls of known truth for the analytics -------------------------------------------------

CALL_SECONDS = 26.0
LEFT_TALK = (0.0, 10.0)
RIGHT_TALK = (8.0, 20.0)
DROPOUT = (4.0, 4.5)  # digital silence on the left, inside its speech
CLIPPED = (14.0, 15.0)  # the right party's burst here is clipped


def _speech_like(rng: np.random.Generator, n: int, rate: int, level: float) -> np.ndarray:
    """Noise in 'syllables' of 200 ms with 60 ms dips between them, peak below 0.6."""
    noise = rng.uniform(-1.0, 1.0, n) * level
    t = np.arange(n) / rate
    dips = (t % 0.26) >= 0.20
    envelope = np.where(dips, 0.02, 1.0)
    return np.asarray(noise * envelope, dtype=np.float64)


def call_samples(scenario: str, rate: int) -> np.ndarray:
    """Stereo float samples (2, n) of a 26 s call: the left party talks 0-10 s, the right
    8-20 s (2 s of overtalk), nobody 20-26 s, line noise at -60 dBFS throughout.

    Scenarios: "clean"; "faulty" (the right party clipped 14-15 s, a digital-silence
    dropout on the left 4-4.5 s); "silent_right" (the right channel carries nothing);
    "one_sided" (the right channel carries a steady hum, never speech); "mixdown" (both
    channels the same mix).
    """
    rng = np.random.default_rng(19)
    n = int(CALL_SECONDS * rate)
    out = rng.uniform(-1.0, 1.0, (2, n)) * 0.001

    def span(seconds: tuple[float, float]) -> slice:
        return slice(int(seconds[0] * rate), int(seconds[1] * rate))

    left, right = span(LEFT_TALK), span(RIGHT_TALK)
    out[0, left] += _speech_like(rng, left.stop - left.start, rate, 0.5)
    out[1, right] += _speech_like(rng, right.stop - right.start, rate, 0.4)
    if scenario == "faulty":
        clip = span(CLIPPED)
        out[1, clip] = np.clip(out[1, clip] * 4.0, -1.0, 1.0)
        out[0, span(DROPOUT)] = 0.0
    elif scenario == "silent_right":
        out[1] = 0.0
    elif scenario == "one_sided":
        t = np.arange(n) / rate
        out[1] = 0.03 * np.sin(2 * math.pi * 50.0 * t) + rng.uniform(-1.0, 1.0, n) * 0.01
    elif scenario == "mixdown":
        mix = (out[0] + out[1]) / 2
        out = np.stack([mix, mix])
    elif scenario != "clean":
        raise ValueError(f"unknown scenario {scenario!r}")
    return np.asarray(out, dtype=np.float32)


def make_call(kind: str, scenario: str = "clean", *, sample_rate: int = 8000) -> Path:
    """A cached stereo call of `kind` (see `call_samples`)."""
    key = (kind, CALL_SECONDS, sample_rate, 2, 0.0, (("call", scenario),))
    cached = _cache.get(key)
    if cached is not None:
        return cached
    rate = effective_rate(kind, sample_rate)
    samples = call_samples(scenario, rate)
    path = _fresh(SUFFIXES[kind])
    if kind == "ogg_vorbis":
        soundfile.write(str(path), samples.T, rate, format="OGG", subtype="VORBIS")
    else:
        _encode_av(path, kind, samples, rate, {})
    _cache[key] = path
    return path
