"""The "try it" panel with the user's own client files (``--pki`` on a plain directory of
certificate/key pairs) and a configurable try path (``--try-path``), over real sockets."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulator.dashboard import load_identities
from emulator.pki import CA
from emulator.pki.demo import (
    INTERMEDIATE_CA,
    INTERMEDIATE_CA_KEY,
    DemoPki,
    DemoPkiError,
)
from tests.helpers.dashboard import api, running


def _plain_directory(pki: DemoPki, target: Path) -> Path:
    """alice (from the demo's issuing CA, with its intermediate), a stranger, a bare CA file."""
    issuing = CA.from_pem(
        (pki.directory / INTERMEDIATE_CA).read_bytes(),
        (pki.directory / INTERMEDIATE_CA_KEY).read_bytes(),
    )
    target.mkdir()
    alice = issuing.issue_client("alice")
    (target / "alice.pem").write_bytes(alice.chain_pem)
    (target / "alice.key").write_bytes(alice.key_pem)
    stranger = CA("someone else's CA").issue_client("stranger")
    (target / "stranger.crt").write_bytes(stranger.cert_pem)
    (target / "stranger-key.pem").write_bytes(stranger.key_pem)
    (target / "ca.pem").write_bytes(issuing.cert_pem)  # a CA, no key: not an identity
    return target


async def test_plain_directory_pairs_are_tried_on_the_configured_path(
    demo_pki: DemoPki, tmp_path: Path
) -> None:
    plain = _plain_directory(demo_pki, tmp_path / "clients")
    async with running(demo_pki, identities_dir=plain, try_path="/orders?region=eu") as run:
        dashboard, gateway = run.dashboard, run.gateway
        assert dashboard.port is not None
        config = (await api(dashboard.port, "GET", "/api/config")).json()
        keys = [identity["key"] for identity in config["try"]["identities"]]
        assert keys == ["alice", "stranger", "none"]
        answer = await api(dashboard.port, "POST", "/api/try", {"identity": "alice"})
        assert answer.status == 200
        results = {r["mode"]: r for r in answer.json()["results"]}
        assert results["Strict"]["status"] == 200
        assert results["Strict"]["verification"] == "SUCCESS"
        stranger = await api(dashboard.port, "POST", "/api/try", {"identity": "stranger"})
        by_mode = {r["mode"]: r for r in stranger.json()["results"]}
        assert by_mode["Strict"]["status"] == 400
        assert by_mode["Passthrough"]["verification"] == "PASSTHROUGH"
        uris = [record.originalRequestUriWithArgs for record in gateway.access_log]
        assert uris
        assert all(uri.startswith("/orders?region=eu&appgw-dashboard-try=") for uri in uris)


def test_a_key_that_is_not_the_certificates_is_an_error_naming_both(tmp_path: Path) -> None:
    directory = tmp_path / "clients"
    directory.mkdir()
    ca = CA("unit")
    (directory / "bob.pem").write_bytes(ca.issue_client("bob").cert_pem)
    (directory / "bob.key").write_bytes(ca.issue_client("other").key_pem)
    with pytest.raises(DemoPkiError, match=r"bob\.key is not the key of bob\.pem") as caught:
        load_identities(directory)
    assert caught.value.fix == "put the key of bob.pem in bob.key"


def test_a_directory_without_pairs_says_what_to_put_there(tmp_path: Path) -> None:
    with pytest.raises(DemoPkiError, match="no client certificate with its key") as caught:
        load_identities(tmp_path)
    assert caught.value.fix is not None
    assert "NAME.pem" in caught.value.fix


def test_try_path_is_checked_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    from emulator.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(["up", "--try-path", "orders"])
    assert exited.value.code == 2
    assert "the try path must start with '/'" in capsys.readouterr().err
