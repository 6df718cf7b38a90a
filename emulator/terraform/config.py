"""A Terraform configuration directory: its ``.tf`` files, input variables, locals, resources.

Variables take their values in Terraform's documented order, later wins
(https://developer.hashicorp.com/terraform/language/values/variables#variable-definition-precedence):
the ``default``, ``TF_VAR_name`` environment variables, ``terraform.tfvars``,
``terraform.tfvars.json``, ``*.auto.tfvars`` / ``*.auto.tfvars.json`` in lexical order of their
names, then ``--var`` and ``--var-file`` in the order they were given.

Only the root module is read: ``module`` blocks, data sources and ``count`` / ``for_each`` on
the gateway are errors with their file and line that point to ``--terraform-plan``, because
only Terraform can evaluate them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from lark import Token, Tree

from emulator.arm import bounded_json
from emulator.arm.expressions import DeploymentScope, resource_id
from emulator.errors import TemplateError
from emulator.terraform.evaluate import PLAN_HINT, Evaluator, Unknown, hcl_string
from emulator.terraform.hcl import Attribute, Block, location, parse_file

__all__ = ["Configuration", "TfObject", "VarArg", "load_directory"]

GATEWAY_RESOURCE: Final = "azurerm_application_gateway"
GATEWAY_TYPE: Final = "Microsoft.Network/applicationGateways"
VARIABLE_CODE: Final = "EmulatorTerraformVariable"
UNSUPPORTED_CODE: Final = "EmulatorTerraformNotStatic"
#: Meta-arguments and blocks of a resource that say how Terraform manages it, not what it is.
RESOURCE_META: Final = frozenset(
    {"depends_on", "provider", "lifecycle", "provisioner", "connection"}
)
#: A configuration directory with more .tf files than this is not one gateway's configuration.
MAX_FILES: Final = 500

#: ``("var", "NAME=VALUE")`` or ``("file", "PATH")``, in command-line order.
VarArg = tuple[str, str]


class TfObject(dict[str, Any]):
    """A block's evaluated arguments and nested blocks (Terraform's JSON value shape), with the
    file and line of the block and of each argument, so messages can point into the .tf file."""

    file: str
    line: int | None
    lines: dict[str, int | None]

    def where(self, key: str | None = None) -> str:
        line = self.lines.get(key, self.line) if key is not None else self.line
        return location(self.file, line)


def _type_text(attr: Attribute | None) -> str:
    if attr is None:
        return "any"
    return "".join(str(t) for t in attr.expr.scan_values(lambda v: isinstance(v, Token))).strip()


@dataclass
class _Variable:
    block: Block
    type: str
    value: Any = None
    set_by: str | None = None


class Configuration:
    """The root module of ``directory``, evaluated lazily (a value is computed when used)."""

    def __init__(
        self,
        directory: Path,
        blocks: Sequence[Block],
        *,
        scope: DeploymentScope,
        var_args: Sequence[VarArg],
        environ: Mapping[str, str],
    ) -> None:
        self.directory = directory
        self.scope = scope
        self.warnings: list[str] = []
        self.evaluator = Evaluator(self, base_dir=directory)
        self.variables: dict[str, _Variable] = {}
        self.locals: dict[str, Attribute] = {}
        self.resources: dict[tuple[str, str], Block] = {}
        self.data: dict[tuple[str, str], Block] = {}
        self.modules: dict[str, Block] = {}
        self._local_values: dict[str, Any] = {}
        self._resolving: list[str] = []
        for block in blocks:
            self._add(block)
        self._assign_variables(var_args, environ)

    # -- reading --

    def _add(self, block: Block) -> None:
        if block.type == "variable" and len(block.labels) == 1:
            self.variables[block.labels[0]] = _Variable(
                block, _type_text(block.attributes.get("type"))
            )
        elif block.type == "locals":
            self.locals.update(block.attributes)
        elif block.type == "resource" and len(block.labels) == 2:
            self.resources[(block.labels[0], block.labels[1])] = block
        elif block.type == "data" and len(block.labels) == 2:
            self.data[(block.labels[0], block.labels[1])] = block
        elif block.type == "module" and len(block.labels) == 1:
            self.modules[block.labels[0]] = block

    # -- variables --

    def _convert(self, var: _Variable, value: Any, where: str) -> Any:
        """Terraform's conversion of a value to the variable's primitive type."""
        if isinstance(value, Unknown) or value is None:
            return value
        if var.type == "string" and isinstance(value, bool | int | float):
            return hcl_string(value, where)
        if var.type == "number" and isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise TemplateError(
                    f"variable '{var.block.labels[0]}' is a number; \"{value}\" is not",
                    file=where,
                    code=VARIABLE_CODE,
                ) from None
            return int(number) if number.is_integer() else number
        if var.type == "bool" and isinstance(value, str):
            if value not in ("true", "false"):
                raise TemplateError(
                    f"variable '{var.block.labels[0]}' is a bool; \"{value}\" is not",
                    file=where,
                    code=VARIABLE_CODE,
                )
            return value == "true"
        return value

    def _from_text(self, var: _Variable, text: str, where: str) -> Any:
        """A ``--var`` or ``TF_VAR_`` value: a string, or HCL for a collection type."""
        if var.type in ("string", "number", "bool", "any"):
            return self._convert(var, text, where)
        from emulator.terraform.hcl import parse_expression

        expr = parse_expression(text, file=where, line=None)
        return self._literal(expr, where)

    def _literal(self, expr: Tree[Token], file: str) -> Any:
        return Evaluator(_NoReferences(), base_dir=self.directory).evaluate(expr, file=file)

    def _set(self, name: str, value: Any, where: str, *, declared_only: bool) -> None:
        var = self.variables.get(name)
        if var is None:
            if declared_only:
                known = ", ".join(sorted(self.variables)) or "none"
                raise TemplateError(
                    f"a value was given for the undeclared variable '{name}'",
                    file=where,
                    fix=f"declare it with a variable block, or fix the name (declared: {known})",
                    code=VARIABLE_CODE,
                )
            self.warnings.append(
                f"{where}: a value for the undeclared variable '{name}' is ignored (Terraform "
                "warns the same way)"
            )
            return
        var.value, var.set_by = self._convert(var, value, where), where

    def _tfvars(self, path: Path, *, name: str, declared_only: bool) -> None:
        if path.suffix == ".json":
            try:
                data = bounded_json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise TemplateError(
                    f"cannot read the variables file: {exc}", file=name, code=VARIABLE_CODE
                ) from exc
            if not isinstance(data, dict):
                raise TemplateError(
                    "a .tfvars.json file must hold one JSON object", file=name, code=VARIABLE_CODE
                )
            for key, value in data.items():
                self._set(key, value, name, declared_only=declared_only)
            return
        parsed = parse_file(path, name=name)
        for block in parsed.blocks:
            raise TemplateError(
                f"a variables file holds NAME = VALUE lines only, not a '{block.type}' block",
                file=block.where,
                code=VARIABLE_CODE,
            )
        for attr in parsed.stray:
            where = location(name, attr.line)
            self._set(attr.name, self._literal(attr.expr, name), where, declared_only=declared_only)

    def _assign_variables(self, var_args: Sequence[VarArg], environ: Mapping[str, str]) -> None:
        for name, var in self.variables.items():
            default = var.block.attributes.get("default")
            if default is not None:
                var.value = self._convert(
                    var, self._literal(default.expr, default.file), var.block.where
                )
                var.set_by = "default"
            text = environ.get(f"TF_VAR_{name}")
            if text is not None:
                var.value = self._from_text(var, text, f"TF_VAR_{name}")
                var.set_by = f"TF_VAR_{name}"
        files = [self.directory / "terraform.tfvars", self.directory / "terraform.tfvars.json"]
        files += sorted(
            (*self.directory.glob("*.auto.tfvars"), *self.directory.glob("*.auto.tfvars.json")),
            key=lambda p: p.name,
        )
        for path in files:
            if path.is_file():
                self._tfvars(path, name=path.name, declared_only=False)
        for kind, text in var_args:
            if kind == "file":
                path = Path(text)
                if not path.is_file():
                    raise TemplateError(
                        f"the variables file {text} does not exist",
                        file=text,
                        fix="check the --var-file path",
                        code=VARIABLE_CODE,
                    )
                self._tfvars(path, name=text, declared_only=True)
                continue
            name, sep, value = text.partition("=")
            if not sep or not name:
                raise TemplateError(
                    f"--var '{text}' is not NAME=VALUE",
                    fix="write --var NAME=VALUE",
                    code=VARIABLE_CODE,
                )
            declared = self.variables.get(name)
            where = f"--var {name}"
            self._set(
                name,
                self._from_text(declared, value, where) if declared is not None else value,
                where,
                declared_only=True,
            )

    def variable(self, name: str, where: str) -> Any:
        var = self.variables.get(name)
        if var is None:
            raise TemplateError(
                f"var.{name} is not declared",
                file=where,
                fix=f'declare it: variable "{name}" {{}} (declared: '
                f"{', '.join(sorted(self.variables)) or 'none'})",
                code=VARIABLE_CODE,
            )
        if var.set_by is None:
            raise TemplateError(
                f"the variable '{name}' has no value (Terraform would prompt for it)",
                file=var.block.where,
                fix=f"pass --var {name}=VALUE, a --var-file, TF_VAR_{name}, or a terraform.tfvars "
                "entry",
                code=VARIABLE_CODE,
            )
        return var.value

    # -- references --

    def resolve(self, root: str, names: Sequence[str], *, where: str) -> tuple[Any, int]:
        """Names an expression starts with (see :class:`emulator.terraform.evaluate.References`)."""
        if root in ("var", "local", "path", "terraform") and not names:
            raise TemplateError(f"'{root}' needs an attribute", file=where, code=UNSUPPORTED_CODE)
        if root == "var":
            return self.variable(names[0], where), 1
        if root == "local":
            return self._local(names[0], where), 1
        if root == "path":
            return str(self.directory), 1
        if root == "terraform":
            return "default", 1
        if root == "data":
            key = (names[0], names[1]) if len(names) > 1 else (names[0] if names else "", "")
            declared = self.data.get(key)
            at = f" (declared at {declared.where})" if declared else ""
            raise TemplateError(
                f"data.{'.'.join(names[:2])}{at} is read from Azure when Terraform plans; the "
                "static reader cannot",
                file=where,
                fix="put the value in a variable, " + PLAN_HINT,
                code=UNSUPPORTED_CODE,
            )
        if root == "module":
            declared_module = self.modules.get(names[0]) if names else None
            at = f" (declared at {declared_module.where})" if declared_module else ""
            raise TemplateError(
                f"module.{'.'.join(names[:1])}{at} is a module output; the static reader reads "
                "the root module only",
                file=where,
                fix=PLAN_HINT.removeprefix("or "),
                code=UNSUPPORTED_CODE,
            )
        if root in ("count", "each", "self"):
            raise TemplateError(
                f"'{root}' is only known inside a resource with count or for_each",
                file=where,
                fix=PLAN_HINT.removeprefix("or "),
                code=UNSUPPORTED_CODE,
            )
        if len(names) >= 1 and (root, names[0]) in self.resources:
            if len(names) == 1:
                return Unknown(f"{root}.{names[0]}"), 1
            return self._resource_attribute(root, names[0], names[1], where), 2
        raise TemplateError(
            f"'{'.'.join([root, *names[:2]])}' refers to nothing declared in the configuration",
            file=where,
            fix="check the name (the static reader reads the .tf files of this directory only)",
            code=UNSUPPORTED_CODE,
        )

    def _guard(self, key: str, where: str) -> None:
        if key in self._resolving:
            raise TemplateError(
                f"{key} refers to itself ({' -> '.join([*self._resolving, key])})",
                file=where,
                code=UNSUPPORTED_CODE,
            )

    def _local(self, name: str, where: str) -> Any:
        if name in self._local_values:
            return self._local_values[name]
        attr = self.locals.get(name)
        if attr is None:
            raise TemplateError(
                f"local.{name} is not declared",
                file=where,
                fix=f"declared locals: {', '.join(sorted(self.locals)) or 'none'}",
                code=UNSUPPORTED_CODE,
            )
        self._guard(f"local.{name}", where)
        self._resolving.append(f"local.{name}")
        try:
            value = self.evaluator.evaluate(attr.expr, file=attr.file)
        finally:
            self._resolving.pop()
        self._local_values[name] = value
        return value

    def _resource_attribute(self, rtype: str, name: str, attr: str, where: str) -> Any:
        block = self.resources[(rtype, name)]
        if attr == "id" and rtype == GATEWAY_RESOURCE:
            return self.gateway_id(block, where)
        if attr == "id" and rtype in ("azapi_resource",):
            return self._azapi_id(block, where)
        found = block.attributes.get(attr)
        if found is None:
            return Unknown(f"{rtype}.{name}.{attr}")
        key = f"{rtype}.{name}.{attr}"
        self._guard(key, where)
        self._resolving.append(key)
        try:
            return self.evaluator.evaluate(found.expr, file=found.file)
        finally:
            self._resolving.pop()

    def attribute(self, block: Block, name: str) -> Any:
        attr = block.attributes.get(name)
        return None if attr is None else self.evaluator.evaluate(attr.expr, file=attr.file)

    def _resource_group(self, block: Block) -> str:
        group = self.attribute(block, "resource_group_name")
        return group if isinstance(group, str) else self.scope.resource_group

    def gateway_id(self, block: Block, where: str) -> Any:
        """The ARM id azurerm gives the gateway (its ``id`` attribute after apply)."""
        name = self.attribute(block, "name")
        if not isinstance(name, str):
            return Unknown(f"{GATEWAY_RESOURCE}.{block.labels[1]}.id")
        return resource_id(
            GATEWAY_TYPE,
            [name],
            subscription_id=self.scope.subscription_id,
            resource_group=self._resource_group(block),
        )

    def _azapi_id(self, block: Block, where: str) -> Any:
        type_ = self.attribute(block, "type")
        name = self.attribute(block, "name")
        parent = self.attribute(block, "parent_id")
        if not (isinstance(type_, str) and isinstance(name, str) and isinstance(parent, str)):
            return Unknown(f"azapi_resource.{block.labels[1]}.id")
        return f"{parent}/providers/{type_.partition('@')[0]}/{name}"

    # -- blocks to values --

    def object(self, block: Block, scope: Mapping[str, Any] | None = None) -> TfObject:
        """A block's arguments and nested blocks as Terraform's JSON value shape: nested blocks
        become lists of objects under their type, ``dynamic`` blocks are expanded."""
        scope = scope or {}
        out = TfObject()
        out.file, out.line, out.lines = block.file, block.line, {}
        for name, attr in block.attributes.items():
            if name in RESOURCE_META:
                continue
            out[name] = self.evaluator.evaluate(attr.expr, file=attr.file, scope=scope)
            out.lines[name] = attr.line
        for child in block.blocks:
            if child.type in RESOURCE_META:
                continue
            if child.type == "dynamic":
                self._dynamic(child, out, scope)
                continue
            out.setdefault(child.type, []).append(self.object(child, scope))
            out.lines.setdefault(child.type, child.line)
        return out

    def _dynamic(self, block: Block, out: TfObject, scope: Mapping[str, Any]) -> None:
        label = block.labels[0] if block.labels else ""
        for_each = block.attributes.get("for_each")
        contents = [b for b in block.blocks if b.type == "content"]
        if for_each is None or len(contents) != 1:
            raise TemplateError(
                f'dynamic "{label}" needs for_each and one content block',
                file=block.where,
                code=UNSUPPORTED_CODE,
            )
        iterator = label
        if "iterator" in block.attributes:
            iterator = "".join(
                str(t)
                for t in block.attributes["iterator"].expr.scan_values(
                    lambda v: isinstance(v, Token)
                )
            ).strip()
        collection = self.evaluator.evaluate(for_each.expr, file=for_each.file, scope=scope)
        if isinstance(collection, Unknown):
            raise TemplateError(
                f'the for_each of dynamic "{label}" depends on {collection.reason}, known only '
                "after apply",
                file=location(for_each.file, for_each.line),
                fix=PLAN_HINT.removeprefix("or "),
                code=UNSUPPORTED_CODE,
            )
        if isinstance(collection, Mapping):
            pairs: list[tuple[Any, Any]] = [(k, collection[k]) for k in sorted(collection)]
        elif isinstance(collection, list):
            pairs = list(enumerate(collection))
        else:
            raise TemplateError(
                f'the for_each of dynamic "{label}" must be a list, set or map',
                file=location(for_each.file, for_each.line),
                code=UNSUPPORTED_CODE,
            )
        items = out.setdefault(label, [])
        out.lines.setdefault(label, block.line)
        for key, value in pairs:
            inner = {**scope, iterator: {"key": key, "value": value}}
            items.append(self.object(contents[0], inner))


class _NoReferences:
    """For ``.tfvars`` files and defaults: constant values only, as Terraform requires."""

    def resolve(self, root: str, names: Sequence[str], *, where: str) -> tuple[Any, int]:
        raise TemplateError(
            f"'{root}' cannot be used here: variable values must be constants",
            file=where,
            code=VARIABLE_CODE,
        )


def load_directory(
    directory: Path,
    *,
    scope: DeploymentScope,
    var_args: Sequence[VarArg] = (),
    environ: Mapping[str, str] | None = None,
) -> Configuration:
    """Read every ``*.tf`` file of ``directory`` (Terraform's root module)."""
    if not directory.is_dir():
        raise TemplateError(
            f"{directory} is not a directory",
            file=str(directory),
            fix="pass the directory holding the .tf files to --terraform",
            code="EmulatorTerraformUnreadable",
        )
    files = sorted(directory.glob("*.tf"))
    if not files:
        raise TemplateError(
            f"{directory} holds no .tf files",
            file=str(directory),
            fix="pass the directory holding the configuration's .tf files",
            code="EmulatorTerraformUnreadable",
        )
    if len(files) > MAX_FILES:
        raise TemplateError(
            f"{directory} holds more than {MAX_FILES} .tf files",
            file=str(directory),
            code="EmulatorTerraformUnreadable",
        )
    blocks: list[Block] = []
    for path in files:
        parsed = parse_file(path, name=str(path))
        for attr in parsed.stray:
            raise TemplateError(
                f"'{attr.name} = ...' outside any block",
                file=location(parsed.file, attr.line),
                fix="move it into a block",
                code="EmulatorTerraformSyntax",
            )
        blocks.extend(parsed.blocks)
    cfg = Configuration(
        directory,
        blocks,
        scope=scope,
        var_args=var_args,
        environ=os.environ if environ is None else environ,
    )
    for path in sorted(directory.glob("*.tf.json")):
        cfg.warnings.append(
            f"{path}: the JSON form of the Terraform language is not read (use --terraform-plan)"
        )
    return cfg
