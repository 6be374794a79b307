"""The endpoints of access requests, erasure, disclosures and the subject search.

Listed in the router's match order: a literal path before a pattern that would match it.
"""

from service.http.api import RouteTable
from service.rights import disclosures, erasure, export, reports, subjects

routes = RouteTable.join(
    reports.routes,
    export.routes,
    disclosures.routes,
    erasure.routes,
    subjects.routes,
)
