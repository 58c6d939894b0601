"""Settings of one Slurm cluster overcast may use, and how a fleet file's ``slurm:`` cluster maps to them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from overcast.catalog.fleet import Cluster as FleetCluster

SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")  # characters not allowed in names used as path parts


@dataclass(frozen=True, slots=True)
class SlurmCluster:
    """One Slurm cluster overcast may use: its own provider name and internal cost."""

    name: str  # e.g. "oci-hpc"; the backend is "slurm:<name>"
    conf: str | None = None  # its slurm.conf (SLURM_CONF); None: the machine's default cluster
    provider: str | None = None  # provider name in pools and accounting; default: name
    region: str | None = None  # default: name
    price_per_node_hour: float = 0.0  # internal cost of a node-hour (what accounting charges)
    work_dir: str = "~/.overcast/slurm"  # job scripts (and logs); must be shared with the nodes
    logs_dir: str | None = None  # node logs as <logs_dir>/<job>/<attempt>/node-<rank>.log (the API's
    # layout under $OVERCAST_HOME/logs); None: next to the attempt's scripts
    partitions: tuple[str, ...] = ()  # partitions overcast may use; empty: all
    accelerator_names: dict[str, str] = field(default_factory=dict)  # GRES type -> catalog name
    time_limit_minutes: int | None = None  # sbatch --time; None: the partition's default
    requeue: bool = False  # let Slurm requeue in place on node failure (else overcast relaunches)
    job_prefix: str = "ovc"  # job-name prefix: separates overcast's jobs from everyone else's
    queue_query: str = "text"  # "text": squeue -O (~5x cheaper with 1,000 jobs); "json": squeue --json
    command_timeout_s: float = 10.0
    down_retry_s: float = 5.0  # after a failed call, treat the cluster as down this long
    lost_after_s: float = 60.0  # unreachable this long: its jobs are lost (PROVIDER_DOWN), run elsewhere
    pending_timeout_s: float | None = 600.0  # give up (CAPACITY_ERROR) on a job waiting this long

    def __post_init__(self) -> None:
        if not self.name or SAFE_NAME.search(self.name):
            raise ValueError(f"Slurm cluster name {self.name!r}: use letters, digits, '_', '.', '-'")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.job_prefix):
            raise ValueError(f"job_prefix {self.job_prefix!r}: use letters, digits, '_', '-'")
        if self.queue_query not in ("json", "text"):
            raise ValueError(f"cluster {self.name}: queue_query must be 'json' or 'text'")
        if self.price_per_node_hour < 0:
            raise ValueError(f"cluster {self.name}: price_per_node_hour must be >= 0")


def slurm_cluster_from_fleet(cluster: FleetCluster, home: Path) -> SlurmCluster:
    """A fleet file's ``slurm:`` cluster as the backend's settings; scripts under $OVERCAST_HOME/slurm,
    node logs where the API serves them ($OVERCAST_HOME/logs/<job>/<attempt>/node-<rank>.log)."""
    if cluster.slurm is None:
        raise ValueError(f"cluster {cluster.name} is not a Slurm cluster")
    names = {cluster.accelerator.lower(): cluster.accelerator} if cluster.accelerator else {}
    return SlurmCluster(
        name=cluster.name,
        conf=str(cluster.slurm.conf) if cluster.slurm.conf else None,
        provider=cluster.provider,
        region=cluster.region,
        price_per_node_hour=cluster.node_price,
        work_dir=str(home / "slurm"),
        logs_dir=str(home / "logs"),
        partitions=(cluster.slurm.partition,) if cluster.slurm.partition else (),
        accelerator_names=names,
    )
