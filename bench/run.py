"""The project's benchmark: the emulator and nginx terminating the same mTLS, side by side.

One command builds everything, measures, prints a table and writes JSON::

    python bench/run.py [--duration 5] [--key-type ec|rsa|both] [--modes strict,passthrough]
                        [--out bench/results/latest.json]

For each key type a fresh demo PKI is generated (``emulator.pki.demo.write_demo_pki``); nginx and
the emulator then serve a Strict and a Passthrough listener with that same server certificate,
client CA and backend (``bench/backend.py``), and the same client (``bench/load.py``) drives each
of them in two load modes: ``ka`` (keep-alive requests) and ``hs`` (a full mTLS handshake per
request).

Why CPU per request is the headline: on a 2-core machine the proxy gets CPU 0 and the client plus
backend share CPU 1, so a fast proxy (nginx) is limited by the client, not by itself, and its
request rate says little. The proxy's own CPU time over the measurement window (utime + stime of
its whole process tree, from /proc) divided by the requests served is a per-request cost that
does not depend on who the bottleneck was. Rates compare only when the proxy's CPU column is
near 100 %.

``--targets nginx,emulator,floor`` adds ``bench/floor_proxy.py``: a proxy on the emulator's
libraries (trio + pyOpenSSL over memory BIOs) that does only the transport work, the floor of the
stack; its rows are compared with both (floor / nginx, emulator / floor).

Everything listens on 127.0.0.1; every process started here is stopped by PID on the way out
(normal end, error, Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import atexit
import base64
import compileall
import contextlib
import datetime
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

HERE: Final = Path(__file__).resolve().parent
REPO: Final = HERE.parent
sys.path.insert(0, str(REPO))  # `python bench/run.py` from a checkout without `pip install -e .`

from emulator.arm.demo_template import (  # noqa: E402 - needs the path above
    CERT_HEADERS,
    PASSTHROUGH_LISTENER,
    STRICT_LISTENER,
    demo_template,
)
from emulator.pki.demo import (  # noqa: E402
    CLIENT_CERT,
    CLIENT_KEY,
    SERVER_ROOT_CA,
    TRUSTED_CLIENT_CA_CHAIN,
    write_demo_pki,
)

#: CPU 0 for the proxy under test, CPU 1 for the client and the backend (see module docstring).
PROXY_CPU: Final = "0"
LOAD_CPU: Final = "1"
#: ``--workers`` runs: the workers may use both CPUs.
ALL_CPUS: Final = "0,1"
#: Template frontend ports of the emulator's listeners; the local ports are picked free (0).
STRICT_TEMPLATE_PORT: Final = 8443
PASSTHROUGH_TEMPLATE_PORT: Final = 9443
#: One measurement never exceeds this, whatever --duration says (load.py enforces it too).
MAX_DURATION_S: Final = 120.0
#: Upper bound of --repeat, so a typo cannot start an hours-long run.
MAX_REPEAT: Final = 9
#: Servers must print their ready line within this long, or the run stops.
STARTUP_TIMEOUT_S: Final = 30.0
#: Lead time between starting load.py and its measurement window: its interpreter, ssl and
#: multiprocessing imports and worker forks take ~0.3 s on the reference machine.
WINDOW_LEAD_S: Final = 1.5
#: Unmeasured keep-alive load before a target's first measurement (imports, caches, pools).
WARMUP_S: Final = 1.0
#: Pause between measurements so closing connections of one run do not bleed into the next.
SETTLE_S: Final = 0.5
#: SIGTERM first; processes still alive after this get SIGKILL.
STOP_GRACE_S: Final = 5.0
#: Default concurrency: enough connections to keep one proxy core busy with a Python client.
HS_CONNS: Final = 8
KA_CONNS: Final = 16
LOAD_PROCS: Final = 2
NGINX_MISSING_HINT: Final = "nginx not found; install it with: apt-get install -y nginx-light"
#: Proxies ``--targets`` accepts; ``floor`` (bench/floor_proxy.py) is opt-in.
TARGETS: Final = ("nginx", "emulator", "floor")
#: Variant of the floor proxy's rows: it treats Strict and Passthrough alike (no verdicts).
FLOOR_VARIANT: Final = "floor: transport only"

CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


# -- processes ------------------------------------------------------------------------------------


class Processes:
    """Every process this run starts, so each one is stopped by its own PID, whatever happens."""

    def __init__(self) -> None:
        self._running: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}

    def start(self, name: str, argv: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
        proc: subprocess.Popen[bytes] = subprocess.Popen(list(argv), **popen)
        self._running[proc.pid] = (name, proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        self._running.pop(proc.pid, None)
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_GRACE_S)

    def stop_all(self) -> None:
        for _name, proc in list(self._running.values()):
            self.stop(proc)


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _pinned(cpu: str, argv: Sequence[str], *, pin: bool) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if pin else list(argv)


def _wait_for_lines(
    proc: subprocess.Popen[bytes],
    pattern: re.Pattern[str],
    count: int,
    what: str,
    log: Path,
    timeout_s: float = STARTUP_TIMEOUT_S,
) -> list[re.Match[str]]:
    """Read ``proc``'s stdout until ``count`` lines match ``pattern`` (within ``timeout_s``)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    found: list[re.Match[str]] = []
    os.set_blocking(proc.stdout.fileno(), False)
    pending = b""
    while len(found) < count:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"{what} did not start; its output is in {log}\n{_tail(log)}")
        chunk = proc.stdout.read() or b""
        if not chunk:
            time.sleep(0.05)
            continue
        pending += chunk
        *lines, pending_tail = pending.split(b"\n")
        pending = pending_tail
        for line in lines:
            text = line.decode(errors="replace")
            with log.open("a", encoding="utf-8") as out:
                out.write(text + "\n")
            if match := pattern.search(text):
                found.append(match)
    return found


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- /proc ----------------------------------------------------------------------------------------


def _process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (nginx: master + worker)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(parents.get(pid, []))
    return tree


def _cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of ``pids`` (all threads of each), in seconds."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # stat fields 14 and 15
    return ticks / CLK_TCK


def _cpu_busy_ticks() -> dict[int, int]:
    """Per-CPU busy ticks from /proc/stat (everything but idle and iowait)."""
    busy: dict[int, int] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            ticks = [int(v) for v in values]
            busy[int(name[3:])] = sum(ticks) - ticks[3] - ticks[4]
    return busy


def _memory_kib(pids: Sequence[int], key: str) -> int:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith(key + ":"):
                total += int(line.split()[1])
    return total


# -- PKI and configuration ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pki:
    """The files both proxies and the client use for one key type."""

    key_type: str
    directory: Path
    server_cert: Path
    server_key: Path
    client_ca: Path
    server_ca: Path
    client_cert: Path
    client_key: Path
    parameters: Path


def make_pki(directory: Path, key_type: str) -> Pki:
    """Demo PKI plus what nginx needs (PEM cert and key from the PFX) and a parameters file."""
    demo = write_demo_pki(directory, key_type=key_type)
    key, cert, extra = pkcs12.load_key_and_certificates(
        demo.server_pfx, demo.server_pfx_password.encode()
    )
    assert key is not None
    assert cert is not None
    server_cert = directory / "bench-server-chain.pem"
    server_cert.write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [cert, *(extra or [])])
    )
    server_key = directory / "bench-server.key"
    server_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_key.chmod(0o600)
    parameters = directory / "bench-parameters.json"
    values = {
        "certData": base64.b64encode(demo.server_pfx).decode(),
        "certPassword": demo.server_pfx_password,
        "trustedClientCaData": base64.b64encode(demo.trusted_client_ca_pem).decode(),
    }
    parameters.write_text(
        json.dumps(
            {
                "$schema": "https://schema.management.azure.com/schemas/2019-04-01/"
                "deploymentParameters.json#",
                "contentVersion": "1.0.0.0",
                "parameters": {name: {"value": value} for name, value in values.items()},
            }
        )
    )
    parameters.chmod(0o600)
    return Pki(
        key_type=key_type,
        directory=directory,
        server_cert=server_cert,
        server_key=server_key,
        client_ca=directory / TRUSTED_CLIENT_CA_CHAIN,
        server_ca=directory / SERVER_ROOT_CA,
        client_cert=directory / CLIENT_CERT,
        client_key=directory / CLIENT_KEY,
        parameters=parameters,
    )


def write_emulator_template(
    path: Path, backend_port: int, *, all_headers: bool, http2: bool = False
) -> Path:
    """The ``up`` demo template pointed at the bench backend.

    With ``all_headers`` it is exactly what ``appgw-emulator up`` runs (eight certificate headers
    per request). Without, the rewrite keeps only ``X-Client-Cert``, which is the work nginx is
    configured to do, so the per-request costs compare like for like.
    """
    template = demo_template(
        strict_port=STRICT_TEMPLATE_PORT,
        passthrough_port=PASSTHROUGH_TEMPLATE_PORT,
        backend_host="127.0.0.1",
        backend_port=backend_port,
    )
    if http2:
        template["resources"][0]["properties"]["enableHttp2"] = True
    if not all_headers:
        gateway = template["resources"][0]["properties"]
        for rule_set in gateway["rewriteRuleSets"]:
            for rule in rule_set["properties"]["rewriteRules"]:
                rule["actionSet"]["requestHeaderConfigurations"] = [
                    {"headerName": name, "headerValue": value} for name, value in CERT_HEADERS[:1]
                ]
    path.write_text(json.dumps(template, indent=2) + "\n", encoding="utf-8")
    return path


def render_nginx_conf(target: Path, rundir: Path, pki: Pki, backend_port: int) -> dict[str, int]:
    """Write nginx's config for ``pki``; returns the ports picked for it (Strict, Passthrough,
    and Passthrough with HTTP/2)."""
    ports = {"strict": _free_port(), "passthrough": _free_port(), "h2": _free_port()}
    values = {
        "RUNDIR": str(rundir),
        "SERVER_CERT": str(pki.server_cert),
        "SERVER_KEY": str(pki.server_key),
        "CLIENT_CA": str(pki.client_ca),
        "BACKEND": f"127.0.0.1:{backend_port}",
        "STRICT_PORT": str(ports["strict"]),
        "PASSTHROUGH_PORT": str(ports["passthrough"]),
        "H2_PORT": str(ports["h2"]),
    }
    text = (HERE / "nginx-mtls.conf.in").read_text()
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value)
    if leftover := re.search(r"\{\{\w+\}\}", text):
        raise RuntimeError(f"nginx-mtls.conf.in: no value for {leftover.group(0)}")
    target.write_text(text)
    return ports


def _nginx_binary() -> str | None:
    """nginx is in /usr/sbin, which a non-root PATH often lacks."""
    found = shutil.which("nginx")
    if found is None and Path("/usr/sbin/nginx").is_file():
        found = "/usr/sbin/nginx"
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- servers --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Proxy:
    """A running proxy under test: its root PID, its ports by mode, and how it was started."""

    name: str
    proc: subprocess.Popen[bytes]
    ports: dict[str, int]
    log: Path
    detail: str = ""


def start_backend(
    procs: Processes, rundir: Path, *, pin: bool
) -> tuple[subprocess.Popen[bytes], int]:
    log = rundir / "backend.log"
    proc = procs.start(
        "backend",
        _pinned(LOAD_CPU, [sys.executable, str(HERE / "backend.py"), "--port", "0"], pin=pin),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    (match,) = _wait_for_lines(proc, re.compile(r"listening [\d.]+:(\d+)"), 1, "backend", log)
    return proc, int(match.group(1))


def start_nginx(procs: Processes, rundir: Path, pki: Pki, backend_port: int, *, pin: bool) -> Proxy:
    nginx = _nginx_binary()
    assert nginx is not None
    conf = rundir / f"nginx-{pki.key_type}.conf"
    ports = render_nginx_conf(conf, rundir, pki, backend_port)
    log = rundir / f"nginx-{pki.key_type}.log"
    with log.open("wb") as out:
        proc = procs.start(
            "nginx",
            _pinned(
                PROXY_CPU,
                [
                    nginx,
                    "-c",
                    str(conf),
                    "-p",
                    str(rundir),
                    "-e",
                    str(rundir / "nginx-error.log"),
                    "-g",
                    "daemon off;",
                ],
                pin=pin,
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    _wait_for_ports(proc, ports.values(), "nginx", log)
    return Proxy("nginx", proc, ports, log)


def _wait_for_ports(
    proc: subprocess.Popen[bytes], ports: Iterable[int], what: str, log: Path
) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    for port in list(ports):
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start; see {log}\n{_tail(log)}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.05)


_READY: Final = re.compile(r"^ready: (\S+) .*https?://[^/]+:(\d+)/")


def start_emulator(
    procs: Processes,
    rundir: Path,
    pki: Pki,
    backend_port: int,
    *,
    pin: bool,
    log_level: str,
    all_headers: bool,
    source_root: Path,
    workers: int = 1,
    http2: bool = False,
) -> Proxy:
    variant = f"{pki.key_type}-{log_level}-{'allheaders' if all_headers else 'certheader'}"
    if workers > 1:
        variant += f"-workers{workers}"
    template = write_emulator_template(
        rundir / f"emulator-{variant}.json", backend_port, all_headers=all_headers, http2=http2
    )
    log = rundir / f"emulator-{variant}.log"
    stderr_log = rundir / f"emulator-{variant}.stderr"
    argv = [
        sys.executable, "-m", "emulator", "--log-level", log_level, "run",
        "--template-file", str(template),
        "--parameters", f"@{pki.parameters}",
        "--listen", f"{STRICT_TEMPLATE_PORT}=0",
        "--listen", f"{PASSTHROUGH_TEMPLATE_PORT}=0",
        *(["--workers", str(workers)] if workers > 1 else []),
    ]  # fmt: skip
    with stderr_log.open("wb") as err:
        proc = procs.start(
            "emulator",
            # Several workers get both CPUs (the client shares CPU 1 with them): pinned to one
            # core they could only split it.
            _pinned(PROXY_CPU if workers == 1 else ALL_CPUS, argv, pin=pin),
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=source_root,
        )
    try:
        matches = _wait_for_lines(proc, _READY, 2, "emulator", log)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{_tail(stderr_log)}") from None
    by_listener = {m.group(1): int(m.group(2)) for m in matches}
    ports = {
        "strict": by_listener[STRICT_LISTENER],
        "passthrough": by_listener[PASSTHROUGH_LISTENER],
    }
    if http2:
        ports["h2"] = ports["passthrough"]  # enableHttp2: the same listener offers h2
    detail = f"log={log_level}, headers={'8' if all_headers else '1'}"
    if workers > 1:
        detail += f", workers={workers}"
    return Proxy("emulator", proc, ports, stderr_log, detail)


_FLOOR_READY: Final = re.compile(r"^ready: floor https?://[^/]+:(\d+)/")


def start_floor(procs: Processes, rundir: Path, pki: Pki, backend_port: int, *, pin: bool) -> Proxy:
    """bench/floor_proxy.py on nginx's PEM files, pinned like the others.

    It has one port and no Strict / Passthrough difference, so both modes measure that port.
    """
    log = rundir / f"floor-{pki.key_type}.log"
    stderr_log = rundir / f"floor-{pki.key_type}.stderr"
    argv = [
        sys.executable, str(HERE / "floor_proxy.py"),
        "--port", "0", "--backend-port", str(backend_port),
        "--cert-chain", str(pki.server_cert), "--key", str(pki.server_key),
        "--client-ca", str(pki.client_ca),
    ]  # fmt: skip
    with stderr_log.open("wb") as err:
        proc = procs.start(
            "floor", _pinned(PROXY_CPU, argv, pin=pin), stdout=subprocess.PIPE, stderr=err
        )
    try:
        (match,) = _wait_for_lines(proc, _FLOOR_READY, 1, "floor proxy", log)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{_tail(stderr_log)}") from None
    port = int(match.group(1))
    return Proxy("floor", proc, {"strict": port, "passthrough": port}, stderr_log, FLOOR_VARIANT)


# -- checks and measurements ----------------------------------------------------------------------


def smoke_check(proxy: Proxy, pki: Pki) -> dict[str, str]:
    """One request per case, so a misconfigured proxy fails loudly instead of measuring errors."""
    outcomes: dict[str, str] = {}
    if proxy.name == "floor":
        # No verdicts to check: one GET with a certificate that the backend must see.
        outcomes["floor cert"] = _smoke_get(proxy.ports["strict"], pki, with_cert=True)
        if outcomes["floor cert"] != "200 backend_saw_cert=1":
            raise RuntimeError(f"{proxy.name} smoke check failed: {outcomes}")
        return outcomes
    for mode, port in proxy.ports.items():
        for with_cert in (True, False):
            outcomes[f"{mode} {'cert' if with_cert else 'no cert'}"] = _smoke_get(
                port, pki, with_cert=with_cert
            )
    expected = {
        "strict cert": "200 backend_saw_cert=1",
        "passthrough cert": "200 backend_saw_cert=1",
        "passthrough no cert": "200 backend_saw_cert=0",
    }
    wrong = {
        case: got for case, got in outcomes.items() if case in expected and got != expected[case]
    }
    if wrong or not outcomes.get("strict no cert", "").startswith("400"):
        raise RuntimeError(f"{proxy.name} smoke check failed: {outcomes}")
    return outcomes


def _smoke_get(port: int, pki: Pki, *, with_cert: bool) -> str:
    """One GET with ``Connection: close``: "<status> backend_saw_cert=<0|1|->"."""
    ctx = ssl.create_default_context(cafile=str(pki.server_ca))
    if with_cert:
        ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    with (
        socket.create_connection(("127.0.0.1", port), 5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    status = answer[9:12].decode()
    saw = re.search(rb"(?i)\r\nx-saw-client-cert: *(\d)", answer)
    return f"{status} backend_saw_cert={saw.group(1).decode() if saw else '-'}"


@dataclass(slots=True)
class Measurement:
    """One row of the results: one proxy, listener mode, load mode and key type."""

    key_type: str
    target: str
    mode: str
    load: str
    variant: str
    conns: int
    duration_s: float
    requests: int
    errors: int
    rate: float
    p50_ms: float | None
    p99_ms: float | None
    proxy_cpu_s: float
    proxy_cpu_pct: float
    proxy_cpu_us_per_req: float | None
    backend_cpu_pct: float
    client_cpu_pct: float
    rss_mib: float
    hwm_mib: float
    late_s: float
    #: How busy each CPU was over the window, whoever ran on it. CPU 0 well above the proxy's
    #: own CPU % means something else (another job on the machine) competed with the proxy.
    cpu_busy_pct: dict[str, float] = field(default_factory=dict)
    error_sample: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LoadSettings:
    duration: float
    hs_conns: int
    ka_conns: int
    procs: int
    pin: bool


def measure(
    proxy: Proxy,
    backend: subprocess.Popen[bytes],
    pki: Pki,
    *,
    mode: str,
    load: str,
    settings: LoadSettings,
    variant: str = "",
    duration: float | None = None,
    rate: float = 0.0,
    conns: int | None = None,
) -> Measurement:
    """Run load.py against one listener and sample the proxy's CPU over exactly its window.

    ``rate`` paces the client (requests per second in total; 0: as fast as it can). The CPU
    time of each process of the proxy's tree is kept in ``extra["process_cpu_s"]`` (root
    first), which shows how ``--workers`` spread the load.
    """
    seconds = min(duration if duration is not None else settings.duration, MAX_DURATION_S)
    if conns is None:
        conns = settings.hs_conns if load == "hs" else settings.ka_conns
    tree = _process_tree(proxy.proc.pid)
    start_at = time.monotonic() + WINDOW_LEAD_S
    argv = [
        sys.executable, str(HERE / "load.py"),
        "--port", str(proxy.ports[mode]), "--mode", load,
        "--conns", str(conns), "--procs", str(settings.procs),
        "--duration", str(seconds), "--start-at", repr(start_at),
        "--cacert", str(pki.server_ca),
        "--cert", str(pki.client_cert), "--key", str(pki.client_key),
        *(["--rate", repr(rate)] if rate > 0 else []),
    ]  # fmt: skip
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = subprocess.Popen(
        _pinned(LOAD_CPU, argv, pin=settings.pin), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        time.sleep(max(0.0, start_at - time.monotonic()))
        proxy_cpu0, backend_cpu0 = _cpu_seconds(tree), _cpu_seconds([backend.pid])
        per_process0 = [_cpu_seconds([pid]) for pid in tree]
        busy0 = _cpu_busy_ticks()
        time.sleep(max(0.0, start_at + seconds - time.monotonic()))
        proxy_cpu1, backend_cpu1 = _cpu_seconds(tree), _cpu_seconds([backend.pid])
        per_process1 = [_cpu_seconds([pid]) for pid in tree]
        busy1 = _cpu_busy_ticks()
        rss, hwm = _memory_kib(tree, "VmRSS"), _memory_kib(tree, "VmHWM")
        out, err = client.communicate(timeout=seconds + 60)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if client.returncode != 0:
        raise RuntimeError(f"load.py failed ({client.returncode}): {err.decode()[-2000:]}")
    summary = json.loads(out)
    client_cpu = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    proxy_cpu = proxy_cpu1 - proxy_cpu0
    requests = int(summary["requests"])
    return Measurement(
        key_type=pki.key_type,
        target=proxy.name,
        mode=mode,
        load=load,
        variant=variant or proxy.detail,
        conns=conns,
        duration_s=seconds,
        requests=requests,
        errors=int(summary["errors"]),
        rate=float(summary["rate"]),
        p50_ms=summary["p50_ms"],
        p99_ms=summary["p99_ms"],
        proxy_cpu_s=round(proxy_cpu, 3),
        proxy_cpu_pct=round(100 * proxy_cpu / seconds, 1),
        proxy_cpu_us_per_req=round(1e6 * proxy_cpu / requests, 1) if requests else None,
        backend_cpu_pct=round(100 * (backend_cpu1 - backend_cpu0) / seconds, 1),
        # load.py's whole life, startup included: an upper bound on its share of CPU 1.
        client_cpu_pct=round(100 * client_cpu / seconds, 1),
        rss_mib=round(rss / 1024, 1),
        hwm_mib=round(hwm / 1024, 1),
        late_s=float(summary["late_s"]),
        cpu_busy_pct={
            f"cpu{n}": round(100 * (busy1[n] - busy0[n]) / CLK_TCK / seconds, 1) for n in busy1
        },
        error_sample=str(summary["error_sample"]),
        extra={
            "process_cpu_s": [
                round(b - a, 3) for a, b in zip(per_process0, per_process1, strict=True)
            ],
            **({"paced_rate": rate} if rate > 0 else {}),
        },
    )


#: h2load's unmeasured start (connections and TLS handshakes) before its measured duration.
_H2LOAD_REQUESTS: Final = re.compile(
    r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored"
)
_H2LOAD_TIME: Final = re.compile(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)")


def _h2load_ms(text: str) -> float:
    """h2load prints times as 812us, 1.23ms or 2.5s."""
    for unit, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(unit):
            return round(float(text[: -len(unit)]) * scale, 3)
    return float(text)


#: Requests each h2load connection makes: under the 1,000 an HTTP/2 connection carries before
#: the emulator (like nginx's default ``keepalive_requests``) sends GOAWAY; h2load does not
#: reconnect, so a longer run would measure a closed connection.
H2_REQUESTS_PER_CONNECTION: Final = 990


def measure_h2load(
    proxy: Proxy,
    backend: subprocess.Popen[bytes],
    pki: Pki,
    *,
    settings: LoadSettings,
    streams: int,
    conns: int,
) -> Measurement:
    """``--loads h2``: h2load (nghttp2-client) against the proxy's HTTP/2 Passthrough listener,
    ``conns`` connections with ``streams`` streams each in flight. h2load runs back to back,
    each run ``H2_REQUESTS_PER_CONNECTION`` requests per connection, for ``duration`` seconds
    after one warm-up run; the proxy's CPU is sampled over exactly those runs, so each
    connection's handshake is in the figure (a few µs per request, for every proxy alike).
    h2load has no client-certificate option, hence Passthrough without a certificate on both
    proxies."""
    h2load = shutil.which("h2load")
    if h2load is None:
        raise RuntimeError("h2load not found; install it with: apt-get install -y nghttp2-client")
    seconds = min(settings.duration, MAX_DURATION_S)
    tree = _process_tree(proxy.proc.pid)
    argv = [
        h2load, "-c", str(conns), "-m", str(streams), "-t", "1",
        "-n", str(conns * H2_REQUESTS_PER_CONNECTION),
        f"https://127.0.0.1:{proxy.ports['h2']}/bench",
    ]  # fmt: skip

    def one_run() -> tuple[int, int, int, str]:
        """(requests done, succeeded, errors) of one h2load run, and its output."""
        client = subprocess.run(
            _pinned(LOAD_CPU, argv, pin=settings.pin),
            capture_output=True,
            timeout=60,
            check=False,
        )
        text = client.stdout.decode(errors="replace")
        counts = _H2LOAD_REQUESTS.search(text)
        if client.returncode != 0 or counts is None:
            raise RuntimeError(
                f"h2load failed ({client.returncode}): {text[-2000:]}{client.stderr.decode()}"
            )
        if "Application protocol: h2" not in text:
            raise RuntimeError(f"{proxy.name} did not negotiate h2 with h2load: {text[-2000:]}")
        done, succeeded = int(counts.group(2)), int(counts.group(3))
        errors = done - succeeded + int(counts.group(4)) + int(counts.group(5))
        return done, succeeded, errors, text

    one_run()  # warm-up
    proxy_cpu0, backend_cpu0 = _cpu_seconds(tree), _cpu_seconds([backend.pid])
    busy0 = _cpu_busy_ticks()
    began = time.monotonic()
    succeeded = errors = runs = 0
    text = ""
    while runs == 0 or time.monotonic() - began < seconds:
        _done, ok, failed, text = one_run()
        succeeded += ok
        errors += failed
        runs += 1
    elapsed = time.monotonic() - began
    proxy_cpu1, backend_cpu1 = _cpu_seconds(tree), _cpu_seconds([backend.pid])
    busy1 = _cpu_busy_ticks()
    rss, hwm = _memory_kib(tree, "VmRSS"), _memory_kib(tree, "VmHWM")
    timing = _H2LOAD_TIME.search(text)
    proxy_cpu = proxy_cpu1 - proxy_cpu0
    return Measurement(
        key_type=pki.key_type,
        target=proxy.name,
        mode="passthrough",
        load="h2",
        variant=f"{proxy.detail or proxy.name}, h2 x{streams} streams, no client cert".lstrip(", "),
        conns=conns,
        duration_s=round(elapsed, 2),
        requests=succeeded,
        errors=errors,
        rate=round(succeeded / elapsed, 1),
        p50_ms=None,
        p99_ms=None,
        proxy_cpu_s=round(proxy_cpu, 3),
        proxy_cpu_pct=round(100 * proxy_cpu / elapsed, 1),
        proxy_cpu_us_per_req=round(1e6 * proxy_cpu / succeeded, 1) if succeeded else None,
        backend_cpu_pct=round(100 * (backend_cpu1 - backend_cpu0) / elapsed, 1),
        client_cpu_pct=0.0,
        rss_mib=round(rss / 1024, 1),
        hwm_mib=round(hwm / 1024, 1),
        late_s=0.0,
        cpu_busy_pct={
            f"cpu{n}": round(100 * (busy1[n] - busy0[n]) / CLK_TCK / elapsed, 1) for n in busy1
        },
        extra={
            "streams": streams,
            "h2load_runs": runs,
            "requests_per_connection": H2_REQUESTS_PER_CONNECTION,
            **(
                {
                    "request_min_ms": _h2load_ms(timing.group(1)),
                    "request_max_ms": _h2load_ms(timing.group(2)),
                    "request_mean_ms": _h2load_ms(timing.group(3)),
                }
                if timing
                else {}
            ),
        },
    )


def warm_up(
    proxy: Proxy, backend: subprocess.Popen[bytes], pki: Pki, settings: LoadSettings
) -> None:
    warmed: set[int] = set()
    for mode, port in proxy.ports.items():
        if port not in warmed:  # the floor proxy serves both modes on one port
            warmed.add(port)
            measure(proxy, backend, pki, mode=mode, load="ka", settings=settings, duration=WARMUP_S)


# -- the performance issue's targets ---------------------------------------------------------------

#: Idle keep-alive connections for the memory target.
IDLE_CONNECTIONS: Final = 1000
#: p99 target: this many keep-alive connections (Strict), paced to ``--paced-rate`` in total.
PACED_CONNS: Final = 8
DEFAULT_PACED_RATE: Final = 2000.0
#: Start-up runs of the quickstart template; the median is reported.
STARTUP_RUNS: Final = 5
QUICKSTART: Final = REPO / "tests" / "fixtures" / "quickstart" / "deploymentTemplate.json"
#: The targets, set on what the gateway adds above the stack's floor (bench/floor_proxy.py):
#: ratios to the floor or to nginx in the same run, or absolute values.
TARGET_KA_FLOOR_RATIO: Final = 2.0
TARGET_HS_FLOOR_RATIO: Final = 1.2
TARGET_P99_RATIO: Final = 2.0
#: CPU per request over HTTP/2 (one connection, ``--h2-streams`` in flight) / the emulator's
#: own HTTP/1.1 keep-alive figure.
TARGET_H2_RATIO: Final = 2.0
TARGET_SPREAD_PCT: Final = 20.0
TARGET_IDLE_MIB: Final = 32.0
TARGET_STARTUP_S: Final = 0.3
#: 100 tests of the pytest plugin's fixtures (bench/fixture_startup.py), wall seconds.
TARGET_FIXTURE_TESTS_S: Final = 3.0
FIXTURE_TESTS: Final = 100


def idle_connections_rss(proxy: Proxy, pki: Pki, *, mode: str, count: int) -> dict[str, Any]:
    """RSS the proxy gains holding ``count`` idle keep-alive mTLS connections.

    Each connection completes a handshake with the client certificate and one request, then
    stays open and idle while the proxy's RSS is read; then all are closed.
    """
    tree = _process_tree(proxy.proc.pid)
    before = _memory_kib(tree, "VmRSS")
    ctx = ssl.create_default_context(cafile=str(pki.server_ca))
    ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
    held: list[ssl.SSLSocket] = []
    failed = 0
    try:
        for _ in range(count):
            try:
                raw = socket.create_connection(("127.0.0.1", proxy.ports[mode]), 10)
                tls = ctx.wrap_socket(raw, server_hostname="localhost")
            except OSError:
                failed += 1
                continue
            held.append(tls)
            tls.sendall(request)
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.endswith(b"ok\n"):
                chunk = tls.recv(65536)
                if not chunk:
                    break
                answer += chunk
        time.sleep(0.5)  # let the proxy settle (freed buffers, pending closes)
        after = _memory_kib(_process_tree(proxy.proc.pid), "VmRSS")
    finally:
        for tls in held:
            with contextlib.suppress(OSError):
                tls.close()
    return {
        "target": proxy.name,
        "mode": mode,
        "connections": len(held),
        "failed": failed,
        "rss_before_mib": round(before / 1024, 1),
        "rss_after_mib": round(after / 1024, 1),
        "added_mib": round((after - before) / 1024, 1),
    }


def startup_times(
    rundir: Path, backend_port: int, *, runs: int, source_root: Path
) -> dict[str, Any]:
    """Seconds from starting ``run`` on the quickstart template to its ready line.

    A demo PKI made beforehand supplies the parameters file, as ``certs init`` does for the
    README's quickstart (PKI generation excluded, as the issue asks).
    """
    workdir = rundir / "quickstart"
    write_demo_pki(workdir / "certs", key_type="ec")
    argv = [
        sys.executable, "-m", "emulator", "--log-level", "warning", "run",
        "--template-file", str(QUICKSTART),
        "--parameters", "@certs/deploymentParameters.json",
        "--backend", f"pool2=127.0.0.1:{backend_port}",
        "--listen", "444=0",
    ]  # fmt: skip
    seconds: list[float] = []
    for _ in range(runs):
        began = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=workdir,
            env={**os.environ, "PYTHONPATH": str(source_root)},  # the run's snapshot
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            elapsed = time.perf_counter() - began
            if not line.startswith(b"ready:"):
                raise RuntimeError(f"quickstart run did not start: {line!r}")
            seconds.append(elapsed)
        finally:
            proc.terminate()
            proc.wait(timeout=STOP_GRACE_S)
    # The floor of any start-up on this stack: the interpreter importing the three libraries
    # every listener needs, and nothing of the emulator.
    floor: list[float] = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import trio, OpenSSL.SSL, cryptography.x509"], check=True
        )
        floor.append(time.perf_counter() - began)
    return {
        "runs": [round(x, 3) for x in seconds],
        "median_s": round(statistics.median(seconds), 3),
        "import_floor_s": round(statistics.median(floor), 3),
        "template": str(QUICKSTART.relative_to(REPO)),
    }


def worker_spread(row: Measurement) -> float | None:
    """How far the busiest or idlest worker is from the mean, in % of the mean (CPU time).

    Every worker does the same work per request, so its share of the CPU time is its share of
    the requests; the parent (first in ``process_cpu_s``) only supervises.
    """
    workers = row.extra.get("process_cpu_s", [])[1:]
    if len(workers) < 2:
        return None
    mean = statistics.mean(workers)
    return round(100 * max(abs(w - mean) for w in workers) / mean, 1) if mean else None


def targets(rows: Sequence[Measurement], checks: dict[str, Any]) -> list[dict[str, Any]]:
    """The performance targets with the value this run measured and whether each is met."""

    def row(
        target: str, load: str, mode: str = "strict", kind: str = "", key_type: str = ""
    ) -> Measurement | None:
        """The summary row of a case: a main one, or an extra run of ``kind``."""
        for r in rows:
            if (r.target, r.load, r.mode) != (target, load, mode):
                continue
            if key_type and r.key_type != key_type:
                continue
            if kind and r.extra.get("kind") == kind:
                return r
            if not kind and not r.extra.get("extra_run"):
                return r
        return None

    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, unit: str) -> None:
        out.append(
            {
                "target": name,
                "value": value,
                "limit": limit,
                "unit": unit,
                "met": None if value is None else value <= limit,
            }
        )

    def cpu_ratio(one: Measurement | None, other: Measurement | None) -> float | None:
        if one and other and one.proxy_cpu_us_per_req and other.proxy_cpu_us_per_req:
            return round(one.proxy_cpu_us_per_req / other.proxy_cpu_us_per_req, 2)
        return None

    key_types = sorted({r.key_type for r in rows if not r.extra.get("extra_run")})
    for key_type in key_types:
        for mode in ("strict", "passthrough"):
            for load, limit in (("ka", TARGET_KA_FLOOR_RATIO), ("hs", TARGET_HS_FLOOR_RATIO)):
                emu = row("emulator", load, mode, key_type=key_type)
                floor = row("floor", load, mode, key_type=key_type)
                add(
                    f"{key_type} {mode} {load}: CPU per request / floor",
                    cpu_ratio(emu, floor),
                    limit,
                    "x",
                )
        h2 = row("emulator", "h2", "passthrough", key_type=key_type)
        if h2 is not None:
            h1 = row("emulator", "ka", "passthrough", key_type=key_type)
            streams = h2.extra.get("streams", "?")
            add(
                f"{key_type} h2 ({streams} streams): CPU per request / own HTTP/1.1 keep-alive",
                cpu_ratio(h2, h1),
                TARGET_H2_RATIO,
                "x",
            )
    emu, ngx = row("emulator", "ka", kind="paced"), row("nginx", "ka", kind="paced")
    if emu and ngx:
        p99 = round(emu.p99_ms / ngx.p99_ms, 2) if emu.p99_ms and ngx.p99_ms else None
        paced = ngx.extra.get("paced_rate", ngx.rate)
        # Below the paced rate the emulator was saturated: its p99 is then a queueing figure.
        reached = (
            f"emulator reached {emu.rate:,.0f}" if emu.rate < 0.95 * paced else "both reached it"
        )
        add(
            f"p99 / nginx, {PACED_CONNS} keep-alive connections paced to {paced:,.0f} req/s "
            f"({reached})",
            p99,
            TARGET_P99_RATIO,
            "x",
        )
    for load in ("ka", "hs"):
        many = row("emulator", load, kind="workers")
        if many is None:
            continue
        add(
            f"--workers {load}: worst worker off the mean",
            worker_spread(many),
            TARGET_SPREAD_PCT,
            "%",
        )
    idle = checks.get("idle_connections", {}).get("emulator")
    if idle:
        add(
            f"{idle['connections']} idle keep-alive mTLS connections: added RSS",
            idle["added_mib"],
            TARGET_IDLE_MIB,
            "MiB",
        )
    startup = checks.get("startup")
    if startup:
        floor = startup.get("import_floor_s")
        add(
            "start-up to listening, quickstart template"
            + (f" (importing trio, pyOpenSSL and cryptography alone: {floor} s)" if floor else ""),
            startup["median_s"],
            TARGET_STARTUP_S,
            "s",
        )
    fixtures = checks.get("fixture_tests")
    if fixtures:
        add(
            f"{fixtures['tests']} pytest-fixture tests: the fixtures' work (pytest run: "
            f"{fixtures.get('pytest_reported_s')} s by pytest's count, "
            f"{fixtures.get('pytest_wall_s')} s wall with start-up)",
            fixtures["loop_s"],
            TARGET_FIXTURE_TESTS_S,
            "s",
        )
    return out


def fixture_tests_wall(count: int) -> dict[str, Any]:
    """``count`` tests of the pytest plugin's fixtures (bench/fixture_startup.py): the fixtures'
    own work timed in a loop, and the wall time of a generated pytest run of them, which adds
    the interpreter's and pytest's start-up and collection."""
    script = str(HERE / "fixture_startup.py")
    done = subprocess.run(
        [sys.executable, script, "--tests", str(count)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    loop = re.search(r"total ([\d.]+) s for", done.stdout)
    wall = re.search(r"pytest: .*?([\d.]+) s wall", done.stdout)
    own = re.search(r"passed in ([\d.]+)s", done.stdout)
    if done.returncode != 0 or loop is None or wall is None:
        return {"tests": count, "loop_s": None, "error": (done.stdout + done.stderr)[-500:]}
    return {
        "tests": count,
        "loop_s": float(loop.group(1)),
        "pytest_wall_s": float(wall.group(1)),
        "pytest_reported_s": float(own.group(1)) if own else None,
    }


def targets_table(items: Sequence[dict[str, Any]]) -> str:
    lines = ["| target | measured | limit | met |", "|---|---|---|---|"]
    for item in items:
        met = "-" if item["met"] is None else ("yes" if item["met"] else "no")
        value = "-" if item["value"] is None else f"{item['value']:,} {item['unit']}"
        lines.append(f"| {item['target']} | {value} | {item['limit']:,} {item['unit']} | {met} |")
    return "\n".join(lines)


# -- report ---------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


#: Columns a summary row takes the median of, each on its own, over the repetitions.
_MEDIAN_FIELDS: Final = (
    "requests",
    "errors",
    "rate",
    "p50_ms",
    "p99_ms",
    "proxy_cpu_s",
    "proxy_cpu_pct",
    "proxy_cpu_us_per_req",
    "backend_cpu_pct",
    "client_cpu_pct",
    "rss_mib",
    "hwm_mib",
)


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def median_rows(rows: Sequence[Measurement]) -> list[Measurement]:
    """One row per case, each column the median of that column over the repetitions.

    Other jobs on a shared machine disturb single runs (see the CPU busy columns); a median per
    column is robust to one bad repetition whichever column it spoiled. The raw repetitions stay
    in the JSON (``all_runs``).
    """
    groups: dict[tuple[str, str, str, str, str], list[Measurement]] = {}
    for row in rows:
        key = (row.key_type, row.target, row.mode, row.load, row.variant)
        groups.setdefault(key, []).append(row)
    summary = []
    for group in groups.values():
        if len(group) == 1:
            summary.append(group[0])
            continue
        merged = replace(group[0], extra={**group[0].extra, "repeats": len(group)})
        per_process = [r.extra.get("process_cpu_s", []) for r in group]
        if len({len(p) for p in per_process}) == 1:
            # The same processes served every repetition: their CPU time adds up.
            merged.extra["process_cpu_s"] = [
                round(sum(col), 3) for col in zip(*per_process, strict=True)
            ]
        for name in _MEDIAN_FIELDS:
            value = _median([getattr(r, name) for r in group])
            if isinstance(getattr(group[0], name), int) and value is not None:
                value = round(value)
            setattr(merged, name, value)
        merged.cpu_busy_pct = {
            cpu: _median([r.cpu_busy_pct.get(cpu) for r in group]) or 0.0
            for cpu in group[0].cpu_busy_pct
        }
        merged.error_sample = next((r.error_sample for r in group if r.error_sample), "")
        summary.append(merged)
    return summary


def results_table(rows: Sequence[Measurement]) -> str:
    head = (
        "| key | mode | load | target | variant | req/s | proxy CPU % | proxy CPU µs/req "
        "| p50 ms | p99 ms | RSS MiB | errors | CPU0 busy % | CPU1 busy % |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r.key_type} | {r.mode} | {r.load} | {r.target} | {r.variant or '-'} "
            f"| {_fmt(r.rate)} | {_fmt(r.proxy_cpu_pct)} | {_fmt(r.proxy_cpu_us_per_req, 1)} "
            f"| {_fmt(r.p50_ms, 2)} | {_fmt(r.p99_ms, 2)} | {_fmt(r.rss_mib, 1)} | {r.errors} "
            f"| {_fmt(r.cpu_busy_pct.get('cpu0'))} | {_fmt(r.cpu_busy_pct.get('cpu1'))} |"
        )
    return "\n".join(lines)


def ratios(
    rows: Sequence[Measurement], target: str = "emulator", reference: str = "nginx"
) -> list[dict[str, Any]]:
    """``target`` / ``reference`` for each (key type, mode, load) measured on both, main variant
    only (emulator / nginx unless told otherwise)."""
    main = [r for r in rows if not r.extra.get("extra_run")]
    out = []
    for r in main:
        if r.target != target:
            continue
        ref = next(
            (
                n
                for n in main
                if n.target == reference
                and (n.key_type, n.mode, n.load) == (r.key_type, r.mode, r.load)
            ),
            None,
        )
        if ref is None:
            continue

        def ratio(a: float | None, b: float | None) -> float | None:
            return round(a / b, 2) if a is not None and b else None

        out.append(
            {
                "key_type": r.key_type,
                "mode": r.mode,
                "load": r.load,
                "rate": ratio(r.rate, ref.rate),
                "cpu_per_req": ratio(r.proxy_cpu_us_per_req, ref.proxy_cpu_us_per_req),
                "p50": ratio(r.p50_ms, ref.p50_ms),
                "p99": ratio(r.p99_ms, ref.p99_ms),
                "rss": ratio(r.rss_mib, ref.rss_mib),
            }
        )
    return out


def floor_ratios(rows: Sequence[Measurement]) -> dict[str, list[dict[str, Any]]]:
    """The floor proxy against both: what the stack costs (floor / nginx) and what the gateway
    adds on top of it (emulator / floor). Empty lists when the floor was not measured."""
    return {
        "ratios_floor_over_nginx": ratios(rows, "floor", "nginx"),
        "ratios_emulator_over_floor": ratios(rows, "emulator", "floor"),
    }


#: Headings of the floor's ratio tables, by their JSON key.
_FLOOR_HEADINGS: Final = {
    "ratios_floor_over_nginx": "floor / nginx (the stack's own cost: trio + pyOpenSSL doing only "
    "the transport work; > 1 means the floor needs more than nginx):",
    "ratios_emulator_over_floor": "emulator / floor (what the gateway adds on top of the stack; "
    "> 1 means the emulator needs more):",
}


def ratios_table(items: Sequence[dict[str, Any]]) -> str:
    head = "| key | mode | load | req/s ratio | CPU/req ratio | p50 ratio | p99 ratio | RSS ratio |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for item in items:
        lines.append(
            f"| {item['key_type']} | {item['mode']} | {item['load']} | {_fmt(item['rate'], 2)} "
            f"| {_fmt(item['cpu_per_req'], 1)} | {_fmt(item['p50'], 1)} | {_fmt(item['p99'], 1)} "
            f"| {_fmt(item['rss'], 1)} |"
        )
    return "\n".join(lines)


def machine_facts() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def emulator_source_digest(root: Path = REPO) -> str:
    """SHA-256 over the emulator's Python sources under ``root``, naming the code measured."""
    digest = hashlib.sha256()
    for path in sorted((root / "emulator").rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def snapshot_emulator(rundir: Path) -> Path:
    """Copy the emulator package into the run directory and return the directory holding it.

    Every emulator process of the run imports this copy (it is their working directory, which
    ``python -m`` puts first on sys.path), so a run measures one version of the code even when
    the checkout is edited while it is in progress.
    """
    root = rundir / "src"
    shutil.copytree(
        REPO / "emulator", root / "emulator", ignore=shutil.ignore_patterns("__pycache__")
    )
    # Byte-compiled as pip does on install (even where PYTHONDONTWRITEBYTECODE is set), so a
    # start-up measures loading the code, not compiling it.
    compileall.compile_dir(root, quiet=1)
    return root


def git_head() -> str:
    """The checked-out commit (read-only ``git rev-parse``), or "" outside a repository."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
        return done.stdout.strip()
    return ""


def versions() -> dict[str, str]:
    import cryptography
    import h11
    import OpenSSL
    import trio
    from cryptography.hazmat.backends.openssl.backend import backend as openssl_backend

    facts = {
        "python": platform.python_version(),
        "trio": trio.__version__,
        "h11": str(getattr(h11, "__version__", "?")),
        "pyOpenSSL": OpenSSL.__version__,
        "cryptography": cryptography.__version__,
        "openssl (cryptography/pyOpenSSL)": openssl_backend.openssl_version_text(),
        "openssl (load client, stdlib ssl)": ssl.OPENSSL_VERSION,
    }
    nginx = _nginx_binary()
    if nginx:
        text = subprocess.run([nginx, "-V"], capture_output=True, text=True, check=False).stderr
        version = re.search(r"nginx/(\S+)", text)
        built = re.search(r"built with (OpenSSL \S+)", text)
        facts["nginx"] = version.group(1) if version else "?"
        facts["openssl (nginx)"] = built.group(1) if built else "?"
    with contextlib.suppress(Exception):
        from importlib.metadata import version as dist_version

        facts["appgw-emulator"] = dist_version("appgw-emulator")
    return facts


# -- main -----------------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="Benchmark the emulator against nginx on the same mTLS (see bench/README.md).",
    )
    parser.add_argument(
        "--duration", type=float, default=5.0, help="seconds per measurement (max 120)"
    )
    parser.add_argument("--key-type", choices=["ec", "rsa", "both"], default="both")
    parser.add_argument(
        "--modes", default="strict,passthrough", help="comma-separated listener modes"
    )
    parser.add_argument(
        "--loads",
        default="ka,hs",
        help="comma-separated load modes: ka, hs, h2 (h2load over HTTP/2, Passthrough only)",
    )
    parser.add_argument(
        "--h2-streams", type=int, default=16, help="h2 load: streams in flight per connection"
    )
    parser.add_argument("--h2-conns", type=int, default=1, help="h2 load: HTTP/2 connections")
    parser.add_argument(
        "--targets",
        default="nginx,emulator",
        help="comma-separated proxies: nginx, emulator, floor (opt-in: bench/floor_proxy.py)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    parser.add_argument("--hs-conns", type=int, default=HS_CONNS)
    parser.add_argument("--ka-conns", type=int, default=KA_CONNS)
    parser.add_argument("--procs", type=int, default=LOAD_PROCS, help="load.py processes")
    parser.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    parser.add_argument(
        "--no-extras",
        action="store_true",
        help="skip the extra emulator runs (info logging; all eight certificate headers)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure each case N times; the tables show the run with the median CPU/request",
    )
    parser.add_argument(
        "--report",
        type=Path,
        metavar="JSON",
        help="measure nothing: recompute the summary of a results file from its runs, "
        "print the tables and update the file",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        metavar="N",
        help="also measure the emulator with --workers N (first key type, Strict; 1 skips it)",
    )
    parser.add_argument(
        "--no-targets",
        action="store_true",
        help="skip the other checks (paced p99, idle connections, start-up, fixture tests, "
        "--workers)",
    )
    parser.add_argument(
        "--paced-rate",
        type=float,
        default=DEFAULT_PACED_RATE,
        metavar="REQ_PER_S",
        help=f"paced p99: total request rate of the {PACED_CONNS} connections",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary run directory")
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.loads = [m.strip() for m in args.loads.split(",") if m.strip()]
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not set(args.modes) <= {"strict", "passthrough"}:
        parser.error("--modes takes strict and/or passthrough")
    if not set(args.loads) <= {"ka", "hs", "h2"}:
        parser.error("--loads takes ka, hs and/or h2")
    if not 1 <= args.h2_conns <= 64:
        parser.error("--h2-conns must be between 1 and 64")
    if not 1 <= args.h2_streams <= 128:
        parser.error("--h2-streams must be between 1 and 128 (the listeners' stream limit)")
    if not set(args.targets) <= set(TARGETS):
        parser.error("--targets takes nginx, emulator and/or floor")
    if not 1 <= args.repeat <= MAX_REPEAT:
        parser.error(f"--repeat must be between 1 and {MAX_REPEAT}")
    if not 1 <= args.workers <= 16:
        parser.error("--workers must be between 1 and 16")
    if not 1 <= args.paced_rate <= 100_000:
        parser.error("--paced-rate must be between 1 and 100000 requests per second")
    if not 0.1 <= args.duration <= MAX_DURATION_S:
        parser.error(f"--duration must be between 0.1 and {MAX_DURATION_S:g}")
    return args


def print_tables(
    summary_rows: Sequence[Measurement], checks: dict[str, Any] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Print the results, the ratios and the targets; returns the last two."""
    result_ratios = ratios(summary_rows)
    print()
    print(results_table(summary_rows))
    print()
    print("emulator / nginx (same key type, mode and load; > 1 means the emulator needs more):")
    print(ratios_table(result_ratios))
    for key, items in floor_ratios(summary_rows).items():
        if items:
            print()
            print(_FLOOR_HEADINGS[key])
            print(ratios_table(items))
    met = targets(summary_rows, checks or {})
    if met:
        print()
        print(targets_table(met))
    return result_ratios, met


def rereport(path: Path) -> int:
    """``--report``: summarise again from the raw runs kept in a results file."""
    report = json.loads(path.read_text())
    rows = [Measurement(**raw) for raw in report.get("all_runs") or report["results"]]
    summary_rows = median_rows(rows)
    report["results"] = [asdict(r) for r in summary_rows]
    report["ratios_emulator_over_nginx"], report["targets"] = print_tables(
        summary_rows, report.get("checks", {})
    )
    report |= {key: items for key, items in floor_ratios(summary_rows).items() if items}
    path.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.report is not None:
        return rereport(args.report)
    if "nginx" in args.targets and _nginx_binary() is None:
        print(NGINX_MISSING_HINT, file=sys.stderr)
        return 2
    pin = not args.no_pin
    if pin and (shutil.which("taskset") is None or (os.cpu_count() or 1) < 2):
        print("note: taskset missing or fewer than 2 CPUs; running unpinned", file=sys.stderr)
        pin = False
    settings = LoadSettings(args.duration, args.hs_conns, args.ka_conns, args.procs, pin)
    key_types = ["ec", "rsa"] if args.key_type == "both" else [args.key_type]

    procs = Processes()
    atexit.register(procs.stop_all)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    rundir = Path(tempfile.mkdtemp(prefix="appgw-bench-"))
    rows: list[Measurement] = []
    smoke: dict[str, Any] = {}
    checks: dict[str, Any] = {}
    started = datetime.datetime.now(datetime.UTC)
    facts = machine_facts()
    print(f"machine: {facts['nproc']} CPUs, {facts['cpu_model']}, load {facts['loadavg_at_start']}")
    print(f"run directory: {rundir}")
    source_root = snapshot_emulator(rundir)
    source_digest = emulator_source_digest(source_root)
    print(f"emulator sources: snapshot {source_digest} (git HEAD {git_head() or '?'} + edits)")
    try:
        backend, backend_port = start_backend(procs, rundir, pin=pin)
        for index, key_type in enumerate(key_types):
            pki = make_pki(rundir / f"pki-{key_type}", key_type)
            proxies: list[Proxy] = []
            if "nginx" in args.targets:
                proxies.append(start_nginx(procs, rundir, pki, backend_port, pin=pin))
            if "emulator" in args.targets:
                proxies.append(
                    start_emulator(
                        procs,
                        rundir,
                        pki,
                        backend_port,
                        pin=pin,
                        log_level="warning",
                        all_headers=False,
                        source_root=source_root,
                        http2="h2" in args.loads,
                    )
                )
            if "floor" in args.targets:
                proxies.append(start_floor(procs, rundir, pki, backend_port, pin=pin))
            for proxy in proxies:
                smoke[f"{proxy.name} {key_type}"] = smoke_check(proxy, pki)
                warm_up(proxy, backend, pki, settings)
            for mode in args.modes:
                for load in args.loads:
                    for proxy in proxies:
                        if load == "h2" and (mode != "passthrough" or "h2" not in proxy.ports):
                            continue  # h2load presents no certificate: Passthrough only
                        for _ in range(args.repeat):
                            if load == "h2":
                                row = measure_h2load(
                                    proxy,
                                    backend,
                                    pki,
                                    settings=settings,
                                    streams=args.h2_streams,
                                    conns=args.h2_conns,
                                )
                            else:
                                row = measure(
                                    proxy, backend, pki, mode=mode, load=load, settings=settings
                                )
                            rows.append(row)
                            _progress(row)
                            time.sleep(SETTLE_S)
            if index == 0 and not args.no_targets:
                rows += _paced_runs(proxies, backend, pki, settings, args.repeat, args.paced_rate)
                checks["idle_connections"] = {
                    proxy.name: idle_connections_rss(
                        proxy, pki, mode="strict", count=IDLE_CONNECTIONS
                    )
                    for proxy in proxies
                }
                print(f"  idle connections: {checks['idle_connections']}", flush=True)
            for proxy in proxies:
                procs.stop(proxy.proc)
            if index == 0 and "emulator" in args.targets and not args.no_extras:
                rows += _extra_runs(
                    procs, rundir, pki, backend, backend_port, settings, args, source_root
                )
            if index == 0 and "emulator" in args.targets and not args.no_targets:
                if args.workers > 1:
                    rows += _worker_runs(
                        procs, rundir, pki, backend, backend_port, settings, args, source_root
                    )
                checks["startup"] = startup_times(
                    rundir, backend_port, runs=STARTUP_RUNS, source_root=source_root
                )
                print(f"  start-up: {checks['startup']}", flush=True)
                checks["fixture_tests"] = fixture_tests_wall(FIXTURE_TESTS)
                print(f"  fixture tests: {checks['fixture_tests']}", flush=True)
        procs.stop(backend)
    except KeyboardInterrupt:
        print("interrupted; stopping every process started", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if not args.keep:
            shutil.rmtree(rundir, ignore_errors=True)

    summary_rows = median_rows(rows)
    result_ratios, met = print_tables(summary_rows, checks)
    if emulator_source_digest() != source_digest:
        print(
            f"\nnote: the checkout's emulator sources changed during the run; the figures are "
            f"of the snapshot taken at the start ({source_digest})",
            file=sys.stderr,
        )
    report: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "machine": facts,
        "versions": versions(),
        "emulator_source": {
            "git_head": git_head(),
            "sha256": source_digest,
        },
        "settings": {
            **asdict(settings),
            "key_types": key_types,
            "modes": args.modes,
            "loads": args.loads,
            "repeat": args.repeat,
        },
        "smoke_checks": smoke,
        "results": [asdict(r) for r in summary_rows],
        "all_runs": [asdict(r) for r in rows],
        "ratios_emulator_over_nginx": result_ratios,
        **{key: items for key, items in floor_ratios(summary_rows).items() if items},
        "checks": checks,
        "targets": met,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten: {args.out}")
    return 0


def _extra_runs(
    procs: Processes,
    rundir: Path,
    pki: Pki,
    backend: subprocess.Popen[bytes],
    backend_port: int,
    settings: LoadSettings,
    args: argparse.Namespace,
    source_root: Path,
) -> list[Measurement]:
    """The emulator as users run it: info logging (one access line per request to a file), and
    the ``up`` template's eight certificate headers. Strict listener only, both loads."""
    rows = []
    for log_level, all_headers in (("info", False), ("warning", True)):
        proxy = start_emulator(
            procs,
            rundir,
            pki,
            backend_port,
            pin=settings.pin,
            log_level=log_level,
            all_headers=all_headers,
            source_root=source_root,
        )
        try:
            warm_up(proxy, backend, pki, settings)
            for load in (load for load in args.loads if load != "h2"):  # Strict: not h2load
                for _ in range(args.repeat):
                    row = measure(proxy, backend, pki, mode="strict", load=load, settings=settings)
                    row.extra |= {"extra_run": True, "log_bytes": proxy.log.stat().st_size}
                    rows.append(row)
                    _progress(row)
                    time.sleep(SETTLE_S)
        finally:
            procs.stop(proxy.proc)
    return rows


def _paced_runs(
    proxies: Sequence[Proxy],
    backend: subprocess.Popen[bytes],
    pki: Pki,
    settings: LoadSettings,
    repeat: int,
    rate: float,
) -> list[Measurement]:
    """Latency below saturation: ``PACED_CONNS`` keep-alive connections (Strict), paced to
    ``rate`` requests per second in total (``--paced-rate``), the same for every proxy."""
    out = []
    for proxy in proxies:
        for _ in range(repeat):
            row = measure(
                proxy,
                backend,
                pki,
                mode="strict",
                load="ka",
                settings=settings,
                rate=rate,
                conns=PACED_CONNS,
                variant=f"paced: {PACED_CONNS} conns at {rate} req/s",
            )
            row.extra |= {"extra_run": True, "kind": "paced"}
            out.append(row)
            _progress(row)
            time.sleep(SETTLE_S)
    return out


def _worker_runs(
    procs: Processes,
    rundir: Path,
    pki: Pki,
    backend: subprocess.Popen[bytes],
    backend_port: int,
    settings: LoadSettings,
    args: argparse.Namespace,
    source_root: Path,
) -> list[Measurement]:
    """The emulator with ``--workers N`` (Strict, both loads): CPU per request and spread."""
    proxy = start_emulator(
        procs,
        rundir,
        pki,
        backend_port,
        pin=settings.pin,
        log_level="warning",
        all_headers=False,
        source_root=source_root,
        workers=args.workers,
    )
    rows = []
    try:
        warm_up(proxy, backend, pki, settings)
        for load in (load for load in args.loads if load != "h2"):  # Strict: not h2load
            for _ in range(args.repeat):
                row = measure(proxy, backend, pki, mode="strict", load=load, settings=settings)
                row.extra |= {"extra_run": True, "kind": "workers"}
                rows.append(row)
                _progress(row)
                time.sleep(SETTLE_S)
    finally:
        procs.stop(proxy.proc)
    return rows


def _progress(row: Measurement) -> None:
    sample = f"  ({row.error_sample})" if row.error_sample else ""
    print(
        f"  {row.key_type} {row.target:8} {row.mode:11} {row.load} {row.variant or '':28} "
        f"{row.rate:9.0f} req/s  cpu {row.proxy_cpu_pct:5.1f}%  "
        f"{_fmt(row.proxy_cpu_us_per_req, 1):>8} µs/req  p99 {_fmt(row.p99_ms, 2)} ms  "
        f"busy {row.cpu_busy_pct}  errors {row.errors}{sample}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
