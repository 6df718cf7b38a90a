"""Hostile input end to end (issue #15): bytes that cannot be header values, log injection,
inputs that would make the gateway or the command line work without bound.

Each test attacks the way a hostile client or a hostile file would: raw TLS on real sockets to
the demo gateway in front of the stub backend (which records the exact bytes it receives), or
the real command line in a subprocess.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from emulator.arm.bounded_json import MAX_JSON_DEPTH
from emulator.arm.demo_template import PASSTHROUGH_LISTENER, demo_template
from emulator.arm.expressions import MAX_EXPRESSION_DEPTH, MAX_VALUE_CHARS
from emulator.arm.pkcs12_bounds import MAX_PKCS12_ITERATIONS
from emulator.cli.main import main
from emulator.pki.demo import SERVER_PFX, TRUSTED_CLIENT_CA_CHAIN, DemoPki
from tests.helpers.dashboard import api, demo_https_get, running
from tests.helpers.http import (
    RAW_SOCKET_TIMEOUT_S,
    client_context,
    parse_responses,
    read_to_eof,
    tls_exchange,
)
from tests.helpers.logs import assert_no_traceback, logged
from tests.helpers.pki import PFX_PASSWORD, PkiBundle, template_parameters
from tests.helpers.processes import READY_LISTENER, READY_TIMEOUT_S, run_to_exit, started
from tests.helpers.stack import Stack, start_stack

pytestmark = pytest.mark.usefixtures("no_internal_errors")


# -- finding 7: server variables that cannot be header values as they are ---------------------

#: Headers filled from client-controlled server variables.
VARIABLE_HEADERS = {
    "X-Path": "{var_uri_path}",
    "X-User": "{var_client_user}",
    "X-Host": "{var_host}",
}


def variables_template() -> dict[str, Any]:
    """The demo gateway with one more rule copying client-controlled variables into headers."""
    template = copy.deepcopy(
        demo_template(
            strict_port=8443, passthrough_port=9443, backend_host="127.0.0.1", backend_port=1
        )
    )
    rule_set = template["resources"][0]["properties"]["rewriteRuleSets"][0]
    rule_set["properties"]["rewriteRules"].append(
        {
            "name": "client-variables",
            "ruleSequence": 200,
            "conditions": [],
            "actionSet": {
                "requestHeaderConfigurations": [
                    {"headerName": name, "headerValue": value}
                    for name, value in VARIABLE_HEADERS.items()
                ]
            },
        }
    )
    return template


@pytest.fixture
async def variables_stack(pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path) -> Stack:
    return await start_stack(
        nursery,
        variables_template(),
        template_parameters(pki),
        tmp_path=tmp_path,
        listen={8443: 0, 9443: 0},
        backend_pool="stub-backend",
    )


def _basic(user_and_password: bytes) -> bytes:
    return b"Authorization: Basic " + base64.b64encode(user_and_password) + b"\r\n"


#: target, extra header lines → the X-Path and X-User values the backend must receive, as the
#: bytes on the wire (the stub decodes them as Latin-1, byte for byte).
HOSTILE_VARIABLES: dict[str, tuple[str, bytes, bytes, bytes]] = {
    # A CR LF the client percent-encoded stays percent-encoded: it cannot start a header line.
    "crlf-in-path": (
        "/a%0d%0aX-Injected:%20yes",
        b"",
        b"/a%0D%0AX-Injected: yes",
        b"",
    ),
    # U+0100 in UTF-8 is not Latin-1: the two bytes the client sent go as they are.
    "utf8-beyond-latin1": ("/%C4%80", b"", b"/\xc4\x80", b""),
    # U+00FC is the two UTF-8 bytes the client sent, not the one Latin-1 byte for U+00FC.
    "utf8-in-latin1-range": ("/%C3%BC", b"", b"/\xc3\xbc", b""),
    # Bytes that are no UTF-8 at all are kept too.
    "invalid-utf8": ("/%FF%FE", b"", b"/\xff\xfe", b""),
    "nul-and-escape": ("/a%00b%1bc", b"", b"/a%00b%1Bc", b""),
    "crlf-in-basic-user": (
        "/",
        _basic(b"evil\r\nX-Injected: yes:password"),
        b"/",
        b"evil%0D%0AX-Injected",
    ),
    "utf8-basic-user": ("/", _basic("J\u00fcrgen:pw".encode()), b"/", "J\u00fcrgen".encode()),
}


@pytest.mark.parametrize("case", list(HOSTILE_VARIABLES), ids=list(HOSTILE_VARIABLES))
async def test_client_controlled_variables_reach_the_backend_as_safe_header_values(
    variables_stack: Stack, pki: PkiBundle, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="emulator")
    target, extra, path_bytes, user_bytes = HOSTILE_VARIABLES[case]
    request = (
        f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n".encode() + extra
    ) + b"\r\n"

    data = await trio.to_thread.run_sync(
        tls_exchange, variables_stack.port(PASSTHROUGH_LISTENER), client_context(pki), request
    )

    (reply,) = parse_responses(data)
    assert reply.status == 200, reply.body[:300]
    (recorded,) = variables_stack.recorded
    assert recorded.target == target
    assert recorded.header_values("X-Path") == (path_bytes.decode("latin-1"),)
    expected_user = (user_bytes.decode("latin-1"),) if user_bytes else ()
    assert recorded.header_values("X-User") == expected_user
    assert recorded.header_values("X-Injected") == ()
    (record,) = variables_stack.gateway.access_log
    assert record.httpStatus == 200
    assert record.originalRequestUriWithArgs == target
    assert logged(caplog, "Traceback") == []


# -- finding 8: run and up warn at start-up about forgeable certificate headers ---------------

#: ``validate``'s words for the demo gateway whose certificate rule has a condition.
FORGEABLE_WARNING = (
    "WARNING (listener strict-listener): a client can forge 'X-Client-Cert': rewrite rule "
    "'client-cert-headers' fills it from a client certificate variable only when its "
    "conditions match"
)


def conditional_cert_template() -> dict[str, Any]:
    """The demo gateway, but its certificate rule fills the headers only after SUCCESS."""
    template = copy.deepcopy(
        demo_template(
            strict_port=8443, passthrough_port=9443, backend_host="127.0.0.1", backend_port=1
        )
    )
    (rule,) = template["resources"][0]["properties"]["rewriteRuleSets"][0]["properties"][
        "rewriteRules"
    ]
    rule["conditions"] = [
        {"variable": "var_client_certificate_verification", "pattern": "^SUCCESS$"}
    ]
    return template


def _gateway_args(pki: PkiBundle, tmp_path: Path) -> list[str]:
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(conditional_cert_template()))
    return ["--template-file", str(path), "--parameters", *template_parameters(pki)]


def test_validate_prints_the_forgeable_header_warning(pki: PkiBundle, tmp_path: Path) -> None:
    result = run_to_exit(["validate", *_gateway_args(pki, tmp_path)], cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert FORGEABLE_WARNING in result.stdout


@pytest.mark.parametrize("strip", [False, True], ids=["default", "strip-client-cert-headers"])
def test_run_prints_the_forgeable_header_warning_at_start_up(
    pki: PkiBundle, tmp_path: Path, strip: bool
) -> None:
    args = [
        "run",
        *_gateway_args(pki, tmp_path),
        "--listen",
        "8443=0",
        "--listen",
        "9443=0",
        "--backend",
        "stub-backend=127.0.0.1:1",
    ]
    if strip:
        args.append("--strip-client-cert-headers")
    with started(args, cwd=tmp_path) as process:
        process.wait_for_stdout(READY_LISTENER)
        assert process.stop() == 0
    assert_no_traceback(process.stderr)
    warnings = [line for line in process.stderr_lines if line.startswith("WARNING")]
    if strip:
        # The flag removes the client's header before the conditional rule runs: no hole left.
        assert warnings == []
    else:
        assert [w for w in warnings if w.startswith(FORGEABLE_WARNING)] == [warnings[0]]
        assert any(
            line.startswith("  fix: add an unconditional rule") for line in process.stderr_lines
        )


# -- finding 13: log lines a client cannot forge ----------------------------------------------

#: A whole access line, after a line feed, in the SNI host name.
FORGED_LINE = 'emulator.access strict-listener 10.0.0.1:1 "GET /admin HTTP/1.1" 200 verify=SUCCESS'
#: What a log message may never carry raw.
CONTROL_CHARACTERS = frozenset(map(chr, [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]))


def host_named_template() -> dict[str, Any]:
    """The demo gateway whose Passthrough listener takes only ``localhost``: another Host gets
    the gateway's 404, and the log line names the Host the client sent."""
    template = copy.deepcopy(
        demo_template(
            strict_port=8443, passthrough_port=9443, backend_host="127.0.0.1", backend_port=1
        )
    )
    for listener in template["resources"][0]["properties"]["httpListeners"]:
        if listener["name"] == PASSTHROUGH_LISTENER:
            listener["properties"]["hostName"] = "localhost"
    return template


@pytest.fixture
async def host_named_stack(pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path) -> Stack:
    return await start_stack(
        nursery,
        host_named_template(),
        template_parameters(pki),
        tmp_path=tmp_path,
        listen={8443: 0, 9443: 0},
        backend_pool="stub-backend",
    )


def _exchange_with_sni(port: int, ctx: ssl.SSLContext, server_name: str, request: bytes) -> bytes:
    ctx.check_hostname = False
    with (
        socket.create_connection(("127.0.0.1", port), timeout=RAW_SOCKET_TIMEOUT_S) as raw,
        ctx.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        tls.sendall(request)
        return read_to_eof(tls)


def emulator_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("emulator")]


async def test_a_line_feed_in_the_sni_cannot_write_a_log_line(
    host_named_stack: Stack, pki: PkiBundle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="emulator")
    server_name = "localhost\n" + FORGED_LINE
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"

    data = await trio.to_thread.run_sync(
        _exchange_with_sni,
        host_named_stack.port(PASSTHROUGH_LISTENER),
        client_context(pki),
        server_name,
        request,
    )

    (reply,) = parse_responses(data)
    assert reply.status == 200
    messages = emulator_messages(caplog)
    assert [m for m in messages if CONTROL_CHARACTERS & set(m)] == []
    assert [m for m in messages if "sni=localhost\\x0aemulator.access" in m] != []


async def test_control_characters_in_a_header_value_are_escaped_in_the_log(
    host_named_stack: Stack, pki: PkiBundle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="emulator")
    # ESC [2J clears a terminal; the C1 CSI (0x9B) does the same on some.
    host = b"evil\x1b[2J\x9b2Jfake"
    request = b"GET / HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"

    data = await trio.to_thread.run_sync(
        tls_exchange, host_named_stack.port(PASSTHROUGH_LISTENER), client_context(pki), request
    )

    (reply,) = parse_responses(data)
    assert reply.status in (400, 404)  # no listener takes it (stricter Host checks: 400)
    assert host_named_stack.recorded == []
    messages = emulator_messages(caplog)
    assert [m for m in messages if CONTROL_CHARACTERS & set(m)] == []
    # The host name is lowercased before it is logged; the escapes stay visible.
    assert [m for m in messages if "evil\\x1b[2j\\x9b2jfake" in m.lower()] != []


# -- findings 11 and 15: hostile uploads to the dashboard's inspector --------------------------

#: A PFX bomb of the issue's size: 2^22 MAC iterations take seconds to verify (each opening).
BOMB_ITERATIONS = 2**22
#: The listener must answer within this while the inspector handles the bomb (a request takes
#: milliseconds; the old code froze the loop for several seconds). Generous: the machine is shared.
LIVE_LATENCY_BOUND_S = 1.5


def _der(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return bytes([tag, size]) + body
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + body


def _der_elements(data: bytes) -> list[bytes]:
    """The encoded elements of a DER SEQUENCE's content, each with its tag and length."""
    out, i = [], 0
    while i < len(data):
        start, size = i, data[i + 1]
        i += 2
        if size & 0x80:
            count = size & 0x7F
            size = int.from_bytes(data[i : i + count], "big")
            i += count
        i += size
        out.append(data[start:i])
    return out


def _content(element: bytes) -> bytes:
    """The content of one encoded DER element (what follows its tag and length)."""
    size = element[1]
    return element[2 + (size & 0x7F if size & 0x80 else 0) :]


def with_mac_iterations(pfx: bytes, iterations: int) -> bytes:
    """``pfx`` with its MacData iteration count replaced (the MAC then fails, after the work)."""
    version, auth_safe, mac_data = _der_elements(_content(pfx))
    digest, salt, _count = _der_elements(_content(mac_data))
    count = _der(0x02, iterations.to_bytes((iterations.bit_length() + 8) // 8, "big"))
    return _der(0x30, version + auth_safe + _der(0x30, digest + salt + count))


async def test_a_pfx_bomb_in_the_inspector_does_not_stall_the_listeners(
    demo_pki: DemoPki,
) -> None:
    bomb = with_mac_iterations((demo_pki.directory / SERVER_PFX).read_bytes(), BOMB_ITERATIONS)
    body = {"file": base64.b64encode(bomb).decode(), "password": demo_pki.server_pfx_password}
    latencies: list[float] = []
    async with running(demo_pki) as run:
        port = run.gateway.ports[PASSTHROUGH_LISTENER]
        done = trio.Event()

        async def probe() -> None:
            while not done.is_set() or len(latencies) < 3:
                started = time.perf_counter()
                status = await trio.to_thread.run_sync(
                    demo_https_get, port, demo_pki.directory, None, None
                )
                latencies.append(time.perf_counter() - started)
                assert status == 200

        async with trio.open_nursery() as nursery:
            nursery.start_soon(probe)
            await trio.sleep(0.05)
            answer = await api(run.port, "POST", "/api/check-ca", body)
            done.set()
    assert max(latencies) < LIVE_LATENCY_BOUND_S, latencies
    assert answer.status == 200
    pfx = answer.json()["pfx"]
    assert pfx["opened"] is False
    assert f"{MAX_PKCS12_ITERATIONS:,}" in pfx["message"]
    assert "key-derivation iterations" in pfx["message"]


async def test_a_pfx_bomb_as_the_inspectors_client_cert_is_refused_off_the_loop(
    demo_pki: DemoPki,
) -> None:
    bomb = with_mac_iterations((demo_pki.directory / SERVER_PFX).read_bytes(), BOMB_ITERATIONS)
    chain = (demo_pki.directory / TRUSTED_CLIENT_CA_CHAIN).read_bytes()
    body = {
        "file": base64.b64encode(chain).decode(),
        "clientCert": base64.b64encode(bomb).decode(),
        "password": demo_pki.server_pfx_password,
    }
    async with running(demo_pki) as run:
        started = time.perf_counter()
        answer = await api(run.port, "POST", "/api/check-ca", body)
        elapsed = time.perf_counter() - started
    client = answer.json()["report"]["client"]
    assert client["passesStrict"] is False
    assert "key-derivation iterations" in client["explanation"]
    # Refused from the counts in the DER, before any iteration runs.
    assert elapsed < LIVE_LATENCY_BOUND_S


@pytest.mark.parametrize("where", ["file", "client-cert", "base64-file"])
def test_a_pfx_bomb_given_to_check_ca_is_refused_at_once(
    demo_pki: DemoPki, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    bomb = with_mac_iterations((demo_pki.directory / SERVER_PFX).read_bytes(), BOMB_ITERATIONS)
    bomb_path = tmp_path / "bomb.pfx"
    bomb_path.write_bytes(base64.b64encode(bomb) if where == "base64-file" else bomb)
    chain = str(demo_pki.directory / TRUSTED_CLIENT_CA_CHAIN)
    args = [chain, "--client-cert", str(bomb_path)] if where == "client-cert" else [str(bomb_path)]
    started = time.perf_counter()
    code = main(["check-ca", *args, f"--password={demo_pki.server_pfx_password}"])
    elapsed = time.perf_counter() - started
    out = capsys.readouterr().out
    assert code == 1
    assert "key-derivation iterations" in out
    assert "Traceback" not in out
    assert elapsed < LIVE_LATENCY_BOUND_S


@pytest.mark.parametrize(
    "data",
    [
        b"\x30\x80" + b"\x30\x80" * 5000,
        b"\x30\x82\xff\xff" + b"\x00" * 64,
        b"-----BEGIN PKCS7-----\nAAAA\n-----END PKCS7-----\n",
        b"MII" + b"A" * 4000,
    ],
    ids=["nested-indefinite", "truncated-sequence", "empty-pkcs7", "base64-garbage"],
)
def test_hostile_bundles_given_to_check_ca_get_a_verdict_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes
) -> None:
    path = tmp_path / "hostile.p7b"
    path.write_bytes(data)
    code = main(["check-ca", str(path), "--output", "json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    assert report["valid"] is False
    assert report["code"] == "ApplicationGatewayTrustedClientCertificateInvalidData"
    assert report["hasPrivateKey"] is not True


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"file": "", "x": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
        b'{"identity": ' + b'{"a": ' * 200 + b"1" + b"}" * 200 + b"}",
    ],
    ids=["arrays-100000-deep", "member-5000-deep", "objects-200-deep"],
)
@pytest.mark.parametrize("path", ["/api/check-ca", "/api/try"])
async def test_deeply_nested_json_to_the_dashboard_api_is_a_400(
    demo_pki: DemoPki, body: bytes, path: str
) -> None:
    async with running(demo_pki) as run:
        answer = await api(
            run.port, "POST", path, raw=body, headers={"Content-Type": "application/json"}
        )
    assert answer.status == 400
    assert "nest deeper than 64 levels" in answer.json()["error"]


# -- finding 14: command-line inputs that would run without bound -----------------------------

#: The address space the memory test gives the command: several times what ``validate`` needs
#: (about 300 MB), well below the 1.5 GB that ``padLeft('a', 1500000000)`` would allocate.
ADDRESS_SPACE_BYTES = 1024**3


def _nested(opening: str, inner: str, closing: str, depth: int) -> str:
    return opening * depth + inner + closing * depth


def _template_with(gateway_name: object) -> dict[str, Any]:
    """The demo template whose gateway name is ``gateway_name`` (evaluated first of all)."""
    template = copy.deepcopy(
        demo_template(
            strict_port=8443, passthrough_port=9443, backend_host="127.0.0.1", backend_port=1
        )
    )
    template["variables"]["gatewayName"] = gateway_name
    return template


#: case → (template text, the words the error must contain).
HOSTILE_TEMPLATES: dict[str, tuple[str, str]] = {
    "json-100000-deep": (
        json.dumps(_template_with("gw"))[:-1] + ', "x": ' + _nested("[", "", "]", 100_000) + "}",
        f"nest deeper than {MAX_JSON_DEPTH} levels",
    ),
    "expression-500-deep": (
        json.dumps(_template_with("[" + _nested("concat(", "'a'", ")", 500) + "]")),
        f"nests deeper than {MAX_EXPRESSION_DEPTH} levels",
    ),
    "mul-400-deep": (
        json.dumps(_template_with("[string(" + _nested("mul(2, ", "3", ")", 400) + ")]")),
        f"nests deeper than {MAX_EXPRESSION_DEPTH} levels",
    ),
    "integer-overflow": (
        json.dumps(_template_with("[string(mul(9223372036854775807, 2))]")),
        "does not fit in a 64-bit integer",
    ),
    "doubling-concat": (
        json.dumps(
            {
                **_template_with("[concat('gw', variables('v24'))]"),
                "variables": {
                    **_template_with("")["variables"],
                    "gatewayName": "[concat('gw', variables('v24'))]",
                    "v0": "0123456789abcdef",
                    **{
                        f"v{i}": f"[concat(variables('v{i - 1}'), variables('v{i - 1}'))]"
                        for i in range(1, 25)
                    },
                },
            }
        ),
        f"at most {MAX_VALUE_CHARS:,}",
    ),
}


def _validate(template_text: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "template.json"
    path.write_text(template_text)
    return run_to_exit(
        [
            "validate",
            "--template-file",
            str(path),
            *extra,
            "--parameters",
            "certData=x",
            "certPassword=y",
            "trustedClientCaData=z",
        ],
        cwd=tmp_path,
    )


@pytest.mark.parametrize("case", list(HOSTILE_TEMPLATES), ids=list(HOSTILE_TEMPLATES))
def test_hostile_template_is_a_clear_error(tmp_path: Path, case: str) -> None:
    text, words = HOSTILE_TEMPLATES[case]

    result = _validate(text, tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert_no_traceback(result.stdout + result.stderr)
    assert words in result.stdout
    assert "[InvalidTemplate]" in result.stdout


def test_deeply_nested_parameters_file_is_a_clear_error(tmp_path: Path) -> None:
    parameters = tmp_path / "parameters.json"
    parameters.write_text(
        '{"parameters": {"certData": {"value": ' + _nested("[", "", "]", 50_000) + "}}}"
    )
    path = tmp_path / "template.json"
    path.write_text(json.dumps(_template_with("gw")))

    result = run_to_exit(
        ["validate", "--template-file", str(path), "--parameters", f"@{parameters}"],
        cwd=tmp_path,
    )

    assert result.returncode == 1
    assert_no_traceback(result.stdout + result.stderr)
    assert f"nest deeper than {MAX_JSON_DEPTH} levels" in result.stdout
    assert str(parameters) in result.stdout


#: Runs the command line with its address space limited first (in the child itself, rather
#: than a ``preexec_fn`` in this multi-threaded test process).
LIMITED_MAIN = (
    "import resource, runpy, sys; "
    "resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit})); "
    "sys.argv = ['appgw-emulator', *sys.argv[1:]]; "
    "runpy.run_module('emulator', run_name='__main__')"
)


def test_pad_left_to_one_and_a_half_gigabytes_is_refused_before_allocating(
    tmp_path: Path,
) -> None:
    path = tmp_path / "template.json"
    path.write_text(json.dumps(_template_with("[padLeft('a', 1500000000)]")))
    args = [
        "validate",
        "--template-file",
        str(path),
        "--parameters",
        "certData=x",
        "certPassword=y",
        "trustedClientCaData=z",
    ]

    # Under RLIMIT_AS the allocation would fail with MemoryError instead of taking the memory:
    # only a check made before allocating gives the clear error.
    result = subprocess.run(
        [sys.executable, "-c", LIMITED_MAIN.format(limit=ADDRESS_SPACE_BYTES), *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=READY_TIMEOUT_S,
        check=False,
    )

    assert result.returncode == 1, result.stderr
    assert_no_traceback(result.stdout + result.stderr)
    assert "'padLeft'" in result.stdout
    assert f"at most {MAX_VALUE_CHARS:,}" in result.stdout


def test_a_pfx_bomb_in_a_template_is_refused_at_once(pki: PkiBundle, tmp_path: Path) -> None:
    # 2^31-1 MAC iterations: minutes of work when opened; the bound refuses it unopened.
    bomb = with_mac_iterations(pki.server.pfx(PFX_PASSWORD), 2**31 - 1)
    parameters = [p for p in template_parameters(pki) if not p.startswith("certData=")]
    path = tmp_path / "template.json"
    path.write_text(json.dumps(_template_with("gw")))
    started_at = time.monotonic()

    result = run_to_exit(
        [
            "validate",
            "--template-file",
            str(path),
            "--parameters",
            "certData=" + base64.b64encode(bomb).decode(),
            *parameters,
        ],
        cwd=tmp_path,
    )

    assert result.returncode == 1, result.stdout + result.stderr
    assert_no_traceback(result.stdout + result.stderr)
    assert "[EmulatorPkcs12TooManyIterations]" in result.stdout
    assert "2,147,483,647" in result.stdout or "key-derivation iterations" in result.stdout
    assert time.monotonic() - started_at < READY_TIMEOUT_S


def test_check_ca_on_a_pfx_bomb_answers_at_once(pki: PkiBundle, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.pfx"
    bomb.write_bytes(with_mac_iterations(pki.server.pfx(PFX_PASSWORD), 2**31 - 1))
    started_at = time.monotonic()

    result = run_to_exit(["check-ca", str(bomb)], cwd=tmp_path)

    assert result.returncode == 1
    assert_no_traceback(result.stdout + result.stderr)
    assert "PFX/PKCS#12" in result.stdout
    assert time.monotonic() - started_at < READY_TIMEOUT_S


def test_deeply_nested_terraform_plan_and_tfvars_json_are_clear_errors(tmp_path: Path) -> None:
    """The Terraform readers' JSON inputs (a plan, a ``*.tfvars.json``) are capped like a
    template: nested deeper than the cap, they are an error naming the file, not a crash."""
    deep = _nested("[", "", "]", 50_000)
    plan = tmp_path / "plan.json"
    plan.write_text('{"format_version": "1.2", "planned_values": ' + deep + "}")
    result = run_to_exit(["validate", "--terraform-plan", str(plan)], cwd=tmp_path)
    assert result.returncode == 1
    assert_no_traceback(result.stdout + result.stderr)
    assert f"nest deeper than {MAX_JSON_DEPTH} levels" in result.stdout
    assert "plan.json" in result.stdout

    config = tmp_path / "tf"
    config.mkdir()
    (config / "main.tf").write_text('variable "x" {\n  default = 1\n}\n')
    (config / "terraform.tfvars.json").write_text('{"x": ' + deep + "}")
    result = run_to_exit(["validate", "--terraform", str(config)], cwd=tmp_path)
    assert result.returncode == 1
    assert_no_traceback(result.stdout + result.stderr)
    assert f"nest deeper than {MAX_JSON_DEPTH} levels" in result.stdout
    assert "terraform.tfvars.json" in result.stdout
