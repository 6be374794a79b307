"""The endpoints of recordings: ingest, search, evaluations, annotations, replay and peaks.

Listed in the router's match order: a literal path before a pattern that would match it.
"""

from service.http.api import RouteTable
from service.recordings import annotations, evaluations, peaks, replay, views

routes = RouteTable.join(
    views.routes,
    annotations.routes,
    evaluations.routes,
    replay.routes,
    peaks.routes,
)
