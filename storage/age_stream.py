"""Encryption of a byte stream to an age X25519 recipient ("age1…"), as a stream.

The age format itself is pyrage's (bindings to the rage implementation); pyrage reads and
writes file objects synchronously, so it runs in a thread of its own between two small
bounded queues: memory stays at a few chunks and the event loop never waits on it."""

from __future__ import annotations

import asyncio
import io
import queue
import threading
from collections.abc import AsyncGenerator, AsyncIterable
from typing import Any

import pyrage
from pyrage import x25519

from storage.errors import InvalidInput

_OUT_CHUNK = 1 << 20
_QUEUE_DEPTH = 4
_POLL_S = 0.1


class _Stopped(Exception):
    """The other side has gone; the worker unwinds."""


def parse_age_recipient(text: str) -> x25519.Recipient:
    """An age X25519 public key, or InvalidInput (which never repeats the value)."""
    try:
        return x25519.Recipient.from_str(text.strip())
    except (pyrage.RecipientError, ValueError) as exc:
        raise InvalidInput(
            "the recipient key is not an age X25519 public key",
            [(["recipient_public_key"], "must be an age X25519 public key (age1…)")],
        ) from exc


def _put(q: queue.Queue[Any], item: object, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            q.put(item, timeout=_POLL_S)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    while True:
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            if stop.is_set():
                raise _Stopped from None


class _Plaintext(io.RawIOBase):
    """What the encryptor reads: chunks handed over by the event loop, then end of file."""

    def __init__(self, inbox: queue.Queue[bytes | None], stop: threading.Event) -> None:
        super().__init__()
        self._inbox = inbox
        self._stop = stop
        self._chunk = memoryview(b"")
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._chunk:
            if self._eof:
                return 0
            item = _get(self._inbox, self._stop)
            if item is None:
                self._eof = True
                return 0
            self._chunk = memoryview(item)
        n = min(len(buffer), len(self._chunk))
        buffer[:n] = self._chunk[:n]
        self._chunk = self._chunk[n:]
        return n


class _Ciphertext(io.RawIOBase):
    """What the encryptor writes: gathered into chunks of about a MiB for the event loop."""

    def __init__(self, outbox: queue.Queue[object], stop: threading.Event) -> None:
        super().__init__()
        self._outbox = outbox
        self._stop = stop
        self._pending = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._pending += data
        if len(self._pending) >= _OUT_CHUNK:
            self.hand_over()
        return len(data)

    def hand_over(self) -> None:
        if self._pending:
            _put(self._outbox, bytes(self._pending), self._stop)
            self._pending.clear()


async def encrypt_to_age(chunks: AsyncIterable[bytes], recipient: str,
                         ) -> AsyncGenerator[bytes, None]:
    """`chunks` as one age file encrypted to `recipient`. An error of the source is raised
    as itself, after which no further ciphertext is yielded."""
    key = parse_age_recipient(recipient)
    stop = threading.Event()
    inbox: queue.Queue[bytes | None] = queue.Queue(_QUEUE_DEPTH)
    outbox: queue.Queue[object] = queue.Queue(_QUEUE_DEPTH)
    plaintext = _Plaintext(inbox, stop)
    ciphertext = _Ciphertext(outbox, stop)
    source_failure: list[BaseException] = []
    done = object()

    def encrypt() -> None:
        try:
            pyrage.encrypt_io(plaintext, ciphertext, [key])
            ciphertext.hand_over()
            _put(outbox, done, stop)
        except _Stopped:
            return
        except BaseException as exc:  # handed to the event loop, which raises it
            try:
                _put(outbox, exc, stop)
            except _Stopped:
                return

    async def feed() -> None:
        try:
            async for chunk in chunks:
                if chunk:
                    await asyncio.to_thread(_put, inbox, chunk, stop)
            await asyncio.to_thread(_put, inbox, None, stop)
        except _Stopped:
            return
        except BaseException as exc:
            source_failure.append(exc)
            stop.set()
            raise

    worker = threading.Thread(target=encrypt, name="age-encrypt", daemon=True)
    worker.start()
    feeder = asyncio.create_task(feed())
    try:
        while True:
            try:
                item = await asyncio.to_thread(_get, outbox, stop)
            except _Stopped:
                item = None
            if source_failure:
                raise source_failure[0]
            if item is done:
                break
            if item is None or isinstance(item, BaseException):
                raise RuntimeError("age encryption failed") from item
            yield item
        await feeder
    finally:
        stop.set()
        if not feeder.done():
            feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
        await asyncio.to_thread(worker.join)
