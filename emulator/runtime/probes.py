"""Custom health probes: which backends may receive traffic.

Azure probes every backend of a pool through each backend settings that use the pool; a
backend that fails ``unhealthyThreshold`` probes in a row leaves the rotation, and comes back
after one successful probe (application-gateway-probe-overview). With no healthy backend the
gateway answers 502.

Only *custom* probes (``probes[]`` referenced by backend settings' ``probe``) run here. Azure's
default probe (GET / every 30 s) is not emulated: it would send unexpected requests to the
backends of every test, and an unreachable backend already gets 502 on the request itself.

Probes start when the gateway starts, one task per (pool, settings, address); backends count as
healthy until a probe says otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import trio
from cryptography.hazmat.primitives.serialization import Encoding

from emulator.core.http.codec import request_head_bytes
from emulator.core.request.balancing import HealthKey, HealthTable
from emulator.errors import BackendError
from emulator.logsafe import escaped_logger
from emulator.model import BackendPool, BackendSettings, ListenerProtocol, Probe, RoutingRule
from emulator.runtime.backend import BackendTls, open_backend_connection, read_response

__all__ = [
    "HealthTable",
    "ProbeTarget",
    "backend_tls",
    "probe_once",
    "probe_targets",
    "run_probes",
]

LOGGER = escaped_logger("emulator.probes")

#: The Host a probe sends when neither ``host`` nor pickHostNameFromBackendHttpSettings says
#: otherwise (probe overview: "the default host name is 127.0.0.1").
DEFAULT_PROBE_HOST: Final = "127.0.0.1"
#: The probe reads at most this much of a response body for ``match.body``.
MAX_PROBE_BODY: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    pool: BackendPool
    settings: BackendSettings
    probe: Probe
    #: Where traffic goes (the health key) ...
    host: str
    port: int

    @property
    def key(self) -> HealthKey:
        return (self.pool.name, self.host, self.port)

    @property
    def probe_port(self) -> int:
        """... and where the probe goes: the probe's own port when it has one."""
        return self.probe.port if self.probe.port is not None else self.port

    @property
    def host_header(self) -> str:
        probe, settings = self.probe, self.settings
        if probe.host:
            return probe.host
        if probe.pick_host_from_settings:
            if settings.host_name:
                return settings.host_name
            if settings.pick_host_name_from_backend_address:
                return self.host
        return DEFAULT_PROBE_HOST


def probe_targets(rules: Iterable[RoutingRule]) -> list[ProbeTarget]:
    """Every (pool, settings with a custom probe, address) that requests can reach."""
    pairs: dict[tuple[str, str], tuple[BackendPool, BackendSettings]] = {}
    for rule in rules:
        candidates = [(rule.pool, rule.settings)]
        if rule.url_path_map is not None:
            path_map = rule.url_path_map
            candidates.append((path_map.default_pool, path_map.default_settings))
            candidates += [(p.pool, p.settings) for p in path_map.path_rules]
        for pool, settings in candidates:
            if pool is not None and settings is not None and settings.probe is not None:
                pairs.setdefault((pool.name, settings.name), (pool, settings))
    targets = []
    for pool, settings in pairs.values():
        assert settings.probe is not None
        for address in pool.addresses:
            port = address.port if address.port is not None else settings.port
            targets.append(ProbeTarget(pool, settings, settings.probe, address.host, port))
    return targets


async def probe_once(target: ProbeTarget) -> tuple[bool, str]:
    """One probe: (healthy, why). Never raises for backend faults."""
    probe = target.probe
    tls = None
    if probe.protocol is ListenerProtocol.HTTPS:
        tls = backend_tls(target.settings, target.host_header)
    try:
        with trio.fail_after(probe.timeout_s):
            conn = await open_backend_connection((target.host, target.probe_port), tls)
            try:
                request = request_head_bytes(
                    "GET",
                    probe.path,
                    [("Host", target.host_header), ("User-Agent", "Azure-AppGW")],
                )
                conn.start_request(request, repeatable=False)
                await conn.send(request)
                head, body = await read_response(
                    conn, request_method="GET", deadline=math.inf, max_body=MAX_PROBE_BODY
                )
                status = head.status
            finally:
                conn.close()
    except trio.TooSlowError:
        return False, f"no answer within {probe.timeout_s} s"
    except BackendError as exc:
        return False, str(exc)
    if not any(low <= status <= high for low, high in probe.status_ranges):
        return False, f"status {status}"
    if probe.body is not None and probe.body.encode() not in body:
        return False, f"body does not contain {probe.body!r}"
    return True, f"status {status}"


def backend_tls(settings: BackendSettings, server_name: str | None) -> BackendTls:
    """The TLS settings for an HTTPS backend (requests and probes alike)."""
    roots = b"".join(c.public_bytes(Encoding.PEM) for c in settings.trusted_roots)
    return BackendTls(
        server_name=settings.sni_name or server_name,
        trusted_roots_pem=roots or None,
        validate_chain=settings.validate_cert_chain_and_expiry,
        validate_sni=settings.validate_sni,
    )


async def run_probes(rules: Iterable[RoutingRule], table: HealthTable) -> None:
    """Probe every target at its probe's interval until cancelled."""
    targets = probe_targets(rules)
    if not targets:
        return
    async with trio.open_nursery() as nursery:
        for target in targets:
            nursery.start_soon(_probe_loop, target, table)


async def _probe_loop(target: ProbeTarget, table: HealthTable) -> None:
    while True:
        ok, why = await probe_once(target)
        if table.record(target.key, ok, target.probe.unhealthy_threshold):
            LOGGER.warning(
                "probe.%s pool=%s backend=%s:%s probe=%s reason=%s",
                "healthy" if ok else "unhealthy",
                target.pool.name,
                target.host,
                target.port,
                target.probe.name,
                why,
            )
        await trio.sleep(target.probe.interval_s)
