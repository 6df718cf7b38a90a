"""The Terraform reader: evaluator, variable precedence, azurerm mapping, azapi merge, plans.

Each test writes a small configuration into a temporary directory and reads it as
``--terraform DIR`` would. Errors are checked for the file and line they name.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from emulator.arm.expressions import DeploymentScope
from emulator.errors import EmulatorError, InvalidConfiguration, TemplateError, UnsupportedFeature
from emulator.terraform import build_config, load_terraform
from emulator.terraform.azapi import merge_body
from emulator.terraform.config import load_directory
from emulator.terraform.plan import load_plan

SCOPE = DeploymentScope()


def _locals(tmp_path: Path, body: str, **kwargs: Any) -> dict[str, Any]:
    """Evaluate every local of ``body`` (HCL written into main.tf)."""
    (tmp_path / "main.tf").write_text(body)
    cfg = load_directory(tmp_path, scope=SCOPE, environ=kwargs.pop("environ", {}), **kwargs)
    return {name: cfg._local(name, "test") for name in cfg.locals}


# -- the evaluator -----------------------------------------------------------------------------


def test_templates_functions_for_expressions_and_operators(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("PEM TEXT\n")
    (tmp_path / "blob.bin").write_bytes(b"\x00\xff")
    values = _locals(
        tmp_path,
        """
variable "env" {
  default = "dev"
}
locals {
  name    = "gw-${var.env}-${1 + 2}"
  same    = "${var.env}"
  cond    = var.env == "prod" ? 3 : -1
  text    = file("${path.module}/ca.pem")
  blob    = filebase64("blob.bin")
  b64     = base64encode("hi")
  json    = jsonencode({ a = [1, true, null], "b c" = "x" })
  squares = [for i, v in [1, 2, 3] : v * v if i != 1]
  byname  = { for k, v in { b = 2, a = 1 } : upper(k) => v }
  first   = [{ n = "x" }, { n = "y" }][*].n
  nested  = { a = { b = ["z"] } }.a.b[0]
  escaped = "$${not} \\"q\\" \\u00e9"
  heredoc = <<-EOT
    line ${var.env}
      indented
    EOT
  logic   = !false && (1 < 2 || false)
}
""",
    )
    assert values["name"] == "gw-dev-3"
    assert values["same"] == "dev"
    assert values["cond"] == -1
    assert values["text"] == "PEM TEXT\n"
    assert values["blob"] == base64.b64encode(b"\x00\xff").decode()
    assert values["b64"] == "aGk="
    assert json.loads(values["json"]) == {"a": [1, True, None], "b c": "x"}
    assert values["squares"] == [1, 9]
    assert values["byname"] == {"A": 1, "B": 2}
    assert values["first"] == ["x", "y"]
    assert values["nested"] == "z"
    assert values["escaped"] == '${not} "q" \u00e9'
    assert values["heredoc"] == "line dev\n  indented\n"
    assert values["logic"] is True


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("nosuchfn(1)", "the function nosuchfn() is not evaluated"),
        ("var.missing", "var.missing is not declared"),
        ("local.nope", "local.nope is not declared"),
        ('file("absent.pem")', "cannot read"),
        ("data.azurerm_key_vault.kv.id", "is read from Azure"),
        ("module.net.subnet_id", "module output"),
        ('"%{ if true }x%{ endif }"', "template directives"),
    ],
)
def test_expression_errors_name_file_and_line(
    tmp_path: Path, expression: str, message: str
) -> None:
    with pytest.raises(TemplateError) as caught:
        _locals(tmp_path, f"locals {{\n  ok = 1\n\n  bad = {expression}\n}}\n")
    assert message in caught.value.message
    assert caught.value.file == f"{tmp_path / 'main.tf'}:4"


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(TemplateError) as caught:
        _locals(tmp_path, "locals {\n  a = 1\n  b = = 2\n}\n")
    assert caught.value.file == f"{tmp_path / 'main.tf'}:3"
    assert caught.value.error_code == "EmulatorTerraformSyntax"


# -- variables ---------------------------------------------------------------------------------

VARIABLE = 'variable "v" {\n  default = "default"\n}\nlocals {\n  v = var.v\n}\n'


@pytest.mark.parametrize(
    ("files", "environ", "args", "expected"),
    [
        ({}, {}, [], "default"),
        ({}, {"TF_VAR_v": "env"}, [], "env"),
        ({"terraform.tfvars": 'v = "tfvars"'}, {"TF_VAR_v": "env"}, [], "tfvars"),
        (
            {"terraform.tfvars": 'v = "tfvars"', "terraform.tfvars.json": '{"v": "json"}'},
            {},
            [],
            "json",
        ),
        (
            {
                "terraform.tfvars.json": '{"v": "json"}',
                "a.auto.tfvars": 'v = "a"',
                "b.auto.tfvars.json": '{"v": "b"}',
            },
            {},
            [],
            "b",
        ),
        ({"b.auto.tfvars": 'v = "auto"'}, {}, [("var", "v=cli")], "cli"),
        ({"x.tfvars": 'v = "file"'}, {}, [("var", "v=cli"), ("file", "x.tfvars")], "file"),
        ({"x.tfvars": 'v = "file"'}, {}, [("file", "x.tfvars"), ("var", "v=cli")], "cli"),
    ],
    ids=[
        "default",
        "env",
        "tfvars-over-env",
        "tfvars-json-over-tfvars",
        "auto-lexical",
        "var-over-auto",
        "var-file-later-wins",
        "var-later-wins",
    ],
)
def test_variable_precedence_is_terraforms(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    files: dict[str, str],
    environ: dict[str, str],
    args: list[tuple[str, str]],
    expected: str,
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text + "\n")
    monkeypatch.chdir(tmp_path)  # --var-file paths are relative to where the command runs
    assert _locals(tmp_path, VARIABLE, environ=environ, var_args=args)["v"] == expected


def test_typed_variables_from_text_and_missing_or_undeclared(tmp_path: Path) -> None:
    body = (
        'variable "n" {\n  type = number\n}\nvariable "m" {\n  type = map(string)\n}\n'
        "locals {\n  n = var.n + 1\n  m = var.m.k\n}\n"
    )
    values = _locals(tmp_path, body, var_args=[("var", "n=41"), ("var", 'm={ k = "v" }')])
    assert values == {"n": 42, "m": "v"}
    with pytest.raises(TemplateError, match="has no value") as caught:
        _locals(tmp_path, body, var_args=[("var", "n=1")])
    assert caught.value.file == f"{tmp_path / 'main.tf'}:4"
    assert "--var m=VALUE" in (caught.value.fix or "")
    with pytest.raises(TemplateError, match="undeclared variable 'colour'"):
        _locals(tmp_path, body, var_args=[("var", "colour=blue")])


# -- the gateway -------------------------------------------------------------------------------

GATEWAY = """
resource "azurerm_application_gateway" "gw" {
  name                = "gw"
  location            = "westus"
  resource_group_name = "rg"
  sku {
    name     = "Standard_v2"
    tier     = "Standard_v2"
    capacity = 1
  }
  frontend_port {
    name = "p"
    port = 8443
  }
  frontend_ip_configuration {
    name = "fe"
  }
  trusted_client_certificate {
    name = "ca"
    data = file("ca.pem")
  }
  ssl_profile {
    name                                = "profile"
    trusted_client_certificate_names    = ["ca"]
    verify_client_certificate_issuer_dn = true
    verify_client_auth_mode             = "Strict"
  }
  backend_address_pool {
    name         = "pool"
    ip_addresses = ["127.0.0.1"]
  }
  backend_http_settings {
    name                  = "s"
    port                  = 8080
    protocol              = "Http"
    cookie_based_affinity = "Disabled"
  }
  rewrite_rule_set {
    name = "rw"
    rewrite_rule {
      name          = "r"
      rule_sequence = 1
      condition {
        variable = "http_req_X"
        pattern  = "abc"
      }
      request_header_configuration {
        header_name  = "X-Seen"
        header_value = "yes"
      }
    }
  }
  http_listener {
    name                           = "l"
    frontend_ip_configuration_name = "fe"
    frontend_port_name             = "p"
    protocol                       = "Http"
  }
  request_routing_rule {
    name                       = "rule"
    rule_type                  = "Basic"
    priority                   = 10
    http_listener_name         = "l"
    backend_address_pool_name  = "pool"
    backend_http_settings_name = "s"
    rewrite_rule_set_name      = "rw"
  }
}
"""


@pytest.fixture
def gateway_dir(tmp_path: Path) -> Path:
    from emulator.pki import CA

    (tmp_path / "ca.pem").write_bytes(CA("Unit Client Root").cert_pem)
    (tmp_path / "main.tf").write_text(GATEWAY)
    return tmp_path


def _resource(directory: Path) -> dict[str, Any]:
    return dict(load_terraform(directory, scope=SCOPE).loaded.gateways[0].resource)


def test_azurerm_defaults_are_written_where_they_differ_from_arm(gateway_dir: Path) -> None:
    props = _resource(gateway_dir)["properties"]
    settings = props["backendHttpSettingsCollection"][0]["properties"]
    assert settings["requestTimeout"] == 30
    condition = props["rewriteRuleSets"][0]["properties"]["rewriteRules"][0]["conditions"][0]
    assert condition["ignoreCase"] is False
    assert condition["negate"] is False
    config = build_config(load_terraform(gateway_dir, scope=SCOPE), None, now=datetime.now(UTC))
    settings_model = config.rules[0].settings
    assert settings_model is not None
    assert settings_model.request_timeout_s == 30


def test_pem_from_file_is_base64_encoded_as_azurerm_does(gateway_dir: Path) -> None:
    props = _resource(gateway_dir)["properties"]
    data = props["trustedClientCertificates"][0]["properties"]["data"]
    assert base64.b64decode(data) == (gateway_dir / "ca.pem").read_bytes()


def test_ssl_profile_spellings_and_auth_mode_api_version(gateway_dir: Path) -> None:
    tf = load_terraform(gateway_dir, scope=SCOPE)
    gateway = tf.loaded.gateways[0]
    auth = gateway.resource["properties"]["sslProfiles"][0]["properties"]["clientAuthConfiguration"]
    assert auth == {"verifyClientCertIssuerDN": True, "verifyClientAuthMode": "Strict"}
    assert gateway.api_version == "2025-05-01"
    profile = build_config(tf, None, now=datetime.now(UTC)).rules[0].listener.ssl_profile
    assert profile is None  # the listener is Http: the profile is declared, not used


def test_unknown_argument_is_reported_with_line_and_suggestion(gateway_dir: Path) -> None:
    text = GATEWAY.replace('    header_value = "yes"', '    header_valeu = "yes"')
    (gateway_dir / "main.tf").write_text(text)
    with pytest.raises(InvalidConfiguration) as caught:
        load_terraform(gateway_dir, scope=SCOPE)
    [problem] = caught.value.problems
    line = next(i for i, x in enumerate(text.splitlines(), 1) if "header_valeu" in x)
    assert problem.file == f"{gateway_dir / 'main.tf'}:{line}"
    assert "did you mean 'header_value'?" in (problem.fix or "")


def test_count_on_the_gateway_points_to_the_plan(gateway_dir: Path) -> None:
    (gateway_dir / "main.tf").write_text(
        GATEWAY.replace('  name                = "gw"', '  count = 2\n  name = "gw"')
    )
    with pytest.raises(TemplateError) as caught:
        load_terraform(gateway_dir, scope=SCOPE)
    assert caught.value.file == f"{gateway_dir / 'main.tf'}:3"
    assert "--terraform-plan" in (caught.value.fix or "")


# -- azapi -------------------------------------------------------------------------------------


def test_azapi_merge_merges_objects_and_replaces_arrays() -> None:
    target: dict[str, Any] = {
        "properties": {
            "sslProfiles": [{"name": "a"}, {"name": "b"}],
            "sku": {"name": "Standard_v2", "capacity": 1},
        }
    }
    merge_body(target, {"Properties": {"sslProfiles": [{"name": "c"}], "sku": {"capacity": 2}}})
    assert target == {
        "properties": {
            "sslProfiles": [{"name": "c"}],
            "sku": {"name": "Standard_v2", "capacity": 2},
        }
    }


def test_azapi_update_sets_passthrough_and_its_api_version(gateway_dir: Path) -> None:
    update = """
resource "azapi_update_resource" "mode" {
  type        = "Microsoft.Network/applicationGateways@2025-03-01"
  resource_id = azurerm_application_gateway.gw.id
  body = jsonencode({
    properties = {
      sslProfiles = [{
        name       = "profile"
        properties = { clientAuthConfiguration = { verifyClientAuthMode = "Passthrough" } }
      }]
    }
  })
}
"""
    (gateway_dir / "main.tf").write_text(GATEWAY + update)
    gateway = load_terraform(gateway_dir, scope=SCOPE).loaded.gateways[0]
    assert gateway.api_version == "2025-03-01"
    [profile] = gateway.resource["properties"]["sslProfiles"]
    assert profile == {
        "name": "profile",
        "properties": {"clientAuthConfiguration": {"verifyClientAuthMode": "Passthrough"}},
    }


def test_azapi_update_of_an_undeclared_gateway_is_an_error(gateway_dir: Path) -> None:
    update = (
        'resource "azapi_update_resource" "x" {\n'
        '  type        = "Microsoft.Network/applicationGateways@2025-03-01"\n'
        '  resource_id = "/subscriptions/1/resourceGroups/rg/providers/'
        'Microsoft.Network/applicationGateways/other"\n  body = {}\n}\n'
    )
    (gateway_dir / "main.tf").write_text(GATEWAY + update)
    with pytest.raises(TemplateError, match="does not declare"):
        load_terraform(gateway_dir, scope=SCOPE)


# -- plans -------------------------------------------------------------------------------------


def test_plan_certificate_unknown_until_apply_names_the_certificate_option(tmp_path: Path) -> None:
    plan = json.loads((Path(__file__).parents[1] / "fixtures/terraform/plan/plan.json").read_text())
    gateway = next(
        r
        for m in plan["planned_values"]["root_module"]["child_modules"]
        for r in m["resources"]
        if r["type"] == "azurerm_application_gateway"
    )
    del gateway["values"]["ssl_certificate"][0]["data"]
    change = next(c for c in plan["resource_changes"] if c["address"] == gateway["address"])
    change["change"]["after_unknown"]["ssl_certificate"][0]["data"] = True
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    with pytest.raises(InvalidConfiguration) as caught:
        load_plan(path, scope=SCOPE)
    problems: list[EmulatorError] = caught.value.problems
    assert any("--certificate sslCert=FILE" in (p.fix or "") for p in problems)
    assert all(p.file and p.file.startswith(str(path)) for p in problems)


def test_a_file_that_is_not_a_plan_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text('{"resources": []}')
    with pytest.raises(TemplateError, match="no planned_values"):
        load_plan(path, scope=SCOPE)


RG = "/subscriptions/1/resourceGroups/rg/providers"
EXTRAS = f"""
  zones              = ["1", "2"]
  tags               = {{ env = "dev" }}
  firewall_policy_id = "{RG}/Microsoft.Network/applicationGatewayWebApplicationFirewallPolicies/p"
  identity {{
    type         = "UserAssigned"
    identity_ids = ["{RG}/Microsoft.ManagedIdentity/userAssignedIdentities/i"]
  }}
  autoscale_configuration {{
    min_capacity = 1
    max_capacity = 3
  }}
  waf_configuration {{
    enabled          = true
    firewall_mode    = "Prevention"
    rule_set_version = "3.2"
  }}
  global {{
    request_buffering_enabled  = true
    response_buffering_enabled = false
  }}
"""


def test_arguments_azure_accepts_are_sorted_like_their_arm_twins(gateway_dir: Path) -> None:
    text = GATEWAY.replace('  location            = "westus"\n', '  location = "westus"\n' + EXTRAS)
    (gateway_dir / "main.tf").write_text(text)
    config = build_config(load_terraform(gateway_dir, scope=SCOPE), None, now=datetime.now(UTC))
    noted = {note.rsplit(".", 1)[-1] for note in config.notes}
    assert {
        "tags",
        "zones",
        "identity",
        "firewallPolicy",
        "autoscaleConfiguration",
        "webApplicationFirewallConfiguration",
    } <= noted
    # The global block is emulated (request and response buffering), not only noted.
    assert "globalConfiguration" not in noted
    assert config.buffering.request is True
    assert config.buffering.response is False


def test_custom_error_pages_are_not_emulated_and_point_at_their_block(gateway_dir: Path) -> None:
    block = (
        "  custom_error_configuration {\n"
        '    status_code           = "HttpStatus502"\n'
        '    custom_error_page_url = "https://example.test/502.html"\n'
        "  }\n"
    )
    text = GATEWAY.replace("  sku {\n", block + "  sku {\n", 1)
    (gateway_dir / "main.tf").write_text(text)
    with pytest.raises(UnsupportedFeature) as caught:
        build_config(load_terraform(gateway_dir, scope=SCOPE), None, now=datetime.now(UTC))
    line = next(i for i, x in enumerate(text.splitlines(), 1) if "custom_error_configuration" in x)
    assert caught.value.file == f"{gateway_dir / 'main.tf'}:{line}"
