"""Sub-resource names compare case-insensitively, as ARM ids do; the one lookup for them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def find_name(known: Mapping[str, Any], name: str) -> str | None:
    """Names of sub-resources compare case-insensitively, like ARM ids."""
    for key in known:
        if key.lower() == name.lower():
            return key
    return None
