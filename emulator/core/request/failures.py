"""How a request-time error is answered: one mapping, for HTTP/1.1 and HTTP/2 alike.

Every error met while a request is served carries the status of its answer (``status``): the
codec's 400, 414, 494 and 501 (:class:`~emulator.core.http.codec.HttpError`), 408 and 413 for
request bodies, 502 and 504 from the backend (:mod:`emulator.errors`); anything else is 500.
:func:`answer_for` turns the error into what the shell then does: the page, what becomes of the
connection, the backend the access record names, the record's reason code (``error_info``,
nginx's words as the monitoring reference logs them) and the log line. The shell writes the
page and the line; nothing here does I/O.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from emulator.core.http.codec import HttpError
from emulator.core.http.error_info import (
    UPSTREAM_CLOSED_CONNECTION,
    UPSTREAM_NO_LIVE,
    UPSTREAM_TIMED_OUT,
)
from emulator.core.http.pages import GatewayPage, page_for_status
from emulator.core.request.plan import After, Note
from emulator.errors import BackendError, BackendTimeout, RequestTooLarge

__all__ = ["ErrorAnswer", "answer_for"]


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """What the shell does with one request-time error."""

    page: GatewayPage
    #: The connection after the page (HTTP/2 ends only the stream, whatever this says).
    after: After
    #: The backend (``host:port``) the access record names; "" when none took part.
    routed: str
    #: The access record's reason code; "" keeps what the request noted already.
    error_info: str
    note: Note


def answer_for(
    exc: Exception, *, routed: str, forwarded_to: str, backend_reached: bool, body_limit: int
) -> ErrorAnswer:
    """The answer to ``exc``.

    Args:
        routed: the backend chosen for the request ("" before one was).
        forwarded_to: the backend that received the request head ("" before).
        backend_reached: the request was sent to the backend (so a failure after it is the
            backend closing, not a backend that could not be reached).
        body_limit: ``max_request_body_bytes``, for the 413's log line.
    """
    try:
        page = page_for_status(getattr(exc, "status", 500))
    except KeyError:
        page = GatewayPage.INTERNAL_ERROR
    if isinstance(exc, BackendError):
        if isinstance(exc, BackendTimeout):
            error_info = UPSTREAM_TIMED_OUT
        elif backend_reached:
            error_info = UPSTREAM_CLOSED_CONNECTION
        else:
            error_info = UPSTREAM_NO_LIVE
        # The body may still be unread: the connection is kept only when it was read whole.
        return ErrorAnswer(
            page,
            After.KEEP_IF_READ,
            routed,
            error_info,
            Note(
                "backend.error",
                f"backend={routed or '-'} status={page.status} reason={exc}",
                logging.WARNING,
            ),
        )
    if isinstance(exc, HttpError):
        if forwarded_to:
            # The head (and maybe some chunks) reached the backend: that request is aborted
            # by closing its connection; the client still gets the 400 (nginx does the same).
            note = Note(
                "http.bad_body_midstream",
                f"backend={forwarded_to} reason={exc.reason}: the request head was already "
                "forwarded; the backend request was aborted",
                logging.WARNING,
            )
            return ErrorAnswer(page, After.CLOSE, forwarded_to, exc.error_info, note)
        note = Note("http.bad_request", f"reason={exc.reason}")
        return ErrorAnswer(page, After.CLOSE, "", exc.error_info, note)
    if isinstance(exc, RequestTooLarge):
        note = Note("http.request_too_large", f"limit={body_limit}")
    else:
        note = Note("http.request_body_failed", f"status={page.status} reason={exc}")
    return ErrorAnswer(page, After.CLOSE, "", "", note)
