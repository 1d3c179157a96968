"""The learning-rate schedule after growth, by an explicit choice (``mode``):

* ``"continue"``: the same schedule at the same position, now driving the student's optimizer;
* ``"warmup"``: the same, with the learning rate ramped linearly from ``1/warmup_steps`` of the
  schedule's value to all of it over ``warmup_steps`` steps (new units start from small
  Adam moments);
* ``"restart"``: the schedule from its beginning (staged training), optionally with a warm-up;
* ``"lemon"``: restarted at the peak learning rate and run ``speed`` times faster (LEMON, ICLR
  2024: the same maximum learning rate and a faster decay after growth).

Invariant: the returned scheduler drives exactly the given optimizer's param groups, and with
``"continue"`` and no warm-up the learning rates it sets are the ones the old scheduler would
have set step for step."""

from __future__ import annotations

import copy
from functools import wraps
from typing import Any
from weakref import ref

import torch
from torch.optim.lr_scheduler import LRScheduler

from ..errors import InputError
from ..optional import instance_of

MODES = ("continue", "warmup", "restart", "lemon")


def _track_step(opt: torch.optim.Optimizer) -> None:
    """What ``LRScheduler.__init__`` does to the optimizer: mark ``step`` so that the scheduler
    knows it was called (no spurious 'scheduler before optimizer' warning)."""
    if hasattr(opt.step, "_wrapped_by_lr_sched"):
        return
    opt_ref, func = ref(opt), opt.step.__func__  # type: ignore[attr-defined]

    @wraps(func)
    def wrapper(*args, **kwargs):
        o = opt_ref()
        o._opt_called = True
        return func.__get__(o, o.__class__)(*args, **kwargs)

    wrapper._wrapped_by_lr_sched = True  # type: ignore[attr-defined]
    opt.step = wrapper  # type: ignore[method-assign]


def _repoint(scheduler: Any, optimizer: torch.optim.Optimizer) -> Any:
    new = copy.copy(scheduler)
    new.__dict__ = dict(scheduler.__dict__)
    new.optimizer = optimizer
    for key in ("_schedulers",):  # SequentialLR, ChainedScheduler
        if key in new.__dict__:
            new.__dict__[key] = [_repoint(s, optimizer) for s in new.__dict__[key]]
    if isinstance(optimizer, torch.optim.Optimizer):
        _track_step(optimizer)
    return new


class _Paced(LRScheduler):
    """An inner scheduler stepped ``speed`` times per step, its learning rates scaled by a
    linear warm-up over ``warmup_steps`` steps.  The inner scheduler always sees its own
    (unscaled) learning rates, so chainable schedules stay right."""

    def __init__(self, inner: LRScheduler, speed: float = 1.0, warmup_steps: int = 0) -> None:
        self.inner, self.optimizer = inner, inner.optimizer
        self.speed, self.warmup_steps = float(speed), int(warmup_steps)
        self.last_epoch, self._credit = 0, 0.0
        self.base_lrs = _base_lrs(inner)
        self._raw = [g["lr"] for g in self.optimizer.param_groups]
        self._apply()

    def _apply(self) -> None:
        f = min(1.0, (self.last_epoch + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        for g, lr in zip(self.optimizer.param_groups, self._raw):
            g["lr"] = lr * f
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def step(self, epoch: int | None = None) -> None:
        for g, lr in zip(self.optimizer.param_groups, self._raw):
            g["lr"] = lr
        self._credit += self.speed
        while self._credit >= 1.0 - 1e-12:
            self.inner.step()
            self._credit -= 1.0
        self._raw = [g["lr"] for g in self.optimizer.param_groups]
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self) -> list:
        return self._last_lr

    def state_dict(self) -> dict:
        return {
            "inner": self.inner.state_dict(),
            "speed": self.speed,
            "credit": self._credit,
            "warmup_steps": self.warmup_steps,
            "last_epoch": self.last_epoch,
            "raw": self._raw,
        }

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state["inner"])
        self.speed, self._credit = state["speed"], state["credit"]
        self.warmup_steps, self.last_epoch, self._raw = (
            state["warmup_steps"],
            state["last_epoch"],
            state["raw"],
        )
        self._apply()


def transfer_scheduler(
    scheduler: Any,
    optimizer: torch.optim.Optimizer,
    *,
    mode: str = "continue",
    warmup_steps: int = 0,
    speed: float = 2.0,
) -> Any:
    """``scheduler`` (built for the teacher's optimizer) carried on for ``optimizer`` (from
    ``transfer_optimizer``) as ``mode`` says (see the module docstring)."""
    if mode not in MODES:
        raise InputError(f"schedule mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "warmup" and warmup_steps < 1:
        raise InputError("mode='warmup' needs warmup_steps >= 1 (the length of the ramp)")
    if warmup_steps < 0 or speed <= 0:
        raise InputError(f"warmup_steps must be >= 0 and speed > 0, got {warmup_steps}, {speed}")
    if instance_of(scheduler, "accelerate.scheduler", "AcceleratedScheduler"):
        inner = transfer_scheduler(
            scheduler.scheduler, optimizer, mode=mode, warmup_steps=warmup_steps, speed=speed
        )
        return type(scheduler)(
            inner,
            [optimizer],
            step_with_optimizer=scheduler.step_with_optimizer,
            split_batches=scheduler.split_batches,
        )
    if not hasattr(scheduler, "step") or not hasattr(scheduler, "optimizer"):
        raise InputError(
            f"expected a torch.optim.lr_scheduler scheduler, got {type(scheduler).__name__}"
        )
    if len(optimizer.param_groups) != len(scheduler.optimizer.param_groups):
        raise InputError(
            f"the scheduler drives {len(scheduler.optimizer.param_groups)} param "
            f"groups, the new optimizer has {len(optimizer.param_groups)}; pass the "
            f"optimizer transfer_optimizer returned for this scheduler's optimizer"
        )
    new = _repoint(scheduler, optimizer)
    if mode in ("restart", "lemon"):
        _rewind(new)
    if mode == "continue" and not warmup_steps:
        return new
    return _Paced(new, speed if mode == "lemon" else 1.0, warmup_steps)


def _base_lrs(s: Any) -> list:
    """The schedule's starting learning rates (SequentialLR keeps none of its own)."""
    if hasattr(s, "base_lrs"):
        return list(s.base_lrs)
    return [g.get("initial_lr", g["lr"]) for g in s.optimizer.param_groups]


def _rewind(s: Any) -> None:
    """Back to the schedule's first step, as its constructor left it: learning rates at their
    initial values, then the schedule's own initial step (a warm-up factor, a first phase)."""
    subs = s.__dict__.get("_schedulers")
    for g, lr in zip(s.optimizer.param_groups, _base_lrs(s)):
        g["lr"] = lr
    if subs is None:
        s.last_epoch = -1
        s._initial_step()
    elif isinstance(s, torch.optim.lr_scheduler.SequentialLR):  # only its first phase steps
        for sub in subs:
            sub.last_epoch = -1
        s.last_epoch = 0
        subs[0]._initial_step()
    else:  # ChainedScheduler: every scheduler's initial step, in order
        for sub in subs:
            sub.last_epoch = -1
            sub._initial_step()
    s._last_lr = [g["lr"] for g in s.optimizer.param_groups]
