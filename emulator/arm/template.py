"""Load an ARM deployment template the way ``az deployment group create`` would evaluate it.

``load_template(path, parameter_args)`` reads the template, merges ``--parameters`` values
(files, ``NAME=VALUE`` pairs, inline JSON; later wins, as in the Azure CLI), checks them against
the declarations (type, ``allowedValues``, min/max), and evaluates the template's expressions.

Only what the emulator needs is evaluated: every resource's ``type`` and ``name``, and the whole
of each ``Microsoft.Network/applicationGateways`` resource. Other resources (the VNet, the public
IP, role assignments...) are listed in ``LoadedTemplate.skipped`` without touching their
properties, because those often call functions that need a live Azure (``reference()``,
``listKeys()``) and have no effect on the gateway's behaviour.

The gateway's properties are returned as evaluated JSON, keys spelled as in the file; turning them
into the typed model is ``resources.py``'s job.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from emulator.arm import bounded_json
from emulator.arm.bicep import compile_bicep, compile_bicepparam, is_bicep, is_bicepparam
from emulator.arm.expressions import (
    DeploymentScope,
    EvalContext,
    arm_equals,
    arm_string,
    arm_type_name,
    evaluate_value,
    get_ci,
    resource_id,
)
from emulator.errors import TemplateError, UnsupportedFeature
from emulator.logsafe import escaped_logger

__all__ = [
    "GATEWAY_TYPE",
    "GatewayResource",
    "LoadedTemplate",
    "load_template",
    "select_gateway",
]

logger = escaped_logger(__name__)

GATEWAY_TYPE: Final = "Microsoft.Network/applicationGateways"

#: Top-level members ARM accepts in a deployment template (template-syntax; languageVersion 2.0
#: adds ``definitions``/``imports``/``extensions``). Anything else ARM rejects with
#: "Could not find member 'x' on object of type 'Template'".
_TEMPLATE_MEMBERS: Final = frozenset({
    "$schema", "contentversion", "apiprofile", "parameters", "variables", "functions",
    "resources", "outputs", "metadata", "languageversion", "definitions", "imports",
    "extensions",
})  # fmt: skip

#: Parameter types, lower-cased (ARM reads them case-insensitively: ``String``, ``secureString``).
_PARAMETER_TYPES: Final = frozenset(
    {"string", "securestring", "int", "bool", "object", "secureobject", "array"}
)
_SECURE_TYPES: Final = frozenset({"securestring", "secureobject"})
#: The ARM type names used in its messages, by declared type.
_TYPE_LABELS: Final = {
    "string": "String",
    "securestring": "String",
    "int": "Integer",
    "bool": "Boolean",
    "object": "Object",
    "secureobject": "Object",
    "array": "Array",
}
_PARAMS_FILE_CODE: Final = "EmulatorInvalidParameterFile"


@dataclass(frozen=True, slots=True)
class GatewayResource:
    """One evaluated ``Microsoft.Network/applicationGateways`` resource of the template.

    ``resource`` is the whole resource object after evaluation, keys as written in the file.
    ``json_path`` locates it in ``file`` for error messages (``resources[2]``).
    """

    name: str
    api_version: str
    resource_id: str
    location: str | None
    resource: Mapping[str, Any]
    file: str
    json_path: str


@dataclass(frozen=True, slots=True)
class LoadedTemplate:
    """A template after parameters and expressions are resolved.

    ``parameters`` holds final values (declared spelling); values of the names in
    ``secure_parameters`` must never be printed.
    """

    file: str
    gateways: tuple[GatewayResource, ...]
    skipped: tuple[tuple[str, str], ...]
    parameters: Mapping[str, Any]
    secure_parameters: frozenset[str]


# --------------------------------------------------------------------------------------------
# JSON reading


def _strip_comments(text: str) -> str:
    """Blank out ``//`` and ``/* */`` comments outside strings, keeping line/column positions.

    ARM and the Azure CLI accept comments in templates and parameter files
    (https://learn.microsoft.com/azure/azure-resource-manager/templates/syntax#comments).
    """
    out: list[str] = []
    i, n = 0, len(text)
    in_string = False
    while i < n:
        ch = text[i]
        if in_string:
            out.append(ch)
            if ch == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 1
            elif ch == '"':
                in_string = False
            i += 1
        elif ch == '"':
            in_string = True
            out.append(ch)
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _parse_json(text: str, *, file: str, what: str, code: str) -> Any:
    try:
        return bounded_json.loads(_strip_comments(text), strict=False)
    except bounded_json.JsonTooDeep as exc:
        raise TemplateError(
            f"The {what} is refused: its {exc}.",
            file=file,
            fix="flatten the nesting (ARM templates nest about a dozen levels); a file nested "
            "this deeply is not a template",
            code=code,
        ) from None
    except json.JSONDecodeError as exc:
        raise TemplateError(
            f"The {what} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.",
            file=file,
            fix="fix the JSON syntax at that position (a missing comma or quote is typical).",
            code=code,
        ) from None


def _read_json(path: Path, *, file: str, what: str, code: str) -> Any:
    try:
        # utf-8-sig: editors on Windows often save templates with a byte-order mark.
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(
            f"Cannot read the {what}: {exc}.",
            file=file,
            fix="check the path (relative paths are resolved from the current directory).",
            code=code,
        ) from exc
    return _parse_json(text, file=file, what=what, code=code)


# --------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True, slots=True)
class _Supplied:
    """One value from ``--parameters``; ``raw_text`` when it came as ``NAME=VALUE``."""

    name: str
    value: Any
    file: str | None
    path: str
    raw_text: bool
    #: A Key Vault reference: an error unless a later ``--parameters`` replaces it.
    key_vault: bool = False


def _parameter_entries(obj: Any, *, file: str) -> tuple[Mapping[str, Any], str]:
    """Accept the deploymentParameters shape or a bare ``{"name": {"value": ...}}`` object."""
    if not isinstance(obj, dict):
        raise TemplateError(
            f"Parameters must be a JSON object, found {arm_type_name(obj)}.",
            file=file,
            code=_PARAMS_FILE_CODE,
        )
    found, inner = get_ci(obj, "parameters")
    wrapped = found and isinstance(inner, dict) and (
        "$schema" in obj or get_ci(obj, "contentVersion")[0] or not get_ci(inner, "value")[0]
    )  # fmt: skip
    if wrapped:
        return inner, "parameters"
    return obj, ""


def _supplied_from_object(obj: Any, *, file: str, in_file: bool) -> list[_Supplied]:
    entries, prefix = _parameter_entries(obj, file=file)
    out = []
    for name, entry in entries.items():
        if name.startswith("$") or (not prefix and name.lower() == "contentversion"):
            continue
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(entry, dict) and get_ci(entry, "reference")[0]:
            # Not an error yet: a later --parameters NAME=VALUE may replace it (later wins).
            out.append(
                _Supplied(name, None, file if in_file else None, path, False, key_vault=True)
            )
            continue
        has_value, value = get_ci(entry, "value") if isinstance(entry, dict) else (False, None)
        if not has_value:
            raise TemplateError(
                f"Parameter '{name}' must be an object with a 'value' member, like "
                f'{{"{name}": {{"value": ...}}}}.',
                file=file if in_file else None,
                path=path,
                code=_PARAMS_FILE_CODE,
            )
        out.append(_Supplied(name, value, file if in_file else None, path, raw_text=False))
    return out


def _parse_parameter_arg(arg: str) -> list[_Supplied]:
    """One ``--parameters`` value: ``@file``, inline JSON, ``NAME=VALUE`` or a bare file path."""
    stripped = arg.strip()
    if is_bicepparam(stripped.removeprefix("@")):
        file = stripped.removeprefix("@")
        obj = compile_bicepparam(Path(file))
        return _supplied_from_object(obj, file=file, in_file=True)
    if stripped.startswith("@"):
        file = stripped[1:]
        obj = _read_json(Path(file), file=file, what="parameters file", code=_PARAMS_FILE_CODE)
        return _supplied_from_object(obj, file=file, in_file=True)
    if stripped.startswith("{"):
        obj = _parse_json(
            stripped, file="--parameters", what="inline parameters", code=_PARAMS_FILE_CODE
        )
        return _supplied_from_object(obj, file="--parameters", in_file=False)
    name, sep, value = arg.partition("=")
    if sep and name.strip():
        name = name.strip()
        return [_Supplied(name, value, None, f"parameters.{name}", raw_text=True)]
    if stripped and Path(stripped).is_file():  # the Azure CLI accepts a bare path as well
        return _parse_parameter_arg("@" + stripped)
    raise TemplateError(
        f"Cannot understand the --parameters value '{arg}'.",
        fix="use @file.json, NAME=VALUE, or an inline JSON object.",
        code=_PARAMS_FILE_CODE,
    )


def _convert_text(text: str, type_: str, name: str) -> Any:
    """Turn a ``NAME=VALUE`` string into the declared type (what the Azure CLI does)."""
    if type_ in ("string", "securestring"):
        return text
    if type_ == "int":
        if re.fullmatch(r"\s*[-+]?[0-9]+\s*", text):
            return int(text)
        raise TemplateError(
            f"Template parameter '{name}' expects an integer, got '{text}'.",
            path=f"parameters.{name}",
            fix=f"pass a whole number: --parameters {name}=2",
        )
    if type_ == "bool":
        if text.strip().lower() in ("true", "false"):
            return text.strip().lower() == "true"
        raise TemplateError(
            f"Template parameter '{name}' expects true or false, got '{text}'.",
            path=f"parameters.{name}",
            fix=f"pass --parameters {name}=true or {name}=false",
        )
    try:
        return bounded_json.loads(text)
    except bounded_json.JsonTooDeep as exc:
        raise TemplateError(
            f"Template parameter '{name}' is refused: its {exc}.",
            path=f"parameters.{name}",
            fix="pass a value nested less deeply",
        ) from None
    except json.JSONDecodeError as exc:
        shown = "the value" if type_ in _SECURE_TYPES else f"'{text}'"
        raise TemplateError(
            f"Template parameter '{name}' is of type '{type_}' but {shown} is not valid JSON: "
            f"{exc.msg} at character {exc.pos + 1}.",
            path=f"parameters.{name}",
            fix=f'pass JSON, e.g. --parameters \'{name}=["a","b"]\' or a parameters file.',
        ) from None


def _matches_type(value: Any, type_: str) -> bool:
    return arm_type_name(value) == _TYPE_LABELS[type_]


class _ParameterResolver(Mapping[str, Any]):
    """Final parameter values, resolved on first access.

    Laziness lets a ``defaultValue`` expression use a parameter declared after it; a cycle
    between defaults is an error, as in ARM.
    """

    def __init__(
        self,
        declared: Mapping[str, Mapping[str, Any]],
        types: Mapping[str, str],
        supplied: Mapping[str, _Supplied],
        *,
        base_ctx: EvalContext,
        file: str,
    ) -> None:
        self._declared = declared
        self._types = types
        self._supplied = supplied
        self._by_lower = {name.lower(): name for name in declared}
        self._resolved: dict[str, Any] = {}
        self._in_progress: list[str] = []
        self._ctx = replace(base_ctx, parameters=self, allow_utc_now=True)
        self._file = file

    def __getitem__(self, key: str) -> Any:
        name = self._by_lower.get(key.lower())
        if name is None:
            raise KeyError(key)
        if name in self._resolved:
            return self._resolved[name]
        if name in self._in_progress:
            cycle = " -> ".join([*self._in_progress, name])
            raise TemplateError(
                f"The default values of the template parameters form a cycle: {cycle}.",
                file=self._file,
                path=f"parameters.{name}.defaultValue",
            )
        self._in_progress.append(name)
        try:
            value = self._resolve(name)
        finally:
            self._in_progress.pop()
        self._resolved[name] = value
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._declared)

    def __len__(self) -> int:
        return len(self._declared)

    def _resolve(self, name: str) -> Any:
        definition = self._declared[name]
        type_ = self._types[name]
        supplied = self._supplied.get(name.lower())
        if supplied is not None and supplied.key_vault:
            raise TemplateError(
                f"Parameter '{name}' is a Key Vault reference; the emulator runs offline and "
                "cannot read Key Vault.",
                file=supplied.file,
                path=supplied.path,
                fix=f"pass the secret's value directly after the file: --parameters {name}=VALUE "
                "(later wins), or a local parameters file that is not committed.",
                code=_PARAMS_FILE_CODE,
            )
        if supplied is not None:
            file, path = supplied.file, supplied.path
            if supplied.raw_text:
                try:
                    value = _convert_text(supplied.value, type_, name)
                except TemplateError as exc:
                    raise exc.located(file=file, path=path) from None
            else:
                value = supplied.value
        else:
            has_default, default = get_ci(definition, "defaultValue")
            file, path = self._file, f"parameters.{name}"
            if not has_default:
                raise TemplateError(
                    f"The value for the template parameter '{name}' is not provided.",
                    file=self._file,
                    path=path,
                    fix=f"pass it with --parameters {name}=VALUE (or in a parameters file).",
                )
            value = evaluate_value(default, self._ctx, f"{path}.defaultValue")
        _check_constraints(name, type_, definition, value, file=file, path=path)
        return value


def _check_constraints(
    name: str,
    type_: str,
    definition: Mapping[str, Any],
    value: Any,
    *,
    file: str | None,
    path: str,
) -> None:
    """Type, allowedValues, min/max value and length, with ARM's wording."""
    secure = type_ in _SECURE_TYPES
    shown = "" if secure else f" '{arm_string(value)}'"

    def invalid(reason: str, fix: str | None = None) -> TemplateError:
        return TemplateError(
            f"The provided value{shown} for the template parameter '{name}' is not valid. {reason}",
            file=file,
            path=path,
            fix=fix,
        )

    if not _matches_type(value, type_):
        raise TemplateError(
            f"Template parameter '{name}' was provided an invalid value. Expected a value of "
            f"type '{_TYPE_LABELS[type_]}', but received a value of type "
            f"'{arm_type_name(value)}'.",
            file=file,
            path=path,
        )
    has_allowed, allowed = get_ci(definition, "allowedValues")
    if has_allowed and isinstance(allowed, list):
        # ARM compares strings case-insensitively here (Azure/bicep#2489).
        def ok(item: Any) -> bool:
            if isinstance(item, str):
                return any(isinstance(a, str) and a.lower() == item.lower() for a in allowed)
            return any(arm_equals(a, item) for a in allowed)

        items = value if type_ == "array" else [value]
        if not all(ok(item) for item in items):
            listing = ", ".join(arm_string(a) for a in allowed)
            raise invalid(
                f"The parameter value is not part of the allowed value(s): '{listing}'.",
                fix=f"use one of: {listing}.",
            )
    bounds = {key: get_ci(definition, key)[1] for key in _BOUND_KEYS}
    if isinstance(value, int) and not isinstance(value, bool):
        low, high = bounds["minValue"], bounds["maxValue"]
        if isinstance(low, int) and value < low:
            raise invalid(f"The value must be greater than or equal to {low}.")
        if isinstance(high, int) and value > high:
            raise invalid(f"The value must be less than or equal to {high}.")
    if isinstance(value, str | list):
        low, high = bounds["minLength"], bounds["maxLength"]
        if isinstance(low, int) and len(value) < low:
            raise invalid(f"Length of the value should be greater than or equal to '{low}'.")
        if isinstance(high, int) and len(value) > high:
            raise invalid(f"Length of the value should be less than or equal to '{high}'.")


_BOUND_KEYS: Final = ("minValue", "maxValue", "minLength", "maxLength")


def _declared_parameters(
    section: Any, *, file: str
) -> tuple[dict[str, Mapping[str, Any]], dict[str, str]]:
    if section is None:
        return {}, {}
    if not isinstance(section, dict):
        raise TemplateError("'parameters' must be a JSON object.", file=file, path="parameters")
    declared: dict[str, Mapping[str, Any]] = {}
    types: dict[str, str] = {}
    for name, definition in section.items():
        path = f"parameters.{name}"
        if not isinstance(definition, dict):
            raise TemplateError(
                f"The template parameter '{name}' must be an object with a 'type'.",
                file=file,
                path=path,
            )
        if get_ci(definition, "$ref")[0]:
            raise UnsupportedFeature(
                f"The template parameter '{name}' uses a user-defined type ($ref).",
                file=file,
                path=path,
                fix="declare it with a built-in type (string, int, bool, object, array).",
            )
        has_type, type_ = get_ci(definition, "type")
        if not has_type or not isinstance(type_, str) or type_.lower() not in _PARAMETER_TYPES:
            raise TemplateError(
                f"The template parameter '{name}' has an invalid type '{type_}'; expected one of "
                "string, securestring, int, bool, object, secureobject, array.",
                file=file,
                path=f"{path}.type",
            )
        declared[name] = definition
        types[name] = type_.lower()
    return declared, types


def _collect_supplied(
    parameter_args: Sequence[str], declared: Mapping[str, Any], *, file: str
) -> dict[str, _Supplied]:
    supplied: dict[str, _Supplied] = {}
    for arg in parameter_args:
        for item in _parse_parameter_arg(arg):
            supplied[item.name.lower()] = item  # later wins, as in the Azure CLI
    known = {name.lower() for name in declared}
    unknown = [s for s in supplied.values() if s.name.lower() not in known]
    if unknown:
        names = ", ".join(s.name for s in unknown)
        hints = []
        for s in unknown:
            close = difflib.get_close_matches(s.name.lower(), list(known), n=1, cutoff=0.6)
            if close:
                spelled = next(n for n in declared if n.lower() == close[0])
                hints.append(f"'{s.name}' -> did you mean '{spelled}'?")
        hint = f" ({'; '.join(hints)})" if hints else ""
        raise TemplateError(
            "The following parameters were supplied, but do not correspond to any parameters "
            f"defined in the template: '{names}'.{hint}",
            file=unknown[0].file or file,
            path=unknown[0].path,
            fix="remove them or fix their spelling; the template declares: "
            + (", ".join(declared) or "no parameters")
            + ".",
        )
    return supplied


# --------------------------------------------------------------------------------------------
# Resources


def _iter_resources(section: Any, *, file: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Resources as (json path, object); ``resources`` may be keyed by symbolic name (v2.0)."""
    if isinstance(section, list):
        items: Iterator[tuple[str, Any]] = ((f"resources[{i}]", r) for i, r in enumerate(section))
    elif isinstance(section, dict):
        items = ((f"resources.{key}", r) for key, r in section.items())
    else:
        raise TemplateError(
            "'resources' must be an array (or an object keyed by symbolic name).",
            file=file,
            path="resources",
        )
    for path, resource in items:
        if not isinstance(resource, dict):
            raise TemplateError("A resource must be a JSON object.", file=file, path=path)
        yield path, resource


def _member(resource: Mapping[str, Any], key: str, ctx: EvalContext, path: str) -> Any:
    found, raw = get_ci(resource, key)
    if not found:
        raise TemplateError(
            f"The resource has no '{key}'.", file=ctx.file, path=path, fix=f"add '{key}'."
        )
    return evaluate_value(raw, ctx, f"{path}.{key}")


def _loose_name(resource: Mapping[str, Any], ctx: EvalContext, path: str) -> str:
    """Name of a resource we skip: evaluated if possible, else the text as written.

    A skipped resource's name may use ``copyIndex()`` or a function we cannot evaluate; it is
    only listed for the user, so failing the load for it would be wrong.
    """
    raw = get_ci(resource, "name")[1]
    try:
        return arm_string(evaluate_value(raw, ctx, f"{path}.name"))
    except TemplateError as exc:
        logger.debug("template.skipped_name_unevaluated path=%s reason=%s", path, exc.message)
        return arm_string(raw)


def _gateway_instances(
    resource: Mapping[str, Any], ctx: EvalContext, path: str
) -> Iterator[tuple[EvalContext, str]]:
    """One context per deployed instance: a resource ``copy`` loop yields ``count`` of them."""
    has_copy, copy = get_ci(resource, "copy")
    if not has_copy:
        yield ctx, path
        return
    loop_name = get_ci(copy, "name")[1] if isinstance(copy, dict) else None
    if not isinstance(loop_name, str):
        raise TemplateError(
            "A resource copy loop needs a 'name' and a 'count'.", file=ctx.file, path=f"{path}.copy"
        )
    count = evaluate_value(get_ci(copy, "count")[1], ctx, f"{path}.copy.count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise TemplateError(
            f"The copy count must be a non-negative integer, got '{arm_string(count)}'.",
            file=ctx.file,
            path=f"{path}.copy.count",
        )
    for i in range(count):
        loop = loop_name.lower()
        yield replace(ctx, copy_indexes={loop: i}, resource_loop=loop), f"{path}[copy {i}]"


def _evaluate_gateway(
    resource: Mapping[str, Any], ctx: EvalContext, path: str, *, file: str
) -> GatewayResource:
    evaluated = evaluate_value(resource, ctx, path)
    name = get_ci(evaluated, "name")[1]
    api_version = get_ci(evaluated, "apiVersion")[1]
    location = get_ci(evaluated, "location")[1]
    if not isinstance(name, str) or not name:
        raise TemplateError(
            "The application gateway's 'name' must be a non-empty string.",
            file=file,
            path=f"{path}.name",
        )
    if not isinstance(api_version, str) or not api_version:
        raise TemplateError(
            f"The application gateway '{name}' has no 'apiVersion'.",
            file=file,
            path=f"{path}.apiVersion",
            fix='add "apiVersion": "2024-05-01" (or the version your template targets).',
        )
    if location is not None and not isinstance(location, str):
        raise TemplateError(
            f"The 'location' of '{name}' must be a string.", file=file, path=f"{path}.location"
        )
    scope = ctx.scope
    rid = resource_id(
        GATEWAY_TYPE,
        [name],
        subscription_id=scope.subscription_id,
        resource_group=scope.resource_group,
    )
    return GatewayResource(
        name=name,
        api_version=api_version,
        resource_id=rid,
        location=location,
        resource=evaluated,
        file=file,
        json_path=path,
    )


@dataclass(slots=True)
class _Walk:
    """Accumulates the outcome of walking the resources (nested child resources included)."""

    ctx: EvalContext
    file: str
    gateways: list[GatewayResource] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def visit(
        self, resource: Mapping[str, Any], path: str, *, parent: tuple[str, str] | None = None
    ) -> None:
        type_ = _member(resource, "type", self.ctx, path)
        if not isinstance(type_, str):
            raise TemplateError(
                "A resource 'type' must be a string.", file=self.file, path=f"{path}.type"
            )
        if parent is not None and "/" not in type_:
            type_ = f"{parent[0]}/{type_}"  # a child resource's short type
        is_gateway = type_.lower() == GATEWAY_TYPE.lower()
        existing = get_ci(resource, "existing")[1] is True
        condition = True
        if is_gateway and not existing and get_ci(resource, "condition")[0]:
            condition = _member(resource, "condition", self.ctx, path)
            if not isinstance(condition, bool):
                raise TemplateError(
                    "A resource 'condition' must evaluate to true or false.",
                    file=self.file,
                    path=f"{path}.condition",
                )
        if is_gateway and not existing and condition:
            for ctx, instance_path in _gateway_instances(resource, self.ctx, path):
                self.gateways.append(
                    _evaluate_gateway(resource, ctx, instance_path, file=self.file)
                )
            return
        name = _loose_name(resource, self.ctx, path)
        if parent is not None and "/" not in name:
            name = f"{parent[1]}/{name}"
        self.skipped.append((type_, name))
        has_children, children = get_ci(resource, "resources")
        if has_children:
            for child_path, child in _iter_resources(children, file=self.file):
                self.visit(child, f"{path}.{child_path}", parent=(type_, name))


# --------------------------------------------------------------------------------------------
# Entry points


def load_template(
    path: str | Path,
    parameter_args: Sequence[str] = (),
    *,
    scope: DeploymentScope = DeploymentScope(),  # noqa: B008 -- frozen, so sharing is safe
    now: datetime | None = None,
) -> LoadedTemplate:
    """Read, parameterise and evaluate a deployment template.

    Args:
        path: the template file (``--template-file``).
        parameter_args: the values of repeated ``--parameters`` flags, in order; each is
            ``@file.json``, ``NAME=VALUE`` or inline JSON. Later values win.
        scope: subscription, resource group and location the deployment pretends to target.
        now: the deployment time (``utcNow()`` in parameter defaults); defaults to the clock.

    Raises:
        TemplateError: with ``file``/``path`` set, for anything ARM would reject and for
            parameters that are missing, unknown or out of range.
        UnsupportedFeature: for valid templates using something the emulator does not do.
    """
    file = str(path)
    if is_bicep(path):
        data = compile_bicep(Path(path))
    else:
        data = _read_json(Path(path), file=file, what="template", code="InvalidTemplate")
    return load_template_data(data, parameter_args, file=file, scope=scope, now=now)


#: What ``RecursionError`` during evaluation means to the user: the caps on JSON and expression
#: nesting keep ordinary paths far from Python's stack limit, but values built through chains
#: of variables (``variables('a')`` using ``variables('b')``...) can still nest without bound.
_TOO_DEEP_FIX: Final = (
    "shorten the chain of variables, parameters or expressions that build on each other "
    "(ARM templates rarely chain more than a few)"
)


def _looks_like_gateway_resource(data: Mapping[str, Any]) -> bool:
    """True for one gateway resource as ``az network application-gateway show`` or the portal's
    JSON View print it: no ``resources``, a ``properties`` object, and the gateway's type or id."""
    if get_ci(data, "resources")[0] or not isinstance(get_ci(data, "properties")[1], dict):
        return False
    type_ = get_ci(data, "type")[1]
    rid = get_ci(data, "id")[1]
    return (isinstance(type_, str) and type_.lower() == GATEWAY_TYPE.lower()) or (
        isinstance(rid, str) and "/providers/microsoft.network/applicationgateways/" in rid.lower()
    )


#: ``az ... show`` output carries no apiVersion; it is what the newest API returns, so the
#: gateway is read as that (Passthrough needs 2025-03-01).
EXPORT_API_VERSION: Final = "2025-03-01"


def _exported_gateway(
    data: Mapping[str, Any], parameter_args: Sequence[str], *, file: str, scope: DeploymentScope
) -> LoadedTemplate:
    if parameter_args:
        raise TemplateError(
            "--parameters was given, but the file is a gateway resource (as printed by "
            "`az network application-gateway show`), which has no parameters.",
            file=file,
            fix="drop --parameters, or pass the ARM deployment template instead.",
            code="InvalidTemplate",
        )
    name = get_ci(data, "name")[1]
    if not isinstance(name, str) or not name:
        raise TemplateError(
            "The gateway resource has no 'name'.", file=file, path="name", code="InvalidTemplate"
        )
    rid = get_ci(data, "id")[1]
    if not isinstance(rid, str) or not rid:
        rid = resource_id(
            GATEWAY_TYPE,
            [name],
            subscription_id=scope.subscription_id,
            resource_group=scope.resource_group,
        )
    api_version = get_ci(data, "apiVersion")[1]
    location = get_ci(data, "location")[1]
    gateway = GatewayResource(
        name=name,
        api_version=api_version
        if isinstance(api_version, str) and api_version
        else EXPORT_API_VERSION,
        resource_id=rid,
        location=location if isinstance(location, str) else None,
        resource=data,
        file=file,
        json_path="$",
    )
    return LoadedTemplate(
        file=file, gateways=(gateway,), skipped=(), parameters={}, secure_parameters=frozenset()
    )


def load_template_data(
    data: Any,
    parameter_args: Sequence[str] = (),
    *,
    file: str = "<template>",
    scope: DeploymentScope = DeploymentScope(),  # noqa: B008 -- frozen, so sharing is safe
    now: datetime | None = None,
) -> LoadedTemplate:
    """:func:`load_template` for JSON already in memory (``file`` only names it in messages).

    Besides a deployment template, ``data`` may be one gateway resource as
    ``az network application-gateway show`` or the portal's JSON View print it.
    """
    try:
        return _load_template_data(data, parameter_args, file=file, scope=scope, now=now)
    except RecursionError:
        raise TemplateError(
            "The template nests too deeply to evaluate (a chain of values that build on each "
            "other, or a value nested hundreds of levels deep).",
            file=file,
            fix=_TOO_DEEP_FIX,
        ) from None


def _load_template_data(
    data: Any,
    parameter_args: Sequence[str],
    *,
    file: str,
    scope: DeploymentScope,
    now: datetime | None,
) -> LoadedTemplate:
    template = data
    if not isinstance(template, dict):
        raise TemplateError("The template must be a JSON object.", file=file)
    if _looks_like_gateway_resource(template):
        return _exported_gateway(template, parameter_args, file=file, scope=scope)
    members = {key.lower(): key for key in template}
    for lowered, key in members.items():
        if lowered not in _TEMPLATE_MEMBERS:
            raise TemplateError(
                f"Could not find member '{key}' on object of type 'Template'.",
                file=file,
                path=key,
                fix="remove it or fix its spelling.",
            )
    if "resources" not in members:
        raise TemplateError(
            "The template has no 'resources'.",
            file=file,
            fix="pass the deployment template (not the parameters file) as the template.",
        )
    schema = template.get(members.get("$schema", "$schema"))
    if not (isinstance(schema, str) and "/deploymenttemplate.json" in schema.lower()):
        logger.warning(
            "template.schema_unexpected file=%s schema=%s (expected a resource-group "
            "deploymentTemplate.json schema; evaluating anyway)",
            file,
            schema,
        )

    declared, types = _declared_parameters(template.get(members.get("parameters", "")), file=file)
    supplied = _collect_supplied(parameter_args, declared, file=file)
    variables = template.get(members.get("variables", ""), {})
    if not isinstance(variables, dict):
        raise TemplateError("'variables' must be a JSON object.", file=file, path="variables")

    base_ctx = EvalContext(
        parameters={},
        variables={},  # ARM does not allow variables() in parameter defaults
        scope=scope,
        now=now if now is not None else datetime.now(UTC),
        deployment_name=Path(file).stem,  # the Azure CLI's default --name
        file=file,
    )
    resolver = _ParameterResolver(declared, types, supplied, base_ctx=base_ctx, file=file)
    parameters = {name: resolver[name] for name in declared}  # ARM validates all up front

    ctx = replace(base_ctx, parameters=parameters, variables=variables)
    walk = _Walk(ctx=ctx, file=file)
    for resource_path, resource in _iter_resources(template[members["resources"]], file=file):
        walk.visit(resource, resource_path)
    return LoadedTemplate(
        file=file,
        gateways=tuple(walk.gateways),
        skipped=tuple(walk.skipped),
        parameters=parameters,
        secure_parameters=frozenset(n for n, t in types.items() if t in _SECURE_TYPES),
    )


def select_gateway(loaded: LoadedTemplate, name: str | None) -> GatewayResource:
    """The gateway to emulate: the only one, or the one called ``name`` (case-insensitive)."""
    names = [gw.name for gw in loaded.gateways]
    if not loaded.gateways:
        nested = [n for t, n in loaded.skipped if t.lower() == "microsoft.resources/deployments"]
        hint = (
            f" It has nested deployments ({', '.join(nested)}), which the emulator does not open."
            if nested
            else ""
        )
        raise TemplateError(
            f"The template has no '{GATEWAY_TYPE}' resource.{hint}",
            file=loaded.file,
            path="resources",
            fix="pass the template that declares the application gateway.",
            code="EmulatorNoGateway",
        )
    if name is None:
        if len(loaded.gateways) == 1:
            return loaded.gateways[0]
        raise TemplateError(
            f"The template declares {len(names)} application gateways: {', '.join(names)}.",
            file=loaded.file,
            fix="choose one with --gateway NAME.",
            code="EmulatorAmbiguousGateway",
        )
    for gateway in loaded.gateways:
        if gateway.name.lower() == name.lower():
            return gateway
    raise TemplateError(
        f"The template has no application gateway named '{name}'; it declares: {', '.join(names)}.",
        file=loaded.file,
        fix="use one of those names with --gateway.",
        code="EmulatorNoGateway",
    )
