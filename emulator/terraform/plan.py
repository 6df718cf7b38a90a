"""``terraform show -json`` output: the gateways a plan would create or update.

Format: https://developer.hashicorp.com/terraform/internals/json-format. The planned values of
every module (``planned_values.root_module`` and its ``child_modules``) hold each resource's
``values`` in the same shape as the static reader's; values unknown until apply are absent there
and marked ``true`` in the resource change's ``after_unknown``, so they become
:class:`~emulator.terraform.evaluate.Unknown` here. An ``azapi_update_resource`` whose
``resource_id`` is unknown (the gateway is created by the same plan) is matched to its gateway
through the ``configuration`` section's references.

A plan file holds every value in plain text, secrets included (``sensitive`` only hides them in
Terraform's own output): loading one prints a warning saying so.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from emulator.arm import bounded_json
from emulator.arm.expressions import DeploymentScope, resource_id
from emulator.errors import EmulatorError, InvalidConfiguration, TemplateError
from emulator.terraform.assemble import (
    GatewayDraft,
    TerraformGateways,
    apply_azapi,
    assemble,
    gateway_from_azapi,
)
from emulator.terraform.azurerm import map_gateway
from emulator.terraform.config import GATEWAY_RESOURCE, GATEWAY_TYPE
from emulator.terraform.evaluate import Unknown

__all__ = ["SECRETS_WARNING", "load_plan"]

PLAN_CODE: Final = "EmulatorTerraformPlan"
SECRETS_WARNING: Final = (
    "{file} holds the configuration's secrets (certificate data and passwords) in plain text: "
    "keep it out of version control and delete it after use"
)
#: A plan larger than this is not one gateway's configuration (and would be slow to read).
MAX_PLAN_BYTES: Final = 64 * 1024 * 1024
#: Module nesting this deep is a loop or a mistake.
MAX_MODULE_DEPTH: Final = 32


def _modules(module: Mapping[str, Any], depth: int = 0) -> Iterator[Mapping[str, Any]]:
    if depth > MAX_MODULE_DEPTH:
        return
    yield module
    for child in module.get("child_modules") or ():
        if isinstance(child, Mapping):
            yield from _modules(child, depth + 1)


def _with_unknowns(value: Any, unknown: Any, address: str) -> Any:
    """``values`` with each ``after_unknown: true`` place turned into an Unknown."""
    if unknown is True:
        return Unknown(address)
    if isinstance(unknown, Mapping):
        base = dict(value) if isinstance(value, Mapping) else {}
        for key, mark in unknown.items():
            base[key] = _with_unknowns(base.get(key), mark, f"{address}.{key}")
        return base
    if isinstance(unknown, list) and isinstance(value, list | type(None)):
        items = list(value or [])
        items += [None] * (len(unknown) - len(items))
        return [
            _with_unknowns(v, u, f"{address}[{i}]")
            for i, (v, u) in enumerate(zip(items, unknown, strict=False))
        ] + items[len(unknown) :]
    return value


def _config_references(configuration: Mapping[str, Any], address: str) -> list[str]:
    """The references of ``resource_id`` of ``address`` in the plan's configuration section."""
    parts = address.split(".")
    module: Mapping[str, Any] | None = configuration.get("root_module")
    prefix: list[str] = []
    while len(parts) > 2 and parts[0] == "module" and isinstance(module, Mapping):
        name = parts[1].split("[")[0]
        call = (module.get("module_calls") or {}).get(name, {})
        module = call.get("module") if isinstance(call, Mapping) else None
        prefix += parts[:2]
        parts = parts[2:]
    if not isinstance(module, Mapping):
        return []
    local = ".".join(parts).split("[")[0]
    for res in module.get("resources") or ():
        if isinstance(res, Mapping) and res.get("address") == local:
            refs = ((res.get("expressions") or {}).get("resource_id") or {}).get("references")
            return [".".join([*prefix, r]) for r in refs or () if isinstance(r, str)]
    return []


def load_plan(
    path: str | Path,
    *,
    scope: DeploymentScope = DeploymentScope(),  # noqa: B008 -- frozen, so sharing is safe
) -> TerraformGateways:
    """Read a plan's JSON and translate the gateways it plans.

    Raises:
        TemplateError: the file is not ``terraform show -json`` output of a plan, or plans no
            gateway.
        InvalidConfiguration: every argument problem, e.g. certificate data known only after
            apply (the fix names ``--certificate``).
    """
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise TemplateError(
            f"cannot read the plan: {exc.strerror or exc}", file=file, code=PLAN_CODE
        ) from exc
    if len(raw) > MAX_PLAN_BYTES:
        raise TemplateError(
            f"the plan is larger than {MAX_PLAN_BYTES} bytes", file=file, code=PLAN_CODE
        )
    try:
        plan = bounded_json.loads(raw)
    except ValueError as exc:
        raise TemplateError(
            f"not JSON: {exc}",
            file=file,
            fix="pass the output of `terraform show -json tf.plan` (not the binary plan file)",
            code=PLAN_CODE,
        ) from exc
    if not isinstance(plan, dict) or "planned_values" not in plan:
        raise TemplateError(
            "not a plan in Terraform's JSON format (no planned_values)",
            file=file,
            fix="run `terraform plan -out tf.plan && terraform show -json tf.plan > plan.json`",
            code=PLAN_CODE,
        )
    changes = {
        c.get("address"): c.get("change") or {}
        for c in plan.get("resource_changes") or ()
        if isinstance(c, Mapping)
    }
    configuration = plan.get("configuration") or {}
    gateways: list[GatewayDraft] = []
    updates: list[tuple[str, dict[str, Any]]] = []
    skipped: list[tuple[str, str]] = []
    problems: list[EmulatorError] = []
    for module in _modules(plan["planned_values"].get("root_module") or {}):
        for res in module.get("resources") or ():
            if not isinstance(res, Mapping) or res.get("mode") == "data":
                continue
            address = str(res.get("address"))
            rtype = str(res.get("type"))
            values = _with_unknowns(
                res.get("values") or {}, changes.get(address, {}).get("after_unknown"), address
            )
            where = f"{file}: planned_values {address}"
            if rtype == GATEWAY_RESOURCE:
                name = values.get("name")
                if not isinstance(name, str):
                    raise TemplateError(
                        f"{address} has no name", file=file, path=address, code=PLAN_CODE
                    )
                group = values.get("resource_group_name")
                rid = values.get("id")
                if not isinstance(rid, str):
                    rid = resource_id(
                        GATEWAY_TYPE,
                        [name],
                        subscription_id=scope.subscription_id,
                        resource_group=group if isinstance(group, str) else scope.resource_group,
                    )
                mapped = map_gateway(values, gateway_id=rid, from_plan=True, fallback=where)
                problems += mapped.problems
                places = {
                    p: (file, f"{address} {what}") for p, (_w, what) in mapped.locations.items()
                }
                gateways.append(
                    GatewayDraft(
                        name, rid, mapped.api_version, mapped.resource, file, address, places
                    )
                )
            elif rtype == "azapi_resource":
                gw = gateway_from_azapi(address, values, where, scope)
                if gw is None:
                    skipped.append((rtype, address))
                else:
                    gw.file = file
                    gateways.append(gw)
            elif rtype == "azapi_update_resource":
                updates.append((address, values))
            else:
                skipped.append((rtype, address))
    for address, values in updates:
        refs = _config_references(configuration, address)
        target = next(
            (r.removesuffix(".id") for r in refs if GATEWAY_RESOURCE in r and r.endswith(".id")),
            None,
        )
        if isinstance(values.get("resource_id"), Unknown):
            values["resource_id"] = None
        where = f"{file}: planned_values {address}"
        if not apply_azapi(gateways, address, values, where, where, target_address=target):
            skipped.append(("azapi_update_resource", address))
    if problems:
        raise InvalidConfiguration(problems)
    if not gateways:
        raise TemplateError(
            f"the plan creates or updates no {GATEWAY_RESOURCE}",
            file=file,
            fix="plan the configuration that declares the gateway",
            code="EmulatorNoGateway",
        )
    return assemble(file, gateways, skipped, [SECRETS_WARNING.format(file=file)])
