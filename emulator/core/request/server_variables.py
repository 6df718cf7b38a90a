"""Application Gateway's server variables: one table, name → format → how it is computed.

Rewrite rules read these as ``{var_NAME}`` (rewrite-http-headers-url, "Server variables").
Azure Application Gateway v2 is nginx underneath, and each variable is an nginx variable, so each
value has nginx's format: ``client_certificate_*`` are ``$ssl_client_*`` (see
:mod:`emulator.core.tls.certinfo`), ``uri_path`` is ``$uri``, ``host`` is ``$host``, and so on. The
:data:`VARIABLES` table says, per name, the format, an example, and the function computing it from
:class:`RequestFacts`; the README's "What the backend receives" table is this table.

Sans-I/O: the I/O shell gathers a request's facts once (:class:`RequestFacts`); everything here is
a pure function of them.

Values are byte strings held in ``str``: one character per byte, its code point the byte's value
(the request head is decoded as Latin-1 for the same reason, see :mod:`emulator.core.http.codec`).
nginx's variables are bytes, and so are these: ``uri_path`` of ``/%C3%BC`` is the two bytes the
client encoded, ``C3 BC``, whatever they mean, and it reaches a backend as those two bytes. Text
that comes from a template (literal header values, condition patterns) is Unicode and becomes
its UTF-8 bytes once, when the rule set is compiled (:func:`utf8_octets`).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol
from urllib.parse import unquote

from emulator.core.tls.certinfo import (
    CLIENT_CERTIFICATE,
    CLIENT_CERTIFICATE_END_DATE,
    CLIENT_CERTIFICATE_FINGERPRINT,
    CLIENT_CERTIFICATE_ISSUER,
    CLIENT_CERTIFICATE_SERIAL,
    CLIENT_CERTIFICATE_START_DATE,
    CLIENT_CERTIFICATE_SUBJECT,
    ClientCertInfo,
)
from emulator.model.variables import (
    CERTIFICATE_VARIABLE_PREFIX,
    CLIENT_CERTIFICATE_VERIFICATION,
    COOKIE_VARIABLE_PREFIX,
    SERVER_VARIABLE_NAMES,
)

__all__ = [
    "CERTIFICATE_VARIABLE_PREFIX",
    "CLIENT_CERTIFICATE_VERIFICATION",
    "VARIABLES",
    "ConnectionFacts",
    "RequestFacts",
    "Variable",
    "normalize_uri_path",
    "openssl_cipher_list",
    "server_variable",
    "utf8_octets",
    "variable_getter",
]

#: ``http_status`` before the backend answered: nginx prints ``$status`` as ``%03d`` of 0.
NO_STATUS: Final = "000"


class ConnectionFacts(Protocol):
    """Facts of the client connection that cost work to compute and that few rules read.

    ``ciphers_supported`` needs the ClientHello parsed and formatted, ``client_tcp_rtt`` a
    ``getsockopt`` system call; most requests read neither. The I/O shell hands one object per
    connection (:attr:`RequestFacts.connection`) whose properties compute their value when a
    rule first asks, instead of filling the fields of every request up front.
    """

    @property
    def ciphers_supported(self) -> str: ...

    @property
    def tcp_rtt_us(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """Everything the server variables are computed from, gathered once per request.

    ``ciphers_supported`` and ``tcp_rtt_us`` are given either directly (tests, one-off callers)
    or through ``connection``, which computes them on first use; ``connection`` wins when set.
    """

    client_ip: str
    client_port: int
    #: The template's frontend port (not the local one a ``--listen`` mapping chose).
    server_port: int
    scheme: str
    method: str
    #: The request target exactly as received (``request_uri``, ``X-Original-URL``).
    target: str
    http_version: str
    headers: Sequence[tuple[str, str]]
    trace_id: str
    tls_version: str | None = None
    cipher: str | None = None
    certificate: ClientCertInfo | None = None
    #: SUCCESS / PASSTHROUGH / NONE, from the SSL profile's decision.
    verification: str = "NONE"
    #: JA4 of the ClientHello, when the listener's SSL policy makes the gateway send it.
    ja4: str | None = None
    #: ``ciphers_supported``, already formatted (:func:`openssl_cipher_list`).
    ciphers_supported: str = ""
    #: Smoothed TCP round-trip time in microseconds (Linux ``TCP_INFO``), when known.
    tcp_rtt_us: int | None = None
    #: The response status, in the response phase only.
    status: int | None = None
    #: Bytes sent to the client so far (0 while headers are rewritten: nothing has gone out).
    sent_bytes: int = 0
    #: ``received_bytes`` as the shell counted it (request line, headers and the body the
    #: gateway reads before the rewrite); None: the head is measured from the facts.
    received_bytes: int | None = None
    #: The decoded path after a URL rewrite (``uri_path`` of later rules and of the backend).
    rewritten_path: str | None = None
    #: The query string after a URL rewrite.
    rewritten_query: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    #: The connection's lazily computed facts (see :class:`ConnectionFacts`), when the shell
    #: has them.
    connection: ConnectionFacts | None = None

    def header(self, name: str) -> str | None:
        lower = name.lower()
        values = [v for k, v in self.headers if k.lower() == lower]
        return ", ".join(values) if values else None

    @property
    def path(self) -> str:
        """The raw path of the target (an absolute-form target's path part)."""
        raw = self.target.split("?", 1)[0]
        if not raw.startswith("/") and "://" in raw:
            # Cut by hand: urlsplit raises on a malformed "[...]" authority, and the target of
            # a refused request head (logged as it came) may have one.
            after = raw.split("://", 1)[1]
            slash = after.find("/")
            return after[slash:] if slash >= 0 else "/"
        return raw

    @property
    def query(self) -> str:
        if self.rewritten_query is not None:
            return self.rewritten_query
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    @property
    def uri_path(self) -> str:
        if self.rewritten_path is not None:
            return self.rewritten_path
        return normalize_uri_path(self.path)


def utf8_octets(text: str) -> str:
    """Unicode ``text`` as the byte string of its UTF-8 encoding (one character per byte).

    How a template's own text meets request values, which are bytes: nginx reads its
    configuration as UTF-8 bytes, so a literal ``\u00fc`` in a rule is the bytes ``C3 BC``.
    """
    return text if text.isascii() else text.encode("utf-8").decode("latin-1")


def normalize_uri_path(raw: str) -> str:
    """nginx's ``$uri``: percent-decoded, dot segments resolved, repeated slashes merged.

    Decoded to bytes, not to text: each ``%XX`` becomes the one character of code point XX,
    whether or not the bytes are UTF-8 (see the module docstring).
    """
    if raw.startswith("/") and "%" not in raw and "/." not in raw and "//" not in raw:
        return raw  # nothing to decode, resolve or merge (the usual path)
    return _resolve_uri_path(raw)


def _resolve_uri_path(raw: str) -> str:
    """:func:`normalize_uri_path` the whole way, for any path."""
    decoded = unquote(raw, encoding="latin-1")
    out: list[str] = []
    for segment in re.sub("/+", "/", decoded).split("/")[1:]:
        if segment == ".":
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    trailing = decoded.endswith("/") or decoded.endswith("/.") or decoded.endswith("/..")
    path = "/" + "/".join(out)
    if trailing and not path.endswith("/"):
        path += "/"
    return path


def openssl_cipher_list(codes: Sequence[int], names: Mapping[int, str]) -> str:
    """``ciphers_supported`` (nginx ``$ssl_ciphers``): the client's cipher suites in its order.

    nginx prints each suite the client offered by OpenSSL's name, and one OpenSSL does not know
    (GREASE included) as ``0x`` + 4 lowercase hex digits, joined by ``:``.

    Args:
        codes: the cipher suite codes of the ClientHello, as sent.
        names: code → OpenSSL name (the shell builds it from the local OpenSSL).
    """
    return ":".join(names.get(code, f"0x{code:04x}") for code in codes)


def _ciphers_supported(f: RequestFacts) -> str:
    return f.connection.ciphers_supported if f.connection is not None else f.ciphers_supported


def _tcp_rtt(f: RequestFacts) -> str:
    rtt = f.connection.tcp_rtt_us if f.connection is not None else f.tcp_rtt_us
    return str(rtt) if rtt is not None else ""


def _cert(getter: Callable[[ClientCertInfo], str]) -> Callable[[RequestFacts], str]:
    return lambda f: getter(f.certificate) if f.certificate is not None else ""


def _forwarded_for(f: RequestFacts) -> str:
    incoming = f.header("x-forwarded-for")
    return f"{incoming}, {f.client_ip}" if incoming else f.client_ip


def _host(f: RequestFacts) -> str:
    """nginx ``$host``: the request line's host, else the Host header's; no port, lowercase."""
    target = f.target
    if not target.startswith("/") and "://" in target:
        # Absolute form (facts built outside the proxy: the proxy's codec gives origin form
        # with the authority as Host). An origin-form target may hold "://" in its path or
        # query ("//evil.test/?u=http://x"): that is no host.
        host = target.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
    else:
        host = f.header("host") or ""
    if host.startswith("["):
        host = host.split("]", 1)[0] + "]"
    elif ":" in host:
        host = host.rsplit(":", 1)[0]
    return host.lower()


def _client_user(f: RequestFacts) -> str:
    """nginx ``$remote_user``: the user name of a Basic ``Authorization`` header, else empty."""
    scheme, _, credentials = (f.header("authorization") or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("latin-1")
    except (binascii.Error, ValueError):
        return ""
    return decoded.partition(":")[0]


def _received_bytes(f: RequestFacts) -> str:
    """The request's length: request line, headers and body (the server-variable table's
    "request line, header, and request body"), as the shell counted it; without its count,
    the request line and headers measured from the facts."""
    if f.received_bytes is not None:
        return str(f.received_bytes)
    line = len(f"{f.method} {f.target} HTTP/{f.http_version}\r\n")
    headers = sum(len(f"{k}: {v}\r\n") for k, v in f.headers)
    return str(line + headers + len("\r\n"))


@dataclass(frozen=True, slots=True)
class Variable:
    """One row of the server variable table."""

    name: str
    #: The value's format, in words (the README prints it).
    format: str
    example: str
    compute: Callable[[RequestFacts], str]


#: What each variable holds and how it is computed. Without a client certificate every
#: ``client_certificate*`` variable is empty, except ``_verification`` (``NONE``).
_DESCRIBED: Final[Mapping[str, tuple[str, str, Callable[[RequestFacts], str]]]] = {
    "add_x_forwarded_for_proxy": (
        "incoming X-Forwarded-For, `, `, client IP (no port)",
        "198.51.100.1, 203.0.113.7",
        _forwarded_for,
    ),
    "ciphers_supported": (
        "the client's cipher suites in its order, OpenSSL names, unknown ones as 0x + hex, `:`",
        "0x2a2a:TLS_AES_128_GCM_SHA256:ECDHE-ECDSA-AES128-GCM-SHA256",
        _ciphers_supported,
    ),
    "ciphers_used": (
        "negotiated cipher, OpenSSL name",
        "TLS_AES_256_GCM_SHA384",
        lambda f: f.cipher or "",
    ),
    "client_ip": ("client address", "203.0.113.7", lambda f: f.client_ip),
    "client_port": ("client TCP port", "51234", lambda f: str(f.client_port)),
    "client_tcp_rtt": (
        "smoothed TCP RTT in microseconds (Linux TCP_INFO); empty elsewhere",
        "35",
        _tcp_rtt,
    ),
    "client_user": ("user of a Basic Authorization header", "alice", _client_user),
    "host": ("host of the request line, else of Host; lowercase, no port", "contoso.com", _host),
    "http_method": ("request method", "GET", lambda f: f.method),
    "http_status": (
        "response status (response rules); 000 before the backend answered",
        "200",
        lambda f: str(f.status) if f.status is not None else NO_STATUS,
    ),
    "http_version": ("HTTP/ + version", "HTTP/1.1", lambda f: f"HTTP/{f.http_version}"),
    "query_string": (
        "query after `?` (after a URL rewrite: the new one)",
        "id=7",
        lambda f: f.query,
    ),
    "received_bytes": ("bytes of request line + headers + body", "312", _received_bytes),
    "request_query": ("same as query_string", "id=7", lambda f: f.query),
    "request_scheme": ("http or https", "https", lambda f: f.scheme),
    "request_uri": (
        "target as received, never rewritten",
        "/a/../b%20c?id=7",
        lambda f: f.target,
    ),
    "sent_bytes": ("bytes sent to the client so far", "0", lambda f: str(f.sent_bytes)),
    "server_port": (
        "the template's frontend port (not the --listen one)",
        "443",
        lambda f: str(f.server_port),
    ),
    "ssl_connection_protocol": (
        "TLS version, OpenSSL spelling",
        "TLSv1.3",
        lambda f: f.tls_version or "",
    ),
    "ssl_enabled": (
        "On over TLS, else empty",
        "On",
        lambda f: "On" if f.scheme == "https" else "",
    ),
    "uri_path": (
        "path percent-decoded, dot segments resolved, // merged (nginx $uri)",
        "/b c",
        lambda f: f.uri_path,
    ),
    CLIENT_CERTIFICATE: (
        "leaf PEM (64-char lines, trailing newline), every byte but A-Z a-z 0-9 -._~ as %XX",
        "-----BEGIN%20CERTIFICATE-----%0AMIIB...%0A-----END%20CERTIFICATE-----%0A",
        _cert(lambda c: c.escaped_pem),
    ),
    CLIENT_CERTIFICATE_END_DATE: (
        "notAfter as OpenSSL prints it: month, day padded to 2, time, year, GMT",
        "Jan  6 13:41:09 2045 GMT",
        _cert(lambda c: c.end_date),
    ),
    CLIENT_CERTIFICATE_FINGERPRINT: (
        "SHA-1 of the DER, lowercase hex, no separators",
        "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12",
        _cert(lambda c: c.fingerprint_sha1),
    ),
    CLIENT_CERTIFICATE_ISSUER: (
        "issuer DN, RFC 2253 as OpenSSL prints it (most specific first, `,`, UTF-8 as \\XX)",
        "CN=Issuing CA,O=Contoso,C=US",
        _cert(lambda c: c.issuer),
    ),
    CLIENT_CERTIFICATE_SERIAL: (
        "serial, uppercase hex, whole bytes, no separators",
        "0A1B2C3D",
        _cert(lambda c: c.serial),
    ),
    CLIENT_CERTIFICATE_START_DATE: (
        "notBefore, same format as the end date",
        "Mar  1 09:05:00 2025 GMT",
        _cert(lambda c: c.start_date),
    ),
    CLIENT_CERTIFICATE_SUBJECT: (
        "subject DN, same format as the issuer",
        "emailAddress=a@contoso.com,UID=42+CN=J\\C3\\BCrgen,O=Contoso",
        _cert(lambda c: c.subject),
    ),
    CLIENT_CERTIFICATE_VERIFICATION: (
        "Strict: SUCCESS; Passthrough: PASSTHROUGH with a certificate; NONE without one",
        "SUCCESS",
        lambda f: f.verification,
    ),
}

if set(_DESCRIBED) != set(SERVER_VARIABLE_NAMES):  # pragma: no cover - caught by the unit tests
    raise ImportError("the server variable table and the model's name list differ")
#: The table, one row per name of :data:`emulator.model.variables.SERVER_VARIABLE_NAMES` and
#: in its order (the README's).
VARIABLES: Final = tuple(Variable(name, *_DESCRIBED[name]) for name in SERVER_VARIABLE_NAMES)

_BY_NAME: Final = {v.name: v for v in VARIABLES}


def _cookie(facts: RequestFacts, wanted: str) -> str:
    """nginx ``$cookie_NAME``: the first cookie of that name, name compared case-insensitively."""
    # Each Cookie header separately: joining several with ", " (as for other headers) would glue
    # the last pair of one to the first of the next.
    for header_value in (v for k, v in facts.headers if k.lower() == "cookie"):
        for part in header_value.split(";"):
            key, _, value = part.strip().partition("=")
            if key.lower() == wanted.lower():
                return value
    return ""


def variable_getter(name: str) -> Callable[[RequestFacts], str]:
    """The function computing ``{var_NAME}`` from a request's facts.

    The name is resolved here once; the rewrite engine keeps the result per rule set, so a
    request pays only for computing the value, not for looking the name up again.
    """
    variable = _BY_NAME.get(name.lower())
    if variable is not None:
        return variable.compute
    if name.lower().startswith(COOKIE_VARIABLE_PREFIX):
        cookie = name[len(COOKIE_VARIABLE_PREFIX) :]
        return lambda f: _cookie(f, cookie)
    return lambda f: f.extra.get(name, "")


def server_variable(name: str, facts: RequestFacts) -> str:
    """The value of ``{var_NAME}``; names compare case-insensitively; unknown → empty."""
    return variable_getter(name)(facts)
