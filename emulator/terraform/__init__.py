"""Terraform configurations as gateways: ``run --terraform DIR`` and ``--terraform-plan``.

The ``azurerm_application_gateway`` resource (and any ``azapi_*`` body applied to it) is
translated into the ARM gateway resource the ARM reader produces, so the model, its checks and
the runtime apply unchanged and the same gateway behaves the same whichever way it was written.
Messages about the translated resource are pointed back at the ``.tf`` file and line.

Modules:
    hcl        .tf files → blocks and attribute expressions with lines (python-hcl2's tree)
    evaluate   the expression evaluator (var, local, templates, functions)
    config     the directory: variables in Terraform's precedence, locals, references
    azurerm    azurerm_application_gateway arguments → ARM properties
    azapi      azapi bodies merged as azapi_update_resource merges them
    plan       ``terraform show -json`` output
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from emulator.arm.expressions import DeploymentScope
from emulator.arm.template import GatewayResource, LoadedTemplate, select_gateway
from emulator.errors import EmulatorError, InvalidConfiguration, TemplateError
from emulator.model import GatewayConfig, build_gateway_config
from emulator.terraform.azapi import AZAPI_CODE, body_object, merge_body, split_type
from emulator.terraform.azurerm import map_gateway
from emulator.terraform.config import (
    GATEWAY_RESOURCE,
    GATEWAY_TYPE,
    UNSUPPORTED_CODE,
    Configuration,
    VarArg,
    load_directory,
)
from emulator.terraform.evaluate import PLAN_HINT, Unknown
from emulator.terraform.hcl import Block

__all__ = ["TerraformGateways", "build_config", "load_terraform"]

AZAPI_TYPES: Final = ("azapi_resource", "azapi_update_resource")


@dataclass
class TerraformGateways:
    """The gateways of a configuration, ARM-shaped, with where each ARM path came from."""

    loaded: LoadedTemplate
    #: gateway name → ARM path → (file:line, what is there in Terraform's words).
    locations: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _relocate(exc: EmulatorError, gateway: GatewayResource, places: Mapping[str, tuple[str, str]]) -> None:
    """Point a model problem about ``properties.httpListeners[1]...`` at the .tf block."""
    if exc.path is None or exc.file != gateway.file:
        return
    path = exc.path.removeprefix(gateway.json_path).lstrip(".")
    best = max((p for p in places if path == p or path.startswith(p + ".")), key=len, default=None)
    if best is None:
        for p in places:
            if p.startswith(path) and path:
                best = p
                break
    if best is None:
        return
    where, what = places[best]
    exc.file = where
    exc.path = f"{what} (ARM {path})"


def build_config(tf: TerraformGateways, name: str | None) -> GatewayConfig:
    """The chosen gateway's model; the model's problems point into the .tf files."""
    gateway = select_gateway(tf.loaded, name)
    places = tf.locations.get(gateway.name, {})
    try:
        config = build_gateway_config(gateway)
    except InvalidConfiguration as exc:
        for problem in exc.problems:
            _relocate(problem, gateway, places)
        raise
    except EmulatorError as exc:
        _relocate(exc, gateway, places)
        raise
    if tf.warnings:
        config = replace(config, warnings=(*tf.warnings, *config.warnings))
    return config


def _refuse_meta(block: Block) -> None:
    for meta in ("count", "for_each"):
        attr = block.attributes.get(meta)
        if attr is not None:
            raise TemplateError(
                f"{'.'.join(block.labels)} uses {meta}: which instances exist is decided by "
                "Terraform at plan time",
                file=f"{attr.file}:{attr.line}",
                fix=PLAN_HINT.removeprefix("or "),
                code=UNSUPPORTED_CODE,
            )


def _text(value: Any, what: str, where: str) -> str:
    if isinstance(value, str) and value:
        return value
    reason = f" (it comes from {value.reason}, known only after apply)" if isinstance(value, Unknown) else ""
    raise TemplateError(
        f"{what} must be a string the static reader can see{reason}",
        file=where,
        fix="set it from a variable or a literal, " + PLAN_HINT,
        code=UNSUPPORTED_CODE,
    )


@dataclass
class _Gw:
    name: str
    rid: str
    api_version: str
    resource: dict[str, Any]
    file: str
    address: str
    places: dict[str, tuple[str, str]]


def _apply_azapi(gateways: list[_Gw], address: str, values: Mapping[str, Any], where: str,
                 body_where: str, *, target_address: str | None = None) -> bool:
    """Apply one azapi_update_resource; False when it does not target a gateway."""
    rtype, version = split_type(values.get("type"), where=where)
    if rtype.lower() != GATEWAY_TYPE.lower():
        return False
    rid = values.get("resource_id")
    if not isinstance(rid, str):
        parent, name = values.get("parent_id"), values.get("name")
        if isinstance(parent, str) and isinstance(name, str):
            rid = f"{parent}/providers/{GATEWAY_TYPE}/{name}"
    target = next((g for g in gateways if isinstance(rid, str) and g.rid.lower() == rid.lower()), None)
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


def _gateway_from_azapi(address: str, values: Mapping[str, Any], where: str, scope: DeploymentScope) -> _Gw | None:
    rtype, version = split_type(values.get("type"), where=where)
    if rtype.lower() != GATEWAY_TYPE.lower():
        return None
    name = _text(values.get("name"), f"{address}.name", where)
    parent = values.get("parent_id")
    if not isinstance(parent, str):
        parent = f"/subscriptions/{scope.subscription_id}/resourceGroups/{scope.resource_group}"
    resource = {"name": name, **body_object(values.get("body"), where=where)}
    if isinstance(values.get("location"), str):
        resource.setdefault("location", values["location"])
    return _Gw(name, f"{parent}/providers/{GATEWAY_TYPE}/{name}", version, resource,
               where.rsplit(":", 1)[0], address, {})


def _loaded(file: str, gateways: list[_Gw], skipped: list[tuple[str, str]], warnings: list[str]) -> TerraformGateways:
    loaded = LoadedTemplate(
        file=file,
        gateways=tuple(
            GatewayResource(
                name=g.name,
                api_version=g.api_version,
                resource_id=g.rid,
                location=g.resource.get("location") if isinstance(g.resource.get("location"), str) else None,
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


def load_terraform(
    directory: str | Path,
    *,
    var_args: Sequence[VarArg] = (),
    scope: DeploymentScope = DeploymentScope(),  # noqa: B008 -- frozen, so sharing is safe
    environ: Mapping[str, str] | None = None,
) -> TerraformGateways:
    """Read the root module in ``directory`` and translate its gateways.

    Raises:
        TemplateError: with the .tf file and line, for what cannot be read statically (modules,
            data sources, count/for_each on the gateway: they point to ``--terraform-plan``).
        InvalidConfiguration: every argument problem of the gateway blocks at once.
    """
    cfg = load_directory(Path(directory), scope=scope, var_args=var_args, environ=environ)
    gateways: list[_Gw] = []
    problems: list[EmulatorError] = []
    skipped: list[tuple[str, str]] = []
    for (rtype, name), block in cfg.resources.items():
        if rtype == GATEWAY_RESOURCE:
            _refuse_meta(block)
            values = cfg.object(block)
            rid = cfg.gateway_id(block, block.where)
            gw_name = _text(values.get("name"), f"{rtype}.{name}.name", values.where("name"))
            mapped = map_gateway(values, gateway_id=rid, fallback=block.where)
            problems += mapped.problems
            gateways.append(_Gw(gw_name, rid, mapped.api_version, mapped.resource, block.file,
                                f"{rtype}.{name}", mapped.locations))
        elif rtype == "azapi_resource":
            _refuse_meta(block)
            values = cfg.object(block)
            gw = _gateway_from_azapi(f"{rtype}.{name}", values, values.where("type"), scope)
            if gw is None:
                skipped.append((rtype, name))
            else:
                gateways.append(gw)
        elif rtype != "azapi_update_resource":
            skipped.append((rtype, name))
    for (rtype, name), block in cfg.resources.items():
        if rtype == "azapi_update_resource":
            _refuse_meta(block)
            values = cfg.object(block)
            if not _apply_azapi(gateways, f"{rtype}.{name}", values, values.where("type"),
                                values.where("body")):
                skipped.append((rtype, name))
    if not gateways and cfg.modules:
        first = next(iter(cfg.modules.values()))
        raise TemplateError(
            f"no {GATEWAY_RESOURCE} in the root module; module "
            f"{', '.join(repr(m) for m in cfg.modules)} is not read by the static reader",
            file=first.where,
            fix=PLAN_HINT.removeprefix("or "),
            code=UNSUPPORTED_CODE,
        )
    if not gateways:
        raise TemplateError(
            f"the configuration declares no {GATEWAY_RESOURCE} resource",
            file=str(directory),
            fix="pass the directory of the configuration that declares the gateway",
            code="EmulatorNoGateway",
        )
    warnings = list(cfg.warnings)
    for mname, module in cfg.modules.items():
        warnings.append(
            f"{module.where}: module '{mname}' is not read (the static reader reads the root "
            "module; use --terraform-plan to include it)"
        )
    if problems:
        raise InvalidConfiguration(problems)
    return _loaded(str(directory), gateways, skipped, warnings)


def _strip_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_none(v) for v in value]
    return value


_INDEX_RE: Final = re.compile(r"\[[^\]]*\]$")
