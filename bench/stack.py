"""A throwaway stack for benchmarks: embedded PostgreSQL + S3 in a temporary directory, a
fresh migrated database and bucket, and the service on a free port in its own process (so
client and service do not share one event loop).

    async with bench_stack() as stack:
        token = await stack.token("ingest", ["oulun-sahkonmyynti"])
        ... aiohttp requests to stack.base_url, raw S3 through stack.objects() ...
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import psutil

from devstack.embedded import (
    OWNER_ROLE,
    EmbeddedStack,
    StackInfo,
    free_ports,
    load_or_create_secrets,
)
from storage import accounts
from storage.migrate import migrate_url
from storage.objects import ObjectStore

READY_TIMEOUT_S = 60.0


@dataclass
class BenchStack:
    base_url: str
    info: StackInfo
    superuser_url: str
    app_url: str
    bucket: str
    env: dict[str, str]
    service: subprocess.Popen[bytes]
    owner_url: str = ""

    async def token(self, role: str, companies: list[str] | None = None, *,
                    all_companies: bool = False) -> str:
        conn = await asyncpg.connect(self.superuser_url)
        try:
            found = await accounts.companies_by_code(conn, companies or [])
            _, secret = await accounts.create_token(
                conn, f"bench-{role}-{uuid.uuid4().hex[:6]}", role, [c.id for c in found],
                all_companies,
            )
        finally:
            await conn.close()
        return secret

    def objects(self, threads: int = 16) -> ObjectStore:
        """A direct client of the benchmark's bucket, for the raw-S3 side of a comparison."""
        return ObjectStore(self.info.s3_endpoint, self.info.s3_access_key,
                           self.info.s3_secret_key, self.bucket, region="eu-north-1",
                           threads=threads, timeout_s=300)

    def service_rss(self) -> int:
        """Resident memory of the service process, in bytes."""
        return int(psutil.Process(self.service.pid).memory_info().rss)


async def _fresh_database(info: StackInfo, superuser_url: str) -> tuple[str, str, str]:
    """A new database owned by the owner role and migrated as it; its runtime-role,
    superuser and owner URLs."""
    name = "bench_" + uuid.uuid4().hex[:10]
    admin = await asyncpg.connect(superuser_url)
    try:
        await admin.execute(f"CREATE DATABASE {name} OWNER {OWNER_ROLE}")
    finally:
        await admin.close()
    app_url = info.database_url.rsplit("/", 1)[0] + "/" + name
    owner_url = info.database_owner_url.rsplit("/", 1)[0] + "/" + name
    await migrate_url(owner_url)
    return app_url, superuser_url.rsplit("/", 1)[0] + "/" + name, owner_url


async def _wait_ready(base_url: str, service: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if service.poll() is not None:
                raise RuntimeError(f"the service exited with {service.returncode}")
            try:
                async with session.get(f"{base_url}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("the service did not become ready")


@asynccontextmanager
async def bench_stack(**env_overrides: str) -> AsyncIterator[BenchStack]:
    """Start everything; `env_overrides` are extra TALLENNE_* variables for the service."""
    data_dir = Path(tempfile.mkdtemp(prefix="tallenne-bench-"))
    embedded = EmbeddedStack(data_dir)
    service: subprocess.Popen[bytes] | None = None
    try:
        info = await asyncio.to_thread(embedded.start)
        secret = load_or_create_secrets(data_dir)
        app_url, superuser_url, owner_url = await _fresh_database(info, info.superuser_url)
        (port,) = free_ports(1)
        bucket = "bench-" + uuid.uuid4().hex[:10]
        env = {
            **os.environ,
            **info.as_env(),
            "TALLENNE_DATABASE_URL": app_url,
            "TALLENNE_DATABASE_OWNER_URL": owner_url,
            "TALLENNE_S3_BUCKET": bucket,
            "TALLENNE_MASTER_KEY": secret["master_key"],
            "TALLENNE_PERSONAL_ID_KEY": secret["personal_id_key"],
            "TALLENNE_BACKUP_KEY": secret["backup_key"],
            "TALLENNE_AUDIT_SIGNING_KEY": secret["audit_signing_key"],
            "TALLENNE_DATA_DIR": str(data_dir / "service"),
            "TALLENNE_PORT": str(port),
            "TALLENNE_LOG_LEVEL": "WARNING",
            **env_overrides,
        }
        service = await asyncio.to_thread(
            subprocess.Popen,  # our own interpreter and module
            [sys.executable, "-m", "service.cli", "serve"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        base_url = f"http://127.0.0.1:{port}"
        await _wait_ready(base_url, service)
        yield BenchStack(base_url, info, superuser_url, app_url, bucket, env, service,
                         owner_url)
    finally:
        if service is not None and service.poll() is None:
            service.terminate()
            try:
                await asyncio.to_thread(service.wait, 30)
            except subprocess.TimeoutExpired:
                service.kill()
        await asyncio.to_thread(embedded.stop)
        shutil.rmtree(data_dir, ignore_errors=True)


# --- nginx in front of the same S3: the fastest thing a user could put in the path instead ---

NGINX_CONF = """\
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream s3 {{ server {upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        keepalive_requests 100000;
        location / {{
            proxy_pass http://s3;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host "{upstream}";
            proxy_buffers 16 64k;
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"""


@dataclass
class NginxProxy:
    """nginx (one worker, as the service is one process) reverse-proxying the S3 endpoint;
    a URL presigned for S3 works through it with the host part swapped."""

    base_url: str
    upstream: str
    master: psutil.Process

    def url(self, presigned: str) -> str:
        return presigned.replace(f"http://{self.upstream}", self.base_url, 1)

    def cpu_s(self) -> float:
        """CPU seconds of the master and its workers so far."""
        total = 0.0
        for process in (self.master, *self.master.children()):
            times = process.cpu_times()
            total += times.user + times.system
        return total


@asynccontextmanager
async def nginx_proxy(upstream: str) -> AsyncIterator[NginxProxy]:
    """Run the Debian package's nginx on a free loopback port with a config of its own in
    a temporary directory, in front of `upstream` (host:port)."""
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if binary is None:
        raise RuntimeError("nginx is not installed: apt-get install nginx")
    tmp = Path(tempfile.mkdtemp(prefix="tallenne-nginx-"))
    (port,) = free_ports(1)
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, upstream=upstream, port=port))
    process = await asyncio.to_thread(
        subprocess.Popen,
        [binary, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf),
         "-g", "daemon off;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                error = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"nginx exited with {process.returncode}: {error}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx did not start listening") from None
                await asyncio.sleep(0.1)
        yield NginxProxy(base_url, upstream, psutil.Process(process.pid))
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                await asyncio.to_thread(process.wait, 10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(tmp, ignore_errors=True)
