"""An echo backend for the appgw-emulator: shows what the gateway forwarded, client cert included.

Run it with ``python -m backend_stub`` or start :func:`serve` in a trio nursery. It is a separate
program from the emulator, standing in for the user's API, so it never imports ``emulator``.
"""

from backend_stub.certparse import (
    CertificateParseError,
    ParsedCertificate,
    parse_forwarded_certificate,
)
from backend_stub.server import (
    DEFAULT_CERT_HEADER,
    IDLE_TIMEOUT_S,
    MAX_DELAY_S,
    MAX_HEADER_BYTES,
    MAX_STREAM_BYTES,
    SERVER_NAME,
    Authorization,
    HeaderNameError,
    RecordedRequest,
    StubConfig,
    StubConfigError,
    StubError,
    StubStartupError,
    TrustFileError,
    authorize,
    load_trust_ca,
    serve,
)

__all__ = [
    "DEFAULT_CERT_HEADER",
    "IDLE_TIMEOUT_S",
    "MAX_DELAY_S",
    "MAX_HEADER_BYTES",
    "MAX_STREAM_BYTES",
    "SERVER_NAME",
    "Authorization",
    "CertificateParseError",
    "HeaderNameError",
    "ParsedCertificate",
    "RecordedRequest",
    "StubConfig",
    "StubConfigError",
    "StubError",
    "StubStartupError",
    "TrustFileError",
    "authorize",
    "load_trust_ca",
    "parse_forwarded_certificate",
    "serve",
]
