"""The endpoints of people, tokens, sessions and companies.

Listed in the router's match order: a literal path before a pattern that would match it.
"""

from service.http.api import RouteTable
from service.identity import views

routes = RouteTable.join(
    views.routes,
)
