"""The endpoints of health, readiness, metrics and OpenAPI.

Listed in the router's match order: a literal path before a pattern that would match it.
"""

from service.http.api import RouteTable
from service.ops import views

routes = RouteTable.join(
    views.routes,
)
