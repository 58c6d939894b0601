"""Errors for bad workload specs: every problem names the file, the line and the field.

A user's mistake in a YAML file must read like a compiler error, never like a traceback:
``job.yaml:12: resources.accelerators: unknown accelerator 'H1OO' (did you mean H100?)``.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 2, 40, 40
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 4


def shown(value: Any) -> str:
    """A user's value for a message, cut short without walking all of it (``repr`` of ten lines of
    nested YAML aliases is billions of items)."""
    text = _SHORT.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a spec. ``field`` is the dotted path as the user wrote it."""

    message: str
    line: int | None = None
    field: str | None = None
    suggestions: tuple[str, ...] = ()

    def render(self, source: str) -> str:
        where = source if self.line is None else f"{source}:{self.line}"
        text = self.message
        if self.suggestions:
            text += f" (did you mean {', '.join(self.suggestions)}?)"
        return f"{where}: {self.field}: {text}" if self.field else f"{where}: {text}"


class FieldError(ValueError):
    """A problem with one value; whoever catches it knows which field and line it came from."""

    def __init__(self, message: str, suggestions: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.suggestions = tuple(suggestions)


def not_utf8(source: str, exc: UnicodeDecodeError) -> SpecError:
    """A file that is not UTF-8 text (a binary, or saved as Latin-1): the line of its first bad byte."""
    line = exc.object[: exc.start].count(b"\n") + 1
    byte = exc.object[exc.start]
    return SpecError(source, [Problem(f"not UTF-8 text (byte 0x{byte:02x}); save it as UTF-8", line=line)])


class SpecError(ValueError):
    """A spec that cannot be loaded. ``str()`` is the first problem; ``problems`` holds them all."""

    def __init__(self, source: str, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = list(problems) or [Problem("invalid spec")]
        first = self.problems[0]
        self.source = source
        self.line: int | None = first.line
        self.field: str | None = first.field
        self.message: str = first.message
        self.suggestions: list[str] = list(first.suggestions)
        super().__init__(first.render(source))

    def __str__(self) -> str:
        return self.problems[0].render(self.source)

    def render_all(self) -> str:
        """Every problem, one per line, in file order (for the CLI)."""
        return "\n".join(p.render(self.source) for p in self.problems)


@dataclass(slots=True)
class Report:
    """Problems and warnings collected while reading one spec, so several are reported at once."""

    source: str
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def raise_if_any(self) -> None:
        if self.problems:
            ordered = sorted(self.problems, key=lambda p: (p.line is None, p.line or 0))
            raise SpecError(self.source, ordered)
