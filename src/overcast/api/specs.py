"""Spec text in a request: parsed off the event loop, and the team it is submitted for.

Parsing is pure Python and grows with the text (a 200 KB spec of nested lists takes seconds): on the
event loop it would stall every other request, /healthz included, so it runs in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import yaml
from starlette.concurrency import run_in_threadpool

from overcast.api import db
from overcast.api.auth import Principal
from overcast.api.text import check_text
from overcast.spec.errors import Problem, SpecError
from overcast.store import Store, check_team_name

if TYPE_CHECKING:
    from overcast.spec.loader import LoadedSpec

T = TypeVar("T")
# Up to this many characters parse on the loop: a typical spec parses in 0.3 ms and the thread hand-off
# adds a third to that; the worst 2,000 characters (nested lists) hold the loop about 20 ms.
INLINE_CHARS = 2_000


def load_text(text: str, source: str, env: dict[str, str] | None = None) -> LoadedSpec:
    """The loaded spec; SpecError (a 422 naming the line) for bad YAML, however it is bad."""
    from overcast.spec.loader import load_spec_text

    check_text(text, "yaml")
    try:
        return load_spec_text(text, source, env)
    except RecursionError:  # "[[[[..." thousands deep: the YAML parser recurses per level
        raise SpecError(source, [Problem("invalid YAML: nested too deeply")]) from None
    except yaml.YAMLError as err:  # the loader reports most YAML errors itself; this catches the rest
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise SpecError(source, [Problem(f"invalid YAML: {str(err).splitlines()[0]}", line=line)]) from None


async def parse(parser: Callable[[str], T], text: str) -> T:
    """``parser(text)``, in a worker thread unless the text is short; its exceptions come through."""
    if len(text) <= INLINE_CHARS:
        return parser(text)
    return await run_in_threadpool(parser, text)


async def owner(store: Store, who: Principal, asked: str) -> str:
    """The team a spec is stored under: the caller's, or for an admin the spec's ``team`` (not "default").

    ValueError (answered as a 422 on ``team``) for an invalid name or a team that does not exist: a
    typo would store a job no team token sees and no budget can be put on.
    """
    team = asked if who.admin and asked != "default" else who.team
    if team == who.team:
        return team  # a token's own team exists
    check_team_name(team)
    if not await db.call(store, store.has_team, team):
        raise ValueError(f"no team {team!r} (an admin creates it: python -m overcast.api create-team {team})")
    return team
