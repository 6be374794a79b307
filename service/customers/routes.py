"""The endpoints of customers, web events, their shippers and the site registry.

Listed in the router's match order: a literal path before a pattern that would match it.
"""

from service.customers import shippers, sites, views, web_events
from service.http.api import RouteTable

routes = RouteTable.join(
    views.routes,
    web_events.routes,
    shippers.routes,
    sites.routes,
)
