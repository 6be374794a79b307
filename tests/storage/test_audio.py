"""probe_audio against real encoder output: formats, claims, truncation and junk."""

from __future__ import annotations

import os
import random
import struct
import time
import tracemalloc
from pathlib import Path

import pytest

from storage.audio import (
    CONTENT_TYPE_ALIASES,
    CONTENT_TYPES,
    EXTENSIONS,
    NOT_AUDIO,
    AudioInfo,
    _flac_frame_header,
    probe_audio,
)
from storage.errors import AudioRejected
from tests.audiogen import (
    EXPECTED,
    KINDS,
    SUFFIXES,
    effective_rate,
    make_audio,
    make_large_wav,
    truncate_copy,
    write_bytes,
)

# Every generated kind carries exact-length metadata (WAV sizes, the MP3 LAME tag, Ogg
# granules, FLAC sample counts, the MP4 movie header), so the generated length is expected.
TOLERANCE_S = 0.1
PLAIN_MP3 = (("write_xing", "0"), ("id3v2_version", "0"))


def _refused(path: Path, **claims: str | None) -> str:
    with pytest.raises(AudioRejected) as info:
        probe_audio(path, **claims)
    return info.value.detail


def _other_format(fmt: str) -> str:
    return next(f for f in CONTENT_TYPES if f != fmt)


def _wav(
    data: bytes,
    *,
    tag: int = 1,
    channels: int = 1,
    rate: int = 8000,
    bits: int = 16,
    declared: int | None = None,
    extensible: bool = False,
) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack(
        "<HHIIHH", 0xFFFE if extensible else tag, channels, rate, rate * block, block, bits
    )
    if extensible:
        guid = struct.pack("<H", tag) + bytes.fromhex("000000001000800000aa00389b71")
        fmt += struct.pack("<HHI", 22, bits, 0) + guid
    length = len(data) if declared is None else declared
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", length) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


# --- real formats ----------------------------------------------------------------------------


@pytest.mark.parametrize("rate,channels", [(8000, 1), (16000, 2), (44100, 2)])
@pytest.mark.parametrize("kind", KINDS)
def test_probe_reports_real_format(kind: str, rate: int, channels: int) -> None:
    path = make_audio(kind, 2.0, sample_rate=rate, channels=channels)
    info = probe_audio(path)
    assert (info.format, info.codec) == EXPECTED[kind]
    assert info.sample_rate == effective_rate(kind, rate)
    assert info.channels == channels
    assert info.duration_s == pytest.approx(2.0, abs=TOLERANCE_S)
    assert info.content_type == CONTENT_TYPES[info.format]


@pytest.mark.parametrize("kind", KINDS)
def test_longer_recordings_report_their_length(kind: str) -> None:
    info = probe_audio(make_audio(kind, 37.5))
    assert info.duration_s == pytest.approx(37.5, abs=TOLERANCE_S)


def test_mp3_without_vbr_header_is_estimated_from_its_bitrate() -> None:
    # Without a Xing/LAME header the encoder's delay and padding are unknown, so the
    # estimate counts them: at 8 kHz that is up to a few frames of 72 ms.
    info = probe_audio(make_audio("mp3", 2.0, muxer_options=PLAIN_MP3))
    assert (info.format, info.codec, info.sample_rate) == ("mp3", "mp3", 8000)
    assert info.duration_s == pytest.approx(2.0, abs=0.25)


def test_m4a_with_index_first_is_accepted() -> None:
    info = probe_audio(make_audio("m4a_aac", muxer_options=(("movflags", "faststart"),)))
    assert (info.format, info.codec) == ("m4a", "aac")
    assert info.duration_s == pytest.approx(2.0, abs=TOLERANCE_S)


@pytest.mark.parametrize(
    "tag,bits,extensible,codec",
    [
        (1, 8, False, "pcm_u8"),
        (1, 16, True, "pcm_s16le"),
        (1, 24, False, "pcm_s24le"),
        (1, 32, True, "pcm_s32le"),
        (7, 8, True, "pcm_mulaw"),
        (6, 8, False, "pcm_alaw"),
    ],
)
def test_wav_sample_formats(tag: int, bits: int, extensible: bool, codec: str) -> None:
    data = bytes(8000 * bits // 8)  # one second of mono silence
    path = write_bytes(_wav(data, tag=tag, bits=bits, extensible=extensible), ".wav")
    assert probe_audio(path) == AudioInfo("wav", codec, 1.0, 8000, 1)


def test_wav_with_float_samples_is_refused() -> None:
    path = write_bytes(_wav(bytes(32000), tag=3, bits=32), ".wav")
    assert _refused(path) == "WAV audio encoding 0x0003 is not supported (use PCM, A-law or µ-law)"


# --- claims ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_matching_claims_are_accepted(kind: str) -> None:
    path = make_audio(kind)
    fmt, codec = EXPECTED[kind]
    for content_type in sorted(CONTENT_TYPE_ALIASES[fmt]):
        if content_type in ("audio/opus", "audio/x-opus") and codec != "opus":
            continue
        if content_type == "audio/vorbis" and codec != "vorbis":
            continue
        assert probe_audio(path, content_type=content_type).format == fmt
    for ext in EXTENSIONS[fmt]:
        if ext == ".opus" and codec != "opus":
            continue
        assert probe_audio(path, filename=f"Puhelu 2024-05-01{ext.upper()}").format == fmt
    both = probe_audio(
        path,
        content_type=CONTENT_TYPES[fmt] + "; charset=binary",
        filename="c:\\tallenteet\\puhelu" + SUFFIXES[kind],
    )
    assert both.format == fmt


@pytest.mark.parametrize("kind", KINDS)
def test_empty_or_generic_claims_claim_nothing(kind: str) -> None:
    path = make_audio(kind)
    for content_type in (None, "", "application/octet-stream", "Application/Octet-Stream"):
        for filename in (None, "", "recording", "recording.bin", "call.2024-05-01"):
            probe_audio(path, content_type=content_type, filename=filename)


@pytest.mark.parametrize("kind", KINDS)
def test_contradicting_content_type_is_refused(kind: str) -> None:
    fmt = EXPECTED[kind][0]
    claimed = CONTENT_TYPES[_other_format(fmt)]
    detail = _refused(make_audio(kind), content_type=claimed)
    assert detail == f"the Content-Type {claimed} contradicts the file's real format {fmt}"


@pytest.mark.parametrize("kind", KINDS)
def test_non_audio_content_type_is_refused(kind: str) -> None:
    detail = _refused(make_audio(kind), content_type="text/plain")
    assert detail.startswith("the Content-Type text/plain contradicts")


@pytest.mark.parametrize("kind", KINDS)
def test_contradicting_extension_is_refused(kind: str) -> None:
    fmt = EXPECTED[kind][0]
    ext = EXTENSIONS[_other_format(fmt)][0]
    detail = _refused(make_audio(kind), filename=f"call{ext}")
    assert detail == f"the file extension {ext} contradicts the file's real format {fmt}"


def test_foreign_media_extension_is_refused() -> None:
    detail = _refused(make_audio("wav_pcm"), filename="call.wma")
    assert detail == "the file extension .wma contradicts the file's real format wav"


def test_opus_claims_on_vorbis_are_refused() -> None:
    vorbis = make_audio("ogg_vorbis")
    assert _refused(vorbis, filename="call.opus") == (
        "the file extension .opus contradicts the file's real format ogg (vorbis)"
    )
    assert _refused(vorbis, content_type="audio/opus") == (
        "the Content-Type audio/opus contradicts the file's real format ogg (vorbis)"
    )
    assert _refused(make_audio("ogg_opus"), content_type="audio/vorbis") == (
        "the Content-Type audio/vorbis contradicts the file's real format ogg (opus)"
    )


def test_hostile_content_type_is_not_echoed_raw() -> None:
    detail = _refused(make_audio("wav_pcm"), content_type="x/" + "\x1b[31m" + "y" * 200)
    assert "\x1b" not in detail and len(detail) < 200


# --- truncation ------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.5, 0.1, 0.9, 0.99])
@pytest.mark.parametrize("kind", KINDS)
def test_truncated_copy_is_refused(kind: str, fraction: float) -> None:
    detail = _refused(truncate_copy(make_audio(kind, channels=2), fraction))
    assert detail.startswith("audio is truncated: ")


def test_truncated_wav_message_gives_the_sizes() -> None:
    path = make_audio("wav_pcm")  # 32000 bytes of samples after a 78-byte header
    assert _refused(truncate_copy(path, 0.5)) == (
        "audio is truncated: the data chunk declares 32000 bytes but the file holds 15961"
    )


def test_wav_header_claiming_more_data_than_present_is_refused() -> None:
    path = write_bytes(_wav(bytes(1000), declared=480000), ".wav")
    assert _refused(path) == (
        "audio is truncated: the data chunk declares 480000 bytes but the file holds 1000"
    )


def test_wav_cut_inside_its_header_is_refused() -> None:
    header = _wav(bytes(100))
    assert _refused(write_bytes(header[:30], ".wav")) == (
        "audio is truncated: the format chunk declares 16 bytes but the file holds 10"
    )
    assert _refused(write_bytes(header[:40], ".wav")) == (
        "audio is truncated: the file ends before the WAV data chunk"
    )


def test_mp3_with_vbr_header_is_checked_against_its_declared_size() -> None:
    detail = _refused(truncate_copy(make_audio("mp3"), 0.5))
    assert detail.startswith("audio is truncated: the MP3 header declares ")


@pytest.mark.parametrize("seconds", [2.0, 600.0])
@pytest.mark.parametrize("fraction", [0.03, 0.5, 0.999])
def test_mp3_without_vbr_header_cut_inside_a_frame_is_refused(
    seconds: float, fraction: float
) -> None:
    # 600 s is longer than the tail window, so the last frames are found by resyncing.
    path = make_audio("mp3", seconds, muxer_options=PLAIN_MP3)
    size = path.stat().st_size
    keep = int(size * fraction) // 72 * 72 + 37  # 8 kbit/s at 8 kHz: 72-byte frames
    detail = _refused(truncate_copy(path, keep / size))
    assert detail.startswith("audio is truncated: ")
    assert "MPEG frame" in detail


def test_mp3_without_vbr_header_cut_on_a_frame_boundary_is_a_shorter_mp3() -> None:
    # Constant-bitrate frames without a Xing header carry no total length; a cut between two
    # frames leaves a valid, shorter stream. That limit is inherent to the format.
    path = make_audio("mp3", 2.0, muxer_options=PLAIN_MP3)
    size = path.stat().st_size
    cut = truncate_copy(path, (size // 2 // 72 * 72) / size)  # 8 kbit/s at 8 kHz: 72-byte frames
    assert probe_audio(cut).duration_s < 1.5


def test_ogg_cut_on_a_page_boundary_lacks_end_of_stream() -> None:
    path = make_audio("ogg_opus")
    data = path.read_bytes()
    cut = write_bytes(data[: data.rindex(b"OggS")], ".opus")
    assert _refused(cut) == (
        "audio is truncated: the Ogg stream ends without its end-of-stream page"
    )


def test_ogg_with_a_flipped_byte_fails_its_checksum() -> None:
    data = bytearray(make_audio("ogg_vorbis").read_bytes())
    data[len(data) // 2] ^= 0x40
    assert "fails its checksum" in _refused(write_bytes(bytes(data), ".ogg"))


def test_ogg_with_a_missing_page_is_refused() -> None:
    data = make_audio("ogg_opus", 10.0).read_bytes()
    starts = [i for i in range(len(data)) if data.startswith(b"OggS", i)]
    assert len(starts) > 4
    cut = data[: starts[2]] + data[starts[3] :]
    assert _refused(write_bytes(cut, ".opus")) == "the Ogg stream is damaged: page 2 is missing"


def test_flac_cut_on_a_frame_boundary_falls_short_of_its_sample_count() -> None:
    data = make_audio("flac").read_bytes()
    block = struct.unpack_from(">H", data, 10)[0]  # STREAMINFO max block size
    frames = [
        i
        for i in range(len(data) // 2, len(data) - 16)
        if data[i] == 0xFF and _flac_frame_header(data[i : i + 16], block) is not None
    ]
    detail = _refused(write_bytes(data[: frames[0]], ".flac"))
    assert detail.startswith("audio is truncated: the FLAC stream info declares 16000 samples")


def test_m4a_with_index_first_cut_is_refused() -> None:
    path = make_audio("m4a_aac", muxer_options=(("movflags", "faststart"),))
    detail = _refused(truncate_copy(path, 0.5))
    assert detail.startswith("audio is truncated: the mdat atom declares ")


def test_m4a_without_index_is_refused() -> None:
    data = make_audio("m4a_aac").read_bytes()
    moov = data.index(b"moov") - 4
    assert _refused(write_bytes(data[:moov], ".m4a")) == (
        "audio is truncated: the M4A file has no movie header (moov atom)"
    )


# --- not audio -------------------------------------------------------------------------------


def test_empty_file_is_refused() -> None:
    assert _refused(write_bytes(b"", ".wav")) == "the file is empty"


def test_text_named_wav_is_refused() -> None:
    text = b"Asiakas soitti 1.5.2024 ja pyysi salasanaa hunter2\n" * 20
    detail = _refused(write_bytes(text, ".wav"), content_type="audio/wav", filename="call.wav")
    assert detail == NOT_AUDIO
    assert "hunter2" not in detail


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes_are_refused(seed: int) -> None:
    data = random.Random(seed).randbytes(50_000)
    assert _refused(write_bytes(data)) == NOT_AUDIO


def test_id3_tag_followed_by_garbage_is_refused() -> None:
    tag = b"ID3\x04\x00\x00\x00\x00\x00\x0a" + bytes(10)
    assert _refused(write_bytes(tag + b"not an mpeg frame at all" * 40, ".mp3")) == NOT_AUDIO


def test_mpeg_sync_followed_by_garbage_is_refused() -> None:
    frame = make_audio("mp3", muxer_options=PLAIN_MP3).read_bytes()[:72]
    detail = _refused(write_bytes(frame + b"\x00" * 5000, ".mp3"))
    assert detail == "the MP3 stream is damaged: frame 2 has no valid header"


def test_wav_with_no_samples_has_zero_duration() -> None:
    assert _refused(write_bytes(_wav(b""), ".wav")) == "audio has zero duration"


def test_riff_that_is_not_wave_is_refused() -> None:
    avi = b"RIFF" + struct.pack("<I", 1000) + b"AVI LIST" + bytes(996)
    assert _refused(write_bytes(avi, ".wav")) == NOT_AUDIO


# --- large files -----------------------------------------------------------------------------


def test_large_wav_is_probed_in_bounded_memory() -> None:
    path = make_large_wav(64 << 20)
    tracemalloc.start()
    try:
        info = probe_audio(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.duration_s == pytest.approx((64 << 20) / 16000, abs=0.01)
    assert peak < 1 << 20


def test_sparse_two_gib_wav_is_probed_quickly(tmp_path: Path) -> None:
    data_len = (2 << 30) - 44
    path = tmp_path / "big.wav"
    path.write_bytes(_wav(b"", declared=data_len))
    os.truncate(path, 44 + data_len)  # sparse: takes no disk space
    started = time.monotonic()
    info = probe_audio(path)
    assert time.monotonic() - started < 1.0
    assert info.duration_s == pytest.approx(data_len / 16000)


@pytest.mark.parametrize("kind", ["mp3", "ogg_opus", "flac", "m4a_aac"])
def test_compressed_formats_are_probed_in_bounded_memory(kind: str) -> None:
    path = make_audio(kind, 300.0)
    tracemalloc.start()
    try:
        probe_audio(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20
