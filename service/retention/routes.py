"""The endpoints of retention policies, legal holds and purges.

Listed in the router's match order: a literal path before a pattern that would match it.
"""

from service.http.api import RouteTable
from service.retention import views

routes = RouteTable.join(
    views.routes,
)
