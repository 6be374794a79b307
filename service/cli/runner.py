"""Runs the service until SIGINT/SIGTERM, then finishes in-flight requests and stops cleanly."""

from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import web

from devstack.embedded import StackError, port_in_use
from devstack.environment import resolved
from service.app import create_app
from service.settings import Settings


async def serve_until_signalled(settings: Settings, *, announce: bool = True) -> None:
    app = create_app(settings)
    # A connection must deliver a request's headers within header_timeout_s of opening (or
    # of the previous answer): aiohttp's keep-alive timer runs until the headers are parsed.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=settings.shutdown_grace_s,
                           keepalive_timeout=settings.header_timeout_s)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port,
                       shutdown_timeout=settings.shutdown_grace_s)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await site.start()
        if announce:
            url = f"http://{settings.host}:{settings.port}"
            print(
                f"\ntallenne is up at {url}  (API docs: {url}/api/docs)\n"
                "Create the first admin in another terminal:\n"
                "  .venv/bin/tallenne user add --username admin --role admin --all-companies"
                " --password-stdin\n"
                f"then sign in at {url}/ . Stop with Ctrl-C.\n"
                + ("Session cookies are sent without the Secure flag (TALLENNE_INSECURE_COOKIES"
                   " is set): for plain-HTTP development only.\n"
                   if settings.insecure_cookies else ""),
                file=sys.stderr,
                flush=True,
            )
        await stop.wait()
        print("stopping: finishing requests in flight…", file=sys.stderr, flush=True)
    finally:
        await runner.cleanup()


def serve(settings: Settings) -> int:
    if port_in_use(settings.host, settings.port):
        raise StackError(
            f"port {settings.port} on {settings.host} is already in use (set TALLENNE_PORT)"
        )
    # `serve` owns its stack: it never attaches to another instance's.
    with resolved(settings, attach=False) as ready:
        asyncio.run(serve_until_signalled(ready))
    print("stopped.", file=sys.stderr, flush=True)
    return 0
