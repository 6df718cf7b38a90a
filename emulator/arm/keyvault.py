"""Key Vault certificates, supplied locally: ``--certificate NAME=FILE`` and ``--loose``.

A gateway may take a listener certificate (``sslCertificates[].properties.keyVaultSecretId``)
or a backend trusted root (``trustedRootCertificates[].properties.keyVaultSecretId``) from Key
Vault. The emulator runs offline, so the user supplies the file instead. This module rewrites
the gateway resource before the model reads it: each supplied or Key Vault item gets the
ARM-shaped ``data`` (base64) and ``password`` Azure would have read from the vault, and loses
its ``keyVaultSecretId``. The model then checks it exactly like an inline upload.

It works on the ARM-shaped resource (a plain mapping), so every front end that produces one
(an ARM template, a Bicep file compiled to ARM, a Terraform configuration translated to ARM)
calls the same :func:`apply_certificates`.

What ``loose`` changes here: a *listener* certificate from Key Vault without ``--certificate``
becomes a development certificate for the host names of the listeners that use it, minted by
the caller's ``mint`` (the CLI issues it from the demo PKI's server CA). A *trusted root* from
Key Vault without ``--certificate`` stays an error even then: minting a root the real backend
does not chain to would prove nothing.

No file is read here: the caller passes file contents, so this stays plain synchronous code.
"""

from __future__ import annotations

import base64
import copy
import difflib
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    load_pem_private_key,
    pkcs12,
)

from emulator.arm.props import id_leaf
from emulator.errors import EmulatorError, InvalidConfiguration, TemplateError, UnsupportedFeature

__all__ = [
    "KEY_VAULT_CODE",
    "CertificateSubstitution",
    "Minter",
    "SuppliedCertificate",
    "apply_certificates",
    "default_host_names",
    "pem_to_pfx",
]

#: The code of "a Key Vault item without a local file": the feature exists in Azure and is
#: not reproduced offline, so it is the not-emulated code.
KEY_VAULT_CODE: Final = "EmulatorUnsupportedFeature"
_SUPPLY_CODE: Final = "EmulatorCertificateOptionInvalid"
#: Host names of a development certificate for a listener without host names (a basic
#: listener): what a local client dials.
_LOCAL_HOST_NAMES: Final = ("localhost", "127.0.0.1", "::1")
#: Random bytes of the password protecting a PFX built from a PEM (never shown to anyone).
_PASSWORD_BYTES: Final = 18

#: ``mint(certificate name, host names) -> (pfx bytes, password)``.
Minter = Callable[[str, tuple[str, ...]], tuple[bytes, str]]


@dataclass(frozen=True, slots=True)
class SuppliedCertificate:
    """One ``--certificate NAME=FILE`` (with its ``--certificate-password``), file already read.

    ``file`` is the path as given, for messages; ``data`` the file's bytes.
    """

    name: str
    file: str
    data: bytes
    password: str | None = None


@dataclass(frozen=True, slots=True)
class CertificateSubstitution:
    """The gateway resource with local certificate material, and one warning per substitution."""

    resource: Mapping[str, Any]
    warnings: tuple[str, ...]


def default_host_names() -> tuple[str, ...]:
    """Host names of a minted certificate for a basic listener (no host name of its own)."""
    return _LOCAL_HOST_NAMES


def pem_to_pfx(pem: bytes, *, name: str, file: str) -> tuple[bytes, str]:
    """A PEM holding a certificate (+ chain) and its private key, as a PFX with a new password.

    The model opens listener certificates as PFX only (as Azure does); a PEM with its key is
    the other form ``az keyvault secret download`` gives, so it is converted here.
    """
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        certs = []
    key_block = _pem_key_block(pem)
    if not certs or key_block is None:
        missing = "a certificate" if not certs else "its private key"
        raise TemplateError(
            f"--certificate {name}={file}: the PEM holds no {missing}",
            file=file,
            fix="pass a .pfx (with --certificate-password), or a PEM holding the certificate, "
            "its chain and its unencrypted private key",
            code=_SUPPLY_CODE,
        )
    try:
        key = load_pem_private_key(key_block, password=None)
    except (ValueError, TypeError) as exc:
        raise TemplateError(
            f"--certificate {name}={file}: the private key does not load ({exc})",
            file=file,
            fix="use an unencrypted PEM key (`openssl pkey -in key.pem -out plain.pem`), or a .pfx",
            code=_SUPPLY_CODE,
        ) from exc
    password = secrets.token_urlsafe(_PASSWORD_BYTES)
    pfx = pkcs12.serialize_key_and_certificates(
        name.encode(),
        key,  # type: ignore[arg-type]  # load_pem_private_key's union includes DH/DSA keys
        certs[0],
        certs[1:] or None,
        BestAvailableEncryption(password.encode()),
    )
    return pfx, password


def _pem_key_block(pem: bytes) -> bytes | None:
    for label in (b"PRIVATE KEY", b"EC PRIVATE KEY", b"RSA PRIVATE KEY"):
        begin = pem.find(b"-----BEGIN " + label + b"-----")
        if begin >= 0:
            end_marker = b"-----END " + label + b"-----"
            end = pem.find(end_marker, begin)
            if end >= 0:
                return pem[begin : end + len(end_marker)]
    return None


def _ci(obj: Mapping[str, Any], key: str) -> tuple[str | None, Any]:
    for k, v in obj.items():
        if isinstance(k, str) and k.lower() == key.lower():
            return k, v
    return None, None


def _items(properties: Mapping[str, Any], collection: str) -> list[dict[str, Any]]:
    _key, value = _ci(properties, collection)
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]


def _listener_hosts(properties: Mapping[str, Any], cert_name: str) -> tuple[str, ...]:
    """Host names of every listener whose ``sslCertificate`` is ``cert_name``, in order."""
    hosts: list[str] = []
    for listener in _items(properties, "httpListeners"):
        inner = _ci(listener, "properties")[1]
        if not isinstance(inner, dict):
            continue
        ref = _ci(inner, "sslCertificate")[1]
        ref_id = _ci(ref, "id")[1] if isinstance(ref, dict) else None
        if not isinstance(ref_id, str) or id_leaf(ref_id)[1].lower() != cert_name.lower():
            continue
        single = _ci(inner, "hostName")[1]
        many = _ci(inner, "hostNames")[1]
        found = ([single] if isinstance(single, str) and single else []) + (
            [h for h in many if isinstance(h, str)] if isinstance(many, list) else []
        )
        hosts += [h for h in found if h not in hosts]
        if not found:
            hosts += [h for h in _LOCAL_HOST_NAMES if h not in hosts]
    return tuple(hosts) or _LOCAL_HOST_NAMES


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name.lower(), [k.lower() for k in known], n=1, cutoff=0.6)
    if not close:
        return ""
    return f" (did you mean '{next(k for k in known if k.lower() == close[0])}'?)"


def apply_certificates(
    resource: Mapping[str, Any],
    supplied: Mapping[str, SuppliedCertificate],
    *,
    loose: bool = False,
    mint: Minter | None = None,
    file: str | None = None,
    json_path: str = "$",
) -> CertificateSubstitution:
    """Give every Key Vault certificate of ``resource`` local material; returns a new resource.

    Args:
        resource: one ARM-shaped ``Microsoft.Network/applicationGateways`` resource (evaluated:
            a mapping with ``properties.sslCertificates`` etc.). It is not modified.
        supplied: ``--certificate`` files by item name (case-insensitive). A supplied item also
            replaces inline ``data`` (a local override of what the template holds).
        loose: mint a development certificate for a listener certificate from Key Vault that
            has no supplied file (needs ``mint``).
        mint: issues ``(pfx, password)`` for a certificate name and host names.
        file, json_path: where ``resource`` is, for messages.

    Raises:
        TemplateError / InvalidConfiguration: every problem at once, each naming the item and
            the fix (a Key Vault item without a file, a ``--certificate`` naming no item).
    """
    out = copy.deepcopy(dict(resource))
    warnings: list[str] = []
    problems: list[EmulatorError] = []
    used: set[str] = set()
    by_lower = {name.lower(): cert for name, cert in supplied.items()}
    props_key, properties = _ci(out, "properties")
    if not isinstance(properties, dict):
        properties = {}
    known: list[str] = []
    for collection, listener_cert in (
        ("sslCertificates", True),
        ("trustedRootCertificates", False),
    ):
        coll_key = _ci(properties, collection)[0] or collection
        for index, item in enumerate(_items(properties, collection)):
            name = _ci(item, "name")[1]
            if not isinstance(name, str):
                continue
            known.append(name)
            inner_key, inner = _ci(item, "properties")
            if not isinstance(inner, dict):
                continue
            base = f"{json_path}.{props_key or 'properties'}.{coll_key}[{index}].{inner_key}"
            kv_key, kv_id = _ci(inner, "keyVaultSecretId")
            from_vault = isinstance(kv_id, str) and bool(kv_id)
            local = by_lower.get(name.lower())
            if local is not None:
                used.add(name.lower())
                try:
                    _put(inner, local, listener_cert=listener_cert)
                except EmulatorError as exc:
                    problems.append(exc)
                    continue
                if kv_key is not None:
                    del inner[kv_key]
                source = "Key Vault secret" if from_vault else "inline data"
                warnings.append(
                    f"{collection} '{name}': {source} replaced by the local file {local.file} "
                    "(--certificate)"
                )
                continue
            if not from_vault:
                continue
            flag = f"--certificate {name}=FILE"
            if listener_cert and loose and mint is not None:
                hosts = _listener_hosts(properties, name)
                pfx, password = mint(name, hosts)
                _set_ci(inner, "data", base64.b64encode(pfx).decode())
                _set_ci(inner, "password", password)
                assert kv_key is not None
                del inner[kv_key]
                warnings.append(
                    f"sslCertificates '{name}': Key Vault secret replaced by a development "
                    f"certificate for {', '.join(hosts)} issued by the demo PKI's server CA "
                    f"(--loose; pass {flag} to use the real one)"
                )
                continue
            if listener_cert:
                fix = (
                    f"pass the certificate: {flag} (a .pfx with --certificate-password "
                    f"{name}=PASSWORD, or a PEM with its key), or run with --loose to use a "
                    "development certificate for the listener's host names"
                )
            else:
                fix = (
                    f"pass the backend's root CA certificate: {flag} (PEM or .cer); --loose "
                    "cannot stand in for it, since a minted root would not match the real backend"
                )
            # Not emulated, yet an error even under --loose: ``loose`` was handled above.
            problems.append(
                UnsupportedFeature(
                    f"keyVaultSecretId cannot be read offline: {collection} '{name}' comes from "
                    f"Key Vault ({kv_id})",
                    file=file,
                    path=f"{base}.{kv_key}",
                    fix=fix,
                    code=KEY_VAULT_CODE,
                )
            )
    for lowered, cert in by_lower.items():
        if lowered not in used:
            listing = ", ".join(known) or "none"
            problems.append(
                TemplateError(
                    f"--certificate {cert.name}: the gateway has no sslCertificates or "
                    f"trustedRootCertificates item of that name{_did_you_mean(cert.name, known)}",
                    file=file,
                    fix=f"name one of the gateway's certificates (existing: {listing})",
                    code=_SUPPLY_CODE,
                )
            )
    if problems:
        if len(problems) == 1:
            raise problems[0]
        raise InvalidConfiguration(problems)
    return CertificateSubstitution(resource=out, warnings=tuple(warnings))


def _set_ci(obj: dict[str, Any], key: str, value: Any) -> None:
    existing = _ci(obj, key)[0]
    obj[existing or key] = value


def _put(inner: dict[str, Any], local: SuppliedCertificate, *, listener_cert: bool) -> None:
    """Write the supplied file into ``inner`` as ARM's ``data`` (+ ``password``)."""
    data = local.data
    password = local.password
    if listener_cert and b"-----BEGIN" in data:
        if password is not None:
            raise TemplateError(
                f"--certificate-password {local.name}: {local.file} is a PEM, which has no "
                "password here",
                file=local.file,
                fix="drop --certificate-password, or pass the .pfx it belongs to",
                code=_SUPPLY_CODE,
            )
        data, password = pem_to_pfx(data, name=local.name, file=local.file)
    _set_ci(inner, "data", base64.b64encode(data).decode())
    if listener_cert:
        _set_ci(inner, "password", password or "")
    elif password is not None:
        raise TemplateError(
            f"--certificate-password {local.name}: a trusted root certificate has no password",
            file=local.file,
            fix="drop --certificate-password for it",
            code=_SUPPLY_CODE,
        )
