"""What the gateway logged: the internal errors it survived, and the events a test looks for."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import pytest


def is_internal_error(record: logging.LogRecord) -> bool:
    """An ERROR from the emulator: how the gateway reports a bug it survived."""
    return record.name.startswith("emulator") and record.levelno >= logging.ERROR


def internal_errors(records: Iterable[logging.LogRecord]) -> list[str]:
    """Messages of the internal errors among ``records``."""
    return [r.getMessage() for r in records if is_internal_error(r)]


class ErrorRecords(logging.Handler):
    """Collects internal errors from every thread, for a gateway that outlives one test (pytest's
    ``caplog`` is per test); add it to the ``emulator`` logger and remove it after."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.extend(internal_errors([record]))


def logged(caplog: pytest.LogCaptureFixture, event: str) -> list[str]:
    """Messages of the emulator's log records that contain ``event``."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("emulator") and event in r.getMessage()
    ]


def assert_no_traceback(text: str) -> None:
    """A command's output shows no Python traceback (every error is a stated one)."""
    assert "Traceback" not in text, text
