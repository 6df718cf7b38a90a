"""The composite GitHub Action (``action.yml``, issue #20 item 8): its ``run:`` steps, in order.

GitHub's runner cannot run here, so the test does what it does for a composite action: each
step's ``${{ inputs.* }}`` and ``${{ github.action_path }}`` are replaced, its ``env:`` is set,
and its script runs with ``bash -eo pipefail`` in a temporary directory with ``RUNNER_TEMP``
and ``GITHUB_OUTPUT`` pointing there. The install step really creates a venv and pip-installs
this checkout. Then the outputs are used as a workflow would: a real mTLS request to the URL
it printed, trusting the server CA file it wrote.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is in the test extra: pip install '.[test]'")

from emulator.arm.demo_template import write_demo_template  # noqa: E402
from emulator.pki.demo import write_demo_pki  # noqa: E402
from tests.helpers.http import https_get  # noqa: E402
from tests.helpers.pki import write_demo_parameters  # noqa: E402
from tests.helpers.ports import free_port  # noqa: E402

REPO: Final = Path(__file__).resolve().parents[2]
#: The install step pip-installs the checkout into a new venv (about 20 s here).
STEP_TIMEOUT_S: Final = 300


def _expand(text: str, inputs: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match[1].strip()
        if name == "github.action_path":
            return str(REPO)
        if name.startswith("inputs."):
            return inputs[name.removeprefix("inputs.")]
        raise AssertionError(f"unexpected expression ${{{{ {name} }}}}")

    return re.sub(r"\$\{\{\s*([^}]+?)\s*\}\}", one, text)


def _outputs(path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, _, value = line.partition("=")
        found[name] = value
    return found


def test_action_steps_start_the_emulator_and_export_urls_and_server_ca(tmp_path: Path) -> None:
    action: dict[str, Any] = yaml.safe_load((REPO / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    pki = write_demo_pki(tmp_path / "certs")
    write_demo_parameters(pki, tmp_path / "parameters.json")
    template = write_demo_template(
        tmp_path, strict_port=8443, passthrough_port=9443, backend_host="127.0.0.1", backend_port=1
    )
    given = {
        "template": str(template),
        "parameters": "@parameters.json",
        "listen": "8443=0\n9443=0",
        "pki": str(tmp_path / "certs"),
        "dashboard-port": str(free_port()),
        "python": sys.executable,
    }
    inputs = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()}
    assert set(given) <= set(inputs)
    inputs.update(given)
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    output_file = tmp_path / "github-output"
    output_file.touch()
    base_env = {
        **os.environ,
        "RUNNER_TEMP": str(runner_temp),
        "GITHUB_OUTPUT": str(output_file),
    }
    pid_file = runner_temp / "appgw-emulator.pid"
    try:
        for step in action["runs"]["steps"]:
            assert "uses" not in step, "uses: steps cannot run here"
            assert step["shell"] == "bash"
            env = {**base_env}
            for name, value in (step.get("env") or {}).items():
                env[name] = _expand(str(value), inputs)
            done = subprocess.run(
                [
                    "bash",
                    "--noprofile",
                    "--norc",
                    "-eo",
                    "pipefail",
                    "-c",
                    _expand(step["run"], inputs),
                ],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=STEP_TIMEOUT_S,
                check=False,
            )
            assert done.returncode == 0, f"step {step['name']!r}:\n{done.stdout}\n{done.stderr}"
        outputs = _outputs(output_file)
        assert set(outputs) == set(action["outputs"])
        urls = outputs["urls"].split(" ")
        assert len(urls) == 2
        assert all(re.fullmatch(r"https://localhost:\d+/", url) for url in urls)
        strict = int(urls[0].rsplit(":", 1)[1].rstrip("/"))
        reply = https_get(
            strict,
            cafile=Path(outputs["server-ca"]),
            cert=tmp_path / "certs" / "client.pem",
            key=tmp_path / "certs" / "client.key",
        )
        # No backend behind pool port 1: the gateway answers, after a verified mTLS handshake.
        assert reply.status == 502
        refused = https_get(strict, cafile=Path(outputs["server-ca"]))
        assert refused.status == 400
        assert outputs["health-url"].endswith("/health")
    finally:
        if pid_file.is_file():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
