"""The demo: widen a torchvision ResNet-18 and show what changed and how exact it is."""
from __future__ import annotations

import time

import torch


def run(factor: float = 1.5, seed: int = 0) -> int:
    import torchvision

    import fxgrow

    torch.manual_seed(seed)
    teacher = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 64, 64)
    t0 = time.perf_counter()
    analysis = fxgrow.analyze(teacher, x)
    plan = fxgrow.plan(analysis, factor=factor, seed=seed)
    student = fxgrow.widen(teacher, x, plan=plan)
    elapsed = time.perf_counter() - t0
    changes = {c.group: c for c in plan.changes}
    print(f"fxgrow demo: torchvision resnet18, widen every channel group x{factor}\n")
    w = max(len(g.name) for g in analysis.groups)
    print(f"{'group':<{w}}  {'width':>6}  {'new':>6}  members  status")
    for g in analysis.groups:
        c = changes.get(g.name)
        status = "widened" if c else ("; ".join(str(b) for b in g.blockers) or "unchanged")
        new = c.new_width if c else g.width
        print(f"{g.name:<{w}}  {g.width:>6}  {new:>6}  {len(g.members):>7}  {status}")
    n_t = sum(p.numel() for p in teacher.parameters())
    n_s = sum(p.numel() for p in student.parameters())
    err = fxgrow.compare(teacher, student, x)
    print(f"\nparameters: {n_t:,} -> {n_s:,} ({n_s / n_t:.2f}x)")
    print(f"preservation: {err}")
    print(f"analysis + plan + rewrite + verify: {elapsed:.2f} s")
    return 0
