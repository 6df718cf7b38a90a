"""Frontend ports and HTTP(S) listeners: host names, certificates and SSL profiles resolved."""

from __future__ import annotations

import re
from typing import Final

from emulator.arm.certdata import (
    ServerCertificate,
)
from emulator.arm.props import Props
from emulator.arm.ssl_policies import (
    SslPolicy,
)
from emulator.errors import (
    EmulatorError,
    TemplateError,
)
from emulator.model.builder.state import Builder, Skip, check_unique, parse_enum, require_name
from emulator.model.types import Listener, ListenerProtocol, SslProfile


def build_frontend_ports(builder: Builder, props: Props) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in props.children("frontendPorts", "ApplicationGatewayFrontendPort"):
        with builder.item("frontendPorts", item):
            name = require_name(item)
            check_unique(builder, out, name, item, "frontendPorts")
            inner = item.child("properties", "ApplicationGatewayFrontendPortPropertiesFormat")
            item.finish()
            if inner is None:
                raise TemplateError(
                    f"frontend port '{name}' has no 'properties'", file=builder.file, path=item.path
                )
            port = inner.int_("port")
            inner.finish()
            if port is None or not 1 <= port <= 65535:
                raise inner.error(
                    "port",
                    f"is {port}; a frontend port is 1-65535",
                    fix="use a port from 1 to 65535 (`run --listen PORT=LOCAL` maps it to a local "
                    "port)",
                    code="EmulatorFrontendPortOutOfRange",
                )
            out[name] = port
    return out


_HOST_NAME: Final = re.compile(
    r"^[A-Za-z0-9*?]([A-Za-z0-9*?\-]{0,61}[A-Za-z0-9*?])?(\.[A-Za-z0-9*?]([A-Za-z0-9*?\-]{0,61}[A-Za-z0-9*?])?)*$"
)


def build_listeners(
    builder: Builder,
    props: Props,
    ports: dict[str, int],
    certs: dict[str, ServerCertificate],
    profiles: dict[str, SslProfile],
    default_policy: SslPolicy,
) -> dict[str, Listener]:
    out: dict[str, Listener] = {}
    for item in props.children("httpListeners", "ApplicationGatewayHttpListener"):
        with builder.item("httpListeners", item):
            name = require_name(item)
            check_unique(builder, out, name, item, "httpListeners")
            inner = item.child("properties", "ApplicationGatewayHttpListenerPropertiesFormat")
            item.finish()
            if inner is None:
                raise TemplateError(
                    f"listener '{name}' has no 'properties'", file=builder.file, path=item.path
                )
            inner.ref("frontendIPConfiguration")
            port_ref = inner.ref("frontendPort")
            if port_ref is None:
                raise inner.error(
                    "frontendPort", "is missing", fix="reference one of frontendPorts"
                )
            # Each reference is checked even when an earlier one failed: two independent
            # mistakes are two errors in one run. A broken port only skips this listener.
            ref_errors: list[EmulatorError] = []
            port_name = None
            try:
                port_name = builder.ref_name_or_none(
                    port_ref, "frontendPorts", ports, path=inner.key_path("frontendPort")
                )
            except EmulatorError as exc:
                ref_errors.append(exc)
            protocol = parse_enum(
                builder, ListenerProtocol, inner.str_("protocol") or "Http", inner, "protocol"
            )
            host_names = _host_names(inner, ref_errors)
            cert_ref = inner.ref("sslCertificate")
            profile_ref = inner.ref("sslProfile")
            require_sni = inner.bool_("requireServerNameIndication", False)
            inner.get("customErrorConfigurations")
            inner.finish(unsupported={"firewallPolicy": "per-listener WAF policies"})
            cert = None
            profile = None
            if protocol is ListenerProtocol.HTTPS:
                cert, profile = _https_certificate_and_profile(
                    builder,
                    inner,
                    name,
                    cert_ref=cert_ref,
                    profile_ref=profile_ref,
                    certs=certs,
                    profiles=profiles,
                    port_missing=port_name is None,
                    ref_errors=ref_errors,
                )
            elif cert_ref is not None or profile_ref is not None:
                raise TemplateError(
                    f"HTTP listener '{name}' references an SSL certificate or SSL profile",
                    file=builder.file,
                    path=inner.path,
                    fix="set 'protocol' to 'Https' or remove the sslCertificate / sslProfile",
                    code="EmulatorSslProfileOnHttpListener",
                )
            builder.report_all(ref_errors)
            if port_name is None:
                raise Skip
            policy = (
                profile.ssl_policy if profile and profile.ssl_policy else None
            ) or default_policy
            out[name] = Listener(
                name=name,
                protocol=protocol,
                frontend_port=ports[port_name],
                frontend_port_name=port_name,
                host_names=tuple(host_names),
                server_certificate=cert,
                ssl_profile=profile,
                ssl_policy=policy,
                require_sni=require_sni,
                path=item.path,
            )
    return out


MAX_HOST_NAMES_PER_LISTENER: Final = 5


def _host_names(inner: Props, ref_errors: list[EmulatorError]) -> list[str]:
    """``hostName`` and ``hostNames`` together; an invalid name is added to ``ref_errors`` (the
    listener's other problems are still looked for), too many of them fails at once."""
    single_host = inner.str_("hostName")
    host_names = [single_host] if single_host else []
    host_names += [str(h) for h in inner.list_("hostNames")]
    for host in host_names:
        if not host or not _HOST_NAME.match(host):
            ref_errors.append(
                inner.error(
                    "hostNames",
                    f"has an invalid host name '{host}'",
                    fix="use DNS names of letters, digits, hyphens and dots; '*' and '?' "
                    "are the only wildcards",
                    code="EmulatorHostNameInvalid",
                )
            )
            break
    if len(host_names) > MAX_HOST_NAMES_PER_LISTENER:
        raise inner.error(
            "hostNames",
            f"has {len(host_names)} host names; a multi-site listener takes at most "
            f"{MAX_HOST_NAMES_PER_LISTENER}",
            fix="split the host names over several listeners",
            code="EmulatorTooManyHostNames",
        )
    return host_names


def _https_certificate_and_profile(
    builder: Builder,
    inner: Props,
    name: str,
    *,
    cert_ref: str | None,
    profile_ref: str | None,
    certs: dict[str, ServerCertificate],
    profiles: dict[str, SslProfile],
    port_missing: bool,
    ref_errors: list[EmulatorError],
) -> tuple[ServerCertificate | None, SslProfile | None]:
    """An HTTPS listener's server certificate (required) and SSL profile (optional).

    Raises:
        Skip: a reference names an item that failed to build, or the frontend port did.
    """
    cert: ServerCertificate | None = None
    profile: SslProfile | None = None
    if cert_ref is None:
        raise TemplateError(
            f"HTTPS listener '{name}' has no sslCertificate",
            file=builder.file,
            path=inner.path,
            fix="reference one of sslCertificates in 'sslCertificate'",
            code="EmulatorHttpsListenerWithoutCertificate",
        )
    skip = port_missing and not ref_errors
    try:
        cert_name = builder.ref_name_or_none(
            cert_ref, "sslCertificates", certs, path=inner.key_path("sslCertificate")
        )
        cert = certs[cert_name] if cert_name is not None else None
        skip = skip or cert_name is None
    except EmulatorError as exc:
        ref_errors.append(exc)
    if profile_ref is not None:
        try:
            profile_name = builder.ref_name_or_none(
                profile_ref, "sslProfiles", profiles, path=inner.key_path("sslProfile")
            )
            profile = profiles[profile_name] if profile_name is not None else None
            skip = skip or profile_name is None
        except EmulatorError as exc:
            ref_errors.append(exc)
    builder.report_all(ref_errors)
    if skip:
        raise Skip
    return cert, profile
