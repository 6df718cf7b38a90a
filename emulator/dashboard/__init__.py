"""A live web dashboard for ``up`` and ``run``: the gateway as configured, the requests it served,
Strict versus Passthrough side by side ("try it"), and a certificate inspector.

Served by the emulator itself (trio + h11) from static files shipped in this package; no
framework, no CDN, works offline. See the README's "Dashboard" section for the JSON API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from emulator.dashboard.defaults import DEFAULT_DASHBOARD_PORT

if TYPE_CHECKING:
    from emulator.dashboard.identities import load_identities
    from emulator.dashboard.identity import DemoIdentities
    from emulator.dashboard.server import Dashboard
    from emulator.dashboard.views import BackendObservations

__all__ = [
    "DEFAULT_DASHBOARD_PORT",
    "BackendObservations",
    "Dashboard",
    "DemoIdentities",
    "load_identities",
]

#: Loaded on first use (PEP 562): ``run`` without ``--dashboard`` never needs the server, and
#: importing it is a good part of a start-up.
_LAZY = {
    "BackendObservations": "emulator.dashboard.views",
    "Dashboard": "emulator.dashboard.server",
    "DemoIdentities": "emulator.dashboard.identity",
    "load_identities": "emulator.dashboard.identities",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
