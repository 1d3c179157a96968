"""What the framework callbacks share: when to grow (:class:`Trigger`), the record of a growth
(:class:`GrowthEvent`), turning a batch into example inputs, measuring the loss across growth,
and :func:`become` (the model object takes the student's identity, for loops that hold a
reference to the model in a local variable, as ``transformers.Trainer`` does)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..analysis.rules.registry import has_trait
from ..errors import InputError
from ..frontend.modal import TrainingOnly
from ..modes import preserved
from ..params import count_parameters
from ..training.tied import TiedAttention, TiedDropout


@dataclass(frozen=True)
class GrowthEvent:
    """One growth: the optimizer step after which it happened, why, the loss on the example
    batch right before (teacher) and right after (student) in the model's own mode with
    dropout off (see :func:`measure`), and the parameter counts."""

    step: int
    reason: str
    loss_before: float | None
    loss_after: float | None
    params_before: int
    params_after: int


class Trigger:
    """Grow once: at optimizer step ``at_step``, or when the logged metric ``monitor`` has not
    improved by more than ``min_delta`` for ``patience`` observations (``mode="min"`` or
    ``"max"``)."""

    def __init__(
        self,
        at_step: int | None = None,
        monitor: str | None = None,
        patience: int = 3,
        min_delta: float = 0.0,
        mode: str = "min",
    ) -> None:
        if (at_step is None) == (monitor is None):
            raise InputError(
                "give exactly one of at_step= (grow at that optimizer step) and "
                "monitor= (grow when that logged metric plateaus)"
            )
        if at_step is not None and (
            isinstance(at_step, bool) or not isinstance(at_step, int) or at_step < 1
        ):
            raise InputError(f"at_step must be a positive integer, got {at_step!r}")
        if mode not in ("min", "max") or patience < 1 or min_delta < 0:
            raise InputError(
                f"mode must be 'min' or 'max', patience >= 1 and min_delta >= 0; "
                f"got {mode!r}, {patience!r}, {min_delta!r}"
            )
        self.at_step, self.monitor, self.patience = at_step, monitor, patience
        self.min_delta, self.sign = min_delta, 1.0 if mode == "min" else -1.0
        self.best, self.stale, self.fired = math.inf, 0, False

    def observe(self, metrics: Mapping[str, Any] | None) -> None:
        """Take a logged value of the monitored metric (others are ignored)."""
        if self.monitor is None or not metrics or self.monitor not in metrics:
            return
        value = self.sign * float(metrics[self.monitor])
        if value < self.best - self.min_delta:
            self.best, self.stale = value, 0
        else:
            self.stale += 1

    def due(self, step: int) -> str | None:
        """Why to grow now (after optimizer step ``step``), or None."""
        if self.fired:
            return None
        if self.at_step is not None and step >= self.at_step:
            return f"step {self.at_step}"
        if self.monitor is not None and self.stale >= self.patience:
            return f"{self.monitor} did not improve for {self.stale} observations"
        return None


def as_inputs(model: torch.nn.Module, batch: Any, device: torch.device | None = None) -> tuple:
    """A batch as positional example inputs: a tensor or tuple as is, a mapping ordered by the
    parameters of ``model.forward`` (every key must be one of them)."""
    if isinstance(batch, Mapping):
        names = list(inspect.signature(model.forward).parameters)
        unknown = [k for k in batch if k not in names]
        if unknown:
            raise InputError(
                f"batch keys {unknown} are not parameters of "
                f"{type(model).__name__}.forward{tuple(names)}; pass "
                f"example_inputs= as a tuple"
            )
        present = [n for n in names if n in batch]
        if names[: len(present)] != present:
            raise InputError(
                f"the batch gives {present} but {type(model).__name__}.forward "
                f"takes {names}: the batch must give its first parameters; pass "
                f"example_inputs= as a tuple"
            )
        batch = tuple(batch[n] for n in present)
    elif isinstance(batch, torch.Tensor):
        batch = (batch,)
    elif isinstance(batch, list):
        batch = tuple(batch)
    if not isinstance(batch, tuple):
        raise InputError(
            f"cannot use a {type(batch).__name__} as example inputs; pass "
            f"example_inputs= as a tuple of tensors"
        )
    if device is not None:
        batch = tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in batch)
    return batch


def loss_of(out: Any) -> torch.Tensor | None:
    """The loss in a model's output: ``out["loss"]``, ``out.loss``, a scalar tensor."""
    if isinstance(out, Mapping) and "loss" in out:
        return out["loss"]
    if getattr(out, "loss", None) is not None:
        return out.loss
    if isinstance(out, torch.Tensor) and out.dim() == 0:
        return out
    return None


_DROPOUT = (TrainingOnly, TiedDropout, TiedAttention)  # and every op with the trait "dropout"


def measure(fn: Callable[[], Any], model: torch.nn.Module, seed: int) -> float | None:
    """``fn()``'s loss in ``model``'s mode with its dropout modules off (batch norm in training
    mode still uses batch statistics): the deterministic part of the function, which growth
    keeps exactly.  The random state is seeded and restored and ``model``'s buffers and modes
    are untouched (a measurement must not change the run)."""
    with torch.random.fork_rng(devices=[]), preserved(model), torch.no_grad():
        for m in model.modules():
            if isinstance(m, _DROPOUT) or has_trait(m, "dropout"):
                m.training = False
        torch.manual_seed(seed)
        loss = loss_of(fn())
    return None if loss is None else float(loss)


def count(model: torch.nn.Module) -> int:
    """The number of parameter elements in ``model`` (a shared parameter counted once)."""
    return count_parameters(model)


def become(model: torch.nn.Module, student: torch.nn.Module) -> torch.nn.Module:
    """Make the object ``model`` the student (its class and attributes): every reference a
    training loop holds now runs the grown model.  ``student`` must not be used afterwards."""
    model.__class__ = student.__class__
    model.__dict__ = student.__dict__
    return model
