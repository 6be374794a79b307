"""`tallenne serve`: start the service (embedded stack unless configured otherwise)."""

from __future__ import annotations

import argparse
from typing import Any

from service.settings import Settings


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "serve", help="start the service (embedded stack unless configured otherwise)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from service.cli.runner import serve

    return serve(settings)
