"""Name the parameter, not the property, when a placeholder value is what broke the gateway.

The Azure quickstart's parameters file ships ``"certData": {"value": "<Base64-encoded-PFX-data>"}``.
Run as it is, the model reports "sslCertificates[0].properties.data is not valid base64", which
sends the user into the template instead of to the one line of the parameters file to edit.
A placeholder in a parameter the gateway never reads (the quickstart's ``adminSSHKey``) is
harmless, so this only rewrites problems whose value *is* a placeholder parameter's value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from emulator.errors import EmulatorError, TemplateError

__all__ = ["PLACEHOLDER", "name_placeholders", "placeholder_parameters"]

#: ``<words-like-this>``: the shape of the placeholders in Azure's published parameter files.
PLACEHOLDER: Final = re.compile(r"^<[^<>\s][^<>]{0,78}>$")
_STEP: Final = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")


def placeholder_parameters(parameters: Mapping[str, Any]) -> dict[str, str]:
    """Parameter name -> its value, for every string parameter that is still a placeholder."""
    return {
        name: value
        for name, value in parameters.items()
        if isinstance(value, str) and PLACEHOLDER.match(value)
    }


def _value_at(resource: Mapping[str, Any], base: str, path: str) -> Any:
    if not path.startswith(base):
        return None
    node: Any = resource
    for key, index in _STEP.findall(path[len(base) :]):
        if key and isinstance(node, Mapping):
            node = next((v for k, v in node.items() if str(k).lower() == key.lower()), None)
        elif index and isinstance(node, list) and int(index) < len(node):
            node = node[int(index)]
        else:
            return None
    return node


def name_placeholders(
    problems: Sequence[EmulatorError],
    *,
    resource: Mapping[str, Any],
    json_path: str,
    placeholders: Mapping[str, str],
) -> list[EmulatorError]:
    """``problems`` with each one caused by a placeholder value restated as the parameter's."""
    out: list[EmulatorError] = []
    for problem in problems:
        value = _value_at(resource, json_path, problem.path or "") if problem.path else None
        name = next((n for n, v in placeholders.items() if v == value), None)
        if name is None:
            out.append(problem)
            continue
        out.append(
            TemplateError(
                f"Parameter '{name}' still holds the placeholder '{value}' (it flows into "
                f"{problem.path}: {problem.message})",
                # The value may come from any --parameters file; the name is what to search for.
                file=None,
                path=f"parameters.{name}",
                fix=f"pass the real value: --parameters {name}=VALUE after the parameters file "
                "(later wins), or edit it in the file",
                code=problem.error_code,
            )
        )
    return out
