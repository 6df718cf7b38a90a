"""The README's "Running your own template" walk-through, command by command, as subprocesses.

The Azure quickstart "Deploy an Azure Application Gateway with mTLS passthrough listener" must
run unmodified: ``certs init``, the stub backend on a free port, then ``run`` with the
quickstart template, the generated parameters file, ``--backend`` and ``--listen``. Then the
same template with the edits a user makes next (Strict mode with an uploaded CA chain; a rewrite
rule that forwards the certificate) and the errors a user meets on the way (wrong password,
missing or unknown parameter, a misspelt property, a privileged port).
"""

from __future__ import annotations

import base64
import copy
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from tests.helpers.http import Reply, demo_get, forwarded
from tests.helpers.logs import assert_no_traceback
from tests.helpers.processes import (
    BAD_CERT_TEXT,
    NO_CERT_TEXT,
    READY_LISTENER,
    STUB_LISTENING,
    CliProcess,
    run_to_exit,
    sha1_fingerprint,
    started,
)

QUICKSTART: Final = (
    Path(__file__).parents[1] / "fixtures" / "quickstart" / "deploymentTemplate.json"
)
POOL: Final = "pool2"
LISTENER: Final = "listener2"
GATEWAY_ID: Final = "variables('applicationGatewayID')"


@dataclass(frozen=True)
class Workspace:
    """A directory after ``certs init certs``, with the stub backend running."""

    cwd: Path
    stub_port: int

    @property
    def certs(self) -> Path:
        return self.cwd / "certs"

    def run_args(self, template: Path = QUICKSTART, *extra: str) -> list[str]:
        """The README's ``run`` command line, with ``--listen 444=0`` for a free port."""
        return [
            "run",
            "--template-file",
            str(template),
            "--parameters",
            "@certs/deploymentParameters.json",
            "--backend",
            f"{POOL}=127.0.0.1:{self.stub_port}",
            "--listen",
            "444=0",
            *extra,
        ]

    def get(self, port: int, client: str | None = None, **kwargs: Any) -> Reply:
        return demo_get(port, self.certs, client, **kwargs)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    cwd = tmp_path_factory.mktemp("quickstart")
    init = run_to_exit(["certs", "init", "certs"], cwd=cwd)
    assert init.returncode == 0, init.stderr
    assert "deploymentParameters.json" in init.stdout
    with started(["--port", "0"], cwd=cwd, module="backend_stub") as stub:
        match = stub.wait_for_stdout(STUB_LISTENING)
        yield Workspace(cwd, int(match["port"]))


def _serve(workspace: Workspace, args: list[str]) -> Iterator[tuple[CliProcess, int, str]]:
    """Start ``run``; yields the process, the listener's port and its mode once ready."""
    with started(args, cwd=workspace.cwd) as process:
        ready = process.wait_for_stdout(READY_LISTENER)
        assert ready["listener"] == LISTENER
        assert ready["pool"] == POOL
        yield process, int(ready["port"]), ready["mode"]
        assert process.stop() == 0
        assert_no_traceback(process.stderr)


@pytest.fixture(scope="module")
def quickstart(workspace: Workspace) -> Iterator[tuple[CliProcess, int, str]]:
    """The unmodified quickstart, run exactly as the README shows (with free ports)."""
    yield from _serve(workspace, workspace.run_args())


# -- the template as published -----------------------------------------------------------------


def test_quickstart_runs_unmodified_as_a_passthrough_listener(
    quickstart: tuple[CliProcess, int, str],
) -> None:
    process, port, mode = quickstart
    assert mode == "Passthrough"
    assert port != 444
    stderr = process.stderr
    assert "Microsoft.Network/virtualNetworks 'mtlsVnet' is read and skipped" in stderr
    assert "Microsoft.Network/publicIPAddresses 'mtlsPip' is read and skipped" in stderr
    assert f"warning: backend pool '{POOL}'" in stderr
    assert "(--backend)" in stderr


@pytest.mark.parametrize("client", ["client-expired", None], ids=["expired-cert", "no-cert"])
def test_quickstart_passthrough_forwards_with_or_without_cert(
    workspace: Workspace, quickstart: tuple[CliProcess, int, str], client: str | None
) -> None:
    _process, port, _mode = quickstart
    reply = workspace.get(port, client)
    assert reply.status == 200
    document = reply.json()
    assert document["path"] == "/"
    # The quickstart has no rewrite rule: the certificate is accepted but not forwarded.
    assert document["client_certificate"] is None
    assert forwarded(reply, "X-Forwarded-Port") == ["444"]


# -- parameters ----------------------------------------------------------------------------------


def _run_error(workspace: Workspace, args: list[str]) -> str:
    """Run a command that must fail with exit code 1; returns its ``error:`` block."""
    result = run_to_exit(args, cwd=workspace.cwd)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_no_traceback(result.stderr)
    assert "ready:" not in result.stdout
    assert "error: " in result.stderr, result.stderr
    return result.stderr[result.stderr.index("error: ") :]


def test_wrong_certificate_password_given_later_wins_and_is_refused(workspace: Workspace) -> None:
    error = _run_error(
        workspace, workspace.run_args(QUICKSTART, "--parameters", "certPassword=wrong")
    )
    assert "Data or Password for certificate" in error
    assert "sslCertificates/sslCert is invalid" in error
    assert "[EmulatorSslCertificateInvalidData]" in error
    assert "\n  fix: " in error


def _inline_parameters(workspace: Workspace, *, drop: str) -> list[str]:
    """The parameters file's values as NAME=VALUE arguments, without ``drop``."""
    values = json.loads((workspace.certs / "deploymentParameters.json").read_text())["parameters"]
    return [f"{name}={entry['value']}" for name, entry in values.items() if name != drop]


def test_missing_required_parameter_is_named(workspace: Workspace) -> None:
    args = [
        "run",
        "-f",
        str(QUICKSTART),
        "--parameters",
        *_inline_parameters(workspace, drop="adminUsername"),
        "--listen",
        "444=0",
    ]
    error = _run_error(workspace, args)
    assert "'adminUsername' is not provided" in error
    assert "--parameters adminUsername=VALUE" in error


def test_unknown_parameter_is_refused(workspace: Workspace) -> None:
    error = _run_error(workspace, workspace.run_args(QUICKSTART, "--parameters", "colour=blue"))
    assert "'colour'" in error
    assert "do not correspond to any parameters defined in the template" in error


# -- edited copies of the template ---------------------------------------------------------------


def _quickstart_copy() -> tuple[dict[str, Any], dict[str, Any]]:
    """A deep copy of the quickstart and its gateway's ``properties``."""
    template = copy.deepcopy(json.loads(QUICKSTART.read_text()))
    gateway = next(
        r for r in template["resources"] if r["type"] == "Microsoft.Network/applicationGateways"
    )
    return template, gateway["properties"]


def _write(tmp_path: Path, template: dict[str, Any], name: str = "deploymentTemplate.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(template, indent=2))
    return path


def _ref(collection: str, name: str) -> dict[str, str]:
    return {"id": f"[concat({GATEWAY_ID}, '/{collection}/{name}')]"}


def test_misspelt_property_is_refused_as_invalid_json(workspace: Workspace, tmp_path: Path) -> None:
    template, properties = _quickstart_copy()
    properties["sslProfiles"][0]["properties"]["clientAuthConfiguration"][
        "verifyClientAuthModes"
    ] = "Strict"
    error = _run_error(workspace, workspace.run_args(_write(tmp_path, template)))
    assert "verifyClientAuthModes" in error
    assert "sslProfiles[0].properties.clientAuthConfiguration" in error
    assert "[InvalidJson]" in error


def _strict_copy(workspace: Workspace, tmp_path: Path) -> Path:
    """The quickstart turned Strict: the profile verifies against the uploaded demo CA chain."""
    template, properties = _quickstart_copy()
    chain = (workspace.certs / "trusted-client-ca-chain.pem").read_bytes()
    properties["trustedClientCertificates"] = [
        {"name": "clientca", "properties": {"data": base64.b64encode(chain).decode()}}
    ]
    profile = properties["sslProfiles"][0]["properties"]
    profile["clientAuthConfiguration"]["VerifyClientAuthMode"] = "Strict"
    profile["trustedClientCertificates"] = [_ref("trustedClientCertificates", "clientca")]
    return _write(tmp_path, template, "strict.json")


@pytest.fixture
def strict_run(workspace: Workspace, tmp_path: Path) -> Iterator[tuple[CliProcess, int, str]]:
    yield from _serve(workspace, workspace.run_args(_strict_copy(workspace, tmp_path)))


def test_quickstart_turned_strict_enforces_the_uploaded_ca(
    workspace: Workspace, strict_run: tuple[CliProcess, int, str]
) -> None:
    _process, port, mode = strict_run
    assert mode == "Strict"
    no_cert = workspace.get(port)
    assert no_cert.status == 400
    assert NO_CERT_TEXT.encode() in no_cert.body
    good = workspace.get(port, "client")
    assert good.status == 200
    assert good.json()["path"] == "/"
    expired = workspace.get(port, "client-expired")
    assert expired.status == 400
    assert BAD_CERT_TEXT.encode() in expired.body


@pytest.fixture
def rewrite_run(workspace: Workspace, tmp_path: Path) -> Iterator[tuple[CliProcess, int, str]]:
    """The quickstart with a rewrite rule set forwarding the certificate as X-Client-Cert."""
    template, properties = _quickstart_copy()
    properties["rewriteRuleSets"] = [
        {
            "name": "forward-cert",
            "properties": {
                "rewriteRules": [
                    {
                        "name": "client-cert",
                        "ruleSequence": 100,
                        "actionSet": {
                            "requestHeaderConfigurations": [
                                {
                                    "headerName": "X-Client-Cert",
                                    "headerValue": "{var_client_certificate}",
                                }
                            ]
                        },
                    }
                ]
            },
        }
    ]
    properties["requestRoutingRules"][0]["properties"]["rewriteRuleSet"] = _ref(
        "rewriteRuleSets", "forward-cert"
    )
    yield from _serve(workspace, workspace.run_args(_write(tmp_path, template, "rewrite.json")))


def test_rewrite_rule_forwards_the_client_certificate_to_the_backend(
    workspace: Workspace, rewrite_run: tuple[CliProcess, int, str]
) -> None:
    _process, port, mode = rewrite_run
    assert mode == "Passthrough"
    reply = workspace.get(port, "client-expired")
    assert reply.status == 200
    forwarded = reply.json()["client_certificate"]
    assert forwarded is not None
    assert forwarded["header"] == "X-Client-Cert"
    assert forwarded["sha1_fingerprint"] == sha1_fingerprint(workspace.certs / "client-expired.pem")


def test_rewrite_rule_drops_a_forged_certificate_header(
    workspace: Workspace, rewrite_run: tuple[CliProcess, int, str]
) -> None:
    _process, port, _mode = rewrite_run
    forged = (workspace.certs / "client.pem").read_text().replace("\n", " ")
    reply = workspace.get(port, headers={"X-Client-Cert": forged})
    assert reply.status == 200
    assert reply.json()["client_certificate"] is None
    assert forwarded(reply, "X-Client-Cert") == []


# -- ports ---------------------------------------------------------------------------------------


def _may_bind(port: int) -> bool:
    """Whether this process may bind ``port`` on loopback (root, CAP_NET_BIND_SERVICE, ...)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except PermissionError:
            return False
        except OSError:
            return True  # allowed, only busy
    return True


@pytest.mark.skipif(
    _may_bind(444), reason="this process may bind port 444, so there is no privileged-port error"
)
def test_privileged_template_port_without_listen_names_the_fix(workspace: Workspace) -> None:
    args = workspace.run_args()
    args = args[: args.index("--listen")]
    error = _run_error(workspace, args)
    assert "port 444, which this process may not bind" in error
    assert "--listen 444=" in error


@pytest.mark.skipif(
    not _may_bind(444), reason="this process may not bind port 444 (no root or capability)"
)
def test_privileged_template_port_binds_when_the_process_may(workspace: Workspace) -> None:
    """The check tries the bind: a process allowed to bind 444 serves on it, unmapped."""
    args = workspace.run_args()
    args = args[: args.index("--listen")]
    with started(args, cwd=workspace.cwd) as process:
        ready = process.wait_for_stdout(READY_LISTENER)
        assert int(ready["port"]) == 444
        assert workspace.get(444).status == 200
        assert process.stop() == 0


def test_listen_for_a_port_the_template_does_not_use_is_refused(workspace: Workspace) -> None:
    error = _run_error(workspace, [*workspace.run_args(), "--listen", "445=0"])
    assert "--listen maps template port 445" in error
    assert "--listen 444=PORT" in error


def test_listen_maps_template_port_444_to_a_free_local_port(
    workspace: Workspace, quickstart: tuple[CliProcess, int, str]
) -> None:
    _process, port, _mode = quickstart
    assert port not in (0, 444)
    # Headers still carry the template's port, as in Azure.
    assert forwarded(workspace.get(port), "X-Forwarded-Port") == ["444"]
