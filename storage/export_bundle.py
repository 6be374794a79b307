"""An export as one streamed zip: every entry stored as it arrives (no compression, ZIP64
where sizes need it), then manifest.json with each file's name, size and SHA-256 and the
export's own metadata, and SHA256SUMS last; optionally encrypted to an age recipient.

Memory stays at about one chunk whatever the export's size. Any failure (an entry whose
bytes differ from its stated size or digest, a bad name) ends the stream before the central
directory, so a consumer never holds a zip that looks complete but is not."""

from __future__ import annotations

import contextlib
import hashlib
import json
import zipfile
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Mapping,
)
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from storage.age_stream import encrypt_to_age
from storage.errors import IntegrityError
from storage.export_layout import HELSINKI
from storage.zip_stream import ZipPipe

MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
MANIFEST_FORMAT = "tallenne-export/1"
_ZIP_EPOCH = datetime(1980, 1, 1, tzinfo=HELSINKI)
_FILE_MODE = 0o644 << 16


@dataclass(frozen=True)
class BundleEntry:
    """One file of an export: `content` yields exactly `size` bytes, once. `sha256` (hex),
    when given, is what the bytes must hash to, e.g. the SHA-256 a recording was stored with."""

    name: str
    size: int
    content: AsyncIterable[bytes]
    modified_at: datetime | None = None
    sha256: str | None = None
    # True when `content` itself raises before its last piece unless its bytes hash to
    # `sha256` (storage.sealed_audio.iter_plaintext with expected_sha256): the bundle then
    # lists that digest without hashing the bytes a second time.
    verified: bool = False


@dataclass(frozen=True)
class BundleFile:
    """A file as written: what the manifest and SHA256SUMS list."""

    name: str
    size: int
    sha256: str


def check_entry_name(name: str) -> None:
    """A relative POSIX path without empty, "." or ".." segments or control characters
    (a newline would break SHA256SUMS), and not one of the names the bundle writes itself."""
    segments = name.split("/")
    if (not name or name in (MANIFEST, SUMS) or "\\" in name
            or any(ord(c) < 32 or ord(c) == 127 for c in name)
            or any(s in ("", ".", "..") for s in segments)):
        raise ValueError(f"not a usable name for a file in an export: {name!r}")


def manifest_json(files: Iterable[BundleFile], metadata: Mapping[str, Any],
                  generated_at: datetime) -> bytes:
    """manifest.json: the caller's export metadata and every file's name, size and SHA-256."""
    listed = list(files)
    document = {
        "format": MANIFEST_FORMAT,
        "generated_at": generated_at.astimezone(UTC).isoformat(),
        "export": dict(metadata),
        "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in listed],
        "total_files": len(listed),
        "total_bytes": sum(f.size for f in listed),
    }
    return (json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n").encode()


def sha256sums(files: Iterable[BundleFile]) -> bytes:
    """SHA256SUMS in the form `sha256sum -c` reads."""
    return "".join(f"{f.sha256}  {f.name}\n" for f in files).encode()


def _zip_info(name: str, when: datetime, size: int) -> zipfile.ZipInfo:
    local = max(when.astimezone(HELSINKI), _ZIP_EPOCH)
    info = zipfile.ZipInfo(name, date_time=local.timetuple()[:6])
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = _FILE_MODE
    info.file_size = size
    return info


async def _each(entries: AsyncIterable[BundleEntry] | Iterable[BundleEntry],
                ) -> AsyncIterator[BundleEntry]:
    if isinstance(entries, AsyncIterable):
        async for entry in entries:
            yield entry
    else:
        for entry in entries:
            yield entry


async def iter_zip(
    entries: AsyncIterable[BundleEntry] | Iterable[BundleEntry],
    *,
    metadata: Mapping[str, Any],
    generated_at: datetime | None = None,
    on_file: Callable[[BundleFile], None] | None = None,
) -> AsyncGenerator[bytes, None]:
    """The export zip, chunk by chunk. `on_file` hears of each file once it is complete
    (progress, a job's checkpoint)."""
    generated = generated_at or datetime.now(UTC)
    pipe = ZipPipe()
    archive = zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
    files: list[BundleFile] = []
    names: set[str] = set()
    complete = False
    try:
        async for entry in _each(entries):
            check_entry_name(entry.name)
            if entry.name in names:
                raise ValueError(f"two files of an export have the same name: {entry.name!r}")
            names.add(entry.name)
            trusted = entry.verified and entry.sha256 is not None
            digest = None if trusted else hashlib.sha256()
            written = 0
            with archive.open(_zip_info(entry.name, entry.modified_at or generated,
                                        entry.size), "w") as out:
                async for piece in entry.content:
                    written += len(piece)
                    if written > entry.size:
                        raise IntegrityError(f"{entry.name} is longer than its stated size")
                    if digest is not None:
                        digest.update(piece)
                    out.write(piece)
                    if chunk := pipe.take():
                        yield chunk
                if written != entry.size:
                    raise IntegrityError(f"{entry.name} is shorter than its stated size")
            file = BundleFile(entry.name, entry.size, digest.hexdigest() if digest is not None
                              else str(entry.sha256).lower())
            if entry.sha256 is not None and file.sha256 != entry.sha256.lower():
                raise IntegrityError(f"{entry.name} does not match its recorded SHA-256")
            files.append(file)
            if on_file is not None:
                on_file(file)
            if chunk := pipe.take():
                yield chunk

        manifest = manifest_json(files, metadata, generated)
        archive.writestr(_zip_info(MANIFEST, generated, len(manifest)), manifest)
        listed = [*files, BundleFile(MANIFEST, len(manifest), hashlib.sha256(manifest)
                                     .hexdigest())]
        sums = sha256sums(listed)
        archive.writestr(_zip_info(SUMS, generated, len(sums)), sums)
        archive.close()
        complete = True
        yield pipe.take()
    finally:
        if not complete:
            # Whatever zipfile still writes on the way out (a central directory) is dropped.
            with contextlib.suppress(ValueError, OSError):
                archive.close()
            pipe.take()


async def iter_export(
    entries: AsyncIterable[BundleEntry] | Iterable[BundleEntry],
    *,
    metadata: Mapping[str, Any],
    recipient: str | None = None,
    generated_at: datetime | None = None,
    on_file: Callable[[BundleFile], None] | None = None,
) -> AsyncGenerator[bytes, None]:
    """The export zip, or with `recipient` (an age X25519 public key, "age1…") the same
    zip encrypted to it as an age file."""
    stream = iter_zip(entries, metadata=metadata, generated_at=generated_at, on_file=on_file)
    if recipient is not None:
        stream = encrypt_to_age(stream, recipient)
    # Closed with this one: the encryption's thread and the task that feeds it stop at once
    # when a consumer leaves early.
    async with contextlib.aclosing(stream) as chunks:
        async for chunk in chunks:
            yield chunk
