"""Fixtures of the end-to-end tests; the code behind them lives in :mod:`tests.helpers`."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio

from tests.helpers.http import TLS_VERSIONS
from tests.helpers.pki import PkiBundle, template_parameters
from tests.helpers.routing import RoutingPki, make_routing_pki
from tests.helpers.stack import DEMO_LISTEN, Stack, demo_gateway_template, start_stack


@pytest.fixture(params=TLS_VERSIONS, ids=["tls12", "tls13"])
def tls_version(request: pytest.FixtureRequest) -> ssl.TLSVersion:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def demo_stack(pki: PkiBundle, nursery: trio.Nursery, tmp_path: Path) -> Stack:
    """The `up` gateway: Strict and Passthrough listeners forwarding the client certificate."""
    return await start_stack(
        nursery,
        demo_gateway_template(),
        template_parameters(pki),
        tmp_path=tmp_path,
        listen=DEMO_LISTEN,
        backend_pool="stub-backend",
    )


@pytest.fixture(scope="module")
def rpki() -> RoutingPki:
    """The routing example's certificates (several server names, a partner CA)."""
    return make_routing_pki()
