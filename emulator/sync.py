"""The blocking twin of :class:`emulator.runtime.gateway.Gateway`, for code that is not trio.

A test written with ``requests``, ``httpx`` or ``urllib`` cannot ``await``; it wants a gateway
that is simply running while a ``with`` block lasts. :class:`Gateway` gives it that by running
the async gateway in its own trio loop on a background thread::

    from emulator import sync

    with sync.Gateway.from_template("gateway.json", parameters=..., listen={443: 0}) as gw:
        urllib.request.urlopen(gw.url(), context=ctx)

Thread and resource ownership: :meth:`Gateway.start` starts one thread (named
``appgw-emulator-gateway``) running ``trio.run``; :meth:`Gateway.close` asks that loop to stop
through its trio token, waits for it to release every socket, and joins the thread, so nothing
is left running when ``close`` returns. The thread is a daemon only so that a forgotten
``close`` cannot hang interpreter exit; it is not the intended way to stop it.

:class:`LoopThread` is the reusable part: any async context manager served from a thread (the
pytest plugin runs its recording backend with it).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Generic, Self, TypeVar, Unpack

import trio

from emulator.loading import Parameters
from emulator.runtime.gateway import ACCESS_WAIT_S, GatewayOptions
from emulator.runtime.gateway import Gateway as AsyncGateway

if TYPE_CHECKING:
    from emulator.core.access import AccessRecord
    from emulator.model import GatewayConfig

__all__ = ["START_TIMEOUT_S", "STOP_TIMEOUT_S", "Gateway", "LoopThread"]

#: How long :meth:`LoopThread.start` waits for the loop to report ready. Binding and building
#: TLS contexts take milliseconds; seconds mean something is stuck, and a test should fail.
START_TIMEOUT_S: Final = 30.0
#: How often :meth:`Gateway.wait_for_access` looks at the log: a record arrives within a
#: millisecond of the response, so a few milliseconds keep the wait short without spinning.
ACCESS_POLL_S: Final = 0.002
#: How long :meth:`LoopThread.close` waits for the loop to finish closing its sockets. Closing
#: is shielded and local, so only a wedged task could take this long.
STOP_TIMEOUT_S: Final = 10.0

T = TypeVar("T")


class LoopThread(Generic[T]):
    """Serve one async context manager in a private trio loop on a background thread.

    ``start()`` enters ``factory()`` in the loop and returns what it yields; the loop then
    idles until ``close()``, which exits the context manager (releasing what it owns) and joins
    the thread. An exception from entering is raised by ``start()``; one from a crash while
    running is raised by ``close()``, so an error is never silently dropped.
    """

    def __init__(self, factory: Callable[[], AbstractAsyncContextManager[T]], *, name: str) -> None:
        self._factory = factory
        self._name = name
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._value: T | None = None
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None

    @property
    def thread(self) -> threading.Thread | None:
        """The loop's thread while started (and after ``close`` until restarted), else None."""
        return self._thread

    def start(self, *, timeout: float = START_TIMEOUT_S) -> T:
        """Start the thread and wait until the context manager is entered.

        Raises:
            RuntimeError: already started.
            TimeoutError: the loop did not get ready within ``timeout`` seconds.
            BaseException: whatever entering the context manager raised.
        """
        if self._thread is not None and self._thread.is_alive():
            msg = f"{self._name} is already running"
            raise RuntimeError(msg)
        self._ready.clear()
        self._value, self._error, self._token, self._stop = None, None, None, None
        thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread = thread
        thread.start()
        if not self._ready.wait(timeout):
            self._request_stop()
            thread.join(STOP_TIMEOUT_S)
            msg = f"{self._name} did not start within {timeout} s"
            raise TimeoutError(msg)
        if self._error is not None:
            thread.join(STOP_TIMEOUT_S)
            error, self._error = self._error, None
            if isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
                # A nursery's wrapping of one startup error: raise the error the caller knows.
                raise error.exceptions[0] from error
            raise error
        value = self._value
        assert value is not None  # set before _ready, when no error was stored
        return value

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # handed to the thread that called start() or close()
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        stop = self._stop = trio.Event()
        async with self._factory() as value:
            self._value = value
            self._ready.set()
            await stop.wait()

    def _request_stop(self) -> None:
        token, stop = self._token, self._stop
        if token is None or stop is None:
            return
        # ``run_sync_soon`` only queues the call, so it works from any thread, including one
        # running its own trio loop (an ``async def`` test under pytest-trio), where
        # ``trio.from_thread`` refuses to block. RunFinishedError: the loop already ended
        # (it crashed); close() reports why.
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(stop.set)

    def close(self, *, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the loop, wait until it released everything, join the thread. Idempotent.

        Raises:
            TimeoutError: the thread is still alive after ``timeout`` seconds.
            BaseException: the error that crashed the loop while it was running.
        """
        thread = self._thread
        if thread is None:
            return
        self._request_stop()
        thread.join(timeout)
        if thread.is_alive():
            msg = f"{self._name} did not stop within {timeout} s"
            raise TimeoutError(msg)
        self._token = self._stop = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    def __enter__(self) -> T:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Gateway:
    """A running :class:`~emulator.runtime.gateway.Gateway` for blocking code.

    ``with gateway:`` (or :meth:`start` / :meth:`close`) runs it on a background thread; the
    accessors read the async gateway's state and are safe from any thread.

    Args:
        gateway: the async gateway to run; build it with :meth:`from_template` or
            :meth:`from_config`, which take the same arguments as the async ones.
    """

    def __init__(self, gateway: AsyncGateway) -> None:
        self._gateway = gateway
        self._loop: LoopThread[AsyncGateway] = LoopThread(
            lambda: gateway, name="appgw-emulator-gateway"
        )

    @classmethod
    def from_template(
        cls,
        path: str | os.PathLike[str],
        parameters: Parameters = (),
        **options: Unpack[GatewayOptions],
    ) -> Self:
        """See :meth:`emulator.runtime.gateway.Gateway.from_template`; not started yet."""
        return cls(AsyncGateway.from_template(path, parameters, **options))

    @classmethod
    def from_config(
        cls,
        source: Mapping[str, Any] | GatewayConfig,
        parameters: Parameters = (),
        **options: Unpack[GatewayOptions],
    ) -> Self:
        """See :meth:`emulator.runtime.gateway.Gateway.from_config`; not started yet."""
        return cls(AsyncGateway.from_config(source, parameters, **options))

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind every listener and serve in the background; returns once the ports are bound.

        Raises:
            StartupError: a port is busy or needs root; nothing stays bound and no thread runs.
        """
        self._loop.start()
        return self

    def close(self) -> None:
        """Stop serving; every socket is closed and the thread joined when this returns.

        Raises:
            BaseException: what crashed the gateway while it served, if something did.
        """
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def thread(self) -> threading.Thread | None:
        """The thread running the gateway's loop (for leak checks in tests)."""
        return self._loop.thread

    # -- accessors -------------------------------------------------------------------------------

    @property
    def async_gateway(self) -> AsyncGateway:
        """The gateway being run; touch its mutable state only through this class."""
        return self._gateway

    @property
    def config(self) -> GatewayConfig:
        return self._gateway.config

    @property
    def listener_names(self) -> tuple[str, ...]:
        return self._gateway.listener_names

    @property
    def ports(self) -> dict[str, int]:
        """Listener name → bound local port (a copy)."""
        return dict(self._gateway.ports)

    def port(self, listener: str | None = None) -> int:
        """See :meth:`emulator.runtime.gateway.Gateway.port`."""
        return self._gateway.port(listener)

    def url(self, listener: str | None = None, host: str = "localhost") -> str:
        """See :meth:`emulator.runtime.gateway.Gateway.url`."""
        return self._gateway.url(listener, host)

    @property
    def server_ca(self) -> bytes:
        """See :attr:`emulator.runtime.gateway.Gateway.server_ca`."""
        return self._gateway.server_ca

    @property
    def access_log(self) -> tuple[AccessRecord, ...]:
        """A snapshot of the requests served so far, oldest first.

        A snapshot, not the live deque: the loop thread appends while the caller reads.
        """
        return tuple(self._gateway.access_log)

    def wait_for_access(self, count: int = 1, *, timeout: float = ACCESS_WAIT_S) -> None:
        """Block until the access log holds ``count`` records (it is written just after the
        response, so a client may be a moment ahead of it).

        Raises:
            TimeoutError: fewer records after ``timeout`` seconds.
        """
        # Polling, not a call into the loop: the caller may itself be inside a trio run
        # (pytest-trio), where blocking on another loop through trio.from_thread is refused.
        deadline = time.monotonic() + timeout
        while len(self._gateway.access_log) < count:
            if time.monotonic() >= deadline:
                have = len(self._gateway.access_log)
                msg = f"{have} access records after {timeout} s, expected {count}"
                raise TimeoutError(msg)
            time.sleep(ACCESS_POLL_S)
