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
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_OUT = "fxgrow-demo-out"


# -- the model ------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the shortcut (1x1 conv + BN when the shape changes), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class SmallResNet(nn.Module):
    """A conv stem and one stage of BasicBlocks per width (``layer1``, ``layer2``, ...; every
    stage after the first halves the resolution), global average pooling, a linear head."""

    def __init__(self, widths: tuple[int, ...] = (16, 32), blocks: tuple[int, ...] = (2, 2),
                 num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        if len(widths) != len(blocks) or min(blocks) < 1:
            raise ValueError("one block count >= 1 per width")
        self.widths, self.blocks = tuple(widths), tuple(blocks)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        cin = widths[0]
        for s, (w, b) in enumerate(zip(widths, blocks)):
            stage = [BasicBlock(cin, w, 1 if s == 0 else 2)] + [BasicBlock(w, w) for _ in range(b - 1)]
            setattr(self, f"layer{s + 1}", nn.Sequential(*stage))
            cin = w
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for s in range(len(self.widths)):
            x = getattr(self, f"layer{s + 1}")(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def seeded(seed: int, make: Callable[[], nn.Module]) -> nn.Module:
    """``make()`` under ``torch.manual_seed(seed)`` (the global RNG is restored afterwards)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return make()
    finally:
        torch.random.set_rng_state(state)


# -- data -----------------------------------------------------------------------------------------
@dataclass
class Data:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    name: str = ""


def digits() -> Data:
    """scikit-learn's digits (1797 8x8 images, 10 classes; shipped inside scikit-learn), a fixed
    stratified 75/25 split, standardised with the training set's mean and std."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    i_tr, i_te = train_test_split(torch.arange(len(y)).numpy(), test_size=0.25, random_state=0,
                                  stratify=y.numpy())
    x_tr, x_te = x[i_tr], x[i_te]
    mean, std = x_tr.mean(), x_tr.std()
    return Data((x_tr - mean) / std, y[i_tr], (x_te - mean) / std, y[i_te], "digits")


class Batches:
    """An endless, seeded stream of shuffled training batches, each image shifted by up to
    ``shift`` pixels (zero padding).  Two streams with the same seed give the same batches."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int,
                 shift: int = 1) -> None:
        self.x, self.y, self.batch_size, self.shift = x, y, batch_size, shift
        self.gen = torch.Generator().manual_seed(seed)
        self.order = torch.empty(0, dtype=torch.long)
        self.fill = float(x.min())  # the background

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if len(self.order) < self.batch_size:
            self.order = torch.cat([self.order, torch.randperm(len(self.y), generator=self.gen)])
        idx, self.order = self.order[:self.batch_size], self.order[self.batch_size:]
        x = self.x[idx]
        if self.shift:
            x = shift(x, self.shift, self.gen, self.fill)
        return x, self.y[idx]


def shift(x: torch.Tensor, s: int, gen: torch.Generator, fill: float = 0.0) -> torch.Tensor:
    """Each image of ``x`` [N, C, H, W] moved by its own random offset in [-s, s]^2; pixels
    that come in are ``fill``."""
    n, (h, w) = len(x), x.shape[-2:]
    padded = F.pad(x, (s, s, s, s), value=fill)
    dy = torch.randint(0, 2 * s + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * s + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]  # N, 1, H, 1
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :]  # N, 1, 1, W
    batch = torch.arange(n)[:, None, None, None]
    chan = torch.arange(x.shape[1])[None, :, None, None]
    return padded[batch, chan, rows, cols]


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

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]
    from .modes import preserved, set_training
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
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 1024) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) in eval mode; the model's modes are restored."""
    from .modes import preserved, set_training
    correct, loss = 0, 0.0
    with preserved(model, buffers=False):
        set_training(model, False)
        for i in range(0, len(y), batch_size):
            out = model(x[i:i + batch_size])
            loss += float(F.cross_entropy(out, y[i:i + batch_size], reduction="sum"))
            correct += int((out.argmax(1) == y[i:i + batch_size]).sum())
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
            vals = [e[metric] for e in self.evals[k - window + 1:k + 1]]
            out.append((self.evals[k][0], self.evals[k][1], sum(vals) / window))
        return out

    def first_reaching(self, target: float, window: int = 1, metric: int = 2,
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


def train(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterator, steps: int, *,
          flops_per_step: float, data: Data, history: History, eval_every: int,
          start_step: int = 0, start_flops: float = 0.0, progress: Progress | None = None,
          label: str = "train", total: int | None = None,
          lr: Callable[[int], float] | None = None) -> float:
    """``steps`` optimizer steps (cross-entropy), evaluating on the test set every
    ``eval_every`` global steps; ``lr(step)`` (global step, from 0) sets every parameter
    group's learning rate before each step.  Returns the cumulative FLOPs."""
    from .modes import set_training
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


# -- the demo -------------------------------------------------------------------------------------
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


def _spike(teacher_losses: list[float], student_losses: list[float], k: int) -> dict:
    t = torch.tensor(teacher_losses[-k:], dtype=torch.float64)
    s = torch.tensor(student_losses[:k], dtype=torch.float64)
    def std(v: torch.Tensor) -> float:
        return float(v.std()) if len(v) > 1 else 0.0
    out = {"window": k, "teacher_mean": float(t.mean()), "teacher_std": std(t),
           "teacher_max": float(t.max()), "student_mean": float(s.mean()),
           "student_std": std(s), "student_max": float(s.max())}
    noise = out["teacher_std"] or float("inf")
    out["excess_in_std"] = (out["student_mean"] - out["teacher_mean"]) / noise
    out["spike"] = out["excess_in_std"] > 1.0
    return out


def _plot(path: str, grown: History, scratch: History, growth_step: int, growth_flops: float,
          target: float, smooth: int, title: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for h, label, color in ((grown, "teacher -> grown student (fxgrow)", "tab:blue"),
                            (scratch, "student's shape from random init", "tab:orange")):
        ev = h.evals
        axes[0].plot([e[1] / 1e9 for e in ev], [100 * e[2] for e in ev], color=color, alpha=0.3,
                     lw=0.8)
        sm = h.smoothed(smooth)
        axes[0].plot([e[1] / 1e9 for e in sm], [100 * e[2] for e in sm], color=color, lw=1.8,
                     label=label)
        losses = torch.tensor(h.losses)
        w = 10
        avg = losses.unfold(0, w, 1).mean(1) if len(losses) >= w else losses
        axes[1].plot(range(w, w + len(avg)), avg.tolist(), label=label, color=color)
    axes[0].axvline(growth_flops / 1e9, color="grey", ls="--", lw=1, label="growth")
    axes[0].axhline(100 * target, color="grey", ls=":", lw=1,
                    label="from scratch, final accuracy")
    axes[0].set_xlabel("training compute (GFLOPs)")
    axes[0].set_ylabel(f"test accuracy (%), thick: mean of {smooth} evaluations")
    axes[0].set_ylim(90, 100.3)
    axes[0].legend(loc="lower right", fontsize=8)
    axes[1].axvline(growth_step, color="grey", ls="--", lw=1, label="growth")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("training step")
    axes[1].set_ylabel("training loss (mean of 10 batches)")
    axes[1].legend(loc="upper right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def run(factor: float = 1.5, seed: int = 0, *, out_dir: str = DEFAULT_OUT,
        teacher_steps: int | None = None, student_steps: int | None = None,
        threads: int = 1, progress: bool = True, config: Config | None = None) -> int:
    """Train a teacher on digits, grow it ``factor`` x wider and one block per stage deeper,
    move its AdamW state, continue training; train the student's shape from scratch on the
    same batches for the same number of steps; print the comparison.  Writes ``curves.png``,
    ``student.svg`` (with ``fxgrow.draw``), the student and ``results.json`` to ``out_dir``.
    Returns 0 (1 when scikit-learn is missing)."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        print("fxgrow demo needs scikit-learn (its digits data set) and matplotlib: "
              "pip install scikit-learn matplotlib", file=sys.stderr)
        return 1
    import fxgrow
    from .modes import set_training

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
            schedule = lambda step: cfg.lr  # noqa: E731
        scale = cfg.student_lr_scale
        student_schedule = lambda step: schedule(step) * scale  # noqa: E731
        log = dict(data=data, eval_every=cfg.eval_every, progress=bar, total=total)

        # 1. the teacher
        teacher = seeded(seed, lambda: SmallResNet(cfg.widths, cfg.blocks))
        opt = make_optimizer(teacher, cfg.lr, cfg.weight_decay)
        t_fps = train_flops_per_sample(teacher, example) * cfg.batch_size
        batches = Batches(data.x_train, data.y_train, cfg.batch_size, seed + 100)
        grown = History()
        flops = train(teacher, opt, batches, T, flops_per_step=t_fps, history=grown,
                      label="teacher", lr=schedule, **log)
        growth_flops, teacher_acc = flops, grown.evals[-1][2]

        # 2. growth: wider (split="random": exact, and the copies learn apart), one more
        #    block per stage (zeroed residual branch), the optimizer state mapped across
        x_next, y_next = next(batches)
        loss_before = _loss(teacher, x_next, y_next)
        t0 = time.perf_counter()
        set_training(teacher, False)
        student = fxgrow.grow(teacher, example, width=factor,
                              blocks={f"layer{s + 1}": b for s, b in enumerate(blocks)},
                              split="random", seed=seed)
        opt = fxgrow.transfer_optimizer(opt, teacher, student)
        grow_seconds = time.perf_counter() - t0
        error = fxgrow.compare(teacher, student, data.x_test)
        error_train = fxgrow.compare(teacher, student, x_next, mode="train")
        loss_after = _loss(student, x_next, y_next)
        s_fps = train_flops_per_sample(student, example) * cfg.batch_size
        n_teacher = sum(p.numel() for p in teacher.parameters())
        n_student = sum(p.numel() for p in student.parameters())

        # 3. the student trains on, from the very batch the losses above were measured on
        flops = train(student, opt, _prepend((x_next, y_next), batches), S,
                      flops_per_step=s_fps, history=grown, start_step=T, start_flops=flops,
                      label="student", lr=student_schedule, **log)
        spike = _spike(grown.losses[:T], grown.losses[T:], cfg.noise_window)

        # 4. the student's exact shape from random init: same batches, same number of steps
        scratch = seeded(seed + 1, lambda: SmallResNet(widths, blocks))
        if {k: v.shape for k, v in scratch.state_dict().items()} != \
                {k: v.shape for k, v in student.state_dict().items()}:
            raise RuntimeError("the from-scratch model does not have the student's shape")
        sc_hist = History()
        train(scratch, make_optimizer(scratch, cfg.lr, cfg.weight_decay),
              Batches(data.x_train, data.y_train, cfg.batch_size, seed + 100), total,
              flops_per_step=s_fps, history=sc_hist, label="scratch", lr=schedule, **log)

        # 5. results
        target = sc_hist.smoothed(cfg.smooth)[-1][2]
        reach_g = grown.first_reaching(target, cfg.smooth)
        reach_s = sc_hist.first_reaching(target, cfg.smooth)
        full = sc_hist.evals[-1][1]
        os.makedirs(out_dir, exist_ok=True)
        png = os.path.join(out_dir, "curves.png")
        title = (f"fxgrow demo, digits: SmallResNet widths {_w(cfg.widths)}, blocks "
                 f"{_w(cfg.blocks)} grown at step {T} to {_w(widths)}, {_w(blocks)} (seed {seed})")
        plotted = _plot(png, grown, sc_hist, T, growth_flops, target, cfg.smooth, title)
        drawn = _draw(fxgrow, teacher, student, example, os.path.join(out_dir, "student.svg"))
        saved = _save(fxgrow, student, example, os.path.join(out_dir, "student"))
        wall, cpu = time.perf_counter() - t_start, time.process_time() - cpu_start
        lines = _report(cfg, data, seed, factor, widths, blocks, n_teacher, n_student, t_fps,
                        s_fps, error, error_train, loss_before, loss_after, spike, grown,
                        sc_hist, teacher_acc, target, reach_g, reach_s, full, grow_seconds)
        lines += ["", f"wrote {png}" if plotted else "no plot: matplotlib is not installed",
                  drawn, f"wrote {saved} (the student)",
                  f"runtime {wall:.1f} s wall, {cpu:.1f} s CPU ({threads} thread"
                  f"{'s' if threads > 1 else ''})"]
        print("\n".join(lines))
        results = {
            "seed": seed, "factor": factor, "config": asdict(cfg), "student_widths": widths,
            "student_blocks": blocks, "params": [n_teacher, n_student],
            "train_flops_per_step": [t_fps, s_fps],
            "preservation": {"eval_max_abs": error.max_abs, "eval_max_rel": error.max_rel,
                             "train_max_abs": error_train.max_abs,
                             "train_max_rel": error_train.max_rel},
            "loss_before": loss_before, "loss_after": loss_after, "spike": spike,
            "grown": {"evals": grown.evals, "losses": grown.losses},
            "scratch": {"evals": sc_hist.evals, "losses": sc_hist.losses},
            "target_accuracy": target, "reach_grown": reach_g, "reach_scratch": reach_s,
            "scratch_flops": full, "runtime_s": wall, "cpu_s": cpu}
        with open(os.path.join(out_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
    finally:
        torch.set_num_threads(old_threads)
    return 0


@torch.no_grad()
def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The training-mode loss on one batch, leaving the model (modes, BN statistics) as it was."""
    from .modes import preserved, set_training
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
            print(f"fxgrow.save failed ({type(e).__name__}: {e}); saving the state_dict",
                  file=sys.stderr)
    torch.save(student.state_dict(), path + ".pt")
    return path + ".pt"


def _prepend(first, rest: Iterator) -> Iterator:
    yield first
    yield from rest


def _w(t: tuple[int, ...]) -> str:
    return "/".join(str(v) for v in t)


def _g(flops: float) -> str:
    return f"{flops / 1e9:,.1f}"


def _report(cfg, data, seed, factor, widths, blocks, n_teacher, n_student, t_fps, s_fps, error,
            error_train, loss_before, loss_after, spike, grown, scratch, teacher_acc, target,
            reach_g, reach_s, full, grow_seconds) -> list[str]:
    T, S, k = cfg.teacher_steps, cfg.student_steps, spike["window"]
    out = [f"fxgrow demo: Net2Net growth during training, scikit-learn digits "
           f"({len(data.y_train)} train / {len(data.y_test)} test images, 8x8), seed {seed}",
           "",
           f"teacher  SmallResNet widths {_w(cfg.widths)}, blocks {_w(cfg.blocks)}: "
           f"{n_teacher:,} params, {t_fps / cfg.batch_size / 6e6:.2f} M MAC/image",
           f"student  widths {_w(widths)}, blocks {_w(blocks)} (x{factor:g} wider, "
           f"+{cfg.extra_blocks} block per stage): {n_student:,} params, "
           f"{s_fps / cfg.batch_size / 6e6:.2f} M MAC/image",
           f"AdamW, batch {cfg.batch_size}, {cfg.schedule} lr {cfg.lr:g} over {T + S} steps "
           f"(student x{cfg.student_lr_scale:.2g}); teacher {T} steps + student {S}; "
           f"from scratch {T + S}, same batches",
           "",
           f"growth at step {T}: fxgrow.grow(split='random') + transfer_optimizer, "
           f"{grow_seconds:.2f} s",
           f"  preservation error  eval mode, {len(data.y_test)} test images: max abs "
           f"{error.max_abs:.1e} (rel {error.max_rel:.1e}); train mode, next batch: "
           f"{error_train.max_abs:.1e}",
           f"  loss on the next batch  teacher {loss_before:.6f}  student {loss_after:.6f}",
           f"  batch losses  teacher, last {k}: mean {spike['teacher_mean']:.4f}  "
           f"std {spike['teacher_std']:.4f}  max {spike['teacher_max']:.4f}",
           f"                student, first {k}: mean {spike['student_mean']:.4f}  "
           f"std {spike['student_std']:.4f}  max {spike['student_max']:.4f}",
           f"  -> {'no loss spike' if not spike['spike'] else 'LOSS SPIKE'}: the mean moved by "
           f"{spike['excess_in_std']:+.2f} of the teacher's batch-to-batch std",
           "",
           f"{'step':>6}  {'teacher -> student':^27}  {'from scratch':^22}",
           f"{'':>6}  {'':>9} {'test acc':>8}  {'GFLOPs':>8}  {'test acc':>12}  {'GFLOPs':>8}"]
    marks = sorted({0, T // 2, T, T + 20, T + 50, T + 100, T + S // 2, T + S}
                   | set(range(0, T + S + 1, 100)))
    for step in marks:
        try:
            g, s = grown.at(step), scratch.at(step)
        except StopIteration:
            continue
        who = "teacher" if step < T else ("grown" if step == T else "student")
        out.append(f"{step:>6}  {who:>9} {100 * g[2]:>7.1f}%  {_g(g[1]):>8}  "
                   f"{100 * s[2]:>11.1f}%  {_g(s[1]):>8}")
    out.append("")
    out.append(f"target: the from-scratch model's final accuracy, {100 * target:.2f}% (mean of its "
               f"last {cfg.smooth} evaluations; teacher at growth {100 * teacher_acc:.1f}%)")
    if reach_g:
        out.append(f"  teacher -> student reaches it at step {reach_g[0]:>4}: {_g(reach_g[1]):>7} "
                   f"GFLOPs, the teacher's included")
    else:
        out.append(f"  teacher -> student does not reach it in {T + S} steps")
    out.append(f"  from scratch      reaches it at step {reach_s[0]:>4}: {_g(reach_s[1]):>7} "
               f"GFLOPs; its full budget: {_g(full)} GFLOPs")
    if reach_g:
        out.append(f"  compute saved: {100 * (1 - reach_g[1] / full):.0f}% of the from-scratch "
                   f"budget ({100 * (1 - reach_g[1] / reach_s[1]):.0f}% against the step where "
                   f"from scratch first reaches it)")
    g_end, s_end = grown.smoothed(cfg.smooth)[-1], scratch.smoothed(cfg.smooth)[-1]
    out.append(f"final (mean of last {cfg.smooth}): teacher -> student {100 * g_end[2]:.2f}% with "
               f"{_g(g_end[1])} GFLOPs, from scratch {100 * s_end[2]:.2f}% with "
               f"{_g(s_end[1])} GFLOPs")
    return out
