"""The container image (issue #20, item 1), built and run with podman, reached from the host.

One image is built per test session (``--format docker``: the OCI format has no HEALTHCHECK)
and used by every test here: ``up`` with a host directory mounted at ``/certs`` (the demo PKI
is written there, so the host client trusts the server CA and presents the demo client
certificate), and ``run`` with a template, parameters and certificates mounted at ``/config``.
Each container is checked with ``podman healthcheck run`` (the image's own HEALTHCHECK, which
uses ``appgw-emulator wait``, not curl) before real mutual-TLS requests go to it.

Only ``--network host`` is used: it is what these machines support (see the README); ``-p``
publishing is the same image with different podman networking and is not exercised here.

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
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from emulator.demo import write_demo_template
from emulator.pki.demo import write_demo_pki
from tests.helpers.ports import free_ports
from tests.helpers.processes import STUB_LISTENING, started

REPO: Final = Path(__file__).resolve().parents[2]
BASE_IMAGE: Final = "docker.io/library/debian:bookworm-slim"
IMAGE: Final = "localhost/appgw-emulator:test"
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
        yield Podman(settings.prefix, settings.env, time.monotonic() - started_at)


@dataclass(frozen=True)
class Container:
    name: str
    healthy_after_s: float


@contextmanager
def _container(
    podman: Podman, mounts: dict[Path, str], env: dict[str, str], args: Sequence[str] = ()
) -> Iterator[Container]:
    """``podman run -d`` the image; yields once its HEALTHCHECK passes; always removed."""
    name = f"appgw-emulator-test-{os.getpid()}-{time.monotonic_ns()}"
    options = ["--name", name, "--network", "host"]
    for host_path, target in mounts.items():
        options += ["-v", f"{host_path}:{target}"]
    for key, value in env.items():
        options += ["-e", f"{key}={value}"]
    started_at = time.monotonic()
    podman("run", "-d", *options, IMAGE, *args)
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


def test_run_in_a_container_with_a_mounted_template(podman: Podman, tmp_path: Path) -> None:
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
        }
        with _container(podman, {config: "/config"}, env, ["run"]) as container:
            print(f"run: podman run to healthy in {container.healthy_after_s:.1f} s")
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


def test_testcontainers_module_waits_on_health_and_gives_urls_and_server_ca(
    docker_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("testcontainers", reason="pip install '.[testcontainers]'")
    from emulator.testcontainers import AppGwEmulatorContainer

    # The Ryuk reaper image cannot be pulled here; the container is removed by the block.
    monkeypatch.setenv("DOCKER_HOST", docker_api)
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
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
    container = AppGwEmulatorContainer(
        IMAGE, volumes=[(str(certs), "/certs", "rw")], env=env, host_network=True
    )
    with container as appgw:
        assert appgw.get_url("strict-listener") == f"https://localhost:{strict}/"
        server_ca = appgw.server_ca()
        status, document = _https(strict, server_ca, certs)
        assert status == 200
        assert _headers(document, "X-Client-Cert-Verification") == ["SUCCESS"]
        port = int(appgw.get_url("passthrough-listener").rsplit(":", 1)[1].rstrip("/"))
        status, document = _https(port, server_ca, None)
        assert status == 200
        with pytest.raises(KeyError, match="strict-listener"):
            appgw.get_url("no-such-listener")
