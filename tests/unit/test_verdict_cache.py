"""The Strict verdict cache behind ``assess_handshake``: same answers as without it, never stale.

A cached decision is compared with a fresh one computed at the same time with the cache emptied
first: equality proves the cache changes nothing, identity (``is``) shows whether an answer came
from the cache. The OpenSSL errors handed to ``assess_handshake`` are the ones the emulation
finds (``verify_chain``), which ``test_chain`` checks against real handshakes.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from emulator.arm.certdata import TrustedClientCa
from emulator.core.tls import policy as tls_policy
from emulator.core.tls.chain import verify_chain
from emulator.core.tls.ocsp import OcspOutcome, OcspStatus
from emulator.core.tls.policy import (
    VERDICT_CACHE_SIZE,
    CertDecision,
    VerdictCache,
    VerifyLog,
    resolve_ocsp,
)
from emulator.model import ClientAuthMode, RevocationMode, SslProfile
from emulator.pki import CA

#: The tests' "now": certificates get validity windows around it, so every time is exact.
T0 = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
DAY = datetime.timedelta(days=1)
SECOND = datetime.timedelta(seconds=1)
OCSP_URL = "http://ocsp.verdict-cache.test/"
#: The cache under test, as a port runtime owns one.
_VERDICTS = VerdictCache(VERDICT_CACHE_SIZE)


def assess_handshake(
    profile: SslProfile | None,
    *,
    presented: Sequence[x509.Certificate],
    log: VerifyLog | None,
    at: datetime.datetime,
) -> CertDecision:
    """:func:`emulator.core.tls.policy.assess_handshake` through the cache under test."""
    return tls_policy.assess_handshake(
        profile, presented=presented, log=log, at=at, verdicts=_VERDICTS
    )


Chain = tuple[x509.Certificate, ...]


@dataclass(frozen=True)
class Chains:
    """What clients present, each a leaf with its intermediates, validity exact around T0."""

    root: CA
    issuing: CA
    upload: TrustedClientCa
    valid: Chain
    expired: Chain
    not_yet_valid: Chain
    unrelated: Chain
    #: Issued by the root itself: the chain verifies, the issuer DN is not the upload's lowest CA.
    by_root: Chain
    #: The issuing CA's own certificate presented as a client certificate.
    ca_as_client: Chain
    with_ocsp: Chain


@pytest.fixture(scope="module")
def chains() -> Chains:
    """Chains of CAs of their own, not the suite's PKI: a cached verdict is checked at instants
    days around T0, so the CAs must be valid from a month before it (the suite's start an hour
    before the session)."""
    root = CA("Cache Root", not_before=T0 - 30 * DAY, not_after=T0 + 3650 * DAY)
    issuing = root.intermediate(
        "Cache Issuing CA", not_before=T0 - 30 * DAY, not_after=T0 + 3650 * DAY
    )
    stranger = CA("Cache Stranger Root").intermediate("Cache Stranger CA")

    def leaf(
        ca: CA,
        name: str,
        *,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
        ocsp_url: str | None = None,
    ) -> Chain:
        issued = ca.issue_client(
            name, not_before=not_before, not_after=not_after, ocsp_url=ocsp_url
        )
        return (issued.cert, *issued.chain)

    return Chains(
        root=root,
        issuing=issuing,
        upload=TrustedClientCa("cache-upload", (issuing.cert, root.cert)),
        valid=leaf(issuing, "cache-valid", not_before=T0 - DAY, not_after=T0 + DAY),
        expired=leaf(issuing, "cache-expired", not_before=T0 - 10 * DAY, not_after=T0 - DAY),
        not_yet_valid=leaf(issuing, "cache-early", not_before=T0 + DAY, not_after=T0 + 9 * DAY),
        unrelated=leaf(stranger, "cache-stranger"),
        by_root=leaf(root, "cache-by-root", not_before=T0 - DAY, not_after=T0 + DAY),
        ca_as_client=(issuing.cert,),
        with_ocsp=leaf(
            issuing, "cache-ocsp", not_before=T0 - DAY, not_after=T0 + DAY, ocsp_url=OCSP_URL
        ),
    )


def strict(
    chains: Chains, *, issuer_dn: bool = False, revocation: RevocationMode = RevocationMode.NONE
) -> SslProfile:
    return SslProfile(
        "cache-profile", ClientAuthMode.STRICT, issuer_dn, revocation, (chains.upload,), None
    )


def copy_of(chain: Chain) -> Chain:
    """The same certificates as new objects, as each connection's handshake makes them."""
    return tuple(x509.load_der_x509_certificate(c.public_bytes(Encoding.DER)) for c in chain)


def openssl_log(chains: Chains, chain: Chain, at: datetime.datetime) -> VerifyLog:
    """What the verify callback would have recorded for ``chain`` at ``at``."""
    result = verify_chain(chain, chains.upload.certificates, at=at)
    return VerifyLog([(p.errno, p.depth) for p in result.errors], calls=1)


def fresh(
    profile: SslProfile,
    chain: Sequence[x509.Certificate],
    log: VerifyLog | None,
    at: datetime.datetime,
) -> CertDecision:
    """The decision without the cache's help (computed on an empty cache)."""
    _VERDICTS.clear()
    return assess_handshake(profile, presented=chain, log=log, at=at)


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    _VERDICTS.clear()
    yield
    _VERDICTS.clear()


# --- same verdict with and without the cache ---------------------------------------------------

CASES = {
    "valid": ("valid", False, "SUCCESS"),
    "expired": ("expired", False, "FAILED:certificate has expired"),
    "not-yet-valid": ("not_yet_valid", False, "FAILED:certificate is not yet valid"),
    "unrelated-ca": ("unrelated", False, "FAILED:unable to get local issuer certificate"),
    "issuer-dn-mismatch": (
        "by_root",
        True,
        "FAILED:Unable to verify the client certificate issuer",
    ),
    "ca-as-client": ("ca_as_client", False, "FAILED:unsupported certificate purpose"),
}


@pytest.mark.parametrize("with_handshake_errors", [True, False], ids=["handshake", "emulated"])
@pytest.mark.parametrize("case", list(CASES))
def test_cached_verdict_equals_the_uncached_one(
    chains: Chains, case: str, with_handshake_errors: bool
) -> None:
    attribute, issuer_dn, expected = CASES[case]
    chain: Chain = getattr(chains, attribute)
    profile = strict(chains, issuer_dn=issuer_dn)
    later = T0 + SECOND

    def log(at: datetime.datetime) -> VerifyLog | None:
        return openssl_log(chains, chain, at) if with_handshake_errors else None

    first = assess_handshake(profile, presented=copy_of(chain), log=log(T0), at=T0)
    again = assess_handshake(profile, presented=copy_of(chain), log=log(later), at=later)
    uncached = fresh(profile, copy_of(chain), log(later), later)

    assert again == uncached
    assert again.ssl_client_verify == expected
    assert first.ssl_client_verify == expected


@pytest.mark.parametrize("case", ["valid", "unrelated-ca", "issuer-dn-mismatch", "ca-as-client"])
def test_a_reconnecting_client_gets_the_remembered_decision(chains: Chains, case: str) -> None:
    attribute, issuer_dn, _ = CASES[case]
    chain: Chain = getattr(chains, attribute)
    profile = strict(chains, issuer_dn=issuer_dn)

    first = assess_handshake(
        profile, presented=copy_of(chain), log=openssl_log(chains, chain, T0), at=T0
    )
    again = assess_handshake(
        profile, presented=copy_of(chain), log=openssl_log(chains, chain, T0), at=T0 + SECOND
    )

    assert again is first


@pytest.mark.parametrize("case", ["expired", "not-yet-valid"])
def test_validity_failures_are_never_remembered(chains: Chains, case: str) -> None:
    # Their explanation names the time they were checked at, which changes every time.
    chain: Chain = getattr(chains, CASES[case][0])
    profile = strict(chains)

    first = assess_handshake(profile, presented=chain, log=openssl_log(chains, chain, T0), at=T0)
    later = T0 + 5 * SECOND
    again = assess_handshake(
        profile, presented=chain, log=openssl_log(chains, chain, later), at=later
    )

    assert again is not first
    assert first.explanation != again.explanation
    assert len(_VERDICTS) == 0


# --- time: a verdict is only reused inside its certificates' validity ------------------------


def test_verdict_cached_before_expiry_is_recomputed_after_it(chains: Chains) -> None:
    profile = strict(chains)
    leaf = chains.valid[0]
    end = leaf.not_valid_after_utc
    cached = assess_handshake(profile, presented=chains.valid, log=None, at=T0)
    assert cached.allowed

    at_end = assess_handshake(profile, presented=chains.valid, log=None, at=end)
    after = assess_handshake(profile, presented=chains.valid, log=None, at=end + SECOND)

    # The last second of validity is still valid (OpenSSL: expired when not_after < now).
    assert at_end is cached
    assert not after.allowed
    assert after.ssl_client_verify == "FAILED:certificate has expired"
    assert after == fresh(profile, chains.valid, None, end + SECOND)


def test_verdict_cached_while_valid_is_recomputed_before_not_before(chains: Chains) -> None:
    profile = strict(chains)
    start = chains.valid[0].not_valid_before_utc
    cached = assess_handshake(profile, presented=chains.valid, log=None, at=T0)

    at_start = assess_handshake(profile, presented=chains.valid, log=None, at=start)
    before = assess_handshake(profile, presented=chains.valid, log=None, at=start - SECOND)

    assert at_start is cached
    assert before.ssl_client_verify == "FAILED:certificate is not yet valid"


def test_verdict_is_recomputed_outside_its_window_even_with_the_same_handshake_errors(
    chains: Chains,
) -> None:
    # The key (profile, chain, errors) matches; only the time says the entry no longer holds.
    profile = strict(chains, revocation=RevocationMode.OCSP)
    chain = chains.with_ocsp
    cached = assess_handshake(profile, presented=chain, log=VerifyLog(calls=1), at=T0)
    late = chain[0].not_valid_after_utc + SECOND

    again = assess_handshake(profile, presented=chain, log=VerifyLog(calls=1), at=late)

    assert again is not cached
    assert again == fresh(profile, chain, VerifyLog(calls=1), late)


def test_an_expiring_uploaded_ca_bounds_the_window(chains: Chains) -> None:
    root = CA("Short Root", not_before=T0 - DAY, not_after=T0 + 2 * DAY)
    issuing = root.intermediate("Short Issuing", not_before=T0 - DAY, not_after=T0 + DAY)
    client = issuing.issue_client("short-client", not_before=T0 - DAY, not_after=T0 + 30 * DAY)
    upload = TrustedClientCa("short", (issuing.cert, root.cert))
    profile = SslProfile(
        "short", ClientAuthMode.STRICT, False, RevocationMode.NONE, (upload,), None
    )
    chain = (client.cert,)
    cached = assess_handshake(profile, presented=chain, log=None, at=T0)

    after_ca = assess_handshake(profile, presented=chain, log=None, at=T0 + DAY + SECOND)

    assert cached.allowed
    assert after_ca.ssl_client_verify == "FAILED:certificate has expired"


# --- what never shares an entry ------------------------------------------------------------------


def test_an_equal_but_distinct_profile_gets_its_own_entry(chains: Chains) -> None:
    first = strict(chains)
    twin = strict(chains)
    assert first == twin
    assert first is not twin

    a = assess_handshake(first, presented=chains.valid, log=VerifyLog(calls=1), at=T0)
    b = assess_handshake(twin, presented=chains.valid, log=VerifyLog(calls=1), at=T0)

    assert a == b
    assert a is not b
    assert len(_VERDICTS) == 2


def test_profiles_with_different_settings_never_share_a_verdict(chains: Chains) -> None:
    chain = chains.by_root
    lenient = assess_handshake(strict(chains), presented=chain, log=VerifyLog(calls=1), at=T0)
    checking = assess_handshake(
        strict(chains, issuer_dn=True), presented=chain, log=VerifyLog(calls=1), at=T0
    )

    assert lenient.allowed
    assert not checking.allowed
    assert checking.ssl_client_verify == "FAILED:Unable to verify the client certificate issuer"


@pytest.mark.parametrize(
    ("errors", "expected"),
    [
        ([], "SUCCESS"),
        ([(20, 0)], "FAILED:unable to get local issuer certificate"),
        ([(26, 0)], "FAILED:unsupported certificate purpose"),
        ([(20, 0), (26, 0)], "FAILED:unsupported certificate purpose"),
    ],
)
def test_different_openssl_errors_never_share_a_verdict(
    chains: Chains, errors: list[tuple[int, int]], expected: str
) -> None:
    profile = strict(chains)
    # Another error list for the same chain and profile is remembered first.
    for other in ([], [(20, 0)], [(26, 0)], [(20, 0), (26, 0)]):
        if other != errors:
            assess_handshake(
                profile, presented=chains.valid, log=VerifyLog(list(other), calls=1), at=T0
            )

    decision = assess_handshake(
        profile, presented=chains.valid, log=VerifyLog(list(errors), calls=1), at=T0
    )

    assert decision.ssl_client_verify == expected
    assert decision == fresh(profile, chains.valid, VerifyLog(list(errors), calls=1), T0)


def test_handshake_errors_and_no_handshake_never_share_a_verdict(chains: Chains) -> None:
    # log=None means "no handshake: verify here"; an empty log means "OpenSSL found nothing".
    profile = strict(chains)
    trusted_openssl = assess_handshake(
        profile, presented=chains.unrelated, log=VerifyLog(calls=1), at=T0
    )
    emulated = assess_handshake(profile, presented=chains.unrelated, log=None, at=T0)

    assert trusted_openssl.allowed
    assert not emulated.allowed


def test_different_chains_never_share_a_verdict(chains: Chains) -> None:
    profile = strict(chains)
    good = assess_handshake(profile, presented=chains.valid, log=None, at=T0)
    stranger = assess_handshake(profile, presented=chains.unrelated, log=None, at=T0)
    leaf_only = assess_handshake(profile, presented=chains.valid[:1], log=None, at=T0)

    assert good.allowed
    assert not stranger.allowed
    # The upload holds the intermediate, so the leaf alone verifies too, as its own entry.
    assert leaf_only.allowed
    assert leaf_only is not good
    assert len(_VERDICTS) == 3


def test_a_tampered_copy_with_the_same_signature_never_gets_the_originals_verdict(
    chains: Chains,
) -> None:
    profile = strict(chains)
    der = chains.valid[0].public_bytes(Encoding.DER)
    assert b"cache-valid" in der  # in the subject CN and the SAN
    forged = x509.load_der_x509_certificate(der.replace(b"cache-valid", b"cache-vaLid"))
    assert forged.signature == chains.valid[0].signature
    original = assess_handshake(profile, presented=chains.valid, log=None, at=T0)

    decision = assess_handshake(profile, presented=(forged, *chains.valid[1:]), log=None, at=T0)

    assert original.allowed
    assert decision.ssl_client_verify == "FAILED:certificate signature failure"


def test_openssl_validity_errors_inside_the_window_are_not_remembered(chains: Chains) -> None:
    # OpenSSL's clock and ``at`` may disagree near a boundary; the explanation names ``at``.
    profile = strict(chains)
    log = [(10, 0)]
    first = assess_handshake(
        profile, presented=chains.valid, log=VerifyLog(list(log), calls=1), at=T0
    )
    later = T0 + 5 * SECOND

    again = assess_handshake(
        profile, presented=chains.valid, log=VerifyLog(list(log), calls=1), at=later
    )

    assert again == fresh(profile, chains.valid, VerifyLog(list(log), calls=1), later)
    assert again.explanation != first.explanation


# --- OCSP stays per connection -------------------------------------------------------------------


def test_a_cached_pending_ocsp_decision_is_settled_per_connection(chains: Chains) -> None:
    profile = strict(chains, issuer_dn=True, revocation=RevocationMode.OCSP)
    chain = chains.with_ocsp
    pending = assess_handshake(profile, presented=copy_of(chain), log=VerifyLog(calls=1), at=T0)
    assert pending.ocsp_pending

    revoked = resolve_ocsp(pending, OcspOutcome(OcspStatus.REVOKED))
    next_connection = assess_handshake(
        profile, presented=copy_of(chain), log=VerifyLog(calls=1), at=T0
    )
    good = resolve_ocsp(next_connection, OcspOutcome(OcspStatus.GOOD))

    assert not revoked.allowed
    assert next_connection is pending
    assert next_connection.ocsp_pending
    assert next_connection.verdict is not None
    assert next_connection.verdict.ocsp is not None
    assert next_connection.verdict.ocsp.url == OCSP_URL
    assert good.allowed


# --- the bound ----------------------------------------------------------------------------------


def test_the_cache_never_holds_more_than_its_bound(chains: Chains) -> None:
    base = strict(chains)
    sizes = []
    last = None
    for i in range(VERDICT_CACHE_SIZE * 2 + 10):
        profile = replace(base, name=f"profile-{i}")
        last = (
            profile,
            assess_handshake(profile, presented=chains.valid, log=VerifyLog(calls=1), at=T0),
        )
        sizes.append(len(_VERDICTS))

    assert max(sizes) == VERDICT_CACHE_SIZE
    assert last is not None
    profile, decision = last
    assert (
        assess_handshake(profile, presented=chains.valid, log=VerifyLog(calls=1), at=T0) is decision
    )


def test_non_strict_profiles_use_no_cache(chains: Chains) -> None:
    passthrough = replace(strict(chains), client_auth=ClientAuthMode.PASSTHROUGH)

    decision = assess_handshake(
        passthrough, presented=chains.valid, log=VerifyLog([(20, 0)], calls=1), at=T0
    )
    none = assess_handshake(None, presented=(), log=None, at=T0)

    assert decision.ssl_client_verify == "PASSTHROUGH"
    assert none.allowed
    assert len(_VERDICTS) == 0
