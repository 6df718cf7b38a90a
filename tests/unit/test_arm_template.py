"""Loading templates: the Azure quickstart unmodified, parameters as the Azure CLI passes them."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from emulator.arm.expressions import DeploymentScope
from emulator.arm.template import LoadedTemplate, load_template, select_gateway
from emulator.errors import TemplateError, UnsupportedFeature

QUICKSTART = Path(__file__).parent.parent / "fixtures" / "quickstart"
TEMPLATE = QUICKSTART / "deploymentTemplate.json"
PARAMS_FILE = QUICKSTART / "deploymentParameters.json"
REQUIRED = ["certData=QUJD", "certPassword=pw", "adminUsername=u", "adminSSHKey=k"]
SUB = "00000000-0000-0000-0000-000000000000"
GW_ID = (
    f"/subscriptions/{SUB}/resourceGroups/appgw-emulator/providers/"
    "Microsoft.Network/applicationGateways/mtlsAppGw"
)


def write_template(
    tmp_path: Path,
    parameters: dict[str, Any] | None = None,
    resources: Any = None,
    **extra: Any,
) -> Path:
    template: dict[str, Any] = {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "parameters": parameters or {},
        "resources": resources
        if resources is not None
        else [
            {
                "type": "Microsoft.Network/applicationGateways",
                "apiVersion": "2024-05-01",
                "name": "gw",
                "properties": {},
            }
        ],
        **extra,
    }
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template))
    return path


def load_params(tmp_path: Path, declared: dict[str, Any], *args: str) -> dict[str, Any]:
    loaded = load_template(write_template(tmp_path, declared), args)
    return dict(loaded.parameters)


# --- the quickstart, unmodified --------------------------------------------------------------


def quickstart(*args: str) -> LoadedTemplate:
    return load_template(TEMPLATE, args or REQUIRED)


def test_quickstart_fixture_is_the_unmodified_seed() -> None:
    seeds = Path("/work/shared/seeds")
    if not seeds.is_dir():
        pytest.skip("shared seeds not present")
    for name in ("deploymentTemplate.json", "deploymentParameters.json"):
        assert (QUICKSTART / name).read_bytes() == (seeds / name).read_bytes()


def test_quickstart_yields_one_gateway_with_evaluated_ids() -> None:
    loaded = quickstart()
    gateway = select_gateway(loaded, None)
    assert gateway.name == "mtlsAppGw"
    assert gateway.api_version == "2025-03-01"
    assert gateway.resource_id == GW_ID
    assert gateway.location == "westeurope"
    assert gateway.json_path == "resources[2]"
    assert gateway.file == str(TEMPLATE)
    props = gateway.resource["properties"]
    listener = props["httpListeners"][0]["properties"]
    assert listener["FrontendPort"]["Id"] == f"{GW_ID}/frontendPorts/port2"
    assert listener["sslProfile"]["id"] == f"{GW_ID}/sslProfiles/sslnotrustedcert"
    assert props["sslProfiles"][0]["id"] == f"{GW_ID}/sslProfiles/sslnotrustedcert"
    assert props["sslCertificates"][0]["properties"] == {"data": "QUJD", "password": "pw"}
    assert props["gatewayIPConfigurations"][0]["properties"]["subnet"]["id"] == (
        f"/subscriptions/{SUB}/resourceGroups/appgw-emulator/providers/"
        "Microsoft.Network/virtualNetworks/mtlsVnet/subnets/appgwsubnet"
    )
    assert gateway.resource["dependsOn"] == [
        "Microsoft.Network/virtualNetworks/mtlsVnet",
        "Microsoft.Network/publicIPAddresses/mtlsPip",
    ]


def test_quickstart_skips_vnet_and_public_ip_by_type_and_name() -> None:
    assert quickstart().skipped == (
        ("Microsoft.Network/virtualNetworks", "mtlsVnet"),
        ("Microsoft.Network/publicIPAddresses", "mtlsPip"),
    )


def test_quickstart_parameters_are_typed_and_secure_ones_flagged() -> None:
    loaded = quickstart()
    assert loaded.parameters["capacity"] == 2
    assert loaded.parameters["skuName"] == "Standard_Medium"  # the template default
    assert loaded.secure_parameters == frozenset({"adminSSHKey", "certPassword"})


def test_quickstart_parameters_file_then_cli_value_later_wins() -> None:
    loaded = quickstart(f"@{PARAMS_FILE}", "certData=QUJD")
    assert loaded.parameters["certData"] == "QUJD"
    assert loaded.parameters["skuName"] == "Standard_v2"  # from the file
    assert loaded.parameters["adminUsername"] == "ubuntu"
    gateway = select_gateway(loaded, "MTLSAPPGW")
    assert gateway.resource["properties"]["sslCertificates"][0]["properties"]["data"] == "QUJD"


def test_quickstart_cli_value_then_parameters_file_later_wins() -> None:
    loaded = quickstart("certData=QUJD", f"@{PARAMS_FILE}")
    assert loaded.parameters["certData"] == "<Base64-encoded-PFX-data>"


def test_quickstart_missing_admin_username_names_it_with_fix() -> None:
    with pytest.raises(TemplateError) as info:
        quickstart("certData=QUJD", "certPassword=pw", "adminSSHKey=k")
    err = info.value
    assert "'adminUsername' is not provided" in err.message
    assert err.file == str(TEMPLATE)
    assert err.path == "parameters.adminUsername"
    assert err.fix is not None
    assert "--parameters adminUsername=VALUE" in err.fix
    assert err.error_code == "InvalidTemplate"


def test_scope_changes_ids_and_location(tmp_path: Path) -> None:
    scope = DeploymentScope(subscription_id="s1", resource_group="rg1", location="eastus")
    gateway = select_gateway(load_template(TEMPLATE, REQUIRED, scope=scope), None)
    assert gateway.resource_id == (
        "/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.Network/applicationGateways/"
        "mtlsAppGw"
    )
    assert gateway.location == "eastus"


# --- parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "text", "expected"),
    [
        ("string", "a=b", "a=b"),
        ("String", "42", "42"),
        ("securestring", "s3cret", "s3cret"),
        ("int", "42", 42),
        ("Int", "-7", -7),
        ("bool", "True", True),
        ("bool", "false", False),
        ("array", '["a", 1]', ["a", 1]),
        ("object", '{"k": "v"}', {"k": "v"}),
        ("secureObject", '{"k": 1}', {"k": 1}),
    ],
)
def test_name_value_is_converted_to_declared_type(
    tmp_path: Path, type_: str, text: str, expected: Any
) -> None:
    values = load_params(tmp_path, {"p": {"type": type_}}, f"p={text}")
    assert values == {"p": expected}


@pytest.mark.parametrize(
    ("type_", "text", "pattern"),
    [
        ("int", "two", r"expects an integer, got 'two'"),
        ("bool", "yes", r"expects true or false"),
        ("array", "[1,", r"not valid JSON"),
        (
            "object",
            "[1]",
            r"Expected a value of type 'Object', but received a value of type 'Array'",
        ),
    ],
)
def test_name_value_of_wrong_type_is_rejected(
    tmp_path: Path, type_: str, text: str, pattern: str
) -> None:
    with pytest.raises(TemplateError, match=pattern) as info:
        load_params(tmp_path, {"p": {"type": type_}}, f"p={text}")
    assert info.value.path == "parameters.p"


def test_parameter_names_are_case_insensitive(tmp_path: Path) -> None:
    values = load_params(tmp_path, {"SkuName": {"type": "string"}}, "skuname=x")
    assert values == {"SkuName": "x"}


def test_unknown_parameter_is_rejected_like_arm(tmp_path: Path) -> None:
    with pytest.raises(TemplateError) as info:
        load_params(tmp_path, {"known": {"type": "string"}}, "known=1", "typo=2")
    assert "do not correspond to any parameters defined in the template: 'typo'" in str(info.value)
    assert info.value.error_code == "InvalidTemplate"
    assert info.value.fix is not None
    assert "known" in info.value.fix


@pytest.mark.parametrize(
    ("definition", "arg", "pattern"),
    [
        ({"type": "string", "allowedValues": ["a", "b"]}, "p=c",
         r"not part of the allowed value\(s\): 'a, b'"),
        ({"type": "array", "allowedValues": ["a", "b"]}, 'p=["a","z"]', r"allowed value"),
        ({"type": "int", "minValue": 1}, "p=0", r"greater than or equal to 1"),
        ({"type": "int", "maxValue": 5}, "p=6", r"less than or equal to 5"),
        ({"type": "string", "minLength": 3}, "p=ab", r"Length of the value should be greater"),
        ({"type": "array", "maxLength": 1}, "p=[1,2]", r"Length of the value should be less"),
    ],
)  # fmt: skip
def test_parameter_constraints_are_enforced(
    tmp_path: Path, definition: dict[str, Any], arg: str, pattern: str
) -> None:
    with pytest.raises(TemplateError, match=pattern) as info:
        load_params(tmp_path, {"p": definition}, arg)
    assert info.value.path == "parameters.p"


def test_allowed_values_compare_strings_case_insensitively(tmp_path: Path) -> None:
    definition = {"type": "string", "allowedValues": ["Standard_v2", "WAF_v2"]}
    assert load_params(tmp_path, {"p": definition}, "p=standard_V2") == {"p": "standard_V2"}


def test_secure_value_is_not_printed_in_errors(tmp_path: Path) -> None:
    definition = {"type": "securestring", "minLength": 12}
    with pytest.raises(TemplateError) as info:
        load_params(tmp_path, {"pw": definition}, "pw=hunter2")
    assert "hunter2" not in str(info.value)


def test_default_value_expression_may_use_later_parameters_and_resource_group(
    tmp_path: Path,
) -> None:
    declared = {
        "full": {"type": "string", "defaultValue": "[concat(parameters('base'), '-x')]"},
        "base": {"type": "string", "defaultValue": "[resourceGroup().location]"},
        "stamp": {"type": "string", "defaultValue": "[utcNow('yyyyMMdd')]"},
    }
    loaded = load_template(write_template(tmp_path, declared), now=datetime(2024, 1, 2, tzinfo=UTC))
    assert dict(loaded.parameters) == {
        "full": "westeurope-x",
        "base": "westeurope",
        "stamp": "20240102",
    }


def test_default_value_of_wrong_type_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"Expected a value of type 'Integer'"):
        load_params(tmp_path, {"n": {"type": "int", "defaultValue": "3"}})


def test_inline_json_parameters_in_both_shapes(tmp_path: Path) -> None:
    declared = {"a": {"type": "int"}, "b": {"type": "array"}}
    bare = '{"a": {"value": 1}, "b": {"value": [true]}}'
    wrapped = '{"$schema": "x", "parameters": {"a": {"value": 2}, "b": {"value": []}}}'
    assert load_params(tmp_path, declared, bare) == {"a": 1, "b": [True]}
    assert load_params(tmp_path, declared, bare, wrapped) == {"a": 2, "b": []}


def test_parameters_file_with_bad_json_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "params.json"
    bad.write_text('{\n  "parameters": {\n    "p": {"value": 1},,\n  }\n}\n')
    with pytest.raises(TemplateError) as info:
        load_params(tmp_path, {"p": {"type": "int"}}, f"@{bad}")
    assert info.value.file == str(bad)
    assert "line 3" in info.value.message
    assert "not valid JSON" in info.value.message


def test_parameters_file_value_of_wrong_type_names_file_and_path(tmp_path: Path) -> None:
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"parameters": {"capacity": {"value": "2"}}}))
    with pytest.raises(TemplateError, match=r"Expected a value of type 'Integer'") as info:
        load_params(tmp_path, {"capacity": {"type": "int"}}, f"@{params}")
    assert info.value.file == str(params)
    assert info.value.path == "parameters.capacity"


def test_key_vault_reference_explains_offline_use(tmp_path: Path) -> None:
    params = tmp_path / "params.json"
    reference = {"keyVault": {"id": "/subscriptions/x/vaults/kv"}, "secretName": "pfx"}
    params.write_text(json.dumps({"parameters": {"cert": {"reference": reference}}}))
    with pytest.raises(TemplateError, match=r"Key Vault reference.*offline") as info:
        load_params(tmp_path, {"cert": {"type": "securestring"}}, f"@{params}")
    assert info.value.fix is not None
    assert "--parameters cert=VALUE" in info.value.fix


def test_later_parameter_replaces_a_key_vault_reference_and_the_reverse(tmp_path: Path) -> None:
    """Issue 19: the error's own fix (``--parameters cert=VALUE``) works, and later wins both
    ways: a Key Vault file after the value brings the error back."""
    params = tmp_path / "params.json"
    reference = {"keyVault": {"id": "/subscriptions/x/vaults/kv"}, "secretName": "pfx"}
    params.write_text(json.dumps({"parameters": {"cert": {"reference": reference}}}))
    declared = {"cert": {"type": "securestring"}}

    assert load_params(tmp_path, declared, f"@{params}", "cert=local") == {"cert": "local"}
    with pytest.raises(TemplateError, match=r"Key Vault reference") as info:
        load_params(tmp_path, declared, "cert=local", f"@{params}")
    assert info.value.file == str(params)


def test_missing_parameters_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"Cannot read the parameters file"):
        load_params(tmp_path, {}, f"@{tmp_path / 'nope.json'}")


# --- template structure ------------------------------------------------------------------------


def test_template_json_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('{\n  "resources": [\n    {"type": "x" "name": "y"}\n  ]\n}\n')
    with pytest.raises(TemplateError) as info:
        load_template(path)
    assert info.value.file == str(path)
    assert "line 3, column 18" in info.value.message


def test_template_comments_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(
        '{\n  // a comment\n  "resources": [ /* none */ ],\n  "variables": {"u": "http://x"}\n}'
    )
    assert load_template(path).gateways == ()


def test_template_without_resources_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('{"parameters": {}}')
    with pytest.raises(TemplateError, match=r"no 'resources'"):
        load_template(path)


def test_unknown_top_level_member_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"Could not find member 'resourcez'"):
        load_template(write_template(tmp_path, resourcez=[]))


def test_top_level_keys_are_case_insensitive(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(
        json.dumps(
            {
                "Parameters": {"n": {"Type": "String", "DefaultValue": "g"}},
                "Variables": {"v": "[parameters('n')]"},
                "Resources": [
                    {
                        "Type": "microsoft.network/applicationgateways",
                        "ApiVersion": "2024-05-01",
                        "Name": "[variables('v')]",
                    }
                ],
            }
        )
    )
    assert select_gateway(load_template(path), None).name == "g"


def test_symbolic_name_resources_are_accepted(tmp_path: Path) -> None:
    resources = {
        "pip": {"type": "Microsoft.Network/publicIPAddresses", "apiVersion": "1", "name": "p"},
        "gw": {"type": "Microsoft.Network/applicationGateways", "apiVersion": "2", "name": "g"},
    }
    loaded = load_template(write_template(tmp_path, resources=resources, languageVersion="2.0"))
    assert loaded.gateways[0].json_path == "resources.gw"
    assert loaded.skipped == (("Microsoft.Network/publicIPAddresses", "p"),)


def test_other_resources_properties_are_not_evaluated(tmp_path: Path) -> None:
    resources = [
        {
            "type": "Microsoft.Storage/storageAccounts",
            "apiVersion": "1",
            "name": "[concat('st', uniqueString(resourceGroup().id))]",
            "properties": {"key": "[listKeys('x', '1').keys[0].value]"},
        },
        {"type": "Microsoft.Network/applicationGateways", "apiVersion": "2", "name": "g"},
    ]
    loaded = load_template(write_template(tmp_path, resources=resources))
    assert loaded.skipped[0][1].startswith("st")
    assert len(loaded.skipped[0][1]) == 15


def test_gateway_expression_error_is_located_in_the_resource(tmp_path: Path) -> None:
    resources = [
        {
            "type": "Microsoft.Network/applicationGateways",
            "apiVersion": "2",
            "name": "g",
            "properties": {"sslProfiles": [{"id": "[reference('x').id]"}]},
        }
    ]
    path = write_template(tmp_path, resources=resources)
    with pytest.raises(TemplateError) as info:
        load_template(path)
    assert info.value.file == str(path)
    assert info.value.path == "resources[0].properties.sslProfiles[0].id"
    assert "'reference'" in info.value.message


def test_false_condition_skips_the_gateway(tmp_path: Path) -> None:
    resources = [
        {"type": "Microsoft.Network/applicationGateways", "apiVersion": "2", "name": "g",
         "condition": "[equals(parameters('deploy'), 'yes')]"},
    ]  # fmt: skip
    declared = {"deploy": {"type": "string", "defaultValue": "no"}}
    loaded = load_template(write_template(tmp_path, declared, resources))
    assert loaded.gateways == ()
    assert loaded.skipped == (("Microsoft.Network/applicationGateways", "g"),)


def test_resource_copy_loop_yields_one_gateway_per_index(tmp_path: Path) -> None:
    resources = [
        {
            "type": "Microsoft.Network/applicationGateways",
            "apiVersion": "2",
            "name": "[concat('gw', copyIndex(1))]",
            "copy": {"name": "gws", "count": 2},
        }
    ]
    loaded = load_template(write_template(tmp_path, resources=resources))
    assert [g.name for g in loaded.gateways] == ["gw1", "gw2"]
    with pytest.raises(TemplateError, match=r"2 application gateways: gw1, gw2") as info:
        select_gateway(loaded, None)
    assert info.value.fix is not None
    assert "--gateway" in info.value.fix
    assert select_gateway(loaded, "gw2").name == "gw2"
    with pytest.raises(TemplateError, match=r"no application gateway named 'gw3'.*gw1, gw2"):
        select_gateway(loaded, "gw3")


def test_no_gateway_in_template_is_an_error(tmp_path: Path) -> None:
    resources = [{"type": "Microsoft.Resources/deployments", "apiVersion": "1", "name": "inner"}]
    loaded = load_template(write_template(tmp_path, resources=resources))
    with pytest.raises(TemplateError, match=r"no 'Microsoft.Network/applicationGateways'.*inner"):
        select_gateway(loaded, None)


def test_user_defined_parameter_type_is_unsupported(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFeature, match=r"user-defined type"):
        load_params(tmp_path, {"p": {"$ref": "#/definitions/x"}})


def test_relative_fixture_path_works_from_repo_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(QUICKSTART, tmp_path / "qs")
    monkeypatch.chdir(tmp_path)
    loaded = load_template("qs/deploymentTemplate.json", ["@qs/deploymentParameters.json"])
    assert loaded.file == "qs/deploymentTemplate.json"
    assert loaded.parameters["certData"] == "<Base64-encoded-PFX-data>"
