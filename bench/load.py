"""Load generator for the benchmark: stdlib ``ssl`` clients presenting a client certificate.

Several processes (so the GIL is not the ceiling) each run a few threads; every thread drives
one connection at a time with blocking sockets:

``ka``  keep-alive: one TLS connection per thread, GET after GET on it (reconnects on error).
``hs``  handshake: a new TCP connection and a full TLS handshake for every request, one GET with
        ``Connection: close``, then close. There is no session resumption: a fresh context per
        connection is not needed because the client never offers a session.

``--rate R`` paces either mode to R requests per second in total: each thread sends on a fixed
schedule (``conns / R`` seconds apart, threads offset from one another) instead of as fast as
it can, so latency is measured below saturation (issue #9's p99 target). A request that is late
for its slot is sent at once; the latency is measured from the send.

The measurement window is ``[start_at, start_at + duration]`` on CLOCK_MONOTONIC, which every
process on the machine shares: the caller (bench/run.py) passes ``--start-at`` and samples the
proxy's CPU counters at exactly those instants. Only requests that *complete* inside the window
count. Every run is bounded twice: by the window (``duration`` capped at ``MAX_DURATION_S``) and
by a request budget per thread.

Prints one JSON object on stdout: mode, conns, procs, duration, requests, errors, rate, p50_ms,
p99_ms, max_ms, late_s (how late the workers started), error_sample.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import socket
import ssl
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Final

#: Hard bound on one measurement, whatever the caller asks.
MAX_DURATION_S: Final = 120.0
#: Default request budget for the whole run (split over threads); far above what 2 cores reach.
DEFAULT_MAX_REQUESTS: Final = 5_000_000
#: After an error, wait this long before the next attempt so a dead server is not hammered.
ERROR_BACKOFF_S: Final = 0.005
#: Workers that have not reported this long after the window closed are killed.
REPORT_GRACE_S: Final = 30.0
#: Socket timeout: a stalled proxy turns into counted errors instead of a hung benchmark.
SOCKET_TIMEOUT_S: Final = 10.0
#: SO_LINGER {on, 0 s}: close with RST, so hs runs leave no client-side TIME_WAIT behind and a
#: long run cannot exhaust the ephemeral port range.
_LINGER_RESET: Final = struct.pack("ii", 1, 0)
_RECV: Final = 65536


@dataclass(slots=True)
class _Tally:
    done: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    error_sample: str = ""


class _ResponseError(Exception):
    """The server answered something other than a complete 200."""


def _read_response(sock: socket.socket, buf: bytearray) -> int:
    """Read one response (Content-Length framed) from ``sock``; leaves any surplus in ``buf``."""
    while (end := buf.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(_RECV)
        if not chunk:
            raise _ResponseError("connection closed before the response head")
        buf += chunk
    head = bytes(buf[:end]).lower()
    status = int(head[9:12])
    length = 0
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop >= 0 else None])
    total = end + 4 + length
    while len(buf) < total:
        chunk = sock.recv(_RECV)
        if not chunk:
            raise _ResponseError("connection closed inside the response body")
        buf += chunk
    del buf[:total]
    return status


@dataclass(frozen=True, slots=True)
class _Plan:
    host: str
    port: int
    mode: str
    server_name: str
    start_at: float
    end_at: float
    budget: int
    tls: bool
    #: Seconds between the requests of one thread; 0: no pacing.
    interval: float = 0.0


def _connect(plan: _Plan, ctx: ssl.SSLContext | None, *, reset_on_close: bool) -> socket.socket:
    raw = socket.create_connection((plan.host, plan.port), timeout=SOCKET_TIMEOUT_S)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if reset_on_close:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    if ctx is None:
        return raw
    try:
        return ctx.wrap_socket(raw, server_hostname=plan.server_name)
    except BaseException:
        raw.close()
        raise


def _note_error(tally: _Tally, exc: BaseException) -> None:
    tally.errors += 1
    if not tally.error_sample:
        tally.error_sample = f"{type(exc).__name__}: {exc}"[:200]
    time.sleep(ERROR_BACKOFF_S)


def _drive(plan: _Plan, ctx: ssl.SSLContext | None, tally: _Tally, phase: float = 0.0) -> None:
    """One client thread: wait for the window, then request until it closes.

    ``phase`` (a fraction of ``plan.interval``) offsets this thread's schedule from the others.
    """
    host = plan.server_name.encode()
    keep = b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % host
    close = b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host
    clock = time.monotonic
    while (wait := plan.start_at - clock()) > 0:
        time.sleep(min(wait, 0.05))
    sock: socket.socket | None = None
    buf = bytearray()
    slot = plan.start_at + phase * plan.interval
    try:
        while tally.done < plan.budget:
            if plan.interval:
                if (wait := slot - clock()) > 0:
                    time.sleep(wait)
                slot += plan.interval
            began = clock()
            if began >= plan.end_at:
                break
            try:
                if plan.mode == "hs":
                    with _connect(plan, ctx, reset_on_close=True) as one:
                        one.sendall(close)
                        status = _read_response(one, bytearray())
                else:
                    if sock is None:
                        sock = _connect(plan, ctx, reset_on_close=False)
                        buf = bytearray()
                    sock.sendall(keep)
                    status = _read_response(sock, buf)
            except (OSError, ValueError, _ResponseError) as exc:
                if sock is not None:
                    sock.close()
                    sock = None
                _note_error(tally, exc)
                continue
            finished = clock()
            if finished > plan.end_at:
                break  # completed outside the window: the proxy's CPU sample has been taken
            if status != 200:
                _note_error(tally, _ResponseError(f"status {status}"))
                continue
            tally.done += 1
            tally.latencies.append(finished - began)
    finally:
        if sock is not None:
            sock.close()


def _client_context(cacert: str, cert: str | None, key: str | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cacert)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def _worker(
    plan: _Plan,
    threads: int,
    tls_files: tuple[str, str | None, str | None],
    results: mp.Queue[tuple[int, int, list[float], str]],
    phases: tuple[float, ...] = (),
) -> None:
    ctx = _client_context(*tls_files) if plan.tls else None
    tallies = [_Tally() for _ in range(threads)]
    pool = [
        threading.Thread(
            target=_drive, args=(plan, ctx, tally, phases[i] if phases else 0.0), daemon=True
        )
        for i, tally in enumerate(tallies)
    ]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    results.put(
        (
            sum(t.done for t in tallies),
            sum(t.errors for t in tallies),
            [x for t in tallies for x in t.latencies],
            next((t.error_sample for t in tallies if t.error_sample), ""),
        )
    )


def _percentile_ms(ordered: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of sorted seconds, in milliseconds."""
    if not ordered:
        return None
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered)) - 1))
    return round(ordered[rank] * 1000, 3)


def run(
    *,
    host: str,
    port: int,
    mode: str,
    conns: int,
    procs: int,
    duration: float,
    start_at: float | None,
    cacert: str | None,
    cert: str | None,
    key: str | None,
    server_name: str = "localhost",
    max_requests: int = DEFAULT_MAX_REQUESTS,
    rate: float = 0.0,
) -> dict[str, object]:
    """Run one bounded measurement and return its summary (see the module docstring)."""
    duration = min(max(duration, 0.1), MAX_DURATION_S)
    procs = max(1, min(procs, conns))
    begin = start_at if start_at is not None else time.monotonic() + 0.5
    plan = _Plan(
        host=host,
        port=port,
        mode=mode,
        server_name=server_name,
        start_at=begin,
        end_at=begin + duration,
        budget=max(1, max_requests // conns),
        tls=cacert is not None,
        interval=conns / rate if rate > 0 else 0.0,
    )
    shares = [conns // procs + (1 if i < conns % procs else 0) for i in range(procs)]
    results: mp.Queue[tuple[int, int, list[float], str]] = mp.Queue()
    # Each process's threads take the next phases, so the schedules of all threads interleave.
    workers = [
        mp.Process(
            target=_worker,
            args=(
                plan,
                share,
                (cacert, cert, key),
                results,
                tuple((sum(shares[:i]) + t) / conns for t in range(share)),
            ),
            daemon=True,
        )
        for i, share in enumerate(shares)
    ]
    for worker in workers:
        worker.start()
    late = max(0.0, time.monotonic() - begin)
    collected: list[tuple[int, int, list[float], str]] = []
    try:
        for _ in workers:
            timeout = max(1.0, plan.end_at + REPORT_GRACE_S - time.monotonic())
            collected.append(results.get(timeout=timeout))
    except queue.Empty:
        pass
    finally:
        for worker in workers:
            worker.join(timeout=2)
            if worker.is_alive():
                worker.kill()
                worker.join(timeout=2)
    latencies = sorted(x for c in collected for x in c[2])
    done = sum(c[0] for c in collected)
    return {
        "mode": mode,
        "conns": conns,
        "procs": procs,
        "duration": duration,
        "requests": done,
        "errors": sum(c[1] for c in collected) + (len(workers) - len(collected)),
        "rate": round(done / duration, 1),
        "p50_ms": _percentile_ms(latencies, 50),
        "p99_ms": _percentile_ms(latencies, 99),
        "max_ms": round(latencies[-1] * 1000, 3) if latencies else None,
        "late_s": round(late, 3),
        "error_sample": next((c[3] for c in collected if c[3]), ""),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="mTLS load generator (see module docstring)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["ka", "hs"], default="ka")
    parser.add_argument("--conns", type=int, default=16, help="concurrent connections in total")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0, help=f"max {MAX_DURATION_S}")
    parser.add_argument("--start-at", type=float, help="CLOCK_MONOTONIC start of the window")
    parser.add_argument("--cacert", help="CA that issued the server certificate")
    parser.add_argument("--cert", help="client certificate (PEM)")
    parser.add_argument("--key", help="client key (PEM)")
    parser.add_argument("--plain", action="store_true", help="plain HTTP (to measure a backend)")
    parser.add_argument("--server-name", default="localhost")
    parser.add_argument("--max-requests", type=int, default=DEFAULT_MAX_REQUESTS)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="total requests per second (0: unpaced)"
    )
    args = parser.parse_args()
    if not args.plain and not args.cacert:
        parser.error("--cacert is required unless --plain")
    summary = run(
        host=args.host,
        port=args.port,
        mode=args.mode,
        conns=args.conns,
        procs=args.procs,
        duration=args.duration,
        start_at=args.start_at,
        cacert=None if args.plain else args.cacert,
        cert=args.cert,
        key=args.key,
        server_name=args.server_name,
        max_requests=args.max_requests,
        rate=args.rate,
    )
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
