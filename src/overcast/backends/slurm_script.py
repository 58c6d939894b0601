"""What one attempt submits to a Slurm cluster: sbatch options, its environment, a batch script and a
per-node wrapper.

The batch script runs on the first node of the allocation. It finds the head address and starts one task
per node with ``srun``; each task runs ``node.sh``, which turns Slurm's per-node variables into the
OVERCAST_* contract (OVERCAST_NODE_RANK from SLURM_NODEID; CUDA_VISIBLE_DEVICES comes from Slurm's GRES),
writes its own log and runs the job's setup and run commands. The attempt directory must be on a file
system the nodes share with the submitting host (as Slurm's home directories usually are).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from overcast.backends.base import CapacityError, LaunchRequest
from overcast.backends.slurm_config import SlurmCluster
from overcast.spec.models import JobSpec


def gpus_per_node(request: LaunchRequest) -> int:
    """GPUs per node the job asks for on this pool's accelerator; 0 for a CPU-only job."""
    wanted = request.spec.resources.accelerators
    if not wanted or not request.pool.gpus_per_node:
        return 0
    for alt in wanted:
        if alt.name.upper() == request.pool.accelerator.upper():
            return alt.count
    raise CapacityError(
        f"pool {request.pool.id} has {request.pool.accelerator} GPUs; the job asks for "
        + " or ".join(str(a) for a in wanted)
    )


def sbatch_args(
    cluster: SlurmCluster, request: LaunchRequest, attempt_dir: Path, job_name: str, gres_type: str
) -> list[str]:
    """The whole gang as one job of whole nodes, one task per node."""
    args = [
        f"--job-name={job_name}",
        f"--comment=overcast job={request.job_id} attempt={request.attempt}",
        f"--nodes={request.num_nodes}",
        "--ntasks-per-node=1",
        "--exclusive",
        f"--chdir={attempt_dir}",
        f"--output={attempt_dir}/batch.log",
        "--requeue" if cluster.requeue else "--no-requeue",
    ]
    if request.pool.labels.get("partition"):
        args.append(f"--partition={request.pool.labels['partition']}")
    count = gpus_per_node(request)
    if count:
        args.append(f"--gres=gpu:{gres_type}:{count}" if gres_type else f"--gres=gpu:{count}")
    if cluster.time_limit_minutes:
        args.append(f"--time={cluster.time_limit_minutes}")
    return args


def job_env(request: LaunchRequest, backend_name: str) -> dict[str, str]:
    """The job's env, then the loop's OVERCAST_* contract (filled in here if a caller left it out)."""
    env = dict(request.spec.env)
    env.update(request.env)
    env.setdefault("OVERCAST_JOB_ID", request.job_id)
    env.setdefault("OVERCAST_ATTEMPT", str(request.attempt))
    env.setdefault("OVERCAST_NUM_NODES", str(request.num_nodes))
    if request.spec.checkpoint_dir:
        env.setdefault("OVERCAST_CHECKPOINT_DIR", request.spec.checkpoint_dir)
    env["OVERCAST_PROVIDER"] = backend_name
    return env


def _exports(env: dict[str, str]) -> str:
    lines = []
    for key, value in sorted(env.items()):
        if not key.isidentifier():
            raise ValueError(f"environment variable name {key!r} is not a valid shell name")
        lines.append(f"export {key}={shlex.quote(value)}")
    return "\n".join(lines)


def batch_script(attempt_dir: Path, env: dict[str, str]) -> str:
    d = shlex.quote(str(attempt_dir))
    return f"""#!/bin/bash
# overcast: one attempt of a job; generated, do not edit.
{_exports(env)}
# The head address: the first node of the allocation, as its NodeAddr (the node name on most clusters).
head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
addr=$(scontrol show node -o "$head" 2>/dev/null | sed -n 's/.* NodeAddr=\\([^ ]*\\).*/\\1/p')
export OVERCAST_HEAD_ADDR=${{addr:-$head}}
export OVERCAST_NUM_NODES=${{OVERCAST_NUM_NODES:-$SLURM_JOB_NUM_NODES}}
# One task per node; if one node's task fails, the others are stopped (a gang lives or dies together).
exec srun --ntasks-per-node=1 --kill-on-bad-exit=1 --export=ALL bash {d}/node.sh
"""


def node_script(attempt_dir: Path, spec: JobSpec, log_dir: Path) -> str:
    d = shlex.quote(str(attempt_dir))
    logs = shlex.quote(str(log_dir))
    workdir = f"cd {shlex.quote(spec.workdir)} || exit 1" if spec.workdir else ""
    setup = (
        f'bash {d}/setup.sh || {{ echo "overcast: setup failed ($?)" >&2; exit 1; }}' if spec.setup else ""
    )
    return f"""#!/bin/bash
# overcast: per-node wrapper; generated, do not edit.
export OVERCAST_NODE_RANK=$SLURM_NODEID
exec >{logs}/node-$SLURM_NODEID.log 2>&1
{workdir}
{setup}
exec bash {d}/run.sh
"""


def write_attempt(attempt_dir: Path, spec: JobSpec, env: dict[str, str], log_dir: Path) -> Path:
    """Write batch.sh, node.sh, setup.sh and run.sh under attempt_dir (node-<rank>.log files will be in
    log_dir); return batch.sh."""
    attempt_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "batch.sh": batch_script(attempt_dir, env),
        "node.sh": node_script(attempt_dir, spec, log_dir),
        "setup.sh": (spec.setup or "") + "\n",
        "run.sh": (spec.run or "true") + "\n",
    }
    for name, text in files.items():
        path = attempt_dir / name
        path.write_text(text)
        path.chmod(0o755)
    return attempt_dir / "batch.sh"
