"""Every key a spec section may hold, and what overcast does with it.

Three answers, so that nothing a user wrote is silently dropped:

- USED: overcast acts on it.
- IGNORED: understood but not acted on yet, and it cannot change where the workload runs: a warning.
- UNSUPPORTED: it would change where the workload may run and overcast cannot honour it: an error,
  because placing the job anyway would put it somewhere the user ruled out.

A key in no table is unknown: an error with the closest known names.
"""

from __future__ import annotations

from enum import StrEnum


class Handling(StrEnum):
    USED = "used"
    IGNORED = "ignored"
    UNSUPPORTED = "unsupported"


U, W, X = Handling.USED, Handling.IGNORED, Handling.UNSUPPORTED  # used, warn, reject
Table = dict[str, tuple[Handling, str]]

TOP: Table = {
    # overcast and SkyPilot
    "name": (U, ""),
    "num_nodes": (U, ""),
    "resources": (U, ""),
    "setup": (U, ""),
    "run": (U, ""),
    "envs": (U, ""),
    "workdir": (U, ""),
    "service": (U, ""),
    # overcast only
    "kind": (U, ""),
    "env": (U, ""),
    "checkpoint_dir": (U, ""),
    "priority": (U, ""),
    "team": (U, ""),
    "max_restarts": (U, ""),
    "max_retries_on_failure": (U, ""),
    "expected_hours": (U, ""),
    # SkyPilot only
    "file_mounts": (W, "files and buckets are not mounted yet; use setup/run or checkpoint_dir"),
    "secrets": (W, "secrets are not passed to the job yet"),
    "managed_secrets": (W, "secrets are not passed to the job yet"),
    "event_callback": (W, "event callbacks are not run"),
    "inputs": (W, "data-aware placement is not implemented"),
    "outputs": (W, "data-aware placement is not implemented"),
    "file_mounts_mapping": (W, "internal SkyPilot field"),
    "config": (W, "per-task SkyPilot config is not applied"),
    "api_server_access": (W, "there is no SkyPilot API server here"),
    "_metadata": (W, "internal SkyPilot field"),
    "volumes": (X, "volumes pin a workload to where the volume lives; overcast cannot place by volume yet"),
    "volume_mounts": (X, "volumes pin a workload to where the volume lives; overcast cannot place by volume"),
    "pool": (X, "SkyPilot worker pools are not supported; submit the job to overcast directly"),
}

RESOURCES: Table = {
    "accelerators": (U, ""),
    "cpus": (U, ""),
    "memory": (U, ""),
    "disk_size": (U, ""),
    "ports": (U, ""),
    "instance_type": (U, ""),
    "use_spot": (U, ""),
    "infra": (U, ""),
    "cloud": (U, ""),
    "region": (U, ""),
    "zone": (U, ""),
    "max_hourly_cost": (U, ""),
    "job_recovery": (U, ""),
    "priority": (U, ""),
    "any_of": (U, ""),
    "ordered": (U, ""),
    "image_id": (U, ""),  # a per-region mapping limits the regions; the image itself is not applied
    "network_tier": (U, ""),  # 'standard' is the default; 'best' is rejected in resources.py
    # overcast only
    "spot": (U, ""),
    "providers": (U, ""),
    "deny_providers": (U, ""),
    "regions": (U, ""),
    "deny_regions": (U, ""),
    "zones": (U, ""),
    "max_price_per_hour": (U, ""),
    # SkyPilot only
    "disk_tier": (W, "disk tiers are not chosen yet"),
    "ephemeral_storage": (W, "deprecated in SkyPilot; use disk_size"),
    "labels": (W, "labels are not applied to instances yet"),
    "autostop": (W, "overcast stops nodes when the job ends"),
    "priority_class": (W, "Kubernetes priority classes are not set"),
    "_docker_login_config": (W, "internal SkyPilot field"),
    "_is_image_managed": (W, "internal SkyPilot field"),
    "_requires_fuse": (W, "internal SkyPilot field"),
    "_cluster_config_overrides": (W, "internal SkyPilot field"),
    "_no_missing_accel_warnings": (W, "internal SkyPilot field"),
    "accelerator_args": (X, "TPU node/VM options are not supported"),
    "local_disk": (X, "local-disk requirements are not matched against offers yet"),
    "volumes": (X, "volumes pin a workload to where the volume lives; overcast cannot place by volume yet"),
}
# keys an ``any_of`` / ``ordered`` candidate may not hold
CANDIDATE_FORBIDDEN = ("any_of", "ordered", "job_recovery", "priority")

JOB_RECOVERY: Table = {
    "max_restarts_on_errors": (U, ""),
    "strategy": (W, "overcast picks the next pool itself after a preemption or failure"),
    "recover_on_exit_codes": (W, "restarts on chosen exit codes are not implemented"),
}

SERVICE: Table = {
    "readiness_probe": (U, ""),
    "replicas": (U, ""),
    "replica_policy": (U, ""),
    "ports": (U, ""),
    # overcast only
    "port": (U, ""),
    "max_share_per_provider": (U, ""),
    "proxy": (U, ""),
    # SkyPilot only
    "load_balancing_policy": (W, "overcast's load balancer uses its own policy"),
    "load_balancer": (W, "load balancer options are not applied"),
    "tls": (W, "TLS termination is not implemented"),
    "pool": (X, "SkyPilot worker pools are not supported"),
    "workers": (X, "SkyPilot worker pools are not supported"),
}

REPLICA_POLICY: Table = {
    "min_replicas": (U, ""),
    "max_replicas": (U, ""),
    "target_qps_per_replica": (U, ""),
    "upscale_delay_seconds": (U, ""),
    "downscale_delay_seconds": (U, ""),
    "base_ondemand_fallback_replicas": (U, ""),
    "dynamic_ondemand_fallback": (U, ""),
    "spot_placer": (U, ""),
    "num_overprovision": (W, "spot over-provisioning is not implemented"),
    "queue_length_threshold": (W, "queue-length autoscaling is not implemented"),
    "max_workers": (W, "SkyPilot worker pools are not supported"),
}

READINESS_PROBE: Table = {
    "path": (U, ""),
    "initial_delay_seconds": (U, ""),
    "timeout_seconds": (U, ""),
    "period_seconds": (U, ""),
    "endpoint_probe_interval_seconds": (U, ""),
    # overcast only
    "failure_threshold": (U, ""),
    "timeout_to_ready_seconds": (U, ""),
    "post_data": (W, "probes are GET requests"),
    "headers": (W, "probe headers are not sent"),
    "consecutive_failure_threshold_timeout": (W, "replicas are replaced by overcast's own rule"),
}

PROXY: Table = {
    "connect_timeout_seconds": (U, ""),
    "read_timeout_seconds": (U, ""),
    "body_timeout_seconds": (U, ""),
}

# overcast fields that only make sense for one kind of workload
JOB_ONLY = ("checkpoint_dir", "max_restarts", "max_retries_on_failure", "expected_hours")
