"""The Spring Boot / Tomcat recipe, run for real with Debian's tomcat10: ``SSLValve`` with
``sslClientEscapedCertHeader`` reads App Gateway's URL-encoded PEM behind the running gateway,
and the application sees every header vector's certificate (serial, validity, Unicode subject).

Skipped with the reason where tomcat10 or a JDK is missing (``apt-get install tomcat10-common
libtomcat10-java default-jdk-headless``); Maven Central, which a Spring Boot build needs, is not
reachable here, so the valve runs in plain Tomcat with a one-class servlet.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from emulator.cli.header_vectors import write_vectors
from emulator.loading import load_config
from emulator.model import BackendAddress, with_backend_overrides
from emulator.runtime.gateway import Gateway
from tests.helpers.http import https_request
from tests.helpers.pki import PkiBundle, template_parameters
from tests.helpers.ports import free_port

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "mtls_api" / "gateway.json"
RECIPE = ROOT / "examples" / "backends" / "tomcat"
CATALINA_HOME = Path("/usr/share/tomcat10")
SERVLET_API = CATALINA_HOME / "lib" / "servlet-api.jar"
#: Tomcat starts in about 2 s here; a loaded CI machine gets a generous margin.
START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 15


@pytest.fixture
def tomcat(tmp_path: Path) -> Iterator[int]:
    javac = shutil.which("javac")
    if not (CATALINA_HOME / "bin" / "catalina.sh").is_file() or not SERVLET_API.is_file():
        pytest.skip("tomcat10 is not installed (apt-get install tomcat10-common libtomcat10-java)")
    if javac is None:
        pytest.skip("no JDK to compile the servlet (apt-get install default-jdk-headless)")
    base = tmp_path / "tomcat"
    classes = base / "webapps" / "ROOT" / "WEB-INF" / "classes"
    for name in ("conf", "logs", "temp", "work"):
        (base / name).mkdir(parents=True)
    classes.mkdir(parents=True)
    shutil.copy(RECIPE / "server.xml", base / "conf" / "server.xml")
    shutil.copy(RECIPE / "web.xml", classes.parent / "web.xml")
    subprocess.run(
        [javac, "-cp", str(SERVLET_API), "-d", str(classes), str(RECIPE / "CertServlet.java")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = free_port()
    env = {
        **os.environ,
        "CATALINA_HOME": str(CATALINA_HOME),
        "CATALINA_BASE": str(base),
        "CATALINA_OPTS": f"-Dappgw.example.port={port}",
    }
    log = (base / "logs" / "console.log").open("wb")
    # `catalina.sh run` execs java, so this PID is Tomcat's.
    process = subprocess.Popen(
        [str(CATALINA_HOME / "bin" / "catalina.sh"), "run"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, (base / "logs" / "console.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "tomcat did not start"
                time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def test_sslvalve_sees_every_vector_certificate_behind_the_gateway(
    tomcat: int, pki: PkiBundle, tmp_path: Path
) -> None:
    vectors_dir = tmp_path / "vectors"
    write_vectors(vectors_dir)
    vectors = json.loads((vectors_dir / "vectors.json").read_text(encoding="utf-8"))["vectors"]
    config = with_backend_overrides(
        load_config(EXAMPLE, template_parameters(pki)),
        {"orders-api": (BackendAddress("127.0.0.1", tomcat),)},
    )
    gateway = Gateway(config, listen={443: 0, 444: 0})
    async with gateway:
        port = gateway.port("passthrough-listener")
        for vector in vectors:
            ctx = ssl.create_default_context(cadata=pki.server_root.cert_pem.decode())
            ctx.load_cert_chain(
                vectors_dir / vector["files"]["certificate"], vectors_dir / vector["files"]["key"]
            )
            reply = await https_request(port, ctx, "/")
            assert reply.status == 200, (vector["name"], reply.body)
            seen = reply.json()
            expected = vector["expected"]
            assert seen["serialDecimal"] == expected["serialNumber"]["decimal"], vector["name"]
            not_after = datetime.fromisoformat(expected["notAfter"]).timestamp() * 1000
            assert seen["notAfterEpochMs"] == not_after
            if vector["name"] == "unicode-dn":
                assert seen["subject"] == "CN=Jürgen Müller,O=Société Générale,L=東京"
        # Without a certificate the rewrite rule deletes the header: Tomcat sees none.
        bare = ssl.create_default_context(cadata=pki.server_root.cert_pem.decode())
        assert (await https_request(port, bare, "/")).status == 401
