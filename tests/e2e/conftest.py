"""Fixtures for the end-to-end tests; the helpers they use live in :mod:`tests.e2e.stack`."""

from tests.e2e.stack import demo_stack, pki, tls_version

__all__ = ["demo_stack", "pki", "tls_version"]
