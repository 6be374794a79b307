"""`tallenne import DIR --company CODE [--watch]`: a drop folder of audio files, each with a
JSON sidecar of the same stem, stored through the API's ingest path exactly once.

A pair that is stored (or was already) moves to `DIR/done/`; one that can never be stored
moves to `DIR/failed/` with a `.error` text saying why. A pair that failed for a passing reason
(S3 or PostgreSQL unreachable) stays where it is and is tried again. Re-running is safe: the
(company, external_id) uniqueness answers a pair seen before as "already stored".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from schemas.recordings import RecordingMetadata
from service.cli.commands import Progress, with_resources
from service.http.api import decode_json, parse_model
from service.http.errors import TooLarge
from service.recordings.analysis import analyse_spooled
from service.recordings.ingest import (
    UPLOAD_MEMORY_BUDGET,
    ByteBudget,
    Ingested,
    Spooled,
    probe,
    resolve_target,
    store_recording,
)
from service.recordings.lookup import METADATA_LIMIT
from service.resources import Resources
from service.settings import Settings
from storage import recordings as store
from storage.audit import AuditEntry
from storage.db import Scope, scoped
from storage.errors import (
    AlreadyExists,
    AudioTruncated,
    Conflict,
    InvalidInput,
    NotFound,
    StorageError,
)

POLL_S = 2.0
# Truncated audio changed less than this long ago is retried while watching, not failed.
UNFINISHED_GRACE_S = 120.0
# A pair that failed for a passing reason is tried again after this long in --watch.
RETRY_AFTER_S = 30.0
HASH_CHUNK = 1024 * 1024
SIDECAR = ".json"
DONE, FAILED = "done", "failed"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Refusals that no retry can change; anything else (S3 or PostgreSQL away) is tried again.
PERMANENT = (InvalidInput, Conflict, TooLarge, AlreadyExists, NotFound)


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "import", help="drop-folder import: audio files with a JSON sidecar of the same stem"
    )
    p.add_argument("directory", type=Path, metavar="DIR")
    p.add_argument("--company", required=True, metavar="CODE",
                   help="the company of every call in the folder")
    p.add_argument("--watch", action="store_true",
                   help=f"keep polling the folder every {POLL_S:g} s until SIGINT/SIGTERM")
    p.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    folder: Path = args.directory.resolve()
    if not folder.is_dir():
        raise StorageError(f"{args.directory} is not a directory")

    async def work(resources: Resources) -> int:
        importer = DropFolder(resources, folder, args.company)
        await importer.open()
        return await importer.run(watch=args.watch)

    return with_resources(settings, work)


# --- the folder ------------------------------------------------------------------------------


@dataclass
class Pair:
    """The files of one call in the folder: its audio and its sidecar, either maybe missing."""

    stem: str
    sidecar: Path | None = None
    audio: list[Path] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        return [*self.audio, *([self.sidecar] if self.sidecar else [])]


Signature = tuple[int, int]  # size and mtime of a file, to tell when writing has stopped


def scan(folder: Path) -> tuple[dict[str, Pair], dict[Path, Signature]]:
    """The pairs lying in the folder (hidden files and sub-folders ignored) and each file's
    signature."""
    pairs: dict[str, Pair] = {}
    signatures: dict[Path, Signature] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            path = Path(entry.path)
            stat = entry.stat(follow_symlinks=False)
            signatures[path] = (stat.st_size, stat.st_mtime_ns)
            pair = pairs.setdefault(path.stem, Pair(path.stem))
            if path.suffix.lower() == SIDECAR:
                pair.sidecar = path
            else:
                pair.audio.append(path)
    for pair in pairs.values():
        pair.audio.sort()
    return pairs, signatures


def signature_of(path: Path) -> Signature | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_size, stat.st_mtime_ns)


def written_lately(path: Path) -> bool:
    """Whether the file changed within the last UNFINISHED_GRACE_S seconds."""
    try:
        return time.time() - path.stat().st_mtime < UNFINISHED_GRACE_S
    except OSError:
        return False


def measure(path: Path, limit: int) -> tuple[int, str]:
    """Size and SHA-256 of the file, read in bounded chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"the recording exceeds the limit of {limit} bytes")
            digest.update(chunk)
    return size, digest.hexdigest()


def read_sidecar(path: Path, company: str) -> RecordingMetadata:
    """The sidecar's metadata, validated by the API's model; the company defaults to --company
    and may not name another."""
    with path.open("rb") as f:
        raw = f.read(METADATA_LIMIT + 1)
    if len(raw) > METADATA_LIMIT:
        raise TooLarge(f"the sidecar exceeds {METADATA_LIMIT} bytes")
    data = decode_json(raw, "metadata")
    if isinstance(data, dict):
        named = data.get("company")
        if named is None:
            data["company"] = company
        elif named != company:
            msg = f"the sidecar names the company {named!r}, not {company!r} given by --company"
            raise InvalidInput(msg, [(["metadata", "company"], msg)])
    return parse_model(RecordingMetadata, data, "metadata")


def reason_text(exc: BaseException) -> str:
    detail = getattr(exc, "detail", None) or str(exc) or exc.__class__.__name__
    lines = [str(detail)]
    for loc, msg in getattr(exc, "errors", []):
        where = ".".join(str(part) for part in loc)
        if msg != detail:
            lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def free_stem(dest: Path, stem: str, suffixes: list[str]) -> str:
    """`stem`, or `stem~2`, `stem~3`… so nothing already in `dest` is overwritten."""
    candidate, n = stem, 1
    while any((dest / f"{candidate}{suffix}").exists() for suffix in suffixes):
        n += 1
        candidate = f"{stem}~{n}"
    return candidate


def move_pair(pair: Pair, dest: Path, error: str | None = None) -> None:
    """Move the pair's files into `dest` (with a `.error` beside them when given).

    The sidecar moves before the audio: an interruption leaves the audio alone in the folder
    with its sidecar already in `dest`, which the next run recognises.
    """
    dest.mkdir(exist_ok=True)
    files = [*([pair.sidecar] if pair.sidecar else []), *pair.audio]
    suffixes = [p.suffix for p in files] + [".error"]
    stem = free_stem(dest, pair.stem, suffixes)
    if error is not None:
        (dest / f"{stem}.error").write_text(error, encoding="utf-8")
    for path in files:
        # Gone already when another importer of the same folder moved it first.
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, dest / f"{stem}{path.suffix}")


# --- importing -------------------------------------------------------------------------------


class Retry(Exception):
    """The pair could not be stored now for a reason that may pass."""


@dataclass
class Tally:
    imported: int = 0
    already_stored: int = 0
    failed: int = 0
    retry: int = 0

    def as_json(self) -> str:
        return json.dumps({"imported": self.imported, "already_stored": self.already_stored,
                           "failed": self.failed, "left_to_retry": self.retry})


class DropFolder:
    def __init__(self, resources: Resources, folder: Path, company: str) -> None:
        self.resources = resources
        self.folder = folder
        self.company = company
        self.actor = f"import:{folder.name}"
        self.scope = Scope()
        self.tally = Tally()
        # The S3 part buffers this command holds (the service has its own, per application).
        self.upload_budget = ByteBudget(UPLOAD_MEMORY_BUDGET)
        self.stop = asyncio.Event()
        self._seen: dict[Path, Signature] = {}
        self._retry_at: dict[str, float] = {}
        # The files' signatures when a retry was put off: a pair that changes since is
        # tried again at once (its writer was not done), else after RETRY_AFTER_S.
        self._retry_sig: dict[str, list[Signature | None]] = {}
        self._retrying: set[str] = set()

    async def open(self) -> None:
        async with scoped(self.resources.pool, Scope.everything()) as conn:
            company_id = await store.company_id_by_code(conn, self.company)
        if company_id is None:
            raise StorageError(f"unknown company {self.company!r}")
        self.scope = Scope.of([company_id])

    async def run(self, *, watch: bool) -> int:
        loop = asyncio.get_running_loop()
        # Signals reach only the main thread's loop; run from another thread, nothing stops it.
        handled = threading.current_thread() is threading.main_thread()
        if handled:
            for signum in STOP_SIGNALS:
                loop.add_signal_handler(signum, self.stop.set)
        try:
            if watch:
                await self._watch()
            else:
                await self._once()
        finally:
            if handled:
                for signum in STOP_SIGNALS:
                    loop.remove_signal_handler(signum)
        self.tally.retry = len(self._retrying)
        print(self.tally.as_json(), flush=True)
        if watch:
            return 0  # stopped on request; failures are in failed/ and on stderr
        if self.tally.failed or self.tally.retry:
            parts = []
            if self.tally.failed:
                parts.append(f"{self.tally.failed} failed (see {self.folder / FAILED})")
            if self.tally.retry:
                parts.append(f"{self.tally.retry} left in the folder to retry")
            print(f"tallenne: error: {'; '.join(parts)}", file=sys.stderr, flush=True)
            return 1
        return 0

    async def _once(self) -> None:
        pairs, _ = await asyncio.to_thread(scan, self.folder)
        progress = Progress("importing", total=len(pairs))
        for pair in sorted(pairs.values(), key=lambda p: p.stem):
            if self.stop.is_set():
                break
            await self._settle(pair, lone_fails=True)
            progress.advance()
        progress.finish()

    async def _watch(self) -> None:
        progress = Progress("imported")
        polls = 0
        while not self.stop.is_set():
            polls += 1
            pairs, signatures = await asyncio.to_thread(scan, self.folder)
            now = asyncio.get_running_loop().time()
            for pair in sorted(pairs.values(), key=lambda p: p.stem):
                if self.stop.is_set():
                    break
                # Still being written unless every file looks the same as one poll ago.
                steady = all(self._seen.get(p) == signatures[p] for p in pair.files)
                changed = self._retry_sig.get(pair.stem) != [signatures[p] for p in pair.files]
                if not steady or (self._retry_at.get(pair.stem, 0.0) > now and not changed):
                    continue
                # Interrupted moves are finished on the first steady look only, so a new file
                # that happens to reuse an old name is never mistaken for one.
                if polls > 2 and (pair.sidecar is None or not pair.audio):
                    continue  # its partner is still on the way
                before = (self.tally.imported, self.tally.already_stored, self.tally.failed)
                await self._settle(pair, lone_fails=False)
                after = (self.tally.imported, self.tally.already_stored, self.tally.failed)
                if after != before:
                    progress.advance()
            self._seen = signatures
            try:
                await asyncio.wait_for(self.stop.wait(), POLL_S)
            except TimeoutError:
                pass
        progress.finish()

    def _later(self, pair: Pair, why: str) -> None:
        self._retrying.add(pair.stem)
        self._retry_at[pair.stem] = asyncio.get_running_loop().time() + RETRY_AFTER_S
        self._retry_sig[pair.stem] = [signature_of(p) for p in pair.files]
        print(f"tallenne: {pair.audio[0].name}: not stored now, will retry: {why}",
              file=sys.stderr, flush=True)

    async def _settle(self, pair: Pair, *, lone_fails: bool) -> None:
        """Import one pair and move it where it belongs."""
        if len(pair.audio) > 1 and pair.sidecar is not None:
            await self._fail(pair, self._pairing_problem(pair))
            return
        sidecar = pair.sidecar
        if sidecar is None and len(pair.audio) == 1:
            # Its sidecar may have gone ahead to done/ when a move was interrupted.
            moved_ahead = self.folder / DONE / f"{pair.stem}{SIDECAR}"
            if moved_ahead.is_file():
                sidecar = moved_ahead
        if sidecar is None or len(pair.audio) != 1:
            if not lone_fails:
                return
            await self._fail(pair, self._pairing_problem(pair))
            return
        try:
            outcome = await self._import(pair.audio[0], sidecar)
        except AudioTruncated as exc:
            # While watching, audio that ends early and was written a moment ago is most
            # likely still being copied in: it gets time before it counts as broken.
            if lone_fails or not written_lately(pair.audio[0]):
                await self._fail(pair, reason_text(exc))
            else:
                self._later(pair, f"{reason_text(exc)}; it may still be being written")
            return
        except PERMANENT as exc:
            await self._fail(pair, reason_text(exc))
            return
        except Retry as exc:
            self._later(pair, str(exc))
            return
        self._retry_at.pop(pair.stem, None)
        self._retry_sig.pop(pair.stem, None)
        self._retrying.discard(pair.stem)
        if outcome.created:
            self.tally.imported += 1
        else:
            self.tally.already_stored += 1
            print(f"tallenne: {pair.audio[0].name}: already stored as recording"
                  f" {outcome.recording.id}", file=sys.stderr, flush=True)
        await asyncio.to_thread(move_pair, pair, self.folder / DONE)

    def _pairing_problem(self, pair: Pair) -> str:
        if len(pair.audio) > 1:
            names = ", ".join(p.name for p in pair.audio)
            return f"several audio files share the sidecar {pair.stem}{SIDECAR}: {names}"
        if pair.sidecar is None:
            return f"no sidecar {pair.stem}{SIDECAR} next to the audio file"
        return f"no audio file next to the sidecar {pair.sidecar.name}"

    async def _fail(self, pair: Pair, reason: str) -> None:
        self.tally.failed += 1
        self._retry_sig.pop(pair.stem, None)
        self._retrying.discard(pair.stem)
        names = ", ".join(p.name for p in pair.files)
        at = datetime.now(UTC).isoformat(timespec="seconds")
        text = f"not imported: {names}\nat: {at}\nreason: {reason}\n"
        await asyncio.to_thread(move_pair, pair, self.folder / FAILED, text)
        one_line = "; ".join(line.strip() for line in reason.splitlines())
        print(f"tallenne: {pair.stem}: failed: {one_line}", file=sys.stderr, flush=True)

    async def _import(self, audio: Path, sidecar: Path) -> Ingested:
        """The API's ingest of one pair, the file itself serving as the spooled upload."""
        resources = self.resources
        try:
            metadata = await asyncio.to_thread(read_sidecar, sidecar, self.company)
            target = await resolve_target(resources.pool, self.scope, metadata)
            size, sha256 = await asyncio.to_thread(
                measure, audio, resources.settings.max_recording_bytes
            )
            info = await probe(audio, None, audio.name)
            outcome = await store_recording(
                resources.pool, resources.objects, resources.keyring.masters, self.scope, target,
                Spooled(audio, info, size, sha256), self.upload_budget,
            )
        except PERMANENT:
            raise
        except (StorageError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise Retry(reason_text(exc)) from exc
        recording = outcome.recording
        if outcome.created:
            # Analysed from the local file before it moves on; a failure leaves it to
            # `tallenne analyse --missing`.
            with contextlib.suppress(StorageError):
                await analyse_spooled(resources, recording.id, audio)
        await resources.audit.append(AuditEntry(
            actor=self.actor, actor_kind="system", role="ingest", action="recording.ingest",
            target_type="recording", target_id=str(recording.id), company=recording.company,
            detail=outcome.audit_detail(),
        ))
        return outcome
