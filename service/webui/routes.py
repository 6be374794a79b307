"""The endpoints of the web UI's pages and forms.

Listed in the router's match order: a literal path before a pattern that would match it.
"""

from service.http.api import RouteTable
from service.webui import forms, home, pages, sites, subjects

routes = RouteTable.join(
    home.routes,
    pages.routes,
    forms.routes,
    sites.routes,
    subjects.routes,
)
