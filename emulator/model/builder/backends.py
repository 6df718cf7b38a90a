"""Backend pools, trusted root certificates, health probes and backend HTTP settings."""

from __future__ import annotations

import re
from typing import Final

from cryptography import x509

from emulator.arm.certdata import (
    decode_upload_field,
)
from emulator.arm.props import Props
from emulator.errors import (
    CertificateError,
    TemplateError,
    UnsupportedFeature,
)
from emulator.model.builder.state import Builder, check_unique, parse_enum, require_name
from emulator.model.types import (
    DEFAULT_AFFINITY_COOKIE,
    DEFAULT_REQUEST_TIMEOUT_S,
    BackendAddress,
    BackendPool,
    BackendSettings,
    ListenerProtocol,
    Probe,
)


def build_pools(builder: Builder, props: Props) -> dict[str, BackendPool]:
    out: dict[str, BackendPool] = {}
    for item in props.children("backendAddressPools", "ApplicationGatewayBackendAddressPool"):
        with builder.item("backendAddressPools", item):
            name = require_name(item)
            check_unique(builder, out, name, item, "backendAddressPools")
            inner = item.child("properties", "ApplicationGatewayBackendAddressPoolPropertiesFormat")
            item.finish()
            addresses: list[BackendAddress] = []
            if inner is not None:
                for a in inner.children("backendAddresses", "ApplicationGatewayBackendAddress"):
                    host = a.str_("fqdn") or a.str_("ipAddress")
                    a.finish()
                    if not host:
                        raise TemplateError(
                            "a backend address needs 'fqdn' or 'ipAddress'",
                            file=builder.file,
                            path=a.path,
                        )
                    addresses.append(BackendAddress(host))
                inner.finish(ignored=("backendIPConfigurations",))
            out[name] = BackendPool(name, tuple(addresses))
    return out


def build_trusted_root_certs(
    builder: Builder, props: Props
) -> dict[str, tuple[x509.Certificate, ...]]:
    """``trustedRootCertificates[]``: CA certificates that HTTPS backends' chains end in."""
    out: dict[str, tuple[x509.Certificate, ...]] = {}
    for item in props.children(
        "trustedRootCertificates", "ApplicationGatewayTrustedRootCertificate"
    ):
        with builder.item("trustedRootCertificates", item):
            name = require_name(item)
            check_unique(builder, out, name, item, "trustedRootCertificates")
            inner = item.child(
                "properties", "ApplicationGatewayTrustedRootCertificatePropertiesFormat"
            )
            item.finish()
            if inner is None:
                raise TemplateError(
                    f"trusted root certificate '{name}' has no 'properties'",
                    file=builder.file,
                    path=item.path,
                )
            if inner.get("keyVaultSecretId"):
                raise UnsupportedFeature(
                    "keyVaultSecretId cannot be read offline",
                    file=builder.file,
                    path=inner.key_path("keyVaultSecretId"),
                    fix=f"pass the root certificate: --certificate {name}=root.cer (--loose "
                    "cannot stand in for a trusted root), or put its base64 in 'data'",
                )
            data = inner.str_("data") or ""
            inner.finish()
            try:
                raw, as_text = decode_upload_field(
                    data, what=f"trustedRootCertificate '{name}' data"
                )
            except CertificateError as exc:
                raise exc.located(file=builder.file, path=inner.key_path("data")) from None
            certs = _load_certificates(raw)
            if as_text and certs:
                builder.warnings.append(pem_text_warning("trustedRootCertificates", name))
            if not certs:
                raise inner.error(
                    "data",
                    "holds no certificate",
                    fix="set 'data' to the base64 of the backend's root CA certificate (.cer)",
                    code="EmulatorTrustedRootCertificateInvalidData",
                )
            out[name] = certs
    return out


def pem_text_warning(collection: str, name: str) -> str:
    return (
        f"{collection} '{name}': 'data' holds PEM text (Bicep loadTextContent), not base64; "
        "accepted here, but Azure documents base64: use loadFileAsBase64('ca.cer') instead"
    )


def _load_certificates(raw: bytes) -> tuple[x509.Certificate, ...]:
    """PEM blocks, or one DER certificate (a .cer file is either). Empty when neither."""
    if b"-----BEGIN CERTIFICATE-----" in raw:
        try:
            return tuple(x509.load_pem_x509_certificates(raw))
        except ValueError:
            return ()
    try:
        return (x509.load_der_x509_certificate(raw),)
    except ValueError:
        return ()


#: Probe defaults (ApplicationGatewayProbePropertiesFormat; probe overview): healthy is
#: 200-399, interval and timeout 30 s, three failures make a backend unhealthy.
DEFAULT_PROBE_STATUS: Final = ((200, 399),)
DEFAULT_PROBE_INTERVAL_S: Final = 30
DEFAULT_PROBE_TIMEOUT_S: Final = 30
DEFAULT_PROBE_UNHEALTHY_THRESHOLD: Final = 3
_STATUS_RANGE: Final = re.compile(r"^(\d{3})(?:-(\d{3}))?$")


def build_probes(builder: Builder, props: Props) -> dict[str, Probe]:
    out: dict[str, Probe] = {}
    for item in props.children("probes", "ApplicationGatewayProbe"):
        with builder.item("probes", item):
            name = require_name(item)
            check_unique(builder, out, name, item, "probes")
            inner = item.child("properties", "ApplicationGatewayProbePropertiesFormat")
            item.finish()
            if inner is None:
                raise TemplateError(
                    f"probe '{name}' has no 'properties'", file=builder.file, path=item.path
                )
            protocol = parse_enum(
                builder, ListenerProtocol, inner.str_("protocol") or "Http", inner, "protocol"
            )
            host = inner.str_("host") or None
            path = inner.str_("path") or "/"
            interval = inner.int_("interval", DEFAULT_PROBE_INTERVAL_S)
            timeout = inner.int_("timeout", DEFAULT_PROBE_TIMEOUT_S)
            threshold = inner.int_("unhealthyThreshold", DEFAULT_PROBE_UNHEALTHY_THRESHOLD)
            pick = inner.bool_("pickHostNameFromBackendHttpSettings", False)
            port = inner.int_("port")
            match = inner.child("match", "ApplicationGatewayProbeHealthResponseMatch")
            ranges: list[tuple[int, int]] = []
            body: str | None = None
            if match is not None:
                body = match.str_("body") or None
                for text in match.list_("statusCodes"):
                    found = _STATUS_RANGE.match(str(text).strip())
                    if found is None:
                        raise match.error(
                            "statusCodes",
                            f"has '{text}'; use a status or a range such as 200-399",
                            fix="write each entry as NNN or NNN-NNN",
                        )
                    low = int(found.group(1))
                    ranges.append((low, int(found.group(2) or low)))
                match.finish()
            inner.finish(
                ignored=("minServers", "pickHostNameFromBackendSettings", "backendHttpSettings"),
                unsupported={"enableProbeProxyProtocolHeader": "PROXY protocol probes"},
                notes=builder.notes,
            )
            if not path.startswith("/"):
                raise inner.error("path", f"is '{path}'; it must start with '/'", fix="use /path")
            for key, value in (("interval", interval), ("timeout", timeout)):
                if value is None or not 1 <= value <= 86400:
                    raise inner.error(key, f"is {value}; it must be 1-86400 seconds")
            if threshold is None or not 1 <= threshold <= 20:
                raise inner.error("unhealthyThreshold", f"is {threshold}; it must be 1-20")
            if host and pick:
                raise inner.error(
                    "host",
                    "is set together with pickHostNameFromBackendHttpSettings",
                    fix="use one of the two",
                    code="EmulatorProbeHostConflict",
                )
            if port is not None and not 1 <= port <= 65535:
                raise inner.error("port", f"is {port}; it must be 1-65535")
            assert interval is not None
            assert timeout is not None
            out[name] = Probe(
                name=name,
                protocol=protocol,
                host=host,
                path=path,
                interval_s=interval,
                timeout_s=timeout,
                unhealthy_threshold=threshold,
                pick_host_from_settings=pick,
                port=port,
                status_ranges=tuple(ranges) or DEFAULT_PROBE_STATUS,
                body=body,
            )
    return out


def build_backend_settings(
    builder: Builder,
    props: Props,
    roots: dict[str, tuple[x509.Certificate, ...]],
    probes: dict[str, Probe],
) -> dict[str, BackendSettings]:
    out: dict[str, BackendSettings] = {}
    for item in props.children(
        "backendHttpSettingsCollection", "ApplicationGatewayBackendHttpSettings"
    ):
        with builder.item("backendHttpSettingsCollection", item):
            name = require_name(item)
            check_unique(builder, out, name, item, "backendHttpSettingsCollection")
            inner = item.child(
                "properties", "ApplicationGatewayBackendHttpSettingsPropertiesFormat"
            )
            item.finish()
            if inner is None:
                raise TemplateError(
                    f"backend settings '{name}' have no 'properties'",
                    file=builder.file,
                    path=item.path,
                )
            port = inner.int_("port")
            protocol = parse_enum(
                builder, ListenerProtocol, inner.str_("protocol") or "Http", inner, "protocol"
            )
            timeout = inner.int_("requestTimeout", DEFAULT_REQUEST_TIMEOUT_S)
            host_name = inner.str_("hostName")
            pick = inner.bool_("pickHostNameFromBackendAddress", False)
            affinity = (inner.str_("cookieBasedAffinity") or "Disabled").lower()
            cookie_name = inner.str_("affinityCookieName") or DEFAULT_AFFINITY_COOKIE
            path = inner.str_("path") or None
            sni_name = inner.str_("sniName") or None
            validate_chain = inner.bool_("validateCertChainAndExpiry", True)
            validate_sni = inner.bool_("validateSNI", True)
            draining = inner.child("connectionDraining", "ApplicationGatewayConnectionDraining")
            if draining is not None:
                draining.get("enabled")
                draining.get("drainTimeoutInSec")
                draining.finish()
                builder.notes.add(draining.path)
            probe_ref = inner.ref("probe")
            root_refs = inner.refs("trustedRootCertificates")
            inner.finish(
                ignored=("probeEnabled", "authenticationCertificates"),
                unsupported={"dedicatedBackendConnection": "dedicated backend connections"},
                notes=builder.notes,
            )
            port, timeout = _checked_settings_values(inner, port, affinity, path, timeout)
            trusted: list[x509.Certificate] = []
            for ref, ref_path in root_refs:
                root_name = builder.ref_name(ref, "trustedRootCertificates", roots, path=ref_path)
                trusted += roots[root_name]
            if trusted and protocol is not ListenerProtocol.HTTPS:
                builder.warnings.append(
                    f"backend settings '{name}': trustedRootCertificates have no effect with "
                    "protocol Http"
                )
            probe = None
            if probe_ref is not None:
                probe_name = builder.ref_name(
                    probe_ref, "probes", probes, path=inner.key_path("probe")
                )
                probe = probes[probe_name]
                if pick and probe.host is None and not probe.pick_host_from_settings:
                    # Azure refuses this pairing: the probe would send 127.0.0.1 as Host to a
                    # backend that needs its own name (application-gateway-probe-overview).
                    builder.warnings.append(
                        f"backend settings '{name}' pick the host name from the backend address, "
                        f"but probe '{probe.name}' neither sets 'host' nor picks it from the "
                        "settings; Azure refuses that combination"
                    )
            out[name] = BackendSettings(
                name,
                port,
                protocol,
                timeout,
                host_name,
                pick,
                path=path,
                cookie_affinity=affinity == "enabled",
                affinity_cookie_name=cookie_name,
                trusted_roots=tuple(trusted),
                sni_name=sni_name,
                validate_cert_chain_and_expiry=validate_chain,
                validate_sni=validate_sni,
                probe=probe,
            )
    return out


def _checked_settings_values(
    inner: Props, port: int | None, affinity: str, path: str | None, timeout: int | None
) -> tuple[int, int]:
    """The range checks of one backend settings item; returns its port and request timeout."""
    if port is None or not 1 <= port <= 65535:
        raise inner.error(
            "port", f"is {port}; it must be 1-65535", fix="use the backend's port, 1-65535"
        )
    if affinity not in ("enabled", "disabled"):
        raise inner.error(
            "cookieBasedAffinity",
            f"is '{inner.str_('cookieBasedAffinity')}'",
            fix="use Enabled or Disabled",
            code="InvalidRequestContent",
        )
    if path is not None and not path.startswith("/"):
        raise inner.error(
            "path",
            f"is '{path}'; an override path starts with '/'",
            fix="write it as /prefix/",
            code="EmulatorBackendPathInvalid",
        )
    assert timeout is not None  # read with a default
    if not 1 <= timeout <= 86400:
        raise inner.error(
            "requestTimeout",
            f"is {timeout}; it must be 1-86400 seconds",
            fix=f"use a number of seconds from 1 to 86400 (default {DEFAULT_REQUEST_TIMEOUT_S})",
        )
    return port, timeout
