"""Session-wide real PostgreSQL and S3; a fresh database and bucket for every test."""

from __future__ import annotations

import asyncio
import os
import queue
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp import CookieJar, web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from devstack.embedded import (
    OWNER_ROLE,
    EmbeddedStack,
    StackInfo,
    free_ports,
    load_or_create_secrets,
)
from service.app import create_app
from service.settings import Settings
from storage.db import create_pool
from storage.migrate import migrate_url
from storage.objects import ObjectStore
from tests.helpers import Api

TEMPLATE_DB = "tallenne_template"
REQUIRE_E2E = os.environ.get("TALLENNE_REQUIRE_E2E") == "1"
_OWN_BASETEMP = pytest.StashKey[Path]()
_PASSED = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    # pytest's shared numbered temp folders keep only the newest few and delete the rest, so a
    # second checkout's (or a parallel) run would delete this run's live database and S3
    # folders under it. Each run gets a folder of its own, removed when the run passes.
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        own = Path(tempfile.mkdtemp(prefix="tallenne-tests-"))
        config.option.basetemp = str(own)
        config.stash[_OWN_BASETEMP] = own


def pytest_unconfigure(config: pytest.Config) -> None:
    own = config.stash.get(_OWN_BASETEMP, None)
    if own is not None and config.stash.get(_PASSED, False):
        shutil.rmtree(own, ignore_errors=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_PASSED] = exitstatus == 0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if REQUIRE_E2E and report.skipped and item.get_closest_marker("e2e") is not None:
        report.outcome = "failed"
        report.longrepr = f"end-to-end test skipped under TALLENNE_REQUIRE_E2E=1: {report.longrepr}"


class Stack:
    """The session's embedded servers plus what tests need to reach them directly."""

    def __init__(self, embedded: EmbeddedStack, info: StackInfo, secret: dict[str, str]) -> None:
        self.embedded = embedded
        self.info = info
        self.secret = secret

    def superuser_url(self, database: str) -> str:
        assert self.embedded.postgres is not None
        return self.embedded.postgres.superuser_url(database)

    def app_url(self, database: str) -> str:
        """The service's runtime role: owns nothing, row-level security applies."""
        assert self.embedded.postgres is not None
        return self.embedded.postgres.app_url(database)

    def owner_url(self, database: str) -> str:
        """The role that owns the schema and runs the migrations, as in production."""
        assert self.embedded.postgres is not None
        return self.embedded.postgres.owner_url(database)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("stack")
    embedded = EmbeddedStack(data_dir)
    info = embedded.start()
    secret = load_or_create_secrets(data_dir)
    stack = Stack(embedded, info, secret)

    async def make_template() -> None:
        admin = await asyncpg.connect(stack.superuser_url("postgres"))
        await admin.execute(f"CREATE DATABASE {TEMPLATE_DB} OWNER {OWNER_ROLE}")
        await admin.close()
        await migrate_url(stack.owner_url(TEMPLATE_DB))

    asyncio.run(make_template())
    try:
        yield stack
    finally:
        embedded.stop()


def fresh_database(stack: Stack) -> str:
    name = "t_" + uuid.uuid4().hex[:12]

    async def create() -> None:
        admin = await asyncpg.connect(stack.superuser_url("postgres"))
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB} OWNER {OWNER_ROLE}")
        await admin.close()

    asyncio.run(create())
    return name


def drop_database(stack: Stack, name: str) -> None:
    async def drop() -> None:
        admin = await asyncpg.connect(stack.superuser_url("postgres"))
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()

    asyncio.run(drop())


def settings_for(stack: Stack, database: str, bucket: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": SecretStr(stack.app_url(database)),
        "database_owner_url": SecretStr(stack.owner_url(database)),
        "s3_endpoint": stack.info.s3_endpoint,
        "s3_access_key": SecretStr(stack.info.s3_access_key),
        "s3_secret_key": SecretStr(stack.info.s3_secret_key),
        "s3_bucket": bucket,
        "master_key": SecretStr(stack.secret["master_key"]),
        "personal_id_key": SecretStr(stack.secret["personal_id_key"]),
        "backup_key": SecretStr(stack.secret["backup_key"]),
        "audit_signing_key": SecretStr(stack.secret["audit_signing_key"]),
        "s3_audit_access_key": SecretStr(stack.secret["s3_audit_access_key"]),
        # No lock on checkpoints: a locked object outlives its test's clean-up by its
        # retention. Tests of the lock itself ask for seconds of it (`checkpoint_lock`).
        "audit_checkpoint_retention_days": 0,
        "s3_audit_secret_key": SecretStr(stack.secret["s3_audit_secret_key"]),
        "data_dir": Path(stack.embedded.data_dir),
        "allow_test_ids": True,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


class Databases:
    """Fresh databases made ahead, and used ones dropped, by two threads of their own while
    tests run: copying the template costs PostgreSQL a few hundred milliseconds of writing and
    syncing, which would otherwise be spent before every test."""

    AHEAD = 2

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self._ready: queue.Queue[str] = queue.Queue(maxsize=self.AHEAD)
        self._used: queue.Queue[str | None] = queue.Queue()
        self._stopping = threading.Event()
        self._maker = threading.Thread(target=self._make, name="databases-ahead", daemon=True)
        self._dropper = threading.Thread(target=self._drop, name="databases-drop", daemon=True)
        self._maker.start()
        self._dropper.start()

    def _make(self) -> None:
        while not self._stopping.is_set():
            try:
                name = fresh_database(self._stack)
            except (OSError, asyncpg.PostgresError):
                # PostgreSQL is down for a moment (a test stopped it): try again shortly.
                self._stopping.wait(0.5)
                continue
            while True:
                try:
                    self._ready.put(name, timeout=0.5)
                    break
                except queue.Full:
                    if self._stopping.is_set():
                        drop_database(self._stack, name)
                        return

    def _drop(self) -> None:
        while (name := self._used.get()) is not None:
            try:
                drop_database(self._stack, name)
            except (OSError, asyncpg.PostgresError) as exc:
                print(f"warning: database {name} left behind: {exc}")

    def take(self) -> str:
        """A fresh database; made now if none is ready (the maker stopped, or fell behind)."""
        try:
            return self._ready.get(timeout=0 if not self._maker.is_alive() else 30)
        except queue.Empty:
            return fresh_database(self._stack)

    def give_back(self, name: str) -> None:
        self._used.put(name)

    def close(self) -> None:
        self._stopping.set()
        self._maker.join(timeout=60)
        while not self._ready.empty():
            self._used.put(self._ready.get_nowait())
        self._used.put(None)
        self._dropper.join(timeout=120)


@pytest.fixture(scope="session")
def databases(stack: Stack) -> Iterator[Databases]:
    supply = Databases(stack)
    try:
        yield supply
    finally:
        supply.close()


@pytest.fixture
def database(databases: Databases) -> Iterator[str]:
    name = databases.take()
    yield name
    databases.give_back(name)


def drop_bucket(stack: Stack, bucket: str) -> None:
    """Remove a test's bucket: S3 servers cap how many collections they hold."""
    from minio import Minio
    from minio.deleteobjects import DeleteObject

    client = Minio(stack.info.s3_endpoint, access_key=stack.info.s3_access_key,
                   secret_key=stack.info.s3_secret_key, secure=False, region="eu-north-1")
    try:
        if not client.bucket_exists(bucket):
            return
        # Every version: object-locked buckets (audit checkpoints) are versioned.
        names = [DeleteObject(o.object_name, o.version_id) for o in client.list_objects(
            bucket, recursive=True, include_version=True) if o.object_name]
        for attempt in range(5):
            # Locked checkpoints (retention of seconds in tests) go once their lock ends.
            errors = list(client.remove_objects(bucket, names))
            if not errors:
                break
            if attempt == 4:
                raise AssertionError(f"could not empty {bucket}: {errors[0]}")
            time.sleep(2)
            names = [DeleteObject(o.object_name, o.version_id) for o in client.list_objects(
                bucket, recursive=True, include_version=True) if o.object_name]
        client.remove_bucket(bucket)
    except Exception as exc:
        print(f"warning: bucket {bucket} left behind: {exc}")


@pytest.fixture
def settings(request: pytest.FixtureRequest, stack: Stack, database: str) -> Iterator[Settings]:
    bucket = "t-" + database.removeprefix("t_")
    locked = request.node.get_closest_marker("checkpoint_lock") is not None
    # Seconds, not years: the store enforces the lock, and the test drops its buckets.
    made = settings_for(stack, database, bucket,
                        **({"audit_checkpoint_retention_days": 3 / 86400} if locked else {}))
    yield made
    drop_bucket(stack, bucket)
    drop_bucket(stack, made.key_bucket)
    drop_bucket(stack, made.audit_bucket)


def secure_origin_client(app: web.Application) -> TestClient[web.Request, web.Application]:
    """A client of the app on loopback whose cookie jar, like a browser's, treats the
    loopback origin as secure: the session cookie is Secure by default."""
    (port,) = free_ports(1)
    jar = CookieJar(unsafe=True, treat_as_secure_origin=f"http://127.0.0.1:{port}")
    return TestClient(TestServer(app, host="127.0.0.1", port=port), cookie_jar=jar)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = create_app(settings)
    test_client = secure_origin_client(app)
    await test_client.start_server()
    try:
        yield test_client
    finally:
        closing = asyncio.ensure_future(test_client.close())
        done, _ = await asyncio.wait({closing}, timeout=60)
        if not done:
            for task in asyncio.all_tasks():
                task.print_stack()
            pytest.fail("the app did not shut down within 60 s")


@pytest.fixture
async def api(client: TestClient[web.Request, web.Application], stack: Stack, database: str) -> Api:
    return Api(client, stack.superuser_url(database))


@pytest.fixture
async def db(stack: Stack, database: str) -> AsyncIterator[asyncpg.Connection]:
    """A superuser connection to the test's database, for checking what was stored."""
    conn = await asyncpg.connect(stack.superuser_url(database))
    yield conn
    await conn.close()


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """The service's own kind of pool on the test's database (row-level security applies)."""
    assert settings.database_url is not None
    created = await create_pool(settings.database_url.get_secret_value(), max_size=4)
    yield created
    await created.close()


@pytest.fixture
async def objects(settings: Settings) -> AsyncIterator[ObjectStore]:
    """A client of the test's bucket, created if missing."""
    assert settings.s3_endpoint and settings.s3_access_key and settings.s3_secret_key
    created = ObjectStore(
        settings.s3_endpoint, settings.s3_access_key.get_secret_value(),
        settings.s3_secret_key.get_secret_value(), settings.s3_bucket,
        region=settings.s3_region, threads=4,
    )
    await created.ensure_bucket()
    yield created
    await created.close()
