"""Drafts of the gateways found (ARM-shaped), azapi updates applied to them, the result.

Shared by the static reader (:mod:`emulator.terraform`) and the plan reader
(:mod:`emulator.terraform.plan`), which find gateways in different places but assemble them the
same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from emulator.arm.expressions import DeploymentScope
from emulator.arm.template import GatewayResource, LoadedTemplate
from emulator.errors import TemplateError
from emulator.terraform.azapi import AZAPI_CODE, body_object, merge_body, split_type
from emulator.terraform.config import GATEWAY_TYPE, UNSUPPORTED_CODE
from emulator.terraform.evaluate import PLAN_HINT, Unknown

__all__ = [
    "GatewayDraft",
    "TerraformGateways",
    "apply_azapi",
    "assemble",
    "gateway_from_azapi",
    "known_text",
]


@dataclass
class TerraformGateways:
    """The gateways of a configuration, ARM-shaped, with where each ARM path came from."""

    loaded: LoadedTemplate
    #: gateway name → ARM path → (file:line, what is there in Terraform's words).
    locations: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def known_text(value: Any, what: str, where: str) -> str:
    if isinstance(value, str) and value:
        return value
    reason = (
        f" (it comes from {value.reason}, known only after apply)"
        if isinstance(value, Unknown)
        else ""
    )
    raise TemplateError(
        f"{what} must be a string the static reader can see{reason}",
        file=where,
        fix="set it from a variable or a literal, " + PLAN_HINT,
        code=UNSUPPORTED_CODE,
    )


@dataclass
class GatewayDraft:
    """One gateway being assembled: its ARM resource and where its parts came from."""

    name: str
    rid: str
    api_version: str
    resource: dict[str, Any]
    file: str
    address: str
    places: dict[str, tuple[str, str]]


def apply_azapi(
    gateways: list[GatewayDraft],
    address: str,
    values: Mapping[str, Any],
    where: str,
    body_where: str,
    *,
    target_address: str | None = None,
) -> bool:
    """Apply one azapi_update_resource; False when it does not target a gateway."""
    rtype, version = split_type(values.get("type"), where=where)
    if rtype.lower() != GATEWAY_TYPE.lower():
        return False
    rid = values.get("resource_id")
    if not isinstance(rid, str):
        parent, name = values.get("parent_id"), values.get("name")
        if isinstance(parent, str) and isinstance(name, str):
            rid = f"{parent}/providers/{GATEWAY_TYPE}/{name}"
    target = next(
        (g for g in gateways if isinstance(rid, str) and g.rid.lower() == rid.lower()), None
    )
    if target is None and target_address is not None:
        target = next((g for g in gateways if g.address == target_address), None)
    if target is None:
        shown = rid if isinstance(rid, str) else "a value known only after apply"
        raise TemplateError(
            f"{address} updates the application gateway {shown}, which this configuration "
            "does not declare",
            file=where,
            fix="set resource_id = azurerm_application_gateway.NAME.id",
            code=AZAPI_CODE,
        )
    body = body_object(values.get("body"), where=body_where)
    merge_body(target.resource, body)
    target.api_version = version
    for key in body.get("properties", {}) if isinstance(body.get("properties"), dict) else ():
        for path in list(target.places):
            if path.lower().startswith(f"properties.{key.lower()}"):
                del target.places[path]
        target.places[f"properties.{key}"] = (body_where, f"{address} body.properties.{key}")
    return True


def gateway_from_azapi(
    address: str, values: Mapping[str, Any], where: str, scope: DeploymentScope
) -> GatewayDraft | None:
    rtype, version = split_type(values.get("type"), where=where)
    if rtype.lower() != GATEWAY_TYPE.lower():
        return None
    name = known_text(values.get("name"), f"{address}.name", where)
    parent = values.get("parent_id")
    if not isinstance(parent, str):
        parent = f"/subscriptions/{scope.subscription_id}/resourceGroups/{scope.resource_group}"
    resource = {"name": name, **body_object(values.get("body"), where=where)}
    if isinstance(values.get("location"), str):
        resource.setdefault("location", values["location"])
    return GatewayDraft(
        name,
        f"{parent}/providers/{GATEWAY_TYPE}/{name}",
        version,
        resource,
        where.rsplit(":", 1)[0],
        address,
        {},
    )


def assemble(
    file: str, gateways: list[GatewayDraft], skipped: list[tuple[str, str]], warnings: list[str]
) -> TerraformGateways:
    loaded = LoadedTemplate(
        file=file,
        gateways=tuple(
            GatewayResource(
                name=g.name,
                api_version=g.api_version,
                resource_id=g.rid,
                location=g.resource.get("location")
                if isinstance(g.resource.get("location"), str)
                else None,
                resource=g.resource,
                file=g.file,
                json_path=g.address,
            )
            for g in gateways
        ),
        skipped=tuple(skipped),
        parameters={},
        secure_parameters=frozenset(),
    )
    return TerraformGateways(loaded, {g.name: g.places for g in gateways}, warnings)
