"""ProxyLimits: one frozen value holds every client-connection timeout and size limit."""

from __future__ import annotations

import dataclasses

import pytest

from emulator.core.limits import ProxyLimits


def test_defaults_are_the_gateways_documented_limits() -> None:
    limits = ProxyLimits()
    assert limits.max_request_header_bytes == 32 * 1024  # application-gateway limits
    assert limits.max_request_body_bytes == 4 * 1024**3  # v2: 4 GB
    assert limits.request_header_timeout_s == 60.0  # nginx client_header_timeout


def test_limits_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ProxyLimits().keepalive_idle_s = 1.0  # type: ignore[misc]  # the point of the test


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(ProxyLimits)])
@pytest.mark.parametrize("value", [0, -1])
def test_a_limit_that_is_not_positive_is_refused_by_name(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=f"ProxyLimits.{field} must be positive"):
        ProxyLimits(**{field: value})
