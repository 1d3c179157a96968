"""Grow a model in the middle of an ordinary training loop (no framework needed).

At step ``--grow-at`` the model is replaced by a wider and deeper student that computes the same
function (``fxgrow.grow_during_training``: ``fxgrow.grow`` with ``split="random"`` so that the
copies of a unit learn apart, then ``fxgrow.transfer_optimizer``), and the loop goes on with
the new model and optimizer.  Run from the repository root:

    .venv/bin/python tools/examples/grow_during_training.py
"""

from __future__ import annotations

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

import fxgrow


class Block(nn.Module):
    """A residual MLP block: x + fc2(relu(fc1(x)))."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.relu(self.fc1(x)))


class Net(nn.Module):
    def __init__(self, d_in: int = 32, width: int = 32, depth: int = 2, classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Linear(d_in, width)
        self.blocks = nn.Sequential(*[Block(width) for _ in range(depth)])
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(F.relu(self.embed(x))))


def batches(seed: int, batch_size: int = 128, d_in: int = 32, classes: int = 10):
    """Endless synthetic data: Gaussian inputs labelled by a fixed random two-layer network."""
    g = torch.Generator().manual_seed(seed)
    w1, w2 = torch.randn(d_in, 16, generator=g) / d_in**0.5, torch.randn(16, classes, generator=g)
    while True:
        x = torch.randn(batch_size, d_in, generator=g)
        yield x, (torch.tanh(x @ w1) @ w2).argmax(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--grow-at", type=int, default=300)
    p.add_argument("--width", type=float, default=2.0, help="width factor at growth")
    p.add_argument("--blocks", type=int, default=4, help="residual blocks after growth")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # a small model

    model = Net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    data = batches(args.seed)
    recent: list[float] = []
    for step in range(1, args.steps + 1):
        x, y = next(data)
        if step == args.grow_at:
            before = F.cross_entropy(model(x), y).item()
            # the one new line: the student replaces the model, its optimizer the optimizer
            # (an LR scheduler: pass scheduler= and take the third value it returns)
            model, optimizer = fxgrow.grow_during_training(
                model, optimizer, x, width=args.width, blocks={"blocks": args.blocks}
            )
            for group in optimizer.param_groups:  # see docs/training.md: copies share a unit's
                group["lr"] /= args.width  # outgoing step, so scale it back
            after = F.cross_entropy(model(x), y).item()
            n = sum(p.numel() for p in model.parameters())
            print(
                f"step {step}: grown to {n:,} parameters; loss on this batch "
                f"{before:.6f} -> {after:.6f}"
            )
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        recent.append(loss.item())
        if step % 50 == 0:
            print(
                f"step {step:4d}  mean loss of the last 50 batches {sum(recent) / len(recent):.4f}"
            )
            recent.clear()


if __name__ == "__main__":
    main()
