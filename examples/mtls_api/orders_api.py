"""A small API behind Application Gateway that authorises its callers by client certificate.

This stands in for *your* service. The gateway terminates mutual TLS and a rewrite rule forwards
the client certificate in ``X-Client-Cert`` (``{var_client_certificate}``: URL-encoded PEM; the
header is absent when the client sent no certificate, and a client cannot forge it). The API:

1. answers 401 when no certificate was forwarded;
2. verifies the certificate against its own copy of the client CA chain and answers 403 when it
   is expired, not yet valid, or not issued by that CA. Behind a Strict profile the gateway has
   already checked all of that; behind Passthrough it checked nothing, so this is the only
   check. Doing it in both cases keeps the API safe whichever profile it ends up behind;
3. authorises by subject: only the common names in ``allowed`` may read orders (403 otherwise).

Plain stdlib ``http.server`` plus ``cryptography``, so the pattern carries over to any framework:
read the header, parse, verify, decide.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Final, Self
from urllib.parse import unquote

from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

CERT_HEADER: Final = "X-Client-Cert"
#: How often ``serve_forever`` checks for ``shutdown()``; the stdlib's 0.5 s would add half a
#: second to every test's teardown.
SHUTDOWN_POLL_S: Final = 0.01

#: Client certificates often lack a subjectAltName and an authorityKeyIdentifier, which the web
#: PKI profile demands and OpenSSL (the gateway's verifier) does not; allow them to be absent.
#: The clientAuth extended key usage is still required.
_CLIENT_LEAF_POLICY: Final = (
    ExtensionPolicy.webpki_defaults_ee()
    .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    .may_be_present(x509.AuthorityKeyIdentifier, Criticality.NON_CRITICAL, None)
)

ORDERS: Final = [{"id": 1, "item": "widget", "qty": 3}, {"id": 2, "item": "gadget", "qty": 1}]


class Denied(Exception):
    """A request the API refuses; ``status`` and the message go back to the caller."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class CertificateGate:
    """Decides who may call the API, from the forwarded certificate header alone."""

    def __init__(self, trusted_ca_pem: bytes, allowed: Mapping[str, str]) -> None:
        certificates = x509.load_pem_x509_certificates(trusted_ca_pem)
        self._roots = [c for c in certificates if c.subject == c.issuer]
        self._intermediates = [c for c in certificates if c.subject != c.issuer]
        self._allowed = dict(allowed)

    def caller(self, header: str | None, *, now: datetime | None = None) -> tuple[str, str]:
        """``(common name, role)`` of an authorised caller.

        Raises:
            Denied: 401 without a certificate, 403 for one that fails verification or whose
                subject is not allowed.
        """
        if not header:
            raise Denied(HTTPStatus.UNAUTHORIZED, "a client certificate is required")
        try:
            leaf = x509.load_pem_x509_certificate(unquote(header).encode("ascii"))
        except ValueError as exc:
            raise Denied(HTTPStatus.BAD_REQUEST, f"unreadable client certificate: {exc}") from exc
        now = now or datetime.now(UTC)
        if now > leaf.not_valid_after_utc:
            raise Denied(HTTPStatus.FORBIDDEN, "client certificate expired")
        if now < leaf.not_valid_before_utc:
            raise Denied(HTTPStatus.FORBIDDEN, "client certificate not yet valid")
        verifier = (
            PolicyBuilder()
            .store(Store(self._roots))
            .time(now)
            .extension_policies(
                ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=_CLIENT_LEAF_POLICY
            )
            .build_client_verifier()
        )
        try:
            verifier.verify(leaf, self._intermediates)
        except VerificationError as exc:
            raise Denied(HTTPStatus.FORBIDDEN, "client certificate not issued by our CA") from exc
        names = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        common_name = str(names[0].value) if names else ""
        role = self._allowed.get(common_name)
        if role is None:
            raise Denied(HTTPStatus.FORBIDDEN, f"subject CN={common_name} is not allowed")
        return common_name, role


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        try:
            name, role = self.server.gate.caller(self.headers.get(CERT_HEADER))
        except Denied as denied:
            self._send(denied.status, {"error": denied.reason})
            return
        if self.path.split("?")[0] != "/orders":
            self._send(HTTPStatus.NOT_FOUND, {"error": "no such resource"})
            return
        self._send(HTTPStatus.OK, {"caller": name, "role": role, "orders": ORDERS})

    def _send(self, status: HTTPStatus, document: object) -> None:
        body = json.dumps(document).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: pytest shows failures; the gateway's access log has the requests."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    gate: CertificateGate


class OrdersApi:
    """The API on a background thread; ``with OrdersApi(...) as api:`` serves for the block."""

    def __init__(
        self,
        *,
        trusted_ca_pem: bytes,
        allowed: Mapping[str, str],
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._server = _Server((host, port), _Handler)
        self._server.gate = CertificateGate(trusted_ca_pem, allowed)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_S},
            name="orders-api",
            daemon=True,
        )

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def main(argv: list[str] | None = None) -> None:
    """``python orders_api.py --trusted-ca CHAIN.pem --allow CN=ROLE``: serve until stopped.

    How the compose and Kubernetes examples run the API in its own container, behind the
    emulator (examples/compose/, examples/kubernetes/).
    """
    import argparse
    import signal
    from pathlib import Path

    parser = argparse.ArgumentParser(description="the example orders API, behind the gateway")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on")
    parser.add_argument(
        "--trusted-ca",
        "--trust-ca",
        type=Path,
        required=True,
        help="the client CA chain (PEM) to verify with",
    )
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="CN=ROLE",
        help="a common name allowed to call, and its role (repeatable)",
    )
    args = parser.parse_args(argv)
    allowed = dict(item.split("=", 1) for item in args.allow)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with OrdersApi(
        trusted_ca_pem=args.trusted_ca.read_bytes(),
        allowed=allowed,
        host=args.host,
        port=args.port,
    ) as api:
        print(f"orders API listening on http://{api.address}/", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()


if __name__ == "__main__":
    main()
