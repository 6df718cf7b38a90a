"""The gateway model: evaluated ARM gateway resources → frozen GatewayConfig, or Azure's errors.

Two bases are used: the Azure quickstart (loaded unmodified from ``tests/fixtures``) and the
``up`` demo template (Strict + Passthrough listeners and a rewrite rule set), each loaded once per
module with the suite's real certificates (``tests/helpers/pki.py``). Each test deep-copies the
evaluated resource, changes one thing, and builds it.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from emulator.arm.demo_template import demo_template
from emulator.arm.template import GatewayResource, load_template, select_gateway
from emulator.errors import (
    CertificateError,
    EmulatorError,
    InvalidConfiguration,
    TemplateError,
    UnsupportedFeature,
)
from emulator.model import (
    BackendAddress,
    Buffering,
    ClientAuthMode,
    GatewayConfig,
    ListenerProtocol,
    RevocationMode,
    build_gateway_config,
    with_backend_overrides,
)
from emulator.pki import CA, ca_bundle_pem
from tests.helpers.pki import PkiBundle

QUICKSTART = Path(__file__).parent.parent / "fixtures" / "quickstart" / "deploymentTemplate.json"
PFX_PASSWORD = "s3cret-pfx"

Resource = dict[str, Any]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.fixture(scope="module")
def quickstart(pki: PkiBundle) -> GatewayResource:
    loaded = load_template(
        QUICKSTART,
        [
            f"certData={b64(pki.server.pfx(PFX_PASSWORD))}",
            f"certPassword={PFX_PASSWORD}",
            "adminUsername=u",
            "adminSSHKey=k",
        ],
    )
    return select_gateway(loaded, None)


@pytest.fixture(scope="module")
def demo(pki: PkiBundle, tmp_path_factory: pytest.TempPathFactory) -> GatewayResource:
    path = tmp_path_factory.mktemp("demo") / "demo.json"
    template = demo_template(
        strict_port=8443, passthrough_port=9443, backend_host="10.0.0.5", backend_port=8080
    )
    path.write_text(json.dumps(template), encoding="utf-8")
    loaded = load_template(
        path,
        [
            f"certData={b64(pki.server.pfx(PFX_PASSWORD))}",
            f"certPassword={PFX_PASSWORD}",
            f"trustedClientCaData={b64(ca_bundle_pem(pki.client_root, pki.client_ca))}",
        ],
    )
    return select_gateway(loaded, None)


def build(
    base: GatewayResource,
    change: Callable[[Resource], object] | None = None,
    *,
    api_version: str | None = None,
    loose: bool = False,
) -> GatewayConfig:
    """Build ``base`` after ``change`` edited a deep copy of its evaluated resource."""
    resource: Resource = copy.deepcopy(dict(base.resource))
    if change is not None:
        change(resource)
    if api_version is not None:
        resource["apiVersion"] = api_version
    gw = dataclasses.replace(base, resource=resource, api_version=api_version or base.api_version)
    return build_gateway_config(gw, loose=loose, now=datetime.now(UTC))


def props(resource: Resource) -> Resource:
    result: Resource = resource["properties"]
    return result


def item(resource: Resource, collection: str, index: int = 0) -> Resource:
    result: Resource = props(resource)[collection][index]
    return result


def inner(resource: Resource, collection: str, index: int = 0) -> Resource:
    result: Resource = item(resource, collection, index)["properties"]
    return result


def assert_error(
    exc: EmulatorError,
    *,
    code: str,
    path: str,
    kind: type[EmulatorError] = TemplateError,
) -> None:
    assert type(exc) is kind, f"{type(exc).__name__}: {exc}"
    assert exc.error_code == code, str(exc)
    assert exc.path == path, str(exc)
    assert exc.fix, f"no fix in {exc}"


# --- the quickstart --------------------------------------------------------------------------


def test_quickstart_builds_one_passthrough_listener_routed_to_its_pool(
    quickstart: GatewayResource, pki: PkiBundle
) -> None:
    config = build(quickstart)

    assert config.name == "mtlsAppGw"
    assert config.api_version == "2025-03-01"
    assert config.sku_name == "Standard_v2"
    (listener,) = config.listeners
    assert listener.name == "listener2"
    assert listener.frontend_port == 444
    assert listener.frontend_port_name == "port2"
    assert listener.protocol is ListenerProtocol.HTTPS
    assert listener.server_certificate is not None
    assert listener.server_certificate.certificate == pki.server.cert
    assert listener.ssl_policy.name == "AppGwSslPolicy20220101"
    assert listener.ssl_profile is not None
    assert listener.ssl_profile.name == "sslnotrustedcert"
    assert listener.ssl_profile.client_auth is ClientAuthMode.PASSTHROUGH
    assert listener.ssl_profile.trusted_client_cas == ()
    (rule,) = config.rules
    assert rule.name == "rule2"
    assert rule.priority == 2000
    assert rule.listener == listener
    assert rule.pool is not None
    assert rule.pool.name == "pool2"
    assert rule.pool.addresses == (
        BackendAddress("headerappgw-hsa5gjh8fpfebcfd.westus-01.azurewebsites.net"),
    )
    assert rule.settings is not None
    assert rule.settings.name == "settings2"
    assert rule.settings.port == 80
    assert rule.settings.protocol is ListenerProtocol.HTTP
    assert rule.settings.request_timeout_s == 20
    assert rule.rewrite_rule_set is None
    assert "resources[2].properties.gatewayIPConfigurations" in config.notes
    # The quickstart forwards no certificate: on a Passthrough listener that is a footgun. Its
    # profile also has no sslPolicy, which Azure refuses on the next update (issue 19).
    assert len(config.warnings) == 2
    assert "must specify either SslPolicy or TrustedClientCertificates" in config.warnings[0]
    assert "forwards no client certificate" in config.warnings[1]


def test_quickstart_turned_strict_trusts_the_uploaded_ca_chain(
    quickstart: GatewayResource, pki: PkiBundle
) -> None:
    gw_id = quickstart.resource_id

    def make_strict(res: Resource) -> None:
        props(res)["trustedClientCertificates"] = [
            {
                "name": "clientca",
                "properties": {"data": b64(ca_bundle_pem(pki.client_root, pki.client_ca))},
            }
        ]
        profile = inner(res, "sslProfiles")
        profile["trustedClientCertificates"] = [
            {"id": f"{gw_id}/trustedClientCertificates/clientca"}
        ]
        profile["clientAuthConfiguration"]["VerifyClientAuthMode"] = "Strict"

    config = build(quickstart, make_strict)

    profile = config.listener("listener2").ssl_profile
    assert profile is not None
    assert profile.client_auth is ClientAuthMode.STRICT
    (upload,) = profile.trusted_client_cas
    assert upload.name == "clientca"
    assert upload.certificates == (pki.client_root.cert, pki.client_ca.cert)
    assert upload.root == pki.client_root.cert


# --- the demo template as a base ----------------------------------------------------------------


def test_demo_template_builds_strict_and_passthrough_listeners(demo: GatewayResource) -> None:
    config = build(demo)

    assert [r.name for r in config.rules] == ["strict-rule", "passthrough-rule"]
    strict, passthrough = config.listeners
    assert strict.ssl_profile is not None
    assert strict.ssl_profile.client_auth is ClientAuthMode.STRICT
    assert strict.ssl_profile.revocation is RevocationMode.NONE
    assert passthrough.ssl_profile is not None
    assert passthrough.ssl_profile.client_auth is ClientAuthMode.PASSTHROUGH
    rule_set = config.rule_for("strict-listener").rewrite_rule_set
    assert rule_set is not None
    assert rule_set.rules[0].request_headers[0].header_name == "X-Client-Cert"


# --- certificate errors -------------------------------------------------------------------


def test_wrong_pfx_password_is_azures_invalid_data_error(demo: GatewayResource) -> None:
    def wrong_password(res: Resource) -> None:
        inner(res, "sslCertificates")["password"] = "not-the-password"

    with pytest.raises(CertificateError) as info:
        build(demo, wrong_password)

    assert_error(
        info.value,
        code="EmulatorSslCertificateInvalidData",
        path="resources[0].properties.sslCertificates[0].properties.data",
        kind=CertificateError,
    )
    assert info.value.message == (
        f"Data or Password for certificate {demo.resource_id}/sslCertificates/server-cert "
        "is invalid."
    )


def test_pfx_data_that_is_not_base64_is_rejected(demo: GatewayResource) -> None:
    def not_base64(res: Resource) -> None:
        inner(res, "sslCertificates")["data"] = "this is *not* base64!"

    with pytest.raises(CertificateError) as info:
        build(demo, not_base64)

    assert_error(
        info.value,
        code="EmulatorCertificateInvalid",
        path="resources[0].properties.sslCertificates[0].properties.data",
        kind=CertificateError,
    )
    assert "base64" in info.value.message


def test_pfx_data_with_line_breaks_is_accepted(demo: GatewayResource) -> None:
    def wrapped(res: Resource) -> None:
        data = inner(res, "sslCertificates")["data"]
        inner(res, "sslCertificates")["data"] = "\n".join(
            data[i : i + 64] for i in range(0, len(data), 64)
        )

    assert build(demo, wrapped).listeners[0].server_certificate is not None


def test_trusted_client_certificate_error_points_at_its_data(demo: GatewayResource) -> None:
    def leaf_only(res: Resource) -> None:
        inner(res, "trustedClientCertificates")["data"] = b64(CA().issue_client("c").cert_pem)

    with pytest.raises(CertificateError) as info:
        build(demo, leaf_only)

    assert_error(
        info.value,
        code="ApplicationGatewayTrustedClientCertificateDoesNotContainAnyCACertificate",
        path="resources[0].properties.trustedClientCertificates[0].properties.data",
        kind=CertificateError,
    )


def test_key_vault_secret_id_is_unsupported_with_a_fix_to_pass_the_pfx(
    demo: GatewayResource,
) -> None:
    def key_vault(res: Resource) -> None:
        item(res, "sslCertificates")["properties"] = {
            "keyVaultSecretId": "https://vault.vault.azure.net/secrets/cert"
        }

    with pytest.raises(UnsupportedFeature) as info:
        build(demo, key_vault)

    assert_error(
        info.value,
        code="EmulatorUnsupportedFeature",
        path="resources[0].properties.sslCertificates[0].properties.keyVaultSecretId",
        kind=UnsupportedFeature,
    )
    assert info.value.fix is not None
    assert ".pfx" in info.value.fix
    assert "'data'" in info.value.fix
    assert "password" in info.value.fix


# --- ARM-shaped JSON errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "type_name", "path"),
    [
        (
            lambda r: inner(r, "httpListeners"),
            "ApplicationGatewayHttpListenerPropertiesFormat",
            "resources[0].properties.httpListeners[0].properties.bogusMember",
        ),
        (
            props,
            "ApplicationGatewayPropertiesFormat",
            "resources[0].properties.bogusMember",
        ),
        (
            lambda r: inner(r, "sslProfiles")["clientAuthConfiguration"],
            "ApplicationGatewayClientAuthConfiguration",
            "resources[0].properties.sslProfiles[0].properties.clientAuthConfiguration.bogusMember",
        ),
        (
            lambda r: inner(r, "rewriteRuleSets")["rewriteRules"][0],
            "ApplicationGatewayRewriteRule",
            "resources[0].properties.rewriteRuleSets[0].properties.rewriteRules[0].bogusMember",
        ),
    ],
)
def test_unknown_property_is_arms_could_not_find_member_error(
    demo: GatewayResource, where: Callable[[Resource], Resource], type_name: str, path: str
) -> None:
    with pytest.raises(TemplateError) as info:
        build(demo, lambda r: where(r).__setitem__("bogusMember", 1))

    assert_error(info.value, code="InvalidJson", path=path)
    assert info.value.message == (
        f"Could not find member 'bogusMember' on object of type '{type_name}'. Path '{path}'"
    )


def test_same_property_twice_in_different_case_is_rejected(demo: GatewayResource) -> None:
    def twice(res: Resource) -> None:
        inner(res, "frontendPorts")["Port"] = 1234

    with pytest.raises(TemplateError) as info:
        build(demo, twice)

    assert_error(
        info.value,
        code="InvalidJson",
        path="resources[0].properties.frontendPorts[0].properties.Port",
    )
    assert "twice" in info.value.message


@pytest.mark.parametrize("spelling", ["port", "Port", "PORT", "pOrT"])
def test_property_names_are_read_in_any_letter_case(demo: GatewayResource, spelling: str) -> None:
    def respell(res: Resource) -> None:
        item(res, "frontendPorts")["properties"] = {spelling: 18443}

    config = build(demo, respell)

    assert config.listener("strict-listener").frontend_port == 18443


def test_error_path_keeps_the_templates_spelling(demo: GatewayResource) -> None:
    def upper(res: Resource) -> None:
        item(res, "frontendPorts")["properties"] = {"PORT": 0}

    with pytest.raises(TemplateError) as info:
        build(demo, upper)

    assert info.value.path == "resources[0].properties.frontendPorts[0].properties.PORT"


def test_read_only_fields_from_az_show_are_accepted(demo: GatewayResource) -> None:
    def az_show(res: Resource) -> None:
        item(res, "frontendPorts")["etag"] = 'W/"1"'
        inner(res, "frontendPorts")["provisioningState"] = "Succeeded"
        props(res)["provisioningState"] = "Succeeded"
        props(res)["operationalState"] = "Running"

    assert build(demo, az_show).listener("strict-listener").frontend_port == 8443


# --- references ---------------------------------------------------------------------------------


def test_dangling_reference_lists_the_existing_names(demo: GatewayResource) -> None:
    def dangle(res: Resource) -> None:
        inner(res, "httpListeners")["sslProfile"] = {
            "id": f"{demo.resource_id}/sslProfiles/no-such-profile"
        }

    with pytest.raises(TemplateError) as info:
        build(demo, dangle)

    assert_error(
        info.value,
        code="InvalidResourceReference",
        path="resources[0].properties.httpListeners[0].properties.sslProfile",
    )
    assert "no-such-profile" in info.value.message
    assert "existing: passthrough-profile, strict-profile" in info.value.message


def test_reference_into_the_wrong_collection_is_dangling(demo: GatewayResource) -> None:
    def wrong_collection(res: Resource) -> None:
        inner(res, "httpListeners")["sslProfile"] = {
            "id": f"{demo.resource_id}/sslCertificates/strict-profile"
        }

    with pytest.raises(TemplateError) as info:
        build(demo, wrong_collection)

    assert info.value.error_code == "InvalidResourceReference"


def test_references_resolve_case_insensitively(demo: GatewayResource) -> None:
    def shout(res: Resource) -> None:
        inner(res, "httpListeners")["sslProfile"] = {
            "id": f"{demo.resource_id}/SSLPROFILES/STRICT-PROFILE"
        }

    profile = build(demo, shout).listener("strict-listener").ssl_profile
    assert profile is not None
    assert profile.name == "strict-profile"


def test_two_items_with_the_same_name_are_rejected(demo: GatewayResource) -> None:
    def duplicate(res: Resource) -> None:
        ports = props(res)["frontendPorts"]
        ports.append({"name": "STRICT-PORT", "properties": {"port": 1}})

    with pytest.raises(TemplateError) as info:
        build(demo, duplicate)

    assert_error(
        info.value, code="InvalidTemplate", path="resources[0].properties.frontendPorts[2]"
    )


def test_two_routing_rules_with_the_same_name_are_rejected(demo: GatewayResource) -> None:
    def duplicate(res: Resource) -> None:
        item(res, "requestRoutingRules", 1)["name"] = "strict-rule"

    with pytest.raises(TemplateError) as info:
        build(demo, duplicate)

    assert_error(
        info.value, code="InvalidTemplate", path="resources[0].properties.requestRoutingRules[1]"
    )


# --- routing rules ----------------------------------------------------------------------------


def test_missing_priority_is_rejected_from_api_2021_08_01(demo: GatewayResource) -> None:
    with pytest.raises(TemplateError) as info:
        build(demo, lambda r: inner(r, "requestRoutingRules", 1).pop("priority"))

    assert_error(
        info.value,
        code="ApplicationGatewayRequestRoutingRulePriorityCannotBeEmpty",
        path="resources[0].properties.requestRoutingRules[1].properties",
    )


def test_missing_priority_is_accepted_before_api_2021_08_01(demo: GatewayResource) -> None:
    def strict_only_without_priorities(res: Resource) -> None:
        props(res)["sslProfiles"].pop(1)
        props(res)["httpListeners"].pop(1)
        props(res)["requestRoutingRules"].pop(1)
        inner(res, "requestRoutingRules").pop("priority")

    config = build(demo, strict_only_without_priorities, api_version="2021-05-01")

    assert config.rules[0].priority is None


@pytest.mark.parametrize("priority", [0, -1, 20001])
def test_priority_out_of_range_is_rejected(demo: GatewayResource, priority: int) -> None:
    with pytest.raises(TemplateError) as info:
        build(demo, lambda r: inner(r, "requestRoutingRules").__setitem__("priority", priority))

    assert_error(
        info.value,
        code="EmulatorRulePriorityOutOfRange",
        path="resources[0].properties.requestRoutingRules[0].properties.priority",
    )
    assert "1-20000" in info.value.message


@pytest.mark.parametrize("priority", [1, 20000])
def test_priority_bounds_are_accepted(demo: GatewayResource, priority: int) -> None:
    config = build(
        demo, lambda r: inner(r, "requestRoutingRules").__setitem__("priority", priority)
    )
    assert config.rule_for("strict-listener").priority == priority


def test_duplicate_priority_is_rejected(demo: GatewayResource) -> None:
    with pytest.raises(TemplateError) as info:
        build(demo, lambda r: inner(r, "requestRoutingRules", 1).__setitem__("priority", 100))

    assert_error(
        info.value,
        code="EmulatorDuplicateRulePriority",
        path="resources[0].properties.requestRoutingRules[1].properties.priority",
    )
    assert "strict-rule" in info.value.message


def test_two_rules_on_one_listener_are_rejected(demo: GatewayResource) -> None:
    def same_listener(res: Resource) -> None:
        inner(res, "requestRoutingRules", 1)["httpListener"] = copy.deepcopy(
            inner(res, "requestRoutingRules", 0)["httpListener"]
        )

    with pytest.raises(TemplateError) as info:
        build(demo, same_listener)

    assert_error(
        info.value,
        code="EmulatorListenerUsedByMultipleRules",
        path="resources[0].properties.requestRoutingRules[1].properties.httpListener",
    )
    assert "strict-rule" in info.value.message


def test_rules_are_sorted_by_priority_lowest_first(demo: GatewayResource) -> None:
    def swap(res: Resource) -> None:
        inner(res, "requestRoutingRules", 0)["priority"] = 300
        inner(res, "requestRoutingRules", 1)["priority"] = 20

    config = build(demo, swap)

    assert [r.name for r in config.rules] == ["passthrough-rule", "strict-rule"]
    assert [x.name for x in config.listeners] == ["passthrough-listener", "strict-listener"]


def test_listener_without_a_rule_is_not_started_and_warned_about(demo: GatewayResource) -> None:
    config = build(demo, lambda r: props(r)["requestRoutingRules"].pop(1))

    assert [x.name for x in config.listeners] == ["strict-listener"]
    assert any("passthrough-listener" in w and "no routing rule" in w for w in config.warnings)


# --- listeners and SSL profiles -----------------------------------------------------------------


def test_https_listener_without_certificate_is_rejected(demo: GatewayResource) -> None:
    with pytest.raises(TemplateError) as info:
        build(demo, lambda r: inner(r, "httpListeners").pop("sslCertificate"))

    assert_error(
        info.value,
        code="EmulatorHttpsListenerWithoutCertificate",
        path="resources[0].properties.httpListeners[0].properties",
    )


def test_ssl_profile_on_an_http_listener_is_rejected(demo: GatewayResource) -> None:
    def http(res: Resource) -> None:
        inner(res, "httpListeners")["protocol"] = "Http"
        inner(res, "httpListeners").pop("sslCertificate")

    with pytest.raises(TemplateError) as info:
        build(demo, http)

    assert_error(
        info.value,
        code="EmulatorSslProfileOnHttpListener",
        path="resources[0].properties.httpListeners[0].properties",
    )


def test_plain_http_listener_builds_without_certificate(demo: GatewayResource) -> None:
    def http(res: Resource) -> None:
        listener = inner(res, "httpListeners")
        listener["protocol"] = "Http"
        listener.pop("sslCertificate")
        listener.pop("sslProfile")

    listener = build(demo, http).listener("strict-listener")

    assert listener.protocol is ListenerProtocol.HTTP
    assert listener.server_certificate is None
    assert listener.ssl_profile is None


def test_passthrough_needs_api_version_2025_03_01(demo: GatewayResource) -> None:
    with pytest.raises(TemplateError) as info:
        build(demo, api_version="2024-05-01")

    assert_error(
        info.value,
        code="InvalidRequestContent",
        path="resources[0].properties.sslProfiles[1].properties.clientAuthConfiguration"
        ".verifyClientAuthMode",
    )
    assert "2025-03-01" in info.value.message


@pytest.mark.parametrize(
    ("field_name", "value"),
    [
        ("verifyClientAuthMode", "Lenient"),
        ("verifyClientAuthMode", "Optional"),
        ("verifyClientRevocation", "CRL"),
    ],
)
def test_unknown_client_auth_values_are_rejected(
    demo: GatewayResource, field_name: str, value: str
) -> None:
    def set_value(res: Resource) -> None:
        inner(res, "sslProfiles")["clientAuthConfiguration"][field_name] = value

    with pytest.raises(TemplateError) as info:
        build(demo, set_value)

    assert_error(
        info.value,
        code="InvalidRequestContent",
        path="resources[0].properties.sslProfiles[0].properties.clientAuthConfiguration."
        + field_name,
    )
    assert value in info.value.message


@pytest.mark.parametrize("spelling", ["strict", "STRICT", "Strict"])
def test_client_auth_mode_values_ignore_case(demo: GatewayResource, spelling: str) -> None:
    def set_value(res: Resource) -> None:
        inner(res, "sslProfiles")["clientAuthConfiguration"]["verifyClientAuthMode"] = spelling

    profile = build(demo, set_value).listener("strict-listener").ssl_profile
    assert profile is not None
    assert profile.client_auth is ClientAuthMode.STRICT


def test_ssl_profile_on_a_v1_sku_is_rejected(demo: GatewayResource) -> None:
    def v1(res: Resource) -> None:
        props(res)["sku"] = {"name": "Standard_Medium", "tier": "Standard", "capacity": 2}

    with pytest.raises(TemplateError) as info:
        build(demo, v1)

    assert_error(
        info.value,
        code="EmulatorSslProfileNeedsV2Sku",
        path="resources[0].properties.sku",
    )
    assert "Standard_Medium" in info.value.message


@pytest.mark.parametrize("port", [0, 70000, 65536])
def test_frontend_port_out_of_range_is_rejected(demo: GatewayResource, port: int) -> None:
    with pytest.raises(TemplateError) as info:
        build(demo, lambda r: inner(r, "frontendPorts").__setitem__("port", port))

    assert_error(
        info.value,
        code="EmulatorFrontendPortOutOfRange",
        path="resources[0].properties.frontendPorts[0].properties.port",
    )
    assert str(port) in info.value.message


def test_strict_profile_without_trusted_certificates_requests_no_certificate(
    demo: GatewayResource,
) -> None:
    config = build(demo, lambda r: inner(r, "sslProfiles").pop("trustedClientCertificates"))

    profile = config.listener("strict-listener").ssl_profile
    assert profile is not None
    assert profile.client_auth is None
    # Silently meaning "no client authentication" was the quickstart user's trap (issue 19).
    strict_warnings = [
        w for w in config.warnings if "Strict without trustedClientCertificates" in w
    ]
    assert len(strict_warnings) == 1
    assert "'strict-profile'" in strict_warnings[0]
    assert "clients are not authenticated" in strict_warnings[0]


@pytest.mark.parametrize(
    ("setting", "value"),
    [("verifyClientCertIssuerDN", True), ("verifyClientRevocation", "OCSP")],
)
def test_strict_profile_without_trusted_certificates_warns_about_useless_checks(
    demo: GatewayResource, setting: str, value: object
) -> None:
    def no_cas(res: Resource) -> None:
        profile = inner(res, "sslProfiles")
        profile.pop("trustedClientCertificates")
        profile["clientAuthConfiguration"][setting] = value

    config = build(demo, no_cas)

    profile = config.listener("strict-listener").ssl_profile
    assert profile is not None
    assert profile.client_auth is None
    assert any("strict-profile" in w and "no effect" in w for w in config.warnings)


def test_strict_profile_carries_issuer_dn_and_ocsp_settings(demo: GatewayResource) -> None:
    def enable(res: Resource) -> None:
        auth = inner(res, "sslProfiles")["clientAuthConfiguration"]
        auth["verifyClientCertIssuerDN"] = True
        auth["verifyClientRevocation"] = "OCSP"

    profile = build(demo, enable).listener("strict-listener").ssl_profile
    assert profile is not None
    assert profile.client_auth is ClientAuthMode.STRICT
    assert profile.verify_issuer_dn is True
    assert profile.revocation is RevocationMode.OCSP


def test_profile_ssl_policy_overrides_the_gateway_policy(demo: GatewayResource) -> None:
    def strong(res: Resource) -> None:
        inner(res, "sslProfiles")["sslPolicy"] = {
            "policyType": "Predefined",
            "policyName": "AppGwSslPolicy20220101S",
        }

    config = build(demo, strong)

    assert config.listener("strict-listener").ssl_policy.name == "AppGwSslPolicy20220101S"
    assert config.listener("passthrough-listener").ssl_policy.name == "AppGwSslPolicy20220101"


def _no_policy_strict_only(res: Resource) -> None:
    props(res).pop("sslPolicy")
    props(res)["sslProfiles"].pop(1)
    props(res)["httpListeners"].pop(1)
    props(res)["requestRoutingRules"].pop(1)


@pytest.mark.parametrize(
    ("api_version", "expected"),
    [("2025-03-01", "AppGwSslPolicy20220101"), ("2022-09-01", "AppGwSslPolicy20170401S")],
)
def test_default_ssl_policy_depends_on_the_api_version(
    demo: GatewayResource, api_version: str, expected: str
) -> None:
    config = build(demo, _no_policy_strict_only, api_version=api_version)

    assert config.listener("strict-listener").ssl_policy.name == expected


def test_old_api_default_is_20170401s_since_20150501_retired_and_says_so(
    demo: GatewayResource,
) -> None:
    config = build(demo, _no_policy_strict_only, api_version="2022-09-01")

    policy = config.listener("strict-listener").ssl_policy
    assert policy.min_version.value == "TLSv1_2"
    assert not policy.newer_family
    (warning,) = [w for w in config.warnings if "sslPolicy" in w]
    assert "AppGwSslPolicy20150501 was retired" in warning
    assert "applies AppGwSslPolicy20170401S" in warning


@pytest.mark.parametrize("name", ["AppGwSslPolicy20150501", "AppGwSslPolicy20170401"])
def test_retired_predefined_policy_is_refused_naming_the_retirement(
    demo: GatewayResource, name: str
) -> None:
    def retired(res: Resource) -> None:
        props(res)["sslPolicy"]["policyName"] = name
        props(res)["sslProfiles"][1]["properties"].pop("sslPolicy")

    with pytest.raises(TemplateError) as info:
        build(demo, retired)

    assert_error(
        info.value,
        code="ApplicationGatewayDeprecatedTlsVersionUsedInSslPolicy",
        path="resources[0].properties.sslPolicy.policyName",
    )
    assert "31 August 2025" in str(info.value)
    assert "https://aka.ms/appgw-oldtlsversions" in str(info.value)


def test_retired_policy_in_a_profile_is_refused_too(demo: GatewayResource) -> None:
    def retired(res: Resource) -> None:
        inner(res, "sslProfiles", 1)["sslPolicy"]["policyName"] = "AppGwSslPolicy20170401"

    with pytest.raises(TemplateError) as info:
        build(demo, retired)

    assert_error(
        info.value,
        code="ApplicationGatewayDeprecatedTlsVersionUsedInSslPolicy",
        path="resources[0].properties.sslProfiles[1].properties.sslPolicy.policyName",
    )


def test_loose_runs_a_retired_policy_with_a_warning(demo: GatewayResource) -> None:
    def retired(res: Resource) -> None:
        props(res)["sslPolicy"]["policyName"] = "AppGwSslPolicy20150501"
        props(res)["sslProfiles"][1]["properties"].pop("sslPolicy")

    config = build(demo, retired, loose=True)

    policy = config.listener("passthrough-listener").ssl_policy
    assert (policy.name, policy.min_version.value) == ("AppGwSslPolicy20150501", "TLSv1_0")
    (warning,) = [w for w in config.warnings if w.startswith("retired (--loose)")]
    assert "AppGwSslPolicy20150501" in warning
    assert "31 August 2025" in warning


@pytest.mark.parametrize("version", ["TLSv1_0", "TLSv1_1"])
def test_custom_policy_below_tls_1_2_is_refused(demo: GatewayResource, version: str) -> None:
    def old_custom(res: Resource) -> None:
        props(res)["sslPolicy"] = {"policyType": "Custom", "minProtocolVersion": version}
        props(res)["sslProfiles"][1]["properties"].pop("sslPolicy")

    with pytest.raises(TemplateError) as info:
        build(demo, old_custom)

    assert_error(
        info.value,
        code="ApplicationGatewayDeprecatedTlsVersionUsedInSslPolicy",
        path="resources[0].properties.sslPolicy.minProtocolVersion",
    )


def test_custom_policy_loses_the_retired_suites_with_a_warning(demo: GatewayResource) -> None:
    suites = [
        "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    ]

    def custom(res: Resource) -> None:
        props(res)["sslPolicy"] = {
            "policyType": "Custom",
            "minProtocolVersion": "TLSv1_2",
            "cipherSuites": suites,
        }
        props(res)["sslProfiles"][1]["properties"].pop("sslPolicy")

    config = build(demo, custom)

    policy = config.listener("strict-listener").ssl_policy
    assert policy.cipher_suites == ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",)
    (warning,) = [w for w in config.warnings if "cipherSuites" in w]
    assert "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384, TLS_RSA_WITH_3DES_EDE_CBC_SHA" in warning


def test_custom_policy_with_only_retired_suites_is_refused(demo: GatewayResource) -> None:
    def custom(res: Resource) -> None:
        props(res)["sslPolicy"] = {
            "policyType": "Custom",
            "minProtocolVersion": "TLSv1_2",
            "cipherSuites": ["TLS_DHE_RSA_WITH_AES_128_GCM_SHA256"],
        }
        props(res)["sslProfiles"][1]["properties"].pop("sslPolicy")

    with pytest.raises(TemplateError) as info:
        build(demo, custom)

    assert_error(
        info.value,
        code="ApplicationGatewayDeprecatedTlsVersionUsedInSslPolicy",
        path="resources[0].properties.sslPolicy.cipherSuites",
    )


def test_customv2_keeps_every_suite_the_retirement_took_from_custom(
    demo: GatewayResource,
) -> None:
    def custom_v2(res: Resource) -> None:
        props(res)["sslPolicy"] = {
            "policyType": "CustomV2",
            "minProtocolVersion": "TLSv1_2",
            "cipherSuites": ["TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384"],
        }

    config = build(demo, custom_v2)

    policy = config.listener("strict-listener").ssl_policy
    assert policy.cipher_suites == ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",)
    assert not [w for w in config.warnings if "cipherSuites" in w]


@pytest.mark.parametrize(
    ("gateway", "profile"),
    [
        (
            {"policyType": "Predefined", "policyName": "AppGwSslPolicy20220101"},
            {"policyType": "Predefined", "policyName": "AppGwSslPolicy20170401S"},
        ),
        (
            {"policyType": "Predefined", "policyName": "AppGwSslPolicy20170401S"},
            {"policyType": "CustomV2", "minProtocolVersion": "TLSv1_2"},
        ),
        (
            {"policyType": "Custom", "minProtocolVersion": "TLSv1_2"},
            {"policyType": "Predefined", "policyName": "AppGwSslPolicy20220101S"},
        ),
    ],
    ids=["new-gateway-old-profile", "old-gateway-customv2-profile", "custom-gateway-2022-profile"],
)
def test_old_and_new_policy_families_cannot_share_a_gateway(
    demo: GatewayResource, gateway: Resource, profile: Resource
) -> None:
    def mixed(res: Resource) -> None:
        props(res)["sslPolicy"] = gateway
        inner(res, "sslProfiles", 1)["sslPolicy"] = profile

    with pytest.raises(TemplateError) as info:
        build(demo, mixed)

    assert_error(
        info.value,
        code="ApplicationGatewaySslPolicyMisMatch",
        path="resources[0].properties.sslProfiles[1].properties.sslPolicy",
    )
    assert "sslProfile passthrough-profile" in str(info.value)


def test_refused_gateway_policy_is_one_problem_not_also_a_family_mix(
    demo: GatewayResource,
) -> None:
    def retired_gateway_old_profile(res: Resource) -> None:
        props(res)["sslPolicy"]["policyName"] = "AppGwSslPolicy20150501"
        inner(res, "sslProfiles", 1)["sslPolicy"]["policyName"] = "AppGwSslPolicy20170401S"

    with pytest.raises(TemplateError) as info:
        build(demo, retired_gateway_old_profile)

    assert not isinstance(info.value, InvalidConfiguration), str(info.value)
    assert info.value.error_code == "ApplicationGatewayDeprecatedTlsVersionUsedInSslPolicy"


def test_old_api_implicit_default_conflicts_with_a_2022_profile(demo: GatewayResource) -> None:
    def implicit(res: Resource) -> None:
        _no_policy_strict_only(res)
        inner(res, "sslProfiles", 0)["sslPolicy"] = {
            "policyType": "Predefined",
            "policyName": "AppGwSslPolicy20220101",
        }

    with pytest.raises(TemplateError) as info:
        build(demo, implicit, api_version="2022-09-01")

    assert_error(
        info.value,
        code="ApplicationGatewaySslPolicyMisMatch",
        path="resources[0].properties.sslProfiles[0].properties.sslPolicy",
    )
    assert "global sslPolicy AppGwSslPolicy20170401S" in str(info.value)


def test_one_family_across_gateway_and_profiles_builds(demo: GatewayResource) -> None:
    def same(res: Resource) -> None:
        props(res)["sslPolicy"] = {"policyType": "CustomV2", "minProtocolVersion": "TLSv1_2"}
        inner(res, "sslProfiles", 0)["sslPolicy"] = {
            "policyType": "Predefined",
            "policyName": "AppGwSslPolicy20220101S",
        }

    config = build(demo, same)

    assert config.listener("strict-listener").ssl_policy.name == "AppGwSslPolicy20220101S"
    assert config.listener("passthrough-listener").ssl_policy.name == "AppGwSslPolicy20220101"


def test_unknown_predefined_policy_is_rejected(demo: GatewayResource) -> None:
    def bad(res: Resource) -> None:
        props(res)["sslPolicy"]["policyName"] = "AppGwSslPolicy20990101"

    with pytest.raises(TemplateError) as info:
        build(demo, bad)

    assert_error(
        info.value,
        code="EmulatorSslPolicyNameInvalid",
        path="resources[0].properties.sslPolicy.policyName",
    )


# --- unsupported features -------------------------------------------------------------------------


def test_empty_unsupported_collection_is_only_noted(demo: GatewayResource) -> None:
    config = build(demo, lambda r: props(r).__setitem__("urlPathMaps", []))

    assert len(config.rules) == 2


def test_cookie_based_affinity_disabled_is_accepted(demo: GatewayResource) -> None:
    def disabled(res: Resource) -> None:
        inner(res, "backendHttpSettingsCollection")["cookieBasedAffinity"] = "Disabled"

    settings = build(demo, disabled).rules[0].settings
    assert settings is not None
    assert settings.port == 8080


def test_enable_http2_is_read_without_a_warning(demo: GatewayResource) -> None:
    config = build(demo, lambda r: props(r).__setitem__("enableHttp2", True))

    assert config.enable_http2 is True
    assert not any("enableHttp2" in w for w in config.warnings)
    assert build(demo).enable_http2 is False


def test_buffering_is_on_by_default(demo: GatewayResource) -> None:
    config = build(demo)

    assert config.buffering == Buffering(request=True, response=True)


@pytest.mark.parametrize(
    ("request_on", "response_on"), [(False, True), (True, False), (False, False), ("false", True)]
)
def test_global_configuration_turns_buffering_off(
    demo: GatewayResource, request_on: bool | str, response_on: bool
) -> None:
    def switches(res: Resource) -> None:
        props(res)["globalConfiguration"] = {
            "enableRequestBuffering": request_on,
            "enableResponseBuffering": response_on,
        }

    config = build(demo, switches)

    assert config.buffering.request is (request_on is True)
    assert config.buffering.response is response_on
    assert not any("globalConfiguration" in note for note in config.notes)


def test_global_configuration_unknown_key_is_reported(demo: GatewayResource) -> None:
    def typo(res: Resource) -> None:
        props(res)["globalConfiguration"] = {"enableRequestBufering": False}

    with pytest.raises(TemplateError) as info:
        build(demo, typo)

    assert_error(
        info.value,
        code="InvalidJson",
        path="resources[0].properties.globalConfiguration.enableRequestBufering",
    )


def test_global_configuration_needs_api_2020_01_01(quickstart: GatewayResource) -> None:
    def old(res: Resource) -> None:
        props(res)["globalConfiguration"] = {"enableResponseBuffering": False}

    # The old API version also refuses the quickstart's Passthrough profile: two problems.
    with pytest.raises(InvalidConfiguration) as info:
        build(quickstart, old, api_version="2019-12-01")

    ours = [p for p in info.value.problems if "globalConfiguration" in str(p)]
    assert len(ours) == 1
    assert_error(
        ours[0],
        code="EmulatorGlobalConfigurationNeedsNewerApi",
        path="resources[2].properties.globalConfiguration",
    )
    assert "2020-01-01" in str(ours[0])


def test_waf_sku_cannot_turn_request_buffering_off(demo: GatewayResource) -> None:
    def waf(res: Resource) -> None:
        props(res)["sku"] = {"name": "WAF_v2", "tier": "WAF_v2", "capacity": 1}
        props(res)["globalConfiguration"] = {"enableRequestBuffering": False}

    with pytest.raises(TemplateError) as info:
        build(demo, waf)

    assert_error(
        info.value,
        code="EmulatorWafNeedsRequestBuffering",
        path="resources[0].properties.globalConfiguration.enableRequestBuffering",
    )
    assert "WAF_v2" in info.value.message


def test_waf_sku_may_turn_response_buffering_off(demo: GatewayResource) -> None:
    def waf(res: Resource) -> None:
        props(res)["sku"] = {"name": "WAF_v2", "tier": "WAF_v2", "capacity": 1}
        props(res)["globalConfiguration"] = {"enableResponseBuffering": False}

    assert build(demo, waf).buffering == Buffering(request=True, response=False)


def test_meaningless_properties_are_noted_not_dropped(demo: GatewayResource) -> None:
    def extras(res: Resource) -> None:
        res["tags"] = {"env": "dev"}
        props(res)["autoscaleConfiguration"] = {"minCapacity": 1}

    config = build(demo, extras)

    assert "resources[0].tags" in config.notes
    assert "resources[0].properties.autoscaleConfiguration" in config.notes


# --- rewrite rule sets ----------------------------------------------------------------------------


def test_rewrite_rules_are_sorted_by_sequence_with_ties_in_document_order(
    demo: GatewayResource,
) -> None:
    def rules(res: Resource) -> None:
        inner(res, "rewriteRuleSets")["rewriteRules"] = [
            {"name": name, "ruleSequence": seq, "actionSet": {}}
            for name, seq in [("late", 300), ("tie-a", 100), ("early", 5), ("tie-b", 100)]
        ]

    rule_set = build(demo, rules).rule_for("strict-listener").rewrite_rule_set

    assert rule_set is not None
    assert [r.name for r in rule_set.rules] == ["early", "tie-a", "tie-b", "late"]


def _extra_rule(headers: int, conditions: int, *, url: bool = False) -> Resource:
    action: Resource = {
        "responseHeaderConfigurations": [
            {"headerName": f"X-Extra-{i}", "headerValue": "v"} for i in range(headers)
        ]
    }
    if url:
        action["urlConfiguration"] = {"modifiedPath": "/elsewhere"}
    return {
        "name": "extra",
        "ruleSequence": 200,
        "conditions": [
            {"variable": "var_uri_path", "pattern": f"^/p{i}"} for i in range(conditions)
        ],
        "actionSet": action,
    }


def test_rewrite_set_takes_40_configurations_and_40_conditions(demo: GatewayResource) -> None:
    # The demo's rule has 8 request header configurations: 8 + 31 + the URL one = 40.
    def at_limit(res: Resource) -> None:
        inner(res, "rewriteRuleSets")["rewriteRules"].append(_extra_rule(31, 40, url=True))

    rule_set = build(demo, at_limit).rule_for("strict-listener").rewrite_rule_set

    assert rule_set is not None
    assert sum(len(r.conditions) for r in rule_set.rules) == 40


@pytest.mark.parametrize(
    ("headers", "url", "conditions", "code"),
    [
        (32, True, 0, "EmulatorRewriteConfigurationsPerSetLimit"),
        (33, False, 0, "EmulatorRewriteConfigurationsPerSetLimit"),
        (0, False, 41, "EmulatorRewriteConditionsPerSetLimit"),
    ],
    ids=["41-with-url", "41-headers", "41-conditions"],
)
def test_rewrite_set_over_a_documented_limit_is_refused(
    demo: GatewayResource, headers: int, url: bool, conditions: int, code: str
) -> None:
    def over(res: Resource) -> None:
        inner(res, "rewriteRuleSets")["rewriteRules"].append(
            _extra_rule(headers, conditions, url=url)
        )

    with pytest.raises(TemplateError) as info:
        build(demo, over)

    assert_error(info.value, code=code, path="resources[0].properties.rewriteRuleSets[0]")
    assert "at most 40" in str(info.value)


def test_rewrite_set_over_both_limits_reports_both(demo: GatewayResource) -> None:
    def over(res: Resource) -> None:
        inner(res, "rewriteRuleSets")["rewriteRules"].append(_extra_rule(40, 41))

    with pytest.raises(InvalidConfiguration) as info:
        build(demo, over)

    codes = {p.error_code for p in info.value.problems}
    assert codes == {
        "EmulatorRewriteConfigurationsPerSetLimit",
        "EmulatorRewriteConditionsPerSetLimit",
    }


def test_gateway_takes_at_most_400_rewrite_rule_sets(demo: GatewayResource) -> None:
    def many(res: Resource) -> None:
        sets = props(res)["rewriteRuleSets"]
        sets.extend({"name": f"spare-{i}", "properties": {"rewriteRules": []}} for i in range(400))

    with pytest.raises(TemplateError) as info:
        build(demo, many)

    assert_error(
        info.value,
        code="EmulatorRewriteRuleSetsLimit",
        path="resources[0].properties.rewriteRuleSets",
    )


def test_rewrite_condition_with_invalid_regex_is_rejected(demo: GatewayResource) -> None:
    def bad(res: Resource) -> None:
        rule = inner(res, "rewriteRuleSets")["rewriteRules"][0]
        rule["conditions"] = [{"variable": "var_uri_path", "pattern": "(unclosed"}]

    with pytest.raises(TemplateError) as info:
        build(demo, bad)

    assert info.value.path == (
        "resources[0].properties.rewriteRuleSets[0].properties.rewriteRules[0]"
        ".conditions[0].pattern"
    )


@pytest.mark.parametrize("header", ["Connection", "upgrade"])
def test_connection_and_upgrade_headers_cannot_be_rewritten(
    demo: GatewayResource, header: str
) -> None:
    def bad(res: Resource) -> None:
        rule = inner(res, "rewriteRuleSets")["rewriteRules"][0]
        rule["actionSet"]["requestHeaderConfigurations"][0]["headerName"] = header

    with pytest.raises(TemplateError) as info:
        build(demo, bad)

    assert info.value.error_code == "EmulatorHeaderNotRewritable"


# --- backend overrides ----------------------------------------------------------------------------


def test_backend_override_replaces_pool_addresses_and_warns(demo: GatewayResource) -> None:
    config = build(demo)
    target = (BackendAddress("127.0.0.1", 18080),)

    overridden = with_backend_overrides(config, {"STUB-BACKEND": target})

    (pool,) = overridden.pools
    assert pool.name == "stub-backend"
    assert pool.addresses == target
    assert all(r.pool is not None and r.pool.addresses == target for r in overridden.rules)
    assert any("10.0.0.5 replaced by 127.0.0.1:18080" in w for w in overridden.warnings)
    assert config.pools[0].addresses == (BackendAddress("10.0.0.5"),)


def test_backend_override_of_unknown_pool_lists_the_pools(demo: GatewayResource) -> None:
    config = build(demo)

    with pytest.raises(TemplateError) as info:
        with_backend_overrides(config, {"nope": (BackendAddress("127.0.0.1", 1),)})

    assert info.value.error_code == "EmulatorUnknownBackendPool"
    assert "stub-backend" in info.value.message
    assert info.value.fix


def test_backend_settings_defaults(demo: GatewayResource) -> None:
    def minimal(res: Resource) -> None:
        item(res, "backendHttpSettingsCollection")["properties"] = {"port": 81}

    settings = build(demo, minimal).rules[0].settings

    assert settings is not None
    assert settings.port == 81
    assert settings.protocol is ListenerProtocol.HTTP
    assert settings.request_timeout_s == 20
    assert settings.host_name is None
    assert settings.pick_host_name_from_backend_address is False


@pytest.mark.parametrize(
    ("policy", "name", "min_version", "tls13"),
    [
        (
            {"policyType": "Custom", "minProtocolVersion": "TLSv1_2"},
            "Custom(TLSv1_2)",
            "TLSv1_2",
            False,
        ),
        (
            {"policyType": "CustomV2", "minProtocolVersion": "TLSv1_3"},
            "Custom(TLSv1_3)",
            "TLSv1_3",
            True,
        ),
        (
            {"policyType": "customv2", "minProtocolVersion": "tlsv1_2"},
            "Custom(TLSv1_2)",
            "TLSv1_2",
            True,
        ),
        ({"policyType": "Custom"}, "Custom(TLSv1_2)", "TLSv1_2", False),
        ({"policyName": "AppGwSslPolicy20170401S"}, "AppGwSslPolicy20170401S", "TLSv1_2", False),
    ],
)
def test_gateway_ssl_policy_kinds(
    demo: GatewayResource, policy: Resource, name: str, min_version: str, tls13: bool
) -> None:
    def gateway_policy_only(res: Resource) -> None:
        props(res)["sslPolicy"] = policy
        # The profile's 2022 policy would mix policy families with the older ones.
        inner(res, "sslProfiles", 1).pop("sslPolicy")

    config = build(demo, gateway_policy_only)

    effective = config.listener("strict-listener").ssl_policy
    assert (effective.name, effective.min_version.value, effective.tls13) == (
        name,
        min_version,
        tls13,
    )


@pytest.mark.parametrize(
    "policy",
    [
        {"policyType": "Custom", "minProtocolVersion": "TLSv1_3"},
        {"policyType": "Custom", "minProtocolVersion": "SSLv3"},
    ],
)
def test_impossible_custom_policy_minimum_is_rejected(
    demo: GatewayResource, policy: Resource
) -> None:
    with pytest.raises(TemplateError) as info:
        build(demo, lambda r: props(r).__setitem__("sslPolicy", policy))

    assert_error(
        info.value,
        code="InvalidTemplate",
        path="resources[0].properties.sslPolicy.minProtocolVersion",
    )
