"""The dashboard's command-line defaults and the ``--try-path`` check: what the CLI's parser
needs, kept apart from the server so that a command without a dashboard does not load it."""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_DASHBOARD_PORT", "DEFAULT_TRY_PATH", "check_try_path"]

#: ``up`` serves the dashboard here unless told otherwise (the issue's documented address).
DEFAULT_DASHBOARD_PORT: Final = 8000
#: Where a try request goes unless ``--try-path`` says otherwise (a path the user's API answers,
#: e.g. ``/orders``, shows what the API does with each identity instead of its 404).
DEFAULT_TRY_PATH: Final = "/"


def check_try_path(path: str) -> str:
    """A ``--try-path`` value as a request target path.

    Raises:
        ValueError: it does not start with ``/``, or holds white space, control characters or
            a ``#`` (none can be sent in a request line).
    """
    if not path.startswith("/"):
        msg = f"the try path must start with '/', not {path!r}"
        raise ValueError(msg)
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F or ch == "#" for ch in path):
        msg = f"the try path {path!r} holds white space, a control character or '#'"
        raise ValueError(msg)
    return path
