"""``--compare-modes``: each mTLS listener of the user's template served twice, as configured and
with the other client-certificate mode, so Strict and Passthrough are compared on the user's own
configuration (their rules, rewrite sets, backend) rather than on the demo's.

The twin of a listener is a copy with its own SSL profile and a routing rule copied from the
original's, on a frontend port of its own (a port number the template does not use: the
runtime groups listeners by frontend port, and a twin sharing the original's port would never be
chosen). That synthetic port is what ``X-Forwarded-Port`` and ``server_port`` carry for it.

* The twin of a **Strict** listener runs **Passthrough**; where the template's API version
  predates 2025-03-01 Azure would refuse Passthrough, and the twin's note says so.
* The twin of a **Passthrough** listener runs **Strict**, which needs a trusted client CA: the one
  given (``--client-ca``), else there is no twin and the note says why.

Pure functions over the model: values in, values out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from emulator.arm.certdata import TrustedClientCa
from emulator.model import (
    PASSTHROUGH_MIN_API,
    ClientAuthMode,
    GatewayConfig,
    ListenerProtocol,
    RevocationMode,
)

__all__ = ["TWIN_SUFFIX", "ModeTwins", "with_mode_twins"]

#: A twin's listener, rule and profile name: the original's plus this and the twin's mode.
TWIN_SUFFIX: Final = "-as-"
#: Twin frontend ports are taken from here upwards (above the usual 80/443/8080 range, so a
#: synthetic port is recognisable), skipping any the template uses.
TWIN_PORT_START: Final = 60000
_MAX_PORT: Final = 65535


@dataclass(frozen=True, slots=True)
class ModeTwins:
    """The config with the twins, what each twin is a twin of, and a line per twin (or miss)."""

    config: GatewayConfig
    twin_of: dict[str, str]
    notes: tuple[str, ...]

    @property
    def ports(self) -> dict[int, int]:
        """``listen`` entries for the twins' synthetic frontend ports: each on a free port."""
        names = set(self.twin_of)
        return {
            rule.listener.frontend_port: 0
            for rule in self.config.rules
            if rule.listener.name in names
        }


def _free_ports(used: set[int]) -> list[int]:
    return [
        p
        for p in (*range(TWIN_PORT_START, _MAX_PORT + 1), *range(1, TWIN_PORT_START))
        if p not in used
    ]


def with_mode_twins(config: GatewayConfig, *, strict_trust: TrustedClientCa | None) -> ModeTwins:
    """Add the other-mode twin of every routed HTTPS listener with client authentication.

    ``strict_trust``: the trusted client CA upload a Strict twin (of a Passthrough listener)
    verifies against; None: such listeners get no twin, and a note says what to pass.
    """
    used = {rule.listener.frontend_port for rule in config.rules} | {
        listener.frontend_port for listener in config.all_listeners
    }
    free = iter(_free_ports(used))
    rules = list(config.rules)
    twins = []
    twin_of: dict[str, str] = {}
    notes: list[str] = []
    seen: set[str] = set()
    for rule in config.rules:
        listener = rule.listener
        profile = listener.ssl_profile
        if (
            listener.protocol is not ListenerProtocol.HTTPS
            or profile is None
            or profile.client_auth is None
            or listener.name in seen
        ):
            continue
        seen.add(listener.name)
        if profile.client_auth is ClientAuthMode.STRICT:
            mode = ClientAuthMode.PASSTHROUGH
            # Passthrough verifies nothing: no issuer-DN or revocation check either.
            twin_profile = replace(
                profile,
                name=f"{profile.name}{TWIN_SUFFIX}passthrough",
                client_auth=mode,
                verify_issuer_dn=False,
                revocation=RevocationMode.NONE,
            )
        else:
            mode = ClientAuthMode.STRICT
            if strict_trust is None:
                notes.append(
                    f"listener '{listener.name}' (Passthrough) has no Strict twin: Strict needs "
                    "a trusted client CA; pass --client-ca CERT (the CA chain your clients' "
                    "certificates come from)"
                )
                continue
            twin_profile = replace(
                profile,
                name=f"{profile.name}{TWIN_SUFFIX}strict",
                client_auth=mode,
                trusted_client_cas=(strict_trust,),
            )
        suffix = f"{TWIN_SUFFIX}{mode.value.lower()}"
        port = next(free)
        twin = replace(
            listener,
            name=f"{listener.name}{suffix}",
            frontend_port=port,
            frontend_port_name=f"{listener.frontend_port_name}{suffix}",
            ssl_profile=twin_profile,
        )
        twins.append(twin)
        rules.append(replace(rule, name=f"{rule.name}{suffix}", listener=twin))
        twin_of[twin.name] = listener.name
        line = (
            f"listener '{twin.name}' is the {mode.value} twin of '{listener.name}' "
            f"(--compare-modes), on synthetic frontend port {port}"
        )
        if mode is ClientAuthMode.PASSTHROUGH and config.api_version < PASSTHROUGH_MIN_API:
            line += (
                f"; the template's API version {config.api_version} predates "
                f"{PASSTHROUGH_MIN_API}, where Azure would refuse Passthrough"
            )
        notes.append(line)
    twinned = replace(
        config,
        listeners=(*config.listeners, *twins),
        all_listeners=(*config.all_listeners, *twins),
        rules=tuple(rules),
        warnings=(*config.warnings, *notes),
    )
    return ModeTwins(twinned, twin_of, tuple(notes))
