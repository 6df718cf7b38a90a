"""Run-time overrides of a built :class:`~emulator.model.types.GatewayConfig`.

The template describes the gateway in Azure; running it locally changes a few facts (a backend
FQDN becomes 127.0.0.1:PORT). Each override returns a new frozen config and records itself in
``warnings``, so the startup summary says what differs from the template.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from emulator.errors import (
    TemplateError,
)
from emulator.model.names import find_name
from emulator.model.types import BackendAddress, BackendPool, GatewayConfig, RoutingRule


def with_backend_overrides(
    config: GatewayConfig, overrides: Mapping[str, tuple[BackendAddress, ...]]
) -> GatewayConfig:
    """Replace the addresses of named pools (``--backend POOL=HOST:PORT``).

    The template's FQDNs are not reachable offline. The given port replaces the backend
    settings' port for that pool, which is where Azure keeps it; the change is recorded in
    ``warnings``.

    Raises:
        TemplateError: a pool name that the gateway does not have.
    """
    pools = {p.name: p for p in config.pools}
    warnings = list(config.warnings)
    for pool_name in overrides:
        if find_name(pools, pool_name) is None:
            raise TemplateError(
                f"--backend names pool '{pool_name}', which the gateway does not have "
                f"(pools: {', '.join(pools) or 'none'})",
                fix="use one of the pool names",
                code="EmulatorUnknownBackendPool",
            )
    new_pools: dict[str, BackendPool] = {}
    for name, pool in pools.items():
        key = find_name(overrides, name)
        if key is None:
            new_pools[name] = pool
            continue
        addresses = overrides[key]
        new_pools[name] = BackendPool(name, addresses)
        shown = ", ".join(f"{a.host}:{a.port}" for a in addresses)
        before = ", ".join(a.host for a in pool.addresses) or "no addresses"
        warnings.append(
            f"backend pool '{name}': {before} replaced by {shown} (--backend); the port "
            "overrides the backend settings' port for this pool"
        )
    rules = tuple(_with_pools(r, new_pools) for r in config.rules)
    return replace(config, pools=tuple(new_pools.values()), rules=rules, warnings=tuple(warnings))


def _with_pools(rule: RoutingRule, pools: Mapping[str, BackendPool]) -> RoutingRule:
    """``rule`` with every pool it references (its own, its path map's) taken from ``pools``."""

    def swap(pool: BackendPool | None) -> BackendPool | None:
        return pools.get(pool.name, pool) if pool is not None else None

    path_map = rule.url_path_map
    if path_map is not None:
        path_map = replace(
            path_map,
            default_pool=swap(path_map.default_pool),
            path_rules=tuple(replace(p, pool=swap(p.pool)) for p in path_map.path_rules),
        )
    return replace(rule, pool=swap(rule.pool), url_path_map=path_map)
