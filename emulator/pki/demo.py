"""The demo PKI: every certificate a mutual-TLS walkthrough needs, written to one directory.

``appgw-emulator certs init DIR`` writes it and ``appgw-emulator up`` reuses it (or creates it when
the directory is missing or empty). The file names are fixed; the README and the CLI refer to them:

================================  ======================================================
file                              content
================================  ======================================================
``root-ca.pem``                   client root CA (public certificate)
``intermediate-ca.pem``           client issuing CA, signed by the root (public)
``intermediate-ca.key``           its private key: the local OCSP responder signs with it
``trusted-client-ca-chain.pem``   root + intermediate, public only: the upload for an SSL
                                  profile's ``trustedClientCertificates``
``trusted-client-ca-chain.b64``   base64 of that file: the value of
                                  ``trustedClientCertificates[].properties.data``
``server-root-ca.pem``            a separate root that issued the listener's certificate;
                                  clients pass it as ``--cacert``
``server.pfx``                    listener certificate (SAN ``localhost``, ``127.0.0.1``,
                                  ``::1``) + key, PKCS#12, password-protected
``server-pfx-password.txt``       the PFX password (no trailing newline)
``client.pem``, ``client.key``    good client certificate (CN ``demo-client``, signed by
                                  the intermediate) and its key
``client-chain.pem``              client leaf + intermediate (what a client sends)
``client-expired.pem``            signed by the intermediate, validity ended yesterday
``client-not-yet-valid.pem``      signed by the intermediate, validity starts in 30 days
``client-unrelated-ca.pem``       signed by ``unrelated-root-ca.pem``, which nobody trusts
``client-self-signed.pem``        self-signed leaf
``unrelated-root-ca.pem``         the root of ``client-unrelated-ca.pem``
``deploymentParameters.json``     parameters for the Azure quickstart template, with
                                  ``certData`` and ``certPassword`` from ``server.pfx``
``manifest.json``                 what each file is, with subjects and validity dates
================================  ======================================================

Each negative case has a ``.key`` beside its ``.pem``. Why two roots: the gateway's own
certificate has nothing to do with the CA it trusts for clients (Azure wants the client CA chain
uploaded, never the listener's certificate), so the demo keeps the two hierarchies apart. Try::

    curl --cacert DIR/server-root-ca.pem --cert DIR/client.pem --key DIR/client.key \\
        https://localhost:8443/

Files are written through a temporary file and a rename, and ``manifest.json`` comes last: a
directory without a manifest is never mistaken for a finished PKI. Private keys, the PFX, its
password and the parameters file (which embeds both) are mode 0600.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import re
import secrets
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from emulator.arm.pkcs12_bounds import Pkcs12TooCostly, load_pkcs12
from emulator.errors import EmulatorError
from emulator.pki import (
    CA,
    CA_VALIDITY,
    KEY_TYPES,
    LEAF_VALIDITY,
    IssuedCert,
    PrivateKey,
    ca_bundle_pem,
    self_signed_client,
)

__all__ = [
    "CLIENT_CERT",
    "CLIENT_CHAIN",
    "CLIENT_EXPIRED_CERT",
    "CLIENT_EXPIRED_KEY",
    "CLIENT_KEY",
    "CLIENT_NOT_YET_VALID_CERT",
    "CLIENT_NOT_YET_VALID_KEY",
    "CLIENT_SELF_SIGNED_CERT",
    "CLIENT_SELF_SIGNED_KEY",
    "CLIENT_UNRELATED_CA_CERT",
    "CLIENT_UNRELATED_CA_KEY",
    "DEMO_CLIENT_CN",
    "DEMO_OCSP_URL",
    "DEPLOYMENT_PARAMETERS",
    "EXPIRY_MARGIN",
    "FILE_NAMES",
    "INTERMEDIATE_CA",
    "INTERMEDIATE_CA_KEY",
    "MANIFEST",
    "MANIFEST_FORMAT",
    "MANIFEST_VERSION",
    "ROOT_CA",
    "SERVER_HOSTNAMES",
    "SERVER_PFX",
    "SERVER_PFX_PASSWORD",
    "SERVER_ROOT_CA",
    "SERVER_ROOT_CA_KEY",
    "TRUSTED_CLIENT_CA_CHAIN",
    "TRUSTED_CLIENT_CA_CHAIN_B64",
    "UNRELATED_ROOT_CA",
    "DemoPki",
    "DemoPkiError",
    "ManifestEntry",
    "check_server_names",
    "ensure_demo_pki",
    "load_demo_pki",
    "missing_server_names",
    "write_demo_pki",
]

ROOT_CA: Final = "root-ca.pem"
INTERMEDIATE_CA: Final = "intermediate-ca.pem"
INTERMEDIATE_CA_KEY: Final = "intermediate-ca.key"
TRUSTED_CLIENT_CA_CHAIN: Final = "trusted-client-ca-chain.pem"
TRUSTED_CLIENT_CA_CHAIN_B64: Final = "trusted-client-ca-chain.b64"
SERVER_ROOT_CA: Final = "server-root-ca.pem"
#: The server root's key: ``run --loose`` issues development listener certificates with it.
SERVER_ROOT_CA_KEY: Final = "server-root-ca.key"
SERVER_PFX: Final = "server.pfx"
SERVER_PFX_PASSWORD: Final = "server-pfx-password.txt"
CLIENT_CERT: Final = "client.pem"
CLIENT_KEY: Final = "client.key"
CLIENT_CHAIN: Final = "client-chain.pem"
CLIENT_EXPIRED_CERT: Final = "client-expired.pem"
CLIENT_EXPIRED_KEY: Final = "client-expired.key"
CLIENT_NOT_YET_VALID_CERT: Final = "client-not-yet-valid.pem"
CLIENT_NOT_YET_VALID_KEY: Final = "client-not-yet-valid.key"
CLIENT_UNRELATED_CA_CERT: Final = "client-unrelated-ca.pem"
CLIENT_UNRELATED_CA_KEY: Final = "client-unrelated-ca.key"
CLIENT_SELF_SIGNED_CERT: Final = "client-self-signed.pem"
CLIENT_SELF_SIGNED_KEY: Final = "client-self-signed.key"
UNRELATED_ROOT_CA: Final = "unrelated-root-ca.pem"
DEPLOYMENT_PARAMETERS: Final = "deploymentParameters.json"
MANIFEST: Final = "manifest.json"

#: Every file of a demo PKI except the manifest, in the order they are written.
FILE_NAMES: Final = (
    ROOT_CA,
    INTERMEDIATE_CA,
    INTERMEDIATE_CA_KEY,
    TRUSTED_CLIENT_CA_CHAIN,
    TRUSTED_CLIENT_CA_CHAIN_B64,
    SERVER_ROOT_CA,
    SERVER_ROOT_CA_KEY,
    SERVER_PFX,
    SERVER_PFX_PASSWORD,
    CLIENT_CERT,
    CLIENT_KEY,
    CLIENT_CHAIN,
    CLIENT_EXPIRED_CERT,
    CLIENT_EXPIRED_KEY,
    CLIENT_NOT_YET_VALID_CERT,
    CLIENT_NOT_YET_VALID_KEY,
    UNRELATED_ROOT_CA,
    CLIENT_UNRELATED_CA_CERT,
    CLIENT_UNRELATED_CA_KEY,
    CLIENT_SELF_SIGNED_CERT,
    CLIENT_SELF_SIGNED_KEY,
    DEPLOYMENT_PARAMETERS,
)

MANIFEST_FORMAT: Final = "appgw-emulator-demo-pki"
MANIFEST_VERSION: Final = 1

DEMO_CLIENT_CN: Final = "demo-client"
#: The AIA OCSP URL of the demo client certificates: where `appgw-emulator certs
#: ocsp-responder --ca DIR` listens by default (emulator.pki.ocsp_responder.DEFAULT_OCSP_PORT).
DEMO_OCSP_URL: Final = "http://127.0.0.1:8888/"
#: What a local client dials: the name, and both loopback addresses for clients that skip DNS.
SERVER_HOSTNAMES: Final = ("localhost", "127.0.0.1", "::1")

#: A PKI whose server or good client certificate ends within this margin is stale: regenerating
#: it now beats a handshake failing in the middle of a demo tomorrow.
EXPIRY_MARGIN: Final = datetime.timedelta(days=1)

#: Random bytes behind the PFX password; token_urlsafe keeps it shell- and JSON-safe.
_PASSWORD_BYTES: Final = 18
#: The negative leaves sit this far outside their validity (same idea as ``pki.issue_client``).
_OUT_OF_VALIDITY: Final = datetime.timedelta(days=30)
_CLOCK_SKEW_BACKDATE: Final = datetime.timedelta(hours=1)

#: Files that may sit in an otherwise empty demo directory (besides hidden files).
_NOT_CONTENT: Final = frozenset({"README.md"})

_SECRET_MODE: Final = 0o600
_PUBLIC_MODE: Final = 0o644

_KIND_CERTIFICATE: Final = "certificate"
_KIND_PRIVATE_KEY: Final = "private-key"
_KIND_PFX: Final = "pfx"
_KIND_PASSWORD: Final = "password"
_KIND_PARAMETERS: Final = "parameters"
_KIND_BUNDLE: Final = "bundle"
_SECRET_KINDS: Final = frozenset({_KIND_PRIVATE_KEY, _KIND_PFX, _KIND_PASSWORD, _KIND_PARAMETERS})

#: Shape of ``/work/shared/seeds/deploymentParameters.json`` (the Azure quickstart's file).
_PARAMETERS_SCHEMA: Final = (
    "https://schema.management.azure.com/schemas/2015-01-01/deploymentParameters.json#"
)
_ADMIN_SSH_KEY_PLACEHOLDER: Final = "<not-used-by-appgw-emulator>"


class DemoPkiError(EmulatorError):
    """The demo PKI directory cannot be used: foreign, incomplete, stale or unreadable."""

    code = "EmulatorDemoPkiInvalid"


def _fix_regenerate(directory: Path) -> str:
    return f"run `appgw-emulator certs init {directory} --force` to regenerate it"


def _fix_init(directory: Path) -> str:
    return f"run `appgw-emulator certs init {directory}`"


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """What ``manifest.json`` says about one file; dates are ISO 8601 UTC strings."""

    description: str
    kind: str
    subject: str | None = None
    not_before: str | None = None
    not_after: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {
            "description": self.description,
            "kind": self.kind,
            "subject": self.subject,
            "not_before": self.not_before,
            "not_after": self.not_after,
        }

    @classmethod
    def from_json(cls, value: object) -> ManifestEntry:
        if not isinstance(value, dict):
            msg = "manifest entry is not an object"
            raise TypeError(msg)
        fields: dict[str, str | None] = {}
        for key in ("description", "kind", "subject", "not_before", "not_after"):
            item = value.get(key)
            if item is not None and not isinstance(item, str):
                msg = f"manifest field {key!r} is not a string"
                raise TypeError(msg)
            fields[key] = item
        description, kind = fields["description"], fields["kind"]
        if description is None or kind is None:
            msg = "manifest entry lacks description or kind"
            raise TypeError(msg)
        return cls(
            description=description,
            kind=kind,
            subject=fields["subject"],
            not_before=fields["not_before"],
            not_after=fields["not_after"],
        )


@dataclass(frozen=True, slots=True)
class DemoPki:
    """A demo PKI directory that was written or checked: paths and the values the CLI needs."""

    directory: Path
    key_type: str
    created: str
    files: Mapping[str, ManifestEntry]
    server_pfx: bytes
    server_pfx_password: str
    trusted_client_ca_pem: bytes

    def path(self, name: str) -> Path:
        """The path of one of the demo files (use the module's name constants)."""
        if name != MANIFEST and name not in FILE_NAMES:
            msg = f"{name!r} is not a demo PKI file name"
            raise ValueError(msg)
        return self.directory / name


# --- generation -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Output:
    name: str
    data: bytes
    entry: ManifestEntry


def _key_pem(key: object) -> bytes:
    assert isinstance(key, PrivateKey)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).isoformat()


def _cert_entry(description: str, kind: str, cert: x509.Certificate | None = None) -> ManifestEntry:
    if cert is None:
        return ManifestEntry(description=description, kind=kind)
    return ManifestEntry(
        description=description,
        kind=kind,
        subject=cert.subject.rfc4514_string(),
        not_before=_iso(cert.not_valid_before_utc),
        not_after=_iso(cert.not_valid_after_utc),
    )


def _deployment_parameters(pfx: bytes, password: str) -> bytes:
    """The quickstart's parameters with the demo PFX filled in, so the template runs unchanged."""
    parameters = {
        "$schema": _PARAMETERS_SCHEMA,
        "contentVersion": "1.0.0.0",
        "parameters": {
            "addressPrefix": {"value": "10.0.0.0/16"},
            "subnetPrefix": {"value": "10.0.0.0/24"},
            "skuName": {"value": "Standard_v2"},
            "capacity": {"value": 2},
            "adminUsername": {"value": "azureuser"},
            "adminSSHKey": {"value": _ADMIN_SSH_KEY_PLACEHOLDER},
            "certData": {"value": base64.b64encode(pfx).decode("ascii")},
            "certPassword": {"value": password},
        },
    }
    return (json.dumps(parameters, indent=4) + "\n").encode("utf-8")


def _leaf_outputs(
    cert_name: str, key_name: str, leaf: IssuedCert, description: str
) -> list[_Output]:
    return [
        _Output(cert_name, leaf.cert_pem, _cert_entry(description, _KIND_CERTIFICATE, leaf.cert)),
        _Output(
            key_name,
            leaf.key_pem,
            _cert_entry(f"Private key of {cert_name}.", _KIND_PRIVATE_KEY, leaf.cert),
        ),
    ]


def _generate(
    key_type: str, now: datetime.datetime, server_names: Sequence[str] = ()
) -> tuple[list[_Output], str]:
    """Build every file in memory, so a failure here writes nothing."""
    hostnames = tuple(dict.fromkeys((*SERVER_HOSTNAMES, *server_names)))
    start = now - _CLOCK_SKEW_BACKDATE
    ca_end = now + CA_VALIDITY
    leaf_end = now + LEAF_VALIDITY

    root = CA(
        "appgw-emulator Demo Client Root CA", key_type=key_type, not_before=start, not_after=ca_end
    )
    issuing = root.intermediate(
        "appgw-emulator Demo Client Issuing CA", not_before=start, not_after=ca_end
    )
    server_root = CA(
        "appgw-emulator Demo Server Root CA", key_type=key_type, not_before=start, not_after=ca_end
    )
    unrelated_root = CA(
        "appgw-emulator Demo Unrelated Root CA",
        key_type=key_type,
        not_before=start,
        not_after=ca_end,
    )
    server = server_root.issue_server(*hostnames, not_before=start, not_after=leaf_end)
    client = issuing.issue_client(
        DEMO_CLIENT_CN, not_before=start, not_after=leaf_end, ocsp_url=DEMO_OCSP_URL
    )
    expired = issuing.issue_client(
        "demo-client-expired",
        not_before=now - _OUT_OF_VALIDITY,
        not_after=now - datetime.timedelta(days=1),
        ocsp_url=DEMO_OCSP_URL,
    )
    not_yet_valid = issuing.issue_client(
        "demo-client-not-yet-valid",
        not_before=now + _OUT_OF_VALIDITY,
        not_after=now + _OUT_OF_VALIDITY + LEAF_VALIDITY,
        ocsp_url=DEMO_OCSP_URL,
    )
    unrelated = unrelated_root.issue_client(
        "demo-client-unrelated-ca", not_before=start, not_after=leaf_end
    )
    self_signed = self_signed_client(
        "demo-client-self-signed", key_type=key_type, not_before=start, not_after=leaf_end
    )

    # A leading '-' would make the password read as an option on a command line
    # (``--certificate-password -x...``), so the first character is never one.
    password = secrets.token_urlsafe(_PASSWORD_BYTES).lstrip("-").rjust(2, "x")
    pfx = server.pfx(password)
    trusted = ca_bundle_pem(root, issuing)

    outputs = [
        _Output(
            ROOT_CA,
            root.cert_pem,
            _cert_entry(
                "Client root CA (public). Trusted through trusted-client-ca-chain.pem.",
                _KIND_CERTIFICATE,
                root.cert,
            ),
        ),
        _Output(
            INTERMEDIATE_CA,
            issuing.cert_pem,
            _cert_entry(
                "Client issuing CA (public), signed by root-ca.pem; issues client.pem.",
                _KIND_CERTIFICATE,
                issuing.cert,
            ),
        ),
        _Output(
            INTERMEDIATE_CA_KEY,
            _key_pem(issuing.key),
            _cert_entry(
                "Private key of intermediate-ca.pem, for the local OCSP responder "
                "(`appgw-emulator certs ocsp-responder`). Never part of an upload.",
                _KIND_PRIVATE_KEY,
                issuing.cert,
            ),
        ),
        _Output(
            TRUSTED_CLIENT_CA_CHAIN,
            trusted,
            _cert_entry(
                "Root + intermediate, public certificates only: the SSL profile's "
                "trustedClientCertificates upload.",
                _KIND_BUNDLE,
                root.cert,
            ),
        ),
        _Output(
            TRUSTED_CLIENT_CA_CHAIN_B64,
            base64.b64encode(trusted),
            _cert_entry(
                "Base64 of trusted-client-ca-chain.pem: the value of "
                "trustedClientCertificates[].properties.data.",
                _KIND_BUNDLE,
                root.cert,
            ),
        ),
        _Output(
            SERVER_ROOT_CA,
            server_root.cert_pem,
            _cert_entry(
                "Root CA of the listener's server certificate (unrelated to the client CA); "
                "pass it to clients as --cacert.",
                _KIND_CERTIFICATE,
                server_root.cert,
            ),
        ),
        _Output(
            SERVER_ROOT_CA_KEY,
            _key_pem(server_root.key),
            _cert_entry(
                "Private key of server-root-ca.pem: `run --loose` issues development listener "
                "certificates with it. Never part of an upload.",
                _KIND_PRIVATE_KEY,
                server_root.cert,
            ),
        ),
        _Output(
            SERVER_PFX,
            pfx,
            _cert_entry(
                f"Listener certificate and key (PKCS#12), SAN {', '.join(hostnames)}; "
                "password in server-pfx-password.txt.",
                _KIND_PFX,
                server.cert,
            ),
        ),
        _Output(
            SERVER_PFX_PASSWORD,
            password.encode("ascii"),
            _cert_entry("Password of server.pfx (no trailing newline).", _KIND_PASSWORD),
        ),
        *_leaf_outputs(
            CLIENT_CERT,
            CLIENT_KEY,
            client,
            "Good client certificate, signed by intermediate-ca.pem.",
        ),
        _Output(
            CLIENT_CHAIN,
            client.chain_pem,
            _cert_entry(
                "client.pem followed by intermediate-ca.pem: what a client sends.",
                _KIND_BUNDLE,
                client.cert,
            ),
        ),
        *_leaf_outputs(
            CLIENT_EXPIRED_CERT,
            CLIENT_EXPIRED_KEY,
            expired,
            "Client certificate signed by intermediate-ca.pem whose validity has ended.",
        ),
        *_leaf_outputs(
            CLIENT_NOT_YET_VALID_CERT,
            CLIENT_NOT_YET_VALID_KEY,
            not_yet_valid,
            "Client certificate signed by intermediate-ca.pem whose validity starts later.",
        ),
        _Output(
            UNRELATED_ROOT_CA,
            unrelated_root.cert_pem,
            _cert_entry(
                "A root CA nobody trusts; issued client-unrelated-ca.pem.",
                _KIND_CERTIFICATE,
                unrelated_root.cert,
            ),
        ),
        *_leaf_outputs(
            CLIENT_UNRELATED_CA_CERT,
            CLIENT_UNRELATED_CA_KEY,
            unrelated,
            "Client certificate issued by unrelated-root-ca.pem (untrusted chain).",
        ),
        *_leaf_outputs(
            CLIENT_SELF_SIGNED_CERT,
            CLIENT_SELF_SIGNED_KEY,
            self_signed,
            "Self-signed client certificate (untrusted).",
        ),
        _Output(
            DEPLOYMENT_PARAMETERS,
            _deployment_parameters(pfx, password),
            _cert_entry(
                "Parameters for the quickstart template: certData/certPassword from server.pfx.",
                _KIND_PARAMETERS,
            ),
        ),
    ]
    if [output.name for output in outputs] != list(FILE_NAMES):  # pragma: no cover
        msg = "demo PKI outputs and FILE_NAMES disagree"
        raise AssertionError(msg)
    return outputs, password


# --- file system ------------------------------------------------------------------------


def _atomic_write(path: Path, data: bytes, *, mode: int) -> None:
    """Write through a temporary file in the same directory and rename it into place.

    The temporary file is created 0600 (``mkstemp``), so a secret is never readable by others,
    even for a moment; public files get their final mode just before the rename.
    """
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        tmp.chmod(mode)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _is_temporary(name: str) -> bool:
    """A temporary file of :func:`_atomic_write` that an interrupted run left behind."""
    return name.endswith(".tmp") and any(
        name.startswith(f".{known}.") for known in (*FILE_NAMES, MANIFEST)
    )


def _content_names(directory: Path) -> list[str]:
    """The entries that make a directory "not empty".

    Hidden files and a README do not count: the repository's ``certs/`` ships a ``.gitignore``
    (and may get a README) and must still be filled on first use.
    """
    return sorted(
        entry.name
        for entry in directory.iterdir()
        if not entry.name.startswith(".") and entry.name not in _NOT_CONTENT
    )


def _read_manifest(directory: Path) -> dict[str, object] | None:
    """The manifest as a dict, ``None`` when absent; raises DemoPkiError when unreadable."""
    manifest_path = directory / MANIFEST
    try:
        raw = manifest_path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"{MANIFEST} is not valid JSON ({exc})"
        raise DemoPkiError(
            msg,
            file=str(manifest_path),
            fix=_fix_regenerate(directory),
        ) from exc
    if not isinstance(value, dict):
        msg = f"{MANIFEST} is not a JSON object"
        raise DemoPkiError(
            msg,
            file=str(manifest_path),
            fix=_fix_regenerate(directory),
        )
    return value


def _is_demo_manifest(manifest: Mapping[str, object] | None) -> bool:
    return manifest is not None and manifest.get("format") == MANIFEST_FORMAT


def write_demo_pki(
    directory: Path,
    *,
    key_type: str = "ec",
    force: bool = False,
    now: datetime.datetime | None = None,
    server_names: Sequence[str] = (),
) -> DemoPki:
    """Generate a fresh demo PKI into ``directory`` (created if missing).

    Args:
        key_type: ``"ec"`` (P-256) or ``"rsa"`` (2048) for every key.
        server_names: DNS names or IP addresses the listener certificate carries besides
            ``localhost`` and the loopback addresses (``--server-name``): a client that reaches
            the gateway by a compose or Kubernetes service name then passes hostname checks.
        force: regenerate even when the directory is not empty. Without it, any non-empty
            directory is refused, an existing demo PKI included, so keys already handed to
            clients are never replaced by accident.
        now: the issuance time, UTC; tests pass a past time to get a stale PKI.

    Raises:
        DemoPkiError: the directory is not empty (and no ``force``), or is a file.
        ValueError: unknown ``key_type``.
    """
    if key_type not in KEY_TYPES:
        msg = f"key_type must be one of {', '.join(KEY_TYPES)}, not {key_type!r}"
        raise ValueError(msg)
    if directory.exists() and not directory.is_dir():
        msg = "is not a directory"
        raise DemoPkiError(
            msg,
            file=str(directory),
            fix="pick a directory path for the demo PKI",
        )
    if directory.is_dir() and _content_names(directory) and not force:
        if _is_demo_manifest(_read_manifest(directory)):
            msg = "already holds a demo PKI"
            raise DemoPkiError(
                msg,
                file=str(directory),
                fix=f"use it as it is, or {_fix_regenerate(directory)}",
            )
        msg = "is not empty and holds no demo PKI; refusing to write into it"
        raise DemoPkiError(
            msg,
            file=str(directory),
            fix="pick another directory or empty it (or pass --force to write the demo files "
            "beside the existing ones)",
        )

    names = check_server_names(server_names)
    moment = now if now is not None else datetime.datetime.now(datetime.UTC)
    outputs, password = _generate(key_type, moment, names)

    directory.mkdir(parents=True, exist_ok=True)
    # Drop the old manifest first: if this run is interrupted, the directory reads as an
    # incomplete PKI instead of a valid one with a mix of old and new files.
    (directory / MANIFEST).unlink(missing_ok=True)
    for leftover in directory.iterdir():
        if _is_temporary(leftover.name):
            leftover.unlink()
    for output in outputs:
        mode = _SECRET_MODE if output.entry.kind in _SECRET_KINDS else _PUBLIC_MODE
        _atomic_write(directory / output.name, output.data, mode=mode)

    created = _iso(moment)
    files = {output.name: output.entry for output in outputs}
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "key_type": key_type,
        "created": created,
        "files": {name: entry.to_json() for name, entry in files.items()},
    }
    _atomic_write(
        directory / MANIFEST,
        (json.dumps(manifest, indent=2) + "\n").encode("utf-8"),
        mode=_PUBLIC_MODE,
    )
    by_name = {output.name: output.data for output in outputs}
    return DemoPki(
        directory=directory,
        key_type=key_type,
        created=created,
        files=files,
        server_pfx=by_name[SERVER_PFX],
        server_pfx_password=password,
        trusted_client_ca_pem=by_name[TRUSTED_CLIENT_CA_CHAIN],
    )


def _check_validity(
    directory: Path, name: str, cert: x509.Certificate, now: datetime.datetime
) -> None:
    not_after = cert.not_valid_after_utc
    if cert.not_valid_before_utc > now:
        msg = f"{name} is not valid before {_iso(cert.not_valid_before_utc)} (is the clock right?)"
        raise DemoPkiError(
            msg,
            file=str(directory),
            fix=_fix_regenerate(directory),
        )
    if not_after - EXPIRY_MARGIN <= now:
        state = "expired" if not_after <= now else "expires"
        msg = f"demo PKI is stale: {name} {state} on {_iso(not_after)}"
        raise DemoPkiError(
            msg,
            file=str(directory),
            fix=_fix_regenerate(directory),
        )


def load_demo_pki(directory: Path, *, now: datetime.datetime | None = None) -> DemoPki:
    """Check a demo PKI directory and return its paths and values.

    Args:
        now: the time to check validity against, UTC; defaults to the current time.

    Raises:
        DemoPkiError: the directory is missing, empty, foreign, incomplete, of another manifest
            format or version, unreadable, or stale (server or good client certificate expired
            or expiring within :data:`EXPIRY_MARGIN`). The message says which, and the fix.
    """
    moment = now if now is not None else datetime.datetime.now(datetime.UTC)
    if not directory.is_dir():
        msg = "does not exist or is not a directory"
        raise DemoPkiError(
            msg,
            file=str(directory),
            fix=_fix_init(directory),
        )
    manifest = _read_manifest(directory)
    if manifest is None:
        names = _content_names(directory)
        if not names:
            msg = "is empty"
            raise DemoPkiError(msg, file=str(directory), fix=_fix_init(directory))
        if all(name in FILE_NAMES for name in names):
            msg = f"holds an incomplete demo PKI (no {MANIFEST}; an interrupted `certs init`?)"
            raise DemoPkiError(
                msg,
                file=str(directory),
                fix=_fix_regenerate(directory),
            )
        msg = f"is not an appgw-emulator demo PKI (no {MANIFEST}) and holds other files"
        raise DemoPkiError(
            msg,
            file=str(directory),
            fix="pick another directory or empty it; the emulator never overwrites it",
        )
    manifest_file = str(directory / MANIFEST)
    if manifest.get("format") != MANIFEST_FORMAT:
        msg = (
            f"{MANIFEST} is not an appgw-emulator demo PKI manifest "
            f"(format {manifest.get('format')!r})"
        )
        raise DemoPkiError(
            msg,
            file=manifest_file,
            fix="pick another directory or empty it",
        )
    if manifest.get("version") != MANIFEST_VERSION:
        msg = (
            f"demo PKI manifest version {manifest.get('version')!r} is not supported "
            f"(this emulator writes version {MANIFEST_VERSION})"
        )
        raise DemoPkiError(
            msg,
            file=manifest_file,
            fix=_fix_regenerate(directory),
        )
    key_type, created, raw_files = (
        manifest.get("key_type"),
        manifest.get("created"),
        manifest.get("files"),
    )
    if not isinstance(key_type, str) or not isinstance(created, str):
        msg = f"{MANIFEST} lacks key_type or created"
        raise DemoPkiError(
            msg,
            file=manifest_file,
            fix=_fix_regenerate(directory),
        )
    if not isinstance(raw_files, dict):
        msg = f"{MANIFEST} has no files table"
        raise DemoPkiError(msg, file=manifest_file, fix=_fix_regenerate(directory))
    try:
        files = {str(name): ManifestEntry.from_json(entry) for name, entry in raw_files.items()}
    except TypeError as exc:
        msg = f"{MANIFEST} is malformed: {exc}"
        raise DemoPkiError(msg, file=manifest_file, fix=_fix_regenerate(directory)) from exc
    # A PKI written before the server root's key was kept is still complete; only --loose
    # needs that key, and says so.
    unlisted = [name for name in FILE_NAMES if name not in files and name != SERVER_ROOT_CA_KEY]
    missing = [name for name in files if not (directory / name).is_file()]
    if unlisted or missing:
        msg = f"demo PKI is incomplete: missing {', '.join(sorted({*unlisted, *missing}))}"
        raise DemoPkiError(
            msg,
            file=str(directory),
            fix=_fix_regenerate(directory),
        )

    password = (directory / SERVER_PFX_PASSWORD).read_text(encoding="utf-8")
    pfx = (directory / SERVER_PFX).read_bytes()
    try:
        _key, server_cert, _extra = load_pkcs12(pfx, password.encode("utf-8"))
        client_cert = x509.load_pem_x509_certificate((directory / CLIENT_CERT).read_bytes())
    except (ValueError, Pkcs12TooCostly) as exc:
        msg = f"cannot read the server PFX or the client certificate: {exc}"
        raise DemoPkiError(
            msg,
            file=str(directory),
            fix=_fix_regenerate(directory),
        ) from exc
    if server_cert is None:
        msg = f"{SERVER_PFX} holds no certificate"
        raise DemoPkiError(
            msg,
            file=str(directory),
            fix=_fix_regenerate(directory),
        )
    _check_validity(directory, SERVER_PFX, server_cert, moment)
    _check_validity(directory, CLIENT_CERT, client_cert, moment)

    return DemoPki(
        directory=directory,
        key_type=key_type,
        created=created,
        files=files,
        server_pfx=pfx,
        server_pfx_password=password,
        trusted_client_ca_pem=(directory / TRUSTED_CLIENT_CA_CHAIN).read_bytes(),
    )


#: One DNS label: letters, digits and hyphens, not at either end (RFC 1123), at most 63.
_DNS_LABEL: Final = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def check_server_names(names: Sequence[str]) -> tuple[str, ...]:
    """``--server-name`` values as the certificate will carry them; each must be a DNS name
    (``*.`` allowed as the first label) or an IP address.

    Raises:
        DemoPkiError: a value is neither, naming the flag and the fix.
    """
    checked: list[str] = []
    for raw in names:
        name = raw.strip().rstrip(".")
        try:
            ipaddress.ip_address(name)
        except ValueError:
            labels = name.split(".")
            if labels and labels[0] == "*":
                labels = labels[1:]
            if not labels or len(name) > 253 or not all(_DNS_LABEL.fullmatch(x) for x in labels):
                msg = f"--server-name {raw!r} is not a DNS name or an IP address"
                raise DemoPkiError(
                    msg,
                    fix="pass the name clients dial, e.g. --server-name appgw-emulator "
                    "(a compose service) or --server-name 10.0.0.5",
                ) from None
        checked.append(name)
    return tuple(checked)


def missing_server_names(pki: DemoPki, names: Sequence[str]) -> list[str]:
    """The names of ``names`` that the PKI's listener certificate does not carry."""
    _key, cert, _chain = load_pkcs12(pki.server_pfx, pki.server_pfx_password.encode())
    if cert is None:  # pragma: no cover - write_demo_pki always stores the leaf
        return list(names)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    carried = {str(v).lower() for v in san.get_values_for_type(x509.DNSName)}
    carried |= {str(v) for v in san.get_values_for_type(x509.IPAddress)}
    return [n for n in names if n.lower() not in carried and str(_ip_or_none(n)) not in carried]


def _ip_or_none(text: str) -> object:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def ensure_demo_pki(
    directory: Path,
    *,
    key_type: str = "ec",
    now: datetime.datetime | None = None,
    server_names: Sequence[str] = (),
) -> tuple[DemoPki, bool]:
    """Reuse the demo PKI in ``directory``, or create it when the directory is missing or empty.

    "Empty" ignores hidden files and a README (see :func:`_content_names`).

    Returns:
        The PKI and ``True`` when it was created now.

    Raises:
        DemoPkiError: the directory holds anything else (foreign files, an incomplete or stale
            PKI); it is never overwritten here.
    """
    if not directory.exists() or (directory.is_dir() and not _content_names(directory)):
        pki = write_demo_pki(directory, key_type=key_type, now=now, server_names=server_names)
        return pki, True
    return load_demo_pki(directory, now=now), False
