"""decide()'s options as one strict model: the fleet file's ``scheduler:`` section (the live control loop)
and a twin scenario's ``decide_options`` are both read through it, so the two cannot drift from decide().

```yaml
scheduler:
  burst_limit_node_hours: 64        # jobs above this wait for a reservation they fit (burst.py)
  burst_yield: {min_nodes: 8, min_hours_left: 40}  # needs the burst limit (yield_room.py)
  fair_share: true                  # interleave teams of equal priority (queue.py)
  queue_order: fifo                 # or slowdown (the default)
```

Every default is decide()'s own (a test compares them), so an empty section changes nothing.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
)

if TYPE_CHECKING:
    from overcast.scheduler.snapshot import Decisions, Snapshot

# decide()'s own defaults (decide.py; a test holds them equal). Not imported from there: the fleet file is
# read by light commands (``overcast gpus``), and decide() brings numpy and the solvers (~0.3 s).
BATCH_THRESHOLD = 200
TIME_BUDGET_S = 2.0
_PREFIX = "burst_yield: "


def _yield_rule(value: object) -> Any:
    """A YieldRule or None, from YieldRule.of's forms (true, a mapping, "name=value ..."); its message
    without the field name, which the loader puts in front."""
    from overcast.scheduler.yield_room import YieldRule

    try:
        return YieldRule.of(value)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(str(exc).removeprefix(_PREFIX)) from None


def _yield_fields(rule: Any) -> dict[str, float] | None:
    return None if rule is None else {name: getattr(rule, name) for name in rule.__dataclass_fields__}


# a YieldRule or None (typed Any so that reading a fleet file does not import the scheduler)
YieldField = Annotated[Any, PlainValidator(_yield_rule), PlainSerializer(_yield_fields, return_type=Any)]


class SchedulerOptions(BaseModel):
    """decide()'s keyword arguments, with its defaults and bounds; unknown names are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # strict numbers: YAML's true is not 1 (an int is a float, a string or a bool is neither)
    batch_threshold: StrictInt = Field(default=BATCH_THRESHOLD, ge=0)  # more pending jobs: the batch solver
    time_budget_s: StrictFloat = Field(default=TIME_BUDGET_S, gt=0, allow_inf_nan=False)  # the batch solver's
    fair_share: StrictBool = False
    queue_order: Literal["slowdown", "fifo"] = "slowdown"
    consolidate: StrictBool = True
    burst_limit_node_hours: StrictFloat | None = Field(default=None, ge=0, allow_inf_nan=False)
    burst_yield: YieldField = None  # acts only with burst_limit_node_hours

    def changed(self) -> dict[str, object]:
        """The options that differ from decide()'s defaults, as decide() takes them."""
        return {
            name: getattr(self, name) for name, default in _DEFAULTS.items() if getattr(self, name) != default
        }

    def decide(self) -> Callable[[Snapshot], Decisions]:
        """decide() with these options (plain decide() when none differs)."""
        from overcast.scheduler.decide import decide

        changed = self.changed()
        return partial(decide, **changed) if changed else decide

    def describe(self) -> str:
        """One line for a log: "burst_limit_node_hours=64, fair_share=True" (empty at the defaults)."""
        shown = self.model_dump(include=set(self.changed()))
        return ", ".join(f"{name}={shown[name]}" for name in sorted(shown))


_DEFAULTS = {name: field.default for name, field in SchedulerOptions.model_fields.items()}


def parse_options(values: Mapping[str, object], what: str = "decide_options") -> SchedulerOptions:
    """``values`` as SchedulerOptions, or one ValueError line: "burst_yield: min_nodes must be ..." for a
    bad value, "<what>: no option 'x' (did you mean ...)" for an unknown name."""
    try:
        return SchedulerOptions.model_validate(dict(values))
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else what
        if error["type"] == "extra_forbidden":
            close = difflib.get_close_matches(name, list(_DEFAULTS), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"it takes {', '.join(_DEFAULTS)}"
            raise ValueError(f"{what}: no option {name!r} ({hint})") from None
        message = str(error["msg"]).removeprefix("Value error, ")
        got = "" if error["type"] == "value_error" else f" (got {error.get('input')!r})"
        raise ValueError(f"{name}: {message}{got}") from None
