"""Schemathesis against the live service's own OpenAPI document: every operation, as an
admin and as a quality user, must answer without a 5xx, with a status the document lists and
a body that conforms to the documented schema.

`make test` runs a few examples per operation; `make fuzz` sets TALLENNE_FUZZ_EXAMPLES higher.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
import schemathesis

# Imported here, at collection, not lazily by the first from_dict() deep inside a test: its
# modules are compiled (and assertion-rewritten) then, on a shallow stack. Compiled deep in
# a long session, CPython 3.11's AST constructor has failed with a recursion depth mismatch.
import schemathesis.specs.openapi.schemas
from aiohttp import web
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from devstack.embedded import free_ports
from service.app import create_app
from service.settings import Settings
from storage import accounts
from tests.conftest import Stack

EXAMPLES = int(os.environ.get("TALLENNE_FUZZ_EXAMPLES", "10"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
# Operations that end the caller's own credentials would turn the rest of the run into 401s.
SKIP = {("DELETE", "/api/v1/session"), ("POST", "/api/v1/session")}


class LiveServer:
    """The service on a loopback port, on its own thread and event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_ports(1)[0]
        self.loop = asyncio.new_event_loop()
        self.runner: web.AppRunner | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        async def start() -> None:
            self.runner = web.AppRunner(create_app(self.settings))
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

        self.thread.start()
        asyncio.run_coroutine_threadsafe(start(), self.loop).result(60)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def make_token(url: str, role: str, companies: list[str], all_companies: bool) -> str:
    async def create() -> str:
        conn = await asyncpg.connect(url)
        try:
            found = await accounts.companies_by_code(conn, companies)
            _, secret = await accounts.create_token(conn, f"fuzz-{role}", role,
                                                    [c.id for c in found], all_companies)
        finally:
            await conn.close()
        return secret

    return asyncio.run(create())


@pytest.fixture
def live(settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(settings) as server:
        yield server


def _fuzz_operation(operation: Any, base_url: str, headers: dict[str, str]) -> None:
    @hypothesis_settings(max_examples=EXAMPLES, deadline=None, database=None,
                         derandomize=True, phases=[Phase.explicit, Phase.generate],
                         suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=30)

    run()


@pytest.mark.parametrize("role", ["admin", "quality"])
def test_every_operation_answers_within_its_documented_contract(
    role: str, live: LiveServer, stack: Stack, database: str
) -> None:
    with urllib.request.urlopen(f"{live.base_url}/api/v1/openapi.json", timeout=10) as r:
        document = json.load(r)
    schema = schemathesis.openapi.from_dict(document)
    token = make_token(stack.superuser_url(database), role, ["oulun-sahkonmyynti"],
                       all_companies=role == "admin")
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    ran = 0
    for result in schema.get_all_operations():
        # The document is the service's own: an operation schemathesis cannot read is a bug.
        assert isinstance(result, Ok), result.err()
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIP:
            continue
        ran += 1
        try:
            _fuzz_operation(operation, live.base_url, headers)
        except (Exception, BaseExceptionGroup) as exc:  # every operation's failure is kept
            first = str(exc).strip().splitlines()
            failures.append(f"{operation.method.upper()} {operation.path}: "
                            + " | ".join(first[:6]))
    assert ran >= 30, f"only {ran} operations in the document"
    assert not failures, "\n\n".join(failures)
