"""appgw-emulator: a local emulator of Azure Application Gateway (v2) mutual TLS.

The library API for integration suites::

    from emulator import Gateway, pki, sync

    async with Gateway.from_template("gateway.json", parameters={...}, listen={443: 0}) as gw:
        ...  # gw.url(), gw.port(), gw.server_ca, gw.access_log

    with sync.Gateway.from_template(...) as gw:  # the blocking twin, for any client
        ...

Why the names resolve lazily: this package is imported by the pytest plugin
(:mod:`emulator.testing`) in every pytest run of everyone who installs it, so importing
``emulator`` must not pull in trio, pyOpenSSL or cryptography. ``emulator.Gateway``,
``emulator.pki`` and ``emulator.sync`` are imported on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import emulator.pki as pki
    import emulator.sync as sync
    from emulator.runtime.gateway import Gateway

__all__ = ["Gateway", "pki", "sync"]

_SUBMODULES = frozenset({"pki", "sync"})


def __getattr__(name: str) -> Any:
    """Import the public names on first use (PEP 562), keeping ``import emulator`` cheap."""
    if name in _SUBMODULES:
        module = importlib.import_module(f"emulator.{name}")
        globals()[name] = module
        return module
    if name == "Gateway":
        from emulator.runtime.gateway import Gateway

        globals()["Gateway"] = Gateway
        return Gateway
    msg = f"module 'emulator' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
