"""JSON log lines carrying the request id and actor of the request being served."""

from __future__ import annotations

import json
import logging
import math
import sys
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType

import asyncpg

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
actor_var: ContextVar[str | None] = ContextVar("actor", default=None)

_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
_BUILT_IN = frozenset({"ts", "level", "logger", "msg", "request_id", "actor", "exc"})
_EXTRA_PREFIX = "extra_"


def _finite(value: object) -> object:
    """`value` with every NaN or infinity (which JSON cannot carry) as a string."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_finite(item) for item in value]
    return value


def postgres_error_fields(exc: asyncpg.PostgresError) -> dict[str, str]:
    """What a log may say of a PostgreSQL error: its class, SQLSTATE and the schema names it
    concerns. Its message and DETAIL quote row values ("Key (personal_id_hash)=(\\x…)",
    "Failing row contains (…)") and are never logged."""
    fields = {"error": exc.__class__.__name__, "sqlstate": str(exc.sqlstate)}
    for name in ("schema_name", "table_name", "column_name", "constraint_name"):
        value = getattr(exc, name, None)
        if value:
            fields[name.removesuffix("_name")] = str(value)
    return fields


def _exception_line(exc: BaseException) -> str:
    if isinstance(exc, asyncpg.PostgresError):
        named = ", ".join(f"{key} {value}" for key, value in postgres_error_fields(exc).items()
                          if key != "error")
        return f"{exc.__class__.__module__}.{exc.__class__.__qualname__} ({named})\n"
    return "".join(traceback.format_exception_only(exc))


def render_exception(exc: BaseException) -> str:
    """A traceback as Python prints it (causes first), except that a PostgreSQL error
    anywhere in the chain is shown by `postgres_error_fields` instead of its message."""
    chain: list[tuple[BaseException, str | None]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    joint: str | None = None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, joint))
        if current.__cause__ is not None:
            current, joint = current.__cause__, (
                "\nThe above exception was the direct cause of the following exception:\n\n")
        elif current.__context__ is not None and not current.__suppress_context__:
            current, joint = current.__context__, (
                "\nDuring handling of the above exception, another exception occurred:\n\n")
        else:
            current = None
    parts: list[str] = []
    for item, joint in reversed(chain):
        if item.__traceback__ is not None:
            parts.append("Traceback (most recent call last):\n")
            parts.extend(traceback.format_tb(item.__traceback__))
        parts.append(_exception_line(item))
        if joint is not None:
            parts.append(joint)
    return "".join(parts).rstrip("\n")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, always: the built-in keys (ts, level, logger, msg,
    request_id, actor, exc) cannot be overwritten by an `extra` (a clashing one is logged
    as `extra_<name>`), NaN and infinities become strings, and a line that cannot be
    encoded at all is logged as its level, logger, message and `log_error`."""

    def formatException(
        self,
        ei: tuple[type[BaseException], BaseException, TracebackType | None]
        | tuple[None, None, None],
    ) -> str:
        if ei[1] is None:
            return ""
        return render_exception(ei[1])

    def format(self, record: logging.LogRecord) -> str:
        try:
            return self._format(record)
        except Exception as exc:  # a log line must never raise, nor be lost
            return self._minimal(record, exc)

    def _format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            line["request_id"] = request_id
        actor = actor_var.get()
        if actor:
            line["actor"] = actor
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                name = key
                while name in _BUILT_IN or name in line:
                    name = _EXTRA_PREFIX + name
                line[name] = value
        try:
            return json.dumps(line, default=str, ensure_ascii=False, allow_nan=False)
        except ValueError:
            return json.dumps(_finite(line), default=str, ensure_ascii=False,
                              allow_nan=False)

    def _minimal(self, record: logging.LogRecord, error: Exception) -> str:
        try:
            message = record.getMessage()
        except Exception:  # the arguments do not fit the message: its template alone
            message = str(record.msg)
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": str(record.levelname).lower(),
            "logger": str(record.name),
            "msg": message,
            "log_error": error.__class__.__name__,
        }
        request_id = request_id_var.get()
        if request_id:
            line["request_id"] = request_id
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log repeats what the request middleware already logs as JSON.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
