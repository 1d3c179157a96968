"""Fresh fan-in for new units (``init="zero"`` / ``"gradmax"``), after the rewrite.

The rewrite has already given every new unit of such a group a zero fan-out (its replication
map's shares are 0 for new units: ``plan/init.py``).  Here the new units' rows on every
producer axis get their own values:

* ``"zero"``: Gaussian, with the standard deviation of the teacher tensor's own values (so
  the new units start at the old units' scale); 1-d producer tensors (biases) start at 0.
* ``"gradmax"``: the rows that maximise the gradient norm of the new units' fan-out on a
  batch (GradMax, Evci et al. 2022, in its fan-in form).  With the fan-out zero the loss's
  gradient at the consumers does not depend on the new fan-in, and for a linear unit the
  fan-out gradient is ``M w`` (``M``: the batch's gradient of a direct connection), so
  subspace iteration ``W <- orth(grad_W ||dL/dW_out||^2)`` converges to ``M``'s top right
  singular vectors.  It runs on the student itself through autograd (double backward), so it
  works for any producer (convs, grouped convs, heads); rows keep the "zero" rows' norm.

The student stays exact: only positions that reach the output through zeroed consumer
columns change.  ``widen`` verifies it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch

from ..analysis import Analysis
from ..analysis.context import CONSUME, PRODUCE
from ..errors import InputError
from ..growth import update_growth_record
from ..planning.index_map import expand
from ..planning.placement import placed_student
from ..planning.plan import WidenPlan, root_maps


class _Shares:
    """A replication map seen through a mask: share 0 for the new units of marked groups,
    1 elsewhere (``expand`` only reads these three tensors)."""

    def __init__(self, m, marked: bool) -> None:
        self._m = m
        frac = torch.ones(m.new, dtype=torch.float64)
        if marked:
            frac[m.old :] = 0.0
        self._frac = frac

    def source_tensor(self) -> torch.Tensor:
        return self._m.source_tensor()

    def count_tensor(self) -> torch.Tensor:
        return self._m.count_tensor()

    def fraction_tensor(self) -> torch.Tensor:
        return self._frac


class AxisMask(NamedTuple):
    """Positions of one student tensor's axis that belong to new units of some groups."""

    target: str
    axis: int
    mask: torch.Tensor  # bool, one per position of the student's axis


def new_unit_axes(
    analysis: Analysis, plan: WidenPlan, roots: Iterable[int], role: str
) -> list[AxisMask]:
    """Every parameter/buffer axis with ``role`` (PRODUCE: fan-in, CONSUME: fan-out) that
    holds new units of the classes ``roots``, with the mask of those positions."""
    sp = analysis.state.spaces
    maps = root_maps(analysis, plan)
    roots = set(roots)
    shares = {r: _Shares(m, r in roots) for r, m in maps.items()}
    out = []
    for pa in analysis.state.params.values():
        if role not in pa.roles or not any(r in roots for r in sp.roots(pa.layout)):
            continue
        mask = expand(sp, pa.layout, shares).fraction == 0
        if bool(mask.any()):
            out.append(AxisMask(pa.target, pa.axis, mask))
    placed = placed_student(analysis, plan.placements)  # chains of fresh units (all "zero")
    if placed is not None and roots & placed.roots:
        for (target, axis), mask in placed.fresh.items():
            if role in analysis.state.params[(target, axis)].roles and bool(mask.any()):
                out.append(AxisMask(target, axis, mask))
    return out


def _tensor(student: torch.nn.Module, target: str) -> torch.Tensor:
    module, _, leaf = target.rpartition(".")
    return getattr(student.get_submodule(module) if module else student, leaf)


def _rows(t: torch.Tensor, axis: int, mask: torch.Tensor) -> torch.Tensor:
    """The masked positions of ``axis`` as rows: [k, rest]."""
    return t.detach().movedim(axis, 0)[mask.to(t.device)].reshape(int(mask.sum()), -1)


def _set_rows(t: torch.Tensor, axis: int, mask: torch.Tensor, rows: torch.Tensor) -> None:
    with torch.no_grad():
        view = t.movedim(axis, 0)
        view[mask.to(t.device)] = rows.reshape((-1,) + tuple(view.shape[1:])).to(t)


def initialise(
    analysis: Analysis,
    plan: WidenPlan,
    student: torch.fx.GraphModule,
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor] | None = None,
    batch: Any = None,
    iterations: int = 4,
) -> None:
    """Give the new units of every change with ``init`` "zero"/"gradmax" their fan-in."""
    from ..errors import WidthError
    from ..planning.init import check_init, fresh_init_blockers

    by_name = {g.name: g for g in analysis.groups}
    for c in plan.changes:
        check_init(c.init)
    fresh = {by_name[c.group].root for c in plan.changes if c.init != "replicate"}
    placed = placed_student(analysis, plan.placements)
    if placed is not None:  # units placed through shuffle chains are fresh ("zero")
        fresh |= placed.roots
    if not fresh:
        return
    blockers = fresh_init_blockers(analysis)
    for c in plan.changes:  # a plan written by hand (or for another model) may ask for it
        why = blockers.get(by_name[c.group].root) if c.init != "replicate" else None
        if why:
            raise WidthError(
                f"group {c.group!r} cannot take init={c.init!r} exactly: {why}; "
                f"give it init='replicate' in the plan"
            )
    why = next((blockers[r] for r in (placed.roots if placed else ()) if r in blockers), None)
    if why:
        raise WidthError(f"fresh units cannot be placed through this channel shuffle chain: {why}")
    gen = torch.Generator().manual_seed(plan.seed * 7 + 104729)
    fan_in = new_unit_axes(analysis, plan, fresh, PRODUCE)
    for am in fan_in:
        t = _tensor(student, am.target)
        if not t.is_floating_point():
            continue
        if t.dim() < 2:
            _set_rows(t, am.axis, am.mask, torch.zeros(int(am.mask.sum()), 1))
            continue
        _set_rows(t, am.axis, am.mask, _random_rows(analysis, am, t, gen))
    grad_roots = {by_name[c.group].root for c in plan.changes if c.init == "gradmax"}
    if grad_roots:
        if loss_fn is None or batch is None:
            raise InputError('init="gradmax" needs loss_fn=(model, batch) -> loss and a batch')
        objective = gradmax(
            student,
            [
                am
                for am in new_unit_axes(analysis, plan, grad_roots, PRODUCE)
                if _tensor(student, am.target).dim() >= 2
            ],
            new_unit_axes(analysis, plan, grad_roots, CONSUME),
            loss_fn,
            batch,
            iterations,
        )
        update_growth_record(student, gradmax=objective)


def _random_rows(
    analysis: Analysis, am: AxisMask, t: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    old = analysis.state.tensors[am.target].detach().double()
    std = float(old.std()) if old.numel() > 1 else 0.0
    k = int(am.mask.sum())
    width = t.numel() // t.shape[am.axis]
    if not std > 0:  # an all-zero teacher tensor (a zeroed residual branch): fan-in scale
        std = width**-0.5
    return torch.randn(k, width, generator=gen, dtype=torch.float64) * std


def fan_out_objective(
    student: torch.nn.Module,
    fan_out: list[AxisMask],
    loss_fn: Callable,
    batch: Any,
    create_graph: bool,
) -> torch.Tensor:
    """Sum over the masked fan-out positions of the loss's squared gradient."""
    tensors = [_tensor(student, am.target) for am in fan_out]
    loss = loss_fn(student, batch)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise InputError("loss_fn(model, batch) must return a scalar tensor")
    grads = torch.autograd.grad(loss, tensors, create_graph=create_graph, allow_unused=True)
    total = loss.new_zeros(())
    for am, g in zip(fan_out, grads):
        if g is not None:
            total = total + g.movedim(am.axis, 0)[am.mask.to(g.device)].pow(2).sum()
    return total


def gradmax(
    student: torch.nn.Module,
    fan_in: list[AxisMask],
    fan_out: list[AxisMask],
    loss_fn: Callable,
    batch: Any,
    iterations: int = 4,
) -> float:
    """Subspace iteration on the new rows of ``fan_in`` (norms kept) towards the largest
    fan-out gradient; returns the final objective."""
    fan_in = [am for am in fan_in if _tensor(student, am.target).requires_grad]
    fan_out = [am for am in fan_out if _tensor(student, am.target).requires_grad]
    if not fan_in or not fan_out:
        return 0.0
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):  # the fused kernels have no double backward
        return _gradmax(student, fan_in, fan_out, loss_fn, batch, iterations)


def _gradmax(student, fan_in, fan_out, loss_fn, batch, iterations) -> float:
    tensors = [_tensor(student, am.target) for am in fan_in]
    norms = [_rows(t, am.axis, am.mask).norm(dim=1).mean() for t, am in zip(tensors, fan_in)]
    for _ in range(iterations):
        objective = fan_out_objective(student, fan_out, loss_fn, batch, create_graph=True)
        if not objective.requires_grad:
            break
        grads = torch.autograd.grad(objective, tensors, allow_unused=True)
        for t, am, g, norm in zip(tensors, fan_in, grads, norms):
            if g is None:
                continue
            rows = _rows(g, am.axis, am.mask).double()
            if not bool(rows.abs().sum() > 0):
                continue
            k, n = rows.shape
            q, _ = torch.linalg.qr(rows[: min(k, n)].T)  # [n, min(k, n)] orthonormal
            new = _rows(t, am.axis, am.mask).double().clone()
            new[: q.shape[1]] = q.T
            # more new units than fan-in dimensions: the rest keep their directions
            new = new / new.norm(dim=1, keepdim=True).clamp_min(1e-30) * float(norm)
            _set_rows(t, am.axis, am.mask, new)
    return float(fan_out_objective(student, fan_out, loss_fn, batch, create_graph=False))
