"""``--workers N``: several processes serving the same listening sockets.

Why processes
-------------
One Python process runs on one core (the GIL), and the proxy's work per request is Python work,
so a second core only helps with a second process. Each worker is a complete gateway — its own
trio loop, connections, backend connection pool and round-robin position, OCSP answer cache and
in-memory access log — and the workers share nothing but the listening sockets.

How
---
1. The parent builds the :class:`WorkerGateway` (template, contexts, everything the workers
   need) and binds every listener with the gateway's own binding code, so a busy or privileged
   port fails exactly as without ``--workers``, before any worker exists
   (:meth:`WorkerGateway.bind_in_parent`).
2. It forks the workers (``os.fork``, before any trio loop runs in the parent: a fork inside a
   running loop would copy its epoll and wakeup state). Each worker inherits the bound sockets
   and the built gateway, so it starts in milliseconds; its ``serve`` adopts the sockets instead
   of binding (:meth:`WorkerGateway._bind`).
3. The parent only supervises: a worker that dies is forked again (a crash loop — every worker
   dying within ``CRASH_WINDOW_S`` of its start, ``MAX_QUICK_DEATHS`` times in a row — stops the
   whole pool instead); SIGTERM or SIGINT is passed on to every worker, which drains as a single
   gateway does, and the parent exits when they are gone (SIGKILL after ``STOP_GRACE_S``). A
   parent killed outright takes its workers with it (``PR_SET_PDEATHSIG`` on Linux).

Shared listening socket, not SO_REUSEPORT
-----------------------------------------
Every worker accepts from the same socket: the kernel wakes the waiting workers and one of them
takes the connection, so a worker that is busy (or dead) never holds a queue of connections of
its own. With ``SO_REUSEPORT`` each worker would bind its own socket and the kernel would hash
each new connection to one of them: connections queued to a worker that dies are reset, and a
port chosen by the OS (``--listen 8443=0``) would have to be bound once before the others join.
The cost of sharing is that several workers wake for each new connection (one wins ``accept``,
the others go back to waiting); at local-tool connection rates that is noise.

Per-worker state
----------------
What is per process stays per process: ``--access-log`` lines are appended by every worker to
the same file (opened by the parent, ``O_APPEND``, one ``write`` per flushed line, so lines do
not interleave); OCSP answers are cached per worker (a worker asks the responder once per
certificate); round-robin restarts per worker (each spreads its own requests over the pool).
The dashboard is not served with ``--workers`` (it reads one process's requests).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from typing import Final

import trio

from emulator.logsafe import escaped_logger
from emulator.runtime.gateway import Gateway
from emulator.runtime.proxy import ListenerRuntime

__all__ = [
    "CRASH_WINDOW_S",
    "MAX_QUICK_DEATHS",
    "MAX_WORKERS",
    "STOP_GRACE_S",
    "WorkerGateway",
    "run_workers",
]

LOGGER = escaped_logger("emulator.workers")

#: More workers than this is a typo, not a plan (each one holds a full gateway in memory).
MAX_WORKERS: Final = 64
#: A worker that dies sooner than this after its start died "quickly" (start-up failure, or a
#: bug every request meets): forking it again at once would spin.
CRASH_WINDOW_S: Final = 2.0
#: Quick deaths in a row after which the pool stops instead of forking again.
MAX_QUICK_DEATHS: Final = 5
#: After SIGTERM the workers drain (the gateway's DRAIN_GRACE_S, 5 s); past this they are killed.
STOP_GRACE_S: Final = 10.0
#: Exit status of a worker whose serving function raised (its traceback is on stderr).
WORKER_FAILED: Final = 70
#: prctl(2) option: the signal the kernel sends this process when its parent dies.
_PR_SET_PDEATHSIG: Final = 1


class WorkerGateway(Gateway):
    """A :class:`Gateway` whose listening sockets are bound once, by the parent of the workers.

    Until :meth:`adopt` it binds like any gateway; afterwards ``serve`` (in each forked worker)
    listens on the adopted sockets, without binding anything.
    """

    _adopted: Mapping[int, socket.socket] | None = None

    def bind_in_parent(self) -> dict[int, socket.socket]:
        """Bind every listener (the gateway's own code and errors) and adopt the sockets.

        Runs its own short trio loop, so call it before any loop is running. Fills
        :attr:`ports`; returns frontend port → the bound listening socket.

        Raises:
            StartupError: a port is busy or needs root (nothing stays bound).
        """

        async def bind() -> dict[int, socket.socket]:
            self._claim()
            try:
                bound = await self._bind_all()
            finally:
                self._serving = False
            # trio's sockets are plain non-blocking sockets underneath: hand the descriptors
            # over to stdlib objects, which outlive this loop and cross the fork.
            return {
                runtime.port: socket.socket(fileno=listener.socket.detach())
                for listener, runtime in bound
            }

        sockets = trio.run(bind)  # fills self.ports, as serving would
        self._adopted = sockets
        return sockets

    def adopt(self, sockets: Mapping[int, socket.socket]) -> None:
        """Serve on ``sockets`` (frontend port → bound listening socket) from now on."""
        self._adopted = dict(sockets)

    async def _bind(self, runtime: ListenerRuntime) -> trio.SocketListener:
        adopted = self._adopted
        if adopted is None or runtime.port not in adopted:
            return await super()._bind(runtime)
        sock = adopted[runtime.port]
        bound = sock.getsockname()[1]
        for rule in runtime.rules:
            self.ports[rule.listener.name] = bound
        # A duplicate: the worker's loop closes its listener on the way out, and the socket the
        # parent adopted stays valid for a worker forked later.
        return trio.SocketListener(trio.socket.from_stdlib_socket(sock.dup()))


def run_workers(
    count: int,
    serve: Callable[[int], int],
    *,
    note: Callable[[str], None] | None = None,
) -> int:
    """Fork ``count`` workers running ``serve(index)``, keep them running, stop them on a signal.

    ``serve`` runs in the worker (its return value is the worker's exit status); it must start
    its own trio loop and stop on SIGTERM / SIGINT. Returns the parent's exit status: 0 after a
    requested stop, 1 when the workers kept dying (see ``MAX_QUICK_DEATHS``).
    """
    if not 1 <= count <= MAX_WORKERS:
        raise ValueError(f"workers must be between 1 and {MAX_WORKERS}, not {count}")
    say = note or (lambda text: print(text, file=sys.stderr, flush=True))
    running: dict[int, tuple[int, float]] = {}  # pid → (worker index, start time)
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(running):
            _signal(pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    quick_deaths = 0
    status = 0
    try:
        for index in range(count):
            _fork_worker(index, serve, running, previous)
        while running:
            try:
                pid, wait_status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries waitpid itself
                continue
            if pid not in running:
                continue
            index, started = running.pop(pid)
            if stopping:
                continue
            code = os.waitstatus_to_exitcode(wait_status)
            quick = time.monotonic() - started < CRASH_WINDOW_S
            quick_deaths = quick_deaths + 1 if quick else 0
            if quick_deaths >= MAX_QUICK_DEATHS:
                say(
                    f"error: worker {index} died {quick_deaths} times right after starting "
                    f"(last exit status {code}); stopping all workers"
                )
                status = 1
                request_stop(signal.SIGTERM, None)
                continue
            say(f"warning: worker {index} (pid {pid}) exited with status {code}; restarting it")
            _fork_worker(index, serve, running, previous)
    finally:
        _stop_all(running)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


def _fork_worker(
    index: int,
    serve: Callable[[int], int],
    running: dict[int, tuple[int, float]],
    parent_handlers: Mapping[signal.Signals, object],
) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid:
        running[pid] = (index, time.monotonic())
        return
    # The worker: the parent's stop handler must not run here (the worker's trio loop installs
    # its own receivers for SIGTERM and SIGINT); it never returns into the parent's code.
    code = WORKER_FAILED
    try:
        for sig in parent_handlers:
            signal.signal(sig, signal.SIG_DFL)
        _stop_with_parent(parent)
        code = serve(index)
    except BaseException:  # the worker's last line of defence: report, then exit
        LOGGER.exception("worker.failed index=%s pid=%s", index, os.getpid())
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _stop_with_parent(parent: int) -> None:
    """Have the kernel SIGTERM this worker when the parent dies, even by SIGKILL (Linux).

    Without it a killed parent would leave its workers serving the port, with nobody left to
    stop them. Elsewhere the parent's own SIGTERM handling is all there is.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        LOGGER.warning("worker.no_parent_death_signal errno=%s", ctypes.get_errno())
    if os.getppid() != parent:  # the parent died before prctl: nobody will send the signal
        os.kill(os.getpid(), signal.SIGTERM)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone; waitpid collects it
        os.kill(pid, sig)


def _stop_all(running: dict[int, tuple[int, float]]) -> None:
    """SIGTERM every worker still running, wait for them, SIGKILL the ones that do not stop."""
    for pid in running:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while running and time.monotonic() < deadline:
        for pid in list(running):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                running.pop(pid, None)
        time.sleep(0.05)
    for pid in running:
        _signal(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    running.clear()
