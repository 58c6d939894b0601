"""Request-rate autoscaling with hysteresis: separate delays before scaling up and down.

A pure function of (policy, state, observed rate, now), so the control loop and the twin share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from overcast.spec.models import Autoscaling


@dataclass(frozen=True, slots=True)
class ScaleState:
    target: int  # replicas we currently aim for
    want_up_since: float | None = None  # when the desired count first exceeded the target
    want_down_since: float | None = None


def desired_replicas(policy: Autoscaling, rps: float) -> int:
    """Replicas needed for ``rps`` at the policy's per-replica target, clamped to [min, max]."""
    top = policy.max_replicas if policy.max_replicas is not None else policy.min_replicas
    if policy.target_rps_per_replica is None:
        return policy.min_replicas  # no autoscaling: a fixed count
    want = math.ceil(rps / policy.target_rps_per_replica - 1e-9)
    return max(policy.min_replicas, min(top, want))


def autoscale(policy: Autoscaling, state: ScaleState, rps: float, now: float) -> ScaleState:
    """Move the target only after the wish has held for the up (or down) delay."""
    want = desired_replicas(policy, rps)
    if want > state.target:
        since = state.want_up_since if state.want_up_since is not None else now
        if now - since >= policy.upscale_delay_seconds:
            return ScaleState(want)
        return replace(state, want_up_since=since, want_down_since=None)
    if want < state.target:
        since = state.want_down_since if state.want_down_since is not None else now
        if now - since >= policy.downscale_delay_seconds:
            return ScaleState(want)
        return replace(state, want_down_since=since, want_up_since=None)
    return ScaleState(state.target)
