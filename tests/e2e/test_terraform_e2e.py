"""End to end: Terraform configurations run as gateways, over real TLS, through real backends.

The quickstart's Terraform twin (tests/fixtures/terraform/quickstart, Passthrough set through
azapi) is run exactly as a user would: ``certs init``, the stub backend, then
``run --terraform .`` in the configuration's directory. A Strict edit of it, the plan-JSON form of
a module-based configuration, and the errors a user meets (a misspelt argument, ``count``, a
module) follow. The routing example's twin (tests/fixtures/terraform/routing) is checked to build
the same gateway as examples/routing/gateway.json, then walked over TLS with SNI.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pytest
import trio

from emulator.arm.template import load_template, select_gateway
from emulator.model import build_gateway_config, with_backend_overrides
from emulator.reports.summary import describe
from emulator.runtime.gateway import Gateway
from emulator.terraform import build_config, load_terraform
from tests.helpers.http import Reply, demo_get
from tests.helpers.logs import assert_no_traceback
from tests.helpers.processes import (
    BAD_CERT_TEXT,
    READY_LISTENER,
    STUB_LISTENING,
    ready_listeners,
    run_to_exit,
    started,
)
from tests.helpers.routing import (
    EXAMPLE,
    ORDERS,
    PASSWORD,
    EchoBackend,
    Routing,
    RoutingPki,
    get,
    inventory_tls,
)

FIXTURES: Final = Path(__file__).parents[1] / "fixtures" / "terraform"
QUICKSTART_TF: Final = FIXTURES / "quickstart" / "main.tf"
PLAN: Final = FIXTURES / "plan" / "plan.json"


@dataclass(frozen=True)
class Workspace:
    """A directory holding the quickstart's main.tf and ``certs/``, with the stub running."""

    cwd: Path
    stub_port: int

    @property
    def certs(self) -> Path:
        return self.cwd / "certs"

    def run_args(self, *source: str) -> list[str]:
        return [
            "run",
            *(source or ("--terraform", ".")),
            "--backend",
            f"pool2=127.0.0.1:{self.stub_port}",
            "--listen",
            "444=0",
        ]

    def get(self, port: int, client: str | None = None) -> Reply:
        return demo_get(port, self.certs, client)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    cwd = tmp_path_factory.mktemp("tf-quickstart")
    shutil.copy(QUICKSTART_TF, cwd / "main.tf")
    init = run_to_exit(["certs", "init", "certs"], cwd=cwd)
    assert init.returncode == 0, init.stderr
    with started(["--port", "0"], cwd=cwd, module="backend_stub") as stub:
        match = stub.wait_for_stdout(STUB_LISTENING)
        yield Workspace(cwd, int(match["port"]))


def _serve_and_get(
    workspace: Workspace, args: list[str], clients: list[str | None]
) -> tuple[str, list[Any], str]:
    """Run ``args`` until ready; returns the listener's mode, one reply per client, stderr."""
    with started(args, cwd=workspace.cwd) as process:
        process.wait_for_stdout(READY_LISTENER)
        ready = ready_listeners(process.stdout_lines)["listener2"]
        replies = [workspace.get(ready.port, client) for client in clients]
        assert process.stop() == 0
        assert_no_traceback(process.stderr)
        return ready.mode, replies, process.stderr


def test_terraform_quickstart_runs_as_passthrough_through_azapi(workspace: Workspace) -> None:
    mode, replies, stderr = _serve_and_get(
        workspace, workspace.run_args(), ["client-expired", None, "client"]
    )
    assert mode == "Passthrough"
    # Passthrough: no certificate, an expired one and a good one all reach the backend.
    assert [r.status for r in replies] == [200, 200, 200]
    assert all(r.json()["path"] == "/" for r in replies)
    assert "azurerm_virtual_network 'vnet' is read and skipped" in stderr
    assert "(--backend)" in stderr


def _strict_copy(workspace: Workspace, tmp_path: Path) -> Path:
    """The quickstart without its azapi update and with a trusted client CA: Strict."""
    text = (workspace.cwd / "main.tf").read_text()
    text = text[: text.index('resource "azapi_update_resource"')]
    text = text.replace(
        "    verify_client_certificate_revocation = null\n",
        "    verify_client_certificate_revocation = null\n"
        '    trusted_client_certificate_names     = ["client-ca"]\n',
    ).replace(
        "  backend_address_pool {",
        "  trusted_client_certificate {\n"
        '    name = "client-ca"\n'
        '    data = file("${var.certs_dir}/trusted-client-ca-chain.pem")\n'
        "  }\n\n  backend_address_pool {",
        1,
    )
    directory = tmp_path / "strict"
    directory.mkdir()
    (directory / "main.tf").write_text(text)
    return directory


def test_terraform_strict_edit_refuses_an_expired_certificate(
    workspace: Workspace, tmp_path: Path
) -> None:
    directory = _strict_copy(workspace, tmp_path)
    args = workspace.run_args(
        "--terraform", str(directory), "--var", f"certs_dir={workspace.certs}"
    )
    mode, replies, _stderr = _serve_and_get(workspace, args, ["client", "client-expired"])
    assert mode == "Strict"
    good, expired = replies
    assert good.status == 200
    assert expired.status == 400
    assert BAD_CERT_TEXT.encode() in expired.body


def _materialised_plan(workspace: Workspace, tmp_path: Path) -> Path:
    """The plan fixture with the certificate data of this run's demo PKI filled in."""
    text = PLAN.read_text()
    text = text.replace(
        "<Base64-encoded-PFX-data>",
        base64.b64encode((workspace.certs / "server.pfx").read_bytes()).decode(),
    ).replace("<PFX-password>", (workspace.certs / "server-pfx-password.txt").read_text())
    path = tmp_path / "plan.json"
    path.write_text(text)
    return path


def test_terraform_plan_of_a_module_runs_passthrough_and_warns_of_secrets(
    workspace: Workspace, tmp_path: Path
) -> None:
    plan = _materialised_plan(workspace, tmp_path)
    mode, replies, stderr = _serve_and_get(
        workspace, workspace.run_args("--terraform-plan", str(plan)), ["client-expired", None]
    )
    assert mode == "Passthrough"
    assert [r.status for r in replies] == [200, 200]
    assert f"{plan} holds the configuration's secrets" in stderr


def _error(workspace: Workspace, args: list[str]) -> str:
    result = run_to_exit(args, cwd=workspace.cwd)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_no_traceback(result.stdout + result.stderr)
    return result.stdout + result.stderr


def _edited(workspace: Workspace, tmp_path: Path, old: str, new: str) -> Path:
    text = (workspace.cwd / "main.tf").read_text()
    assert old in text
    directory = tmp_path / "edited"
    directory.mkdir()
    (directory / "main.tf").write_text(text.replace(old, new, 1))
    return directory


def _line_of(directory: Path, text: str) -> int:
    lines = (directory / "main.tf").read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


def test_validate_names_file_line_and_fix_of_a_misspelt_argument(
    workspace: Workspace, tmp_path: Path
) -> None:
    directory = _edited(workspace, tmp_path, "ssl_profile_name ", "ssl_profil_name  ")
    out = _error(
        workspace,
        ["validate", "--terraform", str(directory), "--var", f"certs_dir={workspace.certs}"],
    )
    line = _line_of(directory, "ssl_profil_name")
    assert (
        f"main.tf:{line}: http_listener 'listener2' has no argument or block 'ssl_profil_name'"
        in out
    )
    assert "did you mean 'ssl_profile_name'?" in out
    assert "[EmulatorTerraformArgument]" in out


def test_a_model_error_points_at_the_terraform_block(workspace: Workspace, tmp_path: Path) -> None:
    directory = _edited(workspace, tmp_path, "port = 444", "port = 70000")
    out = _error(
        workspace,
        ["validate", "--terraform", str(directory), "--var", f"certs_dir={workspace.certs}"],
    )
    line = _line_of(directory, "frontend_port {")
    assert f"main.tf:{line}: frontend_port 'port2'" in out
    assert "70000" in out


@pytest.mark.parametrize(
    ("old", "new", "marker", "expected"),
    [
        (
            "  name                = local.gateway_name\n",
            "  count               = 2\n  name                = local.gateway_name\n",
            "count               = 2",
            "uses count",
        ),
        (
            "  resource_group_name = azurerm_resource_group.rg.name\n\n  sku",
            "  resource_group_name = data.azurerm_resource_group.rg.name\n\n  sku",
            "data.azurerm_resource_group.rg.name",
            "data.azurerm_resource_group.rg is read from Azure",
        ),
    ],
    ids=["count-on-the-gateway", "data-source"],
)
def test_what_only_terraform_can_evaluate_points_to_the_plan_option(
    workspace: Workspace, tmp_path: Path, old: str, new: str, marker: str, expected: str
) -> None:
    directory = _edited(workspace, tmp_path, old, new)
    out = _error(workspace, ["validate", "--terraform", str(directory)])
    assert f"main.tf:{_line_of(directory, marker)}: " in out
    assert expected in out
    assert "--terraform-plan plan.json" in out


def test_a_module_only_configuration_points_to_the_plan_option(
    tmp_path: Path, workspace: Workspace
) -> None:
    (tmp_path / "main.tf").write_text('module "gateway" {\n  source = "./modules/gateway"\n}\n')
    out = _error(workspace, ["validate", "--terraform", str(tmp_path)])
    assert "main.tf:1: no azurerm_application_gateway in the root module" in out
    assert "--terraform-plan plan.json" in out


# -- the routing example ----------------------------------------------------------------------


def _routing_vars(pki: RoutingPki, directory: Path) -> list[tuple[str, str]]:
    (directory / "client-ca.pem").write_bytes(pki.client_root.cert_pem + pki.issuing.cert_pem)
    (directory / "backend-root.pem").write_bytes(pki.backend_root.cert_pem)
    certificates = {
        f"{name}-cert": base64.b64encode(cert.pfx(PASSWORD)).decode()
        for name, cert in (("partners", pki.partners), ("api", pki.api), ("www", pki.www))
    }
    # A .tfvars.json file, a --var with an HCL map and plain --var values, in one run.
    (directory / "certs.tfvars.json").write_text(json.dumps({"certificates": certificates}))
    return [
        ("file", str(directory / "certs.tfvars.json")),
        ("var", f"cert_password={PASSWORD}"),
        ("var", f"client_ca_file={directory / 'client-ca.pem'}"),
        ("var", f"backend_root_ca_file={directory / 'backend-root.pem'}"),
    ]


def _comparable(description: dict[str, Any]) -> dict[str, Any]:
    out = dict(description)
    out.pop("resourceId")  # the resource group differs: the Terraform one names its own
    out.pop("notEmulated")  # azurerm requires a gateway_ip_configuration; the example has none
    return out


def test_routing_twin_builds_the_same_gateway_as_the_arm_example(
    rpki: RoutingPki, tmp_path: Path
) -> None:
    tf = build_config(
        load_terraform(FIXTURES / "routing", var_args=_routing_vars(rpki, tmp_path)),
        None,
        now=datetime.now(UTC),
    )
    parameters = {
        key: base64.b64encode(value).decode() if isinstance(value, bytes) else value
        for key, value in rpki.parameters().items()
    }
    arm = build_gateway_config(
        select_gateway(load_template(EXAMPLE, [f"{k}={v}" for k, v in parameters.items()]), None),
        now=datetime.now(UTC),
    )
    assert _comparable(describe(tf)) == _comparable(describe(arm))


@asynccontextmanager
async def running_tf(pki: RoutingPki, directory: Path) -> AsyncIterator[Routing]:
    orders = (EchoBackend("orders-1"), EchoBackend("orders-2"))
    inventory = EchoBackend("inventory", tls=inventory_tls(pki))
    async with trio.open_nursery() as nursery:
        for backend in (*orders, inventory):
            await nursery.start(backend.serve)
        config = build_config(
            load_terraform(FIXTURES / "routing", var_args=_routing_vars(pki, directory)),
            None,
            now=datetime.now(UTC),
        )
        from emulator.model import BackendAddress

        config = with_backend_overrides(
            config,
            {
                "orders-pool": tuple(BackendAddress("127.0.0.1", b.port) for b in orders),
                "inventory-pool": (BackendAddress("127.0.0.1", inventory.port),),
            },
        )
        gateway = Gateway(config, listen={443: 0, 80: 0})
        async with gateway:
            yield Routing(gateway, orders, inventory, pki)
        nursery.cancel_scope.cancel()


async def test_routing_twin_strict_passthrough_and_paths_over_tls(
    rpki: RoutingPki, tmp_path: Path
) -> None:
    async with running_tf(rpki, tmp_path) as routing:
        strict_ok = await get(routing, "/p", sni="partners.contoso.test", cert=rpki.client)
        strict_none = await get(routing, "/p", sni="partners.contoso.test")
        passthrough = await get(routing, "/orders/7", sni="api.contoso.test", cert=rpki.expired)
        shop = await get(routing, "/shop/42", sni="api.contoso.test")
        legacy = await get(routing, "/legacy/x?a=1", sni="api.contoso.test")

    assert (strict_ok.status, strict_ok.server_cn) == (200, "partners.contoso.test")
    assert strict_ok.backend in ORDERS
    assert strict_ok.forwarded("X-Client-Cert-Verification") == ["SUCCESS"]
    assert strict_none.status == 400
    assert (passthrough.status, passthrough.server_cn) == (200, "api.contoso.test")
    assert passthrough.forwarded("X-Client-Cert-Verification") != ["SUCCESS"]
    assert passthrough.forwarded("X-Client-Cert-Verification")
    # The rewrite (condition with ignore_case) reroutes /shop/42 to the inventory backend.
    assert shop.status == 200
    assert shop.backend == "inventory"
    assert shop.reply.json()["target"].startswith("/v2/")
    assert legacy.status == 302
    assert dict((k.lower(), v) for k, v in legacy.reply.headers)["location"] == (
        "https://www.contoso.test/new?a=1"
    )
