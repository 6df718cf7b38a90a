"""``--workers N``: several processes serving the same listening sockets.

Why processes
-------------
One Python process runs on one core (the GIL), and the proxy's work per request is Python work,
so a second core only helps with a second process. Each worker is a complete gateway — its own
trio loop, connections, backend connection pool and round-robin position, OCSP answer cache and
in-memory access log — and the workers share nothing but the listening sockets.

How
---
1. The parent (the *supervisor*) builds the :class:`WorkerGateway` (template, contexts,
   everything the workers need) and binds every listener with the gateway's own binding code,
   so a busy or privileged port fails exactly as without ``--workers``, before any worker
   exists (:meth:`WorkerGateway.bind_in_parent`).
2. It forks the workers (``os.fork``; the supervisor never runs a trio loop while it forks: a
   fork inside a running loop would copy its epoll and wakeup state). Each worker inherits the
   bound sockets and the built gateway, so it starts in milliseconds; its ``serve`` takes the
   sockets over instead of binding (:meth:`WorkerGateway._bind`) and tells the supervisor,
   through a pipe of its own, once it accepts on them.
3. The supervisor only supervises, from a small ``selectors`` loop (:class:`WorkerPool`): a
   worker that dies is forked again (a crash loop — a worker dying within ``CRASH_WINDOW_S`` of
   its start, ``MAX_QUICK_DEATHS`` times in a row — stops the whole pool instead); SIGTERM or
   SIGINT is passed on to every worker, which drains as a single gateway does, and the
   supervisor exits when they are gone (SIGKILL after ``STOP_GRACE_S``). A supervisor killed
   outright takes its workers with it (``PR_SET_PDEATHSIG`` on Linux).

Health under ``--workers``
--------------------------
The supervisor answers ``GET /health`` and ``/health/live`` (on ``--health-port``, or on the
``--dashboard`` port, where the dashboard itself is not served: it shows one process). It is
the one process that knows every worker: ``/health`` is 200 only when every worker of the
serving configuration has reported that it accepts on the listening sockets, 503 while the
workers start, while one that died is being replaced (``state: degraded``) and while draining.
The document carries ``answeredBy`` (the supervisor's pid) and ``workers`` (pid, readiness).

Reload under ``--workers``
--------------------------
SIGHUP, or a change of a ``--watch`` file, makes the supervisor load and check the new
configuration first (certificates, expressions, ports: the same ``load`` as without workers);
if it is invalid, the workers keep serving and the problems are reported. If it is valid, the
supervisor binds what is new (a port the old configuration also had keeps its listening
socket, so it never stops accepting), forks a new generation of workers with the new
gateway, waits until every one of them accepts, and only then sends the old generation SIGTERM:
they stop accepting at once, finish their requests in flight (the gateway's drain) and exit.
A port the new configuration dropped closes as soon as the old workers stop accepting. A new
generation that does not come up (a worker exits, or ``NEW_GENERATION_TIMEOUT_S`` passes) is
stopped and the old one keeps serving.

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
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import trio

from emulator.errors import EmulatorError, StartupError
from emulator.logsafe import escaped_logger
from emulator.runtime.gateway import Gateway, Readiness
from emulator.runtime.listener import PortRuntime
from emulator.runtime.plain_health import PlainHealthServer
from emulator.runtime.reload import WATCH_INTERVAL_S, file_stamps

__all__ = [
    "CRASH_WINDOW_S",
    "MAX_QUICK_DEATHS",
    "MAX_WORKERS",
    "NEW_GENERATION_TIMEOUT_S",
    "STOP_GRACE_S",
    "WorkerGateway",
    "WorkerPool",
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
#: A reload's new workers must all accept within this time, or the old ones keep serving. A
#: fork starts in milliseconds; the margin is for a loaded machine.
NEW_GENERATION_TIMEOUT_S: Final = 30.0
#: Exit status of a worker whose serving function raised (its traceback is on stderr).
WORKER_FAILED: Final = 70
#: prctl(2) option: the signal the kernel sends this process when its parent dies.
_PR_SET_PDEATHSIG: Final = 1
#: What a worker writes to its pipe once it accepts on the listening sockets.
_READY_BYTE: Final = b"r"


class WorkerGateway(Gateway):
    """A :class:`Gateway` whose listening sockets are bound once, by the parent of the workers.

    Until :meth:`adopt` it binds like any gateway; afterwards ``serve`` (in each forked worker)
    listens on the adopted sockets, without binding anything.
    """

    _adopted: Mapping[int, socket.socket] | None = None
    _reuse: Mapping[int, socket.socket] | None = None

    def bind_in_parent(
        self, reuse: Mapping[int, socket.socket] | None = None
    ) -> dict[int, socket.socket]:
        """Bind every listener (the gateway's own code and errors); returns the sockets.

        ``reuse`` maps frontend port → a listening socket of the configuration serving now: a
        port both configurations have keeps accepting on it (a duplicate descriptor is
        returned), instead of being closed and bound again. Runs its own short trio loop, so
        call it before any loop is running. Fills :attr:`ports`; returns frontend port → the
        bound listening socket (the caller owns them).

        Raises:
            StartupError: a port is busy or needs root (nothing stays bound).
        """
        self._reuse = dict(reuse or {})

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

        try:
            return trio.run(bind)  # fills self.ports, as serving would
        finally:
            self._reuse = None

    def adopt(self, sockets: Mapping[int, socket.socket]) -> None:
        """Serve on ``sockets`` (frontend port → bound listening socket) from now on."""
        self._adopted = dict(sockets)

    async def _bind(self, runtime: PortRuntime) -> trio.SocketListener:
        adopted = self._adopted
        if adopted is not None and runtime.port in adopted:
            # In a worker: take the inherited socket over. Draining closes it, so a port a
            # reload removed stops accepting as soon as the old workers stop (the supervisor
            # keeps its own descriptor for the workers it forks later).
            sock = adopted[runtime.port]
        else:
            reused = (self._reuse or {}).get(runtime.port)
            wanted = self.local_port_for(runtime.listener)
            if reused is None or wanted not in (0, reused.getsockname()[1]):
                return await super()._bind(runtime)
            sock = reused.dup()
        bound = sock.getsockname()[1]
        for rule in runtime.rules:
            self.ports[rule.listener.name] = bound
        return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


#: What runs in a worker: ``serve(gateway, index, ready)``; calls ``ready()`` once it accepts,
#: stops on SIGTERM / SIGINT, returns the worker's exit status.
ServeFunction = Callable[[WorkerGateway, int, Callable[[], None]], int]


@dataclass(eq=False)
class _Worker:
    index: int
    generation: int
    started: float
    pipe: int  # the read end of the worker's ready pipe; -1 once closed
    ready: bool = False
    stop_deadline: float | None = None  # set when it was sent SIGTERM


@dataclass(eq=False)
class _Generation:
    """One configuration and the workers serving it."""

    number: int
    gateway: WorkerGateway
    sockets: dict[int, socket.socket]
    workers: dict[int, _Worker] = field(default_factory=dict)  # pid → worker
    started: float = field(default_factory=time.monotonic)

    def ready_count(self) -> int:
        return sum(worker.ready for worker in self.workers.values())

    def close_sockets(self) -> None:
        for sock in self.sockets.values():
            sock.close()


class WorkerPool:
    """The supervisor: forks, watches, replaces and reloads the workers; answers ``/health``.

    Args:
        count: workers per configuration.
        gateway: the first configuration's gateway, already bound (:meth:`bind_in_parent`).
        sockets: what ``bind_in_parent`` returned for it (the pool owns them now).
        serve: what runs in each worker (see :data:`ServeFunction`).
        load: reads and checks the configuration again and returns a new (unbound) gateway;
            raises EmulatorError when invalid. None: SIGHUP is ignored with a note.
        watched: files whose change reloads (``--watch``); empty for none.
        on_ready: called with the gateway and whether it came from a reload, once every
            worker of that configuration accepts.
        on_error: called with each problem of a refused reload.
        note: prints one line for the user (stderr).
        health: a listening socket (:func:`~emulator.runtime.health.bind_plain`) on which the
            supervisor answers the health routes, or None.
    """

    def __init__(
        self,
        count: int,
        gateway: WorkerGateway,
        sockets: dict[int, socket.socket],
        serve: ServeFunction,
        *,
        load: Callable[[], WorkerGateway] | None = None,
        watched: Sequence[Path] = (),
        on_ready: Callable[[WorkerGateway, bool], None] = lambda _g, _r: None,
        on_error: Callable[[EmulatorError], None] = lambda _p: None,
        note: Callable[[str], None] | None = None,
        health: socket.socket | None = None,
    ) -> None:
        if not 1 <= count <= MAX_WORKERS:
            raise ValueError(f"workers must be between 1 and {MAX_WORKERS}, not {count}")
        self.count = count
        self._serve = serve
        self._load = load
        self._watched = tuple(watched)
        self._on_ready = on_ready
        self._on_error = on_error
        self._note = note or (lambda text: print(text, file=sys.stderr, flush=True))
        self._health = health
        self._health_server: PlainHealthServer | None = None
        self._current = _Generation(1, gateway, sockets)
        self._pending: _Generation | None = None
        self._retiring: dict[int, _Worker] = {}  # pid → worker of a generation being replaced
        self._signals: list[int] = []
        self._stopping = False
        self._ever_ready = False
        self._reload_wanted: str | None = None
        self._quick_deaths = 0
        self._status = 0
        self._selector: selectors.DefaultSelector | None = None
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        self.reloads = 0

    # ---- readiness ---------------------------------------------------------------------

    def readiness(self) -> tuple[Readiness, dict[str, object]]:
        """What ``/health`` says: ready once every worker of the serving configuration accepts."""
        generation = self._current
        ready_workers = generation.ready_count()
        all_ready = ready_workers == self.count and len(generation.workers) == self.count
        if self._stopping:
            state = "draining"
        elif all_ready:
            state = "serving"
        elif self._ever_ready:
            state = "degraded"
        else:
            state = "starting"
        gateway = generation.gateway
        listeners = (
            {name: _address(gateway.bind, port) for name, port in gateway.ports.items()}
            if state != "starting"
            else {}
        )
        details: dict[str, object] = {
            "answeredBy": {"process": "supervisor", "pid": os.getpid()},
            "workers": {
                "count": self.count,
                "ready": ready_workers,
                "generation": generation.number,
                "pids": sorted(generation.workers),
            },
        }
        ready = state == "serving"
        return Readiness(ready=ready, state=state, listeners=listeners), details

    # ---- the loop ----------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM / SIGINT (0) or a crash loop (1); the sockets are closed after."""
        selector = selectors.DefaultSelector()
        wakeup = socket.socketpair()
        for end in wakeup:
            end.setblocking(False)
        self._selector, self._wakeup = selector, wakeup
        # Every registration's data is what to call with the ready events.
        selector.register(wakeup[0], selectors.EVENT_READ, self._drain_wakeup)
        if self._health is not None:
            self._health_server = PlainHealthServer(self._health, selector, self.readiness)
        watched = (
            signal.SIGTERM,
            signal.SIGINT,
            signal.SIGHUP,
            signal.SIGCHLD,
        )
        previous = {sig: signal.signal(sig, self._record_signal) for sig in watched}
        previous_wakeup = signal.set_wakeup_fd(wakeup[1].fileno(), warn_on_full_buffer=False)
        seen = file_stamps(self._watched)
        next_look = time.monotonic() + WATCH_INTERVAL_S
        try:
            self._start_generation(self._current)
            while True:
                self._handle_signals()
                self._reap()
                if self._stopping and not self._all_workers():
                    break
                now = time.monotonic()
                self._check_pending(now)
                self._kill_overdue(now)
                if self._health_server is not None:
                    self._health_server.expire(now)
                if self._watched and now >= next_look:
                    next_look = now + WATCH_INTERVAL_S
                    stamps = file_stamps(self._watched)
                    if stamps != seen:
                        seen = stamps
                        self._request_reload("a watched file changed")
                if self._reload_wanted is not None and self._pending is None:
                    reason, self._reload_wanted = self._reload_wanted, None
                    if not self._stopping:
                        self._reload(reason)
                for key, events in selector.select(self._timeout(next_look)):
                    key.data(events)
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._stop_everything()
            if self._health_server is not None:
                self._health_server.close()
            selector.close()
            for end in wakeup:
                end.close()
            self._current.close_sockets()
        return self._status

    def _timeout(self, next_look: float) -> float:
        deadlines = [time.monotonic() + 1.0]
        if self._watched:
            deadlines.append(next_look)
        if self._pending is not None:
            deadlines.append(self._pending.started + NEW_GENERATION_TIMEOUT_S)
        if self._health_server is not None and (due := self._health_server.deadline()):
            deadlines.append(due)
        deadlines += [
            w.stop_deadline for w in self._all_workers().values() if w.stop_deadline is not None
        ]
        return max(0.0, min(deadlines) - time.monotonic())

    def _record_signal(self, signum: int, _frame: object) -> None:
        self._signals.append(signum)

    def _handle_signals(self) -> None:
        signals, self._signals = self._signals, []
        for signum in signals:
            if signum in (signal.SIGTERM, signal.SIGINT):
                if not self._stopping:
                    self._note(f"stopping ({signal.Signals(signum).name})")
                self._stopping = True
                # Passed on every time: a second signal makes the workers stop at once.
                for pid, worker in self._all_workers().items():
                    self._terminate(pid, worker)
            elif signum == signal.SIGHUP:
                self._request_reload("SIGHUP")

    def _request_reload(self, reason: str) -> None:
        if self._load is None:
            self._note("note: this pool cannot reload (no configuration to load); ignored")
            return
        # A reload asked for while one is under way runs after it (the files may have changed
        # again since it loaded them).
        self._reload_wanted = reason

    def _drain_wakeup(self, _events: int) -> None:
        """The signal wakeup bytes: the signals themselves were recorded by the handler."""
        assert self._wakeup is not None
        with contextlib.suppress(BlockingIOError):
            while self._wakeup[0].recv(512):
                pass

    # ---- workers -----------------------------------------------------------------------

    def _all_workers(self) -> dict[int, _Worker]:
        every = dict(self._retiring)
        every.update(self._current.workers)
        if self._pending is not None:
            every.update(self._pending.workers)
        return every

    def _start_generation(self, generation: _Generation) -> None:
        generation.gateway.adopt(generation.sockets)
        generation.started = time.monotonic()
        for index in range(self.count):
            self._fork(generation, index)

    def _fork(self, generation: _Generation, index: int) -> None:
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid:
            os.close(write_end)
            os.set_blocking(read_end, False)
            worker = _Worker(index, generation.number, time.monotonic(), read_end)
            generation.workers[pid] = worker
            assert self._selector is not None
            self._selector.register(
                read_end, selectors.EVENT_READ, functools.partial(self._read_worker_pipe, worker)
            )
            return
        # The worker: it never returns into the supervisor's code.
        code = WORKER_FAILED
        try:
            self._become_worker(generation, read_end)
            _stop_with_parent(parent)

            def ready() -> None:
                # A supervisor that is gone cannot be told; PR_SET_PDEATHSIG stops this worker.
                with contextlib.suppress(OSError):
                    os.write(write_end, _READY_BYTE)

            code = self._serve(generation.gateway, index, ready)
        except BaseException:  # the worker's last line of defence: report, then exit
            LOGGER.exception("worker.failed index=%s pid=%s", index, os.getpid())
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _become_worker(self, generation: _Generation, own_read_end: int) -> None:
        """In a new worker: drop the supervisor's signal handling and every descriptor of its.

        What must not survive: the supervisor's loop, its health sockets, the other workers'
        pipes and the listening sockets of other generations (a worker holding a socket the
        reload removed would keep that port open, accepting into a queue nobody serves).
        """
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        # Reloading is the supervisor's job; a SIGHUP sent to the whole process group (a
        # closed terminal, ``kill -HUP -PGID``) must not end the workers.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        os.close(own_read_end)
        for worker in self._all_workers().values():
            if worker.pipe >= 0:
                os.close(worker.pipe)
        if self._selector is not None:
            self._selector.close()
        if self._wakeup is not None:
            for end in self._wakeup:
                end.close()
        if self._health_server is not None:
            self._health_server.forget()
        if self._health is not None:
            self._health.close()
        for other in (self._current, self._pending):
            if other is not None and other is not generation:
                other.close_sockets()

    def _read_worker_pipe(self, worker: _Worker, _events: int) -> None:
        try:
            data = os.read(worker.pipe, 64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            if _READY_BYTE in data:
                worker.ready = True
            return
        self._close_pipe(worker)  # the worker is exiting; waitpid collects it

    def _close_pipe(self, worker: _Worker) -> None:
        if worker.pipe < 0:
            return
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(worker.pipe)
        os.close(worker.pipe)
        worker.pipe = -1

    def _terminate(self, pid: int, worker: _Worker) -> None:
        _signal(pid, signal.SIGTERM)
        if worker.stop_deadline is None:
            worker.stop_deadline = time.monotonic() + STOP_GRACE_S

    def _kill_overdue(self, now: float) -> None:
        for pid, worker in self._all_workers().items():
            if worker.stop_deadline is not None and now >= worker.stop_deadline:
                LOGGER.warning(
                    "worker.killed pid=%s: still running %ss after SIGTERM", pid, STOP_GRACE_S
                )
                _signal(pid, signal.SIGKILL)
                worker.stop_deadline = now + STOP_GRACE_S  # collected by waitpid meanwhile

    def _reap(self) -> None:
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._worker_exited(pid, os.waitstatus_to_exitcode(wait_status))

    def _worker_exited(self, pid: int, code: int) -> None:
        retired = self._retiring.pop(pid, None)
        if retired is not None:
            self._close_pipe(retired)
            return
        pending = self._pending
        if pending is not None and pid in pending.workers:
            newcomer = pending.workers.pop(pid)
            self._close_pipe(newcomer)
            if not self._stopping:
                self._abandon_pending(
                    f"worker {newcomer.index} of the new configuration exited with status "
                    f"{code} before it served"
                )
            return
        worker = self._current.workers.pop(pid, None)
        if worker is None:
            return  # not ours (a child the serving code started and did not wait for)
        self._close_pipe(worker)
        if self._stopping:
            return
        quick = time.monotonic() - worker.started < CRASH_WINDOW_S
        self._quick_deaths = self._quick_deaths + 1 if quick else 0
        if self._quick_deaths >= MAX_QUICK_DEATHS:
            self._note(
                f"error: worker {worker.index} died {self._quick_deaths} times right after "
                f"starting (last exit status {code}); stopping all workers"
            )
            self._status = 1
            self._signals.append(signal.SIGTERM)
            return
        self._note(
            f"warning: worker {worker.index} (pid {pid}) exited with status {code}; restarting it"
        )
        self._fork(self._current, worker.index)

    def _stop_everything(self) -> None:
        """SIGTERM every worker still running, wait for them, SIGKILL the ones that do not stop."""
        running = self._all_workers()
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
        for worker in self._all_workers().values():
            self._close_pipe(worker)
        self._retiring.clear()
        self._current.workers.clear()
        if self._pending is not None:
            self._pending.workers.clear()
            self._pending.close_sockets()
            self._pending = None

    # ---- reload ------------------------------------------------------------------------

    def _reload(self, reason: str) -> None:
        """Load and check; on success bind what is new and fork the new generation."""
        assert self._load is not None
        LOGGER.info("reload.start reason=%s", reason)
        # The binding runs a short trio loop, which sets its own signal wakeup descriptor and
        # warns when one is already set: the supervisor's is put back afterwards.
        wakeup = signal.set_wakeup_fd(-1)
        try:
            gateway = self._load()
            sockets = gateway.bind_in_parent(reuse=self._current.sockets)
        except EmulatorError as exc:
            problems = getattr(exc, "problems", None) or [exc]
            for problem in problems:
                self._on_error(problem)
            LOGGER.warning(
                "reload.refused problems=%s: the workers keep serving the previous configuration",
                len(problems),
            )
            return
        finally:
            signal.set_wakeup_fd(wakeup, warn_on_full_buffer=False)
        self._pending = _Generation(self._current.number + 1, gateway, sockets)
        self._start_generation(self._pending)

    def _check_pending(self, now: float) -> None:
        pending = self._pending
        if self._stopping:
            return  # every worker is stopping: nothing becomes ready any more
        if pending is None:
            if not self._ever_ready and self._current.ready_count() == self.count:
                self._ever_ready = True
                self._on_ready(self._current.gateway, False)
            return
        if len(pending.workers) == self.count and pending.ready_count() == self.count:
            self._promote(pending)
        elif now - pending.started >= NEW_GENERATION_TIMEOUT_S:
            self._abandon_pending(
                f"the new configuration's workers did not all serve within "
                f"{NEW_GENERATION_TIMEOUT_S:.0f} s"
            )

    def _promote(self, pending: _Generation) -> None:
        old, self._current, self._pending = self._current, pending, None
        for pid, worker in old.workers.items():
            self._retiring[pid] = worker
            self._terminate(pid, worker)
        old.workers.clear()
        # The old workers hold their own descriptors until they stop accepting (at once).
        old.close_sockets()
        self.reloads += 1
        self._quick_deaths = 0
        self._ever_ready = True
        LOGGER.info("reload.done generation=%s", pending.number)
        self._on_ready(pending.gateway, True)

    def _abandon_pending(self, why: str) -> None:
        pending = self._pending
        assert pending is not None
        self._pending = None
        for pid, worker in pending.workers.items():
            self._retiring[pid] = worker
            self._terminate(pid, worker)
        pending.workers.clear()
        pending.close_sockets()
        self._on_error(
            StartupError(
                f"reload abandoned: {why}; the previous configuration keeps serving",
                fix="see the worker's error above",
                code="EmulatorReloadFailed",
            )
        )


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
