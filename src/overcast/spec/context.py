"""What one translation pass carries: the parsed document, the problems and warnings found so far,
and where each model field came from in the file (so pydantic's errors can name the user's line)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from overcast.spec.errors import FieldError, Problem, Report
from overcast.spec.fields import Handling, Table
from overcast.spec.yamldoc import Document, Path

T = TypeVar("T")
Loc = tuple[str | int, ...]  # a location inside the pydantic model, e.g. ("resources", "cpus")


def dotted(path: Path) -> str:
    """("resources", "any_of", 1, "infra") -> "resources.any_of[1].infra"."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass(slots=True)
class Context:
    doc: Document
    report: Report
    origin: dict[Loc, Path] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # `launch --env` values: over the file's env

    def error(self, path: Path, message: str, suggestions: tuple[str, ...] | list[str] = ()) -> None:
        problem = Problem(message, self.doc.line(path), dotted(path) or None, tuple(suggestions))
        if problem not in self.report.problems:  # base keys are read once per any_of entry
            self.report.problems.append(problem)

    def warn(self, path: Path, message: str) -> None:
        warning = Problem(message, self.doc.line(path), dotted(path) or None)
        if warning not in self.report.warnings:
            self.report.warnings.append(warning)

    def attempt(self, path: Path, parse: Callable[..., T], *args: Any) -> T | None:
        """Run one value parser; a FieldError becomes a problem at ``path`` and the value None."""
        try:
            return parse(*args)
        except FieldError as exc:
            self.error(path, exc.message, exc.suggestions)
            return None

    def mapping(self, value: Any, path: Path, what: str) -> dict[str, Any] | None:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"{what} must be a mapping of keys to values, got {kind_of(value)}")
            return None
        return {str(k): v for k, v in value.items()}

    def check_keys(self, section: dict[str, Any], path: Path, table: Table) -> None:
        """Warn about keys overcast ignores, reject ones it cannot honour and ones it does not know."""
        for key in section:
            where = (*path, key)
            handling = table.get(key)
            if handling is None:
                close = difflib.get_close_matches(key, list(table), n=3, cutoff=0.6)
                self.error(where, "unknown field", close)
            elif handling[0] is Handling.IGNORED:
                self.warn(where, f"not acted on: {handling[1]}")
            elif handling[0] is Handling.UNSUPPORTED:
                self.error(where, f"not supported: {handling[1]}")

    def record(self, loc: Loc, path: Path) -> None:
        self.origin.setdefault(loc, path)


def kind_of(value: Any) -> str:
    names = {list: "a list", dict: "a mapping", str: "a string", int: "a number", float: "a number"}
    return "true/false" if isinstance(value, bool) else names.get(type(value), type(value).__name__)
