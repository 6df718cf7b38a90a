"""A real OCSP responder over HTTP for the demo/test PKI (``appgw-emulator certs ocsp-responder``).

It answers RFC 6960 requests (POST with a DER body, or GET with the base64 request in the path)
for the certificates of the CAs it holds, signing each answer with the issuing CA's own key (an
"authorized responder" in RFC 6960 §4.2.2.2 terms: the CA itself). The status of a serial:

* ``revoked`` when it is in the revocation list file (``revoked.json`` in the PKI directory,
  written by ``appgw-emulator certs revoke DIR NAME``; re-read on every request, so a
  revocation takes effect on the responder at once — the gateway sees it when its cached
  answer expires, after ``RESPONSE_VALIDITY`` at the latest);
* ``good`` when the responder knows the serial (a certificate in the PKI directory issued by
  that CA), or for every serial when no list of known serials was given;
* ``unknown`` otherwise. A request about a CA the responder does not hold gets the
  ``unauthorized`` error response.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import unquote

import h11
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp

from emulator.errors import EmulatorError
from emulator.logsafe import escaped_logger
from emulator.pki import PrivateKey

__all__ = [
    "DEFAULT_OCSP_PORT",
    "RESPONSE_VALIDITY",
    "REVOCATION_FILE",
    "OcspResponder",
    "ResponderError",
    "load_responder",
    "read_revocations",
    "revoke",
]

LOGGER = escaped_logger("emulator.pki.ocsp_responder")

#: Where ``certs init`` points the demo client certificates' AIA (``http://127.0.0.1:8888/``).
DEFAULT_OCSP_PORT: Final = 8888
REVOCATION_FILE: Final = "revoked.json"
#: nextUpdate - thisUpdate of every answer: short, so a revocation reaches a running gateway's
#: cache within minutes.
RESPONSE_VALIDITY: Final = datetime.timedelta(minutes=5)
#: thisUpdate is backdated a little so a peer whose clock lags still accepts the answer.
_BACKDATE: Final = datetime.timedelta(minutes=1)
MAX_REQUEST_BYTES: Final = 16 * 1024
RECEIVE_SIZE: Final = 16384
REQUEST_TIMEOUT_S: Final = 10.0
_REASONS: Final = {flag.value: flag for flag in x509.ReasonFlags}


class ResponderError(EmulatorError):
    """The responder cannot start or a revocation cannot be recorded."""

    code = "EmulatorOcspResponderError"


@dataclass(frozen=True, slots=True)
class Revocation:
    serial: int
    revoked_at: datetime.datetime
    reason: x509.ReasonFlags | None
    name: str = ""


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def read_revocations(path: Path) -> dict[int, Revocation]:
    """The revocation list file, by serial; empty when the file does not exist."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ResponderError(
            f"cannot read the revocation list: {exc}",
            file=str(path),
            fix="fix or delete the file (it lists revoked serials)",
        ) from exc
    out: dict[int, Revocation] = {}
    for entry in raw.get("revoked", []):
        serial = int(entry["serial"], 16)
        reason = entry.get("reason")
        out[serial] = Revocation(
            serial=serial,
            revoked_at=datetime.datetime.fromisoformat(entry["revokedAt"]),
            reason=_REASONS.get(reason) if reason else None,
            name=entry.get("name", ""),
        )
    return out


class OcspResponder:
    """Answers OCSP requests for ``cas`` (certificate and key of each issuing CA).

    Args:
        known_serials: serials per CA subject that exist; None: every serial of a CA is known.
        revocation_file: the ``revoked.json`` to consult (re-read on each request).
        revoked: revocations given directly (tests), on top of the file's.
        clock: the time for thisUpdate/nextUpdate.
    """

    def __init__(
        self,
        cas: Sequence[tuple[x509.Certificate, PrivateKey]],
        *,
        known_serials: Collection[int] | None = None,
        revocation_file: Path | None = None,
        revoked: Mapping[int, Revocation] | None = None,
        clock: Callable[[], datetime.datetime] = _utcnow,
    ) -> None:
        self._cas = list(cas)
        self._known = set(known_serials) if known_serials is not None else None
        self._file = revocation_file
        self._revoked = dict(revoked or {})
        self._clock = clock
        self.requests = 0

    def add_ca(self, certificate: x509.Certificate, key: PrivateKey) -> None:
        """Answer for certificates issued by this CA too (a CA minted after serving began)."""
        self._cas.append((certificate, key))

    def know(self, serial: int) -> None:
        """Answer ``good`` (unless revoked) for ``serial`` from now on."""
        if self._known is not None:
            self._known.add(serial)

    def mark_revoked(self, revocation: Revocation) -> None:
        """Answer ``revoked`` for ``revocation.serial`` from now on (besides the file)."""
        self._revoked[revocation.serial] = revocation

    def _issuer_for(self, request: ocsp.OCSPRequest) -> tuple[x509.Certificate, PrivateKey] | None:
        for cert, key in self._cas:
            # The key hash of a CertID is over the issuer's public key, which a request built
            # with the CA as "issuer" gives; the name hash is over the issuer's subject DER
            # (the builder would take the CA certificate's own issuer name instead).
            mine = (
                ocsp.OCSPRequestBuilder()
                .add_certificate(cert, cert, request.hash_algorithm)
                .build()
            )
            digest = hashes.Hash(request.hash_algorithm)
            digest.update(cert.subject.public_bytes())
            if (digest.finalize(), mine.issuer_key_hash) == (
                request.issuer_name_hash,
                request.issuer_key_hash,
            ):
                return cert, key
        return None

    def answer(self, der: bytes) -> bytes:
        """The DER OCSP response to one DER request."""
        self.requests += 1
        try:
            request = ocsp.load_der_ocsp_request(der)
        except ValueError:
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        found = self._issuer_for(request)
        if found is None:
            return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        ca_cert, ca_key = found
        revoked = dict(self._revoked)
        if self._file is not None:
            revoked.update(read_revocations(self._file))
        serial = request.serial_number
        now = self._clock()
        this_update = now - _BACKDATE
        next_update = now + RESPONSE_VALIDITY
        entry = revoked.get(serial)
        status: ocsp.OCSPCertStatus
        if entry is not None:
            status = ocsp.OCSPCertStatus.REVOKED
        elif self._known is None or serial in self._known:
            status = ocsp.OCSPCertStatus.GOOD
        else:
            status = ocsp.OCSPCertStatus.UNKNOWN
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(
                request.issuer_name_hash,
                request.issuer_key_hash,
                serial,
                request.hash_algorithm,
                status,
                this_update,
                next_update,
                entry.revoked_at if entry is not None else None,
                entry.reason if entry is not None else None,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, ca_cert)
        )
        response = builder.sign(ca_key, hashes.SHA256())
        LOGGER.info("ocsp.request serial=%X status=%s", serial, status.name.lower())
        return response.public_bytes(serialization.Encoding.DER)

    async def serve(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_OCSP_PORT,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve HTTP on ``host:port`` until cancelled; reports the bound port as started."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()[1]
        LOGGER.info("ocsp.listening %s:%s", host, bound)
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(trio.serve_listeners, self._handle, [listener])
            task_status.started(bound)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            with trio.move_on_after(REQUEST_TIMEOUT_S):
                try:
                    await self._exchange(stream)
                except (trio.BrokenResourceError, h11.ProtocolError) as exc:
                    LOGGER.debug("ocsp.bad_http %s", exc)

    async def _exchange(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(RECEIVE_SIZE)
                conn.receive_data(data)
                if not data:
                    return
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_REQUEST_BYTES:
                    await _reply(stream, conn, 413, b"")
                    return
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                break
            else:
                return
        if request.method == b"POST":
            der = bytes(body)
        elif request.method == b"GET":
            encoded = unquote(request.target.decode("ascii").rsplit("/", 1)[-1])
            try:
                der = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                await _reply(stream, conn, 400, b"")
                return
        else:
            await _reply(stream, conn, 405, b"")
            return
        await _reply(stream, conn, 200, self.answer(der))


async def _reply(stream: trio.SocketStream, conn: h11.Connection, status: int, body: bytes) -> None:
    headers = [("Content-Length", str(len(body))), ("Connection", "close")]
    if status == 200:
        headers.append(("Content-Type", "application/ocsp-response"))
    data = conn.send(h11.Response(status_code=status, headers=headers)) or b""
    data += conn.send(h11.Data(data=body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER
    )


# --- a PKI directory ----------------------------------------------------------------------------


def _load_pem_certs(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except ValueError:
        return []


def load_responder(directory: Path) -> OcspResponder:
    """A responder for the demo PKI in ``directory`` (``certs init``): its issuing CA.

    Known serials: every certificate in the directory that the CA issued.

    Raises:
        ResponderError: the directory lacks the issuing CA's certificate or key.
    """
    from emulator.pki.demo import INTERMEDIATE_CA, INTERMEDIATE_CA_KEY

    cert_path, key_path = directory / INTERMEDIATE_CA, directory / INTERMEDIATE_CA_KEY
    try:
        ca_cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    except (OSError, ValueError) as exc:
        raise ResponderError(
            f"cannot load the issuing CA and its key ({exc})",
            file=str(directory),
            fix=f"point --ca at a demo PKI from `appgw-emulator certs init` (it needs "
            f"{INTERMEDIATE_CA} and {INTERMEDIATE_CA_KEY}); regenerate an older one with --force",
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ResponderError(f"unsupported CA key type {type(key).__name__}", file=str(key_path))
    known = {
        cert.serial_number
        for path in sorted(directory.glob("*.pem"))
        for cert in _load_pem_certs(path)
        if cert.issuer == ca_cert.subject and cert != ca_cert
    }
    return OcspResponder(
        [(ca_cert, key)], known_serials=known, revocation_file=directory / REVOCATION_FILE
    )


def revoke(
    directory: Path,
    name: str,
    *,
    reason: str | None = None,
    at: datetime.datetime | None = None,
) -> Revocation:
    """Add the certificate ``name`` (a file of ``directory``, ``.pem`` optional) to the list.

    Raises:
        ResponderError: no such certificate file, or an unknown reason.
    """
    path = directory / name
    if not path.is_file() and not name.endswith(".pem"):
        path = directory / f"{name}.pem"
    certs = _load_pem_certs(path) if path.is_file() else []
    if not certs:
        raise ResponderError(
            f"no certificate '{name}' in {directory}",
            fix="name a .pem file of the PKI directory, e.g. `certs revoke certs client`",
        )
    if reason is not None and reason not in _REASONS:
        raise ResponderError(
            f"unknown revocation reason '{reason}'",
            fix="use one of: " + ", ".join(sorted(_REASONS)),
        )
    cert = certs[0]
    moment = at or _utcnow()
    file = directory / REVOCATION_FILE
    existing = read_revocations(file)
    entry = Revocation(
        serial=cert.serial_number,
        revoked_at=moment.replace(microsecond=0),
        reason=_REASONS[reason] if reason else None,
        name=path.name,
    )
    existing[entry.serial] = entry
    document = {
        "revoked": [
            {
                "serial": format(e.serial, "X"),
                "name": e.name,
                "revokedAt": e.revoked_at.isoformat(),
                "reason": e.reason.value if e.reason is not None else None,
            }
            for e in existing.values()
        ]
    }
    file.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return entry
