"""Secrets stay secret (issue #10, item 7): PFX passwords and private keys never appear in
logs, errors or the ``validate`` summary, and generated keys are owner-only (0600).

The commands run as a user would run them, at ``--log-level debug``, with a password and keys
made for this test; every byte they print (stdout and stderr) is searched for the password and
for the keys in every encoding a careless log line could use (PEM lines, DER as hex or base64,
the raw private scalar).
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from emulator.arm.demo_template import PASSTHROUGH_LISTENER, STRICT_LISTENER, write_demo_template
from emulator.errors import EmulatorError
from emulator.pki import IssuedCert
from emulator.runtime.gateway import Gateway
from tests.helpers.http import https_get
from tests.helpers.logs import assert_no_traceback
from tests.helpers.pki import PkiBundle
from tests.helpers.processes import (
    READY_LISTENER,
    CliProcess,
    ready_listeners,
    run_to_exit,
    started,
)

#: Printed by the commands on purpose: the parameters' names, never their values.
PASSWORD_PREFIX = "pfx-secret-"


def key_fragments(key_pem: bytes) -> list[str]:
    """Strings that would betray ``key_pem`` if they appeared anywhere in output."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    fragments = []
    for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL):
        pem = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
        der = key.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption())
        # Every full base64 line of the PEM body (the last, short line may be too generic).
        fragments += [
            line for line in pem.decode().splitlines() if len(line) == 64 and "-" not in line
        ]
        fragments += [der.hex()[64:128], der.hex().upper()[64:128]]
        fragments.append(base64.b64encode(der).decode()[40:100])
    if isinstance(key, ec.EllipticCurvePrivateKey):
        fragments.append(format(key.private_numbers().private_value, "x"))
    elif isinstance(key, rsa.RSAPrivateKey):
        fragments.append(format(key.private_numbers().d, "x")[:64])
    return fragments


def assert_no_secret(text: str, password: str, keys: list[bytes]) -> None:
    assert password not in text
    for key_pem in keys:
        for fragment in key_fragments(key_pem):
            assert fragment not in text, f"key material in the output: {fragment[:16]}..."
    assert "PRIVATE KEY" not in text


def parameters(pki: PkiBundle, password: str, *, pfx_password: str | None = None) -> list[str]:
    """Template parameters with the server PFX locked by ``pfx_password`` (default: the same
    ``password`` the template passes)."""
    pfx = pki.server.pfx(pfx_password if pfx_password is not None else password)
    return [
        "certData=" + base64.b64encode(pfx).decode(),
        f"certPassword={password}",
        "trustedClientCaData=" + base64.b64encode(pki.trusted_client_ca_pem).decode(),
    ]


@pytest.fixture
def password() -> str:
    return PASSWORD_PREFIX + secrets.token_hex(12)


@pytest.fixture
def template(tmp_path: Path) -> Path:
    return write_demo_template(
        tmp_path, strict_port=8443, passthrough_port=9443, backend_host="127.0.0.1", backend_port=1
    )


def _all_output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + "\n" + result.stderr


@pytest.mark.parametrize("output", ["text", "json"])
def test_validate_summary_shows_no_password_and_no_key(
    tmp_path: Path, pki: PkiBundle, template: Path, password: str, output: str
) -> None:
    result = run_to_exit(
        [
            "--log-level",
            "debug",
            "validate",
            "-f",
            str(template),
            "--output",
            output,
            "-p",
            *parameters(pki, password),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert_no_secret(_all_output(result), password, [pki.server.key_pem])


def test_a_wrong_pfx_password_is_reported_without_either_password(
    tmp_path: Path, pki: PkiBundle, template: Path, password: str
) -> None:
    real = PASSWORD_PREFIX + "real-" + secrets.token_hex(8)
    result = run_to_exit(
        [
            "--log-level",
            "debug",
            "validate",
            "-f",
            str(template),
            "-p",
            *parameters(pki, password, pfx_password=real),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 1
    text = _all_output(result)
    assert "password" in text.lower()  # the error says what is wrong...
    assert_no_secret(text, password, [pki.server.key_pem])  # ...without saying the secret
    assert real not in text
    assert_no_traceback(text)


def test_a_private_key_in_the_trusted_ca_upload_is_refused_without_echoing_it(
    tmp_path: Path, pki: PkiBundle, template: Path, password: str
) -> None:
    upload = pki.trusted_client_ca_pem + pki.expired.key_pem
    params = parameters(pki, password)
    params[2] = "trustedClientCaData=" + base64.b64encode(upload).decode()
    result = run_to_exit(
        ["--log-level", "debug", "validate", "-f", str(template), "-p", *params], cwd=tmp_path
    )
    assert result.returncode == 1
    text = _all_output(result)
    assert "MustNotHavePrivateKey" in text
    assert_no_secret(text, password, [pki.expired.key_pem, pki.server.key_pem])


def test_library_error_for_a_wrong_password_carries_no_password(
    pki: PkiBundle, template: Path, password: str
) -> None:
    real = PASSWORD_PREFIX + "real-" + secrets.token_hex(8)
    with pytest.raises(EmulatorError) as caught:
        Gateway.from_template(template, parameters(pki, password, pfx_password=real))
    text = f"{caught.value}\n{caught.value!r}\n{caught.value.fix}"
    assert password not in text
    assert real not in text


def _serve_a_few_requests(process: CliProcess, tmp_path: Path, pki: PkiBundle) -> None:
    # Listeners print their ready lines in rule order; the Passthrough one comes last.
    process.wait_for_stdout(re.compile(rf"^ready: {PASSTHROUGH_LISTENER} "))
    listeners = ready_listeners(process.stdout_lines)
    cafile = tmp_path / "server-ca.pem"
    cafile.write_bytes(pki.server_root.cert_pem)
    cert = tmp_path / "client.pem"
    key = tmp_path / "client.key"
    cert.write_bytes(pki.client.cert_pem)
    key.write_bytes(pki.client.key_pem)
    strict = listeners[STRICT_LISTENER].port
    assert https_get(strict, cafile=cafile, cert=cert, key=key).status == 502  # no backend
    assert https_get(strict, cafile=cafile).status == 400
    assert https_get(listeners[PASSTHROUGH_LISTENER].port, cafile=cafile).status == 502


def test_run_at_debug_level_logs_no_password_and_no_key(
    tmp_path: Path, pki: PkiBundle, template: Path, password: str
) -> None:
    params_file = tmp_path / "parameters.json"
    params_file.write_text(
        '{"parameters": {'
        + ", ".join(
            f'"{name}": {{"value": "{value}"}}'
            for name, value in (p.split("=", 1) for p in parameters(pki, password))
        )
        + "}}"
    )
    args = [
        "--log-level",
        "debug",
        "run",
        "-f",
        str(template),
        "-p",
        f"@{params_file}",
        "--listen",
        "8443=0",
        "--listen",
        "9443=0",
        "--access-log",
        "-",
    ]
    with started(args, cwd=tmp_path) as process:
        _serve_a_few_requests(process, tmp_path, pki)
        assert process.stop(signal.SIGTERM) == 0, process.describe()
    text = process.stdout + "\n" + process.stderr
    assert "tls.client_cert" in text  # debug logging really was on
    assert_no_secret(text, password, [pki.server.key_pem, pki.client.key_pem])
    assert_no_traceback(text)


SECRET_SUFFIXES = (".key", ".pfx")


def _secret_files(directory: Path) -> list[Path]:
    """Files holding a private key or a password: by name, or by content for PEM keys."""
    found = []
    for path in sorted(directory.iterdir()):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if (
            path.suffix in SECRET_SUFFIXES
            or b"PRIVATE KEY" in data
            or "password" in path.name
            or path.name == "deploymentParameters.json"
        ):
            found.append(path)
    return found


@pytest.mark.parametrize("command", ["certs-init", "up"])
def test_generated_keys_and_passwords_are_owner_only_even_with_umask_0(
    tmp_path: Path, command: str
) -> None:
    certs = tmp_path / "certs"
    if command == "certs-init":
        args = [sys.executable, "-m", "emulator", "certs", "init", str(certs)]
        result = subprocess.run(
            args,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            preexec_fn=lambda: os.umask(0),
        )
        assert result.returncode == 0, result.stderr
    else:
        old = os.umask(0)
        try:
            with started(
                [
                    "up",
                    "--certs",
                    str(certs),
                    "--strict-port",
                    "0",
                    "--passthrough-port",
                    "0",
                    "--backend-port",
                    "0",
                    "--no-dashboard",
                ],
                cwd=tmp_path,
            ) as process:
                process.wait_for_stdout(READY_LISTENER)
                assert process.stop(signal.SIGTERM) == 0
        finally:
            os.umask(old)
    secret = _secret_files(certs)
    assert any(p.suffix == ".key" for p in secret)
    assert any(p.suffix == ".pfx" for p in secret)
    for path in secret:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_issued_cert_writes_its_key_owner_only_for_the_ssl_module(pki: PkiBundle) -> None:
    # configure_ssl_context goes through a temporary key file; it must never be readable by
    # others, even for the moment it exists. Observe it by wrapping ``load_cert_chain``.
    import ssl

    modes: list[int] = []

    class Spy(ssl.SSLContext):
        def load_cert_chain(self, certfile, keyfile=None, password=None):  # type: ignore[no-untyped-def]
            modes.append(stat.S_IMODE(Path(keyfile).stat().st_mode))
            super().load_cert_chain(certfile, keyfile, password)

    cert: IssuedCert = pki.client
    cert.configure_ssl_context(Spy(ssl.PROTOCOL_TLS_CLIENT))
    assert modes == [0o600]
