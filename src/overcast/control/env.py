"""The job contract: the OVERCAST_* variables every attempt of a job sees (see DESIGN.md).

The backend adds what depends on the node: OVERCAST_NODE_RANK, OVERCAST_HEAD_ADDR, CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

from pathlib import Path

from overcast.spec.models import JobSpec


def checkpoint_dir(job_id: str, spec: JobSpec, home: Path) -> str:
    """The spec's checkpoint_dir, else $OVERCAST_HOME/checkpoints/<job>: the same for every attempt."""
    if spec.checkpoint_dir:
        return spec.checkpoint_dir
    return str(home / "checkpoints" / job_id)


def job_env(job_id: str, attempt: int, num_nodes: int, spec: JobSpec, home: Path) -> dict[str, str]:
    ckpt = checkpoint_dir(job_id, spec, home)
    if "://" not in ckpt:  # a local path: make sure it exists; fsspec URLs are the job's business
        Path(ckpt).expanduser().mkdir(parents=True, exist_ok=True)
    return {
        "OVERCAST_JOB_ID": job_id,
        "OVERCAST_CHECKPOINT_DIR": ckpt,
        "OVERCAST_ATTEMPT": str(attempt),
        "OVERCAST_NUM_NODES": str(num_nodes),
    }
