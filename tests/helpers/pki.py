"""The suite's PKI: the pytest plugin's :class:`~emulator.testing.AppgwPki`, plus files on disk.

One class for every test module (unit and end to end), so a certificate the suite needs is
added once, here or in the plugin, and every test sees the same hierarchy: client root →
issuing intermediate → client leaves, a separate server root with the ``localhost`` server
certificate, and an unrelated root nobody trusts. Certificates are made on first use.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from emulator.arm.certdata import ServerCertificate, load_server_pfx
from emulator.pki import IssuedCert
from emulator.pki.demo import DemoPki
from emulator.testing import PFX_PASSWORD, AppgwPki

__all__ = ["PFX_PASSWORD", "PkiBundle", "template_parameters", "write_demo_parameters"]


class PkiBundle(AppgwPki):
    """:class:`AppgwPki` with a directory for the PEM files a stdlib client loads."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        self._server_certificate: ServerCertificate | None = None

    def client_files(
        self, cert: IssuedCert, name: str, *, with_chain: bool = False
    ) -> tuple[Path, Path]:
        """Write ``cert`` (with its chain when asked) and its key as ``name.pem``/``name.key``."""
        cert_path = self.directory / f"{name}.pem"
        key_path = self.directory / f"{name}.key"
        cert_path.write_bytes(cert.chain_pem if with_chain else cert.cert_pem)
        key_path.write_bytes(cert.key_pem)
        return cert_path, key_path

    @property
    def server_certificate(self) -> ServerCertificate:
        """:attr:`server` as the model holds a listener's certificate (read from its PFX)."""
        if self._server_certificate is None:
            self._server_certificate = load_server_pfx(
                "server", self.server_pfx, PFX_PASSWORD, cert_id="server"
            )
        return self._server_certificate


def template_parameters(pki: AppgwPki) -> list[str]:
    """``name=value`` parameters of the ``up`` template (certData, its password, the upload)."""
    return [
        "certData=" + base64.b64encode(pki.server_pfx).decode(),
        f"certPassword={PFX_PASSWORD}",
        "trustedClientCaData=" + base64.b64encode(pki.trusted_client_ca_pem).decode(),
    ]


def write_demo_parameters(pki: DemoPki, path: Path) -> Path:
    """A parameters file for the ``up`` template with ``pki``'s files (certData, its password,
    the trusted client CA upload), written the way a user writes one for ``run``."""
    value = {
        "certData": base64.b64encode(pki.server_pfx).decode(),
        "certPassword": pki.server_pfx_password,
        "trustedClientCaData": base64.b64encode(pki.trusted_client_ca_pem).decode(),
    }
    path.write_text(json.dumps({"parameters": {k: {"value": v} for k, v in value.items()}}))
    return path
