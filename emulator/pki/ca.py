"""A small test/demo PKI built with ``cryptography``, in the spirit of trustme.

Why it exists: mutual TLS needs at least two unrelated trust hierarchies (the client CA the gateway
trusts, and the CA that issued the gateway's own certificate) plus a set of deliberately broken
client certificates (expired, not yet valid, from an unrelated root, self-signed). Tests and the
``certs init`` command build all of them here, at run time, so no private key is ever committed.

One entry point, :class:`CA`, makes a self-signed root; chains grow from it::

    root = CA()
    issuing = root.intermediate("Issuing CA")
    client = issuing.issue_client("demo-client")     # IssuedCert: cert, key, chain
    server = CA("Server Root").issue_server("localhost", "127.0.0.1")

Private keys are generated fresh for every certificate and nothing is cached at module level, so
two tests never share a key by accident. EC P-256 is the default because generating it takes
microseconds; RSA 2048 is there for the tests that need the RSA code paths.

No file I/O happens here except the temporary directory :meth:`IssuedCert.configure_ssl_context`
needs, because the stdlib ``ssl`` module only loads certificates from paths.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import secrets
import ssl
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL

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

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

#: Accepted ``key_type`` values: EC P-256 (fast, the default) and RSA 2048 (the size Azure's
#: documentation uses in its OpenSSL walkthroughs).
KEY_TYPES: Final = ("ec", "rsa")
_RSA_KEY_BITS: Final = 2048
_RSA_PUBLIC_EXPONENT: Final = 65537

DEFAULT_ORGANIZATION: Final = "appgw-emulator"

#: CAs outlive every leaf they issue, so a regenerated leaf never outlives its issuer.
CA_VALIDITY: Final = datetime.timedelta(days=3650)
#: One year: long enough for a demo directory to stay usable, short enough to look real (public
#: CAs issue at most 398 days, and some clients reject longer server certificates).
LEAF_VALIDITY: Final = datetime.timedelta(days=365)
#: Certificates start an hour in the past so a peer whose clock is a little behind accepts them.
_CLOCK_SKEW_BACKDATE: Final = datetime.timedelta(hours=1)
#: ``expired=True`` / ``not_yet_valid=True`` leaves sit this far outside "now", so the verdict
#: does not depend on how long a test run takes.
_OUT_OF_VALIDITY_DAYS: Final = 30

#: PKCS#12 protection that OpenSSL 3 loads without the legacy provider (the old default,
#: 3DES + RC2-40, needs ``-legacy`` there); the KDF rounds are OpenSSL's own default.
_PFX_KDF_ROUNDS: Final = 2048


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _generate_key(key_type: str) -> PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(
            public_exponent=_RSA_PUBLIC_EXPONENT, key_size=_RSA_KEY_BITS
        )
    msg = f"key_type must be one of {', '.join(KEY_TYPES)}, not {key_type!r}"
    raise ValueError(msg)


def _random_serial() -> int:
    """A random positive 128-bit serial (RFC 5280 §4.1.2.2 allows up to 20 octets)."""
    return secrets.randbits(128) | 1


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _ski(cert: x509.Certificate) -> x509.SubjectKeyIdentifier:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value


def _leaf_key_usage(key: PrivateKey) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,  # signs the TLS handshake (CertificateVerify)
        content_commitment=False,
        # RSA key exchange (TLS 1.2 without ECDHE) encrypts the premaster secret to this key.
        key_encipherment=isinstance(key, rsa.RSAPrivateKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


_CA_KEY_USAGE: Final = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,  # signs certificates
    crl_sign=True,  # signs revocation lists
    encipher_only=False,
    decipher_only=False,
)


def _identity(value: str) -> x509.GeneralName:
    """A SAN entry: an IP address when ``value`` parses as one, else a DNS name."""
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


#: Letters, digits, hyphens and dots: a CN that can double as a SAN DNS name as it is.
_HOST_NAME_LIKE: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def _client_sans(common_name: str, explicit: Sequence[str] | None) -> Sequence[str]:
    if explicit is not None:
        return explicit
    return (common_name,) if _HOST_NAME_LIKE.fullmatch(common_name) else ()


def _validity(
    not_before: datetime.datetime | None,
    not_after: datetime.datetime | None,
    lifetime: datetime.timedelta,
) -> tuple[datetime.datetime, datetime.datetime]:
    now = _utcnow()
    start = not_before if not_before is not None else now - _CLOCK_SKEW_BACKDATE
    end = not_after if not_after is not None else now + lifetime
    if end <= start:
        msg = f"not_after ({end.isoformat()}) must be after not_before ({start.isoformat()})"
        raise ValueError(msg)
    return start, end


class CA:
    """A certificate authority: a self-signed root, or an intermediate made by :meth:`intermediate`.

    ``CA(...)`` always makes a root; intermediates have no public constructor, they are grown from
    their parent so the chain (``parent``) is always known.
    """

    __slots__ = ("_cert", "_chain_above", "_key", "_organization", "_parent", "_path_length")

    def __init__(
        self,
        common_name: str = "appgw-emulator Test Root CA",
        *,
        key_type: str = "ec",
        organization: str = DEFAULT_ORGANIZATION,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> None:
        key = _generate_key(key_type)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        start, end = _validity(not_before, not_after, CA_VALIDITY)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(_random_serial())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_CA_KEY_USAGE, critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        self._set(cert=cert, key=key, organization=organization, parent=None, path_length=None)

    def _set(
        self,
        *,
        cert: x509.Certificate,
        key: PrivateKey,
        organization: str,
        parent: CA | None,
        path_length: int | None,
    ) -> None:
        self._cert = cert
        self._key = key
        self._organization = organization
        self._parent = parent
        self._path_length = path_length
        self._chain_above: tuple[x509.Certificate, ...] = ()

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> CA:
        """A CA someone already holds: the certificate of ``cert_pem`` that ``key_pem`` belongs to.

        The file may be a whole chain (root + intermediates, in any order); the certificates
        above the key's one, found by issuer links, become the chain it sends (intermediates
        only: a root is left out of :attr:`chain`), so leaves issued here carry what a peer
        must receive. Used by ``verify --client-ca/--client-ca-key`` to mint test clients
        from the user's own CA.

        Raises:
            ValueError: no certificate, an unreadable or encrypted key, a key that does not
                belong to the certificate, or a certificate that is not a CA.
        """
        certificates = x509.load_pem_x509_certificates(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            msg = "the CA key must be an RSA or EC private key"
            raise TypeError(msg)
        cert = next((c for c in certificates if c.public_key() == key.public_key()), None)
        if cert is None:
            names = "; ".join(c.subject.rfc4514_string() for c in certificates)
            msg = f"the key belongs to none of the certificates in the file ({names})"
            raise ValueError(msg)
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            msg = f"{cert.subject.rfc4514_string()} is not a CA certificate (basicConstraints)"
            raise ValueError(msg)
        organizations = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        ca = cls.__new__(cls)
        ca._set(
            cert=cert,
            key=key,
            organization=str(organizations[0].value) if organizations else DEFAULT_ORGANIZATION,
            parent=None,
            path_length=constraints.path_length,
        )
        if cert.issuer != cert.subject:
            above: list[x509.Certificate] = [cert]
            current = cert
            while True:
                parent = next(
                    (c for c in certificates if c.subject == current.issuer and c not in above),
                    None,
                )
                if parent is None or parent.issuer == parent.subject:
                    break
                above.append(parent)
                current = parent
            ca._chain_above = tuple(above)
        return ca

    @property
    def cert(self) -> x509.Certificate:
        return self._cert

    @property
    def key(self) -> PrivateKey:
        return self._key

    @property
    def key_type(self) -> str:
        return "rsa" if isinstance(self._key, rsa.RSAPrivateKey) else "ec"

    @property
    def cert_pem(self) -> bytes:
        return _cert_pem(self._cert)

    @property
    def parent(self) -> CA | None:
        """The issuing CA, or ``None`` for a root."""
        return self._parent

    @property
    def root(self) -> CA:
        """The self-signed root at the top of this CA's chain (``self`` for a root)."""
        ca = self
        while ca._parent is not None:
            ca = ca._parent
        return ca

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """This CA's certificate and the intermediates above it, nearest first, without the root.

        Exactly what a leaf issued by this CA must be sent with; empty for a root.
        """
        certs: list[x509.Certificate] = []
        ca: CA | None = self
        while ca is not None and ca._parent is not None:
            certs.append(ca._cert)
            ca = ca._parent
        if ca is not None and ca._chain_above:
            certs.extend(ca._chain_above)
        return tuple(certs)

    def configure_trust(self, ctx: ssl.SSLContext) -> None:
        """Make a stdlib ``ssl`` context trust this CA (``load_verify_locations`` from memory)."""
        ctx.load_verify_locations(cadata=self.cert_pem.decode("ascii"))

    def intermediate(
        self,
        common_name: str,
        *,
        key_type: str | None = None,
        path_length: int | None = 0,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> CA:
        """Issue a subordinate CA signed by this one.

        ``path_length`` defaults to 0 (the intermediate may issue leaves only), the usual shape of
        an issuing CA; pass 1 or more to grow a deeper chain below it.

        Raises:
            ValueError: this CA's own path length forbids another CA below it.
        """
        if self._path_length == 0:
            issuer = self._cert.subject.rfc4514_string()
            msg = f"cannot create a CA below {issuer}: its path length is 0"
            raise ValueError(msg)
        key = _generate_key(key_type or self.key_type)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, self._organization),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        start, end = _validity(not_before, not_after, CA_VALIDITY)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(_random_serial())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(_CA_KEY_USAGE, critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(_ski(self._cert)),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        child = CA.__new__(CA)
        child._set(
            cert=cert,
            key=key,
            organization=self._organization,
            parent=self,
            path_length=path_length,
        )
        return child

    def _issue_leaf(
        self,
        *,
        subject: x509.Name,
        key_type: str | None,
        not_before: datetime.datetime,
        not_after: datetime.datetime,
        eku: Sequence[x509.ObjectIdentifier],
        sans: Sequence[x509.GeneralName] = (),
        ocsp_url: str | None = None,
    ) -> IssuedCert:
        key = _generate_key(key_type or self.key_type)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(_random_serial())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_leaf_key_usage(key), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(_ski(self._cert)),
                critical=False,
            )
        )
        if eku:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        if ocsp_url is not None:
            builder = builder.add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            AuthorityInformationAccessOID.OCSP,
                            x509.UniformResourceIdentifier(ocsp_url),
                        )
                    ]
                ),
                critical=False,
            )
        cert = builder.sign(self._key, hashes.SHA256())
        return IssuedCert(cert=cert, key=key, chain=self.chain)

    def issue_client(
        self,
        common_name: str,
        *,
        key_type: str | None = None,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
        expired: bool = False,
        not_yet_valid: bool = False,
        extra_name_attributes: Iterable[x509.NameAttribute[str]] = (),
        eku_client_auth: bool = True,
        ocsp_url: str | None = None,
        subject_alt_names: Sequence[str] | None = None,
    ) -> IssuedCert:
        """Issue a client (TLS clientAuth) leaf certificate signed by this CA.

        Args:
            common_name: the subject CN, which Azure shows in ``client_certificate_subject``.
            not_before, not_after: explicit validity; default one year from an hour ago.
            expired: validity ended yesterday (started 30 days ago); overrides the dates.
            not_yet_valid: validity starts in 30 days; overrides the dates.
            extra_name_attributes: subject attributes placed before the CN (``O``, ``OU``...).
            eku_client_auth: set False to issue a leaf without the clientAuth EKU.
            ocsp_url: adds an Authority Information Access OCSP entry.
            subject_alt_names: DNS names / IP addresses for a SAN extension. By default the CN
                when it looks like a host name (``demo-client``), else none. OpenSSL (and so
                the gateway) accepts a client leaf without SAN, but ``cryptography``'s
                ``ClientVerifier`` insists on one; pass ``()`` to get the bare OpenSSL case.
        """
        if expired and not_yet_valid:
            msg = "a certificate cannot be both expired and not yet valid"
            raise ValueError(msg)
        now = _utcnow()
        if expired:
            start = now - datetime.timedelta(days=_OUT_OF_VALIDITY_DAYS)
            end = now - datetime.timedelta(days=1)
        elif not_yet_valid:
            start = now + datetime.timedelta(days=_OUT_OF_VALIDITY_DAYS)
            end = start + LEAF_VALIDITY
        else:
            start, end = _validity(not_before, not_after, LEAF_VALIDITY)
        subject = x509.Name(
            [*extra_name_attributes, x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        )
        return self._issue_leaf(
            subject=subject,
            key_type=key_type,
            not_before=start,
            not_after=end,
            eku=[ExtendedKeyUsageOID.CLIENT_AUTH] if eku_client_auth else [],
            sans=[_identity(value) for value in _client_sans(common_name, subject_alt_names)],
            ocsp_url=ocsp_url,
        )

    def issue_server(
        self,
        *hostnames_or_ips: str,
        common_name: str | None = None,
        key_type: str | None = None,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> IssuedCert:
        """Issue a server (TLS serverAuth) leaf for the given DNS names and IP addresses.

        The CN defaults to the first identity; clients match on the SAN entries only (RFC 6125).
        """
        if not hostnames_or_ips:
            msg = "issue_server needs at least one hostname or IP address"
            raise ValueError(msg)
        start, end = _validity(not_before, not_after, LEAF_VALIDITY)
        subject = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, common_name or hostnames_or_ips[0])]
        )
        return self._issue_leaf(
            subject=subject,
            key_type=key_type,
            not_before=start,
            not_after=end,
            eku=[ExtendedKeyUsageOID.SERVER_AUTH],
            sans=[_identity(value) for value in hostnames_or_ips],
        )


def self_signed_client(
    common_name: str,
    *,
    key_type: str = "ec",
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> IssuedCert:
    """A self-signed leaf (CA:FALSE) with the clientAuth EKU: trusted by nobody, by design."""
    key = _generate_key(key_type)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start, end = _validity(not_before, not_after, LEAF_VALIDITY)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(_random_serial())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(key), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    sans = _client_sans(common_name, None)
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_identity(value) for value in sans]), critical=False
        )
    return IssuedCert(cert=builder.sign(key, hashes.SHA256()), key=key, chain=())


@dataclass(frozen=True, slots=True)
class IssuedCert:
    """A leaf certificate with its private key and the intermediates that issued it.

    ``chain`` holds the issuing intermediates, nearest first, up to but excluding the root: the
    certificates a peer must send beside its leaf. It is empty for a leaf signed by a root.
    """

    cert: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def cert_pem(self) -> bytes:
        return _cert_pem(self.cert)

    @property
    def key_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM."""
        return _key_pem(self.key)

    @property
    def chain_pem(self) -> bytes:
        """Leaf first, then the intermediates; never the root (a peer must already have it)."""
        return b"".join(_cert_pem(cert) for cert in (self.cert, *self.chain))

    def pfx(self, password: bytes | str | None) -> bytes:
        """PKCS#12 with the key, the leaf and the intermediates, like an Azure listener's PFX.

        Encrypted with PBES2/AES-256-CBC and a SHA-256 MAC, which OpenSSL 3 reads without the
        legacy provider; ``password=None`` gives an unencrypted PKCS#12.
        """
        name = self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        friendly = str(name[0].value).encode("utf-8") if name else None
        algorithm: serialization.KeySerializationEncryption
        if password is None:
            algorithm = serialization.NoEncryption()
        else:
            secret = password.encode("utf-8") if isinstance(password, str) else password
            algorithm = (
                serialization.PrivateFormat.PKCS12.encryption_builder()
                .kdf_rounds(_PFX_KDF_ROUNDS)
                .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
                .hmac_hash(hashes.SHA256())
                .build(secret)
            )
        return pkcs12.serialize_key_and_certificates(
            friendly, self.key, self.cert, list(self.chain) or None, algorithm
        )

    def configure_ssl_context(self, ctx: ssl.SSLContext) -> None:
        """Load this certificate, its intermediates and its key into a stdlib ``ssl`` context.

        ``SSLContext.load_cert_chain`` only reads files, so the PEMs go through a private
        temporary directory that is deleted before this returns.
        """
        with tempfile.TemporaryDirectory(prefix="appgw-emulator-cert-") as tmp:
            cert_path = Path(tmp, "chain.pem")
            key_path = Path(tmp, "key.pem")
            cert_path.write_bytes(self.chain_pem)
            key_path.touch(mode=0o600)
            key_path.write_bytes(self.key_pem)
            ctx.load_cert_chain(str(cert_path), str(key_path))

    def configure_openssl_context(self, ctx: SSL.Context) -> None:
        """Load this certificate, its intermediates and its key into a pyOpenSSL context."""
        ctx.use_certificate(self.cert)
        ctx.use_privatekey(self.key)
        for cert in self.chain:
            ctx.add_extra_chain_cert(cert)
        ctx.check_privatekey()


def ca_bundle_pem(*cas: CA) -> bytes:
    """Concatenate the CAs' certificates as PEM, in the order given (public certificates only)."""
    return b"".join(ca.cert_pem for ca in cas)
