"""Resolves where PostgreSQL and S3 are: external by configuration, or the embedded stack.

`make run` starts the embedded stack; a CLI command in the same checkout attaches to it
(found through data_dir/stack.json) or starts its own for the command's duration.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import SecretStr

from devstack.embedded import EmbeddedStack, StackInfo, load_or_create_secrets, running_stack
from service.settings import Settings


def with_stack(settings: Settings, info: StackInfo) -> Settings:
    secret = load_or_create_secrets(settings.data_dir)
    update: dict[str, object] = {}
    if settings.embedded_database:
        update["database_url"] = SecretStr(info.database_url)
        if info.database_owner_url:
            update["database_owner_url"] = SecretStr(info.database_owner_url)
    if settings.embedded_s3:
        update["s3_endpoint"] = info.s3_endpoint
        update["s3_access_key"] = SecretStr(info.s3_access_key)
        update["s3_secret_key"] = SecretStr(info.s3_secret_key)
        if settings.s3_audit_access_key is None:
            update["s3_audit_access_key"] = SecretStr(secret["s3_audit_access_key"])
            update["s3_audit_secret_key"] = SecretStr(secret["s3_audit_secret_key"])
    if settings.master_key is None:
        update["master_key"] = SecretStr(secret["master_key"])
    if settings.personal_id_key is None:
        update["personal_id_key"] = SecretStr(secret["personal_id_key"])
    if settings.backup_key is None:
        update["backup_key"] = SecretStr(secret["backup_key"])
    if settings.audit_signing_key is None:
        update["audit_signing_key"] = SecretStr(secret["audit_signing_key"])
    return settings.model_copy(update=update)


@contextmanager
def resolved(settings: Settings, *, attach: bool = True) -> Iterator[Settings]:
    """Settings with every backing service reachable, starting the embedded stack if needed."""
    if not settings.embedded_database and not settings.embedded_s3:
        yield settings
        return
    if attach:
        info = running_stack(settings.data_dir)
        if info is not None:
            yield with_stack(settings, info)
            return
    stack = EmbeddedStack(settings.data_dir)
    try:
        info = stack.start()
        yield with_stack(settings, info)
    finally:
        stack.stop()
