"""Bodies the gateway holds on behalf of a slow side: in memory first, then a temporary file.

Request buffering (``enableRequestBuffering``) reads a whole request body before a backend
connection is opened, so an upload trickling in holds no backend connection; response
buffering (``enableResponseBuffering``) reads a response as fast as the backend sends it and
gives the connection back while a slow client is still reading. nginx does both with memory
buffers that spill to temporary files (``client_body_temp_path``, ``proxy_temp_path``); so do
the two classes here, with the limits the caller names.

The files are unnamed (``tempfile.TemporaryFile``: unlinked at once on POSIX), so nothing is
left on disk when the process dies; their reads and writes run in trio's worker threads, so a
slow disk never stalls the event loop that every listener shares. Each spool belongs to one
request and is closed by its owner (:meth:`aclose`), also when the request fails.
"""

from __future__ import annotations

import tempfile
from collections import deque
from collections.abc import AsyncIterator
from typing import IO

import trio

from emulator.runtime.transport import read_at, truncate, write_at

__all__ = ["RequestBodySpool", "ResponseSpool"]


async def _new_file() -> IO[bytes]:
    return await trio.to_thread.run_sync(tempfile.TemporaryFile)


class RequestBodySpool:
    """A request body being read whole: up to ``memory_limit`` bytes in memory, the rest in a
    temporary file. Written once (:meth:`append`), then read once (:meth:`pieces`)."""

    __slots__ = ("_file", "_file_bytes", "_memory", "_memory_bytes", "_memory_limit", "length")

    def __init__(self, *, memory_limit: int) -> None:
        self._memory_limit = memory_limit
        self._memory: list[bytes] = []
        self._memory_bytes = 0
        self._file: IO[bytes] | None = None
        self._file_bytes = 0
        #: Body bytes appended so far.
        self.length = 0

    @property
    def spilled(self) -> bool:
        """Part of the body is in the temporary file."""
        return self._file is not None

    async def append(self, data: bytes) -> None:
        self.length += len(data)
        if self._file is None and self._memory_bytes + len(data) <= self._memory_limit:
            self._memory.append(data)
            self._memory_bytes += len(data)
            return
        if self._file is None:
            self._file = await _new_file()
        file = self._file
        offset = self._file_bytes
        self._file_bytes += len(data)
        await write_at(file, data, offset)

    def in_memory(self) -> bytes | None:
        """The whole body when it never left memory, else None."""
        if self._file is not None:
            return None
        return b"".join(self._memory)

    async def pieces(self, size: int) -> AsyncIterator[bytes]:
        """The body in order: what memory holds, then the file in reads of ``size`` bytes."""
        if self._memory:
            yield b"".join(self._memory)
        file = self._file
        if file is None:
            return
        offset = 0
        while offset < self._file_bytes:
            want = min(size, self._file_bytes - offset)
            data = await read_at(file, want, offset)
            if not data:
                raise OSError(f"the request body's temporary file ended at byte {offset}")
            offset += len(data)
            yield data

    def aclose(self) -> None:
        """Drop the body (closing the file frees its disk space at once)."""
        self._memory = []
        if self._file is not None:
            self._file.close()
            self._file = None


class ResponseSpool:
    """Response bytes between a backend reader and a client writer, in arrival order.

    The reader (:meth:`put`, then :meth:`finish`) never waits for the client while less than
    ``file_limit`` bytes are pending: up to ``memory_limit`` of them stay in memory, the rest
    go to a temporary file. The writer (:meth:`get`) takes them in order and waits when there
    is nothing yet. Memory only receives bytes while the file has nothing pending, so the order
    is kept: memory holds only bytes older than everything in the file.
    """

    __slots__ = (
        "_changed",
        "_done",
        "_file",
        "_file_limit",
        "_memory",
        "_memory_bytes",
        "_memory_limit",
        "_read_at",
        "_write_at",
        "_writing",
    )

    def __init__(self, *, memory_limit: int, file_limit: int) -> None:
        self._memory_limit = memory_limit
        self._file_limit = file_limit
        self._memory: deque[bytes] = deque()
        self._memory_bytes = 0
        self._file: IO[bytes] | None = None
        self._read_at = 0
        self._write_at = 0
        self._done = False
        #: A write to the file is under way (its bytes are not counted in _write_at yet).
        self._writing = False
        #: Set (and replaced) whenever bytes arrive, are taken, or the response ends.
        self._changed = trio.Event()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    @property
    def pending(self) -> int:
        """Bytes put and not taken yet."""
        return self._memory_bytes + self._write_at - self._read_at

    @property
    def drained(self) -> bool:
        """The response ended and the writer has taken all of it."""
        return self._done and not self.pending

    async def put(self, data: bytes) -> None:
        """Queue ``data``; waits only while ``file_limit`` bytes are already in the file."""
        file_pending = self._write_at - self._read_at
        if not file_pending and self._memory_bytes + len(data) <= self._memory_limit:
            self._memory.append(data)
            self._memory_bytes += len(data)
            self._wake()
            return
        while self._write_at - self._read_at >= self._file_limit:
            await self._changed.wait()
        if self._file is None:
            self._file = await _new_file()
        offset = self._write_at
        self._writing = True
        try:
            await write_at(self._file, data, offset)
        finally:
            self._writing = False
        self._write_at = offset + len(data)
        self._wake()

    def finish(self) -> None:
        """The response ended: :meth:`get` returns None once everything was taken."""
        self._done = True
        self._wake()

    async def get(self, size: int) -> bytes | None:
        """The oldest pending bytes (from memory all at once, from the file at most ``size``),
        waiting for some; None once the response ended and everything was taken."""
        while True:
            if self._memory:
                data = b"".join(self._memory)
                self._memory.clear()
                self._memory_bytes = 0
                self._wake()
                return data
            file = self._file
            if file is not None and self._read_at < self._write_at:
                want = min(size, self._write_at - self._read_at)
                data = await read_at(file, want, self._read_at)
                if not data:
                    raise OSError(f"the response's temporary file ended at byte {self._read_at}")
                self._read_at += len(data)
                if self._read_at == self._write_at and not self._writing:
                    # Everything in the file was taken: start it over, so it never grows
                    # past what is pending. Truncating is a metadata update, done inline so
                    # that no write can slip in between.
                    self._read_at = self._write_at = 0
                    truncate(file)
                self._wake()
                return data
            if self._done:
                return None
            await self._changed.wait()

    def aclose(self) -> None:
        self._memory.clear()
        self._memory_bytes = 0
        if self._file is not None:
            self._file.close()
            self._file = None
