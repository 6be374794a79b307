"""Call analytics from the audio itself: voice activity per channel, talk, silence and
overtalk, health flags, and the min/max peaks the player draws.

The audio is decoded with PyAV and reduced as it streams to 10 ms ticks per channel (sum of
squares, lowest and highest sample): memory grows with the call's length by a few dozen
bytes per tick, never with its samples. Voice activity is decided on 20 ms frames (two
ticks): a frame is speech when its energy stands clear of an adaptive noise floor (the
minimum energy over a sliding window of a few seconds), and a pause shorter than the
hangover keeps the party talking.
"""

from __future__ import annotations

import itertools
import math
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from schemas.analysis import ChannelRole, Flag

TICKS_PER_S = 100  # peaks and the smallest unit of analysis: 10 ms
FRAME_TICKS = 2  # voice activity frames: 20 ms
FRAME_S = FRAME_TICKS / TICKS_PER_S
FLOOR_BLOCK = 25  # frames whose minimum is one step of the noise floor (0.5 s)
FLOOR_SPAN = 7  # blocks in the sliding window of the noise floor (3.5 s)
SPEECH_ABOVE_FLOOR_DB = 12.0
SPEECH_MIN_DB = -55.0  # nothing quieter is speech, whatever the floor
SPEECH_RANGE_DB = 30.0  # nor anything this far below the channel's loud speech
LOUD_PERCENTILE = 95
DIGITAL_SILENCE_DB = -75.0  # below the idle noise of A-law
QUIET_LINE_DB = -70.0
HANGOVER_FRAMES = 15  # pauses up to 300 ms inside speech
MIN_TALK_FRAMES = 3  # a click shorter than 60 ms is no talk
MIN_OVERTALK_FRAMES = 3
CLIP_LEVEL = 0.97  # µ-law's highest code decodes to 0.98 of full scale
CLIP_SHARE = 0.01  # of a channel's speech ticks
CLIP_MIN_TICKS = 10
DIGITAL_SILENCE = 5e-4  # about -66 dBFS; A-law's smallest step is -72 dBFS
DROPOUT_MIN_TICKS = 8
DROPOUT_MAX_TICKS = 200
DROPOUT_FADE_FRAMES = 20
SILENT_CHANNEL_DB = -50.0  # a channel quieter than this on the whole carried nothing
ONE_SIDED_TALK_S = 2.0
MIXDOWN_DIFFERENCE = 0.02
PEAK_SCALE = 127  # peaks are kept as signed bytes
BATCH_S = 5  # seconds of decoded audio reduced at once

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
Bools = npt.NDArray[np.bool_]
I8 = npt.NDArray[np.int8]
F16 = npt.NDArray[np.float16]


class UndecodableAudio(Exception):
    """The audio could not be decoded for analysis."""


class _Ticks:
    """Per-tick statistics of every channel, in arrays that grow as the audio streams in
    (sized from the probed duration up front, so they seldom need to)."""

    def __init__(self, channels: int, expected: int) -> None:
        capacity = max(expected, TICKS_PER_S)
        self.used = 0
        self.level_db: F16 = np.empty((channels, capacity), dtype=np.float16)
        self.low: I8 = np.empty((channels, capacity), dtype=np.int8)
        self.high: I8 = np.empty((channels, capacity), dtype=np.int8)
        self.silent: Bools = np.empty((channels, capacity), dtype=bool)
        self.clipped: Bools = np.empty((channels, capacity), dtype=bool)

    def add(self, level_db: F32, low: I8, high: I8, silent: Bools, clipped: Bools) -> None:
        n = level_db.shape[1]
        if self.used + n > self.level_db.shape[1]:
            grown = max(self.used + n, self.level_db.shape[1] * 5 // 4)
            for name in ("level_db", "low", "high", "silent", "clipped"):
                old = getattr(self, name)
                new = np.empty((old.shape[0], grown), dtype=old.dtype)
                new[:, : self.used] = old[:, : self.used]
                setattr(self, name, new)
        end = self.used + n
        self.level_db[:, self.used:end] = level_db
        self.low[:, self.used:end] = low
        self.high[:, self.used:end] = high
        self.silent[:, self.used:end] = silent
        self.clipped[:, self.used:end] = clipped
        self.used = end


@dataclass(frozen=True)
class ChannelTicks:
    """One channel's ticks: about 8 bytes per 10 ms, some 3 MB per hour."""

    level_db: F16  # mean square of the tick's samples (in -1..1), in dB
    low: I8  # lowest and highest sample, as peaks are kept (× PEAK_SCALE)
    high: I8
    silent: Bools  # digital silence: no sample above DIGITAL_SILENCE
    clipped: Bools  # two samples or more at CLIP_LEVEL


@dataclass(frozen=True)
class ChannelTalk:
    role: ChannelRole | None
    talk_s: float
    talk_ratio: float  # talk_s as a share of the whole call


@dataclass(frozen=True)
class CallAnalysis:
    """Talk, silence, overtalk and health flags of a call (the API's RecordingAnalysis)."""

    channels: list[ChannelTalk]
    silence_ratio: float
    longest_silence_s: float
    overtalk_s: float
    overtalk_count: int
    flags: list[Flag]

    def document(self) -> dict[str, Any]:
        """As stored in `recordings.analysis` and shown by the API."""
        return asdict(self)


@dataclass(frozen=True)
class Analysed:
    analysis: CallAnalysis
    peaks: bytes  # see `pack_peaks`
    channels: int
    duration_s: float


def _as_peak(values: npt.NDArray[np.floating]) -> I8:
    return np.clip(np.round(values * PEAK_SCALE), -PEAK_SCALE, PEAK_SCALE).astype(np.int8)


_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9.223372036854776e18}
_DTYPES = {name: np.dtype(code) for name, code in av.audio.frame.format_dtypes.items()}


def _s16_as_float(values: npt.NDArray[Any]) -> F32:
    scaled = values.astype(np.float32)
    scaled *= np.float32(1.0 / _SCALE["s16"])
    return scaled


# 16-bit samples (PCM, G.711, FLAC) are reduced as the integers they are decoded to. The
# limits above, which are meant for samples in -1..1, become the 16-bit values that meet them
# once scaled; so the ticks are the same either way.
_S16_LEVELS = _s16_as_float(np.arange(0, 32769, dtype=np.int32))
_CLIP_S16 = int(np.argmax(_S16_LEVELS >= CLIP_LEVEL))  # |sample| >= this: at CLIP_LEVEL
_SILENT_S16 = int(np.argmin(_S16_LEVELS < DIGITAL_SILENCE))  # |sample| < this: silent
_S16_ALL = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
_PEAK_S16: I8 = np.empty(1 << 16, dtype=np.int8)  # a sample's peak byte, by its bits
_PEAK_S16[_S16_ALL.view(np.uint16)] = _as_peak(_s16_as_float(_S16_ALL))
del _S16_ALL

# Samples of every channel shaped (channels, n): 16-bit as decoded, or floats in -1..1.
Samples = npt.NDArray[np.int16] | F32
_TickStats = tuple[F32, I8, I8, Bools, Bools]  # level_db, low, high, silent, clipped


def _as_float(samples: Samples) -> F32:
    if samples.dtype == np.int16:
        return _s16_as_float(samples)
    return samples.astype(np.float32, copy=False)


def _level_db(sumsq: F64, counts: int | npt.NDArray[np.int64]) -> F32:
    power = np.maximum(sumsq / np.maximum(counts, 1), 1e-12)
    return (10.0 * np.log10(power)).astype(np.float32)


def _uneven_ticks(body: F32, ends: npt.NDArray[np.int64]) -> _TickStats:
    """Ticks of unequal lengths (a sample rate that is no multiple of 100 Hz, or the end of
    the audio): `ends` are where they end in `body`."""
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    sumsq = np.add.reduceat(body.astype(np.float64) ** 2, starts, axis=1)
    high = np.maximum.reduceat(body, starts, axis=1)
    low = np.minimum.reduceat(body, starts, axis=1)
    counts = np.diff(np.concatenate([starts, [body.shape[1]]]))
    # Samples at full scale are counted only in the ticks that reach it.
    loud_ticks = (high >= CLIP_LEVEL) | (low <= -CLIP_LEVEL)
    clipped = np.zeros(high.shape, dtype=bool)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    for c, t in zip(*np.nonzero(loud_ticks), strict=True):
        piece = body[c, int(offsets[t]):int(offsets[t + 1])]
        clipped[c, t] = np.count_nonzero(np.abs(piece) >= CLIP_LEVEL) >= 2
    return (_level_db(sumsq, counts), _as_peak(low), _as_peak(high),
            np.maximum(high, -low) < DIGITAL_SILENCE, clipped)


class _Reducer:
    """Turns decoded samples into ticks; whatever does not fill a tick waits for the next
    block."""

    def __init__(self, rate: int, channels: int, expected_s: float) -> None:
        self.rate = rate
        self.channels = channels
        self.ticks_done = 0
        self.samples_done = 0
        self._carry: Samples = np.zeros((channels, 0), dtype=np.float32)
        # Samples per tick when every tick has as many, else 0.
        self._width = rate // TICKS_PER_S if rate % TICKS_PER_S == 0 else 0
        self._columns: npt.NDArray[Any] = np.empty(0, dtype=np.int16)
        self._wide: F64 = np.empty(0, dtype=np.float64)
        self.out = _Ticks(channels, int(expected_s * TICKS_PER_S) + TICKS_PER_S)

    def _boundary(self, tick: int) -> int:
        return (tick * self.rate + TICKS_PER_S // 2) // TICKS_PER_S

    def feed(self, block: Samples, final: bool = False) -> None:
        if self._carry.shape[1]:
            if self._carry.dtype != block.dtype:
                block = np.concatenate([_as_float(self._carry), _as_float(block)], axis=1)
            else:
                block = np.concatenate([self._carry, block], axis=1)
        start = self._boundary(self.ticks_done) - self.samples_done
        available = self.samples_done + block.shape[1]
        whole = available * TICKS_PER_S // self.rate
        if final and available > self._boundary(whole):
            whole += 1
        n = whole - self.ticks_done
        if n <= 0:
            self._carry = block.copy()  # the block may be a staging array
            return
        if self._width and start == 0 and n * self._width <= block.shape[1]:
            used = n * self._width
            self.out.add(*self._even_ticks(block[:, :used], n))
        else:
            ends = np.minimum(
                (np.arange(self.ticks_done + 1, whole + 1, dtype=np.int64) * self.rate
                 + TICKS_PER_S // 2) // TICKS_PER_S - self.samples_done,
                block.shape[1],
            )
            used = int(ends[-1])
            self.out.add(*_uneven_ticks(_as_float(block[:, start:used]), ends - start))
        self.ticks_done = whole
        self.samples_done += used
        self._carry = block[:, used:].copy()

    def _even_ticks(self, body: Samples, n: int) -> _TickStats:
        """`n` ticks of `width` samples each, reduced in one pass over a copy that holds
        the k-th sample of every tick of every channel in its k-th row: the reductions then
        run along rows, over thousands of ticks at once, rather than over each tick."""
        width, channels = self._width, self.channels
        shape = (width, channels, n)
        if self._columns.shape != shape or self._columns.dtype != body.dtype:
            self._columns = np.empty(shape, dtype=body.dtype)
        shaped = body.reshape(channels, n, width)
        np.copyto(self._columns, shaped.transpose(2, 0, 1))
        columns = self._columns.reshape(width, channels * n)
        high = columns.max(axis=0)
        low = columns.min(axis=0)
        clipped = np.zeros(channels * n, dtype=bool)
        if body.dtype == np.int16:
            # Exact: 16-bit squares and their sums fit float64's 53 bits, in any order.
            if self._wide.shape != columns.shape:
                self._wide = np.empty(columns.shape, dtype=np.float64)
            np.copyto(self._wide, columns)
            sumsq = np.einsum("kt,kt->t", self._wide, self._wide)
            sumsq *= 1.0 / _SCALE["s16"] ** 2
            loud = (high >= _CLIP_S16) | (low <= -_CLIP_S16)
            if loud.any():
                rows = columns[:, loud]
                hits = (rows >= _CLIP_S16) | (rows <= -_CLIP_S16)
                clipped[loud] = np.count_nonzero(hits, axis=0) >= 2
            peaks_low = _PEAK_S16.take(low.view(np.uint16))
            peaks_high = _PEAK_S16.take(high.view(np.uint16))
            silent = (high < _SILENT_S16) & (low > -_SILENT_S16)
        else:
            # float32 sums of a tick's squares: levels are kept as float16 anyway.
            sumsq = np.einsum("kt,kt->t", columns, columns)
            loud = (high >= CLIP_LEVEL) | (low <= -CLIP_LEVEL)
            if loud.any():
                rows = columns[:, loud]
                clipped[loud] = np.count_nonzero(np.abs(rows) >= CLIP_LEVEL, axis=0) >= 2
            peaks_low, peaks_high = _as_peak(low), _as_peak(high)
            silent = np.maximum(high, -low) < DIGITAL_SILENCE
        return tuple(values.reshape(channels, n) for values in (  # type: ignore[return-value]
            _level_db(sumsq, width), peaks_low, peaks_high, silent, clipped))

    def result(self) -> list[ChannelTicks]:
        self.feed(np.zeros((self.channels, 0), dtype=self._carry.dtype), final=True)
        out = self.out
        if not out.used:
            raise UndecodableAudio("the audio holds no samples")
        n = out.used
        return [ChannelTicks(out.level_db[c, :n], out.low[c, :n], out.high[c, :n],
                             out.silent[c, :n], out.clipped[c, :n])
                for c in range(self.channels)]


class _Staging:
    """Arrays reused from batch to batch for the samples taken out of the FIFO: a fresh
    array of this size each time costs more in page faults than the copy into it."""

    def __init__(self) -> None:
        self._held: dict[np.dtype[Any], npt.NDArray[Any]] = {}

    def array(self, dtype: np.dtype[Any], channels: int, n: int) -> npt.NDArray[Any]:
        """A C-contiguous array shaped (channels, n), overwritten by the next call."""
        held = self._held.get(dtype)
        if held is None or len(held) < channels * n:
            held = self._held[dtype] = np.empty(channels * n, dtype=dtype)
        return held[: channels * n].reshape(channels, n)


def _samples(frame: av.AudioFrame, channels: int, staging: _Staging) -> Samples:
    """A (large) frame's samples shaped (channels, n): 16-bit ones as they are, others as
    floats in -1..1. The array is valid until the next call with the same `staging`."""
    name = frame.format.name
    dtype = _DTYPES.get(name)
    if dtype is None:
        raise ValueError(f"no numpy type for {name!r} samples")
    layout_channels = frame.layout.nb_channels
    n = frame.samples
    # Views of the frame's own buffers (AudioFrame.to_ndarray would copy them into a new
    # array); planes are gathered into a staging array.
    raw: npt.NDArray[Any]
    if frame.format.is_planar:
        raw = staging.array(dtype, layout_channels, n)
        for row, plane in zip(raw, frame.planes, strict=True):
            row[:] = np.frombuffer(memoryview(plane), dtype=dtype, count=n)
    else:
        raw = np.frombuffer(memoryview(frame.planes[0]), dtype=dtype,
                            count=n * layout_channels)
        raw = raw.reshape(n, layout_channels).T
    base = name.rstrip("p")
    block: Samples
    if base == "s16":
        block = raw
    else:
        block = staging.array(np.dtype(np.float32), layout_channels, n)
        np.copyto(block, raw, casting="unsafe")
        if base == "u8":
            block -= 128.0
        scale = _SCALE.get(base)
        if scale is not None:
            block *= np.float32(1.0 / scale)
    if block.shape[0] != channels:
        # A stream whose layout changes mid-way: keep the channel count it started with.
        fitted = np.zeros((channels, block.shape[1]), dtype=block.dtype)
        keep = min(channels, block.shape[0])
        fitted[:keep] = block[:keep]
        block = fitted
    return block


def _taken(fifo: av.AudioFifo, samples: int = 0) -> av.AudioFrame:
    frame = fifo.read(samples)
    if frame is None:
        raise UndecodableAudio("the audio FIFO ran dry")
    return frame


def _g711_table(codec: str) -> npt.NDArray[np.int16]:
    """The 16-bit sample of each of the 256 G.711 bytes, as FFmpeg's own decoder gives it."""
    context = av.CodecContext.create(codec, "r")
    assert isinstance(context, av.AudioCodecContext)
    context.sample_rate = 8000
    context.layout = "mono"
    frames = context.decode(av.Packet(bytes(range(256))))
    table = np.concatenate([frame.to_ndarray().reshape(-1) for frame in frames])
    out = table.astype(np.int16)
    out.flags.writeable = False
    return out


# Codecs whose packets are the samples themselves (16-bit PCM) or index a fixed table (G.711):
# their packets are read as they are, without a decoder and a frame object per packet.
_G711 = MappingProxyType({codec: _g711_table(codec) for codec in ("pcm_mulaw", "pcm_alaw")})
_SAMPLE_CODECS = frozenset({"pcm_s16le", *_G711})


def _stated_span(path: Path, container: av.container.InputContainer,
                 first: av.Packet[av.AudioStream] | None) -> tuple[int, int] | None:
    """(offset, length) in the file of a WAV stream's samples as its demuxer reads them:
    from the first packet on, as many bytes as the `data` chunk's header before it states.
    None where the header states no size (0, or 0xFFFFFFFF as streamed and RF64 files
    write it) or is not there; the stream is then demuxed packet by packet."""
    if container.format.name != "wav" or first is None or first.pos is None or first.pos < 8:
        return None
    with path.open("rb") as file:
        file.seek(first.pos - 8)
        header = file.read(8)
    if len(header) != 8 or header[:4] != b"data":
        return None
    (stated,) = struct.unpack("<I", header[4:])
    if stated in (0, 0xFFFFFFFF):
        return None
    return first.pos, stated


def _blocks(path: Path, offset: int, length: int, size: int) -> Iterator[bytes]:
    """The file's bytes offset..offset+length (fewer where the file ends first) in blocks
    of `size`."""
    with path.open("rb") as file:
        file.seek(offset)
        while length > 0 and (block := file.read(min(size, length))):
            length -= len(block)
            yield block


def _packed_ticks(path: Path, container: av.container.InputContainer, stream: av.AudioStream,
                  expected_s: float) -> _Reducer | None:
    """Ticks of a PCM or G.711 stream: the bytes are the samples (16-bit, interleaved) or
    index the G.711 table. A plain WAV's samples are read straight from the file in long
    blocks; other containers' come packet by packet (some 1-2 KiB each, which costs
    FFmpeg and PyAV about as much per byte as the ticks themselves)."""
    context = stream.codec_context
    channels, rate = context.channels, context.sample_rate
    table = _G711.get(context.name)  # None for 16-bit PCM
    width = 1 if table is not None else 2  # bytes per sample
    reducer = _Reducer(rate, channels, expected_s)
    batch_bytes = BATCH_S * rate * channels * width
    pending = bytearray()
    fed = 0

    def feed(size: int) -> None:
        nonlocal fed
        fed += size
        raw = np.frombuffer(pending, dtype=np.uint8 if table is not None else "<i2",
                            count=size // width)
        # A copy either way: `pending` cannot shrink while a view of it lives.
        samples = table.take(raw) if table is not None else raw.astype(np.int16)
        del raw
        reducer.feed(samples.reshape(-1, channels).T)
        del pending[:size]

    packets = container.demux(stream)
    first = next(packets, None)
    span = _stated_span(path, container, first)
    pieces: Iterable[bytes | memoryview]
    if span is not None:
        pieces = _blocks(path, *span, batch_bytes)
    else:
        pieces = (memoryview(p) for p in itertools.chain([first] if first else [], packets)
                  if p.size)
    for piece in pieces:
        pending += piece
        if len(pending) >= batch_bytes:
            feed(batch_bytes)
    whole = len(pending) // (channels * width) * channels * width
    if whole:
        feed(whole)
    return reducer if fed else None


def decode_ticks(path: Path, expected_s: float = 0.0) -> tuple[list[ChannelTicks], int]:
    """Decode the file's first audio stream into per-channel ticks; (ticks, sample rate).

    Decoded frames gather in an FFmpeg audio FIFO and are taken out BATCH_S seconds at a
    time, so that numpy works on long arrays rather than on each small frame. PCM and G.711
    need no decoder: their packets are read as the samples they hold."""
    reducer: _Reducer | None = None
    fifo = av.AudioFifo()
    staging = _Staging()
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise UndecodableAudio("no audio stream")
            stream = container.streams.audio[0]
            context = stream.codec_context
            if context.name in _SAMPLE_CODECS and context.channels and context.sample_rate:
                reducer = _packed_ticks(path, container, stream, expected_s)
                if reducer is None:
                    raise UndecodableAudio("the audio holds no samples")
                return reducer.result(), reducer.rate
            batch = 0
            for frame in container.decode(stream):
                if reducer is None:
                    reducer = _Reducer(frame.sample_rate, frame.layout.nb_channels,
                                       expected_s)
                    batch = BATCH_S * reducer.rate
                frame.pts = None  # the FIFO would insist on gapless timestamps
                try:
                    fifo.write(frame)
                except ValueError:
                    # The frame's format or layout differs from those before it.
                    if fifo.samples:
                        reducer.feed(_samples(_taken(fifo), reducer.channels, staging))
                    fifo = av.AudioFifo()
                    fifo.write(frame)
                if fifo.samples >= batch:
                    reducer.feed(_samples(_taken(fifo, batch), reducer.channels, staging))
            if reducer is not None and fifo.samples:
                reducer.feed(_samples(_taken(fifo), reducer.channels, staging))
    except (av.error.FFmpegError, ValueError) as exc:
        raise UndecodableAudio(str(exc)) from exc
    if reducer is None:
        raise UndecodableAudio("the audio holds no frames")
    return reducer.result(), reducer.rate


# --- voice activity --------------------------------------------------------------------------


def _runs(mask: Bools) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Starts and (exclusive) ends of the True runs of `mask`."""
    edge = np.zeros(1, dtype=np.int8)
    edges = np.diff(np.concatenate([edge, mask.view(np.int8), edge]))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _spans(starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64], n: int) -> Bools:
    """A mask of length `n`, True inside the given spans (which do not overlap)."""
    marks = np.zeros(n + 1, dtype=np.int8)
    marks[starts] = 1
    marks[ends] -= 1
    return np.cumsum(marks[:n], dtype=np.int8).view(np.bool_)


def _power_table() -> F32:
    """The power of every float16 level in dB, as float32 (so a level's power is looked
    up, not computed)."""
    levels = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    power = levels.astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        power /= np.float32(10.0)
        np.power(np.float32(10.0), power, out=power)
    return power


_POWER_OF_LEVEL = _power_table()


def _power(level_db: F16) -> F32:
    return _POWER_OF_LEVEL.take(level_db.view(np.uint16))


def _mean_level_db(level_db: F16, chunk: int = 1 << 16) -> float:
    """The level of a whole channel from its ticks' levels, a chunk at a time."""
    if not len(level_db):
        return -120.0
    total = 0.0
    for at in range(0, len(level_db), chunk):
        total += float(np.sum(_power(level_db[at:at + chunk]), dtype=np.float64))
    return 10 * math.log10(max(total / len(level_db), 1e-12))


def _frame_energy_db(ticks: ChannelTicks) -> F32:
    n = len(ticks.level_db) // FRAME_TICKS * FRAME_TICKS
    ticks_of_frames = _power(ticks.level_db[:n]).reshape(-1, FRAME_TICKS)
    # The mean of each frame's two ticks, as ndarray.mean has it (their sum, halved), but
    # without a reduction along rows of two.
    mean: F32 = ticks_of_frames[:, 0] + ticks_of_frames[:, 1]
    mean /= np.float32(FRAME_TICKS)
    np.maximum(mean, np.float32(1e-12), out=mean)
    np.log10(mean, out=mean)
    mean *= np.float32(10.0)
    return mean


def _noise_floor(energy: F32) -> F32:
    """Minimum statistics: the lowest frame energy within a window of FLOOR_SPAN blocks
    around each frame.

    Digital silence is no noise: a short run of it (codec padding, a dropout) is left out,
    and a long one (a line that sends nothing between utterances) counts as a quiet line."""
    energy = energy.copy()
    starts, ends = _runs(energy < DIGITAL_SILENCE_DB)
    short = ends - starts < FLOOR_BLOCK
    energy[_spans(starts[short], ends[short], len(energy))] = np.inf
    energy[_spans(starts[~short], ends[~short], len(energy))] = QUIET_LINE_DB
    blocks = -(-len(energy) // FLOOR_BLOCK)
    padded = np.full(blocks * FLOOR_BLOCK, np.inf, dtype=np.float32)
    padded[: len(energy)] = energy
    block_min = padded.reshape(blocks, FLOOR_BLOCK).min(axis=1)
    half = FLOOR_SPAN // 2
    edge = np.full(half, np.inf, dtype=np.float32)
    around = np.concatenate([edge, block_min, edge])
    windows = np.lib.stride_tricks.sliding_window_view(around, FLOOR_SPAN).min(axis=1)
    return np.repeat(windows, FLOOR_BLOCK)[: len(energy)]


def voice_activity(ticks: ChannelTicks) -> Bools:
    """Per 20 ms frame: is the channel's party talking."""
    energy = _frame_energy_db(ticks)
    if not len(energy):
        return np.zeros(0, dtype=bool)
    # The loudest speech sets a bar too: a codec's smearing around a word is no talk.
    loud = float(np.percentile(energy, LOUD_PERCENTILE))
    threshold = np.maximum(_noise_floor(energy) + SPEECH_ABOVE_FLOOR_DB,
                           max(SPEECH_MIN_DB, loud - SPEECH_RANGE_DB))
    active: Bools = energy > threshold
    starts, ends = _runs(~active)
    inner = (starts > 0) & (ends < len(active)) & (ends - starts <= HANGOVER_FRAMES)
    active |= _spans(starts[inner], ends[inner], len(active))
    starts, ends = _runs(active)
    short = ends - starts < MIN_TALK_FRAMES
    active &= ~_spans(starts[short], ends[short], len(active))
    return active


# --- flags -----------------------------------------------------------------------------------


def _clipping(ticks: ChannelTicks, active: Bools) -> bool:
    speech_ticks = np.repeat(active, FRAME_TICKS)
    count = int(np.count_nonzero(ticks.clipped[: len(speech_ticks)] & speech_ticks))
    return count >= max(CLIP_MIN_TICKS, CLIP_SHARE * np.count_nonzero(speech_ticks))


def _dropout(ticks: ChannelTicks, active: Bools) -> bool:
    """A run of digital silence with speech right before and right after it."""
    starts, ends = _runs(ticks.silent)
    frames = len(active)
    for a, b in zip(starts, ends, strict=True):
        if not DROPOUT_MIN_TICKS <= b - a <= DROPOUT_MAX_TICKS:
            continue
        # A lossy codec lets the speech before the gap fade out rather than stop.
        before = (a - 1) // FRAME_TICKS
        after = b // FRAME_TICKS + 1
        if before >= 0 and after < frames \
                and active[max(0, before - DROPOUT_FADE_FRAMES):before + 1].any() \
                and active[after:after + 3].any():
            return True
    return False


def _mono_mixdown(channels: Sequence[ChannelTicks]) -> bool:
    if len(channels) != 2:
        return False
    left, right = channels
    pairs = ((left.low, right.low), (left.high, right.high))
    # Peaks are within -127..127: their sizes and differences fit in 16 bits.
    size = sum(int(np.abs(a, dtype=np.int16).sum(dtype=np.int64))
               + int(np.abs(b, dtype=np.int16).sum(dtype=np.int64)) for a, b in pairs) / 2
    if size <= 0:
        return False
    apart = float(sum(int(np.abs(np.subtract(a, b, dtype=np.int16)).sum(dtype=np.int64))
                      for a, b in pairs))
    return apart <= MIXDOWN_DIFFERENCE * size


# --- the call --------------------------------------------------------------------------------


def analyse_ticks(
    channels: Sequence[ChannelTicks], roles: Sequence[ChannelRole] | None = None
) -> CallAnalysis:
    activity = [voice_activity(t) for t in channels]
    frames = min(len(a) for a in activity)
    activity = [a[:frames] for a in activity]
    duration = frames * FRAME_S
    talking = np.stack(activity) if activity else np.zeros((0, 0), dtype=bool)
    speakers = talking.sum(axis=0) if frames else np.zeros(0, dtype=np.int64)
    quiet = speakers == 0
    q_starts, q_ends = _runs(quiet)
    o_starts, o_ends = _runs(speakers >= 2)
    talk = [float(np.count_nonzero(a)) * FRAME_S for a in activity]
    flags: list[Flag] = []
    levels = [_mean_level_db(t.level_db) for t in channels]
    if any(db < SILENT_CHANNEL_DB and s == 0 for db, s in zip(levels, talk, strict=True)):
        flags.append("silent_channel")
    if len(channels) > 1 and max(talk) >= ONE_SIDED_TALK_S and min(talk) < max(
            FRAME_S * MIN_TALK_FRAMES, 0.02 * max(talk)):
        flags.append("one_sided")
    if any(_clipping(t, a) for t, a in zip(channels, activity, strict=True)):
        flags.append("clipping")
    if any(_dropout(t, a) for t, a in zip(channels, activity, strict=True)):
        flags.append("dropout")
    if min(talk, default=0.0) > 0 and _mono_mixdown(channels):
        flags.append("mono_mixdown")
    role_of = list(roles or [])
    return CallAnalysis(
        channels=[
            ChannelTalk(role=role_of[i] if i < len(role_of) else None, talk_s=round(s, 2),
                        talk_ratio=round(s / duration, 4) if duration else 0.0)
            for i, s in enumerate(talk)
        ],
        silence_ratio=round(float(np.count_nonzero(quiet)) / frames, 4) if frames else 0.0,
        longest_silence_s=round(float(np.max(q_ends - q_starts, initial=0)) * FRAME_S, 2),
        overtalk_s=round(float(np.count_nonzero(speakers >= 2)) * FRAME_S, 2),
        overtalk_count=int(np.count_nonzero(o_ends - o_starts >= MIN_OVERTALK_FRAMES)),
        flags=flags,
    )


def pack_peaks(channels: Sequence[ChannelTicks]) -> bytes:
    """Peaks as bytes: per channel, per tick, min then max as signed bytes (-127..127),
    channel after channel; the tick count is the length / (2 × channels)."""
    return b"".join(np.stack([t.low, t.high], axis=1).tobytes() for t in channels)


def unpack_peaks(packed: bytes, channels: int) -> list[tuple[list[float], list[float]]]:
    """(min, max) per channel from `pack_peaks`, in -1..1."""
    if channels <= 0 or not packed:
        return []
    values = np.frombuffer(packed, dtype=np.int8).reshape(channels, -1, 2)
    scaled = np.round(values.astype(np.float64) / PEAK_SCALE, 3)
    return [(scaled[c, :, 0].tolist(), scaled[c, :, 1].tolist()) for c in range(channels)]


def analyse_file(
    path: Path, roles: Sequence[ChannelRole] | None = None, expected_s: float = 0.0
) -> Analysed:
    """Analyse a whole recording (blocking: run it in a worker thread); `expected_s`, its
    probed duration, sizes the tick arrays."""
    channels, _ = decode_ticks(path, expected_s)
    analysis = analyse_ticks(channels, roles)
    ticks = len(channels[0].level_db)
    return Analysed(analysis, pack_peaks(channels), len(channels), ticks / TICKS_PER_S)
