"""Jobs that log their life to a shared file, and the checks over it: no job has two attempts running at
once, and every job's work completes exactly once."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from pathlib import Path

FIELDS = "$OVERCAST_JOB_ID $OVERCAST_ATTEMPT $OVERCAST_NODE_RANK {what} $(date +%s.%N) $OVERCAST_NUM_NODES"
LINE = f'"{FIELDS}" >> {{shared}}'


def marker_run(shared: Path, seconds: float) -> str:
    """A job command: 'start', then 'done' after ``seconds``, or 'stop' on SIGTERM (trap set first)."""
    stop, start, done = (LINE.format(what=w, shared=shared) for w in ("stop", "start", "done"))
    return f"trap 'echo {stop}; exit 143' TERM\necho {start}\nsleep {seconds}\necho {done}\n"


def read_marks(shared: Path) -> list[tuple[str, int, int, str, float, int]]:
    """(job, attempt, rank, what, at, nodes) for every mark."""
    if not shared.exists():
        return []
    marks = []
    for line in shared.read_text().splitlines():
        job, attempt, rank, what, at, nodes = line.split()
        marks.append((job, int(attempt), int(rank), what, float(at), int(nodes)))
    return marks


def overlapping_attempts(shared: Path) -> list[str]:
    """Jobs with two attempts alive at the same time (an attempt with no end mark runs forever)."""
    spans: dict[str, dict[int, list[float]]] = defaultdict(dict)
    for job, attempt, _rank, what, at, _nodes in read_marks(shared):
        span = spans[job].setdefault(attempt, [math.inf, -math.inf, 0])
        if what == "start":
            span[0] = min(span[0], at)
            span[2] += 1
        else:
            span[1] = max(span[1], at)
            span[2] -= 1
    bad = []
    for job, attempts in spans.items():
        ordered = sorted(
            (s[0], s[1] if s[2] <= 0 else math.inf, attempt) for attempt, s in attempts.items()
        )  # an attempt with more starts than ends has a node still running (or killed without a mark)
        for (_, end, a), (start, _, b) in itertools.pairwise(ordered):
            if end > start:
                bad.append(f"{job}: attempt {a} (until {end}) overlaps attempt {b} (from {start})")
    return bad


def completions(shared: Path) -> dict[str, int]:
    """job -> how many attempts finished their work on every node (1 is right). An attempt that a crash
    cut off mid-launch may have finished on the nodes it started: that gang never ran whole."""
    done: dict[tuple[str, int], set[int]] = defaultdict(set)
    gang: dict[tuple[str, int], int] = {}
    for job, attempt, rank, what, _at, nodes in read_marks(shared):
        if what == "done":
            done[(job, attempt)].add(rank)
            gang[(job, attempt)] = nodes
    count: dict[str, int] = defaultdict(int)
    for (job, attempt), ranks in done.items():
        if len(ranks) == gang[(job, attempt)]:
            count[job] += 1
    return dict(count)
