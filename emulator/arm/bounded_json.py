"""JSON from untrusted files and request bodies, nested no deeper than the code reading it.

Templates, parameters files, ``json()`` arguments and the dashboard's request bodies are all read
by code that recurses once per level of nesting (the template evaluator, the model builder,
``json.dumps``). Python's stack allows about a thousand frames; ``[[[[...]]]]`` a hundred
thousand levels deep makes ``json.loads`` itself raise ``RecursionError``, and a value a few
hundred levels deep gets through the parser and fails later, anywhere. :func:`loads` refuses
both with :class:`JsonTooDeep`, which every caller turns into its own error (a template error
with the file's code, a 400 answer).
"""

from __future__ import annotations

import json
from typing import Any, Final

__all__ = ["MAX_JSON_DEPTH", "JsonTooDeep", "json_depth", "loads"]

#: How deeply objects and arrays may nest. Real templates nest about a dozen levels (resources,
#: properties, a collection, an item, its properties, a sub-resource reference), nested
#: deployments a few dozen; each level costs the evaluator a few stack frames, so 64 levels
#: stay far from Python's limit of about a thousand.
MAX_JSON_DEPTH: Final = 64


class JsonTooDeep(ValueError):
    """The document nests deeper than :data:`MAX_JSON_DEPTH`."""

    def __init__(self) -> None:
        super().__init__(f"objects and arrays nest deeper than {MAX_JSON_DEPTH} levels")


def json_depth(value: Any, *, limit: int = MAX_JSON_DEPTH) -> int:
    """How deeply ``value``'s objects and arrays nest (a scalar is 0), counted without
    recursion; stops counting past ``limit`` (returns ``limit + 1``)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > limit:
            return depth
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children if isinstance(child, dict | list))
    return deepest


def loads(text: str | bytes, *, strict: bool = True) -> Any:
    """``json.loads`` that raises :class:`JsonTooDeep` instead of nesting without bound.

    Raises:
        json.JSONDecodeError: not JSON.
        JsonTooDeep: nested deeper than :data:`MAX_JSON_DEPTH`.
    """
    try:
        value = json.loads(text, strict=strict)
    except RecursionError:
        raise JsonTooDeep from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise JsonTooDeep
    return value
