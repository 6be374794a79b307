"""The endpoints of export jobs and vCon.

Listed in the router's match order: a literal path before a pattern that would match it.
"""

from service.exports import vcon, views
from service.http.api import RouteTable

routes = RouteTable.join(
    views.routes,
    vcon.routes,
)
