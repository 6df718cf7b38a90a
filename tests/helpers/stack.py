"""A stub backend and a real gateway in the test's nursery, on OS-chosen ports of 127.0.0.1.

The gateway runs the same path as the CLI: an ARM template on disk → ``load_template`` →
``build_gateway_config`` → ``Gateway``.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import trio

import backend_stub
from emulator.arm.demo_template import PASSTHROUGH_LISTENER, STRICT_LISTENER, demo_template
from emulator.arm.template import load_template, select_gateway
from emulator.core.limits import ProxyLimits
from emulator.model import BackendAddress, build_gateway_config, with_backend_overrides
from emulator.runtime.gateway import Gateway
from tests.helpers.pki import PkiBundle, template_parameters

#: The ``up`` template's frontend ports; ``listen`` maps both to port 0.
TEMPLATE_PORTS: Final = {STRICT_LISTENER: 8443, PASSTHROUGH_LISTENER: 9443}
DEMO_LISTEN: Final = {8443: 0, 9443: 0}
LISTENERS: Final = {"strict": STRICT_LISTENER, "passthrough": PASSTHROUGH_LISTENER}
#: How often :func:`wait_for_access_records` looks at the log, and for how long at most.
ACCESS_POLL_S: Final = 0.02
ACCESS_WAIT_S: Final = 5.0


@dataclass
class Stack:
    """A running backend + gateway pair and what the backend recorded."""

    gateway: Gateway
    backend_port: int
    recorded: list[backend_stub.RecordedRequest] = field(default_factory=list)

    def url(self, listener: str) -> str:
        return self.gateway.url(listener)

    def port(self, listener: str) -> int:
        return self.gateway.ports[listener]


async def start_stub(nursery: trio.Nursery, recorded: list[backend_stub.RecordedRequest]) -> int:
    """The stub backend in ``nursery``, recording into ``recorded``; returns its port."""
    _host, port = await nursery.start(
        functools.partial(
            backend_stub.serve,
            backend_stub.StubConfig(),
            host="127.0.0.1",
            port=0,
            recorder=recorded.append,
        )
    )
    return int(port)


async def start_stack(
    nursery: trio.Nursery,
    template: Mapping[str, Any] | Path,
    parameters: Sequence[str],
    *,
    tmp_path: Path,
    listen: Mapping[int, int],
    backend_pool: str | None = None,
    **options: Any,
) -> Stack:
    """Start the stub backend and a gateway for ``template`` (a dict is written to disk first);
    ``options`` go to :class:`Gateway` (``limits=ProxyLimits(...)`` for short timeouts)."""
    recorded: list[backend_stub.RecordedRequest] = []
    backend_port = await start_stub(nursery, recorded)
    if isinstance(template, Path):
        path = template
    else:
        path = tmp_path / "gateway.json"
        path.write_text(json.dumps(template))
    config = build_gateway_config(
        select_gateway(load_template(path, parameters), None), now=datetime.now(UTC)
    )
    if backend_pool is not None:
        config = with_backend_overrides(
            config, {backend_pool: (BackendAddress("127.0.0.1", backend_port),)}
        )
    gateway = Gateway(config, listen=listen, **options)
    await nursery.start(gateway.serve)
    return Stack(gateway, backend_port, recorded)


def demo_gateway_template(
    *,
    backend_port: int = 1,
    request_timeout_s: int = 20,
    global_configuration: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``up`` demo template (Strict + Passthrough, certificate-forwarding rewrite), with
    ``global_configuration`` as the gateway's ``globalConfiguration`` when given."""
    template = copy.deepcopy(
        demo_template(
            strict_port=TEMPLATE_PORTS[STRICT_LISTENER],
            passthrough_port=TEMPLATE_PORTS[PASSTHROUGH_LISTENER],
            backend_host="127.0.0.1",
            backend_port=backend_port,
        )
    )
    settings = template["resources"][0]["properties"]["backendHttpSettingsCollection"][0]
    settings["properties"]["requestTimeout"] = request_timeout_s
    if global_configuration is not None:
        template["resources"][0]["properties"]["globalConfiguration"] = dict(global_configuration)
    return template


def demo_gateway(
    pki: PkiBundle,
    tmp_path: Path,
    *,
    backend_port: int,
    request_timeout_s: int = 20,
    global_configuration: Mapping[str, Any] | None = None,
    **options: Any,
) -> Gateway:
    """A gateway for the demo template with its pool on ``127.0.0.1:backend_port``.

    ``options`` go to :class:`Gateway` (connection limits, ``strip_client_cert_headers``...).
    """
    path = tmp_path / "gateway.json"
    path.write_text(
        json.dumps(
            demo_gateway_template(
                backend_port=backend_port,
                request_timeout_s=request_timeout_s,
                global_configuration=global_configuration,
            )
        )
    )
    config = build_gateway_config(
        select_gateway(load_template(path, template_parameters(pki)), None), now=datetime.now(UTC)
    )
    config = with_backend_overrides(
        config, {"stub-backend": (BackendAddress("127.0.0.1", backend_port),)}
    )
    return Gateway(config, listen=DEMO_LISTEN, **options)


async def start_demo(
    nursery: trio.Nursery,
    pki: PkiBundle,
    tmp_path: Path,
    *,
    backend_port: int | None = None,
    request_timeout_s: int = 20,
    global_configuration: Mapping[str, Any] | None = None,
    **options: Any,
) -> Stack:
    """The stub backend (unless ``backend_port`` names another one) and a demo gateway."""
    recorded: list[backend_stub.RecordedRequest] = []
    if backend_port is None:
        backend_port = await start_stub(nursery, recorded)
    gateway = demo_gateway(
        pki,
        tmp_path,
        backend_port=backend_port,
        request_timeout_s=request_timeout_s,
        global_configuration=global_configuration,
        **options,
    )
    await nursery.start(gateway.serve)
    return Stack(gateway, backend_port, recorded)


async def wait_for_access_records(gateway: Gateway, count: int = 1) -> None:
    """Wait until the gateway logged ``count`` requests; for connections that end without a
    response the client could wait for (the gateway offers no event to wait on)."""
    for _ in range(int(ACCESS_WAIT_S / ACCESS_POLL_S)):
        if len(gateway.access_log) >= count:
            return
        await trio.sleep(ACCESS_POLL_S)
    raise AssertionError(f"{len(gateway.access_log)} access records after {ACCESS_WAIT_S} s")


#: For clients that send everything at once: after a 400 the gateway reads on until the client
#: has been silent for ``linger_idle_s``, so a short silence ends the lingering close sooner.
SHORT_LINGER: Final = ProxyLimits(linger_idle_s=0.05)
