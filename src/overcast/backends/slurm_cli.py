"""The Slurm commands overcast uses, each call bounded by a timeout.

Debian 12 ships Slurm 22.05: ``squeue --json`` and ``sinfo --json`` work (OpenAPI v0.0.38 JSON), but
``scontrol --json`` does not exist, and ``squeue --json`` ignores ``-j``/``-u`` filters. A command against a
cluster whose slurmctld is gone retries for a few seconds and then fails; ``squeue --json`` even exits 0 with
the failure in its ``errors`` list. Both cases become :class:`SlurmUnreachable`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from overcast.backends.base import inherited_environ

# Messages Slurm prints when it cannot reach slurmctld at all (as opposed to rejecting a request).
_UNREACHABLE = (
    "unable to contact slurm controller",
    "connect failure",
    "connection refused",
    "socket timed out",
    "zero bytes were transmitted or received",
    "communication connection failure",
)


class SlurmError(Exception):
    """slurmctld answered and refused the request (bad partition, impossible node configuration...)."""


class SlurmUnreachable(Exception):
    """slurmctld did not answer in time, or the command could not talk to it at all."""


@dataclass(frozen=True, slots=True)
class SlurmCommands:
    """Runs Slurm's client commands against one cluster (its slurm.conf), with a timeout per call."""

    conf: str | None = None  # path to the cluster's slurm.conf; None: the environment's default
    timeout_s: float = 10.0
    bin_dir: str | None = None  # where sbatch & co live; None: PATH

    def run(self, *args: str, stdin: str | None = None) -> str:
        env = inherited_environ()  # sbatch exports it all to the job: never overcast's secrets
        if self.conf:
            env["SLURM_CONF"] = self.conf
        if args[0] in _STAMPING:  # not sbatch's: the job inherits its environment
            env["SLURM_TIME_FORMAT"] = "%s"  # epoch seconds: local time repeats an hour at DST's end
        cmd = [os.path.join(self.bin_dir, args[0]) if self.bin_dir else args[0], *args[1:]]
        try:
            proc = subprocess.run(
                cmd, input=stdin, capture_output=True, text=True, env=env, timeout=self.timeout_s, check=False
            )
        except subprocess.TimeoutExpired as e:
            raise SlurmUnreachable(f"{args[0]} did not answer within {self.timeout_s:g}s") from e
        except FileNotFoundError as e:
            raise SlurmUnreachable(f"{cmd[0]} not found: is Slurm installed on this machine?") from e
        if proc.returncode != 0:
            message = (proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}")[-500:]
            if any(m in message.lower() for m in _UNREACHABLE):
                raise SlurmUnreachable(f"{args[0]}: {message}")
            raise SlurmError(f"{args[0]}: {message}")
        return proc.stdout

    def _json(self, *args: str, key: str) -> list[dict[str, Any]]:
        """A read-only query. Any failure to read means we cannot see the cluster: SlurmUnreachable
        (after a slurmctld dies, squeue sometimes reports only "Failed while looking for jobs")."""
        try:
            out = self.run(*args, "--json")
        except SlurmError as e:
            raise SlurmUnreachable(str(e)) from e
        try:
            data = json.loads(out)
        except json.JSONDecodeError as e:
            raise SlurmUnreachable(f"{args[0]} --json printed no JSON: {out[:200]!r}") from e
        errors = data.get("errors") or []
        if errors:
            text = "; ".join(str(e.get("description") or e.get("error") or e) for e in errors)
            raise SlurmUnreachable(f"{args[0]}: {text}")
        return list(data.get(key) or [])

    def squeue(self) -> list[dict[str, Any]]:
        """Every job slurmctld still knows, finished ones included (until MinJobAge)."""
        return self._json("squeue", key="jobs")

    def squeue_text(self) -> list[dict[str, Any]]:
        """The same records as ``squeue()`` (the fields the backend reads) from ``squeue -O``: about 8x
        cheaper than ``--json`` for a long queue. The name comes last, so it may contain the separator."""
        try:
            out = self.run("squeue", "--noheader", "--states=all", f"--Format={_TEXT_FORMAT}")
        except SlurmError as e:
            raise SlurmUnreachable(str(e)) from e
        jobs = []
        for line in out.splitlines():
            parts = line.split("|", len(_TEXT_FIELDS) - 1)
            if len(parts) != len(_TEXT_FIELDS) or not parts[0].strip().isdigit():
                continue
            job: dict[str, Any] = dict(zip(_TEXT_FIELDS, (p.strip() for p in parts), strict=True))
            job["job_id"] = int(job["job_id"])
            for key in ("exit_code", "restart_cnt"):
                job[key] = int(job[key]) if job[key].lstrip("-").isdigit() else 0
            job["submit_time"] = _epoch(job["submit_time"])
            job["end_time"] = _epoch(job["end_time"])  # an ended job's real end (a live one's: its limit)
            job["name"] = parts[-1].rstrip("\n")  # untouched: names may have spaces
            jobs.append(job)
        return jobs

    def sinfo_nodes(self) -> list[dict[str, Any]]:
        return self._json("sinfo", key="nodes")

    def sbatch(self, script_path: str, args: list[str]) -> int:
        out = self.run("sbatch", "--parsable", *args, script_path).strip()
        job_id = out.split(";", 1)[0]  # --parsable prints "id" or "id;cluster"
        if not job_id.isdigit():
            raise SlurmError(f"sbatch printed {out!r}, expected a job id")
        return int(job_id)

    def scancel(self, job_ids: list[int], signal: str | None = None, full: bool = False) -> None:
        if not job_ids:
            return
        args = ["scancel"]
        if signal:
            args.append(f"--signal={signal}")
        if full:
            args.append("--full")
        self.run(*args, *map(str, job_ids))

    def sacct(self, job_ids: list[int]) -> dict[int, dict[str, Any]]:
        """Accounting's records (slurmdbd) of jobs, by Slurm job id, with the fields of ``squeue()`` the
        backend reads of an end: for jobs slurmctld already forgot. SlurmError without accounting."""
        ids = ",".join(map(str, job_ids))
        out = self.run("sacct", "-X", "-n", "-P", "-o", "JobID,State,End,ExitCode", "-j", ids)
        found: dict[int, dict[str, Any]] = {}
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) != 4 or not parts[0].isdigit():
                continue
            code, _, sig = parts[3].partition(":")  # "exit code:signal"
            exit_code: dict[str, Any] = {"return_code": int(code) if code.isdigit() else 0}
            exit_code["signal"] = {"id": int(sig) if sig.isdigit() else 0}
            record = {"job_state": parts[1], "end_time": _epoch(parts[2]), "exit_code": exit_code}
            found[int(parts[0])] = record
        return found

    def _job(self, job_id: int, fields: str) -> str | None:
        """``squeue -o fields`` of one job (cheaper than the whole queue); None once slurmctld forgot it."""
        try:
            out = self.run("squeue", "-h", "-t", "all", "-j", str(job_id), "-o", fields)
        except SlurmError as e:
            if "invalid job id" in str(e).lower():
                return None
            raise
        return out.strip() or None

    def job_state(self, job_id: int) -> str | None:
        """One job's state; None once slurmctld forgot it."""
        return self._job(job_id, "%T")

    def node_address(self, job_id: int) -> str | None:
        """The NodeAddr of a running job's first node (its name where the node has no NodeAddr); None
        while it waits for nodes, while they boot (CONFIGURING: a powering-up node's NodeAddr can be a
        placeholder, and a service asks only until it has one), once it ended, or once slurmctld forgot it."""
        state, _, nodes = (self._job(job_id, "%T|%N") or "").partition("|")
        if state != "RUNNING" or not nodes or nodes == "(null)":
            return None
        head = nodes
        if "[" in nodes or "," in nodes:  # a node list: the first host, as the batch script finds it
            head = self.run("scontrol", "show", "hostnames", nodes).split()[0]
        node = self.run("scontrol", "show", "node", "-o", head)
        addr = re.search(r"(?:^|\s)NodeAddr=(\S+)", node)
        return addr.group(1) if addr else head


_TEXT_FIELDS = (
    "job_id",
    "job_state",
    "state_reason",
    "exit_code",
    "restart_cnt",
    "submit_time",
    "end_time",
    "nodes",
    "name",
)
_TEXT_FORMAT = "JobID:|,State:|,Reason:|,exit_code:|,RestartCnt:|,SubmitTime:|,EndTime:|,NodeList:|,Name:"


_STAMPING = ("squeue", "sacct")  # the commands whose time stamps overcast reads


def _epoch(stamp: str) -> float:
    """Slurm's time stamp as epoch seconds (it prints them so under SLURM_TIME_FORMAT=%s); 0 when
    absent ("Unknown", "N/A"). A local ``2026-11-26T08:17:47`` (a Slurm that ignored the format) is
    read as local time, ambiguous in the hour DST's end repeats."""
    stamp = stamp.strip()
    if stamp.isdigit():
        return float(stamp)
    try:
        return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return 0.0


def decode_exit_status(status: int | dict[str, Any] | None) -> int | None:
    """Slurm reports the raw wait status (768 = exit 3, 9 = SIGKILL); return a shell-style exit code."""
    if isinstance(status, dict):  # Slurm 23.02+: {"status": [...], "return_code": n, "signal": {...}}
        signal_id = (status.get("signal") or {}).get("id") or 0
        return 128 + int(signal_id) if signal_id else int(status.get("return_code") or 0)
    if status is None:
        return None
    signal = status & 0x7F
    return 128 + signal if signal else (status >> 8) & 0xFF
