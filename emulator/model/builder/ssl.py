"""TLS sub-resources: the gateway SSL policy, server certificates, trusted client CAs, profiles.

Policies follow the TLS 1.0/1.1 retirement (a retired policy is an error, or with ``--loose`` a
warning); an SSL profile resolves its trusted client CAs and carries its client-auth mode.
"""

from __future__ import annotations

from collections.abc import Mapping

from emulator.arm.certdata import (
    ServerCertificate,
    TrustedClientCa,
    decode_base64_field,
    decode_upload_field,
    load_server_pfx,
    load_trusted_client_ca,
)
from emulator.arm.props import Props
from emulator.arm.ssl_policies import (
    DEFAULT_POLICY_NAME,
    DEPRECATED_TLS_CODE,
    DOCUMENTED_LEGACY_DEFAULT,
    LEGACY_DEFAULT_POLICY_NAME,
    NEW_DEFAULT_FROM_API,
    PREDEFINED_POLICIES,
    RETIRED_CUSTOM_SUITES,
    RETIRED_POLICIES,
    RETIREMENT_URL,
    SslPolicy,
    TlsVersion,
)
from emulator.errors import (
    CertificateError,
    EmulatorError,
    TemplateError,
    UnsupportedFeature,
)
from emulator.model.builder.backends import pem_text_warning
from emulator.model.builder.state import Builder, check_unique, parse_enum, require_name
from emulator.model.names import find_name
from emulator.model.types import PASSTHROUGH_MIN_API, ClientAuthMode, RevocationMode, SslProfile


def _policy_from(builder: Builder, item: Props | None) -> SslPolicy | None:
    if item is None:
        return None
    policy_type = (item.str_("policyType") or "").lower()
    policy_name = item.str_("policyName")
    min_version = item.str_("minProtocolVersion")
    suites = item.list_("cipherSuites")
    disabled = item.list_("disabledSslProtocols")
    item.finish()
    if policy_type == "predefined" or (not policy_type and policy_name):
        match = find_name(PREDEFINED_POLICIES, policy_name or "")
        if match is None:
            raise TemplateError(
                f"unknown predefined SSL policy '{policy_name}'",
                file=builder.file,
                path=item.key_path("policyName"),
                fix="use one of " + ", ".join(PREDEFINED_POLICIES),
                code="EmulatorSslPolicyNameInvalid",
            )
        if match in RETIRED_POLICIES:
            builder.retired(
                TemplateError(
                    f"The TLS policy {match} uses a deprecated TLS version (TLS 1.0/1.1): it "
                    "can no longer be associated with an Application Gateway since the "
                    f"retirement of 31 August 2025 ({RETIREMENT_URL})",
                    file=builder.file,
                    path=item.key_path("policyName"),
                    fix="use AppGwSslPolicy20220101 or AppGwSslPolicy20220101S (or "
                    "AppGwSslPolicy20170401S when its cipher suites are needed)",
                    code=DEPRECATED_TLS_CODE,
                )
            )
        return PREDEFINED_POLICIES[match]
    if policy_type in ("custom", "customv2"):
        wanted = (min_version or TlsVersion.TLSV1_2.value).lower()
        version = next((v for v in TlsVersion if v.value.lower() == wanted), None)
        if version is None:
            raise item.error(
                "minProtocolVersion",
                f"is '{min_version}'",
                fix="use TLSv1_0, TLSv1_1, TLSv1_2 or TLSv1_3",
            )
        if version is TlsVersion.TLSV1_3 and policy_type == "custom":
            # TLS 1.3 exists only in the CustomV2 policy type (TLS policy overview); a Custom
            # policy caps at TLS 1.2, so this minimum would leave no protocol to negotiate.
            raise item.error(
                "minProtocolVersion",
                "is 'TLSv1_3', which only a 'CustomV2' policy supports",
                fix="set 'policyType' to 'CustomV2', or lower 'minProtocolVersion' to TLSv1_2",
            )
        names = tuple(str(s) for s in suites)
        if policy_type == "custom":
            names = _retire_custom(builder, item, version, names)
        return SslPolicy(
            name=f"Custom({version.value})",
            min_version=version,
            cipher_suites=names,
            tls13=policy_type == "customv2",
        )
    if not policy_type and disabled:
        raise UnsupportedFeature(
            "'disabledSslProtocols' without a policy type is not emulated yet",
            file=builder.file,
            path=item.path,
            fix="use a Predefined or Custom policy",
        )
    raise item.error("policyType", f"is '{policy_type}'", fix="use Predefined, Custom or CustomV2")


def _retire_custom(
    builder: Builder, item: Props, version: TlsVersion, suites: tuple[str, ...]
) -> tuple[str, ...]:
    """A Custom (not CustomV2) policy after the TLS 1.0/1.1 retirement: TLS 1.2 only, and
    without the twelve suites the retirement page lists."""
    if version in (TlsVersion.TLSV1_0, TlsVersion.TLSV1_1):
        builder.retired(
            TemplateError(
                f"The Custom TLS policy's minProtocolVersion {version.value} is a deprecated "
                "TLS version: Custom policies support only TLS 1.2 since the retirement of 31 "
                f"August 2025 ({RETIREMENT_URL})",
                file=builder.file,
                path=item.key_path("minProtocolVersion"),
                fix="set 'minProtocolVersion' to TLSv1_2 (or use a CustomV2 policy)",
                code=DEPRECATED_TLS_CODE,
            )
        )
        if builder.loose:
            return suites
    # Differs from Azure, perhaps: the retirement page says these suites "won't be supported"
    # without saying whether a deployment naming them fails; we drop them with a warning and
    # refuse only a policy left with none.
    retired = [s for s in suites if s.upper() in RETIRED_CUSTOM_SUITES]
    if not retired:
        return suites
    kept = tuple(s for s in suites if s.upper() not in RETIRED_CUSTOM_SUITES)
    if not kept:
        raise TemplateError(
            "every cipher suite of the Custom TLS policy was retired on 31 August 2025 "
            f"({', '.join(retired)}), so it has none left ({RETIREMENT_URL})",
            file=builder.file,
            path=item.key_path("cipherSuites"),
            fix="add TLS 1.2 suites that remain, e.g. TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 "
            "and TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, or use a CustomV2 policy",
            code=DEPRECATED_TLS_CODE,
        )
    builder.warnings.append(
        f"{item.key_path('cipherSuites')}: {', '.join(retired)} left out: Custom policies lost "
        f"these suites in the TLS 1.0/1.1 retirement of 31 August 2025 ({RETIREMENT_URL})"
    )
    return kept


def build_gateway_policy(builder: Builder, props: Props) -> SslPolicy:
    policy = _policy_from(builder, props.child("sslPolicy", "ApplicationGatewaySslPolicy"))
    if policy is not None:
        return policy
    if builder.gw.api_version >= NEW_DEFAULT_FROM_API:
        return PREDEFINED_POLICIES[DEFAULT_POLICY_NAME]
    builder.warnings.append(
        f"no sslPolicy and API version {builder.gw.api_version} (before {NEW_DEFAULT_FROM_API}): "
        f"the documented default {DOCUMENTED_LEGACY_DEFAULT} was retired on 31 August 2025; "
        f"the emulator applies {LEGACY_DEFAULT_POLICY_NAME} (TLS 1.2, the same older policy "
        "family); set sslPolicy to say which policy you mean"
    )
    return PREDEFINED_POLICIES[LEGACY_DEFAULT_POLICY_NAME]


def check_policy_families(
    builder: Builder, gateway: SslPolicy, profiles: Mapping[str, SslProfile]
) -> None:
    """Old and new policy families cannot co-exist on one gateway, SSL profiles included (TLS
    policy overview). Azure's code and message: seen in deployment errors, e.g.
    Azure/terraform-azurerm-avm-res-network-applicationgateway#173 and
    aztfmod/terraform-azurerm-caf#1711."""
    for name, profile in profiles.items():
        policy = profile.ssl_policy
        if policy is None or policy.newer_family == gateway.newer_family:
            continue
        builder.report(
            TemplateError(
                "The newer and older SSL policies can't be used together for SSLPolicy and "
                f"listener-specific SSLProfile. Your configuration's sslProfile {name} "
                f"({_family(policy)}) conflicts with the global sslPolicy {gateway.name} "
                f"({_family(gateway)})",
                file=builder.file,
                path=builder.profile_policy_paths.get(name),
                fix="use the 2022 predefined policies or CustomV2 everywhere (the gateway's "
                "sslPolicy and every profile's), or the older ones everywhere",
                code="ApplicationGatewaySslPolicyMisMatch",
            )
        )


def _family(policy: SslPolicy) -> str:
    return "newer family" if policy.newer_family else "older family"


def build_ssl_certificates(builder: Builder, props: Props) -> dict[str, ServerCertificate]:
    out: dict[str, ServerCertificate] = {}
    for item in props.children("sslCertificates", "ApplicationGatewaySslCertificate"):
        with builder.item("sslCertificates", item):
            name = require_name(item)
            check_unique(builder, out, name, item, "sslCertificates")
            inner = item.child("properties", "ApplicationGatewaySslCertificatePropertiesFormat")
            item.finish()
            if inner is None:
                raise TemplateError(
                    "sslCertificate has no 'properties'", file=builder.file, path=item.path
                )
            if inner.get("keyVaultSecretId"):
                raise UnsupportedFeature(
                    "keyVaultSecretId cannot be read offline",
                    file=builder.file,
                    path=inner.key_path("keyVaultSecretId"),
                    fix=f"pass the certificate's file: --certificate {name}=cert.pfx with "
                    f"--certificate-password {name}=PASSWORD, or run with --loose for a "
                    "development certificate (or put its base64 in 'data' and 'password')",
                )
            data = inner.str_("data")
            password = inner.str_("password")
            inner.get("publicCertData")
            inner.finish()
            if not data:
                raise TemplateError(
                    f"sslCertificate '{name}' has no 'data'",
                    file=builder.file,
                    path=inner.path,
                    fix="set 'data' to the base64 of the server certificate's .pfx and 'password' "
                    "to its password (`az ... show` and the portal never print the PFX, only "
                    "publicCertData: add them to an exported gateway before running it)",
                    code="EmulatorSslCertificateWithoutData",
                )
            cert_id = f"{builder.gw.resource_id}/sslCertificates/{name}"
            try:
                raw = decode_base64_field(data, what=f"sslCertificate '{name}' data")
                out[name] = load_server_pfx(name, raw, password, cert_id=cert_id)
            except CertificateError as exc:
                raise exc.located(file=builder.file, path=inner.key_path("data")) from None
    return out


def build_trusted_client_certs(builder: Builder, props: Props) -> dict[str, TrustedClientCa]:
    out: dict[str, TrustedClientCa] = {}
    for item in props.children(
        "trustedClientCertificates", "ApplicationGatewayTrustedClientCertificate"
    ):
        with builder.item("trustedClientCertificates", item):
            name = require_name(item)
            check_unique(builder, out, name, item, "trustedClientCertificates")
            inner = item.child(
                "properties", "ApplicationGatewayTrustedClientCertificatePropertiesFormat"
            )
            item.finish()
            data = inner.str_("data") if inner is not None else None
            if inner is not None:
                inner.finish(ignored=("validatedCertData", "clientCertIssuerDN"))
            try:
                raw, as_text = decode_upload_field(
                    data or "", what=f"trustedClientCertificate '{name}' data"
                )
                out[name] = load_trusted_client_ca(name, raw)
                if as_text:
                    builder.warnings.append(pem_text_warning("trustedClientCertificates", name))
            except CertificateError as exc:
                raise exc.located(file=builder.file, path=f"{item.path}.properties.data") from None
    return out


def build_ssl_profiles(
    builder: Builder, props: Props, trusted: dict[str, TrustedClientCa]
) -> dict[str, SslProfile]:
    out: dict[str, SslProfile] = {}
    for item in props.children("sslProfiles", "ApplicationGatewaySslProfile"):
        with builder.item("sslProfiles", item):
            name = require_name(item)
            check_unique(builder, out, name, item, "sslProfiles")
            inner = item.child("properties", "ApplicationGatewaySslProfilePropertiesFormat")
            item.finish()
            if inner is None:
                out[name] = SslProfile(name, None, False, RevocationMode.NONE, (), None)
                continue
            # A broken upload (already reported) is left out so the profile's own settings are
            # still checked; the profile cannot run anyway while the build has problems.
            cas_list: list[TrustedClientCa] = []
            for ref, ref_path in inner.refs("trustedClientCertificates"):
                ca_name = builder.ref_name_or_none(
                    ref, "trustedClientCertificates", trusted, path=ref_path
                )
                if ca_name is not None:
                    cas_list.append(trusted[ca_name])
            cas = tuple(cas_list)
            policy_props = inner.child("sslPolicy", "ApplicationGatewaySslPolicy")
            if policy_props is not None:
                builder.profile_policy_paths[name] = policy_props.path
            policy = _policy_from(builder, policy_props)
            cac = inner.child(
                "clientAuthConfiguration", "ApplicationGatewayClientAuthConfiguration"
            )
            inner.get("httpListeners")  # read-only back-references in `az ... show` output
            inner.finish()
            mode_text, issuer_dn, revocation_text = "Strict", False, "None"
            if cac is not None:
                mode_text = cac.str_("verifyClientAuthMode") or "Strict"
                issuer_dn = cac.bool_("verifyClientCertIssuerDN", False)
                revocation_text = cac.str_("verifyClientRevocation") or "None"
                cac.finish()
            # Both enums are checked before either error is raised: two mistakes, two errors.
            enum_errors: list[EmulatorError] = []
            mode, revocation = ClientAuthMode.STRICT, RevocationMode.NONE
            try:
                mode = parse_enum(builder, ClientAuthMode, mode_text, cac, "verifyClientAuthMode")
            except EmulatorError as exc:
                enum_errors.append(exc)
            try:
                revocation = parse_enum(
                    builder, RevocationMode, revocation_text, cac, "verifyClientRevocation"
                )
            except EmulatorError as exc:
                enum_errors.append(exc)
            builder.report_all(enum_errors)
            _warn_profile(builder, name, mode=mode, cas=cas, policy=policy, cac=cac)
            if mode is ClientAuthMode.PASSTHROUGH and builder.gw.api_version < PASSTHROUGH_MIN_API:
                assert cac is not None
                raise TemplateError(
                    "verifyClientAuthMode 'Passthrough' needs API version "
                    f"{PASSTHROUGH_MIN_API} or "
                    f"later; this gateway uses {builder.gw.api_version}",
                    file=builder.file,
                    path=cac.key_path("verifyClientAuthMode"),
                    fix=f'set the gateway\'s "apiVersion" to "{PASSTHROUGH_MIN_API}"',
                    code="InvalidRequestContent",
                )
            client_auth: ClientAuthMode | None = mode
            if mode is ClientAuthMode.STRICT and not cas:
                client_auth = None
                builder.warnings.append(
                    f"SSL profile '{name}': Strict without trustedClientCertificates requests "
                    "no client certificate, so clients are not authenticated at all; upload the "
                    "CA chain that issued the clients' certificates"
                )
                if issuer_dn or revocation is RevocationMode.OCSP:
                    builder.warnings.append(
                        f"SSL profile '{name}': issuer-DN / OCSP settings have no effect without "
                        "trusted client certificates (the profile requests no client certificate)"
                    )
            # Issuer-DN and OCSP checks are emulated for Strict (emulator.core.tls.chain); the
            # per-upload clientCertIssuerDN is computed there (emulator.core.tls.issuer_dn), since
            # the model may not import core. Passthrough verifies nothing, so they do nothing.
            if client_auth is ClientAuthMode.PASSTHROUGH and (
                issuer_dn or revocation is RevocationMode.OCSP
            ):
                builder.warnings.append(
                    f"SSL profile '{name}': issuer-DN / OCSP settings have no effect in "
                    "Passthrough mode (the gateway verifies nothing; the backend decides)"
                )
            out[name] = SslProfile(name, client_auth, issuer_dn, revocation, cas, policy)
    return out


def _warn_profile(
    builder: Builder,
    name: str,
    *,
    mode: ClientAuthMode,
    cas: tuple[TrustedClientCa, ...],
    policy: SslPolicy | None,
    cac: Props | None,
) -> None:
    """Warnings for SSL profiles that run but do not do what their author likely meant."""
    if mode is ClientAuthMode.PASSTHROUGH and cas:
        builder.warnings.append(
            f"SSL profile '{name}': Passthrough with trustedClientCertificates verifies "
            "nothing; the uploaded CAs are not used (the backend must verify the certificate)"
        )
    if mode is ClientAuthMode.PASSTHROUGH and not cas and policy is None:
        # Azure accepts this once, then refuses later updates of the gateway.
        builder.warnings.append(
            f"SSL profile '{name}': a Passthrough profile with neither sslPolicy nor "
            "trustedClientCertificates; Azure refuses later updates of the gateway with "
            f'"SslProfile {name} must specify either SslPolicy or TrustedClientCertificates": '
            "add an sslPolicy to the profile"
        )
    exported = builder.gw.json_path == "$"
    if exported and not cas and (cac is None or not cac.has("verifyClientAuthMode")):
        builder.warnings.append(
            f"SSL profile '{name}': read from `az ... show` / portal JSON without trusted "
            "client certificates or verifyClientAuthMode; older Azure CLI and PowerShell "
            "versions drop the Passthrough setting, so this runs as a profile without client "
            'authentication: add "verifyClientAuthMode": "Passthrough" if that is the intent'
        )
