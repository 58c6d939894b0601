"""Load a workload spec: YAML file or text -> JobSpec / ServiceSpec, plus warnings.

The pipeline: parse (YAML nodes -> data + path->line map), translate (SkyPilot and overcast keys ->
model fields, remembering where each came from), validate (pydantic). Every problem found on the way
is collected and raised together as one SpecError naming file, line and field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from overcast.spec.accelerators import parse_accelerators
from overcast.spec.context import Context, Loc, dotted
from overcast.spec.document import translate
from overcast.spec.errors import Problem, Report, SpecError, not_utf8, shown
from overcast.spec.models import JobSpec, ServiceSpec
from overcast.spec.yamldoc import parse_yaml

__all__ = ["LoadedSpec", "load_spec", "load_spec_text", "parse_accelerators"]


@dataclass(slots=True)
class LoadedSpec:
    spec: JobSpec | ServiceSpec
    warnings: list[str] = field(default_factory=list)  # "file.yaml:7: file_mounts: not acted on: ..."
    source: str = "<string>"


def load_spec(path: str | Path, env: dict[str, str] | None = None) -> LoadedSpec:
    """Read and validate one spec file. Raises SpecError (a ValueError) for any problem in it."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(source, [Problem("no such file")]) from None
    except IsADirectoryError:
        raise SpecError(source, [Problem("is a directory, not a spec file")]) from None
    except UnicodeDecodeError as exc:
        raise not_utf8(source, exc) from None
    except OSError as exc:
        raise SpecError(source, [Problem(f"cannot read: {exc}")]) from None
    return load_spec_text(text, source, env)


def load_spec_text(text: str, source: str = "<string>", env: dict[str, str] | None = None) -> LoadedSpec:
    """Validate spec text; ``source`` names it in messages (and gives the default job name). ``env``:
    values given at launch (``overcast launch --env``), over the file's own and filling its null ones."""
    doc = parse_yaml(text, source)
    report = Report(source)
    ctx = Context(doc, report, env=dict(env or {}))
    model, fields = translate(ctx, source)
    if fields is None:
        report.raise_if_any()
    else:
        _reject_bools(ctx, model, fields, ())
    try:
        spec = model.model_validate(fields)
    except ValidationError as exc:
        # Fields that failed translation were left out, so pydantic sees only the rest; skip what
        # it says about a field already reported (a missing name, say).
        seen = {p.field for p in report.problems}
        for problem in map(partial(_problem, ctx), exc.errors()):
            if problem.field not in seen:  # one problem per field (max and min of "replicas: -1")
                seen.add(problem.field)
                report.problems.append(problem)
        report.raise_if_any()
        raise  # unreachable: a ValidationError always has errors
    report.raise_if_any()
    warnings = [w.render(source) for w in sorted(report.warnings, key=lambda p: p.line or 0)]
    return LoadedSpec(spec=spec, warnings=warnings, source=source)


def _reject_bools(ctx: Context, model: type[BaseModel], data: dict[str, Any], loc: Loc) -> None:
    """pydantic reads ``num_nodes: true`` as 1; YAML users mean no such thing. Drop it and say so."""
    for name, value in list(data.items()):
        info = model.model_fields.get(name)
        if info is None:
            continue
        kind = info.annotation
        nested = next(
            (t for t in (kind, *get_args(kind)) if isinstance(t, type) and issubclass(t, BaseModel)), None
        )
        if isinstance(value, dict) and nested is not None:
            _reject_bools(ctx, nested, value, (*loc, name))
        elif isinstance(value, bool) and kind is not bool:
            path = ctx.origin.get((*loc, name), (*loc, name))
            ctx.error(path, f"expected a {_expected(kind)}, got {str(value).lower()}")
            del data[name]


def _expected(kind: Any) -> str:
    names = {int: "whole number", float: "number", str: "string"}
    return next((names[t] for t in (kind, *get_args(kind)) if t in names), "value of another type")


def _problem(ctx: Context, err: Any) -> Problem:
    """One pydantic error -> a Problem at the YAML line the offending field came from."""
    loc: Loc = tuple(err["loc"])
    prefix = loc
    while prefix and prefix not in ctx.origin:
        prefix = prefix[:-1]
    path = ctx.origin.get(prefix, tuple(str(p) for p in loc))
    message = err["msg"].replace("Input should", "must").replace("String should", "must")
    message = message.replace("Field required", "missing field").replace("Value error, ", "")
    if err["type"] != "missing" and not isinstance(err.get("input"), dict):
        message += f" (got {shown(err['input'])})"
    return Problem(message, ctx.doc.line(path), dotted(path) or None)
