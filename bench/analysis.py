"""Call analysis vs PyAV decoding alone of the same file, same run.

    .venv/bin/python -m bench.analysis [--quick]

Analysis decodes the audio too, so its cost over decoding is the figure of merit: for a
stereo 8 kHz call as PCM WAV and as MP3 (an hour; ten minutes with --quick), decode-only
and analysis rounds alternate and the median of each is taken. Both are timed in CPU
seconds of this process (`time.process_time`): each runs in this one thread, and on a
shared virtual machine the CPU time of the same work varies far less than the wall time,
which also counts the time the machine gave to others. The analysis works on the file
alone (PCM and G.711 WAV samples read straight from the file, other codecs decoded): no database
or object store takes part, so no stack is started. The last line is `analysis: ratio X.XX
(goal <= 1.5) PASS|FAIL`, the worse format's ratio of analysis time to decode time; the
seconds per audio hour are printed above it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from storage.audio.analysis import analyse_file

GOAL = 1.5
RATE = 8000
CHUNK_S = 26  # one pattern of speech, overtalk and silence


def _pattern(rng: np.random.Generator) -> np.ndarray:
    """26 s of a call: the left party talks 0-10 s, the right 8-20 s, silence to 26 s."""
    n = CHUNK_S * RATE
    t = np.arange(n) / RATE
    out = rng.uniform(-1.0, 1.0, (2, n)) * 0.001
    syllables = np.where((t % 0.26) >= 0.20, 0.02, 1.0)
    for channel, (a, b) in enumerate(((0, 10), (8, 20))):
        span = slice(a * RATE, b * RATE)
        out[channel, span] += rng.uniform(-0.5, 0.5, b * RATE - a * RATE) * syllables[span]
    return np.asarray(out, dtype=np.float32)


def write_call(path: Path, container: str, codec: str, seconds: int) -> None:
    rng = np.random.default_rng(6)
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=RATE, layout="stereo")
        assert isinstance(stream, av.AudioStream)
        formats = stream.codec_context.codec.audio_formats
        resampler = av.AudioResampler(format=formats[0].name if formats else "s16",
                                      layout="stereo", rate=RATE,
                                      frame_size=stream.codec_context.frame_size or None)
        pts = 0
        for _ in range(seconds // CHUNK_S + 1):
            frame = av.AudioFrame.from_ndarray(_pattern(rng), format="fltp", layout="stereo")
            frame.sample_rate = RATE
            for piece in resampler.resample(frame):
                piece.pts = pts
                pts += piece.samples
                for packet in stream.encode(piece):
                    out.mux(packet)
        for piece in resampler.resample(None):
            piece.pts = pts
            pts += piece.samples
            for packet in stream.encode(piece):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def decode_only(path: Path) -> int:
    samples = 0
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.audio[0]):
            samples += frame.samples
    return samples


def timed(work: object, *args: object) -> float:
    start = time.process_time()
    work(*args)  # type: ignore[operator]
    return time.process_time() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="ten minutes of audio, 3 rounds")
    args = parser.parse_args(argv)
    seconds = 600 if args.quick else 3600
    rounds = 3 if args.quick else 5
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for label, container, codec, suffix in (("wav", "wav", "pcm_s16le", ".wav"),
                                                ("mp3", "mp3", "libmp3lame", ".mp3")):
            path = Path(tmp) / f"call{suffix}"
            write_call(path, container, codec, seconds)
            decode_only(path)  # warm the page cache and the decoder
            decode_s, analyse_s = [], []
            for _ in range(rounds):
                decode_s.append(timed(decode_only, path))
                analyse_s.append(timed(analyse_file, path, None, float(seconds)))
            d, a = statistics.median(decode_s), statistics.median(analyse_s)
            hours = seconds / 3600
            ratio = a / d
            worst = max(worst, ratio)
            print(f"{label}: decode {d / hours:.2f} s/audio hour, analysis "
                  f"{a / hours:.2f} s/audio hour, ratio {ratio:.2f}")
    verdict = "PASS" if worst <= GOAL else "FAIL"
    print(f"analysis: ratio {worst:.2f} (goal <= {GOAL}) {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
