"""`tallenne export [filters] --reason R --format F DIR`: an export job run by this command
(a bar on stderr), its zip written into DIR (or, for `s3`, its manifest); the summary JSON
on stdout."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import ValidationError

from schemas.analysis import FLAGS
from schemas.exports import ExportFilter, ExportIn
from service.cli.commands import Progress, with_resources
from service.exports import jobs as export_jobs
from service.exports.creation import begin_export
from service.exports.jobs import ExportContext
from service.exports.worker import export_context
from service.http.auth import Actor
from service.recordings import integrity
from service.resources import Resources
from service.settings import Settings
from storage import exports as store
from storage.audit import AuditEntry
from storage.db import Scope, scoped
from storage.errors import IntegrityError, InvalidInput, RecordingIntegrityError
from storage.exports import ExportJob

ACTOR = "cli"
# Every filter of the recording search, as its option's destination.
FILTERS = tuple(ExportFilter.model_fields)


def request_of(args: argparse.Namespace) -> ExportIn:
    wanted = {ExportFilter.model_fields[name].alias or name: getattr(args, name)
              for name in FILTERS}
    body = {"filter": {k: v for k, v in wanted.items() if v is not None},
            "reason": args.reason, "format": args.format,
            **{k: getattr(args, k) for k in ("recipient", "recipient_country", "legal_basis",
                                             "purpose", "recipient_public_key")
               if getattr(args, k) is not None}}
    try:
        return ExportIn.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "export"
        raise InvalidInput(f"{where}: {first['msg']}") from None


def _entry(job: ExportJob, action: str, **detail: Any) -> AuditEntry:
    return AuditEntry(actor=ACTOR, actor_kind="system", role="admin", action=action,
                      target_type="export", target_id=str(job.id), reason=job.reason,
                      detail=detail)


def _private_file(path: Path) -> BinaryIO:
    """A new file only its owner can read or write, whatever the umask; never one that was
    already there (a leftover, or a link planted in its place)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


async def _write(stream: AsyncIterator[bytes], path: Path, bar: Progress) -> int:
    """Write the stream into `path` through `path.part`; whatever stops it (a call that fails
    verification, S3, Ctrl-C, SIGTERM) removes the part, so no partial copy of the calls is
    left on disk."""
    written = 0
    partial = path.with_name(path.name + ".part")
    handle = _private_file(partial)  # here, not in a thread: a stop cannot come between
    try:
        try:
            async for chunk in stream:
                await asyncio.to_thread(handle.write, chunk)
                written += len(chunk)
                bar.advance(len(chunk))
        finally:
            await asyncio.to_thread(handle.close)
        await asyncio.to_thread(partial.replace, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return written


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    body = request_of(args)
    target_dir = Path(args.dir)
    target_dir.mkdir(parents=True, exist_ok=True)

    async def work(resources: Resources) -> int:
        async with export_context(resources) as ctx:
            return await run(resources, ctx)

    async def run(resources: Resources, ctx: ExportContext) -> int:
        job_id = await begin_export(Actor.operator(resources.audit, ACTOR, "admin"), body,
                                    pool=resources.pool, settings=resources.settings,
                                    wake=None)

        bar = Progress("export")

        def progress(current: ExportJob) -> None:
            bar.total = current.total
            bar.done = current.done
            bar.advance(0)

        ctx.progress = progress
        await export_jobs.run_next(ctx, export_jobs.worker_name(), job_id)
        bar.finish()
        async with scoped(resources.pool, Scope.everything()) as conn:
            final = await store.get_job(conn, job_id)
        assert final is not None
        result: dict[str, Any] = export_jobs.export_out(final).model_dump(mode="json")
        if final.state == "done" and final.format != "s3":
            name = f"tallenne-export-{final.id}.zip" + (
                ".age" if final.recipient_public_key else "")
            await resources.audit.append(_entry(final, "export.download", file=name))
            result["file"] = str(target_dir / name)
            try:
                async with contextlib.aclosing(
                        export_jobs.download_stream(ctx, final)) as stream:
                    result["file_bytes"] = await _write(stream, target_dir / name,
                                                        Progress("write"))
            except RecordingIntegrityError as exc:
                # As the HTTP download: the call is marked corrupt and the alarm raised and
                # audited; no file is left, and the command fails naming the call.
                await integrity.mark_corrupt(resources.pool, Scope.everything(),
                                             exc.recording_id, exc.detail, found_by="export")
                await resources.audit.append(AuditEntry(
                    actor=ACTOR, actor_kind="system", role="admin",
                    action=integrity.ALARM_ACTION, target_type="recording",
                    target_id=str(exc.recording_id), company=exc.company, outcome="failure",
                    subject_ids=[exc.recording_id],
                    detail={"error": exc.detail, "found_by": "export"}))
                raise IntegrityError(f"call {exc.recording_id} failed verification and is "
                                     "now marked corrupt; export again to leave it out") from None
        elif final.state == "done":
            target = await ctx.target_store()
            manifest = await target.get_bytes(f"{final.target_prefix}/manifest.json")
            await _write(_one(manifest), target_dir / f"manifest-{final.id}.json",
                         Progress("write"))
            result["bucket"] = final.target_bucket
            result["prefix"] = f"{final.target_prefix}/"
        print(json.dumps(result, ensure_ascii=False))
        return 0 if final.state == "done" else 1

    # Other replicas' jobs are theirs: this run carries out only its own (no worker runs).
    return with_resources(settings, work)


def register(sub: Any) -> None:
    p = sub.add_parser("export", help="export calls chosen by filters into DIR (progress on "
                       "stderr, summary on stdout)")
    p.add_argument("dir", metavar="DIR", help="directory the export (or s3 manifest) goes to")
    p.add_argument("--reason", required=True, help="why the calls are exported (audited)")
    p.add_argument("--format", choices=("zip", "vcon", "s3"), default="zip")
    p.add_argument("--company", metavar="CODE")
    p.add_argument("--from", dest="from_", metavar="ISO", help="started at or after")
    p.add_argument("--to", metavar="ISO", help="started before")
    p.add_argument("--agent")
    p.add_argument("--queue")
    p.add_argument("--direction", choices=("inbound", "outbound", "internal"))
    p.add_argument("--customer-id", dest="customer_id", metavar="UUID")
    p.add_argument("--tag")
    p.add_argument("--external-id", dest="external_id")
    p.add_argument("--phone", help="caller or callee, in any Finnish or E.164 form")
    p.add_argument("--min-duration-s", dest="min_duration_s", type=float, metavar="S")
    p.add_argument("--max-duration-s", dest="max_duration_s", type=float, metavar="S")
    p.add_argument("--min-silence-ratio", dest="min_silence_ratio", type=float, metavar="R")
    p.add_argument("--min-overtalk-s", dest="min_overtalk_s", type=float, metavar="S")
    p.add_argument("--flag", choices=FLAGS, help="a health flag the call's analysis has")
    p.add_argument("--recipient", help="who receives it, when it leaves the controller")
    p.add_argument("--recipient-country", dest="recipient_country", metavar="CC")
    p.add_argument("--legal-basis", dest="legal_basis")
    p.add_argument("--purpose", help="disclosure purpose (default subcontractor)")
    p.add_argument("--recipient-public-key", dest="recipient_public_key", metavar="AGE1…",
                   help="encrypt the result to this age X25519 public key")
    p.set_defaults(func=cmd_export)
