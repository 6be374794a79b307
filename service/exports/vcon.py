"""A recorded call as a vCon document (draft-ietf-vcon-vcon-core-04): its recording by
reference to the audited audio URL or, on request, inline as base64url; authorised and
audited as a replay, since the document opens the way to the audio."""

from __future__ import annotations

import contextlib
import logging

from aiohttp import web
from pydantic import BaseModel, Field

from schemas.annotations import AnnotationOut
from schemas.free_text import FreeText
from schemas.vcon import VCON_DRAFT, VCON_SYNTAX, VconRecording, build_vcon, vcon_json
from service.exports.jobs import audio_of, data_key_of
from service.http.api import RouteTable, read_query
from service.http.auth import audit, principal_of
from service.http.keys import KEYRING, OBJECTS, POOL, SETTINGS
from service.recordings import integrity
from service.recordings.lookup import MAX_REASON, WITHHELD, recording_id_of, stated_reason
from service.recordings.presentation import evaluation_out, recording_out
from storage import annotations as call_notes
from storage import recordings as store
from storage.db import scoped
from storage.errors import Conflict, IntegrityError
from storage.vcon_stream import InlineVcon

routes = RouteTable()

logger = logging.getLogger(__name__)
MEDIA_TYPE = "application/vcon+json"


class VconQuery(BaseModel):
    reason: FreeText = Field(min_length=1, max_length=MAX_REASON,
                             description="Why the call is handed over; without one: 400.")
    inline: bool = Field(False, description="Carry the audio inline (base64url) instead of "
                                            "referencing the audited audio URL.")


@routes.route(
    "GET", "/api/v1/recordings/{id}/vcon", action="recording.replay", tag="recordings",
    summary="The call as a vCon (draft-ietf-vcon-vcon-core-04); reason required",
    query=VconQuery,
    response_content={MEDIA_TYPE: {"schema": {"type": "object"}}},
    extra_statuses=(409, 410),
)
async def recording_vcon(request: web.Request) -> web.StreamResponse:
    recording_id = recording_id_of(request)
    reason = stated_reason(request, "handed over")
    query = read_query(request, VconQuery)
    principal = principal_of(request)
    settings = request.app[SETTINGS]
    async with scoped(request.app[POOL], principal.scope) as conn:
        recording = await store.get(conn, recording_id)
        evaluations = await store.evaluations(conn, recording_id)
        notes = await call_notes.visible(conn, recording_id, principal.name)
        data_key = (await data_key_of(conn, request.app[KEYRING].masters, recording)
                    if query.inline else None)
    if recording.state == "corrupt":
        raise Conflict(WITHHELD)
    base = settings.public_url.rstrip("/")
    host = base.split("://", 1)[1].split("/", 1)[0]
    out = recording_out(recording)
    vcon = build_vcon(
        VconRecording.model_validate(out), host=host,
        evaluations=[evaluation_out(e) for e in evaluations],
        analysis=out.analysis.model_dump(mode="json") if out.analysis is not None else None,
        annotations=[AnnotationOut.model_validate(note, from_attributes=True).model_dump()
                     for note in notes],
        audio_url=None if query.inline else f"{base}/api/v1/recordings/{recording.id}/audio",
    )
    await audit(request, "recording.replay", target_type="recording",
                target_id=str(recording.id), company=recording.company, reason=reason,
                subject_ids=[recording.id, *filter(None, [recording.customer_id])],
                detail={"vcon": VCON_DRAFT, "inline": query.inline})
    headers = {"Content-Type": MEDIA_TYPE, "Cache-Control": "private, no-store",
               "X-Vcon-Version": VCON_SYNTAX,
               "Content-Disposition": f'inline; filename="{recording.id}.vcon.json"'}
    if data_key is None:
        return web.Response(body=vcon_json(vcon), headers=headers)
    inline = InlineVcon(vcon, recording.size_bytes)
    response = web.StreamResponse(headers=headers)
    response.content_length = inline.size
    try:
        async with (
            contextlib.aclosing(audio_of(request.app[OBJECTS], recording, data_key)) as audio,
            contextlib.aclosing(inline.iter_bytes(audio)) as chunks,
        ):
            await integrity.send(request, response, chunks)
    except IntegrityError as exc:
        # As replay: the recording is marked and the alarm audited.
        return await integrity.cut_short(request, response, recording.id, recording.company,
                                         exc.detail, found_by="vcon")
    await response.write_eof()
    return response
