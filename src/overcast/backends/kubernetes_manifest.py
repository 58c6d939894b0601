"""What one attempt creates in a Kubernetes cluster: an Indexed ``batch/v1`` Job and a headless Service.

A gang of N nodes is one Job with ``completions = parallelism = N`` and ``completionMode: Indexed``: pod
i gets ``JOB_COMPLETION_INDEX=i`` (its OVERCAST_NODE_RANK) and, with the Service of the same name as its
``subdomain``, the DNS name ``<job>-<i>.<job>``, so rank 0's is OVERCAST_HEAD_ADDR. ``backoffLimit: 0``
ends the whole gang when one pod fails; the pod failure policy marks a disruption (eviction, node loss,
preemption: the ``DisruptionTarget`` condition) on the Job itself, so it is still known to be "not the
job's fault" after the pods are gone. Labels carry (job id, attempt), so a restarted overcast finds what
runs with one labelled list.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from typing import Any

from overcast.backends.base import SERVER_SECRETS, LaunchRequest
from overcast.backends.kubernetes_config import KubeCluster
from overcast.backends.slurm_script import job_env as contract_env

OWNER = "overcast.dev/owner"  # label: whose Jobs these are (see owner())
JOB = "overcast.dev/job"  # label: the job id, label-safe
ATTEMPT = "overcast.dev/attempt"  # label: the attempt number
JOB_ID = "overcast.dev/job-id"  # annotation: the job id exactly as overcast spells it
INDEX = "batch.kubernetes.io/job-completion-index"  # set on pods by the Job controller
GPU = "nvidia.com/gpu"  # the NVIDIA device plugin's extended resource

_NOT_DNS = re.compile(r"[^a-z0-9-]+")
_NOT_LABEL = re.compile(r"[^A-Za-z0-9._-]+")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def job_name(prefix: str, job_id: str, attempt: int) -> str:
    """``<prefix>-<job id>-<attempt>`` as a DNS label; ids that are not DNS-safe or too long get a digest
    (pod hostnames ``<name>-<index>`` must stay within 63 characters)."""
    slug = _NOT_DNS.sub("-", job_id.lower()).strip("-")
    if slug != job_id or len(slug) > 32:
        slug = f"{slug[:23].strip('-')}-{_digest(job_id)}".lstrip("-")
    return f"{prefix}-{slug}-{attempt}"


def label_value(job_id: str) -> str:
    """The job id as a label value (63 characters of [A-Za-z0-9._-], alphanumeric at both ends)."""
    value = _NOT_LABEL.sub("-", job_id).strip("-_.")
    if value != job_id or len(value) > 63:
        value = f"{value[:54].strip('-_.')}-{_digest(job_id)}".lstrip("-_.")
    return value


def owner(cluster: KubeCluster) -> str:
    """The owner label of one backend's Jobs: job prefix, fleet cluster name and ownership scope (the
    overcast home), so two backends sharing a namespace (two fleet entries, a second deployment) never
    list, adopt or delete each other's Jobs."""
    return label_value(".".join(filter(None, (cluster.job_prefix, cluster.name, cluster.scope))))


def selector(owner: str, job_id: str | None = None, attempt: int | None = None) -> str:
    parts = [f"{OWNER}={owner}"]
    if job_id is not None:
        parts.append(f"{JOB}={label_value(job_id)}")
    if attempt is not None:
        parts.append(f"{ATTEMPT}={attempt}")
    return ",".join(parts)


def checkpoint_dir(cluster: KubeCluster, request: LaunchRequest) -> str | None:
    """Where the pods keep checkpoints: the spec's own checkpoint_dir (a URL or a path the pods share),
    else ``<mount_path>/checkpoints/<job>`` on the volume claim; None without either: the loop's default
    is a path on the overcast server, which no pod can reach (the pods then get one on their own disk)."""
    if request.spec.checkpoint_dir:
        return request.spec.checkpoint_dir
    if cluster.volume_claim:
        return f"{cluster.mount_path.rstrip('/')}/checkpoints/{label_value(request.job_id)}"
    return None


def job_env(
    cluster: KubeCluster, request: LaunchRequest, backend_name: str, head_addr: str
) -> dict[str, str]:
    """The job's env and the loop's OVERCAST_* contract (as Slurm's), the head's DNS name and the pods'
    checkpoint dir; never overcast's own credentials."""
    env = contract_env(request, backend_name)
    env["OVERCAST_HEAD_ADDR"] = head_addr
    env.pop("OVERCAST_CHECKPOINT_DIR", None)
    ckpt = checkpoint_dir(cluster, request)
    if ckpt is not None:
        env["OVERCAST_CHECKPOINT_DIR"] = ckpt
    return {k: v for k, v in env.items() if k not in SERVER_SECRETS}


def node_script(request: LaunchRequest) -> str:
    """The container's command. Bash runs as PID 1 in a container, where SIGTERM has no default action:
    the trap forwards the kubelet's SIGTERM to the job's whole process group (``set -m`` gives the job
    one of its own, as the local backend does), so every process of a ``run`` of several commands gets
    it and can save a checkpoint within the grace. Without a shared checkpoint dir the pod gets one on
    its own disk (lost with the pod)."""
    spec = request.spec
    lines = [
        'export OVERCAST_NODE_RANK="${JOB_COMPLETION_INDEX:-0}"',
        'if [ -z "${OVERCAST_CHECKPOINT_DIR:-}" ]; then',
        '  export OVERCAST_CHECKPOINT_DIR="${TMPDIR:-/tmp}/overcast-checkpoints"',
        '  mkdir -p "$OVERCAST_CHECKPOINT_DIR"',
        "fi",
    ]
    if spec.workdir:
        lines.append(f"cd {shlex.quote(spec.workdir)} || exit 1")
    if spec.setup:
        lines.append(
            f'bash -c {shlex.quote(spec.setup)} || {{ echo "overcast: setup failed ($?)" >&2; exit 1; }}'
        )
    lines += [
        "trap 'stopping=1; kill -TERM -- -\"$child\" 2>/dev/null' TERM INT",
        "set -m  # the job in a process group of its own; +m right after (no job notices)",
        f"bash -c {shlex.quote(spec.run or 'true')} &",
        "child=$!",
        "set +m",
        'wait "$child"; rc=$?',
        'if [ -n "${stopping:-}" ]; then  # PID 1 must outlive the group: its exit kills every process',
        '  while kill -0 -- -"$child" 2>/dev/null; do sleep 0.1; done',
        '  wait "$child"; rc=$?',
        "fi",
        'exit "$rc"',
    ]
    return "\n".join(lines) + "\n"


def labels(cluster: KubeCluster, request: LaunchRequest) -> dict[str, str]:
    return {
        OWNER: owner(cluster),
        JOB: label_value(request.job_id),
        ATTEMPT: str(request.attempt),
        "app.kubernetes.io/managed-by": "overcast",
    }


def job_manifest(
    cluster: KubeCluster, request: LaunchRequest, name: str, gpus: int, backend_name: str
) -> dict[str, Any]:
    head = f"{name}-0.{name}.{cluster.namespace}.svc"
    env = job_env(cluster, request, backend_name, head)
    container: dict[str, Any] = {
        "name": "node",
        "image": cluster.image,
        "command": ["bash", "-c", node_script(request)],
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
    }
    if gpus:
        container["resources"] = {"limits": {GPU: str(gpus)}, "requests": {GPU: str(gpus)}}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",  # a failed pod fails the gang; overcast decides where it runs next
        "subdomain": name,
        "terminationGracePeriodSeconds": cluster.termination_grace_s,
        "containers": [container],
        # No API token in the pods unless a service account is named for them: the job never gets
        # overcast's (or the namespace default's) credentials by accident.
        "automountServiceAccountToken": cluster.service_account is not None,
    }
    if cluster.service_account:
        pod_spec["serviceAccountName"] = cluster.service_account
    if cluster.node_selector:
        pod_spec["nodeSelector"] = dict(cluster.node_selector)
    if cluster.volume_claim:
        pod_spec["volumes"] = [
            {"name": "shared", "persistentVolumeClaim": {"claimName": cluster.volume_claim}}
        ]
        container["volumeMounts"] = [{"name": "shared", "mountPath": cluster.mount_path}]
    meta_labels = labels(cluster, request)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": meta_labels, "annotations": {JOB_ID: request.job_id}},
        "spec": {
            "completionMode": "Indexed",
            "completions": request.num_nodes,
            "parallelism": request.num_nodes,
            "backoffLimit": 0,
            "podFailurePolicy": {
                "rules": [
                    {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
                ]
            },
            "template": {"metadata": {"labels": meta_labels}, "spec": pod_spec},
        },
    }


def service_manifest(cluster: KubeCluster, request: LaunchRequest, name: str, job_uid: str) -> dict[str, Any]:
    """Headless, owned by the Job: deleting the Job deletes it (garbage collection)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "labels": labels(cluster, request),
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": name,
                    "uid": job_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {"clusterIP": "None", "selector": {"job-name": name}, "publishNotReadyAddresses": True},
    }
