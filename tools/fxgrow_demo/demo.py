"""The demo: accelerated learning by exact growth, on scikit-learn's digits.

A small ResNet teacher trains for a while; fxgrow grows it wider and deeper (``fxgrow.grow``
with ``split="random"``: exact, and the copies learn apart), moves the AdamW state across
(``fxgrow.transfer_optimizer``) and training goes on.  A model of the student's exact shape,
randomly initialised, trains on the same batches for the same number of steps.  The demo prints
the preservation error, the loss around growth against the teacher's own batch-to-batch noise,
test accuracy at checkpoints and the training compute each run needs to reach the from-scratch
model's final accuracy; it writes a plot, the grown graph and the student to ``out_dir``.

The building blocks (``SmallResNet``, ``digits``, ``forward_macs``, ``Batches``, ``evaluate``,
``train``) are reused by ``tools/reproduce.py``."""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import fxgrow
from fxgrow.modes import preserved, set_training

from .data import Batches, digits
from .model import SmallResNet, seeded
from .report import DemoResult, plot, report, slashed, spike_stats
from .training import (
    History,
    Progress,
    cosine,
    make_optimizer,
    train,
    train_flops_per_sample,
)

DEFAULT_OUT = "fxgrow-demo-out"


@dataclass
class Config:
    widths: tuple[int, ...] = (16, 32)
    blocks: tuple[int, ...] = (2, 2)
    extra_blocks: int = 1  # per stage, at growth
    teacher_steps: int = 200
    student_steps: int = 400
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 20
    schedule: str = "cosine"  # over the global step, shared by both runs; or "constant"
    # the student's learning rate relative to the schedule; None: 1 / factor.  Each copy of a
    # replicated unit gets the teacher's full gradient on its outgoing weights, so the unit's
    # outgoing weights move up to ``factor`` times as fast after growth (see docs/training.md)
    student_lr_scale: float | None = None
    eval_every: int = 10
    smooth: int = 5  # accuracy targets compare the mean of this many consecutive evaluations
    noise_window: int = 20  # batch losses compared before / after growth


def run(
    factor: float = 1.5,
    seed: int = 0,
    *,
    out_dir: str = DEFAULT_OUT,
    teacher_steps: int | None = None,
    student_steps: int | None = None,
    threads: int = 1,
    progress: bool = True,
    config: Config | None = None,
) -> int:
    """Train a teacher on digits, grow it ``factor`` x wider and one block per stage deeper,
    move its AdamW state, continue training; train the student's shape from scratch on the
    same batches for the same number of steps; print the comparison.  Writes ``curves.png``,
    ``student.svg`` (with ``fxgrow.draw``), the student and ``results.json`` to ``out_dir``.
    Returns 0 (1 when scikit-learn is missing)."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        print(
            "fxgrow demo needs scikit-learn (its digits data set) and matplotlib: "
            "pip install scikit-learn matplotlib",
            file=sys.stderr,
        )
        return 1
    cfg = copy.deepcopy(config) if config is not None else Config()
    if teacher_steps is not None:
        cfg.teacher_steps = teacher_steps
    if student_steps is not None:
        cfg.student_steps = student_steps
    if cfg.student_lr_scale is None:
        cfg.student_lr_scale = 1.0 / factor
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)  # tiny models: one thread is as fast, and robust under load
    t_start, cpu_start = time.perf_counter(), time.process_time()
    bar = Progress(progress)
    try:
        data = digits()
        example = data.x_test[:16]
        widths = tuple(math.ceil(w * factor - 1e-9) for w in cfg.widths)
        blocks = tuple(b + cfg.extra_blocks for b in cfg.blocks)
        T, S = cfg.teacher_steps, cfg.student_steps
        total = T + S
        if cfg.schedule == "cosine":
            schedule = cosine(cfg.lr, total, cfg.warmup)
        else:
            schedule = lambda step: cfg.lr
        scale = cfg.student_lr_scale
        student_schedule = lambda step: schedule(step) * scale
        log = dict(data=data, eval_every=cfg.eval_every, progress=bar, total=total)

        # 1. the teacher
        teacher = seeded(seed, lambda: SmallResNet(cfg.widths, cfg.blocks))
        opt = make_optimizer(teacher, cfg.lr, cfg.weight_decay)
        t_fps = train_flops_per_sample(teacher, example) * cfg.batch_size
        batches = Batches(data.x_train, data.y_train, cfg.batch_size, seed + 100)
        grown = History()
        flops = train(
            teacher,
            opt,
            batches,
            T,
            flops_per_step=t_fps,
            history=grown,
            label="teacher",
            lr=schedule,
            **log,
        )
        growth_flops, teacher_acc = flops, grown.evals[-1][2]

        # 2. growth: wider (split="random": exact, and the copies learn apart), one more
        #    block per stage (zeroed residual branch), the optimizer state mapped across
        x_next, y_next = next(batches)
        loss_before = _loss(teacher, x_next, y_next)
        t0 = time.perf_counter()
        set_training(teacher, False)
        student = fxgrow.grow(
            teacher,
            example,
            width=factor,
            blocks={f"layer{s + 1}": b for s, b in enumerate(blocks)},
            split="random",
            seed=seed,
        )
        opt = fxgrow.transfer_optimizer(opt, teacher, student)
        grow_seconds = time.perf_counter() - t0
        error = fxgrow.compare(teacher, student, data.x_test)
        error_train = fxgrow.compare(teacher, student, x_next, mode="train")
        loss_after = _loss(student, x_next, y_next)
        s_fps = train_flops_per_sample(student, example) * cfg.batch_size
        n_teacher = sum(p.numel() for p in teacher.parameters())
        n_student = sum(p.numel() for p in student.parameters())

        # 3. the student trains on, from the very batch the losses above were measured on
        flops = train(
            student,
            opt,
            _prepend((x_next, y_next), batches),
            S,
            flops_per_step=s_fps,
            history=grown,
            start_step=T,
            start_flops=flops,
            label="student",
            lr=student_schedule,
            **log,
        )
        spike = spike_stats(grown.losses[:T], grown.losses[T:], cfg.noise_window)

        # 4. the student's exact shape from random init: same batches, same number of steps
        scratch = seeded(seed + 1, lambda: SmallResNet(widths, blocks))
        if {k: v.shape for k, v in scratch.state_dict().items()} != {
            k: v.shape for k, v in student.state_dict().items()
        }:
            raise RuntimeError("the from-scratch model does not have the student's shape")
        sc_hist = History()
        train(
            scratch,
            make_optimizer(scratch, cfg.lr, cfg.weight_decay),
            Batches(data.x_train, data.y_train, cfg.batch_size, seed + 100),
            total,
            flops_per_step=s_fps,
            history=sc_hist,
            label="scratch",
            lr=schedule,
            **log,
        )

        # 5. results
        target = sc_hist.smoothed(cfg.smooth)[-1][2]
        reach_g = grown.first_reaching(target, cfg.smooth)
        reach_s = sc_hist.first_reaching(target, cfg.smooth)
        full = sc_hist.evals[-1][1]
        os.makedirs(out_dir, exist_ok=True)
        png = os.path.join(out_dir, "curves.png")
        title = (
            f"fxgrow demo, digits: SmallResNet widths {slashed(cfg.widths)}, blocks "
            f"{slashed(cfg.blocks)} grown at step {T} to {slashed(widths)}, {slashed(blocks)} (seed {seed})"
        )
        plotted = plot(png, grown, sc_hist, T, growth_flops, target, cfg.smooth, title)
        drawn = _draw(fxgrow, teacher, student, example, os.path.join(out_dir, "student.svg"))
        saved = _save(fxgrow, student, example, os.path.join(out_dir, "student"))
        wall, cpu = time.perf_counter() - t_start, time.process_time() - cpu_start
        result = DemoResult(
            cfg=cfg,
            n_train=len(data.y_train),
            n_test=len(data.y_test),
            seed=seed,
            factor=factor,
            widths=widths,
            blocks=blocks,
            params=(n_teacher, n_student),
            train_flops_per_step=(t_fps, s_fps),
            error=error,
            error_train=error_train,
            loss_before=loss_before,
            loss_after=loss_after,
            spike=spike,
            grown=grown,
            scratch=sc_hist,
            teacher_acc=teacher_acc,
            target=target,
            reach_grown=reach_g,
            reach_scratch=reach_s,
            scratch_flops=full,
            grow_seconds=grow_seconds,
        )
        lines = report(result)
        lines += [
            "",
            f"wrote {png}" if plotted else "no plot: matplotlib is not installed",
            drawn,
            f"wrote {saved} (the student)",
            f"runtime {wall:.1f} s wall, {cpu:.1f} s CPU ({threads} thread"
            f"{'s' if threads > 1 else ''})",
        ]
        print("\n".join(lines))
        results = result.to_dict(runtime_s=wall, cpu_s=cpu)
        with open(os.path.join(out_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
    finally:
        torch.set_num_threads(old_threads)
    return 0


@torch.no_grad()
def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The training-mode loss on one batch, leaving the model (modes, BN statistics) as it was."""
    with preserved(model):
        set_training(model, True)
        return float(F.cross_entropy(model(x), y))


def _draw(fxgrow, teacher, student, example, path: str) -> str:
    """The student drawn over the teacher's channel groups (old -> new widths, new blocks)."""
    if not hasattr(fxgrow, "draw"):
        return "no graph drawing: this fxgrow has no fxgrow.draw"
    try:
        fxgrow.draw(teacher, example, path, student=student)
    except Exception as e:  # a drawing is a convenience: report it, do not fail the demo
        return f"the grown graph was not drawn ({type(e).__name__}: {e})"
    return f"wrote {path} (the grown graph)"


def _save(fxgrow, student, example, path: str) -> str:
    """``fxgrow.save`` (one .safetensors file, checked by loading it back) where available."""
    if hasattr(fxgrow, "save"):
        try:
            return str(fxgrow.save(student, path + ".safetensors", example_inputs=example))
        except Exception as e:
            print(
                f"fxgrow.save failed ({type(e).__name__}: {e}); saving the state_dict",
                file=sys.stderr,
            )
    torch.save(student.state_dict(), path + ".pt")
    return path + ".pt"


def _prepend(first, rest: Iterator) -> Iterator:
    yield first
    yield from rest
