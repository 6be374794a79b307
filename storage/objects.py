"""The S3 object store: every blocking minio call runs in one bounded thread pool.

Handlers never touch the minio client; they await these methods, so a slow or dead S3
costs a thread from the pool, never the event loop.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error

from storage.errors import ObjectMissing, Unavailable

logger = logging.getLogger(__name__)
T = TypeVar("T")

PART_SIZE = 16 * 1024 * 1024
LONG_PART_SIZE = 5 * 1024 * 1024  # the S3 minimum
READ_CHUNK = 256 * 1024
MISSING_CODES = {"NoSuchKey", "NoSuchObject", "NoSuchVersion"}


@dataclass(frozen=True)
class ObjectStat:
    key: str
    size: int
    etag: str | None


class ObjectStore:
    """Async face of one bucket."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        region: str,
        secure: bool = False,
        threads: int = 16,
        timeout_s: float = 30.0,
    ) -> None:
        self.bucket = bucket
        self.region = region
        self.timeout_s = timeout_s
        http = urllib3.PoolManager(
            num_pools=4,
            maxsize=threads,
            timeout=urllib3.Timeout(connect=min(5.0, timeout_s), read=timeout_s),
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=(500, 502, 503)),
        )
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http,
        )
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="s3")

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one blocking client call in the pool, translating its errors."""
        return await self._run_within(self.timeout_s, fn, *args, **kwargs)

    async def _run_within(
        self, timeout_s: float, fn: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))
        except TimeoutError as exc:
            raise Unavailable("the object store did not answer in time") from exc
        except S3Error as exc:
            if exc.code in MISSING_CODES:
                raise ObjectMissing(f"object is missing from the store ({exc.code})") from exc
            raise Unavailable(f"the object store refused the request ({exc.code})") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unavailable("the object store is not reachable") from exc

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def ensure_bucket(self, *, object_lock: bool = False) -> None:
        if not await self.run(self.client.bucket_exists, self.bucket):
            try:
                await self.run(
                    self.client.make_bucket, self.bucket, self.region, object_lock
                )
            except Unavailable:
                if not await self.run(self.client.bucket_exists, self.bucket):
                    raise

    async def ping(self) -> None:
        await self.run(self.client.bucket_exists, self.bucket)

    async def put_stream(self, key: str, stream: BinaryIO, length: int = -1) -> str:
        """Upload from a blocking file-like object (read in the pool); multipart when large."""
        result = await self.run(
            self.client.put_object,
            self.bucket,
            key,
            stream,
            length,
            part_size=PART_SIZE,
        )
        return str(result.etag)

    async def put_long_stream(
        self, key: str, stream: BinaryIO, length: int, *, min_rate: float = 4 * 1024**2
    ) -> str:
        """Upload `length` bytes (e.g. a long recording) in small parts, two in flight, so
        memory stays near 3 × LONG_PART_SIZE; the deadline grows with the length at
        `min_rate` bytes per second instead of one call's timeout."""
        result = await self._run_within(
            self.timeout_s + length / min_rate,
            self.client.put_object,
            self.bucket,
            key,
            stream,
            length,
            part_size=LONG_PART_SIZE,
            num_parallel_uploads=2,
        )
        return str(result.etag)

    async def put_bytes(self, key: str, data: bytes) -> None:
        await self.put_stream(key, io.BytesIO(data), len(data))

    async def stat(self, key: str) -> ObjectStat:
        result = await self.run(self.client.stat_object, self.bucket, key)
        return ObjectStat(key=key, size=int(result.size or 0), etag=result.etag)

    async def exists(self, key: str) -> bool:
        try:
            await self.stat(key)
        except ObjectMissing:
            return False
        return True

    async def get_bytes(self, key: str) -> bytes:
        chunks = [chunk async for chunk in self.iter_range(key)]
        return b"".join(chunks)

    async def iter_range(
        self,
        key: str,
        offset: int = 0,
        length: int | None = None,
        *,
        chunk_size: int = READ_CHUNK,
        first_chunk: int | None = None,
        transform: Callable[[bytes], bytes] | None = None,
    ) -> AsyncIterator[bytes]:
        """Stream an object (or a byte range of it) in bounded chunks.

        The next chunk is read while the caller handles the current one, so at most two are
        in memory. A smaller `first_chunk` gets the first bytes out sooner. `transform`
        (decryption, hashing) runs on each chunk in the worker thread, in order; a chunk it
        turns into nothing is not yielded.
        """
        response: Any = None

        def step() -> tuple[bool, bytes]:
            nonlocal response
            size = chunk_size
            if response is None:
                response = self.client.get_object(self.bucket, key, offset, length or 0)
                size = first_chunk or chunk_size
            chunk = response.read(size)
            if not chunk:
                return False, b""
            return True, transform(chunk) if transform is not None else chunk

        def release(_: object = None) -> None:
            if response is not None:
                response.close()
                response.release_conn()

        pending: asyncio.Future[tuple[bool, bytes]] | None = asyncio.ensure_future(
            self.run(step)
        )
        try:
            while pending is not None:
                more, out = await pending
                pending = asyncio.ensure_future(self.run(step)) if more else None
                if out:
                    yield out
        finally:
            if pending is not None and not pending.done():
                # The worker still reads from the response: close it once it is done.
                pending.add_done_callback(lambda f: (f.cancelled() or f.exception(), release()))
            else:
                if pending is not None and not pending.cancelled():
                    pending.exception()  # consumed: a failure after the caller left is moot
                release()

    async def delete(self, keys: Iterable[str]) -> list[str]:
        """Delete many objects at once; returns the keys the store failed to delete."""
        objects = [DeleteObject(k) for k in keys]
        if not objects:
            return []

        def _delete() -> list[str]:
            errors = self.client.remove_objects(self.bucket, objects)
            return [str(e.name) for e in errors]

        return await self.run(_delete)

    async def iter_keys(self, prefix: str, page: int = 1000) -> AsyncIterator[list[str]]:
        """The keys under `prefix`, a page at a time, so a bucket of millions of objects is
        never listed into memory at once."""
        listing = iter(self.client.list_objects(self.bucket, prefix=prefix, recursive=True))

        def next_page() -> list[str]:
            return [str(o.object_name) for o in itertools.islice(listing, page)]

        while keys := await self.run(next_page):
            yield keys

    async def list_keys(self, prefix: str) -> list[str]:
        def _list() -> list[str]:
            return [
                str(o.object_name)
                for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
            ]

        return await self.run(_list)
