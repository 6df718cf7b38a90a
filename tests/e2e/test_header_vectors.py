"""The header vectors are what a backend behind the running gateway really receives, and
``decode-header`` parses every one of them to the vector's expected result."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import pytest
import trio

from emulator.cli.main import main
from emulator.reports.header_decoding import decode_header
from tests.helpers.http import https_request
from tests.helpers.pki import PkiBundle, template_parameters
from tests.helpers.stack import start_stack

EXAMPLE = Path(__file__).parents[2] / "examples" / "mtls_api" / "gateway.json"
#: The example's rewrite rule: header name → the server variable it carries.
HEADERS = {
    "X-Client-Cert": "client_certificate",
    "X-Client-Cert-Subject": "client_certificate_subject",
    "X-Client-Cert-Issuer": "client_certificate_issuer",
    "X-Client-Cert-Serial": "client_certificate_serial",
    "X-Client-Cert-Fingerprint": "client_certificate_fingerprint",
    "X-Client-Cert-Start-Date": "client_certificate_start_date",
    "X-Client-Cert-End-Date": "client_certificate_end_date",
}


@pytest.fixture
def vectors_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    directory = tmp_path / "vectors"
    assert main(["vectors", str(directory)]) == 0
    assert f"the vectors: {directory / 'vectors.json'}" in capsys.readouterr().out
    return directory


def _vectors(directory: Path) -> list[dict[str, object]]:
    document = json.loads((directory / "vectors.json").read_text(encoding="utf-8"))
    assert document["format"] == "appgw-emulator-header-vectors"
    vectors: list[dict[str, object]] = document["vectors"]
    return vectors


async def test_vectors_match_what_the_backend_receives(
    vectors_dir: Path, pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path
) -> None:
    stack = await start_stack(
        nursery,
        EXAMPLE,
        template_parameters(pki),
        tmp_path=tmp_path,
        listen={443: 0, 444: 0},
        backend_pool="orders-api",
    )
    vectors = _vectors(vectors_dir)
    names = {str(v["name"]) for v in vectors}
    assert {"unicode-dn", "multi-valued-rdn", "long-serial", "rsa-2048", "ec-p256"} <= names
    for vector in vectors:
        files = vector["files"]
        assert isinstance(files, dict)
        ctx = ssl.create_default_context(cadata=pki.server_root.cert_pem.decode())
        ctx.load_cert_chain(vectors_dir / files["certificate"], vectors_dir / files["key"])
        reply = await https_request(stack.port("passthrough-listener"), ctx, "/")
        assert reply.status == 200
        received = dict(stack.recorded[-1].headers)
        variables = vector["serverVariables"]
        assert isinstance(variables, dict)
        for header, variable in HEADERS.items():
            # HTTP drops a value's trailing white space (an escaped trailing space in a DN).
            assert received[header] == variables[variable].rstrip(" "), (vector["name"], header)


def test_decode_header_parses_every_vector_to_its_expected_result(vectors_dir: Path) -> None:
    for vector in _vectors(vectors_dir):
        variables = vector["serverVariables"]
        expected = vector["expected"]
        assert isinstance(variables, dict)
        assert isinstance(expected, dict)
        certificate = decode_header(variables["client_certificate"])
        assert certificate.kind == "client_certificate"
        assert certificate.parsed == expected, vector["name"]
        for variable, key in (
            ("client_certificate_subject", "subjectRdns"),
            ("client_certificate_issuer", "issuerRdns"),
        ):
            # As the backend receives it: trailing white space trimmed by HTTP.
            dn = decode_header(variables[variable].rstrip(" "))
            assert dn.parsed == {"rdns": expected[key]}, (vector["name"], variable)
        serial = decode_header(variables["client_certificate_serial"])
        assert serial.parsed == expected["serialNumber"]
        start = decode_header(variables["client_certificate_start_date"])
        assert start.parsed == {"utc": expected["notBefore"]}


def test_decode_header_cli_reads_stdin_and_prints_json(
    vectors_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    unicode = next(v for v in _vectors(vectors_dir) if v["name"] == "unicode-dn")
    variables = unicode["serverVariables"]
    assert isinstance(variables, dict)
    monkeypatch.setattr("sys.stdin", io.StringIO(variables["client_certificate_subject"] + "\n"))
    assert main(["decode-header", "-", "--output", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["kind"] == "dn"
    assert document["parsed"]["rdns"][0] == [{"type": "CN", "value": "Jürgen Müller"}]
    assert main(["decode-header", "not a header"]) == 1
    assert "error: expected URL-encoded PEM" in capsys.readouterr().out
