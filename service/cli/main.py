"""The `tallenne` command line: serve, migrate, accounts, tokens, audit and operations."""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

import asyncpg
from pydantic import ValidationError

from devstack.embedded import StackError
from service.cli.commands import (
    after_restore,
    analyse,
    audit,
    backup,
    companies,
    export,
    forms,
    import_folder,
    keys,
    migrate,
    purge,
    reconcile,
    scrub,
    serve,
    sites,
    tokens,
    users,
)
from service.cli.malloc import tune_malloc
from service.logs import configure_logging
from service.settings import Settings
from storage.errors import StorageError
from storage.roles import UnsafeDatabaseRole

# Every command module, in the order `tallenne --help` lists them.
COMMAND_MODULES: tuple[ModuleType, ...] = (
    serve, migrate, users, tokens, companies, audit,
    analyse, backup, after_restore, export, forms, import_folder, keys, purge, reconcile,
    scrub, sites,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tallenne", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for command_module in COMMAND_MODULES:
        command_module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:  # the input itself is left out: it may be a secret
        for error in exc.errors(include_input=False):
            name = "TALLENNE_" + "_".join(str(part) for part in error["loc"]).upper()
            print(f"tallenne: error: {name}: {error['msg']}", file=sys.stderr)
        return 2
    # Every command moves audio in 1 MiB chunks (serve, backup, restore, export, scrub):
    # malloc is set up for that before any thread starts.
    tune_malloc()
    configure_logging("WARNING" if args.command != "serve" else settings.log_level)
    try:
        return int(args.func(args, settings))
    except UnsafeDatabaseRole as exc:
        print(f"tallenne: error: {exc}", file=sys.stderr)
        return 2
    except (StorageError, StackError, ValueError, OSError, asyncpg.PostgresError) as exc:
        message = getattr(exc, "detail", None) or str(exc) or exc.__class__.__name__
        print(f"tallenne: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
