"""``appgw-emulator verify``: every HTTPS listener of a template x the client scenarios that matter.

A backend team behind App Gateway mutual TLS needs one table: for each kind of client (valid,
expired, from another CA, none, forging the certificate header ...) what does the gateway do and
what does *their* backend answer? This module builds the clients, runs the gateway on the user's
template in front of the user's backend, sends each client to each listener over real mutual TLS,
and collects per cell what the gateway did (status, page, ``sslClientVerify``), whether the
backend was reached, the certificate headers it received (seen by a relay in front of it,
:mod:`emulator.runtime.recording_relay`) and the backend's status.

Where the client certificates come from (:class:`TrustMode`):

* ``own-ca``: the user's CA certificate and key (``--client-ca`` / ``--client-ca-key``); every
  variant is minted from it, so the gateway keeps the trust the template uploads;
* ``own-cert``: only the user's client certificate and key; variants that need the CA's key
  (expired, not yet valid, wrong EKU, revoked, wrong issuer) are skipped, each with the reason;
* ``substitute``: no material at all. The emulator replaces every uploaded trusted client CA
  with a CA it makes for the run, which also changes the DN the issuer-DN check compares against.
  The report says so on every line, because the trust the template uploads is then not tested.

Formatting (table, JSON, JUnit) and the ``--expect`` gate live in :mod:`emulator.cli.verify_report`.
"""

from __future__ import annotations

import functools
import secrets
import ssl
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import h11
import trio
from cryptography import x509

from emulator.arm.certdata import TrustedClientCa
from emulator.cli.verify_scenarios import DEFAULT_CLIENT_CN, SCENARIOS
from emulator.core.tls.dn import openssl_rfc2253
from emulator.dashboard.trying import _TITLE, RECORD_POLL_S, RECORD_WAIT_S, _connect_host, _request
from emulator.errors import EmulatorError
from emulator.model import (
    BackendAddress,
    ClientAuthMode,
    GatewayConfig,
    Listener,
    ListenerProtocol,
    RevocationMode,
    with_backend_overrides,
)
from emulator.model.mode_twins import with_mode_twins
from emulator.pki import CA, IssuedCert, self_signed_client
from emulator.pki.ocsp_responder import OcspResponder, Revocation
from emulator.reports.summary import describe
from emulator.runtime.recording_relay import RecordingRelay

__all__ = [
    "Cell",
    "ClientMaterial",
    "MatrixReport",
    "TrustMode",
    "VerifyError",
    "run_matrix",
]


#: Bound of one scenario request, connect to last byte; the gateway itself may wait up to 5 s
#: for an OCSP responder.
REQUEST_TIMEOUT_S: Final = 10.0
#: The query parameter that marks a verify request, so its access record can be found.
NONCE_PARAMETER: Final = "appgw-verify"
#: The header a forged-header client sends when no rule forwards the certificate anywhere.
DEFAULT_FORGED_HEADER: Final = "X-Client-Cert"
#: Response bytes kept per cell (a backend's JSON or the gateway's page is small).
BODY_KEEP: Final = 2000
USER_AGENT: Final = "appgw-emulator-verify"


class VerifyError(EmulatorError):
    """Bad verify input: unreadable client material, an impossible option combination."""

    code = "EmulatorVerifyInput"


class TrustMode:
    OWN_CA: Final = "own-ca"
    OWN_CERT: Final = "own-cert"
    SUBSTITUTE: Final = "substitute"


#: What the report says about each trust mode (on every line, for ``substitute``).
TRUST_NOTES: Final = {
    TrustMode.OWN_CA: "clients minted from your CA (--client-ca); the template's trust is used",
    TrustMode.OWN_CERT: "your client certificate; variants needing your CA key are skipped",
    TrustMode.SUBSTITUTE: (
        "SUBSTITUTE TRUST: the uploaded trusted client CAs were replaced by the emulator's own "
        "CA for this run (the issuer DN checked is that CA's); your upload was not tested"
    ),
}


@dataclass(frozen=True, slots=True)
class ClientMaterial:
    """The user's files, as given on the command line (all optional)."""

    client_cert: Path | None = None
    client_key: Path | None = None
    client_ca: Path | None = None
    client_ca_key: Path | None = None
    substitute_trust: bool = False
    client_cn: str = DEFAULT_CLIENT_CN
    #: ``--compare-modes``: also run each mTLS listener's other-mode twin.
    compare_modes: bool = False


@dataclass(frozen=True, slots=True)
class _Presented:
    """A client certificate to present: leaf, the chain sent with it, and its key."""

    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key_pem: bytes

    @classmethod
    def of(cls, issued: IssuedCert, *, with_chain: bool = True) -> _Presented:
        return cls(issued.cert, issued.chain if with_chain else (), issued.key_pem)


@dataclass(frozen=True, slots=True)
class _Case:
    key: str
    presented: _Presented | None = None
    skip: str | None = None
    forge: bool = False


@dataclass(frozen=True, slots=True)
class Cell:
    """One listener x scenario: what happened, in JSON-ready values."""

    listener: str
    mode: str
    scenario: str
    trust: str
    skipped: str | None = None
    error: str | None = None
    status: int | None = None
    page: str | None = None
    verification: str | None = None
    backend_reached: bool | None = None
    backend_status: str | None = None
    backend_observed: bool = False
    cert_headers: tuple[tuple[str, str], ...] = ()
    forged_header_reached_backend: bool | None = None
    #: For a ``--compare-modes`` twin: the template listener it copies.
    twin_of: str | None = None
    client_subject: str | None = None
    trace_id: str | None = None
    body: str = ""

    @property
    def outcome(self) -> str:
        """The one-word answer an expectation compares: ``backend 200``, ``gateway 400`` ...

        ``skipped`` and ``error`` when there was no answer; a forged header that reached the
        backend adds ``forged header reached backend`` (never what anyone wants)."""
        if self.skipped is not None:
            return "skipped"
        if self.error is not None or self.status is None:
            return "error"
        who = "backend" if self.backend_reached else "gateway"
        text = f"{who} {self.status}"
        if self.forged_header_reached_backend:
            text += " forged header reached backend"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "listener": self.listener,
            "mode": self.mode,
            "scenario": self.scenario,
            "description": SCENARIOS[self.scenario],
            "trust": self.trust,
            "outcome": self.outcome,
            "skipped": self.skipped,
            "error": self.error,
            "status": self.status,
            "page": self.page,
            "sslClientVerify": self.verification,
            "backendReached": self.backend_reached,
            "backendStatus": self.backend_status,
            "backendObserved": self.backend_observed,
            "certHeaders": [list(pair) for pair in self.cert_headers],
            "forgedHeaderReachedBackend": self.forged_header_reached_backend,
            "twinOf": self.twin_of,
            "clientSubject": self.client_subject,
            "traceId": self.trace_id,
            "body": self.body,
        }


@dataclass(frozen=True, slots=True)
class MatrixReport:
    gateway: str
    trust: str
    trust_note: str
    cells: tuple[Cell, ...]
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "gateway": self.gateway,
            "trust": self.trust,
            "trustNote": self.trust_note,
            "notes": list(self.notes),
            "cells": [cell.to_json() for cell in self.cells],
        }


# -- client material ---------------------------------------------------------------------------


def _read(path: Path, what: str, fix: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise VerifyError(
            f"cannot read {what}: {exc.strerror or exc}", file=str(path), fix=fix
        ) from exc


def _load_ca(material: ClientMaterial) -> CA:
    assert material.client_ca is not None
    assert material.client_ca_key is not None
    fix = (
        "pass the issuing CA's PEM certificate (--client-ca) and its unencrypted PEM key "
        "(--client-ca-key)"
    )
    cert_pem = _read(material.client_ca, "the client CA", fix)
    key_pem = _read(material.client_ca_key, "the client CA key", fix)
    try:
        return CA.from_pem(cert_pem, key_pem)
    except (ValueError, TypeError) as exc:
        raise VerifyError(
            f"cannot use the client CA: {exc}", file=str(material.client_ca), fix=fix
        ) from exc


def _load_own_cert(material: ClientMaterial) -> _Presented:
    assert material.client_cert is not None
    assert material.client_key is not None
    fix = (
        "pass a PEM client certificate (optionally followed by its intermediates) and its "
        "unencrypted PEM key"
    )
    cert_pem = _read(material.client_cert, "the client certificate", fix)
    key_pem = _read(material.client_key, "the client key", fix)
    try:
        certificates = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise VerifyError(
            f"no PEM certificate in the client certificate file ({exc})",
            file=str(material.client_cert),
            fix=fix,
        ) from exc
    return _Presented(certificates[0], tuple(certificates[1:]), key_pem)


def trust_mode(material: ClientMaterial) -> str:
    """Which :class:`TrustMode` the given files select.

    Raises:
        VerifyError: a certificate without its key (or the reverse), or substitute trust asked
            for together with the user's own CA.
    """
    if (material.client_cert is None) != (material.client_key is None):
        raise VerifyError(
            "--client-cert and --client-key go together",
            fix="pass both, the certificate and its private key",
        )
    if (material.client_ca is None) != (material.client_ca_key is None):
        raise VerifyError(
            "--client-ca needs --client-ca-key (the CA's key mints the test clients)",
            fix="pass the CA's key too; without it, pass only --client-cert/--client-key, or "
            "--substitute-trust",
        )
    if material.substitute_trust and (material.client_ca or material.client_cert):
        raise VerifyError(
            "--substitute-trust replaces the template's trust, so your own client material "
            "would not be trusted",
            fix="drop --substitute-trust, or drop --client-ca/--client-cert",
        )
    if material.client_ca is not None:
        return TrustMode.OWN_CA
    if material.client_cert is not None:
        return TrustMode.OWN_CERT
    return TrustMode.SUBSTITUTE


@dataclass(frozen=True, slots=True)
class _Kit:
    """The scenario clients of one run, and what the gateway must trust for them."""

    cases: Mapping[str, _Case]
    #: For substitute trust: the upload that replaces every profile's trusted client CAs.
    substitute: TrustedClientCa | None
    #: The CA whose revocations the run's OCSP responder answers for, and the revoked serial.
    ocsp_ca: CA | None
    revoked_serial: int | None
    #: What a Strict twin of a Passthrough listener trusts (``--compare-modes``), if anything.
    strict_trust: TrustedClientCa | None = None


def _mint_from(issuing: CA, root: CA | None, cn: str, ocsp_url: str | None) -> dict[str, _Case]:
    """The variants a CA key allows; ``root`` (when held) also allows the wrong-issuer case."""
    valid = issuing.issue_client(cn, ocsp_url=ocsp_url)
    cases = {
        "valid": _Case("valid", _Presented.of(valid, with_chain=False)),
        "valid-chain": _Case("valid-chain", _Presented.of(valid)),
        "expired": _Case(
            "expired", _Presented.of(issuing.issue_client(cn, expired=True, ocsp_url=ocsp_url))
        ),
        "not-yet-valid": _Case(
            "not-yet-valid",
            _Presented.of(issuing.issue_client(cn, not_yet_valid=True, ocsp_url=ocsp_url)),
        ),
        "wrong-eku": _Case(
            "wrong-eku", _Presented.of(issuing.issue_server(f"{cn}.invalid", common_name=cn))
        ),
    }
    sibling_parent = root if root is not None else issuing
    try:
        sibling = sibling_parent.intermediate("appgw-emulator verify other issuing CA")
    except ValueError as exc:
        cases["wrong-issuer"] = _Case(
            "wrong-issuer", skip=f"needs a CA key that may issue an intermediate ({exc})"
        )
    else:
        leaf = sibling.issue_client(cn, ocsp_url=ocsp_url)
        cases["wrong-issuer"] = _Case("wrong-issuer", _Presented.of(leaf))
    return cases


def _own_upload(material: ClientMaterial) -> TrustedClientCa | None:
    """``--client-ca``'s certificates as an upload, when they hold a root (Strict needs one)."""
    assert material.client_ca is not None
    certificates = x509.load_pem_x509_certificates(material.client_ca.read_bytes())
    if not any(c.issuer == c.subject for c in certificates):
        return None
    return TrustedClientCa("verify-client-ca", tuple(certificates))


def build_kit(material: ClientMaterial, mode: str, *, ocsp_url: str | None) -> _Kit:
    """Mint (or load) every scenario's client. ``ocsp_url`` is the run's responder."""
    cn = material.client_cn
    stranger_root = CA("appgw-emulator verify untrusted root CA")
    common = {
        "untrusted-ca": _Case("untrusted-ca", _Presented.of(stranger_root.issue_client(cn))),
        "self-signed": _Case("self-signed", _Presented.of(self_signed_client(cn))),
        "none": _Case("none"),
        "forged-header": _Case("forged-header", forge=True),
    }
    if mode == TrustMode.SUBSTITUTE:
        root = CA("appgw-emulator verify substitute root CA")
        issuing = root.intermediate("appgw-emulator verify substitute issuing CA")
        minted = _mint_from(issuing, root, cn, ocsp_url)
        revoked = issuing.issue_client(cn, ocsp_url=ocsp_url)
        minted["revoked"] = _Case("revoked", _Presented.of(revoked))
        upload = TrustedClientCa("verify-substitute-trust", (root.cert, issuing.cert))
        return _Kit({**minted, **common}, upload, issuing, revoked.cert.serial_number, upload)
    if mode == TrustMode.OWN_CA:
        issuing = _load_ca(material)
        held_root = issuing if issuing.cert.issuer == issuing.cert.subject else None
        minted = _mint_from(issuing, held_root, cn, ocsp_url)
        if material.client_cert is not None:
            own = _load_own_cert(material)
            minted["valid-chain"] = _Case("valid-chain", own)
            minted["valid"] = _Case("valid", replace(own, chain=()))
        revoked = issuing.issue_client(cn, ocsp_url=ocsp_url)
        minted["revoked"] = _Case("revoked", _Presented.of(revoked))
        return _Kit(
            {**minted, **common},
            None,
            issuing,
            revoked.cert.serial_number,
            _own_upload(material),
        )
    own = _load_own_cert(material)
    needs_key = "needs your CA's key to mint it (--client-ca with --client-ca-key)"
    cases: dict[str, _Case] = {
        "valid": _Case("valid", replace(own, chain=())),
        "valid-chain": _Case("valid-chain", own),
    }
    for key in ("expired", "not-yet-valid", "wrong-issuer", "revoked", "wrong-eku"):
        cases[key] = _Case(key, skip=needs_key)
    return _Kit({**cases, **common}, None, None, None)


# -- the gateway under test ----------------------------------------------------------------------


def _mode_label(listener: Listener, twin_of: str | None = None) -> str:
    mode = listener.client_auth
    if mode is None:
        return "no mTLS"
    label = "Strict" if mode is ClientAuthMode.STRICT else "Passthrough"
    return f"{label} (twin)" if twin_of else label


def https_listeners(config: GatewayConfig) -> list[Listener]:
    """The routed HTTPS listeners, in rule order, each once."""
    seen: dict[str, Listener] = {}
    for rule in config.rules:
        if rule.listener.protocol is ListenerProtocol.HTTPS:
            seen.setdefault(rule.listener.name, rule.listener)
    return list(seen.values())


def with_substitute_trust(config: GatewayConfig, upload: TrustedClientCa) -> GatewayConfig:
    """``config`` with every SSL profile that trusts client CAs trusting only ``upload``."""

    def swap(listener: Listener) -> Listener:
        profile = listener.ssl_profile
        if profile is None or not profile.trusted_client_cas:
            return listener
        return replace(listener, ssl_profile=replace(profile, trusted_client_cas=(upload,)))

    rules = tuple(replace(rule, listener=swap(rule.listener)) for rule in config.rules)
    return replace(
        config,
        listeners=tuple(swap(item) for item in config.listeners),
        all_listeners=tuple(swap(item) for item in config.all_listeners),
        rules=rules,
    )


def _applicability(listener: Listener, scenario: str) -> str | None:
    """Why ``scenario`` does not apply to ``listener``, or None when it does."""
    mode = listener.client_auth
    profile = listener.ssl_profile
    if mode is None and scenario not in ("none", "forged-header"):
        return "the listener requests no client certificate (no mTLS SSL profile)"
    if scenario == "wrong-issuer" and (
        mode is not ClientAuthMode.STRICT or profile is None or not profile.verify_issuer_dn
    ):
        return "the SSL profile does not check the issuer DN (verifyClientCertIssuerDN)"
    if scenario == "revoked" and (
        mode is not ClientAuthMode.STRICT
        or profile is None
        or profile.revocation is not RevocationMode.OCSP
    ):
        return "the SSL profile does not check revocation (verifyClientRevocation: OCSP)"
    return None


def _cert_header_names(config: GatewayConfig) -> dict[str, list[str]]:
    """Rule name → the headers its rewrite rules fill from a certificate variable."""
    return {
        rule["name"]: list(rule["forwardsClientCertificateIn"])
        for rule in describe(config)["rules"]
    }


@contextmanager
def _client_files(presented: _Presented | None) -> Iterator[tuple[str, str] | None]:
    """The certificate chain and key as files (``SSLContext.load_cert_chain`` reads only files)."""
    if presented is None:
        yield None
        return
    from cryptography.hazmat.primitives.serialization import Encoding

    with tempfile.TemporaryDirectory(prefix="appgw-verify-") as tmp:
        chain = Path(tmp, "chain.pem")
        key = Path(tmp, "key.pem")
        chain.write_bytes(
            b"".join(c.public_bytes(Encoding.PEM) for c in (presented.cert, *presented.chain))
        )
        key.touch(mode=0o600)
        key.write_bytes(presented.key_pem)
        yield str(chain), str(key)


def _client_context(files: tuple[str, str] | None) -> ssl.SSLContext:
    """A client context for the emulator's own listener.

    The server certificate is not checked: the request goes to a socket this run just bound,
    and what is under test is the client side of the handshake, not the template's PFX.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if files is not None:
        ctx.load_cert_chain(*files)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _target(path: str, nonce: str) -> str:
    separator = "&" if "?" in path else "?"
    return f"{path}{separator}{NONCE_PARAMETER}={nonce}"


def _forged_value(cn: str) -> str:
    """A certificate header value no gateway would produce: marks a forgery that got through."""
    return quote(
        f"-----BEGIN CERTIFICATE-----\nforged-by-{cn}\n-----END CERTIFICATE-----\n", safe=""
    )


@dataclass(slots=True)
class _Run:
    gateway: Any  # emulator.runtime.gateway.Gateway
    config: GatewayConfig
    relays: Sequence[RecordingRelay]
    trust: str
    path: str
    cert_headers: Mapping[str, list[str]]
    forged_names: list[str]
    twin_of: Mapping[str, str] = field(default_factory=dict)


async def _access_record(gateway: Any, nonce: str) -> Any:
    with trio.move_on_after(RECORD_WAIT_S):
        while True:
            for record in reversed(gateway.access_log):
                if nonce in record.originalRequestUriWithArgs:
                    return record
            await trio.sleep(RECORD_POLL_S)
    return None


async def _run_cell(run: _Run, listener: Listener, case: _Case) -> Cell:
    twin_of = run.twin_of.get(listener.name)
    base = Cell(listener.name, _mode_label(listener, twin_of), case.key, run.trust, twin_of=twin_of)
    reason = _applicability(listener, case.key) or case.skip
    if reason is not None:
        return replace(base, skipped=reason)
    subject = openssl_rfc2253(case.presented.cert.subject) if case.presented else None
    base = replace(base, client_subject=subject)
    nonce = secrets.token_hex(8)
    rule = run.config.rule_for(listener.name).name
    watched = {name.lower() for name in run.cert_headers.get(rule, [])}
    extra: list[tuple[str, str]] = []
    forged = _forged_value(nonce)
    if case.forge:
        extra += [(name, forged) for name in run.forged_names]
        watched |= {name.lower() for name in run.forged_names}
    server_name = listener.host_names[0] if listener.host_names else "localhost"
    server_name = server_name.replace("*", "verify")
    port = run.gateway.ports[listener.name]
    try:
        with _client_files(case.presented) as files:
            ctx = _client_context(files)
        with trio.fail_after(REQUEST_TIMEOUT_S):
            reply = await _request(
                _connect_host(run.gateway.bind),
                port,
                ctx,
                server_name=server_name,
                target=_target(run.path, nonce),
                extra_headers=extra,
                user_agent=USER_AGENT,
            )
    except (OSError, ssl.SSLError, trio.BrokenResourceError, h11.ProtocolError) as exc:
        return replace(base, error=f"{type(exc).__name__}: {exc}")
    except trio.TooSlowError:
        return replace(base, error=f"no answer within {REQUEST_TIMEOUT_S} s")
    record = await _access_record(run.gateway, nonce)
    text = reply.body.decode("utf-8", "replace")
    title = _TITLE.search(text)
    received = None
    if record is not None:
        for relay in run.relays:
            received = relay.headers_for(record.transactionId)
            if received is not None:
                break
    cert_headers = tuple((n, v) for n, v in received or () if n.lower() in watched)
    return replace(
        base,
        status=reply.status,
        page=title.group(1).strip() if title else None,
        verification=record.sslClientVerify if record else None,
        backend_reached=bool(record.serverRouted) if record else None,
        backend_status=(record.serverStatus or None) if record else None,
        backend_observed=received is not None,
        cert_headers=cert_headers,
        forged_header_reached_backend=(
            any(v == forged for _, v in cert_headers) if case.forge else None
        ),
        trace_id=record.transactionId if record else None,
        body=text[:BODY_KEEP],
    )


def _relayed(
    config: GatewayConfig, backends: Mapping[str, tuple[BackendAddress, ...]]
) -> list[tuple[str, BackendAddress]]:
    """(pool, address) pairs the run puts a recording relay in front of: the ``--backend`` ones."""
    return [(pool, address) for pool, addresses in backends.items() for address in addresses]


async def run_matrix(
    config: GatewayConfig,
    material: ClientMaterial,
    *,
    backends: Mapping[str, tuple[BackendAddress, ...]],
    path: str = "/",
    scenarios: Sequence[str] | None = None,
) -> MatrixReport:
    """Run every HTTPS listener of ``config`` x ``scenarios`` (all by default).

    ``config`` is the template as loaded, *without* the ``--backend`` overrides: the run puts a
    recording relay in front of each address in ``backends`` and points the pools at the relays.

    Raises:
        VerifyError: unusable client material or an unknown scenario.
        StartupError: the gateway cannot bind.
    """
    from emulator.runtime.gateway import Gateway

    wanted = list(scenarios) if scenarios else list(SCENARIOS)
    unknown = [s for s in wanted if s not in SCENARIOS]
    if unknown:
        raise VerifyError(
            f"unknown scenario {', '.join(unknown)}",
            fix=f"choose among {', '.join(SCENARIOS)}",
        )
    mode = trust_mode(material)
    listeners = https_listeners(config)
    if not listeners:
        raise VerifyError(
            "the gateway has no routed HTTPS listener, so there is nothing to verify",
            file=config.file,
            fix="add an HTTPS listener with a routing rule",
        )
    notes: list[str] = []
    async with trio.open_nursery() as nursery:
        relays: list[RecordingRelay] = []
        overrides: dict[str, list[BackendAddress]] = {}
        for pool, address in _relayed(config, backends):
            relay = RecordingRelay(address)
            relay_port = await nursery.start(relay.serve)
            relays.append(relay)
            overrides.setdefault(pool, []).append(BackendAddress("127.0.0.1", relay_port))
        if overrides:
            config = with_backend_overrides(config, {p: tuple(a) for p, a in overrides.items()})
        else:
            notes.append(
                "no --backend given: the template's pool addresses are used and what the "
                "backend received is not observed"
            )
        responder = OcspResponder([])
        ocsp_url = None
        needs_ocsp = any(
            item.ssl_profile and item.ssl_profile.revocation is RevocationMode.OCSP
            for item in listeners
        )
        if needs_ocsp and mode != TrustMode.OWN_CERT:
            ocsp_port = await nursery.start(functools.partial(responder.serve, port=0))
            ocsp_url = f"http://127.0.0.1:{ocsp_port}/"
        kit = build_kit(material, mode, ocsp_url=ocsp_url)
        if kit.ocsp_ca is not None:
            responder.add_ca(kit.ocsp_ca.cert, kit.ocsp_ca.key)
            if kit.revoked_serial is not None:
                responder.mark_revoked(
                    Revocation(kit.revoked_serial, _now(), None, name="verify revoked client")
                )
        if kit.substitute is not None:
            config = with_substitute_trust(config, kit.substitute)
        twin_of: dict[str, str] = {}
        if material.compare_modes:
            twins = with_mode_twins(config, strict_trust=kit.strict_trust)
            config, twin_of = twins.config, twins.twin_of
            notes += twins.notes
            listeners = https_listeners(config)
        ports = sorted({rule.listener.frontend_port for rule in config.rules})
        gateway = Gateway(config, listen={port: 0 for port in ports})
        cert_headers = _cert_header_names(config)
        forged_names = sorted({n for names in cert_headers.values() for n in names}) or [
            DEFAULT_FORGED_HEADER
        ]
        cells: list[Cell] = []
        async with gateway:
            run = _Run(gateway, config, relays, mode, path, cert_headers, forged_names, twin_of)
            for listener in listeners:
                for scenario in wanted:
                    cells.append(await _run_cell(run, listener, kit.cases[scenario]))
        nursery.cancel_scope.cancel()
    return MatrixReport(config.name, mode, TRUST_NOTES[mode], tuple(cells), tuple(notes))


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
