"""What the command line prints: messages, the startup summary, the ready lines, the log format."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence

from emulator.model import (
    GatewayConfig,
)
from emulator.reports.summary import forgeable_certificate_headers

# -- helpers ----------------------------------------------------------------------------------


def say(text: str = "") -> None:
    print(text, flush=True)


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def print_summary(
    config: GatewayConfig, skipped: Sequence[tuple[str, str]] = (), *, strip: bool = False
) -> None:
    """The start-up notes and warnings of ``run`` and ``up`` (stderr, before the ready lines).

    The forgeable-header warnings are the ones ``validate`` prints, in the same words. With
    ``--strip-client-cert-headers`` a conditional rule's header no longer reaches the backend
    with the client's value, so only the other shape (a listener that does not touch a header
    another listener fills for the same pool) is left to warn about.
    """
    for rtype, name in skipped:
        note(f"note: resource {rtype} '{name}' is read and skipped (not part of the gateway)")
    if config.notes:
        note("note: accepted but not emulated locally: " + ", ".join(config.notes))
    for warning in config.warnings:
        note(f"warning: {warning}")
    for hole in forgeable_certificate_headers(config):
        if strip and hole["rewriteRule"]:
            continue
        note(f"WARNING (listener {hole['listener']}): {hole['message']}")
        note(f"  fix: {hole['fix']}")


def print_ready_lines(gateway: object, config: GatewayConfig) -> None:
    from emulator.runtime.gateway import Gateway

    assert isinstance(gateway, Gateway)
    for rule in config.rules:
        listener = rule.listener
        profile = listener.ssl_profile
        mode = (
            profile.client_auth.value
            if profile is not None and profile.client_auth is not None
            else "no client auth"
        )
        say(f"ready: {listener.name} ({mode}) {gateway.url(listener.name)} -> {rule.target_text}")


class _JsonFormatter(logging.Formatter):
    """``--log-format json``: the text log's fields, one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document)


def configure_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
