"""Property test (Hypothesis, stateful) over the real loop and real local processes: whatever the order
of submissions, ticks, provider outages, capacity errors and preemptions, no job ever has two attempts
alive at once, no provider runs more nodes than it has, and every job ends."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from overcast.backends.local import LocalBackend
from overcast.backends.local_procs import alive
from overcast.control.health import Backoff
from overcast.store import JobState, Store
from tests.control.harness import job, make_loop

PROVIDERS = ("azure-local", "oci-local")


def live_nodes(home: Path) -> dict[str, list[tuple[str, int]]]:
    """provider -> (job, attempt) of every node process still running."""
    found: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for pid_file in home.glob("local/*/launches/*/node-*.pid"):
        info = json.loads(pid_file.read_text())
        if alive(info["pid"], info["start"]):
            job_id, attempt = pid_file.parent.name.rsplit("--", 1)
            found[pid_file.parts[-4]].append((job_id, int(attempt)))
    return found


class LoopMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.home = Path(tempfile.mkdtemp(prefix="overcast-prop-"))
        self.store = Store(f"sqlite:///{self.home / 'db.sqlite'}")
        self.loop = make_loop(self.home, self.store, grace_seconds=0.5, backoff=Backoff(0.5, 2.0))
        self.ids: list[str] = []

    def backend(self, provider: str) -> LocalBackend:
        found = self.loop.backends[f"local:{provider}"]
        assert isinstance(found, LocalBackend)
        return found

    @rule(nodes=st.integers(1, 2), seconds=st.sampled_from([0.1, 0.3, 0.6]))
    def submit(self, nodes: int, seconds: float) -> None:
        spec = job(f"p{len(self.ids)}", f"sleep {seconds}", nodes=nodes, max_restarts=100)
        self.ids.append(self.store.submit("default", spec).id)

    @rule(times=st.integers(1, 3))
    def tick(self, times: int) -> None:
        for _ in range(times):
            self.loop.tick()
            time.sleep(0.05)

    @rule(provider=st.sampled_from(PROVIDERS), down=st.booleans())
    def outage(self, provider: str, down: bool) -> None:
        self.backend(provider).set_down(down)

    @rule(provider=st.sampled_from(PROVIDERS), on=st.booleans())
    def capacity(self, provider: str, on: bool) -> None:
        self.backend(provider).set_capacity_error(on)

    @rule(provider=st.sampled_from(PROVIDERS))
    def preempt(self, provider: str) -> None:
        running = self.backend(provider).active()
        if running:
            with contextlib.suppress(KeyError):  # it ended meanwhile
                self.backend(provider).preempt(running[0][0], notice_seconds=0.2)

    @invariant()
    def one_attempt_at_a_time_and_within_capacity(self) -> None:
        nodes = live_nodes(self.home)
        attempts: dict[str, set[int]] = defaultdict(set)
        for provider, launched in nodes.items():
            assert len(launched) <= 2, f"{provider} runs {len(launched)} nodes of 2: {launched}"
            for job_id, attempt in launched:
                attempts[job_id].add(attempt)
        assert all(len(a) == 1 for a in attempts.values()), dict(attempts)

    def teardown(self) -> None:
        try:
            for provider in PROVIDERS:
                self.backend(provider).set_down(False)
                self.backend(provider).set_capacity_error(False)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all(self.store.get(i).state.terminal for i in self.ids):
                self.loop.tick()
                self.one_attempt_at_a_time_and_within_capacity()
                time.sleep(0.05)
            states = {i: self.store.get(i).state for i in self.ids}
            assert set(states.values()) <= {JobState.SUCCEEDED}, states  # nothing lost, nothing failed
        finally:
            for backend in self.loop.backends.values():
                for job_id, attempt in backend.active():
                    backend.stop(job_id, attempt, 0.0)
            shutil.rmtree(self.home, ignore_errors=True)


LoopMachine.TestCase.settings = settings(
    max_examples=12, stateful_step_count=15, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
TestLoopProperties = LoopMachine.TestCase
