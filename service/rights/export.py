"""Copies of a customer's recordings for the right of access: a zip streamed as it is
written, with the decrypted audio, manifest.json and SHA256SUMS; audited as an export."""

from __future__ import annotations

import json
import logging
import zipfile
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from aiohttp import web

from schemas.access_reports import AccessExportQuery
from service.http.api import RouteTable, read_query
from service.http.auth import actor_of, audit, principal_of, read_detail
from service.http.keys import KEYRING, OBJECTS, POOL
from service.recordings import integrity
from service.rights.lookup import customer_id_of, customer_recordings
from storage import access_reports as store
from storage import keys
from storage.db import scoped
from storage.errors import IntegrityError, NotFound
from storage.recordings import Recording
from storage.sealed_audio import iter_plaintext
from storage.zip_stream import ZipPipe

routes = RouteTable()

logger = logging.getLogger(__name__)
HELSINKI = ZoneInfo("Europe/Helsinki")


def entry_name(recording: Recording) -> str:
    started = recording.started_at.astimezone(HELSINKI)
    return (f"recordings/{started:%Y%m%d-%H%M%S}_{recording.company}_{recording.id}"
            f".{recording.format}")


@routes.route(
    "GET", "/api/v1/customers/{customer_id}/access-export.zip", action="access_report.read",
    summary="Copies of the customer's recordings as a streamed zip with manifest and sums",
    tag="data-subject rights",
    query=AccessExportQuery,
    response_content={"application/zip": {"schema": {"type": "string", "format": "binary"}}},
    extra_statuses=(404, 410),
)
async def access_export(request: web.Request) -> web.StreamResponse:
    """Bulk audio leaves only against a recorded access request of this customer, with a
    reason; both are in the audit event written before the first byte."""
    principal = principal_of(request)
    customer_id = customer_id_of(request)
    query = read_query(request, AccessExportQuery)
    masters = request.app[KEYRING].masters
    async with scoped(request.app[POOL], principal.scope) as conn:
        if await store.customer_row(conn, customer_id) is None:
            raise NotFound("no such customer")
        access_request = await store.recorded_request(conn, customer_id, query.request_id)
        memberships = await store.memberships(conn, customer_id)
        recordings = [r for r in await customer_recordings(conn, customer_id)
                      if r.state == "stored"]
        data_keys = {}
        for recording in recordings:
            owner = await keys.owner_key(
                conn, masters, owner=recording.key_owner, owner_id=recording.key_owner_id,
                create=False,
            )
            data_keys[recording.id] = keys.unwrap_data_key(
                owner, recording.id, recording.wrapped_key
            )
    ids_detail, subjects = read_detail(customers=[customer_id],
                                       recordings=[r.id for r in recordings])
    await audit(request, "access_report.export", target_type="customer",
                target_id=str(customer_id), reason=query.reason, subject_ids=subjects,
                company_codes={m.company for m in memberships} or None,
                detail={"access_request": str(access_request.id),
                        "recordings": ids_detail["recordings"],
                        "bytes": sum(r.size_bytes for r in recordings)})

    response = web.StreamResponse(headers={
        "Content-Type": "application/zip",
        "Content-Disposition": f'attachment; filename="tallenteet-{customer_id}.zip"',
        "Cache-Control": "private, no-store",
    })
    await response.prepare(request)
    pipe = ZipPipe()
    manifest = []
    sums = []
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for recording in recordings:
            name = entry_name(recording)
            started = recording.started_at.astimezone(HELSINKI)
            info = zipfile.ZipInfo(name, date_time=started.timetuple()[:6])
            info.file_size = recording.size_bytes
            try:
                with archive.open(info, "w") as entry:
                    async for piece in iter_plaintext(
                        request.app[OBJECTS], recording.object_key,
                        data_key=data_keys[recording.id], object_id=recording.id,
                        size=recording.size_bytes, start=0,
                        end_inclusive=recording.size_bytes - 1,
                        expected_sha256=recording.sha256,
                    ):
                        entry.write(piece)
                        await response.write(pipe.take())
            except IntegrityError as exc:
                # The zip must never look complete with a copy that differs from the record:
                # the client sees a truncated download, and the recording is marked.
                await integrity.alarm_in_request(actor_of(request), request.app[POOL],
                                                 recording.id, recording.company, exc.detail,
                                                 found_by="download")
                if request.transport is not None:
                    request.transport.abort()
                return response
            await response.write(pipe.take())
            sums.append(f"{recording.sha256}  {name}")
            manifest.append({
                "file": name, "recording_id": str(recording.id), "company": recording.company,
                "started_at": recording.started_at.isoformat(),
                "ended_at": recording.ended_at.isoformat(),
                "direction": recording.direction, "purpose": recording.purpose,
                "format": recording.format,
                "duration_s": recording.duration_s, "size_bytes": recording.size_bytes,
                "sha256": recording.sha256,
            })
        archive.writestr("manifest.json", json.dumps({
            "customer_id": str(customer_id),
            "generated_at": datetime.now(UTC).isoformat(),
            "recordings": manifest,
        }, indent=2, ensure_ascii=False))
        archive.writestr("SHA256SUMS", "".join(f"{line}\n" for line in sums))
    await response.write(pipe.take())
    await response.write_eof()
    return response
