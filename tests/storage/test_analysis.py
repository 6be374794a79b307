"""Call analytics on synthesised stereo calls whose truth is known (tests/audiogen.py)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from storage.audio.analysis import analyse_file, unpack_peaks
from tests import audiogen

LEFT_TRUTH = (audiogen.LEFT_TALK[1] - audiogen.LEFT_TALK[0]) / audiogen.CALL_SECONDS
RIGHT_TRUTH = (audiogen.RIGHT_TALK[1] - audiogen.RIGHT_TALK[0]) / audiogen.CALL_SECONDS
SILENCE_TRUTH = (audiogen.CALL_SECONDS - audiogen.RIGHT_TALK[1]) / audiogen.CALL_SECONDS


@pytest.mark.parametrize("kind", audiogen.KINDS)
def test_talk_silence_and_overtalk_match_the_truth_in_every_format(kind: str) -> None:
    analysed = analyse_file(audiogen.make_call(kind, "clean"), ["agent", "customer"])
    result = analysed.analysis
    left, right = result.channels
    assert (left.role, right.role) == ("agent", "customer")
    assert left.talk_ratio == pytest.approx(LEFT_TRUTH, rel=0.03)
    assert right.talk_ratio == pytest.approx(RIGHT_TRUTH, rel=0.03)
    assert result.silence_ratio == pytest.approx(SILENCE_TRUTH, rel=0.03)
    assert result.longest_silence_s == pytest.approx(6.0, abs=0.2)
    assert result.overtalk_s == pytest.approx(2.0, abs=0.1)
    assert result.overtalk_count == 1
    assert result.flags == []


@pytest.mark.parametrize("kind", audiogen.KINDS)
def test_clipping_and_dropout_are_flagged_in_every_format(kind: str) -> None:
    result = analyse_file(audiogen.make_call(kind, "faulty")).analysis
    assert result.flags == ["clipping", "dropout"]
    assert result.overtalk_s == pytest.approx(2.0, abs=0.1)


@pytest.mark.parametrize(("scenario", "flags"), [
    ("silent_right", ["silent_channel", "one_sided"]),
    ("one_sided", ["one_sided"]),
    ("mixdown", ["mono_mixdown"]),
])
@pytest.mark.parametrize("kind", ["wav_pcm", "mp3", "m4a_aac"])
def test_channel_faults_are_flagged(kind: str, scenario: str, flags: list[str]) -> None:
    assert analyse_file(audiogen.make_call(kind, scenario)).analysis.flags == flags


def test_peaks_are_min_and_max_per_10_ms_per_channel() -> None:
    analysed = analyse_file(audiogen.make_call("wav_pcm", "clean"))
    (left_min, left_max), (right_min, right_max) = unpack_peaks(analysed.peaks, 2)
    assert len(left_min) == len(right_max) == int(audiogen.CALL_SECONDS * 100)
    # The left party talks at up to 0.5 of full scale in its first ten seconds only.
    assert 0.4 < max(left_max[:1000]) <= 0.51
    assert max(left_max[1100:]) < 0.01
    assert min(right_min[900:1900]) < -0.3
    assert all(lo <= hi for lo, hi in zip(left_min, left_max, strict=True))


def test_a_steady_tone_on_a_mono_call_is_no_talk() -> None:
    result = analyse_file(audiogen.make_audio("wav_mulaw", 3.0)).analysis
    assert len(result.channels) == 1
    assert result.channels[0].talk_s == 0
    assert result.silence_ratio == 1.0
    assert result.overtalk_s == 0


def _stating(path: Path, size: int, trailer: bytes = b"") -> Path:
    """A copy of a WAV whose `data` chunk states `size`, with `trailer` after the samples."""
    data = bytearray(path.read_bytes() + trailer)
    at = data.index(b"data")
    data[at + 4:at + 8] = struct.pack("<I", size)
    data[4:8] = struct.pack("<I", len(data) - 8)
    return audiogen.write_bytes(bytes(data), ".wav")


@pytest.mark.parametrize("kind", ["wav_pcm", "wav_mulaw", "wav_alaw"])
def test_a_wav_reads_the_same_whether_its_samples_are_read_whole_or_packet_by_packet(
        kind: str) -> None:
    """A WAV that states its data size is read straight from the file; one that does not
    (0, or 0xFFFFFFFF as a recorder streaming it writes) through the demuxer: the same
    samples give the same peaks and analysis, and a chunk after the samples is no audio."""
    original = audiogen.make_call(kind, "clean")
    samples = original.stat().st_size - original.read_bytes().index(b"data") - 8
    expected = analyse_file(original)
    trailer = b"LIST" + struct.pack("<I", 18) + b"INFOISFT" + struct.pack("<I", 6) + b"tests\0"
    for variant in (_stating(original, samples, trailer), _stating(original, 0xFFFFFFFF),
                    _stating(original, 0)):
        got = analyse_file(variant)
        assert got.peaks == expected.peaks
        assert got.analysis == expected.analysis


def test_a_truncated_wav_is_analysed_as_far_as_its_samples_go() -> None:
    original = audiogen.make_call("wav_pcm", "clean")
    expected = unpack_peaks(analyse_file(original).peaks, 2)
    got = unpack_peaks(analyse_file(audiogen.truncate_copy(original, 0.5)).peaks, 2)
    ticks = len(got[0][0])
    assert ticks == pytest.approx(len(expected[0][0]) / 2, abs=2)
    # Every whole tick is the original's; the last may hold part of one.
    assert got[0][0][:ticks - 1] == expected[0][0][:ticks - 1]
    assert got[1][1][:ticks - 1] == expected[1][1][:ticks - 1]
