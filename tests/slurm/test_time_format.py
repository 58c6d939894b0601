"""Slurm's time stamps are read as epoch seconds (SLURM_TIME_FORMAT=%s for squeue and sacct): local
time repeats an hour when DST ends, so two different ends would print the same. Stand-in commands
print like Slurm does, with ``date`` in the cluster's zone, honouring SLURM_TIME_FORMAT."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from overcast.backends.slurm_cli import SlurmCommands

ZONE = "America/New_York"
EDT_0130, EST_0130 = 1_793_511_000, 1_793_514_600  # 2026-11-01 01:30 before and after clocks go back


@pytest.fixture
def in_new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process in the cluster's zone too: a local stamp would be read in the right zone."""
    if not Path("/usr/share/zoneinfo", ZONE).exists():
        pytest.skip(f"no {ZONE} zone data on this host")
    monkeypatch.setenv("TZ", ZONE)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _stand_ins(tmp_path: Path) -> SlurmCommands:
    stamp = f'stamp() {{ TZ={ZONE} date -d "@$1" +"${{SLURM_TIME_FORMAT:-%FT%T}}"; }}'
    scripts = {
        "squeue": f'{stamp}\necho "7|COMPLETED|None|0|0|$(stamp {EDT_0130})|$(stamp {EDT_0130})|n01|ovc.7"\n'
        f'echo "8|COMPLETED|None|0|0|$(stamp {EST_0130})|$(stamp {EST_0130})|n02|ovc.8"',
        "sacct": f'{stamp}\necho "7|COMPLETED|$(stamp {EDT_0130})|0:0"\n'
        f'echo "8|COMPLETED|$(stamp {EST_0130})|0:0"',
        "sbatch": f'echo "${{SLURM_TIME_FORMAT-unset}}" > {tmp_path}/sbatch-env\necho 42',
    }
    for name, body in scripts.items():
        path = tmp_path / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(0o755)
    return SlurmCommands(bin_dir=str(tmp_path))


def test_the_repeated_hour_at_dsts_end_gives_two_different_times(tmp_path: Path, in_new_york: None) -> None:
    cli = _stand_ins(tmp_path)
    queue = cli.squeue_text()
    assert [(j["job_id"], j["submit_time"], j["end_time"]) for j in queue] == [
        (7, EDT_0130, EDT_0130),
        (8, EST_0130, EST_0130),
    ]
    accounted = cli.sacct([7, 8])
    assert (accounted[7]["end_time"], accounted[8]["end_time"]) == (EDT_0130, EST_0130)


def test_a_job_does_not_inherit_the_time_format(tmp_path: Path) -> None:
    assert _stand_ins(tmp_path).sbatch("job.sh", []) == 42
    assert (tmp_path / "sbatch-env").read_text().strip() == "unset"  # a job's own squeue prints as usual
