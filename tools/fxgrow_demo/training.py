"""The demo's training loop: compute per sample (MACs by hooks), evaluation, the history of
a run, a progress line, AdamW with a cosine schedule.

Invariant: evaluation and the loss measurements leave the model's modes as they were."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import Data


# -- compute --------------------------------------------------------------------------------------
def forward_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass per sample, counted over every Conv and Linear
    call with forward hooks (normalisation, activations, pooling and adds are not counted)."""
    total = 0

    def hook(module, inputs, output) -> None:
        nonlocal total
        w = module.weight
        per_output = w[0].numel()  # in_channels / groups * kernel, or in_features
        total += output.numel() * per_output

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))
    ]
    from fxgrow.modes import preserved, set_training

    try:
        with preserved(model), torch.no_grad():
            set_training(model, False)
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
    return total


def train_flops_per_sample(model: nn.Module, example: torch.Tensor) -> int:
    """Training FLOPs per sample: forward + backward ~ 3 x forward, 2 FLOPs per MAC."""
    return 6 * forward_macs(model, example)


# -- training -------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) in eval mode; the model's modes are restored."""
    from fxgrow.modes import preserved, set_training

    correct, loss = 0, 0.0
    with preserved(model, buffers=False):
        set_training(model, False)
        for i in range(0, len(y), batch_size):
            out = model(x[i : i + batch_size])
            loss += float(F.cross_entropy(out, y[i : i + batch_size], reduction="sum"))
            correct += int((out.argmax(1) == y[i : i + batch_size]).sum())
    return correct / len(y), loss / len(y)


@dataclass
class History:
    """Evaluations (step, cumulative training FLOPs, test accuracy, test loss) and the loss of
    every training batch."""

    evals: list[tuple[int, float, float, float]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    def smoothed(self, window: int = 1, metric: int = 2) -> list[tuple[int, float, float]]:
        """(step, FLOPs, mean of ``metric`` (2: accuracy, 3: test loss) over the ``window``
        evaluations ending there); evaluations before a full window are left out."""
        out = []
        window = max(1, min(window, len(self.evals)))
        for k in range(window - 1, len(self.evals)):
            vals = [e[metric] for e in self.evals[k - window + 1 : k + 1]]
            out.append((self.evals[k][0], self.evals[k][1], sum(vals) / window))
        return out

    def first_reaching(
        self,
        target: float,
        window: int = 1,
        metric: int = 2,
    ) -> tuple[int, float] | None:
        """(step, FLOPs) of the first evaluation whose smoothed accuracy is >= ``target`` (for
        ``metric=3``, test loss <= ``target``)."""
        for step, flops, v in self.smoothed(window, metric):
            if (v >= target - 1e-12) if metric == 2 else (v <= target + 1e-12):
                return step, flops
        return None

    def at(self, step: int) -> tuple[int, float, float, float]:
        return next(e for e in self.evals if e[0] == step)


class Progress:
    """One updating line on stderr (a line per tenth of the run when stderr is not a terminal)."""

    def __init__(self, enabled: bool = True, stream=None) -> None:
        self.enabled, self.stream = enabled, stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last = -1

    def update(self, label: str, done: int, total: int, text: str = "") -> None:
        if not self.enabled:
            return
        if self.tty:
            bar = "#" * int(20 * done / total)
            self.stream.write(f"\r{label:<10} [{bar:<20}] {done:>5}/{total} {text}\033[K")
            if done == total:
                self.stream.write("\n")
            self.stream.flush()
        else:
            tenth = 10 * done // total
            if tenth != self._last or done == total:
                self._last = tenth
                self.stream.write(f"{label:<10} {done:>5}/{total} {text}\n")
                self.stream.flush()

    def note(self, text: str) -> None:
        if self.enabled:
            self.stream.write(text + "\n")
            self.stream.flush()


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator,
    steps: int,
    *,
    flops_per_step: float,
    data: Data,
    history: History,
    eval_every: int,
    start_step: int = 0,
    start_flops: float = 0.0,
    progress: Progress | None = None,
    label: str = "train",
    total: int | None = None,
    lr: Callable[[int], float] | None = None,
) -> float:
    """``steps`` optimizer steps (cross-entropy), evaluating on the test set every
    ``eval_every`` global steps; ``lr(step)`` (global step, from 0) sets every parameter
    group's learning rate before each step.  Returns the cumulative FLOPs."""
    from fxgrow.modes import set_training

    flops = start_flops
    if not history.evals or history.evals[-1][0] != start_step:
        history.evals.append((start_step, flops, *evaluate(model, data.x_test, data.y_test)))
    total = total or start_step + steps
    for k in range(1, steps + 1):
        x, y = next(batches)
        set_training(model, True)
        if lr is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr(start_step + k - 1)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        history.losses.append(float(loss.detach()))
        loss = loss.detach()
        flops += flops_per_step
        step = start_step + k
        if step % eval_every == 0 or k == steps:
            acc, test_loss = evaluate(model, data.x_test, data.y_test)
            history.evals.append((step, flops, acc, test_loss))
            if progress:
                progress.update(label, step, total, f"loss {float(loss):.3f}  test acc {acc:.3f}")
    return flops


def cosine(lr: float, total: int, warmup: int = 0) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero at step ``total``."""

    def at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        return lr * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))

    return at


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
