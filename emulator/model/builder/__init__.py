"""ARM gateway resource → :class:`~emulator.model.types.GatewayConfig`, one module per sub-resource.

:func:`build_gateway_config` (in :mod:`.gateway`) drives the build; each module builds one kind of
sub-resource from its ``properties`` collection and resolves the references it holds:

``ssl``        the gateway SSL policy, server certificates, trusted client CAs, SSL profiles
``listeners``  frontend ports and HTTP(S) listeners
``backends``   pools, trusted root certificates, health probes, backend settings
``rewrites``   rewrite rule sets and their conditions and actions
``routing``    redirects, URL path maps, request routing rules and their priorities
``state``      the state of one build: collected problems, notes, warnings, the build's time
"""

from emulator.model.builder.gateway import build_gateway_config

__all__ = ["build_gateway_config"]
