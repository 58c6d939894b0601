"""A real PyTorch trainer for overcast's managed jobs: GPU when there is one, data parallel over nodes.

A small transformer language model learns a synthetic next-token task. Every input the run sees is a
pure function of ``(seed, step, rank)``, cuDNN/cuBLAS run in deterministic mode and the optimizer's
state is checkpointed with the model, so a run resumed from a checkpoint takes exactly the same steps as
an uninterrupted one and prints the same ``RESULT`` line (loss and a hash of every parameter).

Job contract (see DESIGN.md):
  OVERCAST_CHECKPOINT_DIR   checkpoint.pt goes there (atomic: temporary file, fsync, rename); resumed at start
  OVERCAST_NODE_RANK / OVERCAST_NUM_NODES / OVERCAST_HEAD_ADDR
                            with more than one node the ranks form a torch.distributed group (gloo, which
                            also carries CUDA tensors, so several ranks may share one GPU) and all-reduce
                            their gradients every step; the port is derived from job id and attempt so
                            two attempts never meet
  CUDA_VISIBLE_DEVICES      set by the backend; the trainer uses cuda:0 of what it sees
SIGTERM (preemption notice, cancel): every rank finishes its step, rank 0 saves, all exit with 143.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
import time
import zlib
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

VOCAB = 256
CONTEXT = 64


class TinyLM(nn.Module):
    def __init__(self, width: int, layers: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.position = nn.Parameter(torch.zeros(CONTEXT, width))
        layer = nn.TransformerEncoderLayer(width, 4, 4 * width, dropout=0.0, batch_first=True)
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, VOCAB)
        mask = nn.Transformer.generate_square_subsequent_mask(CONTEXT)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(tokens) + self.position
        return self.head(self.body(hidden, mask=self.mask, is_causal=True))


Batch = tuple[torch.Tensor, torch.Tensor]


def batch(seed: int, step: int, rank: int, size: int, device: torch.device) -> Batch:
    """Sequences where token t+1 = (a * token t + b) mod VOCAB, (a, b) per sequence: learnable, and a pure
    function of (seed, step, rank), so a resumed run sees the same data."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step * 131 + rank)
    a = torch.randint(1, 8, (size, 1), generator=gen) * 2 + 1
    b = torch.randint(0, VOCAB, (size, 1), generator=gen)
    start = torch.randint(0, VOCAB, (size, 1), generator=gen)
    seq = [start]
    for _ in range(CONTEXT):
        seq.append((seq[-1] * a + b) % VOCAB)
    tokens = torch.cat(seq, dim=1)
    return tokens[:, :-1].to(device), tokens[:, 1:].to(device)


def save_checkpoint(ckpt_dir: Path, step: int, model: nn.Module, opt: torch.optim.Optimizer) -> None:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_dir / f".checkpoint.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        torch.save({"step": step, "model": model.state_dict(), "opt": opt.state_dict()}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, ckpt_dir / "checkpoint.pt")


def checkpoint_step(path: Path) -> int:
    """The step of a checkpoint file, -1 if there is none (or it is being replaced right now)."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["step"])
    except (OSError, RuntimeError, KeyError, EOFError):
        return -1


@torch.no_grad()
def evaluate(model: nn.Module, seed: int, device: torch.device) -> float:
    """Loss on a held-out batch (step -1): the same on every rank, since every rank holds the same weights."""
    inputs, targets = batch(seed, -1, 0, 256, device)
    return float(nn.functional.cross_entropy(model(inputs).reshape(-1, VOCAB), targets.reshape(-1)))


def params_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for tensor in model.state_dict().values():
        h.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def join_group(rank: int, world: int) -> None:
    if world == 1:
        return
    key = f"{os.environ.get('OVERCAST_JOB_ID', '-')}/{os.environ.get('OVERCAST_ATTEMPT', '0')}"
    port = 20_000 + zlib.crc32(key.encode()) % 20_000
    addr = os.environ.get("OVERCAST_HEAD_ADDR", "127.0.0.1")
    dist.init_process_group("gloo", init_method=f"tcp://{addr}:{port}", rank=rank, world_size=world)


def all_reduce_grads(model: nn.Module, world: int) -> None:
    """Average gradients over ranks in one flat buffer (fixed order: the sum is the same on every rank)."""
    if world == 1:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def agree_to_stop(stop: bool, world: int, device: torch.device) -> bool:
    """Any rank's SIGTERM stops every rank at the same step (else the others hang in all_reduce)."""
    if world == 1:
        return stop
    flag = torch.tensor([1.0 if stop else 0.0], device=device)
    dist.all_reduce(flag)
    return bool(flag.item() > 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--checkpoint-every", type=int, default=25)
    parser.add_argument("--batch", type=int, default=64, help="sequences per rank per step")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step-seconds", type=float, default=0.0, help="extra sleep per step (slow demos)")
    parser.add_argument("--checkpoint-dir", default=os.environ.get("OVERCAST_CHECKPOINT_DIR"))
    args = parser.parse_args()
    if not args.checkpoint_dir:
        print("error: set OVERCAST_CHECKPOINT_DIR or pass --checkpoint-dir", file=sys.stderr)
        return 2
    ckpt_dir = Path(args.checkpoint_dir)
    rank = int(os.environ.get("OVERCAST_NODE_RANK", "0"))
    world = int(os.environ.get("OVERCAST_NUM_NODES", "1"))

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS needs it before use
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"job={os.environ.get('OVERCAST_JOB_ID', '-')} attempt={os.environ.get('OVERCAST_ATTEMPT', '-')} "
        f"rank={rank}/{world} device={name} CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')} "
        f"torch={torch.__version__}",
        flush=True,
    )
    stop = False

    def on_sigterm(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_sigterm)
    join_group(rank, world)

    torch.manual_seed(args.seed)
    model = TinyLM(args.width, args.layers).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    step = 0
    path = ckpt_dir / "checkpoint.pt"
    if path.exists():
        state = torch.load(path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = int(state["step"])
        print(f"resumed from checkpoint at step {step}", flush=True)

    loss_fn = nn.CrossEntropyLoss()
    started = time.monotonic()
    first_step = step
    while step < args.steps:
        if agree_to_stop(stop, world, device):
            if rank == 0:
                save_checkpoint(ckpt_dir, step, model, opt)
            print(f"SIGTERM: saved at step {step}, exiting", flush=True)
            return 143
        inputs, targets = batch(args.seed, step, rank, args.batch, device)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs).reshape(-1, VOCAB), targets.reshape(-1))
        loss.backward()
        all_reduce_grads(model, world)
        opt.step()
        step += 1
        if step % 50 == 0:
            print(f"step {step} loss {loss.item():.4f}", flush=True)
        if rank == 0 and step % args.checkpoint_every == 0:
            save_checkpoint(ckpt_dir, step, model, opt)
        if args.step_seconds:
            time.sleep(args.step_seconds)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.monotonic() - started
    if rank == 0:
        save_checkpoint(ckpt_dir, step, model, opt)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        print(f"steps {step - first_step} in {seconds:.2f}s on {name}, peak GPU memory {peak:.0f} MiB")
    loss = evaluate(model, args.seed, device)
    print(f"RESULT eval_loss={loss:.6f} params_sha256={params_digest(model)}", flush=True)
    if world > 1:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
