"""HCL2 files → blocks and attributes whose expressions stay unevaluated, each with its line.

python-hcl2's dict output turns every expression back into ``${...}`` text and keeps line numbers
for blocks only; its Lark parse tree keeps both the structure and a line on every node. So the
reader walks the tree (:func:`hcl2.parses_to_tree`): blocks and attributes here, expressions in
:mod:`emulator.terraform.evaluate`. The rule names walked are those of python-hcl2 8's grammar
(``hcl2.lark``), which is why pyproject.toml pins that major version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import hcl2
from lark import Token, Tree
from lark.exceptions import LarkError, UnexpectedInput

from emulator.errors import TemplateError

__all__ = ["Attribute", "Block", "location", "parse_expression", "parse_file", "trees"]

#: Code of every "this .tf file cannot be read" error (Terraform itself has no error codes).
PARSE_CODE: Final = "EmulatorTerraformSyntax"


def location(file: str, line: int | None) -> str:
    """``main.tf:12``, the way Terraform and editors name a place in a file."""
    return f"{file}:{line}" if line else file


@dataclass(frozen=True, slots=True)
class Attribute:
    """``name = expression``; ``expr`` is the Lark tree of the expression."""

    name: str
    expr: Tree[Token]
    file: str
    line: int | None


@dataclass(frozen=True, slots=True)
class Block:
    """``type "label" ... { ... }`` with its attributes and nested blocks, in file order."""

    type: str
    labels: tuple[str, ...]
    attributes: Mapping[str, Attribute]
    blocks: tuple[Block, ...]
    file: str
    line: int | None
    #: Top-level only: attributes written outside any block (a Terraform syntax error).
    stray: tuple[Attribute, ...] = field(default=())

    @property
    def where(self) -> str:
        return location(self.file, self.line)


def trees(node: Tree[Token]) -> list[Tree[Token]]:
    """The child rules of ``node``, without tokens and without newline/comment runs."""
    return [c for c in node.children if isinstance(c, Tree) and c.data != "new_line_or_comment"]


def _line(node: Tree[Token]) -> int | None:
    return None if node.meta.empty else node.meta.line


def _name(node: Tree[Token]) -> str:
    """The text of an identifier, keyword or literal used as a name."""
    return "".join(str(t) for t in node.scan_values(lambda v: isinstance(v, Token)))


def _label(node: Tree[Token], *, file: str) -> str:
    if node.data == "string":
        parts = trees(node)
        if any(trees(p) for p in parts):
            raise TemplateError(
                "a block label cannot contain an interpolation",
                file=location(file, _line(node)),
                fix="write the label as a plain string",
                code=PARSE_CODE,
            )
        return "".join(_name(p) for p in parts)
    return _name(node)


def _body(body: Tree[Token], *, file: str) -> tuple[dict[str, Attribute], list[Block]]:
    attributes: dict[str, Attribute] = {}
    blocks: list[Block] = []
    for item in trees(body):
        if item.data == "attribute":
            name_node, expr = trees(item)[0], trees(item)[-1]
            name = _name(name_node)
            if name in attributes:
                raise TemplateError(
                    f"the argument '{name}' was already set at line {attributes[name].line}",
                    file=location(file, _line(item)),
                    fix="remove one of the two",
                    code=PARSE_CODE,
                )
            attributes[name] = Attribute(name, expr, file, _line(item))
        elif item.data == "block":
            blocks.append(_block(item, file=file))
    return attributes, blocks


def _block(node: Tree[Token], *, file: str) -> Block:
    parts = trees(node)
    head, inner = parts[:-1], parts[-1]
    attributes, blocks = _body(inner, file=file)
    return Block(
        type=_name(head[0]),
        labels=tuple(_label(p, file=file) for p in head[1:]),
        attributes=attributes,
        blocks=tuple(blocks),
        file=file,
        line=_line(node),
    )


def _parse(text: str, *, file: str, first_line: int = 1) -> Tree[Token]:
    try:
        return hcl2.parses_to_tree(text)
    except UnexpectedInput as exc:
        line = first_line + exc.line - 1 if exc.line and exc.line > 0 else None
        raise TemplateError(
            f"not valid HCL (column {exc.column}): "
            + (str(exc).strip().splitlines() or ["syntax error"])[0],
            file=location(file, line),
            fix="run `terraform validate` in the directory to see the mistake",
            code=PARSE_CODE,
        ) from exc
    except LarkError as exc:
        raise TemplateError(
            f"not valid HCL: {exc}", file=file, fix="run `terraform validate`", code=PARSE_CODE
        ) from exc


def parse_file(path: Path, *, name: str) -> Block:
    """Read one ``.tf`` file; returns a pseudo-block (type ``""``) holding its top-level blocks.

    ``name`` is how messages name the file (relative to the configuration directory).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(
            f"cannot read the file: {exc}", file=name, code="EmulatorTerraformUnreadable"
        ) from exc
    if not text.endswith("\n"):
        text += "\n"  # the grammar wants a final newline; Terraform does not
    tree = _parse(text, file=name)
    attributes, blocks = _body(trees(tree)[0], file=name) if trees(tree) else ({}, [])
    return Block("", (), {}, tuple(blocks), name, 1, stray=tuple(attributes.values()))


def parse_expression(text: str, *, file: str, line: int | None) -> Tree[Token]:
    """One expression written inside a heredoc or a ``.tfvars`` value, as a Lark tree."""
    tree = _parse(f"x = {text}\n", file=file, first_line=line or 1)
    return trees(trees(trees(tree)[0])[0])[-1]
