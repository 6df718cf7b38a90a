"""Log messages never carry control characters raw (issue #15, log injection)."""

from __future__ import annotations

import logging

import pytest

from emulator.logsafe import EscapeControls, escape_controls, escaped_logger


@pytest.mark.parametrize(
    ("text", "logged"),
    [
        ("plain text, 100% ok: caf\u00e9 \\C3\\BC", "plain text, 100% ok: caf\u00e9 \\C3\\BC"),
        ("a\nb\r\n", "a\\x0ab\\x0d\\x0a"),
        ("\x1b[2J\x9b2J\x7f\x00\t", "\\x1b[2J\\x9b2J\\x7f\\x00\\x09"),
        ("NEL\x85 LS\u2028 PS\u2029", "NEL\\x85 LS\\u2028 PS\\u2029"),
    ],
)
def test_escape_controls(text: str, logged: str) -> None:
    assert escape_controls(text) == logged


def test_a_logger_escapes_every_argument_for_every_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = escaped_logger("emulator.test_logsafe")
    caplog.set_level(logging.INFO, logger="emulator.test_logsafe")

    logger.info("sni=%s count=%d %s", "a\nforged line", 3, ValueError("x\ry"))

    (record,) = caplog.records
    assert record.getMessage() == "sni=a\\x0aforged line count=3 x\\x0dy"
    assert caplog.text.count("\n") == 1  # one line, ended by the handler
    assert sum(isinstance(f, EscapeControls) for f in escaped_logger(logger.name).filters) == 1
