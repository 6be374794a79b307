"""The DPO's subject search: everything held about one person across the caller's
companies, found by a phone number (GET, the number in the query) or an identity code (POST,
never in a URL). The JSON answer (the search is service/rights/subject_search.py, the web page
service/webui/subjects.py)."""

from __future__ import annotations

from aiohttp import web

from schemas.subjects import SubjectQuery, SubjectSearchIn, SubjectsOut
from service.http.api import RouteTable, json_response, read_json, read_query
from service.http.auth import actor_of
from service.http.keys import KEYRING, POOL
from service.rights.subject_search import find_subject

routes = RouteTable()


@routes.route(
    "GET", "/api/v1/subjects", action="subject.search", tag="data-subject rights",
    summary="Everything held about the person with this phone number", query=SubjectQuery,
    response=SubjectsOut,
)
async def subjects_by_phone(request: web.Request) -> web.Response:
    query = read_query(request, SubjectQuery)
    return json_response(await find_subject(
        request.app[POOL], request.app[KEYRING], actor_of(request), phone=query.phone,
        personal_id=None))


@routes.route(
    "POST", "/api/v1/subjects/search", action="subject.search", tag="data-subject rights",
    summary="Everything held about a person, by identity code (or phone) in the body",
    body=SubjectSearchIn, response=SubjectsOut,
)
async def subjects_search(request: web.Request) -> web.Response:
    body = await read_json(request, SubjectSearchIn)
    return json_response(await find_subject(
        request.app[POOL], request.app[KEYRING], actor_of(request), phone=body.phone,
        personal_id=body.personal_id, phone_in="body"))
