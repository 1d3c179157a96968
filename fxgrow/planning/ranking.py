"""Where to grow: channel groups ranked by the gradient their new units would receive.

Every widenable group is widened at once (``factor``, default 2) with ``init="zero"``: new
units with a fresh fan-in and a zero fan-out, so the student computes the teacher's function
and the groups' new units do not see each other.  One backward pass on the user's batch then
gives, per group, the loss's gradient on its new units' fan-out -- the first-order gain of
letting them speak (Firefly, Wu et al. 2020; GradMax, Evci et al. 2022, which with
``init="gradmax"`` also picks the fan-in that maximises it).  The score is that gradient's
squared norm per new unit, so narrow and wide groups compare.  Groups that cannot take a
fresh fan-in exactly (normalised over the channel: ``plan/init.py``) are listed unscored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..analysis.context import CONSUME
from ..errors import InputError


@dataclass(frozen=True)
class GroupScore:
    """One group's growth signal: ``score`` = squared fan-out gradient norm per new unit
    (None: not scored, ``why`` says why)."""

    group: str
    width: int
    new_units: int
    score: float | None
    why: str = ""


def rank_groups(
    model: torch.nn.Module,
    example_inputs: Any,
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    batch: Any,
    *,
    factor: float = 2.0,
    init: str = "zero",
    seed: int = 0,
    **trace_options: Any,
) -> list[GroupScore]:
    """Widenable groups of ``model``, best first, by the gradient ``loss_fn(student, batch)``
    sends to new units' fan-out (see the module docstring)."""
    from ..api import analyze
    from ..rewrite import apply
    from ..rewrite.init import fan_out_objective, initialise, new_unit_axes
    from . import make_plan
    from .init import fresh_init_blockers

    if init not in ("zero", "gradmax"):
        raise InputError(
            f"rank_groups scores fresh units: init must be 'zero' or 'gradmax', got {init!r}"
        )
    if not callable(loss_fn):
        raise InputError("loss_fn must be a callable (model, batch) -> scalar loss")
    analysis = analyze(model, example_inputs, **trace_options)
    plan = make_plan(analysis, None, factor, seed, "equal", 0.0, False, init)
    student = apply(analysis, plan)
    initialise(analysis, plan, student, loss_fn, batch)
    by_name = {g.name: g for g in analysis.groups}
    blockers = fresh_init_blockers(analysis)
    scores: list[GroupScore] = []
    changed = {c.group: c for c in plan.changes}
    for g in analysis.widenable:
        c = changed.get(g.name)
        if c is None:
            scores.append(
                GroupScore(
                    g.name,
                    g.width,
                    0,
                    None,
                    "keeps its width at this factor (tied or normalised "
                    "together with channels that cannot grow)",
                )
            )
            continue
        new = c.new_width - c.old_width
        if c.init == "replicate":
            scores.append(
                GroupScore(g.name, g.width, new, None, blockers.get(g.root, "replicated"))
            )
            continue
        fan_out = new_unit_axes(analysis, plan, {by_name[g.name].root}, CONSUME)
        with torch.enable_grad():
            total = (
                float(fan_out_objective(student, fan_out, loss_fn, batch, False))
                if fan_out
                else 0.0
            )
        scores.append(
            GroupScore(
                g.name,
                g.width,
                new,
                total / max(1, new),
                "" if fan_out else "no consumer column to score",
            )
        )
    return sorted(scores, key=lambda s: (s.score is None, -(s.score or 0.0)))
