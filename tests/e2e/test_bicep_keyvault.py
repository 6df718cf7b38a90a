"""Bicep files, Key Vault certificates and PEM-text CA uploads, run end to end (issue 19).

Each case runs the real command line as a subprocess against the stub backend, and a real TLS
client checks the Strict / Passthrough behaviour through it:

- ``--template-file main.bicep --parameters main.bicepparam`` compiles through a ``bicep``
  executable on ``PATH``. The real compiler cannot be installed here, so the test writes a stub
  ``bicep`` that prints the hand-written compiled fixtures (``tests/fixtures/bicep/``, in
  ``bicep build``'s output shape) and records how it was called;
- the listener certificate comes from Key Vault: supplied with ``--certificate`` (a PFX with
  ``--certificate-password``, or a PEM with its key), or minted by ``--loose`` from the demo
  PKI's server CA;
- the clients' CA chain arrives as PEM text (``loadTextContent``), accepted with a warning;
- a Key Vault reference in a parameters file is replaced by a later ``--parameters NAME=VALUE``.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from tests.helpers.http import Reply, demo_get, forwarded
from tests.helpers.logs import assert_no_traceback
from tests.helpers.processes import (
    NO_CERT_TEXT,
    STUB_LISTENING,
    CliProcess,
    ready_listeners,
    run_to_exit,
    started,
)

FIXTURES: Final = Path(__file__).parents[1] / "fixtures"
BICEP: Final = FIXTURES / "bicep"
QUICKSTART: Final = FIXTURES / "quickstart" / "deploymentTemplate.json"
STRICT: Final = "strict-listener"
PASSTHROUGH: Final = "passthrough-listener"
BICEP_PARAMETERS: Final = ("prefix=contoso", "vaultName=kv-contoso", "identityId=/x/appgw-id")

#: A stand-in for the Bicep CLI: ``build FILE --stdout`` prints FILE's compiled JSON (kept
#: beside the stub), ``build-params FILE --stdout`` prints what the real one prints, an object
#: with ``parametersJson``; every call is appended to calls.log.
STUB_BICEP: Final = """#!{python}
import json, pathlib, sys
here = pathlib.Path(__file__).parent
with open(here / "calls.log", "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
verb, source = sys.argv[1], pathlib.Path(sys.argv[2])
if sys.argv[3:] != ["--stdout"]:
    sys.exit("stub bicep: expected FILE --stdout")
if verb == "build":
    sys.stdout.write((here / "compiled.json").read_text())
elif verb == "build-params":
    parameters = (here / "compiled.parameters.json").read_text()
    template = (here / "compiled.json").read_text()
    json.dump({{"parametersJson": parameters, "templateJson": template}}, sys.stdout)
else:
    sys.exit("stub bicep: unknown command " + verb)
"""


@dataclass(frozen=True)
class Workspace:
    """A directory after ``certs init certs``, with the stub backend running."""

    cwd: Path
    stub_port: int

    @property
    def certs(self) -> Path:
        return self.cwd / "certs"

    def get(self, port: int, client: str | None = None) -> Reply:
        return demo_get(port, self.certs, client)

    @property
    def pfx_password(self) -> str:
        return (self.certs / "server-pfx-password.txt").read_text()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    cwd = tmp_path_factory.mktemp("bicep")
    init = run_to_exit(["certs", "init", "certs"], cwd=cwd)
    assert init.returncode == 0, init.stderr
    with started(["--port", "0"], cwd=cwd, module="backend_stub") as stub:
        match = stub.wait_for_stdout(STUB_LISTENING)
        yield Workspace(cwd, int(match["port"]))


def compiled_template(workspace: Workspace) -> dict[str, Any]:
    """``main.json`` with the demo CA chain as loadTextContent('client-ca.pem') would inline it."""
    template: dict[str, Any] = json.loads((BICEP / "main.json").read_text())
    chain = (workspace.certs / "trusted-client-ca-chain.pem").read_text()
    assert template["variables"]["clientCaPem"].startswith("-----BEGIN CERTIFICATE-----")
    template["variables"]["clientCaPem"] = chain
    return template


@pytest.fixture
def stub_bicep(workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``bicep`` on PATH printing the compiled fixtures; returns its directory (calls.log)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "compiled.json").write_text(json.dumps(compiled_template(workspace), indent=2))
    (bin_dir / "compiled.parameters.json").write_text((BICEP / "main.parameters.json").read_text())
    stub = bin_dir / "bicep"
    stub.write_text(STUB_BICEP.format(python=sys.executable))
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return bin_dir


def _serve(workspace: Workspace, args: list[str]) -> Iterator[tuple[CliProcess, dict[str, int]]]:
    full = [
        "run",
        *args,
        "--backend",
        f"pool=127.0.0.1:{workspace.stub_port}",
        "--listen",
        "443=0",
        "--listen",
        "8443=0",
    ]
    with started(full, cwd=workspace.cwd) as process:
        process.wait_for_stdout(re.compile(r"^ready: passthrough-listener "))
        listeners = ready_listeners(process.stdout_lines)
        assert listeners[STRICT].mode == "Strict"
        assert listeners[PASSTHROUGH].mode == "Passthrough"
        yield process, {name: ready.port for name, ready in listeners.items()}
        assert process.stop() == 0
        assert_no_traceback(process.stderr)


def _check_modes(workspace: Workspace, ports: dict[str, int]) -> None:
    """Strict verifies the uploaded chain; Passthrough forwards whatever the client sent."""
    good = workspace.get(ports[STRICT], "client")
    assert good.status == 200
    assert forwarded(good, "X-Client-Cert-Verification") == ["SUCCESS"]
    assert good.json()["client_certificate"]["subject"].endswith("CN=demo-client")
    missing = workspace.get(ports[STRICT])
    assert missing.status == 400
    assert NO_CERT_TEXT in missing.body.decode()
    expired = workspace.get(ports[PASSTHROUGH], "client-expired")
    assert expired.status == 200
    assert forwarded(expired, "X-Client-Cert-Verification") == ["PASSTHROUGH"]
    bare = workspace.get(ports[PASSTHROUGH])
    assert bare.status == 200
    assert forwarded(bare, "X-Client-Cert-Verification") == ["NONE"]


# -- Bicep ---------------------------------------------------------------------------------------


def test_bicep_file_and_bicepparam_compile_through_bicep_on_path_and_run(
    workspace: Workspace, stub_bicep: Path
) -> None:
    args = [
        "--template-file",
        str(BICEP / "main.bicep"),
        "--parameters",
        str(BICEP / "main.bicepparam"),
        "--certificate",
        "listener-cert=certs/server.pfx",
        "--certificate-password",
        f"listener-cert={workspace.pfx_password}",
    ]
    for process, ports in _serve(workspace, args):
        _check_modes(workspace, ports)
        stderr = process.stderr
        assert "'data' holds PEM text (Bicep loadTextContent)" in stderr
        assert "loadFileAsBase64" in stderr
        assert "sslCertificates 'listener-cert': Key Vault secret replaced by the local file" in (
            stderr
        )
    calls = [json.loads(line) for line in (stub_bicep / "calls.log").read_text().splitlines()]
    assert calls == [
        ["build", str(BICEP / "main.bicep"), "--stdout"],
        ["build-params", str(BICEP / "main.bicepparam"), "--stdout"],
    ]


def test_bicep_without_a_compiler_says_how_to_install_or_what_to_pass(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: neither bicep nor az
    result = run_to_exit(
        ["validate", "--template-file", str(BICEP / "main.bicep"), "-p", *BICEP_PARAMETERS],
        cwd=workspace.cwd,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert_no_traceback(result.stdout + result.stderr)
    assert "neither `bicep` nor `az` is on PATH" in result.stdout
    assert "az bicep install" in result.stdout
    assert "--template-file main.json" in result.stdout
    assert "[EmulatorBicepBuildFailed]" in result.stdout


# -- Key Vault -----------------------------------------------------------------------------------


def test_key_vault_listener_certificate_from_a_pem_with_its_key(
    workspace: Workspace, tmp_path: Path
) -> None:
    """The compiled template as plain ARM JSON; the certificate as ``az keyvault secret
    download`` gives a PEM secret: certificate and key in one file."""
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        pkcs12,
    )

    key, cert, extra = pkcs12.load_key_and_certificates(
        (workspace.certs / "server.pfx").read_bytes(), workspace.pfx_password.encode()
    )
    assert key is not None
    assert cert is not None
    pem = tmp_path / "listener.pem"
    pem.write_bytes(
        cert.public_bytes(Encoding.PEM)
        + b"".join(c.public_bytes(Encoding.PEM) for c in extra)
        + key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    template = tmp_path / "main.json"
    template.write_text(json.dumps(compiled_template(workspace)))
    args = ["-f", str(template), "-p", *BICEP_PARAMETERS, "--certificate", f"listener-cert={pem}"]
    for _process, ports in _serve(workspace, args):
        _check_modes(workspace, ports)


def test_loose_mints_the_key_vault_listener_certificate_from_the_demo_server_ca(
    workspace: Workspace, tmp_path: Path
) -> None:
    template = tmp_path / "main.json"
    template.write_text(json.dumps(compiled_template(workspace)))
    args = ["-f", str(template), "-p", *BICEP_PARAMETERS, "--loose", "--certs", "certs"]
    for process, ports in _serve(workspace, args):
        # The client trusts certs/server-root-ca.pem only: the minted certificate chains to it.
        _check_modes(workspace, ports)
        warnings = [line for line in process.stderr_lines if "development certificate" in line]
        assert len(warnings) == 1
        assert "sslCertificates 'listener-cert'" in warnings[0]
        assert "localhost, 127.0.0.1, ::1" in warnings[0]
        assert "--certificate listener-cert=FILE" in warnings[0]


def test_key_vault_listener_certificate_without_a_file_names_both_fixes(
    workspace: Workspace, tmp_path: Path
) -> None:
    template = tmp_path / "main.json"
    template.write_text(json.dumps(compiled_template(workspace)))
    result = run_to_exit(["run", "-f", str(template), "-p", *BICEP_PARAMETERS], cwd=workspace.cwd)
    assert result.returncode == 1
    assert_no_traceback(result.stderr)
    assert "sslCertificates 'listener-cert' comes from Key Vault" in result.stderr
    assert "--certificate listener-cert=FILE" in result.stderr
    assert "--loose" in result.stderr
    assert "[EmulatorUnsupportedFeature]" in result.stderr


def test_key_vault_parameter_reference_is_replaced_by_a_later_parameter(
    workspace: Workspace, tmp_path: Path
) -> None:
    """A parameters file with ``certPassword`` as a Key Vault reference, then
    ``--parameters certPassword=...``: later wins, the quickstart runs (Passthrough)."""
    parameters = json.loads((workspace.certs / "deploymentParameters.json").read_text())
    parameters["parameters"]["certPassword"] = {
        "reference": {
            "keyVault": {
                "id": "/subscriptions/x/resourceGroups/rg/providers/"
                "Microsoft.KeyVault/vaults/kv-contoso"
            },
            "secretName": "appgw-pfx-password",
        }
    }
    params_file = tmp_path / "kv.parameters.json"
    params_file.write_text(json.dumps(parameters))
    base = ["run", "-f", str(QUICKSTART), "--parameters", f"@{params_file}"]
    refused = run_to_exit([*base, "--listen", "444=0"], cwd=workspace.cwd)
    assert refused.returncode == 1
    assert "Parameter 'certPassword' is a Key Vault reference" in refused.stderr
    assert "--parameters certPassword=VALUE" in refused.stderr

    args = [
        *base,
        "--parameters",
        f"certPassword={workspace.pfx_password}",
        "--backend",
        f"pool2=127.0.0.1:{workspace.stub_port}",
        "--listen",
        "444=0",
    ]
    with started(args, cwd=workspace.cwd) as process:
        process.wait_for_stdout(re.compile(r"^ready: listener2 "))
        ready = ready_listeners(process.stdout_lines)["listener2"]
        assert ready.mode == "Passthrough"
        reply = workspace.get(ready.port, "client-expired")
        assert reply.status == 200
        assert process.stop() == 0


def test_a_bicep_compile_error_shows_the_compilers_diagnostics(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = tmp_path / "bicep"
    stub.write_text(
        f"#!{sys.executable}\nimport sys\n"
        "sys.stderr.write(\"main.bicep(12,5) : Error BCP018: Expected the '}' character.\\n\")\n"
        "sys.exit(1)\n"
    )
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(tmp_path))
    result = run_to_exit(
        ["validate", "-f", str(BICEP / "main.bicep"), "-p", *BICEP_PARAMETERS], cwd=workspace.cwd
    )
    assert result.returncode == 1
    assert_no_traceback(result.stdout + result.stderr)
    assert "`bicep build " in result.stdout
    assert "failed (exit code 1)" in result.stdout
    assert "Error BCP018" in result.stdout
