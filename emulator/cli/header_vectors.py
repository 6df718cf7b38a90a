"""``appgw-emulator vectors DIR``: test vectors for anyone's certificate header decoder.

For a set of certificates chosen to break naive decoders (Unicode and multi-valued DNs, escaped
characters, long and short serials, EC and RSA keys) it writes, into ``DIR``:

* ``vectors.json``: per certificate, the value of every certificate server variable exactly as
  the gateway forwards it (computed by the code the emulated gateway itself uses,
  :class:`emulator.core.tls.certinfo.ClientCertInfo`; the test suite checks them against what a
  backend behind the running gateway receives), and the parse a correct decoder must produce
  (subject and issuer as RDNs with decoded values, serial as hex and decimal, validity in ISO
  8601, fingerprints, key type);
* ``NAME.pem`` / ``NAME.key``: each certificate and its key, to replay through a real gateway;
* ``ca.pem``: the CA that issued them (upload it as a trusted client CA for Strict).

The dates are fixed (single-digit days show OpenSSL's space padding); keys and serials of the
random cases are new on every run, so the file is regenerated, not committed.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from emulator.core.tls.certinfo import ClientCertInfo
from emulator.errors import EmulatorError
from emulator.pki import CA, PrivateKey
from emulator.reports.header_decoding import certificate_facts

__all__ = ["VECTOR_SPECS", "VectorsError", "build_vectors", "write_vectors"]

FORMAT: Final = "appgw-emulator-header-vectors"
VERSION: Final = 1
VECTORS_FILE: Final = "vectors.json"
CA_FILE: Final = "ca.pem"
#: Fixed validity: 5 January shows the padded day ("Jan  5"), the end is far enough out.
NOT_BEFORE: Final = datetime.datetime(2025, 1, 5, 9, 5, 0, tzinfo=datetime.UTC)
NOT_AFTER: Final = datetime.datetime(2045, 1, 6, 13, 41, 9, tzinfo=datetime.UTC)
_RSA_BITS: Final = 2048


class VectorsError(EmulatorError):
    code = "EmulatorVectorsUnwritable"


def _attr(oid: x509.ObjectIdentifier, value: str) -> x509.NameAttribute[str]:
    return x509.NameAttribute(oid, value)


@dataclass(frozen=True, slots=True)
class VectorSpec:
    name: str
    description: str
    subject: Callable[[], x509.Name]
    key: Callable[[], PrivateKey]
    serial: int | None = None


def _ec(curve: ec.EllipticCurve) -> Callable[[], PrivateKey]:
    return lambda: ec.generate_private_key(curve)


def _rsa() -> PrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS)


def _rdns(*rdns: Sequence[x509.NameAttribute[str]]) -> Callable[[], x509.Name]:
    return lambda: x509.Name([x509.RelativeDistinguishedName(list(rdn)) for rdn in rdns])


VECTOR_SPECS: Final = (
    VectorSpec(
        "ec-p256",
        "EC P-256 key, plain ASCII DN",
        _rdns(
            [_attr(NameOID.COUNTRY_NAME, "US")],
            [_attr(NameOID.ORGANIZATION_NAME, "Contoso")],
            [_attr(NameOID.COMMON_NAME, "vector-ec-p256")],
        ),
        _ec(ec.SECP256R1()),
    ),
    VectorSpec(
        "ec-p384",
        "EC P-384 key",
        _rdns([_attr(NameOID.COMMON_NAME, "vector-ec-p384")]),
        _ec(ec.SECP384R1()),
    ),
    VectorSpec(
        "rsa-2048",
        "RSA 2048 key, with an OU",
        _rdns(
            [_attr(NameOID.ORGANIZATION_NAME, "Contoso")],
            [_attr(NameOID.ORGANIZATIONAL_UNIT_NAME, "Payments")],
            [_attr(NameOID.COMMON_NAME, "vector-rsa-2048")],
        ),
        _rsa,
    ),
    VectorSpec(
        "unicode-dn",
        "UTF-8 values: the subject header carries them as \\XX bytes",
        _rdns(
            [_attr(NameOID.LOCALITY_NAME, "東京")],
            [_attr(NameOID.ORGANIZATION_NAME, "Société Générale")],
            [_attr(NameOID.COMMON_NAME, "Jürgen Müller")],
        ),
        _ec(ec.SECP256R1()),
    ),
    VectorSpec(
        "multi-valued-rdn",
        "an RDN with two attributes (UID + CN, joined by '+') and an emailAddress",
        _rdns(
            [_attr(NameOID.ORGANIZATION_NAME, "Contoso")],
            [_attr(NameOID.USER_ID, "42"), _attr(NameOID.COMMON_NAME, "Jane Doe")],
            [_attr(NameOID.EMAIL_ADDRESS, "jane@contoso.example")],
        ),
        _ec(ec.SECP256R1()),
    ),
    VectorSpec(
        "escaped-characters",
        'values with , + " \\ < > ; a leading # and a trailing space, which RFC 2253 escapes; '
        "HTTP trims the escaped trailing space off the header, leaving a lone backslash",
        _rdns(
            [_attr(NameOID.ORGANIZATION_NAME, "#1 Widgets; Ltd ")],
            [_attr(NameOID.COMMON_NAME, 'Doe, John "JD" <jd+ops@x> \\ back')],
        ),
        _ec(ec.SECP256R1()),
    ),
    VectorSpec(
        "long-serial",
        "a 20-byte serial (the RFC 5280 maximum)",
        _rdns([_attr(NameOID.COMMON_NAME, "vector-long-serial")]),
        _ec(ec.SECP256R1()),
        serial=(1 << 158) + 0x0123456789ABCDEF,
    ),
    VectorSpec(
        "serial-high-bit",
        "serial 0x80: its top bit is set, DER adds a sign byte, the header does not show it",
        _rdns([_attr(NameOID.COMMON_NAME, "vector-serial-80")]),
        _ec(ec.SECP256R1()),
        serial=0x80,
    ),
    VectorSpec(
        "leading-zero-nibble",
        "serial 0x0ABC: printed with its leading zero (0ABC)",
        _rdns([_attr(NameOID.COMMON_NAME, "vector-serial-0abc")]),
        _rsa,
        serial=0x0ABC,
    ),
)


def _issue(ca: CA, spec: VectorSpec) -> tuple[x509.Certificate, PrivateKey]:
    key = spec.key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(spec.subject())
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(spec.serial if spec.serial is not None else x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    return builder.sign(ca.key, hashes.SHA256()), key


@dataclass(frozen=True, slots=True)
class Vector:
    spec: VectorSpec
    cert: x509.Certificate
    key: PrivateKey

    def to_json(self) -> dict[str, Any]:
        # Load the certificate back so the expected parse reads the DER, as any decoder does.
        reread = x509.load_pem_x509_certificate(self.cert.public_bytes(serialization.Encoding.PEM))
        info = ClientCertInfo.from_certificates(reread)
        return {
            "name": self.spec.name,
            "description": self.spec.description,
            "files": {"certificate": f"{self.spec.name}.pem", "key": f"{self.spec.name}.key"},
            "serverVariables": dict(sorted(info.server_variables().items())),
            "expected": certificate_facts(reread),
        }


def build_vectors() -> tuple[CA, list[Vector]]:
    ca = CA("appgw-emulator header vectors CA")
    vectors = []
    for spec in VECTOR_SPECS:
        cert, key = _issue(ca, spec)
        vectors.append(Vector(spec, cert, key))
    return ca, vectors


def document(ca: CA, vectors: Sequence[Vector]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "about": (
            "serverVariables: each certificate variable's value as App Gateway forwards it "
            "(a rewrite rule puts it in a header of your choice). expected: what a correct "
            "decoder reads. client_certificate is URL-encoded PEM: percent-decode it (never "
            "'+' as space), then parse the PEM. Subject/issuer RDNs are listed most specific "
            "first, as the DN headers print them."
        ),
        "ca": CA_FILE,
        "vectors": [vector.to_json() for vector in vectors],
    }


def write_vectors(directory: Path) -> list[Path]:
    """Write the vectors, the certificates, their keys and the CA into ``directory``.

    Raises:
        VectorsError: the directory cannot be created or written.
    """
    ca, vectors = build_vectors()
    written: list[Path] = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for vector in vectors:
            cert_path = directory / f"{vector.spec.name}.pem"
            key_path = directory / f"{vector.spec.name}.key"
            cert_path.write_bytes(vector.cert.public_bytes(serialization.Encoding.PEM))
            key_path.touch(mode=0o600)
            key_path.write_bytes(
                vector.key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            written += [cert_path, key_path]
        (directory / CA_FILE).write_bytes(ca.cert_pem)
        target = directory / VECTORS_FILE
        target.write_text(
            json.dumps(document(ca, vectors), indent=2, ensure_ascii=False) + "\n",
            encoding="utf-8",
        )
        written += [directory / CA_FILE, target]
    except OSError as exc:
        raise VectorsError(
            f"cannot write the vectors: {exc.strerror or exc}",
            file=str(directory),
            fix="pass a directory you can write to",
        ) from exc
    return written
