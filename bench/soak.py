"""Soak test: does the emulator leak file descriptors or memory under a long, mixed load?

Starts ``appgw-emulator up`` (gateway and stub backend in one process, demo PKI in a temporary
directory, every port chosen by the OS on 127.0.0.1), drives it with a mix of well-behaved and
hostile clients for ``--duration`` seconds, and samples the process's open file descriptors
(``/proc/PID/fd``) and resident memory (``VmRSS``) every ``--interval`` seconds::

    python bench/soak.py                       # 10 minutes, a sample every 10 s
    python bench/soak.py --duration 180 --interval 5 --json soak.json

At the end the load stops, the emulator gets a few seconds to close what the clients left,
and one more sample is taken; then SIGTERM stops it (which must drain and exit 0). The verdict
compares that last sample with the baseline taken before the load:

* descriptors: back to the baseline, give or take what the backend connection pool may keep
  (idle keep-alive connections, two descriptors each in this process: gateway and stub side);
* memory: growth over the second half of the run (after allocators and caches warmed up),
  reported in MiB and MiB per minute; the run fails when it exceeds ``--max-rss-growth-mib``.

Linux only (/proc). Everything runs on loopback; the emulator process is stopped by its PID on
every way out. Exit code 0: flat; 1: a leak by the thresholds above; 2: could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

HERE: Final = Path(__file__).resolve().parent
REPO: Final = HERE.parent

#: The longest run allowed, whatever is asked: a soak is bounded.
MAX_DURATION_S: Final = 3600.0
DEFAULT_DURATION_S: Final = 600.0
DEFAULT_INTERVAL_S: Final = 10.0
DEFAULT_WORKERS: Final = 4
#: After the load stops: time for the emulator to close connections the clients left behind.
SETTLE_S: Final = 3.0
#: Descriptors the backend pool may hold after the load, per worker (one idle keep-alive
#: connection per concurrent client, two descriptors in this process for each).
POOL_FDS_PER_WORKER: Final = 2
#: A few descriptors of slack (the dashboard is off; logging and the event loop are stable).
FD_SLACK: Final = 4
DEFAULT_MAX_RSS_GROWTH_MIB: Final = 20.0
READY_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 15.0
CLIENT_TIMEOUT_S: Final = 10.0
#: SO_LINGER {on, 0 s}: close with RST, the way a crashed client leaves.
_LINGER_RESET: Final = struct.pack("ii", 1, 0)

_READY_LISTENER: Final = re.compile(r"^ready: (\S+) \(([^)]+)\) https://localhost:(\d+)/")
_READY_STUB: Final = re.compile(r"^ready: stub backend http://127\.0\.0\.1:(\d+)/$")


@dataclass
class Sample:
    elapsed_s: float
    fds: int
    rss_mib: float
    requests: int
    errors: int


@dataclass
class Report:
    duration_s: float
    workers: int
    baseline_fds: int
    baseline_rss_mib: float
    final_fds: int
    final_rss_mib: float
    fd_allowance: int
    rss_growth_second_half_mib: float
    rss_slope_mib_per_min: float
    requests: int
    errors: int
    scenario_counts: dict[str, int]
    exit_code: int
    samples: list[Sample] = field(default_factory=list)
    verdict: str = ""


# -- the emulator process ----------------------------------------------------------------------


class Emulator:
    """``appgw-emulator up`` in a child process, with its ports read from its ready lines."""

    def __init__(self, directory: Path) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.certs = directory / "certs"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "emulator",
                "--log-level",
                "warning",
                "up",
                "--certs",
                str(self.certs),
                "--strict-port",
                "0",
                "--passthrough-port",
                "0",
                "--backend-port",
                "0",
                "--no-dashboard",
            ],
            cwd=directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.ports: dict[str, int] = {}
        self.modes: dict[str, str] = {}
        self.stderr: list[str] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line.rstrip("\n"))

    def wait_ready(self) -> None:
        assert self.process.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        stub_seen = False
        for line in self.process.stdout:
            line = line.rstrip("\n")
            if (match := _READY_LISTENER.match(line)) is not None:
                self.ports[match[1]] = int(match[3])
                self.modes[match[1]] = match[2]
            stub_seen = stub_seen or _READY_STUB.match(line) is not None
            if stub_seen and len(self.ports) == 2:
                break
            if time.monotonic() > deadline:
                break
        if len(self.ports) != 2:
            raise RuntimeError("the emulator did not get ready:\n" + "\n".join(self.stderr))
        # Keep reading stdout so the child never blocks on a full pipe.
        threading.Thread(target=self._discard_stdout, daemon=True).start()

    def _discard_stdout(self) -> None:
        assert self.process.stdout is not None
        for _line in self.process.stdout:
            pass

    def port(self, mode: str) -> int:
        return next(self.ports[name] for name, m in self.modes.items() if m.lower() == mode)

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        return int(match[1]) / 1024 if match else 0.0

    def stop(self) -> int:
        """SIGTERM (the emulator drains, then exits); SIGKILL if it does not stop in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return -9


# -- the clients ------------------------------------------------------------------------------


class Load:
    """Worker threads running a mix of scenarios until ``stop`` is set; counts outcomes."""

    def __init__(self, emulator: Emulator, workers: int, seed: int) -> None:
        certs = emulator.certs
        self.strict = emulator.port("strict")
        self.passthrough = emulator.port("passthrough")
        self.anonymous = self._context(certs, None)
        self.valid = self._context(certs, "client")
        self.expired = self._context(certs, "client-expired")
        self.workers = workers
        self.seed = seed
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.requests = 0
        self.errors = 0
        self.error_sample: list[str] = []
        self.counts: dict[str, int] = {}
        self.threads: list[threading.Thread] = []

    @staticmethod
    def _context(certs: Path, name: str | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(certs / "server-root-ca.pem"))
        if name is not None:
            ctx.load_cert_chain(certs / f"{name}.pem", certs / f"{name}.key")
        return ctx

    def start(self) -> None:
        for index in range(self.workers):
            thread = threading.Thread(target=self._worker, args=(index,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=CLIENT_TIMEOUT_S * 2)

    def _worker(self, index: int) -> None:
        rng = random.Random(self.seed + index)
        scenarios = [
            self.keep_alive_strict,
            self.new_connection_passthrough,
            self.strict_without_certificate,
            self.strict_expired_certificate,
            self.upload,
            self.pipelined,
            self.garbage_handshake,
            self.plain_http,
            self.malformed_request,
            self.abandoned_request,
            self.reset_mid_response,
        ]
        while not self.stop.is_set():
            scenario = rng.choice(scenarios)
            try:
                done = scenario(rng)
            except (OSError, http.client.HTTPException, AssertionError) as exc:
                with self.lock:
                    self.errors += 1
                    if len(self.error_sample) < 10:
                        self.error_sample.append(f"{scenario.__name__}: {exc!r}")
                continue
            with self.lock:
                self.requests += done
                self.counts[scenario.__name__] = self.counts.get(scenario.__name__, 0) + 1

    def _https(self, port: int, ctx: ssl.SSLContext) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("localhost", port, context=ctx, timeout=CLIENT_TIMEOUT_S)

    def _tls_socket(self, port: int, ctx: ssl.SSLContext) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT_S)
        return ctx.wrap_socket(raw, server_hostname="localhost")

    # Each scenario returns how many HTTP answers it received.

    def keep_alive_strict(self, rng: random.Random) -> int:
        conn = self._https(self.strict, self.valid)
        try:
            for i in range(5):
                conn.request("GET", f"/ka/{i}")
                response = conn.getresponse()
                response.read()
                assert response.status == 200, response.status
        finally:
            conn.close()
        return 5

    def _one_request(
        self,
        port: int,
        ctx: ssl.SSLContext,
        method: str,
        path: str,
        expected: int,
        body: bytes | None = None,
    ) -> int:
        """One request on a new connection; checks the status, returns 1 (one answer)."""
        conn = self._https(port, ctx)
        try:
            conn.request(method, path, body=body)
            response = conn.getresponse()
            response.read()
            assert response.status == expected, response.status
        finally:
            conn.close()
        return 1

    def new_connection_passthrough(self, rng: random.Random) -> int:
        path = f"/bytes/{rng.randrange(1, 200_000)}"
        return self._one_request(self.passthrough, self.anonymous, "GET", path, 200)

    def strict_without_certificate(self, rng: random.Random) -> int:
        return self._one_request(self.strict, self.anonymous, "GET", "/", 400)

    def strict_expired_certificate(self, rng: random.Random) -> int:
        return self._one_request(self.strict, self.expired, "GET", "/", 400)

    def upload(self, rng: random.Random) -> int:
        body = os.urandom(rng.randrange(1, 256 * 1024))
        return self._one_request(self.passthrough, self.valid, "POST", "/upload", 200, body)

    def pipelined(self, rng: random.Random) -> int:
        requests = b"".join(
            b"GET /p/%d HTTP/1.1\r\nHost: localhost\r\n%s\r\n"
            % (i, b"Connection: close\r\n" * (i == 2))
            for i in range(3)
        )
        with self._tls_socket(self.passthrough, self.anonymous) as tls:
            tls.sendall(requests)
            data = _read_to_eof(tls)
        assert data.count(b"HTTP/1.1 200 ") == 3, data[:100]
        return 3

    def garbage_handshake(self, rng: random.Random) -> int:
        with socket.create_connection(("127.0.0.1", self.strict), timeout=CLIENT_TIMEOUT_S) as s:
            s.sendall(rng.randbytes(rng.randrange(1, 4096)))
            s.shutdown(socket.SHUT_WR)
            _read_to_eof(s)
        return 0

    def plain_http(self, rng: random.Random) -> int:
        with socket.create_connection(("127.0.0.1", self.strict), timeout=CLIENT_TIMEOUT_S) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            data = _read_to_eof(s)
        assert data.startswith(b"HTTP/1.1 400 "), data[:60]
        return 1

    def malformed_request(self, rng: random.Random) -> int:
        with self._tls_socket(self.passthrough, self.anonymous) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-A: 1\r\n folded\r\n\r\n")
            data = _read_to_eof(tls)
        assert data.startswith(b"HTTP/1.1 400 "), data[:60]
        return 1

    def abandoned_request(self, rng: random.Random) -> int:
        with self._tls_socket(self.passthrough, self.anonymous) as tls:
            tls.sendall(
                b"POST /never HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n"
            )
            tls.sendall(b"x" * rng.randrange(1, 50_000))
        return 0

    def reset_mid_response(self, rng: random.Random) -> int:
        tls = self._tls_socket(self.passthrough, self.anonymous)
        try:
            tls.sendall(b"GET /bytes/2000000 HTTP/1.1\r\nHost: localhost\r\n\r\n")
            tls.recv(rng.randrange(1, 65536))
            tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        finally:
            tls.close()
        return 1


def _read_to_eof(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except (ssl.SSLError, ConnectionResetError):
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


# -- the run ----------------------------------------------------------------------------------


def _slope_mib_per_min(samples: list[Sample]) -> float:
    """Least-squares slope of RSS over time, MiB per minute."""
    if len(samples) < 2:
        return 0.0
    xs = [s.elapsed_s / 60 for s in samples]
    ys = [s.rss_mib for s in samples]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    denominator = sum((x - mean_x) ** 2 for x in xs)
    if denominator == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / denominator


def soak(
    *,
    duration_s: float,
    interval_s: float,
    workers: int,
    seed: int,
    max_rss_growth_mib: float,
    say: object = print,
) -> Report:
    """Run one soak and return its report (the emulator is stopped before returning)."""
    assert callable(say)
    duration_s = min(duration_s, MAX_DURATION_S)
    with tempfile.TemporaryDirectory(prefix="appgw-soak-") as tmp:
        emulator = Emulator(Path(tmp))
        try:
            emulator.wait_ready()
            time.sleep(0.5)
            baseline_fds, baseline_rss = emulator.fds(), emulator.rss_mib()
            say(f"emulator pid {emulator.process.pid}, ports {emulator.ports}")
            say(f"baseline: {baseline_fds} fds, {baseline_rss:.1f} MiB RSS")
            say(f"{'elapsed':>8} {'fds':>5} {'rss MiB':>8} {'answers':>8} {'errors':>7}")
            load = Load(emulator, workers, seed)
            started = time.monotonic()
            load.start()
            samples: list[Sample] = []
            while (elapsed := time.monotonic() - started) < duration_s:
                time.sleep(min(interval_s, max(0.0, duration_s - elapsed)))
                sample = Sample(
                    round(time.monotonic() - started, 1),
                    emulator.fds(),
                    round(emulator.rss_mib(), 2),
                    load.requests,
                    load.errors,
                )
                samples.append(sample)
                say(
                    f"{sample.elapsed_s:>8.1f} {sample.fds:>5} {sample.rss_mib:>8.1f} "
                    f"{sample.requests:>8} {sample.errors:>7}"
                )
            load.join()
            time.sleep(SETTLE_S)
            final_fds, final_rss = emulator.fds(), emulator.rss_mib()
            say(f"after the load and {SETTLE_S:g} s: {final_fds} fds, {final_rss:.1f} MiB RSS")
        finally:
            exit_code = emulator.stop()
    second_half = [s for s in samples if s.elapsed_s >= duration_s / 2] or samples
    growth = (second_half[-1].rss_mib - second_half[0].rss_mib) if second_half else 0.0
    allowance = workers * POOL_FDS_PER_WORKER + FD_SLACK
    report = Report(
        duration_s=duration_s,
        workers=workers,
        baseline_fds=baseline_fds,
        baseline_rss_mib=round(baseline_rss, 2),
        final_fds=final_fds,
        final_rss_mib=round(final_rss, 2),
        fd_allowance=allowance,
        rss_growth_second_half_mib=round(growth, 2),
        rss_slope_mib_per_min=round(_slope_mib_per_min(second_half), 3),
        requests=load.requests,
        errors=load.errors,
        scenario_counts=dict(sorted(load.counts.items())),
        exit_code=exit_code,
        samples=samples,
    )
    problems = []
    if final_fds > baseline_fds + allowance:
        problems.append(f"fds {final_fds} > baseline {baseline_fds} + {allowance}")
    if growth > max_rss_growth_mib:
        problems.append(f"RSS grew {growth:.1f} MiB over the second half")
    if exit_code != 0:
        problems.append(f"the emulator exited {exit_code} on SIGTERM")
    if load.errors:
        problems.append(f"{load.errors} client errors, e.g. {load.error_sample[:3]}")
    report.verdict = "; ".join(problems) if problems else "flat"
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION_S, help="seconds")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S, help="seconds")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-rss-growth-mib", type=float, default=DEFAULT_MAX_RSS_GROWTH_MIB)
    parser.add_argument("--json", metavar="PATH|-", help="write the report as JSON (- stdout)")
    args = parser.parse_args(argv)
    if not Path("/proc/self/fd").is_dir():
        print("soak: needs Linux /proc", file=sys.stderr)
        return 2
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json == "-" else print
    try:
        report = soak(
            duration_s=args.duration,
            interval_s=args.interval,
            workers=args.workers,
            seed=args.seed,
            max_rss_growth_mib=args.max_rss_growth_mib,
            say=say,
        )
    except RuntimeError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    say(
        f"verdict: {report.verdict} (fds {report.baseline_fds} -> {report.final_fds}, "
        f"allowance {report.fd_allowance}; RSS {report.baseline_rss_mib} -> "
        f"{report.final_rss_mib} MiB, second half {report.rss_growth_second_half_mib:+} MiB, "
        f"slope {report.rss_slope_mib_per_min:+} MiB/min; {report.requests} answers, "
        f"{report.errors} errors)"
    )
    if args.json:
        text = json.dumps(asdict(report), indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 0 if report.verdict == "flat" else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
