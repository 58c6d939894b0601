"""A tiny checkpointing trainer for overcast's managed jobs (CPU, numpy only).

Linear regression by minibatch SGD with a fixed seed. The minibatch of step ``s`` is drawn from a
generator seeded by ``(seed, s)``, so a run resumed from a checkpoint takes exactly the same steps as an
uninterrupted one and prints the same final result.

It follows overcast's job contract:
  OVERCAST_CHECKPOINT_DIR  where checkpoints go (a local path); resumed from at start
  OVERCAST_NODE_RANK       rank 0 writes checkpoints; other ranks replay the same deterministic steps
  OVERCAST_NUM_NODES, OVERCAST_HEAD_ADDR, OVERCAST_ATTEMPT, OVERCAST_JOB_ID  printed for the log
SIGTERM (preemption notice, cancel): rank 0 saves a checkpoint, then every rank exits with 143.

Multi-node is kept simple on purpose: every rank computes the full update (replicated data parallelism
needs no network here); only rank 0 writes. A real trainer would all-reduce gradients through the head.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

FEATURES = 16
SAMPLES = 4096


def make_data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(SAMPLES, FEATURES))
    true_w = rng.normal(size=FEATURES)
    y = x @ true_w + 0.1 * rng.normal(size=SAMPLES)
    return x, y


def load_checkpoint(ckpt_dir: Path) -> tuple[int, np.ndarray] | None:
    path = ckpt_dir / "checkpoint.npz"
    if not path.exists():
        return None
    with np.load(path) as data:
        return int(data["step"]), data["w"].copy()


def save_checkpoint(ckpt_dir: Path, step: int, w: np.ndarray) -> None:
    """Atomic: write a temporary file, fsync, rename. A reader sees the old or the new file, never half."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_dir / f".checkpoint.{os.getpid()}.tmp.npz"
    with open(tmp, "wb") as fh:
        np.savez(fh, step=step, w=w)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, ckpt_dir / "checkpoint.npz")


def result_line(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> str:
    loss = float(np.mean((x @ w - y) ** 2))
    digest = hashlib.sha256(w.tobytes()).hexdigest()[:16]
    return f"RESULT loss={loss:.10f} weights_sha256={digest}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--checkpoint-every", type=int, default=20)
    parser.add_argument("--step-seconds", type=float, default=0.02, help="sleep per step (simulated work)")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-dir", default=os.environ.get("OVERCAST_CHECKPOINT_DIR"))
    args = parser.parse_args()
    if not args.checkpoint_dir:
        print("error: set OVERCAST_CHECKPOINT_DIR or pass --checkpoint-dir", file=sys.stderr)
        return 2
    ckpt_dir = Path(args.checkpoint_dir)
    rank = int(os.environ.get("OVERCAST_NODE_RANK", "0"))
    env = os.environ.get
    print(
        f"job={env('OVERCAST_JOB_ID', '-')} attempt={env('OVERCAST_ATTEMPT', '-')} "
        f"rank={rank}/{env('OVERCAST_NUM_NODES', '1')} head={env('OVERCAST_HEAD_ADDR', '-')} "
        f"gpus={env('CUDA_VISIBLE_DEVICES', '')}",
        flush=True,
    )
    x, y = make_data(args.seed)
    step, w = 0, np.zeros(FEATURES)
    found = load_checkpoint(ckpt_dir)
    if found is not None:
        step, w = found
        print(f"resumed from checkpoint at step {step}", flush=True)

    stop = False

    def on_sigterm(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_sigterm)
    while step < args.steps:
        if stop:
            if rank == 0:
                save_checkpoint(ckpt_dir, step, w)
            print(f"SIGTERM: saved at step {step}, exiting", flush=True)
            return 143
        batch = np.random.default_rng((args.seed, step)).integers(0, SAMPLES, size=args.batch)
        xb, yb = x[batch], y[batch]
        w = w - args.lr * (2.0 / args.batch) * xb.T @ (xb @ w - yb)
        step += 1
        if rank == 0 and step % args.checkpoint_every == 0:
            save_checkpoint(ckpt_dir, step, w)
        time.sleep(args.step_seconds)
    if rank == 0:
        save_checkpoint(ckpt_dir, step, w)
    print(result_line(w, x, y), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
