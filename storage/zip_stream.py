"""Zip archives written as a stream: the non-seekable sink zipfile writes into, drained by
the caller after every chunk, so no more than one chunk of an entry is ever buffered."""

from __future__ import annotations

import io


class ZipPipe(io.RawIOBase):
    """The write end zipfile writes into; the handler drains it to the response after each
    chunk, so at most one chunk of audio is buffered. Not seekable: zipfile then writes data
    descriptors instead of seeking back to the local headers."""

    def __init__(self) -> None:
        super().__init__()
        # Immutable pieces are kept by reference: a chunk of audio is not copied on its way.
        self._pending: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._pending.append(data if isinstance(data, bytes) else bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self._pending)
        self._pending.clear()
        return out
