"""``azapi_resource`` / ``azapi_update_resource`` bodies applied to an ARM gateway resource.

Passthrough cannot be written in released azurerm (its issue #31844), so configurations set
``verifyClientAuthMode`` through azapi, ARM-shaped. ``azapi_update_resource`` reads the resource,
merges its ``body`` into it and writes it back with the API version of its ``type@version``: objects
are merged key by key, and any other value, arrays included, replaces what was there (a body
with ``sslProfiles`` replaces the whole list). ARM property names are case-insensitive, so a
body key merges into the existing key of any case.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from emulator.arm import bounded_json
from emulator.errors import TemplateError

__all__ = ["AZAPI_CODE", "body_object", "merge_body", "split_type"]

AZAPI_CODE: Final = "EmulatorTerraformAzapi"
#: Nesting depth a body may have; a gateway resource is about eight levels deep.
MAX_DEPTH: Final = 64


def split_type(value: Any, *, where: str) -> tuple[str, str]:
    """``Microsoft.Network/applicationGateways@2025-03-01`` → (type, API version)."""
    if not isinstance(value, str) or "@" not in value:
        raise TemplateError(
            f"the azapi type '{value}' is not RESOURCE_TYPE@API_VERSION",
            file=where,
            fix='write type = "Microsoft.Network/applicationGateways@2025-03-01"',
            code=AZAPI_CODE,
        )
    rtype, _, version = value.partition("@")
    return rtype, version


def body_object(value: Any, *, where: str) -> dict[str, Any]:
    """The body as an object: azapi 2 takes an HCL object, azapi 1 a ``jsonencode()`` string."""
    if isinstance(value, str):
        try:
            value = bounded_json.loads(value)
        except ValueError as exc:
            raise TemplateError(
                f"the azapi body is a string but not JSON: {exc}",
                file=where,
                fix="write body = { properties = { ... } } or body = jsonencode({ ... })",
                code=AZAPI_CODE,
            ) from exc
    if not isinstance(value, dict):
        raise TemplateError("the azapi body must be an object", file=where, code=AZAPI_CODE)
    return value


def merge_body(target: dict[str, Any], body: Mapping[str, Any], *, depth: int = 0) -> None:
    """Merge ``body`` into ``target`` in place, the way azapi_update_resource does."""
    if depth > MAX_DEPTH:
        raise TemplateError("the azapi body is nested too deeply", code=AZAPI_CODE)
    keys = {k.lower(): k for k in target}
    for key, value in body.items():
        existing = keys.get(key.lower())
        if existing is not None and isinstance(target[existing], dict) and isinstance(value, dict):
            merge_body(target[existing], value, depth=depth + 1)
        else:
            if existing is not None and existing != key:
                del target[existing]
            target[key] = value
            keys[key.lower()] = key
