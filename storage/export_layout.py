"""Where each call's files go in an export: names inside a zip (the `zip` and `vcon`
formats) and object keys under a partitioned prefix (the `s3` format)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import NamedTuple, Protocol
from uuid import UUID
from zoneinfo import ZoneInfo

HELSINKI = ZoneInfo("Europe/Helsinki")
"""Dates in names and partitions are the company's local dates, as everywhere in the product."""

_COMPANY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_PREFIX_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,199}$")


class CallRef(Protocol):
    """What naming needs of a recording (RecordingOut and schemas.vcon.VconRecording fit)."""

    @property
    def id(self) -> UUID: ...

    @property
    def company(self) -> str: ...

    @property
    def started_at(self) -> datetime: ...

    @property
    def format(self) -> str: ...


class CallFiles(NamedTuple):
    audio: str
    metadata: str


def _company(call: CallRef) -> str:
    # Company codes become path segments; anything that could climb out of one is refused.
    if not _COMPANY.match(call.company):
        raise ValueError("company code is not usable in a file name")
    return call.company


def zip_files(call: CallRef) -> CallFiles:
    """`zip` format: recordings/<local start>_<company>_<id>.<format> and its .json beside it."""
    started = call.started_at.astimezone(HELSINKI)
    stem = f"recordings/{started:%Y%m%d-%H%M%S}_{_company(call)}_{call.id}"
    return CallFiles(audio=f"{stem}.{call.format}", metadata=f"{stem}.json")


def vcon_files(call: CallRef) -> CallFiles:
    """`vcon` format: <id>.vcon.json per call, with the audio it references as <id>.<format>."""
    return CallFiles(audio=f"{call.id}.{call.format}", metadata=f"{call.id}.vcon.json")


def s3_call_prefix(prefix: str, call: CallRef) -> str:
    """`s3` format: <prefix>/year=YYYY/month=MM/day=DD/<company>/<id>/ for one call."""
    started = call.started_at.astimezone(HELSINKI)
    parts = [*_prefix_parts(prefix), f"year={started:%Y}", f"month={started:%m}",
             f"day={started:%d}", _company(call), str(call.id)]
    return "/".join(parts) + "/"


def s3_key(prefix: str, call: CallRef, filename: str) -> str:
    """The object key of one of a call's files (e.g. "audio.wav", "metadata.json")."""
    if not _FILENAME.match(filename):
        raise ValueError("file name is not usable in an object key")
    return s3_call_prefix(prefix, call) + filename


def s3_export_key(prefix: str, filename: str) -> str:
    """The key of an export-wide file (manifest.json, SHA256SUMS) at the top of the prefix."""
    if not _FILENAME.match(filename):
        raise ValueError("file name is not usable in an object key")
    return "/".join([*_prefix_parts(prefix), filename])


def _prefix_parts(prefix: str) -> list[str]:
    parts = [part for part in prefix.strip("/").split("/") if part]
    for part in parts:
        if not _PREFIX_PART.match(part):
            raise ValueError("export prefix has a segment that is not usable in an object key")
    return parts
