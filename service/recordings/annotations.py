"""Annotations: time-coded notes and bookmarks on a call, scoped by company and audited."""

from __future__ import annotations

import uuid

from aiohttp import web

from schemas.annotations import AnnotationIn, AnnotationList, AnnotationOut
from service.http.api import RouteTable, json_response, read_json
from service.http.auth import audit, principal_of
from service.http.keys import POOL
from service.recordings.lookup import recording_id_of
from storage import annotations as notes
from storage import recordings as store
from storage.db import scoped
from storage.errors import NotFound

routes = RouteTable()


def _annotation_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["annotation_id"])
    except ValueError:
        raise NotFound("no such annotation") from None


@routes.route(
    "POST", "/api/v1/recordings/{id}/annotations", action="annotation.write",
    tag="annotations", summary="Note or bookmark a point or span of the call",
    body=AnnotationIn, response=AnnotationOut, status=201,
)
async def add_annotation(request: web.Request) -> web.Response:
    principal = principal_of(request)
    recording_id = recording_id_of(request)
    body = await read_json(request, AnnotationIn)
    async with scoped(request.app[POOL], principal.scope) as conn:
        recording = await store.get(conn, recording_id)
        note = await notes.add(conn, recording.id, recording.company_id, principal.name, body)
    await audit(request, "annotation.write", target_type="recording",
                target_id=str(recording_id), company=recording.company,
                detail={"annotation": str(note.id), "visibility": note.visibility})
    return json_response(AnnotationOut.model_validate(note, from_attributes=True), status=201)


@routes.route(
    "GET", "/api/v1/recordings/{id}/annotations", action="annotation.read",
    tag="annotations", summary="The call's team notes and the caller's own private ones",
    response=AnnotationList,
)
async def list_annotations(request: web.Request) -> web.Response:
    principal = principal_of(request)
    recording_id = recording_id_of(request)
    async with scoped(request.app[POOL], principal.scope) as conn:
        recording = await store.get(conn, recording_id)
        items = await notes.visible(conn, recording.id, principal.name)
    await audit(request, "annotation.read", target_type="recording",
                target_id=str(recording_id), company=recording.company,
                detail={"results": len(items)})
    return json_response(AnnotationList(
        items=[AnnotationOut.model_validate(n, from_attributes=True) for n in items]))


@routes.route(
    "DELETE", "/api/v1/recordings/{id}/annotations/{annotation_id}",
    action="annotation.write", tag="annotations",
    summary="Delete a note (its author, or an admin)", response=AnnotationOut,
)
async def delete_annotation(request: web.Request) -> web.Response:
    principal = principal_of(request)
    recording_id = recording_id_of(request)
    annotation_id = _annotation_id(request)
    async with scoped(request.app[POOL], principal.scope) as conn:
        recording = await store.get(conn, recording_id)
        note = await notes.delete(conn, recording.id, annotation_id,
                                  author=None if principal.role == "admin" else principal.name)
    await audit(request, "annotation.delete", target_type="recording",
                target_id=str(recording_id), company=recording.company,
                detail={"annotation": str(note.id), "author": note.author})
    return json_response(AnnotationOut.model_validate(note, from_attributes=True))
