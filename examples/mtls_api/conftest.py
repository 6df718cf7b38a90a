"""Fixtures: our API, and our gateway template run by the emulator in front of it.

``appgw_pki``, ``appgw_gateway``, ``appgw_client`` and ``appgw_mode`` come from the
appgw-emulator pytest plugin, which installing the package registers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from orders_api import OrdersApi

from emulator.sync import Gateway
from emulator.testing import AppgwPki, GatewayFactory

#: The gateway as we deploy it: one Strict and one Passthrough HTTPS listener (ports 443 and
#: 444), both forwarding the client certificate to the ``orders-api`` pool.
TEMPLATE = Path(__file__).with_name("gateway.json")
#: Who may read orders: certificate common name → role.
ALLOWED = {"appgw-test-client": "reader"}


@pytest.fixture
def orders_api(appgw_pki: AppgwPki) -> Iterator[OrdersApi]:
    """Our API, trusting the same client CA chain the gateway's SSL profile holds."""
    with OrdersApi(trusted_ca_pem=appgw_pki.trusted_client_ca_pem, allowed=ALLOWED) as api:
        yield api


@pytest.fixture
def gateway(appgw_gateway: GatewayFactory, appgw_pki: AppgwPki, orders_api: OrdersApi) -> Gateway:
    """Our template, with the test PKI's certificates, in front of ``orders_api``.

    ``listen`` is left to the plugin (every frontend port on a free local port), ``backends``
    points the template's pool at the API, and ``server_ca`` is the root that issued the PFX
    (an Azure PFX carries the leaf and intermediates, not the root).
    """
    return appgw_gateway(
        template=TEMPLATE,
        parameters=appgw_pki.demo_parameters(),
        backends={"orders-api": orders_api.address},
        server_ca=appgw_pki.server_ca,
    )
