"""Every command-line option can also come from an environment variable (``APPGW_EMULATOR_*``).

Containers, compose files and Kubernetes manifests configure a process by its environment, so
each long option has a variable: ``--template-file`` is ``APPGW_EMULATOR_TEMPLATE_FILE``, and
an option with several spellings uses the longest (``run --dashboard``/``--dashboard-port`` is
``APPGW_EMULATOR_DASHBOARD_PORT``). The rules:

* a variable that is empty counts as unset (an input left blank in a compose file or a CI
  workflow);
* a flag on the command line wins over its variable (for a repeatable flag, the flags replace
  the variable's values rather than adding to them);
* a variable standing for a repeatable flag holds one value per line (``--backend`` already
  separates addresses with commas inside one value); blank lines are ignored;
* an on/off flag (``--explain``) takes ``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/
  ``off``;
* a value is checked exactly as the flag's value would be, and a bad one is a usage error that
  names the variable;
* ``--help`` shows each option's variable beside it.

This works over any :class:`argparse.ArgumentParser`, so options added later get a variable
without any registration here.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["PREFIX", "parse_with_environment", "variable_name", "variables"]

PREFIX: Final = "APPGW_EMULATOR_"
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})
#: Actions that are not configuration: help, version, the subcommand choice.
_NOT_OPTIONS: Final = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
#: On/off options (store_true and store_false derive from store_const).
_FLAG_ACTIONS: Final = (argparse._StoreConstAction,)


class _FromEnvironment:
    """The default of an option whose variable is set: still there after parsing means "no
    flag given". A repeatable flag copies its default before appending (argparse's rule), and
    the copy of this marker is an empty list, so the flags replace the variable's values."""

    __slots__ = ("action",)

    def __init__(self, action: argparse.Action) -> None:
        self.action = action

    def __copy__(self) -> list[object]:
        return []


@dataclass(frozen=True, slots=True)
class _Bound:
    parser: argparse.ArgumentParser
    action: argparse.Action
    variable: str
    raw: str
    marker: _FromEnvironment
    original_default: object


def variable_name(action: argparse.Action) -> str | None:
    """The variable of an option (None for positionals and help/version)."""
    if isinstance(action, _NOT_OPTIONS) or action.default is argparse.SUPPRESS:
        return None
    longs = [option for option in action.option_strings if option.startswith("--")]
    if not longs:
        return None
    longest = max(longs, key=len)
    return PREFIX + longest[2:].upper().replace("-", "_")


def _walk(parser: argparse.ArgumentParser) -> Iterator[tuple[argparse.ArgumentParser, str]]:
    """Every parser under ``parser`` (itself included), with its command path."""
    yield parser, parser.prog
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield from _walk(child)


def variables(parser: argparse.ArgumentParser) -> list[tuple[str, str, str]]:
    """(variable, flag, command) for every option of every command: the README's table."""
    rows: list[tuple[str, str, str]] = []
    for sub, prog in _walk(parser):
        for action in sub._actions:
            name = variable_name(action)
            if name is not None:
                rows.append((name, max(action.option_strings, key=len), prog))
    return rows


def _annotate(parser: argparse.ArgumentParser) -> None:
    for sub, _prog in _walk(parser):
        for action in sub._actions:
            name = variable_name(action)
            if name is None or action.help is argparse.SUPPRESS:
                continue
            if name not in (action.help or ""):
                action.help = f"{action.help or ''} [env: {name}]".strip()


def _lines(raw: str) -> list[str]:
    return [line.strip() for line in raw.splitlines() if line.strip()]


def _convert(bound: _Bound) -> object:
    """The variable's value as the flag would have produced it; ArgumentError if invalid."""
    action, raw = bound.action, bound.raw
    if isinstance(action, _FLAG_ACTIONS):
        word = raw.strip().lower()
        if word not in _TRUE | _FALSE:
            msg = f"'{raw}' is not on or off (1/true/yes/on or 0/false/no/off)"
            raise argparse.ArgumentError(action, msg)
        return action.const if word in _TRUE else bound.original_default
    if isinstance(action, argparse._CountAction):
        if not raw.strip().isdigit():
            raise argparse.ArgumentError(action, f"'{raw}' is not a count")
        return int(raw.strip())
    lines = _lines(raw)
    get_values = bound.parser._get_values
    if isinstance(action, argparse._AppendAction):
        return [get_values(action, [line]) for line in lines]
    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        return get_values(action, lines)
    if len(lines) != 1:
        msg = f"holds {len(lines)} lines; {max(action.option_strings, key=len)} takes one value"
        raise argparse.ArgumentError(action, msg)
    return get_values(action, lines)


def _rival_given(item: _Bound, args: argparse.Namespace) -> bool:
    """Whether a flag of another member of ``item``'s mutually exclusive group was given."""
    for group in item.parser._mutually_exclusive_groups:
        if item.action not in group._group_actions:
            continue
        for other in group._group_actions:
            if other is item.action:
                continue
            value = getattr(args, other.dest, None)
            if not isinstance(value, _FromEnvironment) and value != other.default:
                return True
    return False


def parse_with_environment(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    environ: Mapping[str, str],
) -> argparse.Namespace:
    """``parser.parse_args(argv)`` with every option's variable from ``environ`` as its default.

    Exits with a usage error (code 2, argparse's convention) when a variable's value is bad.
    """
    _annotate(parser)
    bound: list[_Bound] = []
    for sub, _prog in _walk(parser):
        for action in sub._actions:
            name = variable_name(action)
            if name is None or not environ.get(name, "").strip():
                continue  # unset, or set to nothing (a compose or CI input left empty)
            marker = _FromEnvironment(action)
            bound.append(_Bound(sub, action, name, environ[name], marker, action.default))
            action.default = marker
            action.required = False
            for group in sub._mutually_exclusive_groups:
                if action in group._group_actions:
                    # A variable may stand for the one required choice (--template-file),
                    # and a flag for another member (--terraform) still wins over it.
                    group.required = False
    args, extras = parser.parse_known_args(argv)
    if extras:
        # The subcommand's own usage: it lists the options this command does take.
        command_parser = getattr(args, "command_parser", None) or parser
        command_parser.error(f"unrecognized arguments: {' '.join(extras)}")
    for item in bound:
        dest = item.action.dest
        if getattr(args, dest, None) is not item.marker:
            continue  # the flag was given, or the option belongs to another command
        if _rival_given(item, args):
            continue  # another choice of its mutually exclusive group was given as a flag
        try:
            value = _convert(item)
        except argparse.ArgumentError as exc:
            flag = max(item.action.option_strings, key=len)
            item.parser.error(f"environment variable {item.variable} (for {flag}): {exc.message}")
        setattr(args, dest, value)
    return args
