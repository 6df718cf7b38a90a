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
    assemble   gateway drafts, azapi updates applied, the loaded result
    plan       ``terraform show -json`` output
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from emulator.arm.expressions import DeploymentScope
from emulator.arm.template import GatewayResource, select_gateway
from emulator.errors import EmulatorError, InvalidConfiguration, TemplateError
from emulator.model import GatewayConfig, build_gateway_config
from emulator.terraform.assemble import (
    GatewayDraft,
    TerraformGateways,
    apply_azapi,
    assemble,
    gateway_from_azapi,
    known_text,
)
from emulator.terraform.azurerm import map_gateway
from emulator.terraform.config import GATEWAY_RESOURCE, UNSUPPORTED_CODE, VarArg, load_directory
from emulator.terraform.evaluate import PLAN_HINT
from emulator.terraform.hcl import Block

__all__ = ["TerraformGateways", "build_config", "load_terraform"]


def _relocate(
    exc: EmulatorError, gateway: GatewayResource, places: Mapping[str, tuple[str, str]]
) -> None:
    """Point a model problem about ``properties.httpListeners[1]...`` at the .tf block."""
    if exc.path is None or exc.file != gateway.file:
        return
    path = exc.path.removeprefix(gateway.json_path).lstrip(".")
    best = max((p for p in places if path == p or path.startswith(p + ".")), key=len, default=None)
    if best is None:
        for p in places:
            if path and p.startswith(path + "["):  # a whole list: its first item
                best = p
                break
    if best is None:
        return
    where, what = places[best]
    exc.file = where
    exc.path = f"{what} (ARM {path})"


def build_config(tf: TerraformGateways, name: str | None, *, now: datetime) -> GatewayConfig:
    """The chosen gateway's model; the model's problems point into the .tf files.

    ``now`` is the time of the build (see :func:`emulator.model.build_gateway_config`)."""
    gateway = select_gateway(tf.loaded, name)
    places = tf.locations.get(gateway.name, {})
    try:
        config = build_gateway_config(gateway, now=now)
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
    gateways: list[GatewayDraft] = []
    problems: list[EmulatorError] = []
    skipped: list[tuple[str, str]] = []
    for (rtype, name), block in cfg.resources.items():
        if rtype == GATEWAY_RESOURCE:
            _refuse_meta(block)
            values = cfg.object(block)
            rid = cfg.gateway_id(block, block.where)
            gw_name = known_text(values.get("name"), f"{rtype}.{name}.name", values.where("name"))
            mapped = map_gateway(values, gateway_id=rid, fallback=block.where)
            problems += mapped.problems
            gateways.append(
                GatewayDraft(
                    gw_name,
                    rid,
                    mapped.api_version,
                    mapped.resource,
                    block.file,
                    f"{rtype}.{name}",
                    mapped.locations,
                )
            )
        elif rtype == "azapi_resource":
            _refuse_meta(block)
            values = cfg.object(block)
            gw = gateway_from_azapi(f"{rtype}.{name}", values, values.where("type"), scope)
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
            if not apply_azapi(
                gateways, f"{rtype}.{name}", values, values.where("type"), values.where("body")
            ):
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
    return assemble(str(directory), gateways, skipped, warnings)
