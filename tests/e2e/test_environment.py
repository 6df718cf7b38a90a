"""Configuration by environment variables (issue #20, item 3): APPGW_EMULATOR_* mirror the flags.

``validate`` runs in process through :func:`emulator.cli.main` (it binds nothing); one ``up``
runs as a real process configured only by its environment and is reached over real mTLS.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
from pathlib import Path
from typing import Final

import pytest

from emulator.arm.demo_template import STRICT_LISTENER
from emulator.cli.envconfig import variables
from emulator.cli.main import build_parser, main
from tests.helpers.logs import assert_no_traceback
from tests.helpers.processes import READY_TIMEOUT_S, ready_listeners, run_to_exit, started

QUICKSTART: Final = (
    Path(__file__).parents[1] / "fixtures" / "quickstart" / "deploymentTemplate.json"
)
#: The variables the issue names; each must exist for at least one command.
NAMED: Final = (
    "TEMPLATE_FILE",
    "PARAMETERS",
    "BACKEND",
    "LISTEN",
    "LOG_LEVEL",
    "ACCESS_LOG",
    "BIND",
    "DASHBOARD_PORT",
    "SERVER_NAME",
)


@pytest.fixture(scope="module")
def certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("environment")
    init = run_to_exit(["certs", "init", "certs"], cwd=cwd)
    assert init.returncode == 0, init.stderr
    return cwd


def _validate(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cwd: Path,
    env: dict[str, str],
    *argv: str,
) -> dict[str, object]:
    monkeypatch.chdir(cwd)
    for name, value in env.items():
        monkeypatch.setenv(f"APPGW_EMULATOR_{name}", value)
    code = main(["validate", "-o", "json", *argv])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)  # type: ignore[no-any-return]


def test_every_named_variable_exists_and_help_lists_it_beside_its_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = {name for name, _flag, _command in variables(build_parser())}
    for short in NAMED:
        assert f"APPGW_EMULATOR_{short}" in names
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    helptext = re.sub(r"\s+", " ", capsys.readouterr().out)
    assert "--template-file TEMPLATE_FILE, -f TEMPLATE_FILE" in helptext
    assert "[env: APPGW_EMULATOR_TEMPLATE_FILE]" in helptext
    assert "[env: APPGW_EMULATOR_DASHBOARD_PORT]" in helptext
    assert "[env: APPGW_EMULATOR_BIND]" in helptext


def test_a_required_flag_and_repeatable_values_come_from_variables(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], certs_dir: Path
) -> None:
    document = _validate(
        monkeypatch,
        capsys,
        certs_dir,
        {
            "TEMPLATE_FILE": str(QUICKSTART),
            # One value per line; blank lines are ignored; later parameters win, as with flags.
            "PARAMETERS": "@certs/deploymentParameters.json\n\ncapacity=3\n",
            "BACKEND": "pool2=127.0.0.1:1,127.0.0.1:2",
            "RESOURCE_GROUP": "from-env",
        },
    )
    summary = document["summary"]
    assert isinstance(summary, dict)
    assert summary["pools"] == [{"name": "pool2", "addresses": ["127.0.0.1:1", "127.0.0.1:2"]}]
    assert "/resourceGroups/from-env/" in summary["resourceId"]


def test_a_flag_wins_over_its_variable_and_replaces_repeatable_values(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], certs_dir: Path
) -> None:
    document = _validate(
        monkeypatch,
        capsys,
        certs_dir,
        {
            "TEMPLATE_FILE": "/nonexistent/template.json",
            "PARAMETERS": "@certs/deploymentParameters.json",
            "BACKEND": "pool2=127.0.0.1:1\npool2=127.0.0.1:9",
            "RESOURCE_GROUP": "from-env",
        },
        "--template-file",
        str(QUICKSTART),
        "--backend",
        "pool2=127.0.0.1:7",
        "-g",
        "from-flag",
    )
    summary = document["summary"]
    assert isinstance(summary, dict)
    assert summary["pools"] == [{"name": "pool2", "addresses": ["127.0.0.1:7"]}]
    assert "/resourceGroups/from-flag/" in summary["resourceId"]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("STRICT_PORT", "eighty", "'eighty' is not a port number"),
        ("EXPLAIN", "maybe", "'maybe' is not on or off"),
        ("KEY_TYPE", "dsa", "invalid choice: 'dsa'"),
        ("BIND", "127.0.0.1\n::1", "holds 2 lines; --bind takes one value"),
    ],
)
def test_a_bad_value_is_a_usage_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
    expected: str,
) -> None:
    monkeypatch.setenv(f"APPGW_EMULATOR_{name}", value)
    with pytest.raises(SystemExit) as exited:
        main(["up"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"environment variable APPGW_EMULATOR_{name} (for --" in err
    assert expected in err
    assert_no_traceback(err)


def test_up_configured_only_by_its_environment_serves_mtls(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Ports, bind address, server names (one per line), the access log and the log level."""
    env = {
        "STRICT_PORT": "0",
        "PASSTHROUGH_PORT": "0",
        "BACKEND_PORT": "0",
        "DASHBOARD_PORT": "0",
        "BIND": "127.0.0.1",
        "SERVER_NAME": "gateway.test\napi.gateway.test\n",
        "ACCESS_LOG": "stdout",
        "LOG_LEVEL": "debug",
        "LOG_FORMAT": "json",
    }
    for name, value in env.items():
        monkeypatch.setenv(f"APPGW_EMULATOR_{name}", value)
    with started(["up"], cwd=tmp_path) as process:
        process.wait_for_stdout(re.compile(r"^ready: dashboard "), timeout=READY_TIMEOUT_S)
        strict = ready_listeners(process.stdout_lines)[STRICT_LISTENER].port
        ctx = ssl.create_default_context(cafile=str(tmp_path / "certs/server-root-ca.pem"))
        ctx.load_cert_chain(tmp_path / "certs/client.pem", tmp_path / "certs/client.key")
        for name in ("gateway.test", "api.gateway.test"):
            with (
                socket.create_connection(("127.0.0.1", strict), timeout=10) as raw,
                ctx.wrap_socket(raw, server_hostname=name) as tls,
            ):
                head = f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"
                tls.sendall(head.encode())
                assert tls.recv(12) == b"HTTP/1.1 200"
        process.wait_for_stdout(re.compile(r'^\{.*"listenerName": "strict'))
        assert process.stop() == 0
    assert any(line.startswith('{"time"') for line in process.stderr_lines), process.describe()
    assert_no_traceback(process.stderr)


def test_readme_lists_every_variable() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for name, flag, _command in variables(build_parser()):
        assert f"| `{name}` |" in readme, f"README's variable table lacks {name} ({flag})"
