"""Where one request's time goes: the emulator under cProfile or callgrind, a fixed request count.

``run.py`` measures CPU seconds, which move with whatever else the machine does. This script
answers the two questions a change to the request path raises, with figures that do not:

* ``--tool callgrind``: the emulator runs under ``valgrind --tool=callgrind``; after a warm-up
  the counters are zeroed, ``--requests`` keep-alive requests (or new connections with
  ``--load hs``) are sent, and the instructions executed are dumped. Instructions per request
  are repeatable to a fraction of a percent on a busy machine, so two commits compare in one
  line each.
* ``--tool cprofile``: the emulator runs with cProfile switched on (SIGUSR1) after the warm-up
  and off and dumped (SIGUSR2) after the requests; the top functions by own time and the call
  counts per request are printed. Call counts are exact; times carry the profiler's overhead.

Usage::

    python bench/profile_requests.py --tool callgrind --mode strict --requests 400
    python bench/profile_requests.py --tool cprofile --mode passthrough --requests 3000
    python bench/profile_requests.py --source /path/to/other/checkout ...   # another version

Everything listens on 127.0.0.1; the processes it starts are stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

HERE: Final = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench import run  # noqa: E402 - the benchmark's own helpers (PKI, backend, emulator start)
from bench.load import _read_response  # noqa: E402 - the load client's response reader
from emulator.arm.demo_template import PASSTHROUGH_LISTENER, STRICT_LISTENER  # noqa: E402

WARMUP_REQUESTS: Final = 50
#: Python under valgrind starts tens of times slower than on its own.
START_TIMEOUT_S: Final = 600.0
TIMEOUT_S: Final = 120.0
#: The wrapper that runs the emulator's CLI with cProfile switched by signals.
_PROFILED: Final = """
import cProfile, signal, sys
profile = cProfile.Profile()
out = sys.argv[1]
def _on(signum, frame):
    profile.enable()
def _off(signum, frame):
    profile.disable()
    profile.dump_stats(out)
signal.signal(signal.SIGUSR1, _on)
signal.signal(signal.SIGUSR2, _off)
sys.argv = ["appgw-emulator", *sys.argv[2:]]
from emulator.cli.main import main
sys.exit(main())
"""


def _client_context(pki: run.Pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.server_ca))
    ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    ctx.check_hostname = False
    return ctx


def _requests(port: int, pki: run.Pki, count: int, *, load: str) -> None:
    """``count`` GETs: on one keep-alive connection (ka), or one connection each (hs)."""
    ctx = _client_context(pki)
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
    close_request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    sock: ssl.SSLSocket | None = None
    buf = bytearray()
    for _ in range(count):
        if sock is None:
            raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = ctx.wrap_socket(raw, server_hostname="localhost")
        sock.sendall(request if load == "ka" else close_request)
        status = _read_response(sock, buf)
        if status != 200:
            raise SystemExit(f"the emulator answered {status}")
        if load == "hs":
            sock.close()
            sock, buf = None, bytearray()
    if sock is not None:
        sock.close()


def _load(port: int, pki: run.Pki, count: int, *, load: str, connections: int) -> None:
    """``count`` requests spread over ``connections`` client threads, each as :func:`_requests`
    (several connections in flight, as in ``run.py``'s load, so the event loop's per-wake-up
    work is shared the way it is under load)."""
    if connections == 1:
        _requests(port, pki, count, load=load)
        return
    import concurrent.futures

    share, extra = divmod(count, connections)
    with concurrent.futures.ThreadPoolExecutor(connections) as pool:
        futures = [
            pool.submit(_requests, port, pki, share + (1 if i < extra else 0), load=load)
            for i in range(connections)
        ]
        for future in futures:
            future.result()


def _emulator_argv(rundir: Path, pki: run.Pki, backend_port: int, prefix: list[str]) -> list[str]:
    template = run.write_emulator_template(
        rundir / "emulator.json", backend_port, all_headers=False
    )
    return [
        *prefix,
        "--log-level", "warning", "run",
        "--template-file", str(template),
        "--parameters", f"@{pki.parameters}",
        "--listen", f"{run.STRICT_TEMPLATE_PORT}=0",
        "--listen", f"{run.PASSTHROUGH_TEMPLATE_PORT}=0",
    ]  # fmt: skip


def _floor_argv(pki: run.Pki, backend_port: int, prefix: list[str]) -> list[str]:
    return [
        *prefix, str(HERE / "floor_proxy.py"),
        "--port", "0", "--backend-port", str(backend_port),
        "--cert-chain", str(pki.server_cert), "--key", str(pki.server_key),
        "--client-ca", str(pki.client_ca),
    ]  # fmt: skip


def _start(
    argv: list[str], source: Path, rundir: Path, *, floor: bool
) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    err = (rundir / "proxy.stderr").open("wb")
    env = {**os.environ, "PYTHONPATH": str(source)}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, cwd=source, env=env)
    log = rundir / "proxy.log"
    if floor:
        (match,) = run._wait_for_lines(
            proc, run._FLOOR_READY, 1, "floor proxy", log, START_TIMEOUT_S
        )
        port = int(match.group(1))
        return proc, {STRICT_LISTENER: port, PASSTHROUGH_LISTENER: port}
    matches = run._wait_for_lines(proc, run._READY, 2, "emulator", log, START_TIMEOUT_S)
    return proc, {m.group(1): int(m.group(2)) for m in matches}


def _callgrind_control(option: str, pid: int) -> None:
    """Zero (-z) or dump (-d) the counters of the callgrind run ``pid``."""
    subprocess.run(["callgrind_control", option, str(pid)], check=True, capture_output=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tool", choices=["callgrind", "cprofile"], default="callgrind")
    parser.add_argument(
        "--target", choices=["emulator", "floor"], default="emulator", help="proxy measured"
    )
    parser.add_argument("--mode", choices=["strict", "passthrough"], default="strict")
    parser.add_argument("--load", choices=["ka", "hs"], default="ka")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--connections", type=int, default=1, help="client connections at once")
    parser.add_argument("--key-type", choices=["ec", "rsa"], default="ec")
    parser.add_argument("--source", type=Path, default=HERE.parent, help="emulator checkout")
    parser.add_argument("--top", type=int, default=30, help="cprofile: functions shown")
    parser.add_argument("--keep", type=Path, help="cprofile/callgrind: also save the raw output")
    args = parser.parse_args(argv)
    if args.tool == "callgrind" and shutil.which("valgrind") is None:
        print("valgrind not found; install it with: apt-get install -y valgrind", file=sys.stderr)
        return 2
    listener = STRICT_LISTENER if args.mode == "strict" else PASSTHROUGH_LISTENER
    with tempfile.TemporaryDirectory(prefix="appgw-profile-") as tmp:
        rundir = Path(tmp)
        (rundir / "pki").mkdir()
        pki = run.make_pki(rundir / "pki", args.key_type)
        procs = run.Processes()
        proc: subprocess.Popen[bytes] | None = None
        try:
            _, backend_port = run.start_backend(procs, rundir, pin=False)
            out = rundir / "profile.out"
            if args.tool == "callgrind":
                prefix = [
                    "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                    sys.executable, *(["-m", "emulator"] if args.target == "emulator" else []),
                ]  # fmt: skip
            else:
                wrapper = rundir / "profiled.py"
                wrapper.write_text(_PROFILED)
                prefix = [sys.executable, str(wrapper), str(out)]
                if args.target == "floor":
                    raise SystemExit("--tool cprofile measures the emulator only")
            floor = args.target == "floor"
            argv = (
                _floor_argv(pki, backend_port, prefix)
                if floor
                else _emulator_argv(rundir, pki, backend_port, prefix)
            )
            proc, ports = _start(argv, args.source, rundir, floor=floor)
            port = ports[listener]
            _load(port, pki, WARMUP_REQUESTS, load=args.load, connections=args.connections)
            if args.tool == "callgrind":
                subprocess.run(
                    ["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True
                )
            else:
                proc.send_signal(signal.SIGUSR1)
                time.sleep(0.2)
            _load(port, pki, args.requests, load=args.load, connections=args.connections)
            if args.tool == "callgrind":
                subprocess.run(
                    ["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True
                )
                dumps = sorted(rundir.glob("profile.out.*"))
                total = 0
                for line in dumps[-1].read_text().splitlines():
                    if line.startswith(("summary:", "totals:")):
                        total = int(line.split()[1])
                print(
                    f"{args.target} {args.mode} {args.load} {args.key_type}: "
                    f"{total / args.requests:,.0f} "
                    f"instructions per request ({args.requests} requests, {args.connections} "
                    f"connections, {args.source})"
                )
                if args.keep:
                    shutil.copy(dumps[-1], args.keep)
            else:
                proc.send_signal(signal.SIGUSR2)
                deadline = time.monotonic() + 30
                while not out.exists() and time.monotonic() < deadline:
                    time.sleep(0.1)
                if not out.exists():
                    print((rundir / "emulator.stderr").read_text(), file=sys.stderr)
                    raise SystemExit("the emulator wrote no profile")
                time.sleep(0.5)
                stats = pstats.Stats(str(out))
                if args.keep:
                    shutil.copy(out, args.keep)
                calls = sum(v[1] for v in stats.stats.values())  # type: ignore[attr-defined]
                print(f"{calls / args.requests:,.0f} Python calls per request")
                stats.sort_stats("tottime").print_stats(args.top)
        finally:
            if proc is not None:
                _stop(proc)  # also when printing failed (a closed pipe) or a check did
            procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
