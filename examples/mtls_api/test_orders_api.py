"""Our API's mutual-TLS contract, through the emulated gateway, under Strict and Passthrough.

| profile | client presents | who answers | status |
|---|---|---|---|
| either | valid certificate, allowed subject | the API | 200 |
| either | valid certificate, other subject | the API | 403 |
| Strict | nothing / expired certificate | the gateway | 400 |
| Passthrough | nothing | the API | 401 |
| Passthrough | expired / unrelated-CA certificate | the API | 403 |
"""

from __future__ import annotations

import pytest

from emulator.sync import Gateway
from emulator.testing import AppgwPki, ClientFactory

#: The template's listener for each SSL profile mode.
LISTENERS = {"strict": "strict-listener", "passthrough": "passthrough-listener"}


@pytest.mark.appgw_modes("strict", "passthrough")
def test_allowed_subject_reads_orders(
    gateway: Gateway, appgw_client: ClientFactory, appgw_pki: AppgwPki, appgw_mode: str
) -> None:
    client = appgw_client(gateway, appgw_pki.client, listener=LISTENERS[appgw_mode])
    response = client.get("/orders")
    assert response.status == 200
    assert response.json()["caller"] == "appgw-test-client"
    assert response.json()["role"] == "reader"


@pytest.mark.appgw_modes("strict", "passthrough")
def test_other_subject_from_our_ca_is_forbidden(
    gateway: Gateway, appgw_client: ClientFactory, appgw_pki: AppgwPki, appgw_mode: str
) -> None:
    stranger = appgw_pki.issue_client("partner-batch-job")
    response = appgw_client(gateway, stranger, listener=LISTENERS[appgw_mode]).get("/orders")
    assert response.status == 403
    assert response.json() == {"error": "subject CN=partner-batch-job is not allowed"}


def test_strict_gateway_rejects_missing_certificate_before_the_api(
    gateway: Gateway, appgw_client: ClientFactory
) -> None:
    response = appgw_client(gateway, listener=LISTENERS["strict"]).get("/orders")
    assert response.status == 400
    assert b"No required SSL certificate was sent" in response.body
    gateway.wait_for_access()
    assert gateway.access_log[-1].serverRouted == ""  # the API was never contacted


def test_strict_gateway_rejects_expired_certificate(
    gateway: Gateway, appgw_client: ClientFactory, appgw_pki: AppgwPki
) -> None:
    response = appgw_client(gateway, appgw_pki.expired, listener=LISTENERS["strict"]).get("/")
    assert response.status == 400
    assert b"The SSL certificate error" in response.body


def test_passthrough_forwards_missing_certificate_and_api_asks_for_one(
    gateway: Gateway, appgw_client: ClientFactory
) -> None:
    response = appgw_client(gateway, listener=LISTENERS["passthrough"]).get("/orders")
    assert response.status == 401


def test_passthrough_forwards_expired_certificate_and_api_denies_it(
    gateway: Gateway, appgw_client: ClientFactory, appgw_pki: AppgwPki
) -> None:
    client = appgw_client(gateway, appgw_pki.expired, listener=LISTENERS["passthrough"])
    response = client.get("/orders")
    assert response.status == 403
    assert response.json() == {"error": "client certificate expired"}


def test_passthrough_api_denies_certificate_from_another_ca(
    gateway: Gateway, appgw_client: ClientFactory, appgw_pki: AppgwPki
) -> None:
    client = appgw_client(gateway, appgw_pki.unrelated, listener=LISTENERS["passthrough"])
    response = client.get("/orders")
    assert response.status == 403
    assert response.json() == {"error": "client certificate not issued by our CA"}


def test_passthrough_client_cannot_forge_the_certificate_header(
    gateway: Gateway, appgw_client: ClientFactory, appgw_pki: AppgwPki
) -> None:
    forged = appgw_pki.client.cert_pem.decode().replace("\n", "%0A")
    client = appgw_client(gateway, listener=LISTENERS["passthrough"])
    response = client.get("/orders", headers={"X-Client-Cert": forged})
    assert response.status == 401  # the gateway dropped the client's header
