"""Waveform peaks of a call: reasoned and audited as replay is, in the same replay window."""

from __future__ import annotations

from aiohttp import web

from schemas.analysis import Peaks
from schemas.recordings import ReplayQuery
from service.http.api import RouteTable, json_response
from service.http.auth import actor_of, principal_of
from service.http.keys import KEYRING, POOL, REPLAY_WINDOWS
from service.recordings.analysis import opened_peaks, recording_with_key
from service.recordings.lookup import WITHHELD, recording_id_of, stated_reason
from service.recordings.windows import note_replay, window_key
from storage.db import scoped
from storage.errors import Conflict, NotFound

routes = RouteTable()

# What the replay window notes for a peaks request, in place of a byte range.
PEAKS_RANGE = "peaks"


@routes.route(
    "GET", "/api/v1/recordings/{id}/peaks", action="recording.replay", tag="recordings",
    summary="Min/max per 10 ms per channel for drawing the waveform; reason required, "
    "audited in the replay window", query=ReplayQuery, response=Peaks,
    extra_statuses=(409, 410),
)
async def recording_peaks(request: web.Request) -> web.Response:
    recording_id = recording_id_of(request)
    reason = stated_reason(request, "opened")
    principal = principal_of(request)
    pool = request.app[POOL]
    recording, data_key = await recording_with_key(
        pool, request.app[KEYRING].masters, principal.scope, recording_id)
    if recording.state == "corrupt":
        raise Conflict(WITHHELD)
    windows = request.app[REPLAY_WINDOWS]
    actor = actor_of(request)
    if windows.is_open(window_key(actor, recording.id, reason)):
        windows.note_later(actor, recording, reason, PEAKS_RANGE)
    else:
        async with scoped(pool, principal.scope, durable=False) as conn:
            await note_replay(conn, windows, actor, recording, reason, PEAKS_RANGE)
    peaks = await opened_peaks(pool, principal.scope, recording, data_key)
    if peaks is None:
        raise NotFound("the recording has no peaks yet: it has not been analysed")
    return json_response(peaks)
