"""Fixtures for the whole suite; the code behind them lives in :mod:`tests.helpers`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emulator.pki.demo import DemoPki, write_demo_pki
from tests.helpers.logs import internal_errors
from tests.helpers.pki import PkiBundle


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiBundle:
    """The suite's PKI (client root → issuing CA → clients, server root → ``localhost``)."""
    return PkiBundle(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def no_internal_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail when the gateway logged an ERROR: it survives a bug in one connection (it logs and
    answers 500), so a test that only looks at replies would not notice one."""
    yield
    assert internal_errors(caplog.get_records("call")) == []


@pytest.fixture(scope="module")
def demo_pki(tmp_path_factory: pytest.TempPathFactory) -> DemoPki:
    """The files ``certs init`` writes, for the tests that read them as a user would (a test that
    writes into the directory makes its own)."""
    return write_demo_pki(tmp_path_factory.mktemp("demo") / "certs")
