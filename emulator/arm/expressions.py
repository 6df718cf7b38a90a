"""The ARM template expression language: tokenizer, parser and evaluator.

A JSON string in a template whose first character is ``[`` and last is ``]`` is an expression
(``"[concat(variables('vnetID'), '/subnets/', parameters('x'))]"``); a string starting with ``[[``
is the literal text with one ``[`` removed. The grammar is small::

    expression := primary accessor*
    primary    := STRING | INTEGER | NAME ['.' NAME] '(' [expression {',' expression}] ')' | NAME
    accessor   := '.' NAME | '[' expression ']'

Strings use single quotes and escape a quote by doubling it (``'it''s'``). ``true``/``false``/
``null`` are functions in ARM; the bare words are accepted too.

The module is pure: no file access, no clock (``utcNow`` reads ``EvalContext.now``), no
randomness. Variables are evaluated lazily on first use and cached, so a template that defines a
variable calling ``reference()`` still loads as long as the gateway never uses it — the same
"evaluate only what is needed" rule that ``template.py`` applies to resources.

Function semantics follow the reference pages under
https://learn.microsoft.com/azure/azure-resource-manager/templates/template-functions
(names case-insensitive; ``startsWith``/``endsWith``/``indexOf`` case-insensitive; ``contains`` on
strings case-sensitive but on object keys case-insensitive; ``union`` merges nested objects).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final
from urllib.parse import quote, unquote, urljoin, urlsplit

from emulator.arm import bounded_json
from emulator.errors import TemplateError

__all__ = [
    "MAX_EXPRESSION_CHARS",
    "MAX_EXPRESSION_DEPTH",
    "MAX_VALUE_CHARS",
    "Call",
    "DeploymentScope",
    "EvalContext",
    "ExpressionError",
    "Index",
    "Literal",
    "Member",
    "Node",
    "VariableCache",
    "arm_equals",
    "arm_guid",
    "arm_string",
    "arm_type_name",
    "evaluate_expression",
    "evaluate_value",
    "get_ci",
    "is_expression",
    "iter_function_names",
    "parse_expression",
    "resource_id",
    "unique_string",
]


#: ARM refuses a template expression longer than this (template-best-practices, "Template
#: limits": 24,576 characters in a template expression).
MAX_EXPRESSION_CHARS: Final = 24_576
#: How deeply calls, indexes and property reads may nest in one expression. Real expressions
#: nest a handful of levels; the parser and the evaluator recurse a few stack frames per level,
#: so 64 stay far from Python's limit (500 nested ``concat`` used to end in RecursionError).
#: Azure documents no such limit; a deeper expression is refused, never half evaluated.
MAX_EXPRESSION_DEPTH: Final = 64
#: The longest string, and the most array items or object members, an expression may build:
#: ARM limits the whole template to 4 MB after expansion (template-best-practices), so no value
#: in it can be larger. Checked before a function allocates its result (``padLeft``,
#: ``replace``, ``concat``, ``join``, ``format``, ``string``) and on every function's result, so
#: ``padLeft('a', 1500000000)`` or a chain of doubling ``concat`` calls stops here instead of
#: exhausting memory.
MAX_VALUE_CHARS: Final = 4 * 1024 * 1024
#: ARM's integers are 64-bit (.NET ``long``); a literal or a result outside is refused.
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


class ExpressionError(TemplateError):
    """An expression that ARM would refuse, or one the emulator cannot evaluate offline.

    Uses ARM's ``InvalidTemplate`` code (inherited): that is what ``az deployment group create``
    reports for a bad template language expression.
    """


# --------------------------------------------------------------------------------------------
# Context


@dataclass(frozen=True, slots=True)
class DeploymentScope:
    """Where the emulated deployment happens: what ``resourceGroup()``/``subscription()`` return.

    The defaults are local placeholders (an all-zero subscription and tenant, a resource group
    named ``appgw-emulator`` in ``westeurope``), so resource ids are stable between runs and
    obviously not real. The CLI may override them to mirror a real deployment's ids.
    """

    subscription_id: str = "00000000-0000-0000-0000-000000000000"
    resource_group: str = "appgw-emulator"
    location: str = "westeurope"
    tenant_id: str = "00000000-0000-0000-0000-000000000000"

    @property
    def resource_group_id(self) -> str:
        return f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"


class VariableCache:
    """Evaluated variables of one deployment, shared by every context derived from it.

    Mutable on purpose (the context around it is frozen): a variable is evaluated once, on first
    use; ``in_progress`` detects ``variables('a')`` → ``variables('b')`` → ``variables('a')``.
    """

    __slots__ = ("in_progress", "values")

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.in_progress: list[str] = []


#: ``utcNow()`` when a caller built a context without a time (tests of pure expressions).
#: ``load_template`` always passes the real start time of the deployment.
DEFAULT_NOW: Final = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class EvalContext:
    """Everything an expression may read.

    Args:
        parameters: final parameter values; looked up case-insensitively. May be a lazy mapping
            (``template.py`` resolves defaults on demand).
        variables: the template's raw ``variables`` section; evaluated lazily, cached in
            ``variable_cache``.
        scope: subscription / resource group / location of the deployment.
        now: the deployment time ``utcNow()`` returns (no clock here).
        deployment_name: what ``deployment().name`` returns.
        file: the template path, for error locations.
        allow_utc_now: ARM only allows ``utcNow()`` in a parameter's ``defaultValue``.
        copy_indexes: current iteration of each enclosing ``copy`` loop, by lower-cased name.
        resource_loop: lower-cased name of the resource-level loop, which ``copyIndex()``
            without a name refers to.
    """

    parameters: Mapping[str, Any]
    variables: Mapping[str, Any] = field(default_factory=dict)
    scope: DeploymentScope = field(default_factory=DeploymentScope)
    now: datetime = DEFAULT_NOW
    deployment_name: str = "appgw-emulator"
    file: str | None = None
    allow_utc_now: bool = False
    copy_indexes: Mapping[str, int] = field(default_factory=dict)
    resource_loop: str | None = None
    variable_cache: VariableCache = field(default_factory=VariableCache, compare=False, repr=False)


# --------------------------------------------------------------------------------------------
# Syntax tree


@dataclass(frozen=True, slots=True)
class Literal:
    """A string or integer literal; ``pos`` is the 0-based offset in the JSON string value."""

    value: str | int | bool | None
    pos: int


@dataclass(frozen=True, slots=True)
class Call:
    """``name(args...)``; ``name`` keeps the spelling of the template (``namespace.fn`` for
    user-defined functions)."""

    name: str
    args: tuple[Node, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class Member:
    """``target.name``."""

    target: Node
    name: str
    pos: int


@dataclass(frozen=True, slots=True)
class Index:
    """``target[index]`` (array position or object key)."""

    target: Node
    index: Node
    pos: int


Node = Literal | Call | Member | Index


# --------------------------------------------------------------------------------------------
# Tokenizer and parser


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "name", "string", "int", one of "(),.[]", or "end"
    value: str | int
    pos: int


_NAME_START: Final = re.compile(r"[A-Za-z_$]")
_NAME: Final = re.compile(r"[A-Za-z0-9_$]*")
_INT: Final = re.compile(r"-?[0-9]+")
_PUNCTUATION: Final = frozenset("(),.[]")


def _syntax_error(text: str, pos: int, what: str) -> ExpressionError:
    return ExpressionError(
        f"The template language expression '{text}' is not valid: {what} at position {pos + 1}.",
        fix="Check quotes and parentheses; a literal quote inside a string is written ''.",
    )


def _tokenize(text: str) -> list[_Token]:
    """Split the inside of ``[...]``; positions are offsets in ``text`` (which includes ``[``)."""
    tokens: list[_Token] = []
    i, end = 1, len(text) - 1
    while i < end:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == "'":
            start, i, chars = i, i + 1, []
            while True:
                if i >= end:
                    raise _syntax_error(text, start, "unterminated string literal")
                if text[i] == "'":
                    if i + 1 < end and text[i + 1] == "'":
                        chars.append("'")
                        i += 2
                        continue
                    i += 1
                    break
                chars.append(text[i])
                i += 1
            tokens.append(_Token("string", "".join(chars), start))
        elif ch in _PUNCTUATION:
            tokens.append(_Token(ch, ch, i))
            i += 1
        elif (m := _INT.match(text, i, end)) is not None:
            if m.end() < end and (text[m.end()] == "." or _NAME_START.match(text[m.end()])):
                raise _syntax_error(text, i, "only integer numbers are allowed")
            digits = m.group()
            # int() refuses more than 4,300 digits with ValueError; 20 already leave int64.
            value = int(digits) if len(digits) <= 20 else _INT64_MAX + 1
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise _syntax_error(text, i, "the integer does not fit in 64 bits")
            tokens.append(_Token("int", value, i))
            i = m.end()
        elif _NAME_START.match(ch):
            m2 = _NAME.match(text, i + 1, end)
            stop = m2.end() if m2 else i + 1
            tokens.append(_Token("name", text[i:stop], i))
            i = stop
        else:
            raise _syntax_error(text, i, f"unexpected character {ch!r}")
    tokens.append(_Token("end", "", end))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def ahead(self, k: int) -> _Token:
        return self.tokens[min(self.i + k, len(self.tokens) - 1)]  # the last token is "end"

    def take(self, kind: str) -> _Token:
        tok = self.tokens[self.i]
        if tok.kind != kind:
            found = "the end of the expression" if tok.kind == "end" else repr(tok.value)
            raise _syntax_error(self.text, tok.pos, f"expected {kind!r} but found {found}")
        self.i += 1
        return tok

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise _syntax_error(self.text, self.peek().pos, "empty expression")
        node = self.expression()
        tok = self.peek()
        if tok.kind != "end":
            raise _syntax_error(
                self.text, tok.pos, f"unexpected {tok.value!r} after the expression"
            )
        return node

    def expression(self) -> Node:
        self.depth += 1
        if self.depth > MAX_EXPRESSION_DEPTH:
            raise ExpressionError(
                f"The template language expression nests deeper than {MAX_EXPRESSION_DEPTH} "
                f"levels (at position {self.peek().pos + 1}).",
                fix="split it into variables that each do a part of the work",
            )
        try:
            return self._expression()
        finally:
            self.depth -= 1

    def _expression(self) -> Node:
        node = self.primary()
        while True:
            tok = self.peek()
            if tok.kind == ".":
                self.i += 1
                node = Member(node, str(self.take("name").value), tok.pos)
            elif tok.kind == "[":
                self.i += 1
                index = self.expression()
                self.take("]")
                node = Index(node, index, tok.pos)
            else:
                return node

    def primary(self) -> Node:
        tok = self.peek()
        if tok.kind in ("string", "int"):
            self.i += 1
            return Literal(tok.value, tok.pos)
        name_tok = self.take("name")
        name = str(name_tok.value)
        if self.peek().kind == "." and self.ahead(1).kind == "name" and self.ahead(2).kind == "(":
            # namespace.function(...) — a user-defined function
            self.i += 1
            name = f"{name}.{self.take('name').value}"
        if self.peek().kind != "(":
            if name.lower() not in _BARE_WORDS:
                raise _syntax_error(self.text, name_tok.pos, f"expected '(' after {name!r}")
            return Literal(_BARE_WORDS[name.lower()], name_tok.pos)
        self.take("(")
        args: list[Node] = []
        if self.peek().kind != ")":
            args.append(self.expression())
            while self.peek().kind == ",":
                self.i += 1
                args.append(self.expression())
        self.take(")")
        return Call(name, tuple(args), name_tok.pos)


_BARE_WORDS: Final[dict[str, bool | None]] = {"true": True, "false": False, "null": None}


def is_expression(value: object) -> bool:
    """True for a JSON string ARM evaluates (``[...]`` and not the ``[[`` escape)."""
    return (
        isinstance(value, str)
        and len(value) >= 2
        and value[0] == "["
        and value[-1] == "]"
        and not value.startswith("[[")
    )


@lru_cache(maxsize=4096)
def parse_expression(text: str) -> Node:
    """Parse a full ``[...]`` expression string into a tree; raises ``ExpressionError``."""
    if not is_expression(text):
        raise ExpressionError(f"'{text}' is not a template language expression.")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(
            f"The template language expression is {len(text):,} characters long; ARM accepts "
            f"at most {MAX_EXPRESSION_CHARS:,}.",
            fix="split it into variables",
        )
    return _Parser(text).parse()


# --------------------------------------------------------------------------------------------
# Values


def arm_type_name(value: object) -> str:
    """ARM's names for JSON types, as its error messages use them."""
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, dict):
        return "Object"
    return type(value).__name__


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def arm_string(value: object) -> str:
    """``string()``: .NET spellings for booleans, compact JSON for arrays and objects."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(value)
    # Chunk by chunk, so a small value that repeats a large one many times (arrays share their
    # items) stops at the bound instead of being written out whole first.
    chunks: list[str] = []
    size = 0
    for chunk in _COMPACT_JSON.iterencode(value):
        size += len(chunk)
        if size > MAX_VALUE_CHARS:
            raise ValueTooLarge(size)
        chunks.append(chunk)
    return "".join(chunks)


_COMPACT_JSON: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


class ValueTooLarge(ValueError):
    """A value an expression builds would exceed :data:`MAX_VALUE_CHARS`."""

    def __init__(self, size: int) -> None:
        super().__init__(
            f"the result would be {size:,} characters or items long or more; a value in a "
            f"template can be at most {MAX_VALUE_CHARS:,} (ARM limits a template to 4 MB)"
        )


def _check_size(size: int) -> None:
    if size > MAX_VALUE_CHARS:
        raise ValueTooLarge(size)


def arm_equals(a: object, b: object) -> bool:
    """Deep equality where ``1`` is not ``true`` (Python would say it is)."""
    if arm_type_name(a) != arm_type_name(b):
        return False
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(arm_equals(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(arm_equals(a[k], b[k]) for k in a)
    return a == b


def get_ci(mapping: Mapping[str, Any], name: str) -> tuple[bool, Any]:
    """Case-insensitive lookup (ARM property and parameter names ignore case)."""
    if name in mapping:
        return True, mapping[name]
    lowered = name.lower()
    for key in mapping:  # keys only: a lazy mapping resolves just the value asked for
        if key.lower() == lowered:
            return True, mapping[key]
    return False, None


# --------------------------------------------------------------------------------------------
# Hashes: uniqueString and guid


_M32: Final = 0xFFFFFFFF
_BASE32_ALPHABET: Final = "abcdefghijklmnopqrstuvwxyz234567"


def _rotl32(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def _fmix32(h: int) -> int:
    h = ((h ^ (h >> 16)) * 0x85EBCA6B) & _M32
    h = ((h ^ (h >> 13)) * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def unique_string(*parts: str) -> str:
    """ARM ``uniqueString()``: 13 lowercase base32 characters of a 64-bit hash.

    The hash is the 64-bit MurmurHash variant of ``Microsoft.PowerPlatform.ResourceStack`` (two
    32-bit lanes, seed 0) over the UTF-8 of the arguments joined with ``-``; the 13 characters
    are the hash read 5 bits at a time from the top. Checked against published Azure outputs in
    the tests.
    """
    data = "-".join(parts).encode("utf-8")
    c1, c2 = 0xAB0E9789, 0x239B961B
    h1 = h2 = 0
    for off in range(0, len(data), 8):
        block = data[off : off + 8]
        k1 = int.from_bytes(block[:4], "little")
        k2 = int.from_bytes(block[4:8], "little")
        h1 ^= (_rotl32((k1 * c2) & _M32, 15) * c1) & _M32
        if len(block) == 8:
            h1 = ((_rotl32(h1, 19) + h2) * 5 + 0x561CCD1B) & _M32
        if len(block) > 4:
            h2 ^= (_rotl32((k2 * c1) & _M32, 17) * c2) & _M32
        if len(block) == 8:
            h2 = ((_rotl32(h2, 13) + h1) * 5 + 0x0BCAA747) & _M32
    r0 = h2 ^ len(data)
    r1 = ((h1 ^ len(data)) + r0) & _M32
    r2 = (r0 + r1) & _M32
    r1, r2 = _fmix32(r1), _fmix32(r2)
    r1 = (r1 + r2) & _M32
    r2 = (r2 + r1) & _M32
    value = (r2 << 32) | r1
    chars = []
    for _ in range(13):  # 65 bits: the last character carries 4 bits and a zero
        chars.append(_BASE32_ALPHABET[value >> 59])
        value = (value << 5) & 0xFFFFFFFFFFFFFFFF
    return "".join(chars)


#: Namespace of ARM ``guid()``: a name-based (version 5) UUID over the arguments joined with
#: ``-``, as the Bicep string-functions page describes.
_ARM_GUID_NAMESPACE: Final = uuid.UUID("11fb06fb-712d-4ddd-98c7-e71bbd588830")


def arm_guid(*parts: str) -> str:
    """ARM ``guid()``: deterministic UUID from the arguments."""
    return str(uuid.uuid5(_ARM_GUID_NAMESPACE, "-".join(parts)))


# --------------------------------------------------------------------------------------------
# Resource ids


def _split_type(type_: str) -> tuple[str, list[str]]:
    parts = [p for p in type_.split("/") if p]
    return parts[0], parts[1:]


def resource_id(
    type_: str, names: Sequence[str], *, subscription_id: str | None, resource_group: str | None
) -> str:
    """Build a resource id: ``/subscriptions/S/resourceGroups/G/providers/NS/t1/n1/t2/n2``.

    Nested types interleave with names (``Microsoft.Network/applicationGateways/sslProfiles``,
    ``gw``, ``profile``); a name containing ``/`` counts as several names. ``subscription_id``
    None gives a tenant-level id; ``resource_group`` None a subscription-level one.

    Raises:
        ValueError: the number of names does not match the type's segments.
    """
    namespace, types = _split_type(type_)
    segments = [seg for name in names for seg in name.split("/")]
    if not types or len(segments) != len(types):
        raise ValueError(
            f"the type '{type_}' requires {len(types)} resource name argument(s), "
            f"got {len(segments)}"
        )
    prefix = ""
    if subscription_id is not None:
        prefix = f"/subscriptions/{subscription_id}"
        if resource_group is not None:
            prefix += f"/resourceGroups/{resource_group}"
    tail = "/".join(f"{t}/{n}" for t, n in zip(types, segments, strict=True))
    return f"{prefix}/providers/{namespace}/{tail}"


# --------------------------------------------------------------------------------------------
# .NET-style formatting (format() and utcNow())


_FORMAT_ITEM: Final = re.compile(r"\{(\d+)(?:,(-?\d+))?(?::([^}]*))?\}")


def _format_number(value: object, spec: str) -> str:
    """The numeric format strings ARM templates use in practice: D, X, N, F, G, and 0-padding."""
    if not spec:
        return arm_string(value)
    if not _is_int(value):
        raise ValueError(f"format '{spec}' needs an integer, got {arm_type_name(value)}")
    assert isinstance(value, int)
    letter, digits = spec[0], spec[1:]
    if letter in "dDxXnNfFgG" and (digits == "" or digits.isdigit()):
        width = _bounded_int(digits) if digits else None
        _check_size(width or 0)
        if letter in "dD":
            sign = "-" if value < 0 else ""
            return sign + str(abs(value)).zfill(width or 0)
        if letter in "xX":
            text = format(value & 0xFFFFFFFF if value < 0 else value, "X" if letter == "X" else "x")
            return text.zfill(width or 0)
        if letter in "nN":
            return format(value, f",.{2 if width is None else width}f")
        if letter in "fF":
            return format(value, f".{2 if width is None else width}f")
        return str(value)
    if set(spec) <= {"0", "#"}:
        _check_size(len(spec))
        return str(value).zfill(spec.count("0"))
    raise ValueError(f"the format specifier '{spec}' is not supported by the emulator")


def _dotnet_format(fmt: str, args: Sequence[object]) -> str:
    out: list[str] = []
    size = 0
    i = 0
    while i < len(fmt):
        _check_size(size)
        ch = fmt[i]
        if fmt.startswith("{{", i) or fmt.startswith("}}", i):
            out.append(ch)
            i += 2
        elif ch == "{":
            m = _FORMAT_ITEM.match(fmt, i)
            if m is None:
                raise ValueError(f"invalid format item at position {i + 1} of '{fmt}'")
            index = int(m.group(1))
            if index >= len(args):
                raise ValueError(f"format item {{{index}}} has no argument ({len(args)} given)")
            text = _format_number(args[index], m.group(3) or "")
            align = _bounded_int(m.group(2) or "0")
            _check_size(size + max(len(text), abs(align)))
            piece = text.rjust(align) if align >= 0 else text.ljust(-align)
            out.append(piece)
            size += len(piece)
            i = m.end()
        elif ch == "}":
            raise ValueError(f"unmatched '}}' at position {i + 1} of '{fmt}'")
        else:
            out.append(ch)
            size += 1
            i += 1
    return "".join(out)


def _bounded_int(digits: str) -> int:
    """A width or alignment from a format string; one past the value bound is refused."""
    if len(digits.lstrip("-")) > len(str(MAX_VALUE_CHARS)):
        raise ValueTooLarge(MAX_VALUE_CHARS + 1)
    return int(digits)


_STANDARD_DATE_FORMATS: Final = {
    "u": "yyyy-MM-dd HH:mm:ssZ",
    "s": "yyyy-MM-ddTHH:mm:ss",
    "o": "yyyy-MM-ddTHH:mm:ss.fffffffK",
    "O": "yyyy-MM-ddTHH:mm:ss.fffffffK",
    "d": "MM/dd/yyyy",
    "t": "HH:mm",
    "T": "HH:mm:ss",
}
_DATE_TOKEN: Final = re.compile(r"yyyy|yy|MM|M|dd|d|HH|H|hh|h|mm|m|ss|s|f{1,7}|tt|K|'[^']*'|\\.|.")


def _format_date(now: datetime, fmt: str) -> str:
    """The subset of .NET custom date formats that ``utcNow()`` callers use."""
    if len(fmt) == 1:
        if fmt not in _STANDARD_DATE_FORMATS:
            raise ValueError(f"the standard date format '{fmt}' is not supported by the emulator")
        fmt = _STANDARD_DATE_FORMATS[fmt]
    hour12 = now.hour % 12 or 12
    values: dict[str, str] = {
        "yyyy": f"{now.year:04d}", "yy": f"{now.year % 100:02d}",
        "MM": f"{now.month:02d}", "M": str(now.month),
        "dd": f"{now.day:02d}", "d": str(now.day),
        "HH": f"{now.hour:02d}", "H": str(now.hour),
        "hh": f"{hour12:02d}", "h": str(hour12),
        "mm": f"{now.minute:02d}", "m": str(now.minute),
        "ss": f"{now.second:02d}", "s": str(now.second),
        "tt": "AM" if now.hour < 12 else "PM", "K": "Z",
    }  # fmt: skip
    out: list[str] = []
    for token in _DATE_TOKEN.findall(fmt):
        if token in values:
            out.append(values[token])
        elif token.startswith("f") and set(token) == {"f"}:
            out.append(f"{now.microsecond:06d}0"[: len(token)])
        elif token.startswith("'"):
            out.append(token[1:-1])
        elif token.startswith("\\"):
            out.append(token[1:])
        else:
            out.append(token)
    return "".join(out)


# --------------------------------------------------------------------------------------------
# Evaluation


#: Functions Azure evaluates against live resources; offline there is nothing to read.
_LIVE_FUNCTIONS: Final = frozenset({"reference", "resourceinfo", "providers", "pickzones"})
#: Valid ARM functions the emulator does not implement (yet).
_KNOWN_UNSUPPORTED: Final = frozenset({
    "newguid", "environment", "tenant", "managementgroup", "managementgroupresourceid",
    "datetimeadd", "datetimefromepoch", "datetimetoepoch", "items", "filter", "map", "reduce",
    "sort", "toobject", "lambda", "lambdavariables", "objectkeys", "shallowmerge", "tryget",
    "flatten", "parsecidr", "cidrsubnet", "cidrhost", "datauri", "datauritostring",
})  # fmt: skip

#: ARM refuses ``range()`` longer than this (template-functions-array, "range").
RANGE_MAX_COUNT: Final = 10000


class _Invocation:
    """One function call being evaluated: arguments plus helpers that raise located errors."""

    __slots__ = ("args", "ctx", "ev", "node")

    def __init__(self, ev: _Evaluator, node: Call, args: list[Any]) -> None:
        self.ev = ev
        self.node = node
        self.args = args
        self.ctx = ev.ctx

    def fail(self, what: str, *, fix: str | None = None) -> ExpressionError:
        return self.ev.error(
            f"Unable to evaluate template language function '{self.node.name}': {what}",
            self.node.pos,
            fix=fix,
        )

    def arity(self, low: int, high: int | None = None) -> None:
        n = len(self.args)
        if n < low or (high is not None and n > high):
            if high == low:
                want = f"{low}"
            elif high is None:
                want = f"at least {low}"
            else:
                want = f"{low} to {high}"
            raise self.fail(f"expects {want} argument(s) but got {n}.")

    def _typed(self, i: int, check: Callable[[object], bool], type_: str) -> Any:
        value = self.args[i]
        if not check(value):
            raise self.fail(
                f"argument {i + 1} must be of type '{type_}' but is of type "
                f"'{arm_type_name(value)}'."
            )
        return value

    def text(self, i: int) -> str:
        value: str = self._typed(i, lambda v: isinstance(v, str), "String")
        return value

    def integer(self, i: int) -> int:
        value: int = self._typed(i, _is_int, "Integer")
        return value

    def boolean(self, i: int) -> bool:
        value: bool = self._typed(i, lambda v: isinstance(v, bool), "Boolean")
        return value

    def seq(self, i: int) -> str | list[Any]:
        value: str | list[Any] = self._typed(
            i, lambda v: isinstance(v, str | list), "String or Array"
        )
        return value


_Function = Callable[[_Invocation], Any]
_FUNCTIONS: dict[str, _Function] = {}


def _function(*names: str) -> Callable[[_Function], _Function]:
    def register(fn: _Function) -> _Function:
        for name in names:
            _FUNCTIONS[name.lower()] = fn
        return fn

    return register


class _Evaluator:
    __slots__ = ("ctx", "text")

    def __init__(self, text: str, ctx: EvalContext) -> None:
        self.text = text
        self.ctx = ctx

    def error(self, what: str, pos: int, *, fix: str | None = None) -> ExpressionError:
        return ExpressionError(
            f"{what} (at position {pos + 1} of expression '{self.text}')", fix=fix
        )

    def eval(self, node: Node) -> Any:
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, Member):
            return self.member(self.eval(node.target), node.name, node.pos)
        if isinstance(node, Index):
            return self.index(self.eval(node.target), self.eval(node.index), node.pos)
        return self.call(node)

    def member(self, target: object, name: str, pos: int) -> Any:
        if not isinstance(target, dict):
            raise self.error(
                f"The language expression property '{name}' can't be read from a value of type "
                f"'{arm_type_name(target)}'.",
                pos,
            )
        found, value = get_ci(target, name)
        if not found:
            available = ", ".join(target) or "none"
            raise self.error(
                f"The language expression property '{name}' doesn't exist, available properties "
                f"are '{available}'.",
                pos,
            )
        return value

    def index(self, target: object, key: object, pos: int) -> Any:
        if isinstance(target, list):
            if not _is_int(key):
                raise self.error(
                    f"An array index must be an integer, got '{arm_string(key)}'.", pos
                )
            assert isinstance(key, int)
            if not 0 <= key < len(target):
                raise self.error(
                    f"The language expression array index '{key}' is out of bounds "
                    f"(length {len(target)}).",
                    pos,
                )
            return target[key]
        if isinstance(target, dict) and isinstance(key, str):
            return self.member(target, key, pos)
        raise self.error(
            f"A value of type '{arm_type_name(target)}' cannot be indexed with "
            f"'{arm_string(key)}'.",
            pos,
        )

    def call(self, node: Call) -> Any:
        lowered = node.name.lower()
        if lowered == "if":
            # ARM evaluates only the branch the condition selects, so the other may be invalid.
            if len(node.args) != 3:
                raise _Invocation(self, node, list(node.args)).fail(
                    f"expects 3 argument(s) but got {len(node.args)}."
                )
            condition = self.eval(node.args[0])
            if not isinstance(condition, bool):
                raise _Invocation(self, node, [condition]).fail(
                    f"argument 1 must be of type 'Boolean' but is of type "
                    f"'{arm_type_name(condition)}'."
                )
            return self.eval(node.args[1] if condition else node.args[2])
        fn = _FUNCTIONS.get(lowered)
        if fn is None:
            raise self.unknown_function(node)
        inv = _Invocation(self, node, [self.eval(arg) for arg in node.args])
        try:
            result = fn(inv)
            if isinstance(result, str | list | dict):
                _check_size(len(result))
        except ValueTooLarge as exc:
            raise inv.fail(
                f"{exc}.", fix="build smaller values; pass large data as a parameter"
            ) from None
        return result

    def unknown_function(self, node: Call) -> ExpressionError:
        lowered = node.name.lower()
        if lowered in _LIVE_FUNCTIONS or lowered.startswith("list"):
            return self.error(
                f"The template function '{node.name}' reads a deployed Azure resource, which "
                "the emulator (offline, nothing deployed) cannot do.",
                node.pos,
                fix="replace it with a parameter and pass the value with --parameters NAME=VALUE.",
            )
        if "." in node.name:
            return self.error(
                f"User-defined template function '{node.name}' is not supported by the emulator.",
                node.pos,
                fix="inline the function body at the call site.",
            )
        if lowered in _KNOWN_UNSUPPORTED:
            return self.error(
                f"The template function '{node.name}' is valid in Azure but not supported by the "
                "emulator.",
                node.pos,
                fix="compute the value outside the template and pass it as a parameter.",
            )
        return self.error(
            f"The template function '{node.name}' is not valid. Please see "
            "https://aka.ms/arm-functions for usage details.",
            node.pos,
        )


def evaluate_expression(text: str, ctx: EvalContext) -> Any:
    """Evaluate one ``[...]`` expression string and return its JSON value."""
    return _Evaluator(text, ctx).eval(parse_expression(text))


def _copy_loops(value: object) -> list[Mapping[str, Any]] | None:
    """A property-level ``copy`` holds a list of ``{name, count, input}`` objects."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return value
    return None


def _expand_copy(loop: Mapping[str, Any], ctx: EvalContext, path: str) -> tuple[str, list[Any]]:
    """Evaluate one ``copy`` entry into its property name and array of evaluated inputs."""
    has_name, name = get_ci(loop, "name")
    has_count, count_raw = get_ci(loop, "count")
    has_input, input_ = get_ci(loop, "input")
    if not (has_name and has_count and has_input) or not isinstance(name, str):
        raise TemplateError(
            "A copy loop needs 'name' (a string), 'count' and 'input'.",
            file=ctx.file,
            path=path,
            code="InvalidTemplate",
        )
    count = evaluate_value(count_raw, ctx, f"{path}.count")
    if not _is_int(count) or count < 0:
        raise TemplateError(
            f"The copy count of '{name}' must be a non-negative integer, got "
            f"'{arm_string(count)}'.",
            file=ctx.file,
            path=f"{path}.count",
        )
    items = []
    for i in range(count):
        inner = replace(ctx, copy_indexes={**ctx.copy_indexes, name.lower(): i})
        items.append(evaluate_value(input_, inner, f"{path}.input"))
    return name, items


def evaluate_value(value: Any, ctx: EvalContext, path: str) -> Any:
    """Evaluate every expression inside a JSON value; returns a new value.

    Object keys keep their spelling. An object property named ``copy`` holding a list of
    ``{name, count, input}`` is a property iteration: it is replaced by one array property per
    loop. Errors are located at ``path`` (``resources[2].properties.frontendPorts[0].id``).
    """
    if isinstance(value, str):
        if is_expression(value):
            try:
                return evaluate_expression(value, ctx)
            except TemplateError as exc:
                raise exc.located(file=ctx.file, path=path) from None
        if value.startswith("[[") and value.endswith("]"):
            return value[1:]
        return value
    if isinstance(value, list):
        return [evaluate_value(item, ctx, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            loops = _copy_loops(item) if key.lower() == "copy" else None
            if loops is not None:
                for n, loop in enumerate(loops):
                    name, items = _expand_copy(loop, ctx, f"{path}.{key}[{n}]")
                    out[name] = items
            else:
                out[key] = evaluate_value(item, ctx, f"{path}.{key}" if path else key)
        return out
    return value


def _variable(inv: _Invocation, name: str) -> Any:
    ctx = inv.ctx
    cache = ctx.variable_cache
    key = name.lower()
    if key in cache.values:
        return cache.values[key]
    found, raw = get_ci(ctx.variables, name)
    loop: Mapping[str, Any] | None = None
    if not found or key == "copy":
        found = False
        _, copy_section = get_ci(ctx.variables, "copy")
        for entry in _copy_loops(copy_section) or []:
            has_name, loop_name = get_ci(entry, "name")
            if has_name and isinstance(loop_name, str) and loop_name.lower() == key:
                found, loop = True, entry
    if not found:
        raise inv.fail(
            f"The template variable '{name}' is not found.",
            fix="define it in the template's 'variables' section or fix the name's spelling.",
        )
    if key in cache.in_progress:
        cycle = " -> ".join([*cache.in_progress, key])
        raise inv.fail(f"The template variables form a cycle: {cycle}.")
    cache.in_progress.append(key)
    try:
        # Variables never see the copy loop of the resource that happens to use them.
        base = replace(ctx, copy_indexes={}, resource_loop=None, allow_utc_now=False)
        if loop is not None:
            _, value = _expand_copy(loop, base, f"variables.copy[{name}]")
        else:
            value = evaluate_value(raw, base, f"variables.{name}")
    finally:
        cache.in_progress.pop()
    cache.values[key] = value
    return value


# --- deployment values ------------------------------------------------------------------------


@_function("parameters")
def _fn_parameters(inv: _Invocation) -> Any:
    inv.arity(1, 1)
    name = inv.text(0)
    found, value = get_ci(inv.ctx.parameters, name)
    if not found:
        raise inv.fail(
            f"The template parameter '{name}' is not found.",
            fix="declare it in the template's 'parameters' section or fix the name's spelling.",
        )
    return value


@_function("variables")
def _fn_variables(inv: _Invocation) -> Any:
    inv.arity(1, 1)
    return _variable(inv, inv.text(0))


@_function("resourceGroup")
def _fn_resource_group(inv: _Invocation) -> Any:
    inv.arity(0, 0)
    scope = inv.ctx.scope
    return {
        "id": scope.resource_group_id,
        "name": scope.resource_group,
        "type": "Microsoft.Resources/resourceGroups",
        "location": scope.location,
        "tags": {},
        "properties": {"provisioningState": "Succeeded"},
    }


@_function("subscription")
def _fn_subscription(inv: _Invocation) -> Any:
    inv.arity(0, 0)
    scope = inv.ctx.scope
    return {
        "id": f"/subscriptions/{scope.subscription_id}",
        "subscriptionId": scope.subscription_id,
        "tenantId": scope.tenant_id,
        "displayName": "appgw-emulator",
    }


@_function("deployment")
def _fn_deployment(inv: _Invocation) -> Any:
    inv.arity(0, 0)
    # No templateLink: a local --template-file deployment has none (template-functions-deployment).
    return {
        "name": inv.ctx.deployment_name,
        "properties": {"mode": "Incremental", "provisioningState": "Accepted"},
    }


def _id_arguments(inv: _Invocation, max_prefix: int) -> tuple[list[str], str, list[str]]:
    """Split ``resourceId``-style arguments into (scope prefix, type, names)."""
    inv.arity(2)
    values = [inv.text(i) for i in range(len(inv.args))]
    type_at = next((i for i, v in enumerate(values) if "/" in v), None)
    if type_at is None or type_at > max_prefix:
        raise inv.fail(
            "the resource type must be fully qualified, like "
            "'Microsoft.Network/applicationGateways'."
        )
    return values[:type_at], values[type_at], values[type_at + 1 :]


@_function("resourceId")
def _fn_resource_id(inv: _Invocation) -> str:
    prefix, type_, names = _id_arguments(inv, 2)
    scope = inv.ctx.scope
    sub = prefix[0] if len(prefix) == 2 else scope.subscription_id
    group = prefix[-1] if prefix else scope.resource_group
    try:
        return resource_id(type_, names, subscription_id=sub, resource_group=group)
    except ValueError as exc:
        raise inv.fail(f"{exc}.") from None


@_function("subscriptionResourceId")
def _fn_subscription_resource_id(inv: _Invocation) -> str:
    prefix, type_, names = _id_arguments(inv, 1)
    sub = prefix[0] if prefix else inv.ctx.scope.subscription_id
    try:
        return resource_id(type_, names, subscription_id=sub, resource_group=None)
    except ValueError as exc:
        raise inv.fail(f"{exc}.") from None


@_function("tenantResourceId")
def _fn_tenant_resource_id(inv: _Invocation) -> str:
    _, type_, names = _id_arguments(inv, 0)
    try:
        return resource_id(type_, names, subscription_id=None, resource_group=None)
    except ValueError as exc:
        raise inv.fail(f"{exc}.") from None


@_function("extensionResourceId")
def _fn_extension_resource_id(inv: _Invocation) -> str:
    inv.arity(3)
    base = inv.text(0).rstrip("/")
    type_ = inv.text(1)
    names = [inv.text(i) for i in range(2, len(inv.args))]
    try:
        return base + resource_id(type_, names, subscription_id=None, resource_group=None)
    except ValueError as exc:
        raise inv.fail(f"{exc}.") from None


@_function("uniqueString")
def _fn_unique_string(inv: _Invocation) -> str:
    inv.arity(1)
    return unique_string(*(inv.text(i) for i in range(len(inv.args))))


@_function("guid")
def _fn_guid(inv: _Invocation) -> str:
    inv.arity(1)
    return arm_guid(*(inv.text(i) for i in range(len(inv.args))))


@_function("utcNow")
def _fn_utc_now(inv: _Invocation) -> str:
    inv.arity(0, 1)
    if not inv.ctx.allow_utc_now:
        raise inv.fail(
            "The template function 'utcNow' is not expected at this location. It can only be "
            "used with parameter default value.",
            fix='declare a parameter with "defaultValue": "[utcNow()]" and use it here.',
        )
    fmt = inv.text(0) if inv.args else "yyyyMMddTHHmmssZ"
    try:
        return _format_date(inv.ctx.now.astimezone(UTC), fmt)
    except ValueError as exc:
        raise inv.fail(f"{exc}.") from None


@_function("copyIndex")
def _fn_copy_index(inv: _Invocation) -> int:
    inv.arity(0, 2)
    loop: str | None = None
    offset = 0
    if inv.args and isinstance(inv.args[0], str):
        loop = inv.args[0].lower()
        if len(inv.args) == 2:
            offset = inv.integer(1)
    elif inv.args:
        inv.arity(0, 1)
        offset = inv.integer(0)
    indexes = inv.ctx.copy_indexes
    if loop is None:
        if inv.ctx.resource_loop is not None:
            loop = inv.ctx.resource_loop
        elif len(indexes) == 1:
            loop = next(iter(indexes))
    if loop is None or loop not in indexes:
        where = f"a copy loop named '{inv.args[0]}'" if inv.args and loop else "a copy loop"
        raise inv.fail(
            f"The template function 'copyIndex' is not expected here: it is only valid inside "
            f"{where}.",
            fix="use copyIndex() only inside a 'copy' element (and name the loop it refers to).",
        )
    return indexes[loop] + offset


# --- literals and logic -------------------------------------------------------------------------


@_function("true")
def _fn_true(inv: _Invocation) -> bool:
    inv.arity(0, 0)
    return True


@_function("false")
def _fn_false(inv: _Invocation) -> bool:
    inv.arity(0, 0)
    return False


@_function("null")
def _fn_null(inv: _Invocation) -> None:
    inv.arity(0, 0)


@_function("equals")
def _fn_equals(inv: _Invocation) -> bool:
    inv.arity(2, 2)
    return arm_equals(inv.args[0], inv.args[1])


@_function("not")
def _fn_not(inv: _Invocation) -> bool:
    inv.arity(1, 1)
    return not inv.boolean(0)


@_function("and")
def _fn_and(inv: _Invocation) -> bool:
    inv.arity(2)
    return all([inv.boolean(i) for i in range(len(inv.args))])


@_function("or")
def _fn_or(inv: _Invocation) -> bool:
    inv.arity(2)
    return any([inv.boolean(i) for i in range(len(inv.args))])


def _comparable(inv: _Invocation) -> tuple[Any, Any]:
    inv.arity(2, 2)
    a, b = inv.args
    if not ((_is_int(a) and _is_int(b)) or (isinstance(a, str) and isinstance(b, str))):
        raise inv.fail(
            f"both arguments must be integers or both strings, got '{arm_type_name(a)}' and "
            f"'{arm_type_name(b)}'."
        )
    return a, b


@_function("less")
def _fn_less(inv: _Invocation) -> bool:
    a, b = _comparable(inv)
    return bool(a < b)


@_function("lessOrEquals")
def _fn_less_or_equals(inv: _Invocation) -> bool:
    a, b = _comparable(inv)
    return bool(a <= b)


@_function("greater")
def _fn_greater(inv: _Invocation) -> bool:
    a, b = _comparable(inv)
    return bool(a > b)


@_function("greaterOrEquals")
def _fn_greater_or_equals(inv: _Invocation) -> bool:
    a, b = _comparable(inv)
    return bool(a >= b)


@_function("coalesce")
def _fn_coalesce(inv: _Invocation) -> Any:
    inv.arity(1)
    return next((v for v in inv.args if v is not None), None)


# --- conversions --------------------------------------------------------------------------------


@_function("string")
def _fn_string(inv: _Invocation) -> str:
    inv.arity(1, 1)
    return arm_string(inv.args[0])


@_function("int")
def _fn_int(inv: _Invocation) -> int:
    inv.arity(1, 1)
    value = inv.args[0]
    if _is_int(value):
        assert isinstance(value, int)
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?[0-9]+\s*", value):
        return int(value)
    raise inv.fail(f"the value '{arm_string(value)}' cannot be converted to an integer.")


@_function("bool")
def _fn_bool(inv: _Invocation) -> bool:
    inv.arity(1, 1)
    value = inv.args[0]
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(value, int):
        return value != 0
    raise inv.fail(f"the value '{arm_string(value)}' cannot be converted to a boolean.")


@_function("json")
def _fn_json(inv: _Invocation) -> Any:
    inv.arity(1, 1)
    try:
        return bounded_json.loads(inv.text(0))
    except bounded_json.JsonTooDeep as exc:
        raise inv.fail(f"the argument is refused: its {exc}.") from None
    except json.JSONDecodeError as exc:
        raise inv.fail(
            f"the argument is not valid JSON: {exc.msg} at character {exc.pos + 1}."
        ) from None


@_function("array")
def _fn_array(inv: _Invocation) -> list[Any]:
    inv.arity(1, 1)
    value = inv.args[0]
    return list(value) if isinstance(value, list) else [value]


@_function("base64")
def _fn_base64(inv: _Invocation) -> str:
    inv.arity(1, 1)
    return base64.b64encode(inv.text(0).encode("utf-8")).decode("ascii")


@_function("base64ToString")
def _fn_base64arm_string(inv: _Invocation) -> str:
    inv.arity(1, 1)
    try:
        return base64.b64decode(inv.text(0), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise inv.fail(f"the argument is not base64-encoded UTF-8 text ({exc}).") from None


@_function("uriComponent")
def _fn_uri_component(inv: _Invocation) -> str:
    inv.arity(1, 1)
    return quote(inv.text(0), safe="")


@_function("uriComponentToString")
def _fn_uri_componentarm_string(inv: _Invocation) -> str:
    inv.arity(1, 1)
    return unquote(inv.text(0))


@_function("uri")
def _fn_uri(inv: _Invocation) -> str:
    inv.arity(2, 2)
    base = inv.text(0)
    if not urlsplit(base).scheme:
        raise inv.fail(f"the base URI '{base}' must be absolute (with a scheme).")
    return urljoin(base, inv.text(1))


# --- strings ----------------------------------------------------------------------------------


@_function("concat")
def _fn_concat(inv: _Invocation) -> Any:
    inv.arity(1)
    if all(isinstance(v, list) for v in inv.args):
        _check_size(sum(len(v) for v in inv.args))
        return [item for v in inv.args for item in v]
    if any(isinstance(v, list) for v in inv.args):
        raise inv.fail("arguments must be all arrays or all strings.")
    parts = [arm_string(v) for v in inv.args]
    _check_size(sum(len(p) for p in parts))
    return "".join(parts)


@_function("format")
def _fn_format(inv: _Invocation) -> str:
    inv.arity(1)
    try:
        return _dotnet_format(inv.text(0), inv.args[1:])
    except ValueError as exc:
        raise inv.fail(f"{exc}.") from None


@_function("toLower")
def _fn_to_lower(inv: _Invocation) -> str:
    inv.arity(1, 1)
    return inv.text(0).lower()


@_function("toUpper")
def _fn_to_upper(inv: _Invocation) -> str:
    inv.arity(1, 1)
    return inv.text(0).upper()


@_function("trim")
def _fn_trim(inv: _Invocation) -> str:
    inv.arity(1, 1)
    return inv.text(0).strip()


@_function("replace")
def _fn_replace(inv: _Invocation) -> str:
    inv.arity(3, 3)
    old = inv.text(1)
    if not old:
        raise inv.fail("the string to replace must not be empty.")
    text, new = inv.text(0), inv.text(2)
    if len(new) > len(old):
        _check_size(len(text) + text.count(old) * (len(new) - len(old)))
    return text.replace(old, new)


@_function("split")
def _fn_split(inv: _Invocation) -> list[str]:
    inv.arity(2, 2)
    text = inv.text(0)
    delimiters = inv.args[1]
    if isinstance(delimiters, str):
        delimiters = [delimiters]
    if not (
        isinstance(delimiters, list)
        and delimiters
        and all(isinstance(d, str) and d for d in delimiters)
    ):
        raise inv.fail("the delimiter must be a non-empty string or an array of them.")
    return re.split("|".join(re.escape(d) for d in delimiters), text)


@_function("join")
def _fn_join(inv: _Invocation) -> str:
    inv.arity(2, 2)
    items = inv._typed(0, lambda v: isinstance(v, list), "Array")
    separator = inv.text(1)
    parts: list[str] = []
    size = 0
    for item in items:
        parts.append(arm_string(item))
        size += len(parts[-1]) + len(separator)
        _check_size(size)
    return separator.join(parts)


@_function("startsWith")
def _fn_starts_with(inv: _Invocation) -> bool:
    inv.arity(2, 2)
    return inv.text(0).lower().startswith(inv.text(1).lower())


@_function("endsWith")
def _fn_ends_with(inv: _Invocation) -> bool:
    inv.arity(2, 2)
    return inv.text(0).lower().endswith(inv.text(1).lower())


def _find(inv: _Invocation, *, last: bool) -> int:
    inv.arity(2, 2)
    container = inv.seq(0)
    item = inv.args[1]
    if isinstance(container, str):
        needle = inv.text(1).lower()
        hay = container.lower()
        return hay.rfind(needle) if last else hay.find(needle)
    positions = [i for i, v in enumerate(container) if arm_equals(v, item)]
    if not positions:
        return -1
    return positions[-1] if last else positions[0]


@_function("indexOf")
def _fn_index_of(inv: _Invocation) -> int:
    return _find(inv, last=False)


@_function("lastIndexOf")
def _fn_last_index_of(inv: _Invocation) -> int:
    return _find(inv, last=True)


@_function("substring")
def _fn_substring(inv: _Invocation) -> str:
    inv.arity(1, 3)
    text = inv.text(0)
    start = inv.integer(1) if len(inv.args) > 1 else 0
    length = inv.integer(2) if len(inv.args) > 2 else len(text) - start
    if start < 0 or length < 0 or start + length > len(text):
        raise inv.fail(
            f"the index and length parameters must refer to a location within the string "
            f"(start {start}, length {length}, string length {len(text)})."
        )
    return text[start : start + length]


@_function("padLeft")
def _fn_pad_left(inv: _Invocation) -> str:
    inv.arity(2, 3)
    value = inv.args[0]
    if not (isinstance(value, str) or _is_int(value)):
        raise inv.fail(f"argument 1 must be a string or an integer, got '{arm_type_name(value)}'.")
    pad = inv.text(2) if len(inv.args) > 2 else " "
    if len(pad) != 1:
        raise inv.fail("the padding character must be a single character.")
    total = inv.integer(1)
    _check_size(total)
    return arm_string(value).rjust(total, pad)


# --- collections ------------------------------------------------------------------------------


@_function("createArray")
def _fn_create_array(inv: _Invocation) -> list[Any]:
    return list(inv.args)


@_function("createObject")
def _fn_create_object(inv: _Invocation) -> dict[str, Any]:
    if len(inv.args) % 2:
        raise inv.fail("expects an even number of arguments (key, value pairs).")
    return {inv.text(i): inv.args[i + 1] for i in range(0, len(inv.args), 2)}


def _merge_objects(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = _merge_objects(out[key], value)
        else:
            out[key] = value
    return out


@_function("union")
def _fn_union(inv: _Invocation) -> Any:
    inv.arity(1)
    if all(isinstance(v, dict) for v in inv.args):
        # Nested objects merge too; later arguments win (template-functions-object, "union").
        merged: dict[str, Any] = {}
        for value in inv.args:
            merged = _merge_objects(merged, value)
        return merged
    if all(isinstance(v, list) for v in inv.args):
        result: list[Any] = []
        for value in inv.args:
            for item in value:
                if not any(arm_equals(item, seen) for seen in result):
                    result.append(item)
        return result
    raise inv.fail("arguments must be all arrays or all objects.")


@_function("intersection")
def _fn_intersection(inv: _Invocation) -> Any:
    inv.arity(2)
    first, *rest = inv.args
    if all(isinstance(v, dict) for v in inv.args):
        return {
            k: v for k, v in first.items()
            if all(k in other and arm_equals(other[k], v) for other in rest)
        }  # fmt: skip
    if all(isinstance(v, list) for v in inv.args):
        out: list[Any] = []
        for item in first:
            in_all = all(any(arm_equals(item, o) for o in other) for other in rest)
            if in_all and not any(arm_equals(item, seen) for seen in out):
                out.append(item)
        return out
    raise inv.fail("arguments must be all arrays or all objects.")


@_function("length")
def _fn_length(inv: _Invocation) -> int:
    inv.arity(1, 1)
    value = inv._typed(0, lambda v: isinstance(v, str | list | dict), "String, Array or Object")
    return len(value)


@_function("empty")
def _fn_empty(inv: _Invocation) -> bool:
    inv.arity(1, 1)
    value = inv.args[0]
    if value is None:
        return True
    value = inv._typed(0, lambda v: isinstance(v, str | list | dict), "String, Array or Object")
    return len(value) == 0


@_function("contains")
def _fn_contains(inv: _Invocation) -> bool:
    inv.arity(2, 2)
    container, item = inv.args
    if isinstance(container, str):
        return arm_string(item) in container
    if isinstance(container, list):
        return any(arm_equals(v, item) for v in container)
    if isinstance(container, dict):
        return get_ci(container, arm_string(item))[0]
    raise inv.fail(
        f"argument 1 must be a string, array or object, got '{arm_type_name(container)}'."
    )


@_function("first")
def _fn_first(inv: _Invocation) -> Any:
    inv.arity(1, 1)
    value = inv.seq(0)
    if isinstance(value, str):
        return value[:1]
    return value[0] if value else None


@_function("last")
def _fn_last(inv: _Invocation) -> Any:
    inv.arity(1, 1)
    value = inv.seq(0)
    if isinstance(value, str):
        return value[-1:]
    return value[-1] if value else None


@_function("skip")
def _fn_skip(inv: _Invocation) -> Any:
    inv.arity(2, 2)
    return inv.seq(0)[max(inv.integer(1), 0) :]


@_function("take")
def _fn_take(inv: _Invocation) -> Any:
    inv.arity(2, 2)
    return inv.seq(0)[: max(inv.integer(1), 0)]


@_function("range")
def _fn_range(inv: _Invocation) -> list[int]:
    inv.arity(2, 2)
    start, count = inv.integer(0), inv.integer(1)
    if not 0 <= count <= RANGE_MAX_COUNT:
        raise inv.fail(f"the count must be between 0 and {RANGE_MAX_COUNT}, got {count}.")
    return list(range(start, start + count))


# --- numbers ------------------------------------------------------------------------------------


def _int_pair(inv: _Invocation) -> tuple[int, int]:
    inv.arity(2, 2)
    return inv.integer(0), inv.integer(1)


def _int64(inv: _Invocation, value: int) -> int:
    """A result in ARM's 64-bit range; beyond it ARM's arithmetic cannot go."""
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise inv.fail("the result does not fit in a 64-bit integer.")
    return value


def _truncating_div(a: int, b: int) -> int:
    """C# integer division truncates toward zero; Python's ``//`` floors."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


@_function("add")
def _fn_add(inv: _Invocation) -> int:
    a, b = _int_pair(inv)
    return _int64(inv, a + b)


@_function("sub")
def _fn_sub(inv: _Invocation) -> int:
    a, b = _int_pair(inv)
    return _int64(inv, a - b)


@_function("mul")
def _fn_mul(inv: _Invocation) -> int:
    a, b = _int_pair(inv)
    return _int64(inv, a * b)


@_function("div")
def _fn_div(inv: _Invocation) -> int:
    a, b = _int_pair(inv)
    if b == 0:
        raise inv.fail("division by zero.")
    return _int64(inv, _truncating_div(a, b))


@_function("mod")
def _fn_mod(inv: _Invocation) -> int:
    a, b = _int_pair(inv)
    if b == 0:
        raise inv.fail("division by zero.")
    return a - b * _truncating_div(a, b)


def _int_values(inv: _Invocation) -> list[int]:
    inv.arity(1)
    values = inv.args[0] if len(inv.args) == 1 and isinstance(inv.args[0], list) else inv.args
    if not values or not all(_is_int(v) for v in values):
        raise inv.fail("expects integers, or one non-empty array of integers.")
    return list(values)


@_function("min")
def _fn_min(inv: _Invocation) -> int:
    return min(_int_values(inv))


@_function("max")
def _fn_max(inv: _Invocation) -> int:
    return max(_int_values(inv))


def iter_function_names() -> Iterator[str]:
    """Lower-cased names of the functions the evaluator implements (for docs and tests)."""
    yield "if"
    yield from sorted(_FUNCTIONS)
