"""GPU check: a real PyTorch training job launched, checkpointed, preempted, moved and resumed through
overcast, on whatever GPU this machine has (CPU when it has none: the same path, slower).

The job (examples/train/train_torch.py, a small transformer LM, data parallel over `--nodes` ranks that
all-reduce gradients) runs under the real control loop and the local backend (real processes, the GPU
given as CUDA_VISIBLE_DEVICES), on two local providers: azure-local (cheaper) and oci-local. Mid-run:
  1. a spot-style preemption of one rank (SIGTERM, then SIGKILL after a notice): the ranks agree to
     stop, rank 0 saves, the job is requeued and resumes at exactly that step;
  2. the provider it then runs on goes down (every process SIGKILLed, no notice): the job moves to the
     other provider and resumes from its last periodic checkpoint.
The final RESULT line (held-out loss and a hash of every parameter) must equal that of an uninterrupted
run of the same trainer started directly, without overcast, on the same device.

    python bench/gpu_train.py [--nodes 2] [--steps 600] [--json bench/results/gpu_train.json]

Exit status 0 only if the job succeeded, resumed twice and matched the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from overcast.backends.local import LocalBackend, LocalCluster
from overcast.control.loop import ControlLoop
from overcast.spec.models import AcceleratorRequest, JobSpec, Resources
from overcast.store import JobState, Store

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "examples" / "train" / "train_torch.py"
sys.path.insert(0, str(TRAIN.parent))
from train_torch import checkpoint_step  # noqa: E402  (the trainer's own reader of its checkpoint file)


def trainer_args(args: argparse.Namespace, step_seconds: float) -> list[str]:
    return ["--steps", str(args.steps), "--checkpoint-every", str(args.checkpoint_every),
            "--step-seconds", str(step_seconds), "--width", str(args.width), "--layers", str(args.layers),
            "--batch", str(args.batch)]  # fmt: skip


def result_of(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("RESULT")]


def reference(args: argparse.Namespace, scratch: Path) -> tuple[str, float]:
    """The uninterrupted run: the same trainer, one process per rank, started directly."""
    base = os.environ | {
        "OVERCAST_JOB_ID": "reference", "OVERCAST_ATTEMPT": "0",
        "OVERCAST_NUM_NODES": str(args.nodes), "OVERCAST_HEAD_ADDR": "127.0.0.1",
    }  # fmt: skip
    cmd = [sys.executable, str(TRAIN), *trainer_args(args, 0.0), "--checkpoint-dir", str(scratch)]
    start = time.monotonic()
    procs = [
        subprocess.Popen(cmd, env=base | {"OVERCAST_NODE_RANK": str(rank)}, stdout=subprocess.PIPE, text=True)
        for rank in range(args.nodes)
    ]
    outs = [proc.communicate(timeout=args.timeout)[0] for proc in procs]
    seconds = time.monotonic() - start
    if any(proc.returncode for proc in procs):
        sys.exit(f"reference run failed: {[proc.returncode for proc in procs]}\n{outs}")
    results = sorted({line for out in outs for line in result_of(out.splitlines())})
    if len(results) != 1:
        sys.exit(f"reference ranks disagree: {results}")
    return results[0], seconds


def run_through_overcast(args: argparse.Namespace, home: Path) -> dict:
    store = Store(f"sqlite:///{home / 'overcast.db'}")
    clusters = (
        LocalCluster("azure-local", nodes=args.nodes, gpus_per_node=1, price_per_node_hour=2.0),
        LocalCluster("oci-local", nodes=args.nodes, gpus_per_node=1, price_per_node_hour=3.0),
    )
    backends = {f"local/{c.name}": LocalBackend(c, home=home) for c in clusters}
    loop = ControlLoop(store, list(backends.values()), home=home, grace_seconds=10.0)
    run = " ".join([sys.executable, str(TRAIN), *trainer_args(args, args.step_seconds)])
    spec = JobSpec(
        name="gpu-train", run=run, num_nodes=args.nodes, max_restarts=5,
        resources=Resources(accelerators=(AcceleratorRequest(name="H100", count=1),)),
    )  # fmt: skip
    job = store.submit("default", spec)
    ckpt = home / "checkpoints" / job.id / "checkpoint.pt"
    chaos: list[dict] = []
    ran: list[dict] = []
    start = time.monotonic()
    try:
        while time.monotonic() - start < args.timeout:
            loop.tick()
            now = store.get(job.id)
            assert now is not None
            if now.state.terminal:
                break
            if now.state is JobState.RUNNING:
                if not ran or ran[-1]["attempt"] != now.attempt:
                    ran.append({"attempt": now.attempt, "pool": now.pool_id})
                step = checkpoint_step(ckpt) if ckpt.exists() else -1
                if not chaos and step >= args.steps // 4:
                    backends[now.pool_id].preempt(job.id, rank=args.nodes - 1, notice_seconds=5.0)
                    chaos.append({"what": "preempt one rank (SIGTERM, 5 s notice)", "pool": now.pool_id,
                                  "attempt": now.attempt, "checkpoint_step": step})  # fmt: skip
                elif len(chaos) == 1 and now.attempt > chaos[0]["attempt"] and step >= args.steps // 2:
                    backends[now.pool_id].set_down(True)
                    chaos.append({"what": "provider down (SIGKILL, no notice)", "pool": now.pool_id,
                                  "attempt": now.attempt, "checkpoint_step": step})  # fmt: skip
            time.sleep(0.1)
        else:
            raise TimeoutError(f"the job did not finish within {args.timeout:.0f}s")
    finally:  # never leave trainers running on the GPU
        for backend in backends.values():
            for job_id, attempt in backend.active():
                backend.stop(job_id, attempt, 1.0)
    final = store.get(job.id)
    assert final is not None
    attempts = []
    for attempt_dir in sorted((home / "logs" / job.id).iterdir(), key=lambda p: int(p.name)):
        lines = [ln for log in sorted(attempt_dir.glob("node-*.log")) for ln in log.read_text().splitlines()]
        attempts.append({
            "attempt": int(attempt_dir.name),
            "device": next((ln.split("device=")[1].split(" CUDA")[0] for ln in lines if "device=" in ln), ""),
            "resumed": next((ln for ln in lines if ln.startswith("resumed from")), None),
            "stopped": next((ln for ln in lines if ln.startswith("SIGTERM")), None),
            "timing": next((ln for ln in lines if ln.startswith("steps ")), None),
            "results": result_of(lines),
        })  # fmt: skip
    return {
        "job": job.id, "state": final.state.value, "restarts": final.restarts, "pool": final.pool_id,
        "ran_on": ran, "chaos": chaos, "attempts": attempts, "seconds": time.monotonic() - start,
        "events": [f"{e.kind}: {e.detail}" for e in store.events(job_id=job.id)],
    }  # fmt: skip


def gpu_info() -> dict:
    info = {"torch": torch.__version__, "cuda": torch.cuda.is_available(), "python": sys.version.split()[0]}
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
        smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
        info["nvidia_smi"] = smi.stdout.strip()
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--checkpoint-every", type=int, default=25)
    parser.add_argument("--step-seconds", type=float, default=0.02, help="pace, so the chaos lands mid-run")
    parser.add_argument("--width", type=int, default=512, help="model width (a small CPU check: 32)")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--batch", type=int, default=64, help="sequences per rank per step")
    parser.add_argument("--timeout", type=float, default=400.0)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "gpu_train.json")
    args = parser.parse_args()
    info = gpu_info()
    print(f"torch {info['torch']}, device: {info.get('device', 'cpu (no CUDA)')}", flush=True)
    with tempfile.TemporaryDirectory(prefix="overcast-gpu-") as tmp:
        ref, ref_seconds = reference(args, Path(tmp) / "reference")
        print(f"reference (uninterrupted, {ref_seconds:.1f}s): {ref}", flush=True)
        got = run_through_overcast(args, Path(tmp) / "home")
    last = got["attempts"][-1]["results"] if got["attempts"] else []
    same = len(last) == args.nodes and all(line == ref for line in last)
    resumed = [a["resumed"] for a in got["attempts"] if a["resumed"]]
    ok = got["state"] == JobState.SUCCEEDED.value and same and len(resumed) >= 2
    print(f"\n{'attempt':>7}  {'pool':<18} {'device':<24} {'resumed':<36} stopped / result")
    for a, r in zip(got["attempts"], got["ran_on"], strict=False):
        tail = a["stopped"] or (a["results"][0] if a["results"] else "killed (provider down)")
        print(f"{a['attempt']:>7}  {r['pool']:<18} {a['device'] or '-':<24} {a['resumed'] or '-':<36} {tail}")
    for c in got["chaos"]:
        step = c["checkpoint_step"]
        print(f"chaos: {c['what']} on {c['pool']} (attempt {c['attempt']}, checkpoint at step {step})")
    print(f"\njob {got['state']} after {got['restarts']} restarts in {got['seconds']:.1f}s; "
          f"same result as the uninterrupted run: {same}")  # fmt: skip
    record = {"ok": ok, "same_result": same, "reference": ref, "reference_seconds": ref_seconds,
              "env": info, "args": vars(args) | {"json": str(args.json)}, "run": got,
              "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
