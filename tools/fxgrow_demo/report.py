"""What the demo prints and draws: the loss around growth against the teacher's own noise, the
plot of both runs, and the report of one run's measurements (:class:`DemoResult`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from .training import History


def spike_stats(teacher_losses: list[float], student_losses: list[float], k: int) -> dict:
    t = torch.tensor(teacher_losses[-k:], dtype=torch.float64)
    s = torch.tensor(student_losses[:k], dtype=torch.float64)

    def std(v: torch.Tensor) -> float:
        return float(v.std()) if len(v) > 1 else 0.0

    out = {
        "window": k,
        "teacher_mean": float(t.mean()),
        "teacher_std": std(t),
        "teacher_max": float(t.max()),
        "student_mean": float(s.mean()),
        "student_std": std(s),
        "student_max": float(s.max()),
    }
    noise = out["teacher_std"] or float("inf")
    out["excess_in_std"] = (out["student_mean"] - out["teacher_mean"]) / noise
    out["spike"] = out["excess_in_std"] > 1.0
    return out


def plot(
    path: str,
    grown: History,
    scratch: History,
    growth_step: int,
    growth_flops: float,
    target: float,
    smooth: int,
    title: str,
) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for h, label, color in (
        (grown, "teacher -> grown student (fxgrow)", "tab:blue"),
        (scratch, "student's shape from random init", "tab:orange"),
    ):
        ev = h.evals
        axes[0].plot(
            [e[1] / 1e9 for e in ev], [100 * e[2] for e in ev], color=color, alpha=0.3, lw=0.8
        )
        sm = h.smoothed(smooth)
        axes[0].plot(
            [e[1] / 1e9 for e in sm], [100 * e[2] for e in sm], color=color, lw=1.8, label=label
        )
        losses = torch.tensor(h.losses)
        w = 10
        avg = losses.unfold(0, w, 1).mean(1) if len(losses) >= w else losses
        axes[1].plot(range(w, w + len(avg)), avg.tolist(), label=label, color=color)
    axes[0].axvline(growth_flops / 1e9, color="grey", ls="--", lw=1, label="growth")
    axes[0].axhline(100 * target, color="grey", ls=":", lw=1, label="from scratch, final accuracy")
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


def slashed(t: tuple[int, ...]) -> str:
    return "/".join(str(v) for v in t)


def _g(flops: float) -> str:
    return f"{flops / 1e9:,.1f}"


@dataclass(frozen=True)
class DemoResult:
    """What one demo run measured: the models' sizes and compute, the preservation error, the
    losses around growth, both runs' histories and when each reaches the from-scratch model's
    final accuracy (``reach_*``: (step, FLOPs), or None)."""

    cfg: Any  # run.Config
    n_train: int
    n_test: int
    seed: int
    factor: float
    widths: tuple[int, ...]
    blocks: tuple[int, ...]
    params: tuple[int, int]  # teacher, student
    train_flops_per_step: tuple[int, int]  # teacher, student
    error: Any  # fxgrow.compare's result, eval mode on the test images
    error_train: Any  # the same in train mode, on the next batch
    loss_before: float
    loss_after: float
    spike: dict
    grown: History
    scratch: History
    teacher_acc: float
    target: float
    reach_grown: tuple[int, float] | None
    reach_scratch: tuple[int, float] | None
    scratch_flops: float
    grow_seconds: float

    def to_dict(self, **extra: Any) -> dict:
        """The ``results.json`` document (``extra``: runtime_s, cpu_s)."""
        e, et = self.error, self.error_train
        return {
            "seed": self.seed,
            "factor": self.factor,
            "config": asdict(self.cfg),
            "student_widths": self.widths,
            "student_blocks": self.blocks,
            "params": list(self.params),
            "train_flops_per_step": list(self.train_flops_per_step),
            "preservation": {
                "eval_max_abs": e.max_abs,
                "eval_max_rel": e.max_rel,
                "train_max_abs": et.max_abs,
                "train_max_rel": et.max_rel,
            },
            "loss_before": self.loss_before,
            "loss_after": self.loss_after,
            "spike": self.spike,
            "grown": {"evals": self.grown.evals, "losses": self.grown.losses},
            "scratch": {"evals": self.scratch.evals, "losses": self.scratch.losses},
            "target_accuracy": self.target,
            "reach_grown": self.reach_grown,
            "reach_scratch": self.reach_scratch,
            "scratch_flops": self.scratch_flops,
            **extra,
        }


def report(r: DemoResult) -> list[str]:
    """The lines the demo prints about one run."""
    cfg, seed, factor, widths, blocks = r.cfg, r.seed, r.factor, r.widths, r.blocks
    (n_teacher, n_student), (t_fps, s_fps) = r.params, r.train_flops_per_step
    error, error_train, spike, grown, scratch = r.error, r.error_train, r.spike, r.grown, r.scratch
    loss_before, loss_after, teacher_acc, target = (
        r.loss_before,
        r.loss_after,
        r.teacher_acc,
        r.target,
    )
    reach_g, reach_s, full, grow_seconds = (
        r.reach_grown,
        r.reach_scratch,
        r.scratch_flops,
        r.grow_seconds,
    )
    T, S, k = cfg.teacher_steps, cfg.student_steps, spike["window"]
    out = [
        f"fxgrow demo: Net2Net growth during training, scikit-learn digits "
        f"({r.n_train} train / {r.n_test} test images, 8x8), seed {seed}",
        "",
        f"teacher  SmallResNet widths {slashed(cfg.widths)}, blocks {slashed(cfg.blocks)}: "
        f"{n_teacher:,} params, {t_fps / cfg.batch_size / 6e6:.2f} M MAC/image",
        f"student  widths {slashed(widths)}, blocks {slashed(blocks)} (x{factor:g} wider, "
        f"+{cfg.extra_blocks} block per stage): {n_student:,} params, "
        f"{s_fps / cfg.batch_size / 6e6:.2f} M MAC/image",
        f"AdamW, batch {cfg.batch_size}, {cfg.schedule} lr {cfg.lr:g} over {T + S} steps "
        f"(student x{cfg.student_lr_scale:.2g}); teacher {T} steps + student {S}; "
        f"from scratch {T + S}, same batches",
        "",
        f"growth at step {T}: fxgrow.grow(split='random') + transfer_optimizer, "
        f"{grow_seconds:.2f} s",
        f"  preservation error  eval mode, {r.n_test} test images: max abs "
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
        f"{'':>6}  {'':>9} {'test acc':>8}  {'GFLOPs':>8}  {'test acc':>12}  {'GFLOPs':>8}",
    ]
    marks = sorted(
        {0, T // 2, T, T + 20, T + 50, T + 100, T + S // 2, T + S} | set(range(0, T + S + 1, 100))
    )
    for step in marks:
        try:
            g, s = grown.at(step), scratch.at(step)
        except StopIteration:
            continue
        who = "teacher" if step < T else ("grown" if step == T else "student")
        out.append(
            f"{step:>6}  {who:>9} {100 * g[2]:>7.1f}%  {_g(g[1]):>8}  "
            f"{100 * s[2]:>11.1f}%  {_g(s[1]):>8}"
        )
    out.append("")
    out.append(
        f"target: the from-scratch model's final accuracy, {100 * target:.2f}% (mean of its "
        f"last {cfg.smooth} evaluations; teacher at growth {100 * teacher_acc:.1f}%)"
    )
    if reach_g:
        out.append(
            f"  teacher -> student reaches it at step {reach_g[0]:>4}: {_g(reach_g[1]):>7} "
            f"GFLOPs, the teacher's included"
        )
    else:
        out.append(f"  teacher -> student does not reach it in {T + S} steps")
    out.append(
        f"  from scratch      reaches it at step {reach_s[0]:>4}: {_g(reach_s[1]):>7} "
        f"GFLOPs; its full budget: {_g(full)} GFLOPs"
    )
    if reach_g:
        out.append(
            f"  compute saved: {100 * (1 - reach_g[1] / full):.0f}% of the from-scratch "
            f"budget ({100 * (1 - reach_g[1] / reach_s[1]):.0f}% against the step where "
            f"from scratch first reaches it)"
        )
    g_end, s_end = grown.smoothed(cfg.smooth)[-1], scratch.smoothed(cfg.smooth)[-1]
    out.append(
        f"final (mean of last {cfg.smooth}): teacher -> student {100 * g_end[2]:.2f}% with "
        f"{_g(g_end[1])} GFLOPs, from scratch {100 * s_end[2]:.2f}% with "
        f"{_g(s_end[1])} GFLOPs"
    )
    return out
