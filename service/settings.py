"""Configuration of tallenne: one pydantic-settings class, read from TALLENNE_* variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


# The names Python's logging takes, in any case (TALLENNE_LOG_LEVEL=debug works).
LogLevel = Annotated[Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"],
                     BeforeValidator(_upper)]


class Settings(BaseSettings):
    """Every option of the service; README.md's configuration table is checked against it."""

    model_config = SettingsConfigDict(env_prefix="TALLENNE_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8080, description="Port the HTTP server listens on.")
    data_dir: Path = Field(
        Path("data"),
        description="Directory of the embedded PostgreSQL and S3 data, generated keys and "
        "the instance lock (embedded mode only).",
    )
    database_url: SecretStr | None = Field(
        None,
        description="PostgreSQL URL (postgresql://user:pass@host:port/db). Unset: an embedded "
        "PostgreSQL is started in data_dir.",
    )
    database_owner_url: SecretStr | None = Field(
        None,
        description="PostgreSQL URL of the role that owns the schema: `tallenne migrate` and "
        "the start-up migration connect with it. TALLENNE_DATABASE_URL is then the service's "
        "own role, which must own nothing and be neither superuser nor BYPASSRLS (start-up "
        "is refused otherwise). Unset: the service does not migrate and refuses to start "
        "on a schema that is behind.",
    )
    database_pool_size: int = Field(
        10, ge=4,
        description="Maximum connections in the asyncpg pool (at least 4: a scheduled purge"
        " holds up to four at once).",
    )
    s3_endpoint: str | None = Field(
        None,
        description="S3 endpoint host:port (any S3 API: the SeaweedFS gateways of deploy/, AWS "
        "S3, Ceph RGW, Garage). Unset: an embedded S3 server is started in data_dir.",
    )
    s3_access_key: SecretStr | None = Field(None, description="S3 access key.")
    s3_secret_key: SecretStr | None = Field(None, description="S3 secret key.")
    s3_bucket: str = Field("tallenne", description="Bucket holding the encrypted audio.")
    s3_key_bucket: str | None = Field(
        None,
        description="Bucket holding the key snapshot (the customer and company keys, wrapped; "
        "overwritten on every erasure). Must not be versioned. Unset: the audio bucket's name "
        "with `-keys` appended.",
    )
    s3_audit_bucket: str | None = Field(
        None,
        description="Bucket of the signed audit checkpoints, created with Object Lock "
        "requested. Unset: the audio bucket's name with `-audit` appended.",
    )
    s3_audit_access_key: SecretStr | None = Field(
        None,
        description="Access key the service puts audit checkpoints with: grant it writing "
        "objects to the checkpoint bucket only. Unset: the main S3 credential (which can also "
        "delete them).",
    )
    s3_audit_secret_key: SecretStr | None = Field(
        None, description="Secret key of TALLENNE_S3_AUDIT_ACCESS_KEY."
    )
    s3_region: str = Field(
        "eu-north-1",
        description="Region of the bucket; must be inside the EU/EEA or start-up is refused.",
    )
    s3_secure: bool = Field(False, description="Use TLS (https) for the S3 endpoint.")
    s3_threads: int = Field(
        16, description="Size of the thread pool that runs the blocking S3 client calls."
    )
    s3_timeout_s: float = Field(
        30.0, description="Seconds an S3 call may take before the request answers 503."
    )
    master_key: SecretStr | None = Field(
        None,
        description="Base64 of 32 bytes: wraps every customer and company key. Unset in "
        "embedded mode: generated once into data_dir/secrets.json.",
    )
    master_key_version: int = Field(
        1, ge=1,
        description="Version of TALLENNE_MASTER_KEY; new wraps record it. Raise it with a new "
        "key to rotate (`tallenne keys rotate`).",
    )
    previous_master_keys: SecretStr | None = Field(
        None,
        description="Earlier master keys still accepted for unwrapping while a rotation runs: "
        "`VERSION:BASE64` items, comma-separated.",
    )
    backup_key: SecretStr | None = Field(
        None,
        description="Base64 of 32 bytes, not the master key: encrypts and authenticates "
        "backups (AES-256-GCM). Unset in embedded mode: generated once into "
        "data_dir/secrets.json.",
    )
    audit_signing_key: SecretStr | None = Field(
        None,
        description="Base64 of the 32-byte Ed25519 seed that signs audit checkpoints; a "
        "secret of its own, never stored in the database. Unset in embedded mode: generated "
        "once into data_dir/secrets.json.",
    )
    audit_checkpoint_retention_days: float = Field(
        3650, ge=0,
        description="How long each checkpoint is locked (COMPLIANCE retention) where the "
        "checkpoint bucket has Object Lock; 0: no retention requested.",
    )
    audit_origin: str = Field(
        "tallenne.local/audit",
        pattern=r"^[^\s+]+$",
        description="Origin line of the signed checkpoints and name of their signing key "
        "(no spaces, no `+`).",
    )
    personal_id_key: SecretStr | None = Field(
        None,
        description="Base64 of 32 bytes: encrypts and hashes personal identity codes. Unset in "
        "embedded mode: generated once into data_dir/secrets.json.",
    )
    allow_test_ids: bool = Field(
        False, description="Accept identity codes with individual numbers 900-999 (test codes)."
    )
    max_recording_bytes: int = Field(
        2 * 1024**3, description="Largest accepted recording in bytes (413 above it)."
    )
    max_batch_bytes: int = Field(
        32 * 1024**2, description="Largest accepted web-event batch after decompression."
    )
    trusted_proxies: str = Field(
        "",
        description="Comma-separated CIDRs of reverse proxies whose X-Forwarded-For and "
        "Forwarded headers are believed (client address for login throttling, audit and "
        "logs). Empty: the TCP peer is the client.",
    )
    insecure_cookies: bool = Field(
        False,
        description="Send the session cookie without the Secure flag (plain-HTTP development "
        "only; `make run` sets it).",
    )
    max_uploads_in_flight: int = Field(
        64, ge=1,
        description="Recording uploads one process accepts at once; more answer 429 with "
        "Retry-After.",
    )
    header_timeout_s: float = Field(
        30.0, gt=0,
        description="Seconds a client may take to send a request's headers before the "
        "connection is closed.",
    )
    body_read_timeout_s: float = Field(
        60.0, gt=0,
        description="Seconds a request body may stall (no bytes arriving) before the request "
        "fails with 408.",
    )
    session_idle_minutes: int = Field(30, description="A session ends after this idle time.")
    session_absolute_hours: int = Field(12, description="A session ends this long after login.")
    log_level: LogLevel = Field("INFO", description="Log level of the JSON log lines.")
    shutdown_grace_s: float = Field(
        20.0, description="Seconds in-flight requests may take to finish at shutdown."
    )
    purge_enabled: bool = Field(
        True,
        description="Run the daily purge inside the service (one replica at a time). Turn off "
        "where a Kubernetes CronJob runs `tallenne purge` instead.",
    )
    purge_at: str | None = Field(
        "02:30",
        pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
        description="Time of day (HH:MM, Europe/Helsinki) of the daily purge (off: "
        "TALLENNE_PURGE_ENABLED=false).",
    )
    purge_batch_size: int = Field(
        200, ge=1, le=5000,
        description="Records per purge batch (one transaction and one S3 multi-delete each).",
    )

    scrub_enabled: bool = Field(
        True,
        description="Run the scrub inside the service (one replica at a time): it re-reads "
        "every stored recording, verifies its SHA-256, marks failures `corrupt` and raises "
        "the integrity alarm. `tallenne scrub` runs a full pass on demand.",
    )
    scrub_every_hours: float = Field(
        168.0, gt=0,
        description="Hours after which a recording's stored audio is due to be re-verified "
        "(counted from when it was stored or last verified); replicas look for due "
        "recordings every ten minutes.",
    )
    scrub_rate_mb_s: float = Field(
        20.0, gt=0,
        description="Most audio (MB per second) the scheduled scrub reads, so that replay "
        "keeps the bandwidth.",
    )
    public_url: str = Field(
        "https://localhost:8080",
        pattern=r"^https://[^/?#]+(/[^?#]*)?$",
        description="HTTPS address clients reach the service at; vCon documents reference "
        "a recording's audited audio URL under it.",
    )
    export_enabled: bool = Field(
        True, description="Run export jobs in this replica (one replica at a time per job)."
    )
    export_bucket: str | None = Field(
        None,
        description="Bucket the `s3` export format writes its partitioned prefix to. Unset: "
        "the audio bucket's name with `-exports` appended.",
    )
    export_prefix: str = Field(
        "exports", description="Prefix under which each `s3` export writes `<id>/year=…/`."
    )
    export_keep_hours: int = Field(
        72, ge=1, description="Hours an export's result can be downloaded (an s3 export:"
        " stays in the export bucket) after it finished; housekeeping then removes it."
    )
    export_lease_s: float = Field(
        60.0, gt=0,
        description="Seconds a replica holds an export job without renewing; a job of a "
        "replica that died is resumed by another after this.",
    )
    export_poll_s: float = Field(
        5.0, gt=0, description="Seconds between looks for export jobs left by other replicas."
    )
    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        from schemas.ip import parse_networks

        parse_networks(value)
        return value

    @property
    def key_bucket(self) -> str:
        return self.s3_key_bucket or f"{self.s3_bucket}-keys"

    @property
    def export_target_bucket(self) -> str:
        return self.export_bucket or f"{self.s3_bucket}-exports"

    @property
    def audit_bucket(self) -> str:
        return self.s3_audit_bucket or f"{self.s3_bucket}-audit"

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def embedded_s3(self) -> bool:
        return self.s3_endpoint is None


def settings_table() -> str:
    """README.md's configuration table, generated from the Settings fields."""
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "(unset)" if default is None else f"`{default}`"
        lines.append(f"| `TALLENNE_{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(settings_table())
