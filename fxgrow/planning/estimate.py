"""How big a student will be, from the analysis and the plan alone (nothing is allocated).

Invariant: a tensor axis on which changed groups lie grows by ``positions * (new/old - 1)``
for each such group (replication multiplies a group's positions by its width ratio); every
other axis keeps its size.  Tied tensors count once.  Copied blocks (``grow --blocks``) add the
estimated size of the stage's template block per copy.  Memory is parameters and buffers at
their dtypes; the rewrite holds the teacher and the student and about one student's worth of
temporaries, which is what ``needed_bytes`` counts on top of what is already loaded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import torch

from .placement import placed_student


@dataclass(frozen=True)
class Estimate:
    """Planned size of a student, and whether the machine has room to build it."""

    teacher_params: int
    student_params: int
    student_bytes: int
    needed_bytes: int  # beyond what is allocated now: the student and temporaries
    available_bytes: int | None  # MemAvailable (None: unknown)

    @property
    def fits(self) -> bool:
        """True when the memory needed is available (or the available memory is unknown)."""
        return self.available_bytes is None or self.needed_bytes <= self.available_bytes

    def __str__(self) -> str:
        ratio = self.student_params / max(self.teacher_params, 1)
        avail = "unknown" if self.available_bytes is None else human(self.available_bytes)
        return (
            f"planned student: {self.student_params:,} parameters ({ratio:.2f}x the "
            f"teacher's {self.teacher_params:,}), {human(self.student_bytes)}; growing it "
            f"needs about {human(self.needed_bytes)} more memory, {avail} available"
        )

    def to_dict(self) -> dict:
        """The estimate as a JSON-ready dict, ``fits`` included."""
        return {**asdict(self), "fits": self.fits}


def human(n: float) -> str:
    """A byte count in decimal units, e.g. ``1.5 MB`` (whole bytes below 1 kB)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def available_memory() -> int | None:
    """Bytes the system can give without swapping (psutil, else /proc/meminfo)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _tensors(gm: torch.fx.GraphModule) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in [*gm.named_parameters(), *gm.named_buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            out[name] = t
    return out


def planned_sizes(analysis: Any, plan: Any) -> dict[str, tuple[int, int]]:
    """Tensor name -> (planned elements, bytes per element), for every parameter and buffer."""
    ratio = {c.group: Fraction(c.new_width, c.old_width) for c in plan.changes}
    growth: dict[tuple[str, int], Fraction] = {}
    for g in analysis.all_groups:
        r = ratio.get(g.name)
        if r is None or r == 1:
            continue
        for m in g.members:
            if m.kind in ("parameter", "buffer") and m.axis is not None:
                key = (m.target, m.axis)
                growth[key] = growth.get(key, Fraction(0)) + m.positions * (r - 1)
    placed = placed_student(analysis, getattr(plan, "placements", ()))
    tensors = _tensors(analysis.gm)
    for (target, axis), e in (placed.axes if placed is not None else {}).items():
        old = analysis.state.tensors[target].shape[axis]
        growth[(target, axis)] = growth.get((target, axis), 0) + len(e.index) - old
    out = {}
    for name, t in tensors.items():
        shape = [math.ceil(n + growth.get((name, axis), 0)) for axis, n in enumerate(t.shape)]
        out[name] = (math.prod(shape), t.element_size())
    return out


def estimate(
    analysis: Any,
    plan: Any = None,
    *,
    stages: list | None = None,
    blocks: Mapping[str, int] | None = None,
) -> Estimate:
    """The planned student's size for a widening ``plan`` and/or new block counts
    (``blocks``: stage name -> count, with ``stages`` from ``fxgrow.stages``)."""
    tensors = _tensors(analysis.gm)
    is_param = {name for name, _ in analysis.gm.named_parameters()}
    teacher = sum(t.numel() for name, t in tensors.items() if name in is_param)
    sizes = (
        planned_sizes(analysis, plan)
        if plan is not None
        else {n: (t.numel(), t.element_size()) for n, t in tensors.items()}
    )
    params = sum(n for name, (n, _) in sizes.items() if name in is_param)
    nbytes = sum(n * b for n, b in sizes.values())
    for stage in stages or []:
        extra = (blocks or {}).get(stage.name, len(stage.blocks)) - len(stage.blocks)
        if extra <= 0:
            continue
        prefix = stage.blocks[-1].path + "."
        block = [(name, sizes[name]) for name in sizes if name.startswith(prefix)]
        params += extra * sum(n for name, (n, _) in block if name in is_param)
        nbytes += extra * sum(n * b for _, (n, b) in block)
    return Estimate(teacher, params, nbytes, 2 * nbytes, available_memory())


def meta_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose parameters and buffers are meta tensors (no data is copied)."""
    import copy

    memo: dict[int, Any] = {}
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) in memo:
            continue
        empty = torch.empty_like(t, device="meta")
        memo[id(t)] = (
            torch.nn.Parameter(empty, t.requires_grad)
            if isinstance(t, torch.nn.Parameter)
            else empty
        )
    return copy.deepcopy(model, memo)


def measured(teacher: torch.nn.Module, student: torch.nn.Module) -> Estimate:
    """The estimate for a student built on the meta device (e.g. by ``deepen``): its own size;
    building it for real copies the teacher's graph, about one student's worth."""

    def size(m: torch.nn.Module) -> tuple[int, int]:
        seen: dict[int, torch.Tensor] = {}
        for t in [*m.parameters(), *m.buffers()]:
            seen.setdefault(id(t), t)
        params = {id(p) for p in m.parameters()}
        return (
            sum(t.numel() for i, t in seen.items() if i in params),
            sum(t.numel() * t.element_size() for t in seen.values()),
        )

    n_s, b_s = size(student)
    return Estimate(size(teacher)[0], n_s, b_s, b_s, available_memory())
