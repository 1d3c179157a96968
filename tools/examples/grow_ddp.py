"""Grow a model in the middle of a DistributedDataParallel run (CPU, gloo; or GPUs with nccl).

Every rank builds the same teacher (same seed), trains under DDP on its own shard of the data,
and at step ``--grow-at`` grows it with ``fxgrow.grow_during_training``: the growth plan is
seeded (``seed=``), so every rank computes the same student -- checked by comparing every
parameter with rank 0's -- the optimizer state each rank holds is moved over (for
``--zero``, ZeroRedundancyOptimizer's shards are mapped, gathered and re-partitioned), the
student is wrapped in DDP again and training continues.  With ``--fsdp`` the student continues
under FSDP2 (``fully_shard``) instead.  Run from the repository root:

    .venv/bin/torchrun --standalone --nproc_per_node=2 tools/examples/grow_ddp.py

``--out result.json`` (rank 0) writes what the run checked: parameters identical across ranks
right after growth and after the last step, the loss on rank 0's batch right before and right
after growth, parameter counts."""

from __future__ import annotations

import argparse
import gc
import json
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import fxgrow


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.relu(self.fc1(x)))


class Net(nn.Module):
    def __init__(self, d_in: int = 16, width: int = 32, classes: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(d_in, width)
        self.blocks = nn.Sequential(Block(width), Block(width))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(F.relu(self.embed(x))))


def batch(step: int, rank: int, size: int = 32, d_in: int = 16) -> tuple:
    """Each rank's own batch for a step (deterministic)."""
    g = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randn(size, d_in, generator=g)
    return x, x[:, :4].argmax(1)


def identical_across_ranks(model: nn.Module) -> bool:
    """Every parameter equal to rank 0's (broadcast and compared on every rank)."""
    same = torch.ones(1)
    for p in model.parameters():
        theirs = p.detach().clone()
        dist.broadcast(theirs, src=0)
        same *= float(torch.equal(theirs, p.detach()))
    dist.all_reduce(same, op=dist.ReduceOp.MIN)
    return bool(same.item())


def identical_full(model: nn.Module) -> bool:
    """``identical_across_ranks`` of the whole model: DDP's local module, or FSDP2's sharded
    parameters gathered (``DTensor.full_tensor``)."""
    if isinstance(model, DDP):
        return identical_across_ranks(model.module)
    same = torch.ones(1)
    for q in model.parameters():
        whole = q.full_tensor() if hasattr(q, "full_tensor") else q.detach()
        theirs = whole.detach().clone()
        dist.broadcast(theirs, src=0)
        same *= float(torch.equal(theirs, whole.detach()))
    dist.all_reduce(same, op=dist.ReduceOp.MIN)
    return bool(same.item())


def shard(student: nn.Module, optimizer: torch.optim.Optimizer) -> tuple:
    """FSDP2: ``fully_shard`` replaces the student's parameters by sharded DTensors; the
    optimizer is rebuilt on them, each state tensor sharded like its parameter."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import distribute_tensor

    before = {n: q for n, q in student.named_parameters()}
    state = {n: optimizer.state.get(q, {}) for n, q in before.items()}
    group_of = {
        n: i
        for i, g in enumerate(optimizer.param_groups)
        for n, q in before.items()
        if any(q is r for r in g["params"])
    }
    # one group, the root: in a grown graph the blocks are containers whose forward never runs
    # (the graph calls their layers), so FSDP2's per-module hooks would never fire for them
    fully_shard(student)
    groups = [
        {**{k: v for k, v in g.items() if k != "params"}, "params": []}
        for g in optimizer.param_groups
    ]
    after = dict(student.named_parameters())
    for n, q in after.items():
        if n in group_of:
            groups[group_of[n]]["params"].append(q)
    new = type(optimizer)(groups)
    for n, q in after.items():
        if state.get(n):
            new.state[q] = {
                k: distribute_tensor(v, q.device_mesh, q.placements)
                if isinstance(v, torch.Tensor) and v.shape == q.shape
                else v
                for k, v in state[n].items()
            }
    return student, new


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--grow-at", type=int, default=10)
    p.add_argument("--width", type=float, default=2.0)
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--zero", action="store_true", help="ZeroRedundancyOptimizer(AdamW)")
    p.add_argument("--fsdp", action="store_true", help="continue under FSDP2 after growth")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the same teacher on every rank
    model = DDP(Net())
    if args.zero:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        optimizer = ZeroRedundancyOptimizer(
            model.parameters(), optimizer_class=torch.optim.AdamW, lr=1e-3
        )
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    result: dict = {"world_size": dist.get_world_size()}
    for step in range(1, args.steps + 1):
        x, y = batch(step, rank)
        if step == args.grow_at:
            teacher = model.module
            with torch.no_grad():
                result["loss_before"] = F.cross_entropy(teacher(x), y).item()
            student, optimizer = fxgrow.grow_during_training(
                teacher, optimizer, x, width=args.width, blocks={"blocks": args.blocks}, seed=0
            )
            result["identical_after_growth"] = identical_across_ranks(student)
            with torch.no_grad():
                result["loss_after"] = F.cross_entropy(student(x), y).item()
            result["params"] = [
                sum(q.numel() for q in teacher.parameters()),
                sum(q.numel() for q in student.parameters()),
            ]
            if args.fsdp:
                model, optimizer = shard(student, optimizer)
            else:
                model = DDP(student)  # the student's parameters, synchronised again
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if rank == 0 and step % 5 == 0:
            print(f"step {step:3d} loss {loss.item():.4f}", flush=True)
    result["final_loss"] = loss.item()  # rank 0's batch: equal for AdamW, ZeRO and FSDP2
    result["identical_at_end"] = identical_full(model)
    result["steps_after_growth"] = args.steps - args.grow_at + 1
    if rank == 0:
        print(json.dumps(result), flush=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(result, f)
    # DDP's reducer and ZeRO/FSDP state hold the process group: free them, wait for every
    # rank, then destroy the group (torn down in another order, gloo may abort a rank at exit)
    del model, optimizer
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
