"""Log lines that a client cannot forge: control characters in a message are escaped.

The gateway logs what clients send: the SNI host name, Host and other header values, request
targets, names from client certificates, OCSP addresses taken from them. A line feed in any of
them would end the line and let the client write one of its own (an ``emulator.access ... 200
verify=SUCCESS`` line that never happened), and ESC sequences would drive the terminal that
shows the log. nginx escapes such bytes in its access log as ``\\xXX``; every logger of the
emulator does the same to the whole message, whatever argument carried the byte.

:func:`escaped_logger` is ``logging.getLogger`` with :class:`EscapeControls` attached. The filter
sits on the logger, not on a handler, so it works for every handler: the command line's,
pytest's ``caplog``, and whatever an application embedding the gateway installs.
"""

from __future__ import annotations

import logging
import re
from typing import Final

__all__ = ["EscapeControls", "escape_controls", "escaped_logger"]

#: What a log message never carries raw: C0 controls (line feed, carriage return, ESC, tab...),
#: DEL, C1 controls (0x9B is a one-byte CSI on some terminals; 0x85 is NEL, a line break to
#: ``str.splitlines``), and the Unicode line and paragraph separators.
_CONTROLS: Final = re.compile("[\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with each control character as ``\\xXX`` (``\\u2028``, ``\\u2029``)."""
    if _CONTROLS.search(text) is None:
        return text
    return _CONTROLS.sub(_escaped, text)


class EscapeControls(logging.Filter):
    """Rewrites a record whose formatted message has control characters; drops nothing.

    The message is formatted here once (``msg % args``) and stored with empty ``args``, so
    handlers print the escaped text. Exception tracebacks (``exc_info``) are multi-line on
    purpose and left to the formatter.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True  # a wrong format string: logging reports it when the handler formats
        if _CONTROLS.search(message) is not None:
            record.msg = escape_controls(message)
            record.args = ()
        return True


_FILTER: Final = EscapeControls()


def escaped_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` whose records are escaped by :class:`EscapeControls`."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, EscapeControls) for f in logger.filters):
        logger.addFilter(_FILTER)
    return logger
