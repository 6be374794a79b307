"""The S3 object store: every blocking minio call runs in one bounded thread pool.

Handlers never touch the minio client; they await these methods, so a slow or dead S3
costs a thread from the pool, never the event loop. Object reads, the hot path of replay,
stream over an aiohttp client on the loop itself with a URL minio signed for the service.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import io
import itertools
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp
import urllib3
import yarl
from minio import Minio
from minio.credentials.credentials import Credentials
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error
from minio.helpers import DictType
from minio.signer import sign_v4_s3

from storage.errors import ObjectMissing, Unavailable

logger = logging.getLogger(__name__)
T = TypeVar("T")
# Bytes as they arrived (from a socket, an encryptor), or the part of them that falls in a chunk.
Piece = bytes | bytearray | memoryview

PART_SIZE = 16 * 1024 * 1024
LONG_PART_SIZE = 5 * 1024 * 1024  # the S3 minimum
READ_CHUNK = 256 * 1024
# Reads buffer at most about twice this much from the socket ahead of the reader.
READ_BUFFER = 1024 * 1024
# Chunks up to this size are transformed on the event loop; larger ones in a worker thread.
INLINE_TRANSFORM = 256 * 1024
# A read the store refuses with a server error (a gateway whose volume server is still coming
# up, a restarted node) or cannot take at all is tried again after these pauses before the
# caller is told the store is unavailable. GET is idempotent and nothing has been sent yet.
READ_RETRY_PAUSES_S = (0.1, 0.3, 0.9, 2.0)
RETRYABLE_READ_STATUS = frozenset({500, 502, 503, 504})
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()  # of a GET's (empty) body
MISSING_CODES = {"NoSuchKey", "NoSuchObject", "NoSuchVersion"}


@dataclass(frozen=True)
class ObjectStat:
    key: str
    size: int
    etag: str | None


class Pieces:
    """Pieces of a stream in arrival order, taken off the front in exact amounts without
    copying them: a piece that crosses the cut is split by memoryview."""

    def __init__(self) -> None:
        self._queue: collections.deque[Piece] = collections.deque()
        self.size = 0

    def __bool__(self) -> bool:
        return self.size > 0

    def append(self, piece: Piece) -> None:
        if piece:
            self._queue.append(piece)
            self.size += len(piece)

    def take(self, size: int) -> list[Piece]:
        """The first `size` bytes (fewer only when that is all there is)."""
        taken: list[Piece] = []
        while size > 0 and self._queue:
            piece = self._queue.popleft()
            if len(piece) > size:
                view = memoryview(piece)
                self._queue.appendleft(view[size:])
                piece = view[:size]
            taken.append(piece)
            size -= len(piece)
            self.size -= len(piece)
        return taken


def joined(pieces: list[Piece]) -> bytes:
    """The pieces as one `bytes`, copied only when they are not one already."""
    only = pieces[0] if len(pieces) == 1 else None
    return only if isinstance(only, bytes) else b"".join(pieces)


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
        self._connections = threads
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._credentials = Credentials(access_key, secret_key)
        self._base = f"{'https' if secure else 'http'}://{endpoint}/{quote(bucket)}/"

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one blocking client call in the pool, translating its errors."""
        return await self._run_within(self.timeout_s, fn, *args, **kwargs)

    def beside(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Start CPU work that releases the GIL (SHA-256, zlib) in the pool, beside the event
        loop. Work that takes the GIL back often (AES-GCM, one call per 64 KiB segment) costs
        the loop more here than it saves it."""
        return asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _run_within(
        self, timeout_s: float | None, fn: Callable[..., T], *args: Any, **kwargs: Any
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
        if self._session is not None and self._session_loop is asyncio.get_running_loop():
            await self._session.close()

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

    async def put_chunks(self, key: str, chunks: AsyncIterator[bytes]) -> str:
        """Upload what an async iterator yields, its length unknown beforehand: the S3
        client reads it in its worker thread through a bounded queue, in parts of
        LONG_PART_SIZE, so neither the whole object nor a spool file of it ever exists.
        No overall deadline: each S3 request has the client's timeouts, and the reader gives
        up when the iterator yields nothing for `timeout_s`."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=4)
        reader = _QueueReader(loop, queue, self.timeout_s)

        async def feed() -> None:
            try:
                async for chunk in chunks:
                    if chunk:
                        await queue.put(chunk)
                await queue.put(None)
            except Exception as exc:
                await queue.put(exc)

        feeder = asyncio.ensure_future(feed())
        try:
            result = await self._run_within(
                None, self.client.put_object, self.bucket, key, reader, -1,
                part_size=LONG_PART_SIZE,
            )
        finally:
            reader.abandoned = True
            feeder.cancel()
            await asyncio.wait([feeder])
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
        transform: Callable[[list[Piece]], bytes] | None = None,
        transform_after: asyncio.Future[Any] | None = None,
        inline_up_to: int = INLINE_TRANSFORM,
    ) -> AsyncGenerator[bytes, None]:
        """Stream an object (or a byte range of it) in bounded chunks.

        Reads go over the event loop's own HTTP client rather than through a worker thread
        each: the socket keeps filling a bounded buffer (read-ahead) while the caller handles
        a chunk. A smaller `first_chunk` gets the first bytes out sooner. Each chunk (short
        only at the end) is the list of pieces the socket delivered, never copied on the way:
        a piece that crosses into the next chunk is split by memoryview. `transform`
        (decryption, hashing) takes that list, chunk after chunk, on the event loop for chunks
        of up to `inline_up_to` bytes, in a worker thread for larger ones; a chunk it turns
        into nothing is not yielded. Without a transform the pieces are joined. With
        `transform_after`, the read starts at once but no chunk is transformed before that
        future is done.
        """
        headers = {}
        if length:
            headers["Range"] = f"bytes={offset}-{offset + length - 1}"
        elif offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            url = self._base + quote(key, safe="/")
            async with await self._open_read(url, headers) as response:
                if response.status == 404:
                    raise ObjectMissing("object is missing from the store (NoSuchKey)")
                if response.status == 416:
                    return  # the range starts past the end: there is nothing to read
                if response.status not in (200, 206):
                    raise Unavailable(
                        f"the object store refused the request (HTTP {response.status})"
                    )
                left = response.content_length

                # Delivered but not yet handed on: a piece that crossed into the next chunk.
                buffered = Pieces()

                def exhausted() -> bool:
                    return left == 0 and not buffered

                async def read(size: int) -> list[Piece]:
                    nonlocal left
                    while buffered.size < size and left != 0:
                        piece, http_chunk_end = await response.content.readchunk()
                        if not piece and http_chunk_end:
                            continue  # a chunked answer's chunk ended; more follows
                        if not piece:
                            if left is not None:
                                raise asyncio.IncompleteReadError(b"", left)
                            break
                        if left is not None:
                            left -= len(piece)
                        buffered.append(piece)
                    return buffered.take(size)

                async def next_piece(size: int) -> bytes | None:
                    pieces = await read(size)
                    if not pieces:
                        return None
                    if transform is None:
                        return joined(pieces)
                    if transform_after is not None:
                        await transform_after
                    if size <= inline_up_to:
                        return transform(pieces)
                    return await self.beside(transform, pieces)

                # Chunk n+1 is read and transformed while the caller handles chunk n; the
                # transforms run one after the other, in order.
                pending: asyncio.Task[bytes | None] | None = asyncio.ensure_future(
                    next_piece(first_chunk or chunk_size))
                try:
                    while pending is not None:
                        out = await pending
                        if out is None:
                            break
                        pending = (asyncio.ensure_future(next_piece(chunk_size))
                                   if not exhausted() else None)
                        if out:
                            yield out
                finally:
                    if pending is not None and not pending.done():
                        pending.cancel()
                        await asyncio.wait([pending])
                    if pending is not None and not pending.cancelled():
                        pending.exception()  # the caller left: a late failure is moot
        except asyncio.IncompleteReadError:
            raise Unavailable("the object store ended the object early") from None
        except (aiohttp.ClientError, TimeoutError, OSError):
            # Never chained: the request carries a signature.
            raise Unavailable("the object store is not reachable") from None

    async def _open_read(self, url: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """The store's answer to a GET, tried again on a server error or a refused
        connection (see READ_RETRY_PAUSES_S); the last answer or error is the caller's."""
        target = yarl.URL(url, encoded=True)
        for pause in (*READ_RETRY_PAUSES_S, None):
            try:
                response = await self._reader().get(
                    target, headers=self._signed_headers(url, headers))
            except (aiohttp.ClientConnectionError, TimeoutError, OSError):
                if pause is None:
                    raise
            else:
                if response.status not in RETRYABLE_READ_STATUS or pause is None:
                    return response
                response.release()
            await asyncio.sleep(pause)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _reader(self) -> aiohttp.ClientSession:
        """The HTTP client for object reads, made on first use in the running loop."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections),
                timeout=aiohttp.ClientTimeout(
                    sock_connect=min(5.0, self.timeout_s), sock_read=self.timeout_s
                ),
                read_bufsize=READ_BUFFER,
                auto_decompress=False,
            )
            self._session_loop = loop
        return self._session

    def _signed_headers(self, url: str, headers: dict[str, str]) -> dict[str, str]:
        """The headers of a GET signed (AWS signature V4, in the Authorization header) by the
        minio client's own signer; nothing signed is put in the URL."""
        now = datetime.now(UTC).replace(microsecond=0)
        request: DictType = {**headers, "Host": urlsplit(url).netloc,
                             "x-amz-date": now.strftime("%Y%m%dT%H%M%SZ"),
                             "x-amz-content-sha256": EMPTY_SHA256}
        signed = sign_v4_s3(
            method="GET", url=urlsplit(url), region=self.region, headers=request,
            credentials=self._credentials, content_sha256=EMPTY_SHA256, date=now,
        )
        return {name: str(value) for name, value in signed.items()}

    async def delete(self, keys: Iterable[str]) -> list[str]:
        """Delete many objects at once; returns the keys the store failed to delete."""
        objects = [DeleteObject(k) for k in keys]
        if not objects:
            return []

        def _delete() -> list[str]:
            errors = self.client.remove_objects(self.bucket, objects)
            return [str(e.name) for e in errors]

        return await self.run(_delete)

    async def is_versioned(self) -> bool:
        """Whether deleting a key leaves older versions behind (versioning enabled or
        suspended)."""
        config = await self.run(self.client.get_bucket_versioning, self.bucket)
        return str(config.status) in ("Enabled", "Suspended")

    async def delete_versions(self, keys: list[str], *, every_version: bool) -> list[str]:
        """Delete the keys in multi-object deletes of at most 1000, with every version and
        delete marker by id when `every_version` (a delete without a version id would only
        add one more marker). Returns "key: code" of each failure other than already gone."""

        def _delete() -> list[str]:
            targets: list[DeleteObject] = []
            if every_version:
                for key in keys:
                    for version in self.client.list_objects(
                        self.bucket, prefix=key, include_version=True
                    ):
                        if version.object_name == key:
                            targets.append(DeleteObject(key, version.version_id))
            else:
                targets.extend(DeleteObject(k) for k in keys)
            failed: list[str] = []
            for start in range(0, len(targets), 1000):
                errors = self.client.remove_objects(self.bucket, targets[start:start + 1000])
                failed.extend(f"{e.name}: {e.code}" for e in errors if e.code not in
                              ("NoSuchKey", "NoSuchVersion"))
            return failed

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
        """Every key under `prefix`, for the small prefixes (ledger, checkpoints)."""
        return [key async for page in self.iter_keys(prefix) for key in page]


class _QueueReader(io.RawIOBase):
    """A blocking file-like view (for the S3 client's worker thread) of chunks an event-loop
    task puts into an asyncio queue; an exception put there is raised to the reader."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 queue: asyncio.Queue[bytes | BaseException | None], wait_s: float) -> None:
        super().__init__()
        self._loop = loop
        self._queue = queue
        self._wait_s = wait_s
        self._pending = bytearray()
        self._done = False
        self.abandoned = False

    def readable(self) -> bool:
        return True

    def _next(self) -> bytes | BaseException | None:
        future = asyncio.run_coroutine_threadsafe(self._queue.get(), self._loop)
        try:
            return future.result(timeout=self._wait_s)
        except TimeoutError:
            future.cancel()
            return Unavailable("the data to upload stopped coming")

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = 1 << 62
        while len(self._pending) < size and not self._done:
            if self.abandoned:
                raise Unavailable("the upload was abandoned")
            item = self._next()
            if item is None:
                self._done = True
            elif isinstance(item, BaseException):
                self._done = True
                raise item
            else:
                self._pending += item
        out = bytes(self._pending[:size])
        del self._pending[:size]
        return out

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
