"""Net2Net's experiments at small scale, on CPU, with fxgrow.

For each task and seed a small ResNet teacher trains for ``T`` steps of a cosine schedule that
spans ``N`` steps; at step ``T`` it is grown and the student trains on for the remaining
``N - T`` steps (same batches, same schedule; ``--lr-scale`` scales the wider students'
learning rate, see docs/training.md).  Compared runs:

* wider (x2 channels):  Net2WiderNet (fxgrow.widen, split="random", optimizer state moved),
  Net2WiderNet with a fresh optimizer, Net2WiderNet with an equal split, ``init="zero"`` (fresh
  fan-in, zero fan-out) and ``init="gradmax"`` (the fan-in from the next batch's gradient; both
  optimizer state moved), random pad (the teacher's weights in place, the new
  units randomly initialised: not function preserving, fresh optimizer), the wide model from
  random init for all ``N`` steps, and Net2WiderNet at equal compute (its schedule stretched
  over as many steps as the FLOPs of the from-scratch run pay for);
* deeper (+1 block per stage):  Net2DeeperNet (fxgrow.grow(blocks=...), optimizer moved) and
  the deep model from random init for ``N`` steps.

Reported: test accuracy at equal numbers of steps of training the big model, the final
accuracy, and the compute saved -- the training FLOPs of teacher plus student until the grown
run first reaches the from-scratch model's final accuracy (mean of its last evaluations),
against the FLOPs of that from-scratch run's full budget (bert2BERT and LEMON report this
figure).  Tasks: scikit-learn's digits and "shapes", ten procedurally generated noisy shapes at
16x16 (unlimited data: a fresh batch every step).

    .venv/bin/python tools/reproduce.py                 # all tasks, 3 seeds, 2 processes
    .venv/bin/python tools/reproduce.py --quick         # a smoke run
    .venv/bin/python tools/reproduce.py --docs          # the plots into docs/img/
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from fxgrow_demo import (
    Data,
    History,
    SmallResNet,
    cosine,
    digits,
    make_optimizer,
    seeded,
    shift,
    train,
    train_flops_per_sample,
)

import fxgrow
from fxgrow.modes import set_training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- the procedural task ----------------------------------------------------------------------------
SHAPES = (
    "disk",
    "ring",
    "square",
    "frame",
    "diamond",
    "triangle",
    "inverted triangle",
    "plus",
    "cross",
    "bars",
)


def _plus(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.minimum(
        torch.maximum(u.abs() - 0.28, v.abs() - 1.0), torch.maximum(v.abs() - 0.28, u.abs() - 1.0)
    )


def shapes(
    n: int,
    gen: torch.Generator,
    size: int = 16,
    noise: float = 0.3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images [n, 1, size, size] and labels: one of ten shapes (``SHAPES``) with random
    position, size, rotation (within +-25 degrees) and contrast, on a random background
    gradient, with two distractor blobs and Gaussian pixel noise."""

    def r(*s: int) -> torch.Tensor:
        return torch.rand(*s, generator=gen)

    y = torch.randint(0, len(SHAPES), (n,), generator=gen)
    cx = size * (0.32 + 0.36 * r(n)).view(-1, 1, 1)
    cy = size * (0.32 + 0.36 * r(n)).view(-1, 1, 1)
    scale = size * (0.17 + 0.13 * r(n)).view(-1, 1, 1)
    theta = ((r(n) - 0.5) * math.radians(50)).view(-1, 1, 1)
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    X, Y = grid.view(1, 1, size), grid.view(1, size, 1)
    dx, dy = (X - cx) / scale, (Y - cy) / scale
    c, s = torch.cos(theta), torch.sin(theta)
    u, v = c * dx + s * dy, -s * dx + c * dy
    rad = (u * u + v * v).sqrt()
    box = torch.maximum(u.abs(), v.abs())
    dist = torch.stack(
        [  # signed distance-like, negative inside, in units of the shape's size
            rad - 1.0,
            (rad - 0.72).abs() - 0.24,
            box - 0.8,
            (box - 0.72).abs() - 0.2,
            u.abs() + v.abs() - 1.0,
            torch.maximum(-0.7 - v, v - 0.9 + 1.7 * u.abs()),
            torch.maximum(-0.7 + v, -v - 0.9 + 1.7 * u.abs()),
            _plus(u, v),
            _plus((u + v) / math.sqrt(2), (u - v) / math.sqrt(2)),
            torch.maximum(torch.minimum((v - 0.45).abs(), (v + 0.45).abs()) - 0.2, u.abs() - 0.9),
        ],
        1,
    )[torch.arange(n), y]
    img = (0.5 + 0.7 * r(n)).view(-1, 1, 1) * torch.sigmoid(-2.5 * dist * scale)
    phi = (2 * math.pi * r(n)).view(-1, 1, 1)
    img = img + (r(n).view(-1, 1, 1) - 0.5) * (X * torch.cos(phi) + Y * torch.sin(phi)) / size
    for _ in range(2):
        bx, by = size * r(n).view(-1, 1, 1), size * r(n).view(-1, 1, 1)
        sig = (0.7 + 0.6 * r(n)).view(-1, 1, 1)
        amp = (r(n).view(-1, 1, 1) - 0.5) * 1.6
        img = img + amp * torch.exp(-((X - bx) ** 2 + (Y - by) ** 2) / (2 * sig * sig))
    img = img + noise * torch.randn(n, size, size, generator=gen)
    return img.unsqueeze(1), y


# -- batches indexed by step ---------------------------------------------------------------------
class StepBatches:
    """Batch ``step`` of a run is a function of (seed, step) only, so every run of a seed --
    teacher, students, random init -- sees the same batch at the same global step."""

    def __init__(self, task: str, data: Data, batch_size: int, seed: int) -> None:
        self.task, self.data, self.batch_size, self.seed = task, data, batch_size, seed
        self.fill = float(data.x_train.min()) if data.x_train is not None else 0.0

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        if self.task == "shapes":
            return shapes(self.batch_size, gen)
        n = len(self.data.y_train)
        per_epoch = n // self.batch_size
        epoch, k = divmod(step, per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))
        idx = order[k * self.batch_size : (k + 1) * self.batch_size]
        return shift(self.data.x_train[idx], 1, gen, self.fill), self.data.y_train[idx]

    def stream(self, start: int, steps: int):
        return (self(s) for s in range(start, start + steps))


# -- tasks ------------------------------------------------------------------------------------------
@dataclass
class Task:
    name: str
    widths: tuple[int, ...]
    blocks: tuple[int, ...]
    total: int  # N: the from-scratch budget, in steps
    teacher: int  # T: steps before growth
    eval_every: int
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 20
    smooth: int = 5
    factor: float = 2.0
    dataset: str = ""  # defaults to the name

    def data(self) -> Data:
        if (self.dataset or self.name) == "digits":
            return digits()
        x, y = shapes(2000, torch.Generator().manual_seed(10_000))
        return Data(None, None, x, y, "shapes")


TASKS = {
    "digits": Task("digits", (8, 16), (2, 2), total=600, teacher=200, eval_every=10),
    "shapes": Task("shapes", (8, 16), (2, 2), total=1200, teacher=400, eval_every=20),
    # not in the default run (about 4x the compute of "shapes"): a wider teacher
    "shapes-large": Task(
        "shapes-large", (16, 32), (2, 2), total=1200, teacher=400, eval_every=20, dataset="shapes"
    ),
}


# -- one seed of one task ---------------------------------------------------------------------------
def random_pad(teacher: torch.nn.Module, widths, blocks, seed: int) -> torch.nn.Module:
    """The wide model with the teacher's tensors in the leading slices of its own (new units
    keep their random initialisation, so the function changes)."""
    model = seeded(seed, lambda: SmallResNet(widths, blocks))
    state = model.state_dict()
    with torch.no_grad():
        for k, v in teacher.state_dict().items():
            state[k][tuple(slice(0, n) for n in v.shape)] = v
    model.load_state_dict(state)
    return model


def run_seed(task: Task, seed: int, quick: bool = False, lr_scale: float | None = None) -> dict:
    torch.set_num_threads(1)
    data = task.data()
    N, T = task.total, task.teacher
    if quick:
        N, T = N // 5, T // 5
    S = N - T
    batches = StepBatches(task.dataset or task.name, data, task.batch_size, seed)
    example = data.x_test[:16]
    wide = tuple(int(w * task.factor) for w in task.widths)
    deep = tuple(b + 1 for b in task.blocks)
    schedule = cosine(task.lr, N, task.warmup)
    scale = 1.0 if lr_scale is None else lr_scale
    scaled = lambda step: schedule(step) * scale
    ev = dict(data=data, eval_every=task.eval_every)

    def fps(model) -> float:
        return float(train_flops_per_sample(model, example) * task.batch_size)

    out: dict = {"task": task.name, "seed": seed, "steps": [T, N], "lr_scale": scale}
    t0 = time.process_time()

    # the teacher
    teacher = seeded(seed, lambda: SmallResNet(task.widths, task.blocks))
    opt = make_optimizer(teacher, task.lr, task.weight_decay)
    th = History()
    t_fps = fps(teacher)
    t_flops = train(
        teacher, opt, batches.stream(0, T), T, flops_per_step=t_fps, history=th, lr=schedule, **ev
    )
    set_training(teacher, False)
    out["teacher"] = {"evals": th.evals, "flops_per_step": t_fps}

    def continue_from(student, optimizer, lr) -> dict:
        h = History(evals=list(th.evals), losses=list(th.losses))
        s_fps = fps(student)
        set_training(student, True)
        train(
            student,
            optimizer,
            batches.stream(T, S),
            S,
            flops_per_step=s_fps,
            history=h,
            start_step=T,
            start_flops=t_flops,
            lr=lr,
            **ev,
        )
        return {"evals": h.evals, "losses": h.losses[T:], "flops_per_step": s_fps}

    def from_scratch(widths, blocks) -> dict:
        model = seeded(seed + 1, lambda: SmallResNet(widths, blocks))
        h = History()
        s_fps = fps(model)
        train(
            model,
            make_optimizer(model, task.lr, task.weight_decay),
            batches.stream(0, N),
            N,
            flops_per_step=s_fps,
            history=h,
            lr=schedule,
            **ev,
        )
        return {"evals": h.evals, "losses": h.losses, "flops_per_step": s_fps}

    # wider
    student = fxgrow.widen(teacher, example, factor=task.factor, split="random", seed=seed)
    out["preservation_wider"] = fxgrow.growth_record(student).error.max_rel
    out["net2wider"] = continue_from(
        student, fxgrow.transfer_optimizer(opt, teacher, student), scaled
    )
    student = fxgrow.widen(teacher, example, factor=task.factor, split="random", seed=seed)
    out["net2wider_fresh"] = continue_from(
        student, make_optimizer(student, task.lr, task.weight_decay), scaled
    )
    # the other recipes of fxgrow.widen, each with the optimizer state moved: replicate with an
    # equal split (Net2Net's own), fresh fan-in / zero fan-out ("zero"), and the fan-in chosen
    # by the gradient of the next training batch ("gradmax")
    for key, kw in (
        ("net2wider_equal", dict(split="equal")),
        ("zero", dict(init="zero", split="random")),
        (
            "gradmax",
            dict(
                init="gradmax",
                split="random",
                batch=batches(T),
                loss_fn=lambda m, b: F.cross_entropy(m(b[0]), b[1]),
            ),
        ),
    ):
        student = fxgrow.widen(teacher, example, factor=task.factor, seed=seed, **kw)
        out[f"preservation_{key}"] = fxgrow.growth_record(student).error.max_rel
        out[key] = continue_from(student, fxgrow.transfer_optimizer(opt, teacher, student), scaled)
    padded = random_pad(teacher, wide, task.blocks, seed + 2)
    out["random_pad_error"] = fxgrow.compare(teacher, padded, example).max_rel
    out["random_pad"] = continue_from(
        padded, make_optimizer(padded, task.lr, task.weight_decay), scaled
    )
    out["scratch_wide"] = from_scratch(wide, task.blocks)

    # wider at equal compute: the grown run gets the FLOPs of the wide model's full budget
    # (the teacher's steps are cheaper, so it runs more steps; its own schedule spans them)
    w_fps = out["scratch_wide"]["flops_per_step"]
    NG = T + math.ceil((N * w_fps - T * t_fps) / w_fps)
    schedule_g = cosine(task.lr, NG, task.warmup)
    teacher_g = seeded(seed, lambda: SmallResNet(task.widths, task.blocks))
    opt_g = make_optimizer(teacher_g, task.lr, task.weight_decay)
    hg = History()
    flops_g = train(
        teacher_g,
        opt_g,
        batches.stream(0, T),
        T,
        flops_per_step=t_fps,
        history=hg,
        lr=schedule_g,
        **ev,
    )
    set_training(teacher_g, False)
    student = fxgrow.widen(teacher_g, example, factor=task.factor, split="random", seed=seed)
    opt_g = fxgrow.transfer_optimizer(opt_g, teacher_g, student)
    set_training(student, True)
    train(
        student,
        opt_g,
        batches.stream(T, NG - T),
        NG - T,
        flops_per_step=w_fps,
        history=hg,
        start_step=T,
        start_flops=flops_g,
        lr=lambda step: schedule_g(step) * scale,
        **ev,
    )
    out["net2wider_equal_compute"] = {"evals": hg.evals, "steps": NG, "flops_per_step": w_fps}

    # deeper
    student = fxgrow.grow(teacher, example, blocks={f"layer{i + 1}": b for i, b in enumerate(deep)})
    out["preservation_deeper"] = fxgrow.compare(teacher, student, example).max_rel
    out["net2deeper"] = continue_from(
        student, fxgrow.transfer_optimizer(opt, teacher, student), schedule
    )
    out["scratch_deep"] = from_scratch(task.widths, deep)
    out["cpu_s"] = time.process_time() - t0
    return out


# -- analysis -------------------------------------------------------------------------------------
def _hist(run: dict) -> History:
    return History(evals=[tuple(e) for e in run["evals"]])


def compute_saved(
    grown: dict, scratch: dict, smooth: int, metric: int = 2, fraction: float = 1.0
) -> dict:
    """Target: the from-scratch run's final value (mean of its last ``smooth`` evaluations;
    for accuracy, times ``fraction``); saved = 1 - FLOPs(teacher + student until the grown run
    first reaches it) / FLOPs(the from-scratch run's full budget)."""
    g, s = _hist(grown), _hist(scratch)
    target = s.smoothed(smooth, metric)[-1][2] * fraction
    reach = g.first_reaching(target, smooth, metric)
    reach_s = s.first_reaching(target, smooth, metric)
    full = s.evals[-1][1]
    return {
        "target": target,
        "reach_step": reach[0] if reach else None,
        "saved": 1 - reach[1] / full if reach else None,
        "saved_vs_first": 1 - reach[1] / reach_s[1] if reach else None,
        "final": g.smoothed(smooth, metric)[-1][2],
    }


def at_step(run: dict, step: int) -> float:
    return next(e[2] for e in run["evals"] if e[0] == step)


def mean_std(xs: list[float]) -> tuple[float, float]:
    t = torch.tensor(xs, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if len(xs) > 1 else 0.0


def pct(xs: list[float]) -> str:
    m, s = mean_std([100 * x for x in xs])
    return f"{m:.1f} ± {s:.1f}"


def summarise(task: Task, runs: list[dict]) -> list[str]:
    T, N = runs[0]["steps"]
    S = N - T
    ev = task.eval_every
    ks = sorted({0, ev * round(S / 8 / ev), ev * round(S / 4 / ev), ev * round(S / 2 / ev), S})
    lines = [
        f"### {task.name}: teacher widths {'/'.join(map(str, task.widths))}, blocks "
        f"{'/'.join(map(str, task.blocks))}, grown at step {T} of {N} "
        f"({len(runs)} seeds: {', '.join(str(r['seed']) for r in runs)})",
        "",
    ]
    flops = {k: runs[0][k]["flops_per_step"] for k in ("teacher", "scratch_wide", "scratch_deep")}
    lines.append(
        f"Training GFLOPs per step: teacher {flops['teacher'] / 1e9:.2f}, wide "
        f"{flops['scratch_wide'] / 1e9:.2f}, deep {flops['scratch_deep'] / 1e9:.2f}.  "
        f"Preservation error at growth (max rel): wider "
        f"{max(r['preservation_wider'] for r in runs):.1e} ("
        + ", ".join(
            f"{k} {max(r.get('preservation_' + k, 0.0) for r in runs):.1e}"
            for k in ("net2wider_equal", "zero", "gradmax")
            if k in runs[0]
        )
        + "), deeper "
        f"{max(r['preservation_deeper'] for r in runs):.1e}; random pad "
        f"{min(r['random_pad_error'] for r in runs):.2f} to "
        f"{max(r['random_pad_error'] for r in runs):.2f}."
    )
    lines.append("")
    lines.append(
        "Test accuracy (%, mean ± std over seeds) after k steps of training the big "
        "model (grown runs: k steps after growth; random init: its first k steps; "
        "teacher at growth: "
        f"{pct([at_step(r['teacher'], T) for r in runs])}):"
    )
    lines.append("")
    lines.append("| k | " + " | ".join(str(k) for k in ks) + " | random init at N |")
    lines.append("|---|" + "---|" * (len(ks) + 1))
    rows = [
        ("Net2WiderNet", "net2wider", "scratch_wide"),
        ("Net2WiderNet, fresh optimizer", "net2wider_fresh", "scratch_wide"),
        ("Net2WiderNet, equal split", "net2wider_equal", "scratch_wide"),
        ('init="zero"', "zero", "scratch_wide"),
        ('init="gradmax"', "gradmax", "scratch_wide"),
        ("random pad", "random_pad", "scratch_wide"),
        ("wide, random init", "scratch_wide", None),
        ("Net2DeeperNet", "net2deeper", "scratch_deep"),
        ("deep, random init", "scratch_deep", None),
    ]
    rows = [r for r in rows if r[1] in runs[0]]  # results of runs before the new recipes
    for label, key, _ in rows:
        grown = key not in ("scratch_wide", "scratch_deep")
        cells = [pct([at_step(r[key], (T + k) if grown else k) for r in runs]) for k in ks]
        final = pct([at_step(r[key], N) for r in runs]) if not grown else ""
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {final} |")
    lines.append("")
    lines.append(
        f"Compute saved against the from-scratch model's full budget of {N} steps "
        f"(target: its final accuracy, mean of its last {task.smooth} evaluations; "
        f"grown FLOPs include the teacher's), per seed, and final accuracy:"
    )
    lines.append("")
    lines.append(
        "| growth | from scratch, final acc % (target) | grown, final acc % | "
        "reached at step | compute saved | to reach 95 % of the target | to reach 90 % | "
        "final test loss: from scratch | grown |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|")

    def saved(results: list[dict]) -> str:
        got = [a["saved"] for a in results if a["saved"] is not None]
        if not got:
            return f"not reached (0/{len(results)})"
        return f"{pct(got)} % ({len(got)}/{len(results)} seeds)"

    ng = runs[0]["net2wider_equal_compute"]["steps"]
    for label, key, ref in [r for r in rows if r[2]] + [
        (f"Net2WiderNet, equal compute ({ng} steps)", "net2wider_equal_compute", "scratch_wide")
    ]:
        acc = [compute_saved(r[key], r[ref], task.smooth) for r in runs]
        acc95 = [compute_saved(r[key], r[ref], task.smooth, fraction=0.95) for r in runs]
        acc90 = [compute_saved(r[key], r[ref], task.smooth, fraction=0.90) for r in runs]
        loss = [compute_saved(r[key], r[ref], task.smooth, metric=3) for r in runs]
        steps = ", ".join("—" if a["reach_step"] is None else str(a["reach_step"]) for a in acc)
        lm, ls = mean_std([a["target"] for a in loss])
        gm, gs = mean_std([a["final"] for a in loss])
        lines.append(
            f"| {label} | {pct([a['target'] for a in acc])} | "
            f"{pct([a['final'] for a in acc])} | {steps} | {saved(acc)} | "
            f"{saved(acc95)} | {saved(acc90)} | {lm:.3f} ± {ls:.3f} | "
            f"{gm:.3f} ± {gs:.3f} |"
        )
    lines.append("")
    return lines


def plot(task: Task, runs: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T, N = runs[0]["steps"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    styles = {
        "net2wider": ("Net2WiderNet", "tab:blue", "-"),
        "net2wider_fresh": ("Net2WiderNet, fresh optimizer", "tab:cyan", "--"),
        "net2wider_equal": ("Net2WiderNet, equal split", "tab:olive", ":"),
        "zero": ('init="zero"', "tab:purple", "-"),
        "gradmax": ('init="gradmax"', "tab:pink", "-"),
        "random_pad": ("random pad", "tab:red", "-"),
        "scratch_wide": ("wide, random init", "tab:orange", "-"),
        "net2deeper": ("Net2DeeperNet", "tab:green", "-"),
        "scratch_deep": ("deep, random init", "tab:brown", "-"),
    }

    def curve(key, x_index):
        sm = [_hist(r[key]).smoothed(task.smooth) for r in runs]
        xs = [e[x_index] for e in sm[0]]
        ys = torch.tensor([[100 * e[2] for e in s] for s in sm])
        return xs, ys.mean(0), ys.std(0) if len(runs) > 1 else torch.zeros(ys.shape[1])

    for ax, keys in (
        (
            axes[0],
            (
                "net2wider",
                "net2wider_fresh",
                "net2wider_equal",
                "zero",
                "gradmax",
                "random_pad",
                "scratch_wide",
            ),
        ),
        (axes[1], ("net2deeper", "scratch_deep")),
    ):
        for key in (k for k in keys if k in runs[0]):
            label, color, ls = styles[key]
            xs, m, s = curve(key, 0)
            ax.plot(xs, m, color=color, ls=ls, label=label)
            ax.fill_between(xs, m - s, m + s, color=color, alpha=0.15)
        ax.axvline(T, color="grey", ls=":", lw=1)
        ax.set_xlabel("training step (growth at the dotted line)")
        ax.set_ylabel(f"test accuracy % (mean of {task.smooth} evaluations; ± std over seeds)")
        ax.legend(loc="lower right", fontsize=8)
    axes[0].set_title("wider (x2 channels)")
    axes[1].set_title("deeper (+1 block per stage)")
    for key in (
        "net2wider",
        "zero",
        "gradmax",
        "scratch_wide",
        "net2deeper",
        "scratch_deep",
        "random_pad",
    ):
        if key not in runs[0]:
            continue
        label, color, ls = styles[key]
        xs, m, s = curve(key, 1)
        axes[2].plot([x / 1e12 for x in xs], m, color=color, ls=ls, label=label)
    axes[2].set_xlabel("training compute (TFLOPs, teacher included)")
    axes[2].set_ylabel("test accuracy %")
    axes[2].set_title("accuracy against compute")
    axes[2].legend(loc="lower right", fontsize=8)
    lo = min(100 * at_step(r["teacher"], T) for r in runs) - 20
    for ax in axes:
        ax.set_ylim(max(0.0, lo), None)
    fig.suptitle(f"Net2Net at small scale: {task.name} ({len(runs)} seeds)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_shapes_samples(path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = shapes(400, torch.Generator().manual_seed(10_000))
    fig, axes = plt.subplots(3, 10, figsize=(10, 3.4))
    for c in range(10):
        idx = (y == c).nonzero()[:3, 0]
        for r, i in enumerate(idx):
            axes[r, c].imshow(x[i, 0], cmap="gray")
            axes[r, c].axis("off")
        axes[0, c].set_title(SHAPES[c], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# -- main -------------------------------------------------------------------------------------------
def _job(args):
    task, seed, quick, lr_scale = args
    return run_seed(TASKS[task], seed, quick, lr_scale)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Net2Net's experiments at small scale.")
    p.add_argument("--tasks", default="digits,shapes")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="processes (one thread each)")
    p.add_argument("--out", default="fxgrow-reproduce-out")
    p.add_argument("--quick", action="store_true", help="a fifth of the steps (smoke run)")
    p.add_argument(
        "--lr-scale",
        type=float,
        default=None,
        help="the wider students' learning rate relative to the schedule "
        "(default 1: the schedule goes on unchanged)",
    )
    p.add_argument(
        "--docs",
        action="store_true",
        help="write the plots to docs/img/ instead of the output folder",
    )
    args = p.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    for t in tasks:
        if t not in TASKS:
            p.error(f"unknown task {t!r}; tasks: {', '.join(TASKS)}")
    os.makedirs(args.out, exist_ok=True)
    jobs = [(t, s, args.quick, args.lr_scale) for t in tasks for s in range(args.seeds)]
    jobs.sort(key=lambda j: j[0] == "digits")  # the long ones first
    t0 = time.perf_counter()
    results: list[dict] = []
    if args.workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.workers) as pool:
            for r in pool.imap_unordered(_job, jobs):
                results.append(r)
                with open(os.path.join(args.out, "partial.json"), "w") as f:  # a cut run
                    json.dump(results, f)
                print(
                    f"[reproduce] {r['task']} seed {r['seed']} done ({r['cpu_s']:.0f} s CPU, "
                    f"{time.perf_counter() - t0:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    else:
        for j in jobs:
            results.append(_job(j))
            print(
                f"[reproduce] {j[0]} seed {j[1]} done ({time.perf_counter() - t0:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    wall = time.perf_counter() - t0
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f)
    lines = [
        f"Measured by `tools/reproduce.py` in {wall:.0f} s wall "
        f"({sum(r['cpu_s'] for r in results):.0f} s CPU, {args.workers} processes).",
        "",
    ]
    img_dir = os.path.join(ROOT, "docs", "img") if args.docs else args.out
    os.makedirs(img_dir, exist_ok=True)
    for t in tasks:
        runs = sorted([r for r in results if r["task"] == t], key=lambda r: r["seed"])
        lines += summarise(TASKS[t], runs)
        try:
            plot(TASKS[t], runs, os.path.join(img_dir, f"reproduction_{t}.png"))
        except ImportError:
            print("matplotlib is not installed: no plots", file=sys.stderr)
    if "shapes" in tasks:
        try:
            plot_shapes_samples(os.path.join(img_dir, "shapes_samples.png"))
        except ImportError:
            pass
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
