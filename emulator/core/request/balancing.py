"""Which backend of a pool takes a request: health, cookie affinity, round-robin. No I/O.

:func:`select_backend` is the one place that decides it, from the pool, the backend settings,
the request's headers (for the affinity cookie), the :class:`HealthTable` the custom probes
keep, and the :class:`Rotation` that remembers where each pool's round-robin stands:

1. Backends a probe marked unhealthy are skipped; a pool with addresses but none healthy is a
   502 (application-gateway-probe-overview: "if there are no healthy servers ... 502").
2. With ``cookieBasedAffinity`` a client whose cookie names a healthy backend of the pool goes
   there (configuration-http-settings, "Cookie-based affinity").
3. Anyone else is placed round-robin (Azure's default distribution) and, with affinity, gets
   the two affinity cookies on the response.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from emulator.core.request.routing import AFFINITY_CORS_SUFFIX, affinity_cookie_value, cookie_value
from emulator.errors import BackendConnectError
from emulator.model import BackendPool, BackendSettings

__all__ = ["BackendChoice", "HealthKey", "HealthTable", "Rotation", "select_backend"]

#: (pool name, backend host, backend port): what one health state is about.
HealthKey = tuple[str, str, int]

#: No affinity cookies to set.
_NO_COOKIES: Final[tuple[tuple[str, str], ...]] = ()


@dataclass
class HealthTable:
    """Consecutive failures and the resulting state per backend (mutable: probes write it).

    One per gateway, shared by its connections; backends count as healthy until a probe says
    otherwise.
    """

    _failures: dict[HealthKey, int] = field(default_factory=dict)
    _unhealthy: set[HealthKey] = field(default_factory=set)

    def healthy(self, pool: str, host: str, port: int) -> bool:
        return (pool, host, port) not in self._unhealthy

    @property
    def all_healthy(self) -> bool:
        """No backend is marked unhealthy (the usual case: no filtering to do)."""
        return not self._unhealthy

    def record(self, key: HealthKey, ok: bool, threshold: int) -> bool:
        """Note one probe result; returns True when the backend's state changed."""
        if ok:
            self._failures.pop(key, None)
            if key in self._unhealthy:
                self._unhealthy.discard(key)
                return True
            return False
        count = self._failures.get(key, 0) + 1
        self._failures[key] = count
        if count >= threshold and key not in self._unhealthy:
            self._unhealthy.add(key)
            return True
        return False


@dataclass
class Rotation:
    """Where each pool's round-robin stands (mutable: one per gateway, every pick moves it)."""

    _next: dict[str, int] = field(default_factory=dict)

    def turn(self, pool: str) -> int:
        """This pick's number for ``pool`` (0, 1, 2, ...)."""
        number = self._next.get(pool, 0)
        self._next[pool] = number + 1
        return number


@dataclass(frozen=True, slots=True)
class BackendChoice:
    """The backend that takes the request, and the affinity cookies to set on its response."""

    host: str
    port: int
    set_cookies: tuple[tuple[str, str], ...] = _NO_COOKIES

    @property
    def text(self) -> str:
        """``host:port``, as the access log's ``serverRouted`` shows it."""
        return f"{self.host}:{self.port}"


def select_backend(
    pool: BackendPool,
    settings: BackendSettings,
    headers: Iterable[tuple[str, str]],
    *,
    health: HealthTable | None,
    rotation: Rotation,
) -> BackendChoice:
    """The backend of ``pool`` for one request (see the module docstring for the order).

    Raises:
        BackendConnectError: the pool has no addresses, or none of them is healthy (502).
    """
    addresses = pool.addresses
    if not addresses:
        raise BackendConnectError(f"backend pool '{pool.name}' has no addresses")
    default_port = settings.port
    if health is not None and not health.all_healthy:
        addresses = tuple(
            a
            for a in addresses
            if health.healthy(pool.name, a.host, a.port if a.port is not None else default_port)
        )
        if not addresses:
            raise BackendConnectError(f"no healthy backend in pool '{pool.name}' (health probe)")
    if settings.cookie_affinity:
        wanted = cookie_value(headers, settings.affinity_cookie_name)
        if wanted is not None:
            for address in addresses:
                port = address.port if address.port is not None else default_port
                if affinity_cookie_value(pool.name, address.host, port) == wanted:
                    return BackendChoice(address.host, port)
    address = addresses[rotation.turn(pool.name) % len(addresses)]
    port = address.port if address.port is not None else default_port
    if not settings.cookie_affinity:
        return BackendChoice(address.host, port)
    name = settings.affinity_cookie_name
    value = affinity_cookie_value(pool.name, address.host, port)
    return BackendChoice(
        address.host,
        port,
        (
            ("Set-Cookie", f"{name}={value}; Path=/"),
            ("Set-Cookie", f"{name}{AFFINITY_CORS_SUFFIX}={value}; Path=/; SameSite=None; Secure"),
        ),
    )
