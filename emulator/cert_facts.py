"""Facts about a certificate that every layer reads, with OpenSSL's definitions.

The gateway is nginx on OpenSSL, so "is this a CA certificate" means what ``X509_check_ca``
says; the template checks (:mod:`emulator.arm.certdata`), the chain verifier
(:mod:`emulator.core.tls.chain`), the issuer-DN extraction, the dashboard and ``check-ca`` all ask
the same question and get the same answer from here. Pure: imports only ``cryptography``, so
any module may use it without breaking the layering (``tests/unit/test_layering.py``).
"""

from __future__ import annotations

from cryptography import x509

__all__ = ["is_ca"]


def is_ca(cert: x509.Certificate) -> bool:
    """OpenSSL's ``X509_check_ca`` for our purposes: basicConstraints CA:TRUE, or a v1
    self-signed certificate (which OpenSSL takes as a CA, ``check_ca`` returning 3).

    A malformed extension counts as absent: OpenSSL marks such a certificate invalid, and the
    signature and purpose checks then fail it.
    """
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (x509.ExtensionNotFound, ValueError):
        constraints = None
    if constraints is not None:
        return constraints.ca
    return cert.version is x509.Version.v1 and cert.issuer == cert.subject
