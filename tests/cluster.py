"""A production-shaped tallenne on loopback, as separate processes: a distributed SeaweedFS
(masters, volume servers with replication, a filer with its own LevelDB store, an S3
gateway), PostgreSQL, several `tallenne serve` replicas and nginx balancing them.

The production rehearsal (tests/e2e/test_production_rehearsal.py) and the cluster
benchmark (bench/cluster.py) both run on it:

    cluster = Cluster(tmp_dir, replicas=2)
    cluster.start()             # everything, in dependency order
    cluster.base_url            # nginx
    cluster.weed.kill_volume(0) # kill -9 one volume server
    cluster.stop()

Every process writes its log into the cluster directory; `Cluster.logs()` gathers their
tails for a failure message. No port is fixed: all are free loopback ports. Start and
restart processes from the thread that owns the cluster (not `asyncio.to_thread`): a server
is sent SIGTERM when the thread that started it ends.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.embedded import (
    EmbeddedPostgres,
    EmbeddedStack,
    StackError,
    _die_with_parent,
    _weed_bin,
    free_ports,
    kill_process,
    load_or_create_secrets,
)

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
TALLENNE = Path(sys.executable).parent / "tallenne"
NGINX_CANDIDATES = ("nginx", "/usr/sbin/nginx")
READY_TIMEOUT_S = 60.0
# glog's fatal lines (F1207 12:00:00.000 …) and Go's panics.
FATAL_LINE = re.compile(r"^(F\d{4} |panic: )")


def nginx_bin() -> str | None:
    for name in NGINX_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def missing_tools() -> str | None:
    """Why the cluster cannot start on this machine, or None when it can."""
    try:
        _weed_bin()
    except StackError as exc:
        return str(exc)
    if nginx_bin() is None:
        return "nginx is not installed (Debian package nginx)"
    if not TALLENNE.exists():
        return f"{TALLENNE} is missing (make .venv/.installed)"
    return None


def _get(url: str, timeout: float = 1.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


@dataclass
class Process:
    """One server process of the cluster, in its own process group, killed with its owner."""

    name: str
    argv: list[str]
    cwd: Path
    env: dict[str, str] | None = None
    grace_s: float = 30.0
    process: subprocess.Popen[bytes] | None = None
    _log: Any = None

    @property
    def log_path(self) -> Path:
        return self.cwd / f"{self.name}.log"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        self.cwd.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.argv, cwd=self.cwd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def kill(self) -> None:
        """SIGKILL: no clean shutdown at all."""
        kill_process(self.process)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def terminate(self) -> None:
        """SIGTERM without waiting: several servers shut down side by side."""
        if self.alive:
            assert self.process is not None
            os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM, and SIGKILL after `grace_s`."""
        self.terminate()
        if self.process is not None:
            try:
                self.process.wait(timeout=self.grace_s)
            except subprocess.TimeoutExpired:
                kill_process(self.process)
        if self._log is not None:
            self._log.close()
        self.process = None
        self._log = None

    def check(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise StackError(f"{self.name} exited with {self.process.returncode}:\n"
                             + self.tail())

    def tail(self, lines: int = 15) -> str:
        """The log's last lines, after its fatal ones (a Go stack trace would push them out)."""
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        fatal = [line for line in text[:-lines] if FATAL_LINE.match(line)]
        return "\n".join(f"  {self.name}| {line}" for line in fatal + text[-lines:])


def _wait(what: str, probe: Any, processes: list[Process],
          timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        for process in processes:
            process.check()
        try:
            if probe():
                return
        except (OSError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise StackError(f"{what} not ready within {timeout_s:.0f} s:\n"
                             + "\n".join(p.tail() for p in processes))
        time.sleep(0.1)


def s3_identities(service: tuple[str, str], checkpoints: tuple[str, str],
                  bucket: str) -> dict[str, Any]:
    """The S3 gateway's identities exactly as deploy/seaweedfs/s3.example.json grants them
    (the service's credential on its buckets, one that only puts audit checkpoints), with
    these credentials and `bucket` in place of the bucket name `tallenne`."""
    example = json.loads((DEPLOY / "seaweedfs" / "s3.example.json").read_text())
    credentials = {"tallenne": service, "audit-checkpoints": checkpoints}
    return {"identities": [
        {"name": identity["name"],
         "credentials": [{"accessKey": credentials[identity["name"]][0],
                          "secretKey": credentials[identity["name"]][1]}],
         "actions": [_rename_bucket(action, bucket) for action in identity["actions"]]}
        for identity in example["identities"]
    ]}


def _rename_bucket(text: str, bucket: str) -> str:
    """`Read:tallenne-keys` → `Read:<bucket>-keys`; `-name tallenne-audit` likewise."""
    return re.sub(r"(?<=[:\s/])tallenne(?=[-/\s]|$)", bucket, text, flags=re.MULTILINE)


@dataclass
class WeedCluster:
    """SeaweedFS as in production, scaled to loopback: masters (3 form a raft group), volume
    servers on one rack with replication `001` (every file on two servers), one filer with
    its own LevelDB store and one S3 gateway."""

    directory: Path
    identities: dict[str, Any]
    masters: int = 1
    volumes: int = 3
    replication: str = "001"
    volume_size_mb: int = 64
    master_procs: list[Process] = field(default_factory=list)
    volume_procs: list[Process] = field(default_factory=list)
    filer: Process | None = None
    s3: Process | None = None
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def s3_endpoint(self) -> str:
        return f"127.0.0.1:{self.ports['s3']}"

    @property
    def master_peers(self) -> str:
        # host:port.grpcport: the gRPC port is not the default port + 10000 here.
        return ",".join(f"127.0.0.1:{self.ports[f'master{i}']}.{self.ports[f'master{i}.grpc']}"
                        for i in range(self.masters))

    @property
    def copies(self) -> int:
        """How many copies of every file the replication setting keeps."""
        return 1 + sum(int(digit) for digit in self.replication)

    def _allocate(self) -> None:
        names = [f"master{i}" for i in range(self.masters)] + \
            [f"volume{i}" for i in range(self.volumes)] + ["filer", "s3"]
        extra = ["s3.grpc", "s3.iceberg", "s3.lance"]
        ports = free_ports(2 * len(names) + len(extra))
        for i, name in enumerate(names):
            self.ports[name] = ports[2 * i]
            self.ports[f"{name}.grpc"] = ports[2 * i + 1]
        for i, name in enumerate(extra):
            self.ports[name] = ports[2 * len(names) + i]

    def start(self) -> None:
        weed = str(_weed_bin())
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.ports:
            self._allocate()
        for i in range(self.masters):
            mdir = self.directory / f"master{i}"
            mdir.mkdir(parents=True, exist_ok=True)
            self.master_procs.append(Process(f"master{i}", [
                weed, "master", f"-mdir={mdir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-port={self.ports[f'master{i}']}",
                f"-port.grpc={self.ports[f'master{i}.grpc']}",
                f"-peers={self.master_peers}" if self.masters > 1 else "-peers=none",
                f"-defaultReplication={self.replication}",
                f"-volumeSizeLimitMB={self.volume_size_mb}",
                "-telemetry=false", "-electionTimeout=3s",
            ], mdir))
        for i in range(self.volumes):
            vdir = self.directory / f"volume{i}"
            vdir.mkdir(parents=True, exist_ok=True)
            self.volume_procs.append(Process(f"volume{i}", [
                weed, "volume", f"-dir={vdir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-port={self.ports[f'volume{i}']}",
                f"-port.grpc={self.ports[f'volume{i}.grpc']}",
                f"-master={self.master_peers}", "-max=40", "-rack=rack1",
                "-dataCenter=dc1", "-preStopSeconds=0",
            ], vdir))
        fdir = self.directory / "filer"
        fdir.mkdir(parents=True, exist_ok=True)
        # The filer's metadata store, read from filer.toml in its working directory.
        (fdir / "filer.toml").write_text(
            f'[leveldb2]\nenabled = true\ndir = "{fdir / "meta"}"\n')
        self.filer = Process("filer", [
            weed, "filer", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-port={self.ports['filer']}", f"-port.grpc={self.ports['filer.grpc']}",
            f"-master={self.master_peers}", f"-defaultReplicaPlacement={self.replication}",
        ], fdir, grace_s=5.0)  # its gRPC server waits 15 s on its own metadata subscription
        config = self.directory / "s3.json"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(self.identities, out)
        sdir = self.directory / "s3"
        self.s3 = Process("s3", [
            weed, "s3", "-ip.bind=127.0.0.1", f"-port={self.ports['s3']}",
            f"-port.grpc={self.ports['s3.grpc']}", f"-port.iceberg={self.ports['s3.iceberg']}",
            f"-port.lance={self.ports['s3.lance']}",
            f"-filer=127.0.0.1:{self.ports['filer']}.{self.ports['filer.grpc']}",
            f"-config={config}",
        ], sdir)

        for proc in self.master_procs:
            proc.start()
        _wait("SeaweedFS master", self._leader_known, self.master_procs)
        for proc in self.volume_procs:
            proc.start()
        _wait("SeaweedFS volume servers", lambda: self.live_volume_servers() == self.volumes,
              self.master_procs + self.volume_procs)
        self.filer.start()
        _wait("SeaweedFS filer", lambda: _get(f"http://127.0.0.1:{self.ports['filer']}/")[0]
              < 500, [self.filer])
        self.s3.start()
        _wait("SeaweedFS S3 gateway", lambda: _get(f"http://{self.s3_endpoint}/")[0]
              in (200, 403), [self.s3])

    def shell(self, script: str) -> str:
        """Run a `weed shell` script (deploy/seaweedfs/buckets.weed) against the cluster,
        naming the filer as apply-buckets.sh does."""
        filer = f"127.0.0.1:{self.ports['filer']}.{self.ports['filer.grpc']}"
        result = subprocess.run([str(_weed_bin()), "shell", f"-master={self.master_peers}",
                                 f"-filer={filer}"],
                                input=script, capture_output=True, text=True,
                                timeout=60, check=False)
        output = result.stdout + result.stderr
        refused = ("unknown command", "flag provided but not defined", "error")
        if result.returncode != 0 or any(word in output.lower() for word in refused):
            raise StackError(f"weed shell failed:\n{output}")
        return output

    def _leader_known(self) -> bool:
        status, body = _get(f"http://127.0.0.1:{self.ports['master0']}/cluster/status")
        return status == 200 and bool(json.loads(body).get("Leader"))

    def _master_json(self, path: str) -> dict[str, Any]:
        for i in range(self.masters):
            try:
                status, body = _get(f"http://127.0.0.1:{self.ports[f'master{i}']}{path}")
            except OSError:
                continue
            if status == 200:
                loaded: dict[str, Any] = json.loads(body)
                return loaded
        raise OSError("no master answers")

    def live_volume_servers(self) -> int:
        topology = self._master_json("/dir/status")["Topology"]
        return sum(len(rack.get("DataNodes") or []) for dc in topology.get("DataCenters") or []
                   for rack in dc.get("Racks") or [])

    def kill_volume(self, index: int) -> None:
        self.volume_procs[index].kill()

    def start_volume(self, index: int) -> None:
        self.volume_procs[index].start()
        _wait("the restarted volume server", lambda: self.live_volume_servers() == self.volumes,
              self.master_procs + [self.volume_procs[index]])

    @property
    def processes(self) -> list[Process]:
        return [*self.master_procs, *self.volume_procs,
                *(p for p in (self.filer, self.s3) if p is not None)]

    def stop(self) -> None:
        # The gateway first (no new requests), then the rest side by side.
        if self.s3 is not None:
            self.s3.stop()
        for proc in self.processes:
            proc.terminate()
        for proc in self.processes:
            proc.stop()

    def restart(self) -> None:
        """Down and up again on the same ports and data."""
        self.stop()
        self.master_procs, self.volume_procs, self.filer, self.s3 = [], [], None, None
        self.start()


NGINX_MAIN = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format upstream '$http_x_request_id $upstream_addr $status $request_method $uri';
    access_log {dir}/access.log upstream;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/tallenne.conf;
}}
"""


def render_nginx_site(upstreams: list[str], port: int) -> str:
    """deploy/nginx.conf with this machine's replica and listener addresses."""
    text = (DEPLOY / "nginx.conf").read_text()
    servers = re.findall(r"^(\s*)server app\d+:\d+(.*)$", text, re.MULTILINE)
    if not servers or "listen 80;" not in text:
        raise StackError("deploy/nginx.conf has no `server appN:PORT` lines or `listen 80;`")
    indent, params = servers[0]
    ours = "\n".join(f"{indent}server {address}{params}" for address in upstreams)
    text = re.sub(r"^\s*server app\d+:\d+.*\n", "", text, flags=re.MULTILINE)
    # The rehearsal keeps its own access log (which names the replica that served each
    # request); the site's, to the image's log directory, would take its place.
    text = re.sub(r"^\s*access_log .*\n", "", text, flags=re.MULTILINE)
    text = text.replace("upstream tallenne {\n", f"upstream tallenne {{\n{ours}\n", 1)
    return text.replace("listen 80;", f"listen 127.0.0.1:{port};")


@dataclass
class Nginx:
    directory: Path
    upstreams: list[str]
    port: int = 0
    proc: Process | None = None

    def start(self) -> None:
        binary = nginx_bin()
        assert binary is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_ports(1)[0]
        (self.directory / "tallenne.conf").write_text(
            render_nginx_site(self.upstreams, self.port))
        (self.directory / "nginx.conf").write_text(NGINX_MAIN.format(dir=self.directory))
        self.proc = Process("nginx", [binary, "-e", str(self.directory / "error.log"),
                                      "-p", str(self.directory),
                                      "-c", str(self.directory / "nginx.conf")],
                            self.directory)
        self.proc.start()
        _wait("nginx", lambda: _get(f"http://127.0.0.1:{self.port}/healthz")[0] in
              (200, 502, 503, 504), [self.proc], 20)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()  # SIGTERM: fast shutdown


def service_env(base: dict[str, str]) -> dict[str, str]:
    """The environment of a `tallenne` process: this one's, minus its TALLENNE_* settings,
    plus `base` (the replica is configured by environment variables only)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("TALLENNE_")}
    return {**inherited, **base}


@dataclass
class Replica:
    """One `tallenne serve` process of the worktree's installation."""

    index: int
    directory: Path
    env: dict[str, str]
    port: int = 0
    proc: Process | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> None:
        self.port = self.port or free_ports(1)[0]
        env = service_env({**self.env, "TALLENNE_HOST": "127.0.0.1",
                           "TALLENNE_PORT": str(self.port)})
        self.proc = Process(f"replica{self.index}", [str(TALLENNE), "serve"], self.directory,
                            env)
        self.proc.start()
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        assert self.proc is not None
        _wait(f"replica {self.index}", lambda: _get(f"http://{self.address}/readyz")[0] == 200,
              [self.proc])

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


@dataclass
class Cluster:
    """PostgreSQL, the SeaweedFS cluster, `replicas` service processes and nginx."""

    directory: Path
    replicas: int = 2
    masters: int = 1
    volumes: int = 3
    replication: str = "001"
    bucket: str = "tallenne"
    service_overrides: dict[str, str] = field(default_factory=dict)
    secret: dict[str, str] = field(default_factory=dict)
    postgres: EmbeddedPostgres | None = None
    weed: WeedCluster | None = None
    services: list[Replica] = field(default_factory=list)
    nginx: Nginx | None = None

    @property
    def base_url(self) -> str:
        assert self.nginx is not None
        return f"http://127.0.0.1:{self.nginx.port}"

    @property
    def s3_endpoint(self) -> str:
        assert self.weed is not None
        return self.weed.s3_endpoint

    @property
    def database_url(self) -> str:
        assert self.postgres is not None
        return self.postgres.app_url()

    @property
    def superuser_url(self) -> str:
        assert self.postgres is not None
        return self.postgres.superuser_url("tallenne")

    def env(self) -> dict[str, str]:
        """The replicas' TALLENNE_* settings; the same ones serve a CLI command."""
        assert self.weed is not None
        return {
            "TALLENNE_DATABASE_URL": self.database_url,
            "TALLENNE_S3_ENDPOINT": self.s3_endpoint,
            "TALLENNE_S3_ACCESS_KEY": self.secret["s3_access_key"],
            "TALLENNE_S3_SECRET_KEY": self.secret["s3_secret_key"],
            "TALLENNE_S3_BUCKET": self.bucket,
            "TALLENNE_S3_REGION": "eu-north-1",
            "TALLENNE_MASTER_KEY": self.secret["master_key"],
            "TALLENNE_PERSONAL_ID_KEY": self.secret["personal_id_key"],
            "TALLENNE_BACKUP_KEY": self.secret["backup_key"],
            "TALLENNE_AUDIT_SIGNING_KEY": self.secret["audit_signing_key"],
            "TALLENNE_S3_AUDIT_ACCESS_KEY": self.secret["s3_audit_access_key"],
            "TALLENNE_S3_AUDIT_SECRET_KEY": self.secret["s3_audit_secret_key"],
            "TALLENNE_DATA_DIR": str(self.directory / "service-data"),
            "TALLENNE_PURGE_ENABLED": "false",
            "TALLENNE_LOG_LEVEL": "WARNING",
            **self.service_overrides,
        }

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.secret = load_or_create_secrets(self.directory)
        self.weed = WeedCluster(
            self.directory / "weed",
            s3_identities((self.secret["s3_access_key"], self.secret["s3_secret_key"]),
                          (self.secret["s3_audit_access_key"],
                           self.secret["s3_audit_secret_key"]),
                          self.bucket),
            masters=self.masters, volumes=self.volumes, replication=self.replication)
        holder = EmbeddedStack(self.directory / "pg")
        holder.secret = load_or_create_secrets(holder.data_dir)
        self.postgres = EmbeddedPostgres(holder.data_dir, holder.secret)
        holder.postgres = self.postgres
        try:
            # initdb runs while SeaweedFS starts. The servers themselves are started from
            # this thread: each dies with the thread that started it (PR_SET_PDEATHSIG).
            with ThreadPoolExecutor(1) as pool:
                initdb = pool.submit(self._initdb)
                self.weed.start()
                initdb.result()
            # The buckets and their replication as deploy/ configures them: the service's
            # credential may not create a bucket.
            self.weed.shell(_rename_bucket(
                (DEPLOY / "seaweedfs" / "buckets.weed").read_text(), self.bucket))
            self._start_postgres(holder)
            self._start_services()
        except BaseException:
            self.stop()
            raise

    def _initdb(self) -> None:
        assert self.postgres is not None
        self.postgres.directory.mkdir(parents=True, exist_ok=True)
        self.postgres._prepare_user()
        if not (self.postgres.pgdata / "PG_VERSION").exists():
            self.postgres._initdb()

    def _start_postgres(self, holder: EmbeddedStack) -> None:
        assert self.postgres is not None
        self.postgres.start(self.postgres.port or None)
        # The production role split: the owner role, and the service's login role that owns
        # nothing (no superuser, no BYPASSRLS). Migrations run once, as the owner, before
        # any replica starts, as deploy/ does it.
        holder._ensure_app_database()
        subprocess.run([str(TALLENNE), "migrate"], check=True, capture_output=True,
                       cwd=self.directory, timeout=120,
                       env={**os.environ, **self.env(),
                            "TALLENNE_DATABASE_OWNER_URL": self.postgres.owner_url()})

    def _start_services(self) -> None:
        if not self.services:
            self.services = [Replica(i, self.directory / f"replica{i}", self.env())
                             for i in range(self.replicas)]
        # All at once: the migrations run under an advisory lock, once.
        for replica in self.services:
            replica.start(wait=False)
        for replica in self.services:
            replica.wait_ready()
        if self.nginx is None:
            self.nginx = Nginx(self.directory / "nginx", [r.address for r in self.services])
        self.nginx.start()

    def restart(self) -> None:
        """Everything down, then up again on the same ports and data."""
        self.stop()
        assert self.postgres is not None and self.weed is not None
        self.postgres.start(self.postgres.port)
        self.weed.restart()
        self._start_services()

    def run_cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A `tallenne` command against the cluster, configured like the replicas."""
        return subprocess.run([str(TALLENNE), *args], env=service_env(self.env()),
                              capture_output=True, text=True, timeout=timeout, check=False)

    def logs(self) -> str:
        procs = [r.proc for r in self.services if r.proc is not None]
        if self.weed is not None:
            procs += self.weed.processes
        if self.nginx is not None and self.nginx.proc is not None:
            procs.append(self.nginx.proc)
        return "\n".join(p.tail() for p in procs)

    def stop(self) -> None:
        """Every process asked to stop at once, then waited for."""
        procs = [r.proc for r in self.services if r.proc is not None]
        if self.nginx is not None and self.nginx.proc is not None:
            procs.append(self.nginx.proc)
        if self.weed is not None:
            procs += self.weed.processes
        for proc in procs:
            proc.terminate()
        if self.postgres is not None and self.postgres.process is not None \
                and self.postgres.process.poll() is None:
            os.killpg(self.postgres.process.pid, signal.SIGINT)  # its fast shutdown
        for proc in procs:
            proc.stop()
        if self.postgres is not None:
            self.postgres.stop()
