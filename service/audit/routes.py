"""The endpoints of the audit trail.

Listed in the router's match order: a literal path before a pattern that would match it.
"""

from service.audit import views
from service.http.api import RouteTable

routes = RouteTable.join(
    views.routes,
)
