"""The gateway model: an evaluated ARM gateway resource turned into frozen, resolved objects.

``build_gateway_config`` reads the evaluated ``Microsoft.Network/applicationGateways`` resource
(every ARM expression already evaluated by :mod:`emulator.arm.template`), checks it the way
Azure would at deployment time, resolves every sub-resource reference by id, and returns a
:class:`GatewayConfig`. The running server is ``emulator.runtime.gateway.Gateway``; the two
never share a name.

Every property of the gateway falls in one of three classes, decided here once per object type
(see :mod:`emulator.arm.props`): emulated; known to Azure but meaningless locally (accepted and
listed in ``GatewayConfig.notes``); known and not emulated yet (``UnsupportedFeature``). Anything
else is an ``InvalidJson`` error in ARM's own shape.

The package: :mod:`.types` (the frozen types), :mod:`.variables` (the server variable names),
:mod:`.builder` (the build, one module per sub-resource), :mod:`.overrides` (run-time changes
such as ``--backend``). This module re-exports the public names, so ``from emulator.model
import GatewayConfig`` is the path to use.
"""

from __future__ import annotations

from emulator.model.builder import (
    build_gateway_config,
)
from emulator.model.overrides import (
    with_backend_overrides,
)
from emulator.model.types import (
    DEFAULT_AFFINITY_COOKIE,
    PASSTHROUGH_MIN_API,
    BackendAddress,
    BackendPool,
    BackendSettings,
    Buffering,
    ClientAuthMode,
    GatewayConfig,
    GatewayResourceLike,
    HeaderAction,
    Listener,
    ListenerProtocol,
    PathRule,
    Probe,
    RedirectConfig,
    RedirectType,
    RevocationMode,
    RewriteCondition,
    RewriteRule,
    RewriteRuleSet,
    RoutingRule,
    SslProfile,
    UrlAction,
    UrlPathMap,
)
from emulator.model.variables import (
    CERTIFICATE_VARIABLE_PREFIX,
    COOKIE_VARIABLE_PREFIX,
    PLACEHOLDER,
    SERVER_VARIABLE_NAMES,
    fills_from_certificate,
)

__all__ = [
    "CERTIFICATE_VARIABLE_PREFIX",
    "COOKIE_VARIABLE_PREFIX",
    "DEFAULT_AFFINITY_COOKIE",
    "PASSTHROUGH_MIN_API",
    "PLACEHOLDER",
    "SERVER_VARIABLE_NAMES",
    "BackendAddress",
    "BackendPool",
    "BackendSettings",
    "Buffering",
    "ClientAuthMode",
    "GatewayConfig",
    "GatewayResourceLike",
    "HeaderAction",
    "Listener",
    "ListenerProtocol",
    "PathRule",
    "Probe",
    "RedirectConfig",
    "RedirectType",
    "RevocationMode",
    "RewriteCondition",
    "RewriteRule",
    "RewriteRuleSet",
    "RoutingRule",
    "SslProfile",
    "UrlAction",
    "UrlPathMap",
    "build_gateway_config",
    "fills_from_certificate",
    "with_backend_overrides",
]
