"""The compose and Kubernetes examples agree with the CLI and the image (issue #20, item 2).

Neither a compose tool nor a cluster runs here, so the files are parsed with a real YAML
parser and every port, path, variable and probe they name is checked against the emulator:
the variables exist, the command line they make parses, the probes hit the health routes on
the port the dashboard listens on, the Service and the published ports reach listeners that
exist. Then the configuration each file would give the emulator is validated for real: the
compose file's own ``certs`` command writes the PKI, and ``validate`` loads the template with
the parameters and backend the file names (container paths mapped to the checkout).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is in the test extra: pip install '.[test]'")

from emulator.cli.envconfig import parse_with_environment, variables  # noqa: E402
from emulator.cli.main import build_parser, main  # noqa: E402
from emulator.runtime.health import HEALTH_PATH, LIVE_PATH  # noqa: E402

REPO: Final = Path(__file__).resolve().parents[2]
COMPOSE: Final = REPO / "examples" / "compose" / "compose.yaml"
KUBERNETES: Final = REPO / "examples" / "kubernetes" / "appgw-emulator.yaml"
TEMPLATE: Final = REPO / "examples" / "mtls_api" / "gateway.json"


def _image_env() -> dict[str, str]:
    """The ``ENV`` of the Containerfile: what every container of the image starts with."""
    text = (REPO / "Containerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for name, value in re.findall(r"(\w+)=(\S+)", line):
                env[name] = value
    return env


def _parse(args: list[str], env: dict[str, str]) -> argparse.Namespace:
    known = {name for name, _flag, _command in variables(build_parser())}
    for name in env:
        if name.startswith("APPGW_EMULATOR_"):
            assert name in known, f"{name} is not a variable of the emulator"
    return parse_with_environment(build_parser(), args, {**_image_env(), **env})


def _mapped(value: str, certs: Path) -> str:
    return value.replace("/config/gateway.json", str(TEMPLATE)).replace("/certs", str(certs))


def _validate(env: dict[str, str], certs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``validate`` with the configuration a container would get, paths mapped to the host."""
    for name, value in env.items():
        if name.startswith("APPGW_EMULATOR_"):
            monkeypatch.setenv(name, _mapped(value, certs))
    assert main(["validate"]) == 0


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def kubernetes() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(KUBERNETES.read_text()))


@pytest.fixture(scope="module")
def compose_certs(compose: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compose file's ``certs`` command, run here with /certs mapped to a directory."""
    certs = tmp_path_factory.mktemp("compose") / "certs"
    service = compose["services"]["certs"]
    assert service["entrypoint"] == ["/bin/sh", "-c"]
    script = service["command"][0].replace("$$", "$").replace("/certs", str(certs))
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    done = subprocess.run(
        ["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert (certs / "gateway-parameters.json").is_file()
    return certs


def test_compose_emulator_service_matches_the_cli(compose: dict[str, Any]) -> None:
    service = compose["services"]["appgw-emulator"]
    args = _parse(service["command"], service["environment"])
    assert args.command == "run"
    local_ports = {local for _template, local in args.listen}
    published = {int(str(item).rsplit(":", 1)[1]) for item in service["ports"]}
    assert published == local_ports | {args.dashboard}
    assert args.dashboard_allowed_host == ["appgw-emulator"]
    mounts = {item.split(":")[1] for item in service["volumes"]}
    assert mounts == {"/certs", "/config/gateway.json"}
    # The backend pool named there exists in the template and its host is a service here.
    ((pool, addresses),) = args.backend
    assert addresses[0].host in compose["services"]
    assert f'"name": "{pool}"' in TEMPLATE.read_text()


def test_compose_configuration_validates(
    compose: dict[str, Any], compose_certs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _validate(compose["services"]["appgw-emulator"]["environment"], compose_certs, monkeypatch)


def _deployment(kubernetes: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [doc for doc in kubernetes if doc["kind"] == "Deployment"]
    return deployment


def _container_env(container: dict[str, Any], certs: Path | None = None) -> dict[str, str]:
    """The container's env with ``$(NAME)`` expanded as Kubernetes does, secrets from ``certs``."""
    env: dict[str, str] = {}
    for item in container["env"]:
        if "valueFrom" in item:
            key = item["valueFrom"]["secretKeyRef"]["key"]
            env[item["name"]] = (certs / key).read_text().strip() if certs else "c2VjcmV0"
        else:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), item["value"])
    return env


def test_kubernetes_deployment_matches_the_cli(kubernetes: list[dict[str, Any]]) -> None:
    deployment = _deployment(kubernetes)
    assert deployment["spec"]["replicas"] > 1
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = _parse(container["args"], _container_env(container))
    assert args.command == "run"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["dashboard"] == args.dashboard
    assert {ports["strict"], ports["passthrough"]} == {local for _t, local in args.listen}
    probes = {kind: container[kind]["httpGet"] for kind in ("readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == HEALTH_PATH
    assert probes["livenessProbe"]["path"] == LIVE_PATH
    for probe in probes.values():
        assert ports[probe["port"]] == args.dashboard
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "configMap" in volumes["template"]
    assert "secret" in volumes["certs"]
    assert args.template_file == Path(mounts["template"]) / "gateway.json"
    # Non-root as in the image, and a grace period longer than the emulator's drain.
    assert pod["securityContext"]["runAsUser"] == 10001
    from emulator.runtime.gateway import DRAIN_GRACE_S

    assert pod["terminationGracePeriodSeconds"] > DRAIN_GRACE_S

    (service,) = [doc for doc in kubernetes if doc["kind"] == "Service"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    template_ports = {template for template, _local in args.listen}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports
        assert port["port"] in template_ports


def test_kubernetes_configuration_validates(
    kubernetes: list[dict[str, Any]], compose_certs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (container,) = _deployment(kubernetes)["spec"]["template"]["spec"]["containers"]
    _validate(_container_env(container, compose_certs), compose_certs, monkeypatch)
