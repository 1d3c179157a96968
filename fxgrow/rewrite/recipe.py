"""Per-tensor recipes: a widening plan as a pure function of (tensor name, teacher tensor).

``tensor_recipes(analysis, plan)`` gives, for every parameter or buffer that a plan changes, the
gathers that make the student's tensor from the teacher's: along each grown axis, new position
j takes old position ``index[j]``; on consumed axes it is also multiplied by ``fraction[j]`` (the
share of the copied unit).  ``apply_recipe`` runs them.  The in-memory rewrite
(``rewrite.widen.apply``) and the streaming rewrite (``fxgrow.stream``) both use these two
functions, so a streamed student is bit-identical to the in-memory one.

Invariant: a recipe only needs the teacher tensor's shape to be made (it is built from the
analysis, which may run on meta tensors), and applying it reads nothing but that one tensor."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..analysis import Analysis
from ..analysis.context import CONSUME
from ..growth import AxisExpansion
from ..planning.index_map import Expansion, expand
from ..planning.placement import placed_student
from ..planning.plan import WidenPlan, root_maps


@dataclass(frozen=True)
class Gather:
    """One grown axis: ``index_select(axis, index)``, then (consumed axes) ``* fraction``."""

    axis: int
    index: torch.Tensor  # long: new position -> old position
    fraction: torch.Tensor | None  # float64 shares, on consumed axes only
    expansion: Expansion  # the axis's full expansion (copy counts: what noise needs)


@dataclass(frozen=True)
class TensorRecipe:
    """How one teacher tensor becomes the student's: ``steps`` in the order they run.

    ``record`` lists every axis along a channel space, grown or not: what optimizer-state
    transfer reads (the growth record's ``expansions``)."""

    target: str
    old_shape: tuple[int, ...]
    new_shape: tuple[int, ...]
    steps: tuple[Gather, ...]
    record: tuple[AxisExpansion, ...]


def tensor_recipes(analysis: Analysis, plan: WidenPlan) -> dict[str, TensorRecipe]:
    """Teacher tensor name (canonical: one name per tensor) -> recipe, for every tensor with
    an axis along a class the plan widens."""
    state = analysis.state
    sp = state.spaces
    maps = root_maps(analysis, plan)
    widths = {r: m.new for r, m in maps.items()}
    placed = placed_student(analysis, plan.placements)
    placed_axes = placed.axes if placed is not None else {}
    by_tensor: dict[str, list] = {}
    for pa in state.params.values():
        if (pa.target, pa.axis) in placed_axes or any(r in maps for r in sp.roots(pa.layout)):
            by_tensor.setdefault(pa.target, []).append(pa)
    recipes: dict[str, TensorRecipe] = {}
    for target, axes in by_tensor.items():
        old_shape = tuple(state.tensors[target].shape)
        new_shape = list(old_shape)
        record = []
        steps = []
        # index the axis that grows least first: the intermediate copies stay small
        for pa in sorted(
            axes, key=lambda p: sp.new_size(p.layout, widths) / max(1, sp.size(p.layout))
        ):
            e = placed_axes.get((pa.target, pa.axis)) or expand(sp, pa.layout, maps)
            consume = CONSUME in pa.roles
            record.append(AxisExpansion(pa.axis, e.index, e.fraction, consume))
            new_shape[pa.axis] = e.index.numel()
            if e.index.numel() == old_shape[pa.axis] and bool(
                (e.index == torch.arange(e.index.numel())).all()
            ):
                continue  # this axis's spaces did not grow
            steps.append(Gather(pa.axis, e.index, e.fraction if consume else None, e))
        if not plan.noise:
            # Without noise the order of the gathers is free (they only copy): consumed axes
            # first, each multiplied right after its gather while the tensor is smaller.  The
            # multiplications keep their order, so every value is bit-identical.
            steps.sort(key=lambda step: step.fraction is None)
        recipes[target] = TensorRecipe(
            target,
            old_shape,
            tuple(new_shape),
            tuple(steps),
            tuple(sorted(record, key=lambda r: r.axis)),
        )
    return recipes


NoiseFn = Callable[[torch.Tensor, Gather], torch.Tensor]


def apply_recipe(
    recipe: TensorRecipe,
    old: torch.Tensor,
    *,
    scratch: Scratch | None = None,
    noise: NoiseFn | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The student's tensor for ``recipe`` from the teacher's ``old`` (only read).  Always new
    memory, or ``out`` when given (contiguous, of the new shape and ``old``'s dtype: memory the
    caller reuses); intermediates of multi-axis gathers go into ``scratch`` when given.
    ``noise`` (Net2Net's symmetry breaking, in-memory only) is added on copied axes."""
    if tuple(old.shape) != recipe.old_shape:
        from ..errors import InputError

        raise InputError(
            f"tensor {recipe.target!r} has shape {tuple(old.shape)}; the plan "
            f"was made for {recipe.old_shape}"
        )
    new = old.detach()
    with torch.no_grad():
        steps = recipe.steps
        for k, step in enumerate(steps):
            index = step.index.to(old.device)
            last = k + 1 == len(steps)
            if not last and scratch is not None:  # an intermediate: reused memory
                new = torch.index_select(
                    new, step.axis, index, out=scratch.get(new, step.axis, index, k)
                )
            elif last and out is not None:  # the student's tensor, in the caller's memory
                new = torch.index_select(new, step.axis, index, out=out)
            else:  # the student's tensor (or an intermediate): new memory
                new = new.index_select(step.axis, index)
            shape = [1] * new.dim()
            shape[step.axis] = -1
            if step.fraction is not None:
                new.mul_(step.fraction.to(device=old.device, dtype=old.dtype).view(shape))
            elif noise is not None and new.is_floating_point():
                new.add_(noise(new, step))
        if new.data_ptr() == old.data_ptr():
            new = new.clone() if out is None else out.copy_(new)
    return new


class Scratch:
    """Reused memory for the intermediate tensors of multi-axis gathers: per dtype and device
    two buffers, used in turn (a gather never reads and writes the same one), allocated once
    at the largest size the jobs need.  Fresh memory costs page faults; only the student's
    own tensors need it."""

    def __init__(self, jobs: list[tuple[torch.Tensor, TensorRecipe]]) -> None:
        need: dict[tuple, int] = {}
        for old, recipe in jobs:
            dims = list(old.shape)
            for k, step in enumerate(recipe.steps[:-1]):
                dims[step.axis] = step.index.numel()
                key = (old.dtype, old.device, k % 2)
                need[key] = max(need.get(key, 0), math.prod(dims))
        self.buffers = {key: torch.empty(n, dtype=key[0], device=key[1]) for key, n in need.items()}

    def get(self, like: torch.Tensor, axis: int, index: torch.Tensor, k: int) -> torch.Tensor:
        """A view of buffer ``k % 2`` (for ``like``'s dtype and device) shaped as ``like`` with
        ``axis`` resized to ``index``'s length: the output of gather step ``k``."""
        dims = list(like.shape)
        dims[axis] = index.numel()
        return self.buffers[(like.dtype, like.device, k % 2)][: math.prod(dims)].view(dims)
