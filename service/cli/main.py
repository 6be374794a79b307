"""The `tallenne` command line: serve, migrate, accounts, tokens, audit and operations."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType, ModuleType

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
from storage.db import CONNECTION_LOST
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


# A connection to PostgreSQL that broke (a restart, a failover, a killed server) surfaces as
# one of these from asyncpg; an OSError is told apart below, as it may be a file's.
_DATABASE_LOST = tuple(kind for kind in CONNECTION_LOST if not issubclass(kind, OSError))


_stopped_by: int = signal.SIGINT


def _stop_like_ctrl_c(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (a CronJob's deadline, systemd, kill) stops a command as Ctrl-C does: the work
    under way is cancelled and cleans up after itself (asyncio's SIGINT handler when a loop
    runs, KeyboardInterrupt otherwise)."""
    global _stopped_by
    _stopped_by = signum
    on_interrupt = signal.getsignal(signal.SIGINT)
    if callable(on_interrupt):
        on_interrupt(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def _one_line(exc: BaseException) -> str:
    message = str(getattr(exc, "detail", None) or str(exc) or exc.__class__.__name__)
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())


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
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop_like_ctrl_c)  # serve, import --watch: their own
    try:
        configure_logging("WARNING" if args.command != "serve" else settings.log_level)
        if args.command != "serve":
            # A command that lost PostgreSQL ends with one line saying so; the pool's own
            # reconnection warnings (with their tracebacks) would bury it.
            logging.getLogger("asyncpg").setLevel(logging.ERROR)
        return int(args.func(args, settings))
    except UnsafeDatabaseRole as exc:
        print(f"tallenne: error: {exc}", file=sys.stderr)
        return 2
    except _DATABASE_LOST as exc:
        # The server's own words when it sent any; asyncpg's client-side ones (a connection
        # "released back to the pool" once it broke) would only mislead.
        said = f" ({_one_line(exc)})" if isinstance(exc, asyncpg.PostgresError) else ""
        print(f"tallenne: error: the connection to PostgreSQL was lost{said}; run the command "
              "again once PostgreSQL answers", file=sys.stderr)
        return 1
    except (StorageError, StackError, ValueError, OSError, asyncpg.PostgresError) as exc:
        print(f"tallenne: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        after_bar = "\n" if sys.stderr.isatty() else ""
        print(f"{after_bar}tallenne: stopped by {signal.Signals(_stopped_by).name}",
              file=sys.stderr)
        return 128 + _stopped_by


if __name__ == "__main__":
    sys.exit(main())
