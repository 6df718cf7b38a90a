"""Case-insensitive, path-tracking reading of ARM JSON objects.

ARM treats property names case-insensitively (the quickstart template writes ``Port``, ``Id``,
``RuleType`` next to ``priority`` and ``sslProfile``), so every read of a gateway property goes
through :class:`Props`. A ``Props`` remembers which keys were read; :meth:`Props.finish` then
sorts every other key into one of three classes, decided once per object type:

* unknown to ARM: an error in the shape ARM itself returns (``InvalidJson``, "Could not find
  member 'X' on object of type 'Y'");
* known to Azure but meaningless locally (zones, gatewayIPConfigurations, read-only fields such
  as ``etag`` or ``provisioningState``): accepted and reported once as a note;
* known and not emulated yet: :class:`~emulator.errors.UnsupportedFeature` naming the property.

Nothing is dropped silently.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from emulator.errors import EmulatorError, TemplateError, UnsupportedFeature

__all__ = ["Notes", "Props", "id_leaf"]

#: Read-only fields that ``az ... show`` and the portal's JSON View print: status fields on
#: every object, the resource group, and back-references (a frontend port lists the listeners
#: that use it, a pool the rules that route to it, and so on).
READ_ONLY_FIELDS: frozenset[str] = frozenset(
    {
        "etag",
        "provisioningstate",
        "type",
        "resourceguid",
        "operationalstate",
        "resourcegroup",
        "httplisteners",
        "requestroutingrules",
        "urlpathmaps",
        "pathrules",
        "redirectconfigurations",
        "backendipconfigurations",
        "privatelinkconfigurations",
    }
)


@dataclass
class Notes:
    """Collects the accepted-but-not-emulated properties for the startup summary.

    Mutable on purpose: one instance travels through a single model build and is frozen into
    the resulting config as a tuple.
    """

    items: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        if text not in self.items:
            self.items.append(text)


class Props:
    """A case-insensitive view of one ARM object, with its JSON path for messages."""

    def __init__(
        self,
        value: object,
        *,
        type_name: str,
        path: str,
        file: str | None,
        sink: Callable[[EmulatorError], None] | None = None,
    ) -> None:
        if not isinstance(value, Mapping):
            raise TemplateError(
                f"expected a JSON object for {type_name}, found {_json_kind(value)}",
                file=file,
                path=path,
                code="InvalidJson",
            )
        self.type_name = type_name
        self.path = path
        self.file = file
        #: Where :meth:`finish` reports problems so that one build can report them all;
        #: without a sink it raises the first one.
        self.sink = sink
        self._by_lower: dict[str, tuple[str, Any]] = {}
        for key, item in value.items():
            lower = str(key).lower()
            if lower in self._by_lower:
                raise TemplateError(
                    f"property '{key}' appears twice (ARM property names ignore letter case)",
                    file=file,
                    path=f"{path}.{key}",
                    fix="keep one of them",
                    code="InvalidJson",
                )
            self._by_lower[lower] = (str(key), item)
        self._read: set[str] = set()
        #: The spelling the code asked for, by lower-case name: candidates for "did you mean".
        self._asked: dict[str, str] = {}

    # -- reading ---------------------------------------------------------------------------

    def has(self, name: str) -> bool:
        return name.lower() in self._by_lower

    def key_path(self, name: str) -> str:
        actual = self._by_lower.get(name.lower(), (name, None))[0]
        return f"{self.path}.{actual}"

    def get(self, name: str, default: Any = None) -> Any:
        lower = name.lower()
        self._read.add(lower)
        self._asked.setdefault(lower, name)
        entry = self._by_lower.get(lower)
        if entry is None or entry[1] is None:
            return default
        return entry[1]

    def require(self, name: str, *, fix: str | None = None) -> Any:
        value = self.get(name)
        if value is None:
            raise TemplateError(
                f"{self.type_name} needs the property '{name}'",
                file=self.file,
                path=self.path,
                fix=fix or f"add '{name}' to {self.path}",
                code="InvalidTemplate",
            )
        return value

    def str_(self, name: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.require(name) if required else self.get(name, default)
        if value is not None and not isinstance(value, str):
            raise self.error(name, f"must be a string, found {_json_kind(value)}")
        return value

    def int_(self, name: str, default: int | None = None) -> int | None:
        value = self.get(name, default)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise self.error(name, f"must be an integer, found {_json_kind(value)}")
        return value

    def bool_(self, name: str, default: bool = False) -> bool:
        value = self.get(name, default)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise self.error(name, f"must be true or false, found {_json_kind(value)}")
        return value

    def list_(self, name: str) -> list[Any]:
        value = self.get(name, [])
        if not isinstance(value, list):
            raise self.error(name, f"must be a JSON array, found {_json_kind(value)}")
        return value

    def child(self, name: str, type_name: str) -> Props | None:
        value = self.get(name)
        if value is None:
            return None
        return Props(
            value, type_name=type_name, path=self.key_path(name), file=self.file, sink=self.sink
        )

    def children(self, name: str, type_name: str) -> list[Props]:
        path = self.key_path(name)
        return [
            Props(item, type_name=type_name, path=f"{path}[{i}]", file=self.file, sink=self.sink)
            for i, item in enumerate(self.list_(name))
        ]

    def ref(self, name: str) -> str | None:
        """The ``id`` of a sub-resource reference (``{"id": "..."}``), or None when absent."""
        child = self.child(name, "SubResource")
        if child is None:
            return None
        ref_id = child.str_("id", required=True)
        child.finish()
        return ref_id

    def refs(self, name: str) -> list[tuple[str, str]]:
        """Every ``id`` of a list of references, with the JSON path of each."""
        out: list[tuple[str, str]] = []
        for child in self.children(name, "SubResource"):
            ref_id = child.str_("id", required=True)
            child.finish()
            assert ref_id is not None
            out.append((ref_id, child.path))
        return out

    def error(
        self, name: str, message: str, *, fix: str | None = None, code: str | None = None
    ) -> TemplateError:
        return TemplateError(
            f"'{name}' {message}",
            file=self.file,
            path=self.key_path(name),
            fix=fix,
            code=code or "InvalidTemplate",
        )

    # -- finishing ---------------------------------------------------------------------------

    def finish(
        self,
        *,
        ignored: Iterable[str] = (),
        unsupported: Mapping[str, str] | None = None,
        notes: Notes | None = None,
        allow_read_only: bool = True,
    ) -> None:
        """Classify every key that was not read; raise on unknown or unsupported ones.

        Args:
            ignored: names Azure knows that mean nothing locally; noted, not emulated.
            unsupported: name → reason, for properties Azure knows that are not emulated yet.
            notes: where to note ignored properties (dropped when None).
            allow_read_only: accept ``etag``, ``provisioningState``… as printed by ``az show``.
        """
        ignored_lower = {name.lower() for name in ignored}
        unsupported_lower = {k.lower(): v for k, v in (unsupported or {}).items()}
        for lower, (key, value) in self._by_lower.items():
            if lower in self._read:
                continue
            if lower in unsupported_lower and value not in (None, [], {}, False, ""):
                self._problem(
                    UnsupportedFeature(
                        f"'{key}' on {self.type_name} is not emulated yet: "
                        f"{unsupported_lower[lower]}",
                        file=self.file,
                        path=f"{self.path}.{key}",
                        fix=f"remove '{key}' to run this template locally",
                    )
                )
                continue
            if lower in unsupported_lower or lower in ignored_lower:
                if notes is not None and value not in (None, [], {}):
                    notes.add(f"{self.path}.{key}")
                continue
            if allow_read_only and lower in READ_ONLY_FIELDS:
                continue
            self._problem(
                TemplateError(
                    f"Could not find member '{key}' on object of type '{self.type_name}'. "
                    f"Path '{self.path}.{key}'",
                    file=self.file,
                    path=f"{self.path}.{key}",
                    fix=f"check the spelling of '{key}' or remove it"
                    + self._did_you_mean(key, ignored, unsupported),
                    code="InvalidJson",
                )
            )

    def _did_you_mean(
        self, key: str, ignored: Iterable[str], unsupported: Mapping[str, str] | None
    ) -> str:
        """`` (did you mean 'sslProfile'?)`` when a known property is close to ``key``."""
        known = {name.lower(): name for name in (*ignored, *(unsupported or {}))}
        known.update(self._asked)
        for lower in self._by_lower:
            known.pop(lower, None)  # a property that is present is not the one misspelt
        close = difflib.get_close_matches(key.lower(), list(known), n=1, cutoff=0.75)
        return f" (did you mean '{known[close[0]]}'?)" if close else ""

    def _problem(self, exc: EmulatorError) -> None:
        if self.sink is None:
            raise exc
        self.sink(exc)


def id_leaf(resource_id: str) -> tuple[str, str]:
    """Split a sub-resource id into (collection, name), e.g. ``('sslProfiles', 'p1')``.

    Azure resolves references by id; the id's last two segments name the collection and the
    item, whatever subscription or resource group prefix the template built.
    """
    parts = [part for part in resource_id.strip().split("/") if part]
    if len(parts) < 2:
        return ("", parts[-1] if parts else "")
    return (parts[-2], parts[-1])


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
