"""A testcontainers-python module for the emulator's image.

Installed with ``pip install 'appgw-emulator[testcontainers]'``.

::

    with AppGwEmulatorContainer("appgw-emulator:latest") as appgw:     # `up`: both demo modes
        url = appgw.get_url("strict-listener")
        ca = appgw.server_ca()                                       # PEM to trust

``run`` with your own template: pass ``command=["run", "-f", "/config/gateway.json", ...]`` and
``volumes=[(host_dir, "/config", "ro")]``. The container is ready when ``GET /health`` on the
dashboard port answers 200 (every listener bound); the listeners' ports are read from that
answer, so ``get_url`` works for any template. ``host_network=True`` runs it with the host's
network (the ports in the environment must then be free on the host).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, Final

from testcontainers.core.container import DockerContainer

__all__ = ["AppGwEmulatorContainer"]

DASHBOARD_PORT: Final = 8000
#: The image's ports: Strict and Passthrough of ``up``, and the dashboard.
EXPOSED_PORTS: Final = (8443, 9443, DASHBOARD_PORT)
#: Bound of the wait for ``/health``; a cold start takes a few seconds.
READY_TIMEOUT_S: Final = 60.0
POLL_S: Final = 0.25
REQUEST_TIMEOUT_S: Final = 5.0


class AppGwEmulatorContainer(DockerContainer):
    """The emulator's image, started and waited on as testcontainers does for its modules."""

    def __init__(
        self,
        image: str = "appgw-emulator:latest",
        *,
        command: Sequence[str] = ("up",),
        volumes: Sequence[tuple[str, str, str]] = (),
        env: dict[str, str] | None = None,
        host_network: bool = False,
        ready_timeout_s: float = READY_TIMEOUT_S,
        **kwargs: Any,
    ) -> None:
        if host_network:
            kwargs["network_mode"] = "host"
        super().__init__(image, **kwargs)
        self._host_network = host_network
        self._ready_timeout_s = ready_timeout_s
        self._listeners: dict[str, int] = {}
        self.with_command(list(command))
        for host_path, container_path, mode in volumes:
            self.with_volume_mapping(host_path, container_path, mode)
        for name, value in (env or {}).items():
            self.with_env(name, value)
        if not host_network:
            self.with_exposed_ports(*EXPOSED_PORTS)

    def _port(self, port: int) -> int:
        return port if self._host_network else int(self.get_exposed_port(port))

    def _host(self) -> str:
        return "127.0.0.1" if self._host_network else str(self.get_container_host_ip())

    @property
    def dashboard_port(self) -> int:
        port = int(self.env.get("APPGW_EMULATOR_DASHBOARD_PORT", DASHBOARD_PORT))
        return self._port(port)

    def _dashboard(self, path: str) -> tuple[int, bytes]:
        url = f"http://{self._host()}:{self.dashboard_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def start(self) -> AppGwEmulatorContainer:
        super().start()
        deadline = time.monotonic() + self._ready_timeout_s
        last = "no answer"
        while True:
            try:
                status, body = self._dashboard("/health")
            except OSError as exc:
                status, body, last = 0, b"", str(exc)
            if status == 200:
                listeners = json.loads(body)["listeners"]
                self._listeners = {
                    name: int(address.rsplit(":", 1)[1]) for name, address in listeners.items()
                }
                return self
            if status:
                last = f"HTTP {status} {body.decode('utf-8', 'replace')}"
            if time.monotonic() > deadline:
                logs = self.get_logs()
                msg = f"the emulator was not ready after {self._ready_timeout_s} s ({last}): {logs}"
                raise TimeoutError(msg)
            time.sleep(POLL_S)

    def get_url(self, listener: str) -> str:
        """``https://HOST:PORT/`` reaching ``listener`` from the test process."""
        if listener not in self._listeners:
            known = ", ".join(self._listeners) or "none (not started)"
            msg = f"no listener {listener!r}; the gateway has: {known}"
            raise KeyError(msg)
        host = "localhost" if self._host_network else self._host()
        return f"https://{host}:{self._port(self._listeners[listener])}/"

    def server_ca(self) -> bytes:
        """The PEM a client must trust (``GET /api/server-ca``)."""
        status, body = self._dashboard("/api/server-ca")
        if status != 200:
            msg = f"GET /api/server-ca answered {status}: {body!r}"
            raise RuntimeError(msg)
        return body
