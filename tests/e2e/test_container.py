"""The container image (issue #20, item 1), built and run with podman, reached from the host.

One image is built per test session (``--format docker``: the OCI format has no HEALTHCHECK)
and used by every test here: ``up`` with a host directory mounted at ``/certs`` (the demo PKI
is written there, so the host client trusts the server CA and presents the demo client
certificate), and ``run`` with a template, parameters and certificates mounted at ``/config``.
Each container is checked with ``podman healthcheck run`` (the image's own HEALTHCHECK, which
uses ``appgw-emulator wait``, not curl) before real mutual-TLS requests go to it.

Most containers share the host's network (``--network host``: the ports are the host's, and a
backend on the host's loopback is reachable); one runs on podman's default bridge network with
its ports published (``-p 127.0.0.1:HOST:CONTAINER``), the way the README tells users to run it.

No registry is reachable here, so the ``debian:bookworm-slim`` base is made from Debian's
packages with debootstrap when it is missing, and the build mounts this machine's pip settings
and CA bundle (users elsewhere build with a plain ``podman build``). Everything skips, with
the reason, where podman cannot run a container.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from emulator.arm.demo_template import write_demo_template
from emulator.pki.demo import write_demo_pki
from tests.helpers.pki import write_demo_parameters
from tests.helpers.ports import free_ports
from tests.helpers.processes import STUB_LISTENING, started

REPO: Final = Path(__file__).resolve().parents[2]
BASE_IMAGE: Final = "docker.io/library/debian:bookworm-slim"
#: One tag per test session: sessions of other checkouts on the same machine share podman's
#: image store, and each must test the image of its own tree (the layers stay cached).
IMAGE: Final = f"localhost/appgw-emulator:test-{os.getpid()}"
#: The image's non-root user (Containerfile): a mounted directory must be writable for it.
IMAGE_UID: Final = 10001
#: Bounds of the slow steps on a loaded 2-core runner (each took well under half of it here).
DEBOOTSTRAP_TIMEOUT_S: Final = 600
BUILD_TIMEOUT_S: Final = 600
#: From ``podman run`` to a passing health check (about 3 s here).
HEALTHY_TIMEOUT_S: Final = 60.0
PODMAN_TIMEOUT_S: Final = 60
REQUEST_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True)
class Podman:
    """How to call podman on this machine, and the image built for this session."""

    prefix: tuple[str, ...]
    env: dict[str, str]
    build_s: float = 0.0

    def __call__(
        self, *args: str, timeout: float = PODMAN_TIMEOUT_S, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.prefix, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(f"podman {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result


def _podman_settings(tmp: Path) -> Podman:
    """podman with this machine's two settings: runc (crun fails on its hybrid cgroups) and no
    default rlimits (the runtimes may not set them here). Harmless where they are not needed."""
    env = dict(os.environ)
    if "CONTAINERS_CONF" not in env:
        conf = tmp / "containers.conf"
        conf.write_text("[containers]\ndefault_ulimits = []\n")
        env["CONTAINERS_CONF"] = str(conf)
    prefix: tuple[str, ...] = ("podman",)
    if shutil.which("runc"):
        prefix = (*prefix, "--runtime", "runc")
    return Podman(prefix, env)


def _ensure_base(podman: Podman, tmp: Path) -> None:
    if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        pytest.skip(f"{BASE_IMAGE} is missing and cannot be made here (debootstrap as root)")
    rootfs = tmp / "rootfs"
    made = subprocess.run(
        ["debootstrap", "--variant=minbase", "bookworm", str(rootfs)],
        capture_output=True,
        text=True,
        timeout=DEBOOTSTRAP_TIMEOUT_S,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"debootstrap could not make {BASE_IMAGE}: {made.stderr.strip()[-300:]}")
    with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
        imported = subprocess.run(
            [*podman.prefix, "import", "-", BASE_IMAGE],
            stdin=tar.stdout,
            env=podman.env,
            capture_output=True,
            timeout=DEBOOTSTRAP_TIMEOUT_S,
            check=False,
        )
    shutil.rmtree(rootfs, ignore_errors=True)
    assert imported.returncode == 0, imported.stderr


@pytest.fixture(scope="session")
def podman() -> Iterator[Podman]:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (.ci/run installs it when root and apt-get work)")
    with tempfile.TemporaryDirectory(prefix="appgw-podman-") as name:
        tmp = Path(name)
        settings = _podman_settings(tmp)
        info = settings("info", check=False)
        if info.returncode != 0:
            pytest.skip(f"podman cannot run here: {info.stderr.strip()[-300:]}")
        _ensure_base(settings, tmp)
        build = [
            "build",
            "--format",
            "docker",
            "--pull=never",
            "--network",
            "host",
            "-t",
            IMAGE,
        ]
        # This machine reaches the package index only through its own CA bundle. Mounted at a
        # path of its own: the image's ca-certificates package writes the usual one.
        bundle = Path("/etc/ssl/certs/ca-certificates.crt")
        if bundle.is_file():
            pip_conf = tmp / "pip.conf"
            pip_conf.write_text("[global]\ncert = /run/build-ca.crt\n")
            build += ["-v", f"{pip_conf}:/etc/pip.conf:ro", "-v", f"{bundle}:/run/build-ca.crt:ro"]
        started_at = time.monotonic()
        settings(*build, str(REPO), timeout=BUILD_TIMEOUT_S)
        try:
            yield Podman(settings.prefix, settings.env, time.monotonic() - started_at)
        finally:
            settings("rmi", "--force", IMAGE, check=False)


@dataclass(frozen=True)
class Container:
    name: str
    healthy_after_s: float


@contextmanager
def _container(
    podman: Podman,
    mounts: dict[Path, str],
    env: dict[str, str],
    args: Sequence[str] = (),
    *,
    publish: Mapping[int, int] | None = None,
    podman_options: Sequence[str] = (),
) -> Iterator[Container]:
    """``podman run -d`` the image; yields once its HEALTHCHECK passes; always removed.

    ``publish`` maps host port → container port (``-p 127.0.0.1:HOST:CONTAINER``, on podman's
    default bridge network); without it the container shares the host's network.
    """
    name = f"appgw-emulator-test-{os.getpid()}-{time.monotonic_ns()}"
    options = ["--name", name]
    if publish is None:
        options += ["--network", "host"]
    for host_port, container_port in (publish or {}).items():
        options += ["-p", f"127.0.0.1:{host_port}:{container_port}"]
    options += podman_options
    for host_path, target in mounts.items():
        options += ["-v", f"{host_path}:{target}"]
    for key, value in env.items():
        options += ["-e", f"{key}={value}"]
    started_at = time.monotonic()
    created = podman("run", "-d", *options, IMAGE, *args, check=False)
    if created.returncode != 0:
        podman("rm", "-f", name, check=False)
        if publish is not None:
            pytest.skip(
                "podman cannot publish ports here (-p needs podman's bridge network, set up "
                "by netavark with iptables or nftables when root, by rootlessport otherwise): "
                f"{created.stderr.strip()[-300:]}"
            )
        pytest.fail(f"podman run failed ({created.returncode}):\n{created.stderr}")
    try:
        deadline = started_at + HEALTHY_TIMEOUT_S
        while podman("healthcheck", "run", name, check=False).returncode != 0:
            state = podman("inspect", name, "--format", "{{.State.Status}}", check=False)
            if state.stdout.strip() not in ("running", "created"):
                logs = podman("logs", name, check=False)
                pytest.fail(f"container exited:\n{logs.stdout}\n{logs.stderr}")
            assert time.monotonic() < deadline, podman("logs", name, check=False).stderr
            time.sleep(0.25)
        yield Container(name, time.monotonic() - started_at)
        stopped = podman("stop", "-t", "10", name, check=False)
        assert stopped.returncode == 0, stopped.stderr
        code = podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
        logs = podman("logs", name, check=False)
        assert code == "0", logs.stderr
        assert "Traceback" not in logs.stderr, logs.stderr
    finally:
        podman("rm", "-f", name, check=False)


def _https(port: int, ca_pem: bytes, client_dir: Path | None) -> tuple[int, dict[str, object]]:
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    if client_dir is not None:
        ctx.load_cert_chain(client_dir / "client.pem", client_dir / "client.key")
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=REQUEST_TIMEOUT_S)
    with closing(conn):
        conn.request("GET", "/from-the-host")
        response = conn.getresponse()
        body = response.read()
    try:
        document = json.loads(body)
    except ValueError:
        document = {"text": body.decode("utf-8", "replace")}
    return response.status, document


def _http(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    with closing(conn):
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()


def _headers(document: dict[str, object], name: str) -> list[str]:
    headers = document.get("headers", [])
    assert isinstance(headers, list)
    return [value for key, value in headers if key.lower() == name.lower()]


def _writable_for_image(directory: Path) -> None:
    """What a user does before mounting a host directory: let uid 10001 write into it."""
    if os.geteuid() == 0:
        for path in [directory, *directory.rglob("*")]:
            os.chown(path, IMAGE_UID, IMAGE_UID)
    else:
        directory.chmod(0o777)


def test_image_has_the_healthcheck_and_the_documented_defaults(podman: Podman) -> None:
    inspected = json.loads(podman("image", "inspect", IMAGE).stdout)[0]
    config = inspected["Config"]
    assert config["Entrypoint"] == ["appgw-emulator"]
    assert config["Cmd"] == ["up"]
    assert config["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert set(config["ExposedPorts"]) == {"8443/tcp", "9443/tcp", "8000/tcp"}
    healthcheck = inspected["Healthcheck"]
    assert healthcheck["Test"][:3] == ["CMD", "appgw-emulator", "wait"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["APPGW_EMULATOR_BIND"] == "0.0.0.0"
    assert env["APPGW_EMULATOR_DASHBOARD_BIND"] == "0.0.0.0"
    size_mb = int(inspected["Size"]) / 1e6
    print(f"image {IMAGE}: {size_mb:.0f} MB, built in {podman.build_s:.0f} s")


def test_up_in_a_container_serves_both_modes_to_the_host(podman: Podman, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    _writable_for_image(certs)
    strict, passthrough, dashboard = free_ports(3)
    env = {
        "APPGW_EMULATOR_STRICT_PORT": str(strict),
        "APPGW_EMULATOR_PASSTHROUGH_PORT": str(passthrough),
        "APPGW_EMULATOR_BACKEND_PORT": "0",
        "APPGW_EMULATOR_DASHBOARD_PORT": str(dashboard),
    }
    with _container(podman, {certs: "/certs"}, env) as container:
        print(f"up: podman run to healthy in {container.healthy_after_s:.1f} s")
        status, health = _http(dashboard, "/health")
        assert status == 200
        assert json.loads(health)["listeners"] == {
            "strict-listener": f"0.0.0.0:{strict}",
            "passthrough-listener": f"0.0.0.0:{passthrough}",
        }
        status, server_ca = _http(dashboard, "/api/server-ca")
        assert status == 200
        # The demo PKI was written to the mounted directory: the host trusts and presents it.
        assert (certs / "server-root-ca.pem").read_bytes() in server_ca
        status, document = _https(strict, server_ca, certs)
        assert status == 200
        assert _headers(document, "X-Client-Cert-Verification") == ["SUCCESS"]
        status, document = _https(strict, server_ca, None)
        assert status == 400
        assert "No required SSL certificate was sent" in str(document)
        status, document = _https(passthrough, server_ca, certs)
        assert status == 200
        assert _headers(document, "X-Client-Cert-Verification") == ["PASSTHROUGH"]


def test_up_with_published_ports_serves_both_modes_to_the_host(
    podman: Podman, tmp_path: Path
) -> None:
    """``-p`` publishing, as the README runs the image: the container's own default ports
    (8443, 9443, 8000) on podman's bridge network, published on free host ports."""
    certs = tmp_path / "certs"
    certs.mkdir()
    _writable_for_image(certs)
    strict, passthrough, dashboard = free_ports(3)
    publish = {strict: 8443, passthrough: 9443, dashboard: 8000}
    with _container(podman, {certs: "/certs"}, {}, publish=publish) as container:
        print(f"up -p: podman run to healthy in {container.healthy_after_s:.1f} s")
        inspected = json.loads(podman("inspect", container.name).stdout)[0]
        assert inspected["HostConfig"]["NetworkMode"] != "host"
        status, health = _http(dashboard, "/health")
        assert status == 200
        # The addresses inside the container; the host reaches them through the published ports.
        assert json.loads(health)["listeners"] == {
            "strict-listener": "0.0.0.0:8443",
            "passthrough-listener": "0.0.0.0:9443",
        }
        server_ca = (certs / "server-root-ca.pem").read_bytes()
        status, document = _https(strict, server_ca, certs)
        assert status == 200
        assert _headers(document, "X-Client-Cert-Verification") == ["SUCCESS"]
        # The template's port, as in Azure: the published host port is not the gateway's.
        assert _headers(document, "X-Forwarded-Port") == ["8443"]
        status, document = _https(strict, server_ca, None)
        assert status == 400
        assert "No required SSL certificate was sent" in str(document)
        status, document = _https(passthrough, server_ca, certs)
        assert status == 200
        assert _headers(document, "X-Client-Cert-Verification") == ["PASSTHROUGH"]
        # The stub backend stays on the container's loopback: its 8080 refuses a connection
        # even at the container's own address, where the gateway's 8443 accepts.
        address = inspected["NetworkSettings"]["IPAddress"]
        assert address
        assert _connects(address, 8443)
        assert not _connects(address, 8080)


def _connects(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(REQUEST_TIMEOUT_S)
        return sock.connect_ex((host, port)) == 0


def test_privileged_port_is_tried_not_predicted_from_the_uid(
    podman: Podman, tmp_path: Path
) -> None:
    """The image's user is uid 10001, not root: port 444 fails with the fix in the container's
    default network namespace, and binds where ``ip_unprivileged_port_start`` is 0."""
    certs = tmp_path / "certs"
    certs.mkdir()
    _writable_for_image(certs)
    refused = podman(
        "run", "--rm", "-v", f"{certs}:/certs", IMAGE, "up", "--strict-port", "444",
        "--no-dashboard", check=False,
    )  # fmt: skip
    assert refused.returncode == 1, refused.stderr
    assert "uses port 444, which this process may not bind" in refused.stderr
    assert "[EmulatorPrivilegedPort]" in refused.stderr
    assert "fix: choose a port above 1023: --strict-port PORT" in refused.stderr
    assert "Traceback" not in refused.stderr

    (strict,) = free_ports(1)
    with _container(
        podman,
        {certs: "/certs"},
        {},
        ["up", "--strict-port", "444"],
        publish={strict: 444},
        podman_options=["--sysctl", "net.ipv4.ip_unprivileged_port_start=0"],
    ) as container:
        logs = podman("logs", container.name).stdout
        assert "ready: strict-listener (Strict) https://localhost:444/" in logs
        server_ca = (certs / "server-root-ca.pem").read_bytes()
        status, document = _https(strict, server_ca, certs)
        assert status == 200
        assert _headers(document, "X-Forwarded-Port") == ["444"]
        assert _headers(document, "X-Client-Cert-Verification") == ["SUCCESS"]


@pytest.mark.parametrize("workers", [1, 2])
def test_run_in_a_container_with_a_mounted_template(
    podman: Podman, tmp_path: Path, workers: int
) -> None:
    config = tmp_path / "config"
    pki = write_demo_pki(config / "certs")
    strict, passthrough, dashboard = free_ports(3)
    with started(["--port", "0"], cwd=tmp_path, module="backend_stub") as stub:
        stub_port = int(stub.wait_for_stdout(STUB_LISTENING)["port"])
        write_demo_template(
            config,
            strict_port=8443,
            passthrough_port=9443,
            backend_host="127.0.0.1",
            backend_port=stub_port,
        )
        parameters = {
            "$schema": "https://schema.management.azure.com/schemas/2019-04-01/"
            "deploymentParameters.json#",
            "contentVersion": "1.0.0.0",
            "parameters": {
                "certData": {"value": base64.b64encode(pki.server_pfx).decode()},
                "certPassword": {"value": pki.server_pfx_password},
                "trustedClientCaData": {
                    "value": base64.b64encode(pki.trusted_client_ca_pem).decode()
                },
            },
        }
        (config / "parameters.json").write_text(json.dumps(parameters))
        _writable_for_image(config)
        env = {
            # Configured the way a compose file would: every option from the environment.
            "APPGW_EMULATOR_TEMPLATE_FILE": "/config/up-gateway.json",
            "APPGW_EMULATOR_PARAMETERS": "@/config/parameters.json",
            "APPGW_EMULATOR_LISTEN": f"8443={strict}\n9443={passthrough}",
            "APPGW_EMULATOR_DASHBOARD_PORT": str(dashboard),
            "APPGW_EMULATOR_WORKERS": str(workers),
        }
        with _container(podman, {config: "/config"}, env, ["run"]) as container:
            took = container.healthy_after_s
            print(f"run --workers {workers}: podman run to healthy in {took:.1f} s")
            # The image's HEALTHCHECK passed: with --workers the supervisor answers /health on
            # the dashboard port, counting every worker.
            status, health = _http(dashboard, "/health")
            assert status == 200
            if workers > 1:
                assert json.loads(health)["workers"]["ready"] == workers
            server_ca = (config / "certs" / "server-root-ca.pem").read_bytes()
            status, document = _https(strict, server_ca, config / "certs")
            assert status == 200
            assert document["path"] == "/from-the-host"
            assert _headers(document, "X-Client-Cert-Verification") == ["SUCCESS"]
            status, _document = _https(strict, server_ca, None)
            assert status == 400
            status, document = _https(passthrough, server_ca, config / "certs")
            assert status == 200
            assert _headers(document, "X-Client-Cert-Verification") == ["PASSTHROUGH"]


@pytest.fixture
def docker_api(podman: Podman, tmp_path: Path) -> Iterator[str]:
    """podman's Docker-compatible API on a socket of this test, stopped by its PID after."""
    socket_path = tmp_path / "podman.sock"
    service = subprocess.Popen(
        [*podman.prefix, "system", "service", "--time=0", f"unix://{socket_path}"],
        env=podman.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + PODMAN_TIMEOUT_S
        while not socket_path.exists():
            if service.poll() is not None or time.monotonic() > deadline:
                stderr = service.stderr.read() if service.stderr is not None else b""
                pytest.skip(f"podman system service did not start: {stderr!r}")
            time.sleep(0.05)
        yield f"unix://{socket_path}"
    finally:
        service.terminate()
        try:
            service.wait(timeout=10)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()


@pytest.mark.parametrize("host_network", [False, True], ids=["published-ports", "host-network"])
def test_testcontainers_module_waits_on_health_and_gives_urls_and_server_ca(
    docker_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host_network: bool
) -> None:
    pytest.importorskip("testcontainers", reason="pip install '.[testcontainers]'")
    from emulator.testcontainers import AppGwEmulatorContainer

    # The Ryuk reaper image cannot be pulled here; the container is removed by the block.
    monkeypatch.setenv("DOCKER_HOST", docker_api)
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
    # These CI machines are containers themselves (/.dockerenv), which makes testcontainers
    # reach published ports through a Docker-in-Docker gateway; podman runs beside this process,
    # so the ports are on this machine's own loopback.
    # (TESTCONTAINERS_CONNECTION_MODE=docker_host, read when testcontainers is imported.)
    from testcontainers.core.config import ConnectionMode, testcontainers_config

    monkeypatch.setattr(
        testcontainers_config, "connection_mode_override", ConnectionMode.docker_host
    )
    certs = tmp_path / "certs"
    certs.mkdir()
    _writable_for_image(certs)
    env: dict[str, str] = {}
    if host_network:  # the host's ports: free ones, chosen here
        strict, passthrough, dashboard = free_ports(3)
        env = {
            "APPGW_EMULATOR_STRICT_PORT": str(strict),
            "APPGW_EMULATOR_PASSTHROUGH_PORT": str(passthrough),
            "APPGW_EMULATOR_BACKEND_PORT": "0",
            "APPGW_EMULATOR_DASHBOARD_PORT": str(dashboard),
        }
    container = AppGwEmulatorContainer(
        IMAGE, volumes=[(str(certs), "/certs", "rw")], env=env, host_network=host_network
    )
    with container as appgw:
        url = appgw.get_url("strict-listener")
        assert url.startswith("https://localhost:")
        strict = int(url.rsplit(":", 1)[1].rstrip("/"))
        if host_network:
            assert url == f"https://localhost:{env['APPGW_EMULATOR_STRICT_PORT']}/"
        else:  # a host port podman chose, published to the container's 8443
            assert strict != 8443
        server_ca = appgw.server_ca()
        status, document = _https(strict, server_ca, certs)
        assert status == 200
        assert _headers(document, "X-Client-Cert-Verification") == ["SUCCESS"]
        status, _document = _https(strict, server_ca, None)
        assert status == 400
        port = int(appgw.get_url("passthrough-listener").rsplit(":", 1)[1].rstrip("/"))
        status, document = _https(port, server_ca, None)
        assert status == 200
        with pytest.raises(KeyError, match="strict-listener"):
            appgw.get_url("no-such-listener")


NODE_PROJECT: Final = REPO / "examples" / "testcontainers" / "node"
README: Final = REPO / "README.md"
#: The README's Node snippet, checked after it ran: two HTTPS requests, with and without the
#: demo client certificate, then the container is stopped (testcontainers' own ``stop``).
NODE_CHECK: Final = """
  const https = require("node:https");
  const fs = require("node:fs");
  const get = (options) => new Promise((resolve, reject) => {
    const request = https.get(`${url}from-node`, { ...options, timeout: 10000 }, (response) => {
      let body = "";
      response.setEncoding("utf8");
      response.on("data", (chunk) => { body += chunk; });
      response.on("end", () => resolve({ status: response.statusCode, body }));
    });
    request.on("timeout", () => request.destroy(new Error("timed out")));
    request.on("error", reject);
  });
  try {
    const ca = fs.readFileSync("config/certs/server-root-ca.pem");
    const withCert = await get({
      ca,
      cert: fs.readFileSync("config/certs/client.pem"),
      key: fs.readFileSync("config/certs/client.key"),
    });
    const without = await get({ ca });
    console.log(JSON.stringify({ url, withCert, without }));
  } finally {
    await appgw.stop();
  }
"""


def _readme_node_snippet() -> str:
    """The ```javascript block of the README, as a user copies it."""
    text = README.read_text(encoding="utf-8")
    start = text.index("```javascript\n") + len("```javascript\n")
    return text[start : text.index("```", start)]


def test_readme_node_snippet_runs_against_the_image(
    podman: Podman, docker_api: str, tmp_path: Path
) -> None:
    """The README's Node testcontainers snippet, verbatim but for the image's tag, run with
    node against podman's Docker API: the wait on /health, the published ports, then real
    mutual TLS from Node to the mapped Strict port."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (.ci/run installs nodejs and npm when it can)")
    if not (NODE_PROJECT / "node_modules" / "testcontainers" / "package.json").is_file():
        pytest.skip(
            f"the testcontainers npm package is not installed: run `npm ci` in {NODE_PROJECT} "
            "(.ci/run does)"
        )
    snippet = _readme_node_snippet()
    assert '"appgw-emulator:latest"' in snippet
    # The backend: the stub from the same image, on podman's bridge network only (never
    # published: it trusts X-Client-Cert), so the gateway in the snippet's container reaches it.
    stub = f"appgw-emulator-test-stub-{os.getpid()}-{time.monotonic_ns()}"
    podman(
        "run", "-d", "--name", stub, "--entrypoint", "python", IMAGE,
        "-m", "backend_stub", "--host", "0.0.0.0", "--port", "8080",
    )  # fmt: skip
    try:
        stub_ip = json.loads(podman("inspect", stub).stdout)[0]["NetworkSettings"]["IPAddress"]
        assert stub_ip, "the stub container has no address on podman's bridge network"
        config = tmp_path / "config"
        pki = write_demo_pki(config / "certs")
        template = write_demo_template(
            config,
            strict_port=443,  # the snippet's `--listen 443=8443`
            passthrough_port=9443,
            backend_host=stub_ip,
            backend_port=8080,
        )
        template.rename(config / "gateway.json")
        write_demo_parameters(pki, config / "parameters.json")
        for path in [config, *config.rglob("*")]:  # mounted read-only for uid 10001
            path.chmod(0o755 if path.is_dir() else 0o644)
        script = tmp_path / "snippet.js"
        body = snippet.replace('"appgw-emulator:latest"', json.dumps(IMAGE))
        script.write_text(
            "(async () => {\n" + body + NODE_CHECK + "\n})().catch((error) => {\n"
            "  console.error(error);\n  process.exit(1);\n});\n"
        )
        env = dict(podman.env)
        env.update(
            DOCKER_HOST=docker_api,
            # The Ryuk reaper image cannot be pulled here; the script stops its container.
            TESTCONTAINERS_RYUK_DISABLED="true",
            NODE_PATH=str(NODE_PROJECT / "node_modules"),
        )
        started_at = time.monotonic()
        ran = subprocess.run(
            [node, str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=HEALTHY_TIMEOUT_S + 60,
            check=False,
        )
        print(f"node snippet: {time.monotonic() - started_at:.1f} s")
        assert ran.returncode == 0, ran.stderr
        result = json.loads(ran.stdout.strip().splitlines()[-1])
        assert result["url"].startswith("https://localhost:")
        assert result["withCert"]["status"] == 200, result
        echoed = json.loads(result["withCert"]["body"])
        assert echoed["path"] == "/from-node"
        assert _headers(echoed, "X-Client-Cert-Verification") == ["SUCCESS"]
        assert result["without"]["status"] == 400
        assert "No required SSL certificate was sent" in result["without"]["body"]
    finally:
        podman("rm", "-f", stub, check=False)
        leftover = podman("ps", "-a", "--filter", f"ancestor={IMAGE}", "-q", check=False)
        for container_id in leftover.stdout.split():
            podman("rm", "-f", container_id, check=False)
