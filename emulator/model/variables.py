"""Server variable names: the one list of them, in Azure's spelling.

The builder validates rewrite templates against :data:`SERVER_VARIABLE_NAMES`;
:mod:`emulator.core.tls.certinfo` fills the certificate ones and
:mod:`emulator.core.request.server_variables`
computes each of them. Both import the names from here.
"""

from __future__ import annotations

import re
from typing import Final

from emulator.model.types import HeaderAction

# The mutual-authentication variables, each a constant because code outside the rewrite engine
# names them (certinfo fills them, the dashboard shows them):
# https://learn.microsoft.com/azure/application-gateway/rewrite-http-headers-url#mutual-authentication-server-variables
CLIENT_CERTIFICATE: Final = "client_certificate"
CLIENT_CERTIFICATE_END_DATE: Final = "client_certificate_end_date"
CLIENT_CERTIFICATE_FINGERPRINT: Final = "client_certificate_fingerprint"
CLIENT_CERTIFICATE_ISSUER: Final = "client_certificate_issuer"
CLIENT_CERTIFICATE_SERIAL: Final = "client_certificate_serial"
CLIENT_CERTIFICATE_START_DATE: Final = "client_certificate_start_date"
CLIENT_CERTIFICATE_SUBJECT: Final = "client_certificate_subject"
CLIENT_CERTIFICATE_VERIFICATION: Final = "client_certificate_verification"

#: The certificate variables read from the certificate itself; without a client certificate
#: each is empty. ``client_certificate_verification`` is the handshake's verdict instead.
CERTIFICATE_VARIABLES: Final = (
    CLIENT_CERTIFICATE,
    CLIENT_CERTIFICATE_END_DATE,
    CLIENT_CERTIFICATE_FINGERPRINT,
    CLIENT_CERTIFICATE_ISSUER,
    CLIENT_CERTIFICATE_SERIAL,
    CLIENT_CERTIFICATE_START_DATE,
    CLIENT_CERTIFICATE_SUBJECT,
)

#: Every server variable Azure documents for v2 rewrites (rewrite-http-headers-url, "Server
#: variables" and "Mutual authentication server variables"), in the README's order; the
#: ``cookie_NAME`` family is :data:`COOKIE_VARIABLE_PREFIX`. The names live in the model because
#: validation needs them; :mod:`emulator.core.request.server_variables` builds its table from
#: this list.
SERVER_VARIABLE_NAMES: Final = (
    "add_x_forwarded_for_proxy",
    "ciphers_supported",
    "ciphers_used",
    "client_ip",
    "client_port",
    "client_tcp_rtt",
    "client_user",
    "host",
    "http_method",
    "http_status",
    "http_version",
    "query_string",
    "received_bytes",
    "request_query",
    "request_scheme",
    "request_uri",
    "sent_bytes",
    "server_port",
    "ssl_connection_protocol",
    "ssl_enabled",
    "uri_path",
    *CERTIFICATE_VARIABLES,
    CLIENT_CERTIFICATE_VERIFICATION,
)
#: ``cookie_NAME`` reads one request cookie.
COOKIE_VARIABLE_PREFIX: Final = "cookie_"
#: A placeholder in a header value or URL template (rewrite-http-headers-url, "Rewrite actions").
PLACEHOLDER: Final = re.compile(r"\{(var|http_req|http_resp)_([^{}]+)\}")
#: Every mTLS variable starts with this; a header filled from one carries the client's identity.
CERTIFICATE_VARIABLE_PREFIX: Final = "client_certificate"


def fills_from_certificate(action: HeaderAction) -> bool:
    """True when the action's value reads a ``client_certificate*`` server variable: the one
    test behind the builder's Passthrough warning and the forgery analysis in the rewrite engine."""
    return any(
        m.group(1) == "var" and m.group(2).lower().startswith(CERTIFICATE_VARIABLE_PREFIX)
        for m in PLACEHOLDER.finditer(action.header_value)
    )
