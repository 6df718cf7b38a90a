"""A live web dashboard for ``up`` and ``run``: the gateway as configured, the requests it served,
Strict versus Passthrough side by side ("try it"), and a certificate inspector.

Served by the emulator itself (trio + h11) from static files shipped in this package; no
framework, no CDN, works offline. See the README's "Dashboard" section for the JSON API.
"""

from emulator.dashboard.identities import load_identities
from emulator.dashboard.identity import DemoIdentities
from emulator.dashboard.server import DEFAULT_DASHBOARD_PORT, Dashboard
from emulator.dashboard.views import BackendObservations

__all__ = [
    "DEFAULT_DASHBOARD_PORT",
    "BackendObservations",
    "Dashboard",
    "DemoIdentities",
    "load_identities",
]
