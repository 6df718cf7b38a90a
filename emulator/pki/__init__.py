"""Certificates made at run time: the test/demo CA, the demo PKI files, the OCSP responder.

``emulator.pki`` is a public path: ``from emulator.pki import CA`` is how tests and users build
a root, intermediates and client or server certificates (:mod:`.ca`). The package also holds
the demo PKI that ``certs init`` writes (:mod:`.demo`) and the local OCSP responder
(:mod:`.ocsp_responder`, the one trio module here); neither is imported by this module, so
``import emulator.pki`` stays light and free of trio.
"""

from __future__ import annotations

from emulator.pki.ca import (
    CA,
    CA_VALIDITY,
    DEFAULT_ORGANIZATION,
    KEY_TYPES,
    LEAF_VALIDITY,
    IssuedCert,
    PrivateKey,
    ca_bundle_pem,
    self_signed_client,
)

__all__ = [
    "CA",
    "CA_VALIDITY",
    "DEFAULT_ORGANIZATION",
    "KEY_TYPES",
    "LEAF_VALIDITY",
    "IssuedCert",
    "PrivateKey",
    "ca_bundle_pem",
    "self_signed_client",
]
