"""A small evaluator for the part of the Terraform language that gateway configurations use.

Covers literals, string templates and heredocs with ``${...}``, operators, conditionals,
``for`` expressions, splats, indexes and attribute access, and a short list of built-in
functions (:data:`FUNCTIONS`). What a name refers to (``var.x``, ``local.y``,
``azurerm_subnet.s.id``) is decided by the caller's :class:`References`, so this module knows
nothing of files other than those ``file()`` reads.

A value that Terraform only learns at apply time (a subnet's id) is an :class:`Unknown`; it
flows through templates and functions untouched, and only becomes an error where the emulator
needs the value itself. Template directives (``%{ if }``) and provider functions are refused
with the file and line, pointing to ``--terraform-plan``, where Terraform has done the work.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from lark import Token, Tree

from emulator.arm import bounded_json
from emulator.errors import TemplateError
from emulator.terraform.hcl import location, parse_expression, trees

__all__ = [
    "EXPRESSION_CODE",
    "FUNCTIONS",
    "Evaluator",
    "References",
    "Unknown",
    "hcl_string",
]

EXPRESSION_CODE: Final = "EmulatorTerraformExpression"
PLAN_HINT: Final = (
    "or run `terraform plan -out tf.plan && terraform show -json tf.plan > plan.json` and pass "
    "--terraform-plan plan.json"
)
#: ``for`` expressions and splats over more items than this are refused: a gateway has at most
#: 100 of any child (Azure's limits), so a bigger collection is a mistake, not a config.
MAX_ITEMS: Final = 10_000


@dataclass(frozen=True, slots=True)
class Unknown:
    """A value Terraform knows only after apply; ``reason`` names where it comes from."""

    reason: str


class References(Protocol):
    """Resolves the names an expression starts with (``var``, ``local``, resource types)."""

    def resolve(self, root: str, names: Sequence[str], *, where: str) -> tuple[Any, int]:
        """The value of ``root.names[0]...``; returns it and how many of ``names`` it used."""
        ...


def _error(message: str, where: str, fix: str | None = None) -> TemplateError:
    return TemplateError(message, file=where, fix=fix, code=EXPRESSION_CODE)


def _line(node: Tree[Token]) -> int | None:
    return None if node.meta.empty else node.meta.line


def _text(node: Tree[Token] | Token) -> str:
    if isinstance(node, Token):
        return str(node)
    return "".join(str(t) for t in node.scan_values(lambda v: isinstance(v, Token)))


def _tokens(node: Tree[Token]) -> list[str]:
    return [t.type for t in node.children if isinstance(t, Token)]


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() and "e" not in text.lower() else value


def hcl_string(value: Any, where: str) -> str:
    """A value as string interpolation writes it (``true``, ``3``); errors for collections."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if value is None:
        raise _error("a null value cannot be used in a string template", where)
    raise _error(
        f"a {type(value).__name__} value cannot be used in a string template",
        where,
        fix="use jsonencode() or join() to turn it into a string",
    )


_ESCAPES: Final = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}
_ESCAPE_RE: Final = re.compile(r"\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)")


def _unescape(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        seq = match.group(1)
        if seq[0] in "uU" and len(seq) > 1:
            return chr(int(seq[1:], 16))
        return _ESCAPES.get(seq, "\\" + seq)

    return _ESCAPE_RE.sub(one, text)


# -- functions ---------------------------------------------------------------------------------


def _b64_is(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except ValueError:
        return False
    return True


def _merge(*maps: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in maps:
        if item is not None:
            out.update(item)
    return out


def _format(spec: str, *args: Any) -> str:
    values = iter(args)

    def one(match: re.Match[str]) -> str:
        verb = match.group(1)
        if verb == "%":
            return "%"
        value = next(values)
        if verb == "q":
            return json.dumps(value)
        if verb == "v" and not isinstance(value, str):
            return json.dumps(value)
        return hcl_string(value, "format()")

    return re.sub(r"%([sdvq%])", one, spec)


def _lookup(m: Mapping[str, Any], key: str, *default: Any) -> Any:
    if key in m:
        return m[key]
    if default:
        return default[0]
    raise KeyError(key)


#: The built-in functions the static reader evaluates (``file*`` ones are added per directory).
FUNCTIONS: Final[Mapping[str, Callable[..., Any]]] = {
    "base64encode": lambda s: base64.b64encode(s.encode()).decode(),
    "base64decode": lambda s: base64.b64decode(s).decode(),
    "jsonencode": lambda v: json.dumps(v, separators=(",", ":"), ensure_ascii=False),
    "jsondecode": bounded_json.loads,
    "lower": str.lower,
    "upper": str.upper,
    "trimspace": str.strip,
    "replace": lambda s, old, new: s.replace(old, new),
    "join": lambda sep, items: sep.join(items),
    "split": lambda sep, s: s.split(sep),
    "concat": lambda *lists: [x for item in lists for x in item],
    "merge": _merge,
    "lookup": _lookup,
    "length": len,
    "keys": lambda m: sorted(m),
    "values": lambda m: [m[k] for k in sorted(m)],
    "contains": lambda items, v: v in items,
    "zipmap": lambda ks, vs: dict(zip(ks, vs, strict=True)),
    "coalesce": lambda *vs: next(v for v in vs if v not in (None, "")),
    "format": _format,
    "tostring": lambda v: v if v is None else hcl_string(v, "tostring()"),
    "tonumber": lambda v: v if v is None or isinstance(v, int | float) else _number(v),
    "tobool": lambda v: (
        v if isinstance(v, bool) or v is None else {"true": True, "false": False}[v]
    ),
    "tolist": list,
    "toset": lambda v: sorted(set(v), key=str),
    "tomap": dict,
    "try": lambda *vs: vs[0],
    "can": lambda v: True,
}


_ARITHMETIC: Final[Mapping[str, Callable[[Any, Any], Any]]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: _number(repr(a / b)),
    "%": lambda a, b: a % b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}


# -- the evaluator -----------------------------------------------------------------------------


class Evaluator:
    """Evaluates expression trees of one configuration directory.

    Args:
        references: resolves ``var.*``, ``local.*``, resource and data references.
        base_dir: where ``file()`` and ``filebase64()`` resolve relative paths: the
            configuration directory, as for ``terraform -chdir=DIR``.
    """

    def __init__(self, references: References, *, base_dir: Path) -> None:
        self.references = references
        self.base_dir = base_dir

    # The entry point: ``scope`` holds ``for``/``dynamic`` iterator names.
    def evaluate(self, node: Tree[Token], *, file: str, scope: Mapping[str, Any] = {}) -> Any:
        return self._eval(node, file, scope)

    def _eval(self, node: Tree[Token], file: str, scope: Mapping[str, Any]) -> Any:
        handler = getattr(self, f"_e_{node.data}", None)
        where = location(file, _line(node))
        if handler is None:
            raise _error(
                f"the expression form '{node.data}' is not evaluated by the static reader",
                where,
                fix=PLAN_HINT,
            )
        return handler(node, file, scope)

    # -- terms --

    def _e_expr_term(self, node: Tree[Token], file: str, scope: Mapping[str, Any]) -> Any:
        inner = trees(node)
        if len(inner) == 1 and inner[0].data == "identifier":
            return self._reference(node, file, scope)
        if len(inner) == 1 and inner[0].data in ("get_attr_expr_term", "index_expr_term"):
            return self._reference(node, file, scope)
        return self._eval(inner[0], file, scope)

    def _e_get_attr_expr_term(self, n: Tree[Token], f: str, s: Mapping[str, Any]) -> Any:
        return self._reference(n, f, s)

    _e_index_expr_term = _e_get_attr_expr_term

    def _e_int_lit(self, node: Tree[Token], file: str, scope: Mapping[str, Any]) -> Any:
        return _number(_text(node))

    _e_float_lit = _e_int_lit

    def _e_literal_value(self, node: Tree[Token], file: str, scope: Mapping[str, Any]) -> Any:
        return {"true": True, "false": False, "null": None}[_text(node)]

    def _e_tuple(self, node: Tree[Token], file: str, scope: Mapping[str, Any]) -> Any:
        return [self._eval(item, file, scope) for item in trees(node)]

    def _e_object(self, node: Tree[Token], file: str, scope: Mapping[str, Any]) -> Any:
        out: dict[str, Any] = {}
        for elem in trees(node):
            key_node, value_node = trees(elem)
            key_inner = trees(key_node)
            where = location(file, _line(elem))
            if key_node.data == "keyword" or (
                key_inner
                and key_inner[0].data == "expr_term"
                and trees(key_inner[0])
                and trees(key_inner[0])[0].data == "identifier"
            ):
                key: Any = _text(key_node)  # a bare name is the key itself, as in HCL
            else:
                key = self._eval(key_inner[0] if key_inner else key_node, file, scope)
            if isinstance(key, Unknown):
                return key
            out[hcl_string(key, where)] = self._eval(value_node, file, scope)
        return out

    # -- strings --

    def _e_string(self, node: Tree[Token], file: str, scope: Mapping[str, Any]) -> Any:
        parts = trees(node)
        only = [p for p in parts if trees(p)]
        if len(parts) == 1 and len(only) == 1 and trees(only[0])[0].data == "interpolation":
            # "${x}" alone keeps x's type, as in Terraform.
            return self._eval(trees(trees(only[0])[0])[0], file, scope)
        out: list[str] = []
        for part in parts:
            inner = trees(part)
            if not inner:
                token = part.children[0]
                assert isinstance(token, Token)
                if token.type in ("ESCAPED_INTERPOLATION", "ESCAPED_DIRECTIVE"):
                    out.append(str(token)[1:])  # $${x} is the text ${x}
                else:
                    out.append(_unescape(str(token)))
                continue
            if inner[0].data != "interpolation":
                raise _error(
                    "template directives (%{ if }, %{ for }) are not evaluated by the static "
                    "reader",
                    location(file, _line(part)),
                    fix="use a conditional or a for expression, " + PLAN_HINT,
                )
            value = self._eval(trees(inner[0])[0], file, scope)
            if isinstance(value, Unknown):
                return value
            out.append(hcl_string(value, location(file, _line(part))))
        return "".join(out)

    def _heredoc(self, node: Tree[Token], file: str, scope: Mapping[str, Any], trim: bool) -> Any:
        raw = _text(node)
        first, _, rest = raw.partition("\n")
        marker = first.lstrip("<-").strip()
        lines = rest.rstrip("\n").split("\n")
        if lines and lines[-1].strip() == marker:
            lines = lines[:-1]
        if trim:
            indents = [len(x) - len(x.lstrip()) for x in lines if x.strip()]
            cut = min(indents, default=0)
            lines = [x[cut:] for x in lines]
        body = "\n".join(lines) + "\n"
        return self._template(body, file, _line(node), scope)

    def _e_heredoc_template(self, node: Tree[Token], file: str, scope: Mapping[str, Any]) -> Any:
        return self._heredoc(node, file, scope, trim=False)

    def _e_heredoc_template_trim(
        self, node: Tree[Token], file: str, scope: Mapping[str, Any]
    ) -> Any:
        return self._heredoc(node, file, scope, trim=True)

    def _template(self, text: str, file: str, line: int | None, scope: Mapping[str, Any]) -> Any:
        """A heredoc's body: literal text with ``${...}`` parsed one by one."""
        out: list[str] = []
        i = 0
        while (start := text.find("${", i)) >= 0:
            if start > 0 and text[start - 1] == "$":
                out.append(text[i : start - 1] + "${")
                i = start + 2
                continue
            out.append(text[i:start])
            depth, j = 1, start + 2
            while j < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            here = None if line is None else line + text.count("\n", 0, start) + 1
            if depth:
                raise _error("unterminated ${ in a heredoc", location(file, here))
            expr = parse_expression(text[start + 2 : j - 1], file=file, line=here)
            value = self._eval(expr, file, scope)
            if isinstance(value, Unknown):
                return value
            out.append(hcl_string(value, location(file, here)))
            i = j
        if "%{" in text[i:]:
            raise _error("template directives are not evaluated", location(file, line), PLAN_HINT)
        out.append(text[i:])
        return "".join(out)

    # -- operators --

    def _e_conditional(self, node: Tree[Token], file: str, scope: Mapping[str, Any]) -> Any:
        cond, yes, no = trees(node)
        value = self._eval(cond, file, scope)
        if isinstance(value, Unknown):
            return value
        if not isinstance(value, bool):
            raise _error("the condition is not a bool", location(file, _line(node)))
        return self._eval(yes if value else no, file, scope)

    def _e_unary_op(self, node: Tree[Token], file: str, scope: Mapping[str, Any]) -> Any:
        value = self._eval(trees(node)[0], file, scope)
        if isinstance(value, Unknown):
            return value
        where = location(file, _line(node))
        if "NOT" in _tokens(node):
            if not isinstance(value, bool):
                raise _error("'!' needs a bool", where)
            return not value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _error("'-' needs a number", where)
        return -value

    def _e_binary_op(self, node: Tree[Token], file: str, scope: Mapping[str, Any]) -> Any:
        left_node, term = trees(node)
        op_node, right_node = trees(term)
        op = _text(op_node).strip()
        where = location(file, _line(node))
        left = self._eval(left_node, file, scope)
        if op == "&&" and left is False:
            return False
        if op == "||" and left is True:
            return True
        right = self._eval(right_node, file, scope)
        if isinstance(left, Unknown):
            return left
        if isinstance(right, Unknown):
            return right
        if op == "==":
            return bool(left == right)
        if op == "!=":
            return bool(left != right)
        if op in ("&&", "||"):
            if not (isinstance(left, bool) and isinstance(right, bool)):
                raise _error(f"'{op}' needs bools", where)
            return left and right if op == "&&" else left or right
        numbers = []
        for v in (left, right):
            if isinstance(v, str):
                try:
                    v = _number(v)
                except ValueError:
                    raise _error(f"'{op}' needs numbers, got \"{v}\"", where) from None
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise _error(f"'{op}' needs numbers", where)
            numbers.append(v)
        a, b = numbers
        if op in ("/", "%") and b == 0:
            raise _error("division by zero", where)
        return _ARITHMETIC[op](a, b)

    # -- references --

    def _chain(self, node: Tree[Token]) -> tuple[Tree[Token], list[Tree[Token] | str | int]]:
        """Flattens ``a.b[0].c`` into its root term and steps (names, or index trees)."""
        steps: list[Tree[Token] | str | int] = []
        while True:
            inner = trees(node)
            if (
                node.data == "expr_term"
                and len(inner) == 1
                and inner[0].data
                in (
                    "get_attr_expr_term",
                    "index_expr_term",
                )
            ):
                node = inner[0]
            elif node.data == "get_attr_expr_term":
                base, attr = inner
                steps.append(_text(trees(attr)[0]))
                node = base
            elif node.data == "index_expr_term":
                base, index = inner
                if index.data == "short_index":
                    steps.append(int(_text(index).lstrip(".")))
                else:
                    steps.append(trees(index)[0])
                node = base
            else:
                break
        steps.reverse()
        return node, steps

    def _reference(self, node: Tree[Token], file: str, scope: Mapping[str, Any]) -> Any:
        root, steps = self._chain(node)
        where = location(file, _line(node))
        inner = trees(root)
        if root.data == "expr_term" and len(inner) == 1 and inner[0].data == "identifier":
            name = _text(inner[0])
            if name in scope:
                value = scope[name]
            else:
                names: list[str] = []
                for step in steps:
                    if not isinstance(step, str):
                        break
                    names.append(step)
                value, used = self.references.resolve(name, names, where=where)
                steps = steps[used:]
        else:
            value = self._eval(root, file, scope)
        for step in steps:
            value = self._step(value, step, file, scope, where)
        return value

    def _step(
        self,
        value: Any,
        step: Tree[Token] | str | int,
        file: str,
        scope: Mapping[str, Any],
        where: str,
    ) -> Any:
        if isinstance(value, Unknown):
            return value
        key = step if isinstance(step, str | int) else self._eval(step, file, scope)
        if isinstance(key, Unknown):
            return key
        if isinstance(value, Mapping):
            if isinstance(key, str) and key in value:
                return value[key]
            raise _error(f"the object has no attribute or key '{key}'", where)
        if isinstance(value, list):
            if isinstance(key, bool):
                raise _error("a list index must be a number", where)
            if isinstance(key, str) and key.isdigit():
                key = int(key)
            if isinstance(key, int) and 0 <= key < len(value):
                return value[key]
            raise _error(f"the index {key} is out of range (the list has {len(value)})", where)
        raise _error(f"cannot take '{key}' of a {type(value).__name__} value", where)

    def _splat(self, node: Tree[Token], file: str, scope: Mapping[str, Any], *, full: bool) -> Any:
        base, splat = trees(node)
        where = location(file, _line(node))
        value = self._eval(base, file, scope)
        if isinstance(value, Unknown):
            return value
        items = [] if value is None else value if isinstance(value, list) else [value]
        if len(items) > MAX_ITEMS:
            raise _error(f"the splat has more than {MAX_ITEMS} items", where)
        steps: list[Tree[Token] | str | int] = []
        for s in trees(splat):
            if s.data == "get_attr":
                steps.append(_text(trees(s)[0]))
            elif s.data == "short_index":
                steps.append(int(_text(s).lstrip(".")))
            else:
                steps.append(trees(s)[0])
        out = []
        for item in items:
            for step in steps:
                item = self._step(item, step, file, scope, where)
            out.append(item)
        return out

    def _e_full_splat_expr_term(self, n: Tree[Token], f: str, s: Mapping[str, Any]) -> Any:
        return self._splat(n, f, s, full=True)

    def _e_attr_splat_expr_term(self, n: Tree[Token], f: str, s: Mapping[str, Any]) -> Any:
        return self._splat(n, f, s, full=False)

    # -- for expressions --

    def _iterate(
        self, intro: Tree[Token], file: str, scope: Mapping[str, Any]
    ) -> Iterator[dict[str, Any]] | Unknown:
        parts = trees(intro)
        names = [_text(p) for p in parts[:-1]]
        collection = self._eval(parts[-1], file, scope)
        if isinstance(collection, Unknown):
            return collection
        where = location(file, _line(intro))
        if isinstance(collection, Mapping):
            pairs: list[tuple[Any, Any]] = [(k, collection[k]) for k in sorted(collection)]
        elif isinstance(collection, list):
            pairs = list(enumerate(collection))
        else:
            raise _error("a for expression needs a list, set, map or object", where)
        if len(pairs) > MAX_ITEMS:
            raise _error(f"the for expression has more than {MAX_ITEMS} items", where)

        def gen() -> Iterator[dict[str, Any]]:
            for key, value in pairs:
                inner = dict(scope)
                if len(names) == 2:
                    inner[names[0]], inner[names[1]] = key, value
                else:
                    inner[names[0]] = value
                yield inner

        return gen()

    def _keep(self, cond: Tree[Token] | None, file: str, scope: Mapping[str, Any]) -> Any:
        return True if cond is None else self._eval(trees(cond)[0], file, scope)

    def _e_for_tuple_expr(self, node: Tree[Token], file: str, scope: Mapping[str, Any]) -> Any:
        parts = trees(node)
        intro, value_node = parts[0], parts[1]
        cond = parts[2] if len(parts) > 2 else None
        scopes = self._iterate(intro, file, scope)
        if isinstance(scopes, Unknown):
            return scopes
        out = []
        for inner in scopes:
            keep = self._keep(cond, file, inner)
            if isinstance(keep, Unknown):
                return keep
            if keep:
                out.append(self._eval(value_node, file, inner))
        return out

    def _e_for_object_expr(self, node: Tree[Token], file: str, scope: Mapping[str, Any]) -> Any:
        parts = trees(node)
        intro, key_node, value_node = parts[0], parts[1], parts[2]
        cond = parts[3] if len(parts) > 3 else None
        grouping = "ELLIPSIS" in _tokens(node)
        scopes = self._iterate(intro, file, scope)
        if isinstance(scopes, Unknown):
            return scopes
        out: dict[str, Any] = {}
        where = location(file, _line(node))
        for inner in scopes:
            keep = self._keep(cond, file, inner)
            if isinstance(keep, Unknown):
                return keep
            if not keep:
                continue
            key = self._eval(key_node, file, inner)
            if isinstance(key, Unknown):
                return key
            key = hcl_string(key, where)
            value = self._eval(value_node, file, inner)
            if grouping:
                out.setdefault(key, []).append(value)
            elif key in out:
                raise _error(f"the key '{key}' appears twice (add ... to group)", where)
            else:
                out[key] = value
        return out

    # -- functions --

    def _e_function_call(self, node: Tree[Token], file: str, scope: Mapping[str, Any]) -> Any:
        parts = trees(node)
        where = location(file, _line(node))
        if "COLONS" in _tokens(node):
            raise _error(
                "provider functions are not evaluated by the static reader", where, PLAN_HINT
            )
        name = _text(parts[0])
        arg_nodes = trees(parts[1]) if len(parts) > 1 else []
        args = [self._eval(a, file, scope) for a in arg_nodes]
        if len(parts) > 1 and "ELLIPSIS" in _tokens(parts[1]) and args:
            last = args.pop()
            if isinstance(last, Unknown):
                return last
            args.extend(last)
        if name in ("try", "can"):
            return self._try(name, arg_nodes, file, scope)
        unknown = next((a for a in args if isinstance(a, Unknown)), None)
        if unknown is not None:
            return unknown
        if name in ("file", "filebase64"):
            return self._file(name, args, where)
        function = FUNCTIONS.get(name)
        if function is None:
            raise _error(
                f"the function {name}() is not evaluated by the static reader",
                where,
                fix=f"the reader knows {', '.join(sorted({*FUNCTIONS, 'file', 'filebase64'}))}; "
                + PLAN_HINT,
            )
        try:
            return function(*args)
        except (TypeError, ValueError, KeyError, AttributeError, StopIteration) as exc:
            raise _error(f"{name}() failed: {type(exc).__name__}: {exc}", where) from exc

    def _try(
        self, name: str, arg_nodes: list[Tree[Token]], file: str, scope: Mapping[str, Any]
    ) -> Any:
        for arg in arg_nodes:
            try:
                value = self._eval(arg, file, scope)
            except TemplateError:
                if name == "can":
                    return False
                continue
            return True if name == "can" else value
        if name == "can":
            return False
        raise _error("no argument of try() could be evaluated", location(file, None))

    def _file(self, name: str, args: list[Any], where: str) -> Any:
        if len(args) != 1 or not isinstance(args[0], str):
            raise _error(f"{name}() takes one path", where)
        path = Path(args[0])
        if not path.is_absolute():
            path = self.base_dir / path
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise _error(
                f'{name}("{args[0]}"): cannot read {path}: {exc.strerror or exc}',
                where,
                fix="relative paths are read from the --terraform directory, as "
                "`terraform -chdir=DIR` reads them; check the path or make it absolute",
            ) from exc
        if name == "filebase64":
            return base64.b64encode(data).decode()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _error(
                f'file("{args[0]}"): {path} is not UTF-8 text',
                where,
                fix="use filebase64() for binary files such as a PFX",
            ) from exc
