"""What the dashboard's JSON API returns and which requests it refuses: functions over values.

No sockets and no clock here (``now`` is a parameter), so every answer the page shows can be
built and checked without a server. The HTTP shell (:mod:`emulator.dashboard.server`) parses the
request, asks :func:`refusal` whether to serve it, and turns these dicts into JSON.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from emulator.dashboard.identity import DemoIdentities, validity_state
from emulator.model import ClientAuthMode, GatewayConfig, Listener, ListenerProtocol
from emulator.reports.check_ca import OpenedPfx, check_ca, looks_like_pfx, open_pfx, report_json
from emulator.reports.summary import describe

if TYPE_CHECKING:
    from emulator.core.access import AccessRecord

__all__ = [
    "MAX_CHECK_NAME_CHARS",
    "BackendObservations",
    "CheckCaInput",
    "InputError",
    "Observation",
    "Refusal",
    "TryTargets",
    "check_ca_view",
    "config_view",
    "find_try_targets",
    "parse_check_ca_input",
    "refusal",
    "request_view",
]

#: Host names a browser can only reach on this machine. An IP literal is also accepted (see
#: :func:`refusal`): DNS rebinding needs a name the attacker controls, never a literal address.
LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.", "ip6-localhost"})
#: The header the gateway adds to every forwarded request: joins the backend's view to the log.
TRACE_HEADER: Final = "x-appgw-trace-id"
#: Backend observations kept, by trace id: the live table shows at most a few hundred rows.
OBSERVATIONS_KEEP: Final = 2_000
#: A file name longer than this is cut in the check-ca report (it is only a label).
MAX_CHECK_NAME_CHARS: Final = 200


# -- which requests are served ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is not served: the status and a sentence for the JSON error body."""

    status: int
    reason: str


def _host_name(host_header: str) -> str:
    """The name part of a ``Host`` value: ``[::1]:8000`` → ``::1``, ``a:1`` → ``a``."""
    value = host_header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _host_allowed(host_header: str, extra_hosts: Iterable[str]) -> bool:
    name = _host_name(host_header)
    if not name:
        return False
    if name in LOOPBACK_NAMES or name in {h.lower() for h in extra_hosts}:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def refusal(
    method: str,
    headers: Mapping[str, str],
    *,
    state_changing: bool,
    extra_hosts: Iterable[str] = (),
    state_method: str = "POST",
) -> Refusal | None:
    """None when the request may be served; else why not.

    Every request must name this machine in ``Host`` (``localhost`` or an IP literal, or a
    name the dashboard was bound to): a page on ``evil.example`` whose name was re-pointed at
    127.0.0.1 (DNS rebinding) sends ``Host: evil.example`` and is refused, so it can neither read
    the request log nor fire requests. A state-changing request (``/api/try``, ``/api/check-ca``)
    must also come from the dashboard's own page: browsers send ``Origin`` on every cross-origin
    POST, so an ``Origin`` other than ``http://`` + ``Host`` is another site; without ``Origin``
    (curl, scripts) ``Sec-Fetch-Site`` must not say cross-site. The JSON content type is required
    too, which a cross-site HTML form cannot send without a CORS preflight that is never granted.

    ``DELETE /api/requests`` is state-changing without a body (``state_method="DELETE"``):
    the same Host and Origin checks, no content type; a cross-site DELETE needs a CORS
    preflight, which is never granted.

    Args:
        headers: request headers with lowercase names (the last value of a repeated name).
        state_method: the one method a state-changing route accepts.
    """
    host = headers.get("host", "")
    if not _host_allowed(host, extra_hosts):
        return Refusal(
            403,
            f"Host {host!r} is not this machine: the dashboard answers only to localhost or an IP "
            "address (protection against DNS rebinding)",
        )
    if not state_changing:
        return None
    if method != state_method:
        return Refusal(405, f"use {state_method}")
    origin = headers.get("origin")
    if origin is not None:
        if origin.lower() != f"http://{host.strip().lower()}":
            return Refusal(
                403,
                f"Origin {origin!r} is not this dashboard (http://{host}): cross-site requests "
                "are refused",
            )
    elif headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return Refusal(403, "cross-site requests are refused")
    content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if state_method == "POST" and content_type != "application/json":
        return Refusal(415, "send the request body as JSON (Content-Type: application/json)")
    return None


# -- what the backend received --------------------------------------------------------------------


class RecordedLike(Protocol):
    """The part of ``backend_stub.RecordedRequest`` the dashboard reads."""

    @property
    def headers(self) -> tuple[tuple[str, str], ...]: ...


@dataclass(frozen=True, slots=True)
class Observation:
    """One request as the stub backend received it (``up`` runs the stub in this process)."""

    headers: tuple[tuple[str, str], ...]


class BackendObservations:
    """The headers the stub backend received, by the gateway's trace id, most recent kept.

    Pass :meth:`record` as ``backend_stub.serve(recorder=...)``. Only ``up`` can: under ``run``
    the backend is the user's own program, so the dashboard shows what the gateway logged and
    says that what the backend received was not observed.
    """

    def __init__(self, *, keep: int = OBSERVATIONS_KEEP) -> None:
        self._keep = keep
        self._by_trace: OrderedDict[str, Observation] = OrderedDict()

    def record(self, request: RecordedLike) -> None:
        trace = next((v for n, v in request.headers if n.lower() == TRACE_HEADER), "")
        if not trace:
            return
        self._by_trace[trace] = Observation(tuple(request.headers))
        while len(self._by_trace) > self._keep:
            self._by_trace.popitem(last=False)

    def get(self, trace_id: str) -> Observation | None:
        return self._by_trace.get(trace_id)

    def clear(self) -> None:
        """Forget every observation (``DELETE /api/requests``)."""
        self._by_trace.clear()


# -- the gateway as configured --------------------------------------------------------------------


def _mode(listener: Listener) -> str:
    profile = listener.ssl_profile
    if listener.protocol is not ListenerProtocol.HTTPS:
        return "HTTP"
    if profile is None or profile.client_auth is None:
        return "no client auth"
    return profile.client_auth.value


@dataclass(frozen=True, slots=True)
class TryTargets:
    """The listeners "try it" sends to: the first Strict and the first Passthrough one."""

    strict: Listener | None
    passthrough: Listener | None

    def pairs(self) -> list[tuple[str, Listener | None]]:
        return [
            (ClientAuthMode.STRICT.value, self.strict),
            (ClientAuthMode.PASSTHROUGH.value, self.passthrough),
        ]


def find_try_targets(config: GatewayConfig) -> TryTargets:
    found: dict[ClientAuthMode, Listener] = {}
    for rule in config.rules:
        profile = rule.listener.ssl_profile
        if (
            rule.listener.protocol is ListenerProtocol.HTTPS
            and profile is not None
            and profile.client_auth is not None
        ):
            found.setdefault(profile.client_auth, rule.listener)
    return TryTargets(found.get(ClientAuthMode.STRICT), found.get(ClientAuthMode.PASSTHROUGH))


def config_view(
    config: GatewayConfig,
    *,
    ports: Mapping[str, int],
    identities: DemoIdentities,
    targets: TryTargets,
    now: datetime,
) -> dict[str, Any]:
    """``/api/config``: :func:`emulator.reports.summary.describe` plus what the page needs besides.

    Per listener it adds the mode, the issuer-DN and revocation settings and the local port; then
    the "try it" identities (public facts only) and the listeners they are sent to.
    """
    described = describe(config)
    by_name = {rule.listener.name: rule.listener for rule in config.rules}
    for entry in described["listeners"]:
        listener = by_name[entry["name"]]
        profile = listener.ssl_profile
        entry["mode"] = _mode(listener)
        entry["localPort"] = ports.get(listener.name)
        entry["verifyClientCertIssuerDN"] = profile.verify_issuer_dn if profile else False
        entry["verifyClientRevocation"] = profile.revocation.value if profile else None
    try_panel: dict[str, Any] = {
        "identities": [i.to_json(now) for i in identities.identities.values()],
        "pkiDirectory": str(identities.directory) if identities.directory else None,
        "unavailable": identities.unavailable_reason,
        "targets": {
            mode: (listener.name if listener else None) for mode, listener in targets.pairs()
        },
    }
    return {"gateway": described, "try": try_panel}


def _cert_headers(config: GatewayConfig) -> dict[str, set[str]]:
    """Rule name → lowercase names of the headers its rewrite set fills from the certificate."""
    return {
        rule["name"]: {h.lower() for h in rule["forwardsClientCertificateIn"]}
        for rule in describe(config)["rules"]
    }


def received_cert_headers(
    config: GatewayConfig, rule_name: str, headers: Sequence[tuple[str, str]]
) -> list[list[str]]:
    """The request headers among ``headers`` that rule ``rule_name`` fills from the certificate."""
    wanted = _cert_headers(config).get(rule_name, set())
    return [[name, value] for name, value in headers if name.lower() in wanted]


def request_view(
    record: AccessRecord,
    *,
    config: GatewayConfig,
    identities: DemoIdentities,
    observations: BackendObservations | None,
    now: datetime,
) -> dict[str, Any]:
    """One row of the live table (``/api/requests``)."""
    try:
        listener = config.listener(record.listenerName)
        mode = _mode(listener)
    except KeyError:
        mode = ""
    certificate: dict[str, Any] | None = None
    if record.sslClientCertificateFingerprint or record.clientCertSubject:
        certificate = {
            "subject": record.clientCertSubject,
            "issuer": record.sslClientCertificateIssuerName,
            "sha1Fingerprint": record.sslClientCertificateFingerprint,
            "notBefore": None,
            "notAfter": None,
            "validity": None,
            "demoIdentity": None,
        }
        # The access record has no dates: a demo certificate's are known by its fingerprint.
        known = identities.by_fingerprint(record.sslClientCertificateFingerprint)
        if known is not None and known.certificate is not None:
            cert = known.certificate
            certificate["notBefore"] = cert.not_valid_before_utc.isoformat()
            certificate["notAfter"] = cert.not_valid_after_utc.isoformat()
            certificate["validity"] = validity_state(
                cert.not_valid_before_utc, cert.not_valid_after_utc, now
            )
            certificate["demoIdentity"] = known.spec.key
    backend: dict[str, Any] = {
        "reached": bool(record.serverRouted),
        "address": record.serverRouted or None,
        "status": record.serverStatus or None,
        "observed": False,
        "certHeaders": None,
    }
    observation = observations.get(record.transactionId) if observations is not None else None
    if observation is not None:
        backend["observed"] = True
        backend["certHeaders"] = received_cert_headers(config, record.ruleName, observation.headers)
    return {
        "time": record.timeStamp,
        "listener": record.listenerName,
        "mode": mode,
        "method": record.httpMethod,
        "uri": record.originalRequestUriWithArgs or record.requestUri,
        "clientIP": record.clientIP,
        "clientCertificate": certificate,
        "verification": record.sslClientVerify,
        "status": record.httpStatus,
        "backend": backend,
        "explanation": record.clientCertFailureExplained or None,
        "traceId": record.transactionId,
    }


# -- the certificate inspector --------------------------------------------------------------------


class InputError(ValueError):
    """A request body the API cannot use; the message is returned with status 400."""


@dataclass(frozen=True, slots=True)
class CheckCaInput:
    data: bytes
    name: str
    password: str | None
    client_cert: bytes | None


def _b64_field(body: Mapping[str, Any], field: str, *, required: bool) -> bytes | None:
    value = body.get(field)
    if value is None or value == "":
        if required:
            msg = f"'{field}' is required: the file's bytes, base64-encoded"
            raise InputError(msg)
        return None
    if not isinstance(value, str):
        msg = f"'{field}' must be a base64 string"
        raise InputError(msg)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        msg = f"'{field}' is not valid base64: {exc}"
        raise InputError(msg) from exc


def parse_check_ca_input(body: object) -> CheckCaInput:
    """``{"file": b64, "name"?: str, "password"?: str, "clientCert"?: b64}`` → values."""
    if not isinstance(body, dict):
        msg = "the body must be a JSON object"
        raise InputError(msg)
    data = _b64_field(body, "file", required=True)
    assert data is not None
    name = body.get("name") or "uploaded file"
    password = body.get("password") or None
    if not isinstance(name, str) or (password is not None and not isinstance(password, str)):
        msg = "'name' and 'password' must be strings"
        raise InputError(msg)
    return CheckCaInput(
        data=data,
        name=name[:MAX_CHECK_NAME_CHARS],
        password=password,
        client_cert=_b64_field(body, "clientCert", required=False),
    )


def _pfx_section(report: dict[str, Any], opened: OpenedPfx | None) -> dict[str, Any] | None:
    """What a PFX holds, public parts only (the key was dropped at once by :func:`open_pfx`, and
    the password is never repeated), and the verdict on its CA certificates."""
    if report["kind"] == "pfx-locked":
        message = opened.message if opened is not None else ""
        return {
            "opened": False,
            "message": message or "A PFX/PKCS#12 file: give its password to see what it holds.",
        }
    if report["kind"] != "pfx":
        return None
    contents = report["contents"]
    has_key = bool(report["hasPrivateKey"])
    message = (
        "This PFX bundles a private key, which must never be uploaded or sent to you; the "
        "verdict below is for the CA certificates inside it, exported as PEM (public parts "
        "only)."
        if has_key
        else "This PFX holds certificates only, no private key; the verdict below is for its "
        "CA certificates."
    )
    if contents is None or not contents["certificates"]:
        message += " It holds no CA certificate: ask for the issuing CA chain."
        contents = None
    return {
        "opened": True,
        "hasPrivateKey": has_key,
        "message": message,
        "caCertificates": contents,
    }


def check_ca_view(given: CheckCaInput, *, now: datetime) -> dict[str, Any]:
    """``/api/check-ca``: the ``check-ca --output json`` report, plus a PFX's contents.

    Nothing secret goes back: the report lists certificates (public), and a PFX's key and
    password are only used to tell the user what the file holds. A PFX (the file or the client
    certificate) is opened once, with its password, at a bounded cost
    (:func:`emulator.arm.pkcs12_bounds.load_pkcs12`); the caller runs this off the event loop
    all listeners share.
    """
    opened = open_pfx(given.data, given.password) if looks_like_pfx(given.data) else None
    report = report_json(
        check_ca(
            given.data,
            name=given.name,
            at=now,
            client_cert=given.client_cert,
            pfx=opened,
            password=given.password,
        )
    )
    return {"report": report, "pfx": _pfx_section(report, opened)}
