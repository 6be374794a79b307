"""The export bundle: a streamed zip whose manifest and SHA256SUMS match the bytes written,
readable by zipfile, unzip and sha256sum, optionally age-encrypted, in flat memory."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
import subprocess
import threading
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pyrage
import pytest
from pyrage import x25519

from schemas.vcon import VconRecording, build_vcon, vcon_json
from storage.errors import IntegrityError, InvalidInput
from storage.export_bundle import BundleEntry, iter_export, iter_zip
from storage.export_layout import s3_call_prefix, s3_export_key, s3_key, vcon_files, zip_files
from storage.vcon_stream import InlineVcon
from tests.audiogen import make_audio
from tests.schemas.vcon_support import decode_content_hash, recording, schema_errors

METADATA = {"export_id": "7f0c2b8e", "reason": "asiakkaan pyyntö", "format": "zip",
            "recipient": "Energiavirasto", "legal_basis": "legal_obligation"}
GENERATED = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)


async def pieces(data: bytes, step: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), step):
        yield data[start:start + step]


def entries_of(files: dict[str, bytes], **extra: Any) -> list[BundleEntry]:
    return [BundleEntry(name, len(data), pieces(data), **extra) for name, data in files.items()]


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def collect_until_error(stream: AsyncIterator[bytes]) -> tuple[bytes, BaseException]:
    got = bytearray()
    try:
        async for chunk in stream:
            got += chunk
    except Exception as exc:
        return bytes(got), exc
    raise AssertionError("the stream finished without an error")


def files_with_awkward_sizes() -> dict[str, bytes]:
    return {
        "recordings/empty.wav": b"",
        "recordings/one.bin": b"\x01",
        "recordings/call.json": json.dumps({"tags": ["ä", "ö"]}).encode(),
        "recordings/large.bin": os.urandom(700_001),
    }


async def test_zip_holds_every_file_with_a_manifest_whose_digests_match_the_bytes() -> None:
    files = files_with_awkward_sizes()
    out = await collect(iter_export(entries_of(files), metadata=METADATA,
                                    generated_at=GENERATED))

    archive = zipfile.ZipFile(io.BytesIO(out))
    assert archive.testzip() is None
    assert archive.namelist() == [*files, "manifest.json", "SHA256SUMS"]
    assert all(i.compress_type == zipfile.ZIP_STORED for i in archive.infolist())
    for name, data in files.items():
        assert archive.read(name) == data
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["export"] == METADATA
    assert manifest["generated_at"] == "2026-03-05T12:00:00+00:00"
    assert manifest["files"] == [
        {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in files.items()
    ]
    assert manifest["total_bytes"] == sum(len(d) for d in files.values())
    sums = archive.read("SHA256SUMS").decode().splitlines()
    listed = {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in sums}
    assert listed == {**{n: hashlib.sha256(d).hexdigest() for n, d in files.items()},
                      "manifest.json": hashlib.sha256(archive.read("manifest.json"))
                      .hexdigest()}


async def test_sha256sum_checks_every_file_of_the_unpacked_export(tmp_path: Path) -> None:
    if shutil.which("sha256sum") is None:
        pytest.skip("sha256sum (coreutils) is not installed")
    out = await collect(iter_export(entries_of(files_with_awkward_sizes()), metadata=METADATA))
    zipfile.ZipFile(io.BytesIO(out)).extractall(tmp_path)
    checked = subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count(": OK") == 5


@pytest.mark.e2e
async def test_unzip_tests_the_export_clean(tmp_path: Path) -> None:
    if shutil.which("unzip") is None:
        pytest.skip("unzip is not installed")
    path = tmp_path / "export.zip"
    path.write_bytes(await collect(iter_export(entries_of(files_with_awkward_sizes()),
                                               metadata=METADATA)))
    tested = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True,
                            timeout=60)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "No errors detected" in tested.stdout


async def test_on_file_hears_of_each_file_once_it_is_complete() -> None:
    files = files_with_awkward_sizes()
    heard: list[tuple[str, int, str]] = []
    await collect(iter_zip(entries_of(files), metadata=METADATA,
                           on_file=lambda f: heard.append((f.name, f.size, f.sha256))))
    assert heard == [(n, len(d), hashlib.sha256(d).hexdigest()) for n, d in files.items()]


async def test_entries_may_arrive_from_an_async_source() -> None:
    async def source() -> AsyncIterator[BundleEntry]:
        for i in range(3):
            await asyncio.sleep(0)
            data = f"call {i}".encode()
            yield BundleEntry(f"{i}.txt", len(data), pieces(data))

    archive = zipfile.ZipFile(io.BytesIO(await collect(iter_zip(source(), metadata={}))))
    assert [archive.read(f"{i}.txt") for i in range(3)] == [b"call 0", b"call 1", b"call 2"]


@pytest.mark.parametrize("stated_size", [699_999, 700_002])
async def test_an_entry_whose_length_differs_from_its_size_leaves_no_complete_zip(
        stated_size: int) -> None:
    data = os.urandom(700_000)
    entries = [BundleEntry("ok.bin", 3, pieces(b"abc")),
               BundleEntry("bad.bin", stated_size, pieces(data))]
    partial, error = await collect_until_error(iter_export(entries, metadata=METADATA))
    assert isinstance(error, IntegrityError) and "bad.bin" in str(error)
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(partial))


async def test_an_entry_that_differs_from_its_recorded_sha256_leaves_no_complete_zip() -> None:
    data = os.urandom(100_000)
    recorded = hashlib.sha256(data[:-1] + bytes([data[-1] ^ 1])).hexdigest()
    partial, error = await collect_until_error(iter_export(
        [BundleEntry("audio.wav", len(data), pieces(data), sha256=recorded)], metadata={}))
    assert isinstance(error, IntegrityError)
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(partial))


@pytest.mark.parametrize("name", ["../escape.wav", "/abs.wav", "a//b", "a/./b", "a\\b",
                                  "line\nbreak", "manifest.json", "SHA256SUMS", ""])
async def test_a_name_that_could_escape_or_collide_is_refused(name: str) -> None:
    _, error = await collect_until_error(iter_zip(entries_of({name: b"x"}), metadata={}))
    assert isinstance(error, ValueError)


async def test_two_files_with_one_name_are_refused() -> None:
    entries = [BundleEntry("a.bin", 1, pieces(b"1")), BundleEntry("a.bin", 1, pieces(b"2"))]
    _, error = await collect_until_error(iter_zip(entries, metadata={}))
    assert isinstance(error, ValueError) and "same name" in str(error)


# --- age ---------------------------------------------------------------------------------


async def test_encrypted_export_decrypts_to_exactly_the_plain_zip() -> None:
    identity = x25519.Identity.generate()
    files = files_with_awkward_sizes()
    plain = await collect(iter_export(entries_of(files), metadata=METADATA,
                                      generated_at=GENERATED))
    sealed = await collect(iter_export(entries_of(files), metadata=METADATA,
                                       generated_at=GENERATED,
                                       recipient=str(identity.to_public())))
    assert sealed.startswith(b"age-encryption.org/v1\n")
    assert plain not in sealed
    assert pyrage.decrypt(sealed, [identity]) == plain
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(sealed, [x25519.Identity.generate()])


@pytest.mark.e2e
async def test_the_age_tool_decrypts_the_export_to_exactly_the_plain_zip(
        tmp_path: Path) -> None:
    if shutil.which("age") is None or shutil.which("age-keygen") is None:
        pytest.skip("age is not installed (Debian package age)")
    key_file = tmp_path / "key.txt"
    made = subprocess.run(["age-keygen", "-o", str(key_file)], capture_output=True, text=True,
                          timeout=30)
    assert made.returncode == 0, made.stderr
    recipient = next(line.split(": ", 1)[1] for line in key_file.read_text().splitlines()
                     if line.startswith("# public key: "))
    files = files_with_awkward_sizes()
    plain = await collect(iter_export(entries_of(files), metadata=METADATA,
                                      generated_at=GENERATED))
    sealed = tmp_path / "export.zip.age"
    sealed.write_bytes(await collect(iter_export(entries_of(files), metadata=METADATA,
                                                 generated_at=GENERATED,
                                                 recipient=recipient)))
    opened = subprocess.run(["age", "-d", "-i", str(key_file), str(sealed)],
                            capture_output=True, timeout=60)
    assert opened.returncode == 0, opened.stderr
    assert opened.stdout == plain


async def test_encryption_stops_with_the_source_error_and_its_output_does_not_decrypt() -> None:
    identity = x25519.Identity.generate()
    data = os.urandom(3 << 20)
    entries = [BundleEntry("a.bin", len(data), pieces(data)),
               BundleEntry("b.bin", 10, pieces(b"too short"))]
    partial, error = await collect_until_error(iter_export(
        entries, metadata={}, recipient=str(identity.to_public())))
    assert isinstance(error, IntegrityError)
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(partial, [identity])


@pytest.mark.parametrize("key", ["age1notakey", "ssh-ed25519 AAAA", "", "AGE-SECRET-KEY-1X"])
async def test_a_recipient_that_is_not_an_age_public_key_is_refused_without_echo(
        key: str) -> None:
    _, error = await collect_until_error(iter_export(entries_of({"a": b"1"}), metadata={},
                                                     recipient=key))
    assert isinstance(error, InvalidInput)
    if key:
        assert key not in str(error) and all(key not in m for _, m in error.errors)


async def test_leaving_an_encrypted_stream_early_stops_its_worker() -> None:
    identity = x25519.Identity.generate()
    data = os.urandom(8 << 20)
    stream = iter_export([BundleEntry("a.bin", len(data), pieces(data))], metadata={},
                         recipient=str(identity.to_public()))
    first = await anext(stream)
    assert first.startswith(b"age-encryption.org/v1")
    await stream.aclose()
    await asyncio.sleep(0.3)
    assert not [t for t in threading.enumerate() if t.name == "age-encrypt"]


# --- layouts -----------------------------------------------------------------------------


async def test_vcon_layout_bundles_one_valid_vcon_per_call_with_the_audio_it_hashes() -> None:
    audio = make_audio("wav_pcm", 1.0).read_bytes()
    calls = [VconRecording.model_validate(recording(audio)) for _ in range(3)]
    entries = []
    for call in calls:
        names = vcon_files(call)
        url = f"https://tallenne.example.fi/api/v1/recordings/{call.id}/audio"
        document = vcon_json(build_vcon(call, host="tallenne.example.fi", audio_url=url))
        entries += [BundleEntry(names.metadata, len(document), pieces(document)),
                    BundleEntry(names.audio, len(audio), pieces(audio), sha256=call.sha256)]

    archive = zipfile.ZipFile(io.BytesIO(await collect(iter_export(entries, metadata={}))))
    for call in calls:
        document = json.loads(archive.read(f"{call.id}.vcon.json"))
        assert schema_errors(document) == []
        dialog = document["dialog"][0]
        assert dialog["filename"] == f"{call.id}.wav"
        algorithm, digest = decode_content_hash(dialog["content_hash"])
        assert algorithm == "sha256"
        assert digest == hashlib.sha256(archive.read(dialog["filename"])).digest()


async def test_vcon_layout_with_inline_audio_sizes_each_document_before_it_streams() -> None:
    audio = make_audio("wav_pcm", 1.0).read_bytes()
    call = VconRecording.model_validate(recording(audio))
    inline = InlineVcon(build_vcon(call, host="tallenne.example.fi"), len(audio))
    entry = BundleEntry(vcon_files(call).metadata, inline.size,
                        inline.iter_bytes(pieces(audio, 1000)))
    archive = zipfile.ZipFile(io.BytesIO(await collect(iter_export([entry], metadata={}))))
    document = json.loads(archive.read(f"{call.id}.vcon.json"))
    assert schema_errors(document) == []
    assert document["dialog"][0]["encoding"] == "base64url"


def test_zip_layout_names_calls_by_local_start_company_and_id() -> None:
    call = VconRecording.model_validate(recording(
        started_at=datetime(2026, 3, 31, 22, 30, tzinfo=UTC), format="mp3"))
    names = zip_files(call)
    stem = f"recordings/20260401-013000_oulun-sahkonmyynti_{call.id}"
    assert names == (f"{stem}.mp3", f"{stem}.json")


def test_s3_keys_are_partitioned_by_the_calls_local_date() -> None:
    # 22:30 UTC on 31 March is 01:30 on 1 April in Helsinki (summer time).
    call = VconRecording.model_validate(recording(
        started_at=datetime(2026, 3, 31, 22, 30, tzinfo=UTC)))
    assert s3_call_prefix("exports/2026-04/", call) == (
        f"exports/2026-04/year=2026/month=04/day=01/oulun-sahkonmyynti/{call.id}/")
    assert s3_key("", call, f"{call.id}.wav") == (
        f"year=2026/month=04/day=01/oulun-sahkonmyynti/{call.id}/{call.id}.wav")
    assert s3_export_key("/exports/x/", "manifest.json") == "exports/x/manifest.json"


@pytest.mark.parametrize("company", ["../other", "a/b"])
def test_s3_key_refuses_a_company_code_that_is_not_one_path_segment(company: str) -> None:
    call = VconRecording.model_validate(recording(company=company))
    with pytest.raises(ValueError):
        s3_key("exports", call, "audio.wav")


@pytest.mark.parametrize("prefix,filename", [("../up", "a.wav"), ("ok", "../a.wav"),
                                             ("ok", "a/b.wav")])
def test_s3_key_refuses_segments_that_climb_or_nest(prefix: str, filename: str) -> None:
    call = VconRecording.model_validate(recording())
    with pytest.raises(ValueError):
        s3_key(prefix, call, filename)


# --- memory -----------------------------------------------------------------------------

ZERO_CHUNK = bytes(1 << 20)
BIG_ENTRY = (4 << 30) + (768 << 20) + 12_345  # past 4 GiB, so the entry itself needs ZIP64
SMALL_ENTRY = (1 << 20) + 7


async def zeros(size: int) -> AsyncIterator[bytes]:
    whole, rest = divmod(size, len(ZERO_CHUNK))
    for _ in range(whole):
        yield ZERO_CHUNK
    if rest:
        yield ZERO_CHUNK[:rest]


@dataclass
class BigExport:
    path: Path
    written: int
    rss_growth: int


class SparseCountingSink:
    """Counts what it is given and keeps it in a sparse file: runs of zeros become holes,
    so a 5 GiB archive takes a few MiB of disk yet can be read back."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("wb")
        self.written = 0

    def write(self, chunk: bytes) -> None:
        if chunk == ZERO_CHUNK or not chunk.strip(b"\0"):
            self.file.seek(len(chunk), os.SEEK_CUR)
        else:
            self.file.write(chunk)
        self.written += len(chunk)

    def close(self) -> None:
        self.file.truncate(self.written)
        self.file.close()


@pytest.fixture(scope="module")
def big_export(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigExport]:
    path = tmp_path_factory.mktemp("big") / "export.zip"
    process = psutil.Process()

    async def write() -> BigExport:
        sink = SparseCountingSink(path)
        entries = [BundleEntry("recordings/long-call.wav", BIG_ENTRY, zeros(BIG_ENTRY)),
                   BundleEntry("recordings/next-call.wav", SMALL_ENTRY, zeros(SMALL_ENTRY))]
        baseline = peak = 0
        async for chunk in iter_export(entries, metadata={"export_id": "big"}):
            sink.write(chunk)
            if sink.written >= 64 << 20 and not baseline:
                baseline = process.memory_info().rss
            elif baseline and sink.written % (256 << 20) < len(chunk):
                peak = max(peak, process.memory_info().rss)
        sink.close()
        peak = max(peak, process.memory_info().rss)
        return BigExport(path, sink.written, peak - baseline)

    yield asyncio.run(write())
    path.unlink()


@pytest.mark.timeout(600)
def test_a_5_gib_export_streams_in_flat_memory(big_export: BigExport) -> None:
    assert big_export.written > BIG_ENTRY + SMALL_ENTRY
    assert big_export.rss_growth < 48 << 20, f"RSS grew by {big_export.rss_growth >> 20} MiB"


@pytest.mark.timeout(600)
def test_a_5_gib_export_reads_back_as_zip64_with_matching_manifest(
        big_export: BigExport) -> None:
    archive = zipfile.ZipFile(big_export.path)
    sizes = {info.filename: info.file_size for info in archive.infolist()}
    assert sizes["recordings/long-call.wav"] == BIG_ENTRY
    assert sizes["recordings/next-call.wav"] == SMALL_ENTRY
    # The entry after the first 4.5 GiB is found through ZIP64 offsets and passes its CRC;
    # `unzip -t` (below) checks the long one too.
    after = archive.read("recordings/next-call.wav")
    assert after == bytes(SMALL_ENTRY)
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["files"][1] == {"name": "recordings/next-call.wav", "size": SMALL_ENTRY,
                                    "sha256": hashlib.sha256(after).hexdigest()}
    sums = archive.read("SHA256SUMS").decode()
    assert f"{hashlib.sha256(after).hexdigest()}  recordings/next-call.wav\n" in sums
    assert manifest["total_bytes"] == BIG_ENTRY + SMALL_ENTRY


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_unzip_lists_a_5_gib_zip64_export_and_tests_what_lies_past_4_gib(
        big_export: BigExport) -> None:
    if shutil.which("unzip") is None:
        pytest.skip("unzip is not installed")
    listed = subprocess.run(["unzip", "-Z", "-l", str(big_export.path)], capture_output=True,
                            text=True, timeout=60)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert f" {BIG_ENTRY} " in listed.stdout
    # Testing only the members after the long one reaches them by their ZIP64 offsets and
    # checks their CRCs without reading 4.8 GiB again.
    tested = subprocess.run(["unzip", "-t", str(big_export.path), "recordings/next-call.wav",
                             "manifest.json", "SHA256SUMS"], capture_output=True, text=True,
                            timeout=120)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "No errors detected" in tested.stdout and tested.stdout.count("OK") == 3


async def test_encrypting_a_large_export_keeps_memory_flat() -> None:
    identity = x25519.Identity.generate()
    size = 384 << 20
    process = psutil.Process()
    seen = 0
    baseline = peak = 0
    async for chunk in iter_export([BundleEntry("a.wav", size, zeros(size))], metadata={},
                                   recipient=str(identity.to_public())):
        seen += len(chunk)
        if seen >= 32 << 20 and not baseline:
            baseline = process.memory_info().rss
        elif baseline:
            peak = max(peak, process.memory_info().rss)
    assert seen > size
    assert peak - baseline < 48 << 20, f"RSS grew by {(peak - baseline) >> 20} MiB"


def test_unique_call_ids_give_unique_names_in_every_layout() -> None:
    calls = [VconRecording.model_validate(recording()) for _ in range(50)]
    for layout in (zip_files, vcon_files):
        names = [n for call in calls for n in layout(call)]
        assert len(set(names)) == len(names)
    assert uuid.UUID(vcon_files(calls[0]).audio.split(".")[0]) == calls[0].id
