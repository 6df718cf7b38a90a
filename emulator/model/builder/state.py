"""The state of one model build and the small readers every sub-resource builder shares.

Problems are collected, not raised at the first one, so ``validate`` lists them all; an item
that failed is marked broken and references to it are skipped (:class:`Skip`) rather than
reported a second time as dangling.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from emulator.arm.props import Notes, Props, id_leaf
from emulator.errors import (
    EmulatorError,
    TemplateError,
    UnsupportedFeature,
)
from emulator.model.names import find_name
from emulator.model.types import GatewayResourceLike

_E = TypeVar("_E", bound=enum.Enum)


class Skip(Exception):
    """An item depends on one whose error is already recorded; reporting it again is noise."""


@dataclass
class Builder:
    """One model build: the resource, the notes, and every problem found so far.

    Problems are collected rather than raised, so ``validate`` can list all of them at once: an
    item (a listener, a certificate…) that fails is recorded as broken, and items that refer to
    it are skipped silently instead of reporting a dangling reference.
    """

    gw: GatewayResourceLike
    #: The time of the build, given by the caller: the model reads no clock. Only warnings use
    #: it (a server certificate that has expired); no decision depends on it.
    now: datetime
    notes: Notes = field(default_factory=Notes)
    warnings: list[str] = field(default_factory=list)
    problems: list[EmulatorError] = field(default_factory=list)
    broken: dict[str, set[str]] = field(default_factory=dict)
    #: ``--loose``: a feature that is not emulated becomes a warning line instead of an error.
    loose: bool = False
    #: Each SSL profile's ``sslPolicy`` JSON path, for the policy-family check.
    profile_policy_paths: dict[str, str] = field(default_factory=dict)

    @property
    def file(self) -> str:
        return self.gw.file

    def report(self, exc: EmulatorError, *, left_out: str | None = None) -> None:
        if self.loose and isinstance(exc, UnsupportedFeature):
            where = f"{exc.path}: " if exc.path else ""
            dropped = f"; {left_out} is left out" if left_out else ""
            self.warnings.append(f"not emulated (--loose): {where}{exc.message}{dropped}")
            return
        self.problems.append(exc.located(file=self.file))

    def retired(self, exc: TemplateError) -> None:
        """A setting the TLS 1.0/1.1 retirement removed: an error, or with ``--loose`` a
        warning (the setting then runs as it did before the retirement)."""
        if not self.loose:
            raise exc
        where = f"{exc.path}: " if exc.path else ""
        self.warnings.append(
            f"retired (--loose): {where}{exc.message}; it runs as before the retirement"
        )

    def report_all(self, errors: list[EmulatorError]) -> None:
        """Record several independent problems of one item, then skip the item."""
        for error in errors[:-1]:
            self.report(error)
        if errors:
            raise errors[-1]

    @contextmanager
    def item(self, collection: str, item: Props) -> Iterator[None]:
        """Build one item of ``collection``; record its error and mark it broken on failure."""
        try:
            yield
        except Skip:
            self._mark_broken(collection, item)
        except EmulatorError as exc:
            name = item.get("name")
            self.report(exc, left_out=f"{collection} '{name}'")
            self._mark_broken(collection, item)

    @contextmanager
    def section(self) -> Iterator[None]:
        """A part of the build that is not one item (gateway-wide checks)."""
        try:
            yield
        except Skip:
            pass
        except EmulatorError as exc:
            self.report(exc)

    def _mark_broken(self, collection: str, item: Props) -> None:
        name = item.get("name")
        if isinstance(name, str):
            self.broken.setdefault(collection.lower(), set()).add(name.lower())

    def ref_name_or_none(
        self, ref_id: str, collection: str, known: Mapping[str, Any], *, path: str
    ) -> str | None:
        """:meth:`ref_name`, but None for a reference to a broken item."""
        try:
            return self.ref_name(ref_id, collection, known, path=path)
        except Skip:
            return None

    def ref_name(self, ref_id: str, collection: str, known: Mapping[str, Any], *, path: str) -> str:
        """Resolve a sub-resource id to the name of an item of ``collection``.

        Raises:
            Skip: the item exists but failed to build (its error is already recorded).
            TemplateError: no such item.
        """
        got_collection, name = id_leaf(ref_id)
        match = find_name(known, name)
        if (
            got_collection.lower() == collection.lower()
            and match is None
            and name.lower() in self.broken.get(collection.lower(), set())
        ):
            raise Skip
        if got_collection.lower() != collection.lower() or match is None:
            names = ", ".join(sorted(known)) or "none"
            raise TemplateError(
                f"reference '{ref_id}' does not name an item of '{collection}' of this gateway "
                f"(existing: {names})",
                file=self.file,
                path=path,
                fix=f"point the id at one of the existing {collection}",
                code="InvalidResourceReference",
            )
        return match


def require_name(item: Props) -> str:
    name = item.str_("name", required=True)
    assert name is not None
    item.get("id")
    item.get("etag")
    item.get("type")
    return name


def check_unique(
    builder: Builder, items: dict[str, Any], name: str, item: Props, what: str
) -> None:
    if find_name(items, name) is not None:
        raise TemplateError(
            f"two {what} are named '{name}'",
            file=builder.file,
            path=item.path,
            fix="give each a unique name",
            code="InvalidTemplate",
        )


def parse_enum(
    builder: Builder, kind: type[_E], text: str, item: Props | None, field_name: str
) -> _E:
    for member in kind:
        if str(member.value).lower() == text.lower():
            return member
    allowed = ", ".join(str(m.value) for m in kind)
    close = difflib.get_close_matches(
        text.lower(), [str(m.value).lower() for m in kind], n=1, cutoff=0.5
    )
    hint = next(
        (
            f" (did you mean '{m.value}'?)"
            for m in kind
            if close and str(m.value).lower() == close[0]
        ),
        "",
    )
    raise TemplateError(
        f"'{field_name}' is '{text}'{hint}",
        file=builder.file,
        path=item.key_path(field_name) if item is not None else None,
        fix=f"use one of: {allowed}",
        code="InvalidRequestContent",
    )
